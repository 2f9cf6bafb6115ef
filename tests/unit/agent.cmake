shoal_test(agent_test SOURCES unit/agent_test.c LIBS shoal_agent
           CASES config_roundtrip config_errors folder_ids json_roundtrip fsops_confined version_vectors parallel_chunking peer_log_rate_limit ls_pages_past_tombstones)
