# Unit tests for proto/. The executable wraps malloc and realloc (see the top
# of proto_test.c) so that the hostile-input cases can bound what a decode
# allocates.
shoal_test(proto_test
  SOURCES unit/proto_test.c
  LIBS shoal_proto
  TIMEOUT 120
  CASES roundtrip_hello roundtrip_index roundtrip_small golden truncation bitflip
        hostile_counts depth forward_compat wrong_types ranges path_check frames
        assembler strerror buf perf_index)
target_link_options(proto_test PRIVATE -Wl,--wrap=malloc -Wl,--wrap=realloc)
