shoal_test(agent_test SOURCES unit/agent_test.c LIBS shoal_agent
           CASES config_roundtrip config_errors folder_ids json_roundtrip fsops_confined fs_copy_range fs_copy_range_reflink version_vectors parallel_chunking peer_log_rate_limit ls_pages_past_tombstones)
# Needs root, mkfs.xfs and a loop device; says why and exits 77 without them.
set_tests_properties(agent_test.fs_copy_range_reflink PROPERTIES SKIP_RETURN_CODE 77)

# An end-to-end test of the puller's local runs (tests/e2e/e2e_delta_local.sh),
# registered here because it belongs with the copy code tested above; it runs
# like the e2e tests of e2e/e2e.cmake.
if(TARGET shoal)
  add_test(NAME e2e.delta_local
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/e2e/e2e_delta_local.sh)
  set_tests_properties(e2e.delta_local PROPERTIES
                       TIMEOUT 300
                       ENVIRONMENT "SHOAL_BIN=$<TARGET_FILE:shoal>"
                       SKIP_RETURN_CODE 77
                       RUN_SERIAL TRUE
                       LABELS e2e)
endif()
