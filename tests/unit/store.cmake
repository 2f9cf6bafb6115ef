# store/ unit tests: one ctest entry per case.
shoal_test(store_test
  SOURCES unit/store_test.c
  LIBS shoal_store
  TIMEOUT 120
  CASES open_reopen schema_mismatch readonly_missing numbering roundtrip long_names
        sequence block_map counts map_growth stale_reader files_each_paging perf map_trim)
