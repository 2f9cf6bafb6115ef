shoal_test(invite_test SOURCES unit/invite_test.c LIBS shoal_proto
           CASES roundtrip lenient_paste mangled_codes bad_fields crc32_vector)
