# crypto/ unit tests: Noise vectors and properties, identity, device IDs, chunker.
shoal_test(crypto_test
  SOURCES unit/crypto_test.c
  LIBS shoal_crypto
  TIMEOUT 120
  CASES
    noise_vector_chachapoly_blake2b
    noise_vector_chachapoly_sha512
    noise_vector_aesgcm_sha512
    noise_roundtrip
    noise_tamper_handshake
    noise_tamper_transport
    noise_wrong_key
    noise_low_order
    noise_noncanonical
    noise_nonce_limit
    noise_state_order
    noise_too_big
    identity_known_answer
    identity_save_load
    identity_keyfile_malformed
    devid_format_known
    devid_roundtrip
    devid_typo
    devid_lenient_input
    chunker_gear_table
    chunker_pinned_cuts
    chunker_bounds
    chunker_matches_reference
    chunker_insertion
    chunker_avg_for_size
    chunker_throughput)
