# The Debian package test (tests/pkg/pkg_test.sh): builds the .deb, installs
# it on this machine, syncs with it and purges it. It needs root and changes
# the system (a package, the user shoal), so it is registered only when
# SHOAL_PKG_TEST=1 is in the environment at configure time (CI sets it), and
# not in the sanitizer build, whose binary is not what gets packaged.
# Included from tests/CMakeLists.txt, so CMAKE_CURRENT_SOURCE_DIR is tests/.
if("$ENV{SHOAL_PKG_TEST}" STREQUAL "1" AND NOT SHOAL_SANITIZE)
  if(TARGET shoal)
    set(_pkg_bin "$<TARGET_FILE:shoal>")
  else()
    set(_pkg_bin "${CMAKE_BINARY_DIR}/agent/shoal")
  endif()
  add_test(NAME pkg.deb COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/pkg/pkg_test.sh)
  set_tests_properties(pkg.deb PROPERTIES
                       TIMEOUT 900
                       ENVIRONMENT "SHOAL_BIN=${_pkg_bin}"
                       SKIP_RETURN_CODE 77
                       RUN_SERIAL TRUE
                       LABELS pkg)
  unset(_pkg_bin)
endif()
