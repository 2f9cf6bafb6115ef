# End-to-end tests: each script under e2e/ runs real agents in a private
# network namespace (needs root or unprivileged user namespaces, python3,
# iproute2; e2e.capture also tcpdump, and is skipped with 77 without it).
# Included from tests/CMakeLists.txt, so CMAKE_CURRENT_SOURCE_DIR is tests/.
if(TARGET shoal)
  set(_e2e_bin "$<TARGET_FILE:shoal>")
else()
  set(_e2e_bin "${CMAKE_BINARY_DIR}/agent/shoal")
  message(STATUS "e2e: no target 'shoal'; the tests will use ${_e2e_bin}")
endif()

foreach(_e2e sync stranger capture live_config restart live events invite mdns hostile sigterm fault_proxy killloop enospc forget delta_local leftover window)
  add_test(NAME e2e.${_e2e}
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/e2e/e2e_${_e2e}.sh)
  set_tests_properties(e2e.${_e2e} PROPERTIES
                       TIMEOUT 300
                       ENVIRONMENT "SHOAL_BIN=${_e2e_bin}"
                       SKIP_RETURN_CODE 77
                       RUN_SERIAL TRUE
                       LABELS e2e)
endforeach()
unset(_e2e)
unset(_e2e_bin)
