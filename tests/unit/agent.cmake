shoal_test(agent_test SOURCES unit/agent_test.c LIBS shoal_agent
           CASES config_roundtrip config_errors folder_ids json_roundtrip fsops_confined fs_copy_range fs_copy_range_reflink version_vectors parallel_chunking peer_log_rate_limit ls_pages_past_tombstones
                 pull_windows pull_targeted strmap)
# Needs root, mkfs.xfs and a loop device; says why and exits 77 without them.
set_tests_properties(agent_test.fs_copy_range_reflink PROPERTIES SKIP_RETURN_CODE 77)

