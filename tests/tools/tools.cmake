# Test tools (tests/tools/): included from tests/CMakeLists.txt, so
# CMAKE_CURRENT_SOURCE_DIR is tests/.
#
# shoal_evilpeer: a scripted hostile peer that speaks the real protocol
# (tests/tools/evilpeer.c); tests/e2e/e2e_hostile.sh runs it against an agent.
add_executable(shoal_evilpeer ${CMAKE_CURRENT_SOURCE_DIR}/tools/evilpeer.c)
target_link_libraries(shoal_evilpeer PRIVATE shoal_proto shoal_crypto)

# e2e.hostile (tests/e2e/e2e.cmake) finds the tool through SHOAL_EVILPEER.
if(TEST e2e.hostile)
  set_property(TEST e2e.hostile APPEND PROPERTY ENVIRONMENT
               "SHOAL_EVILPEER=$<TARGET_FILE:shoal_evilpeer>")
endif()
