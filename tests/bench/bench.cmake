# Benchmarks are not part of the normal test run. The soak (bench/soak.sh,
# minutes of churn between two agents) is registered only when
# SHOAL_SOAK_MINUTES is in the environment at configure time:
#   SHOAL_SOAK_MINUTES=30 cmake -S . -B build && ctest --test-dir build -L bench
# Run by hand: tests/bench/soak.sh [MINUTES] (SHOAL_BIN=build/agent/shoal).
if(NOT "$ENV{SHOAL_SOAK_MINUTES}" STREQUAL "")
  if(TARGET shoal)
    set(_soak_bin "$<TARGET_FILE:shoal>")
  else()
    set(_soak_bin "${CMAKE_BINARY_DIR}/agent/shoal")
  endif()
  math(EXPR _soak_timeout "($ENV{SHOAL_SOAK_MINUTES}) * 150 + 300")
  add_test(NAME bench.soak
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/bench/soak.sh $ENV{SHOAL_SOAK_MINUTES})
  set_tests_properties(bench.soak PROPERTIES
                       TIMEOUT ${_soak_timeout}
                       ENVIRONMENT "SHOAL_BIN=${_soak_bin}"
                       SKIP_RETURN_CODE 77
                       RUN_SERIAL TRUE
                       LABELS bench)
  unset(_soak_bin)
  unset(_soak_timeout)
endif()
