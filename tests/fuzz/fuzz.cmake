# Fuzz targets for proto/ and crypto/ (tests/fuzz/fuzz_<name>.c).
#
# Every build makes fuzz_<name>_replay, the target linked with replay_main.c,
# and registers the ctest fuzz.<name>.corpus, which runs it on the seed corpus
# and the regression inputs in tests/fuzz/corpus/<name>/.
#
# With -DSHOAL_FUZZ=ON and clang, the build also makes the libFuzzer binaries
# fuzz_<name> (-fsanitize=fuzzer,address,undefined). shoal_proto and
# shoal_crypto are then compiled with coverage instrumentation and ASan+UBSan
# (-fsanitize=fuzzer-no-link,address,undefined) so that a bug inside them is
# caught where it happens; everything linking them gets the sanitizer runtimes,
# and the replay executables are built with ASan+UBSan too. tests/fuzz/run.sh
# makes that build in build-fuzz/ and runs every target.
#
# fuzz_make_corpus writes the seed corpus: fuzz_make_corpus tests/fuzz/corpus

option(SHOAL_FUZZ "Build libFuzzer binaries of the fuzz targets (needs clang)" OFF)

set(SHOAL_FUZZ_TARGETS frame msg path devid handshake invite)
set(shoal_fuzz_libs_frame shoal_proto)
set(shoal_fuzz_libs_msg shoal_proto)
set(shoal_fuzz_libs_path shoal_proto)
set(shoal_fuzz_libs_devid shoal_crypto)
set(shoal_fuzz_libs_handshake shoal_crypto)
set(shoal_fuzz_libs_invite shoal_proto)

set(shoal_libfuzzer OFF)
if(SHOAL_FUZZ)
  if(CMAKE_C_COMPILER_ID MATCHES "Clang")
    set(shoal_libfuzzer ON)
  else()
    message(WARNING "SHOAL_FUZZ needs clang (-DCMAKE_C_COMPILER=clang); "
                    "building only the corpus replay executables")
  endif()
endif()

set(shoal_fuzz_san -fsanitize=address,undefined -fno-sanitize-recover=all)
if(shoal_libfuzzer)
  foreach(lib shoal_proto shoal_crypto)
    target_compile_options(${lib} PRIVATE -fsanitize=fuzzer-no-link ${shoal_fuzz_san}
                                          -fno-omit-frame-pointer)
    target_link_options(${lib} INTERFACE ${shoal_fuzz_san})
  endforeach()
endif()

foreach(t ${SHOAL_FUZZ_TARGETS})
  add_executable(fuzz_${t}_replay fuzz/fuzz_${t}.c fuzz/replay_main.c)
  target_link_libraries(fuzz_${t}_replay PRIVATE ${shoal_fuzz_libs_${t}})
  if(shoal_libfuzzer)
    target_compile_options(fuzz_${t}_replay PRIVATE ${shoal_fuzz_san} -fno-omit-frame-pointer)
    target_link_options(fuzz_${t}_replay PRIVATE ${shoal_fuzz_san})

    add_executable(fuzz_${t} fuzz/fuzz_${t}.c)
    target_link_libraries(fuzz_${t} PRIVATE ${shoal_fuzz_libs_${t}})
    target_compile_options(fuzz_${t} PRIVATE -fsanitize=fuzzer ${shoal_fuzz_san}
                                             -fno-omit-frame-pointer)
    target_link_options(fuzz_${t} PRIVATE -fsanitize=fuzzer ${shoal_fuzz_san})
  endif()
  add_test(NAME fuzz.${t}.corpus
           COMMAND fuzz_${t}_replay ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/corpus/${t})
  set_tests_properties(fuzz.${t}.corpus PROPERTIES TIMEOUT 120)
endforeach()

add_executable(fuzz_make_corpus fuzz/make_corpus.c)
target_link_libraries(fuzz_make_corpus PRIVATE shoal_proto shoal_crypto)
