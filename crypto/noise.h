/*
 * crypto/noise.h - the Noise XX handshake and the transport ciphers it yields.
 *
 * Implements Noise_XX_25519_{ChaChaPoly,AESGCM}_{BLAKE2b,SHA512} after revision
 * 34 of the Noise Protocol Framework specification:
 *   -> e
 *   <- e, ee, s, es
 *   -> s, se
 * HKDF uses real HMAC (RFC 2104) over the suite's hash. Every received
 * X25519 key (re, rs) must be canonical (bit 255 clear, value below 2^255-19)
 * and a DH that yields the all-zero output (a low-order point) aborts the
 * handshake. Nonces never wrap: 2^64-1 is refused.
 *
 * Order of calls: initiator write, read, write; responder read, write, read.
 * The initiator learns rs after its read of message 2 and can refuse it before
 * writing message 3, which is the first message that reveals its own static
 * key. The responder learns rs after reading message 3. Any failure leaves the
 * handshake unusable; free it and close the connection.
 */
#ifndef SHOAL_CRYPTO_NOISE_H
#define SHOAL_CRYPTO_NOISE_H

#include <stddef.h>
#include <stdint.h>

#define SEC_NOISE_MAX_MSG 65535
#define SEC_TAG_BYTES 16
#define SEC_KEY_BYTES 32
#define SEC_HASH_MAX 64

enum sec_suite {
	SEC_SUITE_CHACHAPOLY_BLAKE2B = 0, /* Noise_XX_25519_ChaChaPoly_BLAKE2b */
	SEC_SUITE_CHACHAPOLY_SHA512 = 1,  /* Noise_XX_25519_ChaChaPoly_SHA512 */
	SEC_SUITE_AESGCM_SHA512 = 2,      /* Noise_XX_25519_AESGCM_SHA512 (needs AES-NI) */
};

struct sec_handshake; /* opaque; lives in sodium_malloc memory */
struct sec_cipher;    /* opaque transport CipherState: key and 64-bit nonce */

/*
 * Creates a handshake. s_priv is the local static X25519 private key (copied).
 * Returns 0, SEC_ENOMEM, SEC_EUNAVAIL or SEC_EINVAL. Free with
 * sec_handshake_free().
 */
int sec_handshake_new(struct sec_handshake **out, enum sec_suite suite, int initiator,
		      const unsigned char s_priv[32], const unsigned char *prologue,
		      size_t prologue_len);

/*
 * Fixes the local ephemeral private key instead of a random one. For known-
 * answer tests only; call before the first write. Returns 0 or SEC_ESTATE.
 */
int sec_handshake_set_ephemeral(struct sec_handshake *hs, const unsigned char e_priv[32]);

/*
 * Writes the next handshake message with payload into out (payload and out
 * must not overlap). Returns 0 and sets *out_len, or SEC_ESTATE, SEC_ETOOBIG
 * (out_cap too small or message over 65,535 bytes), SEC_EKEY, SEC_EINVAL.
 * Message 1 carries its payload in clear; later payloads are encrypted.
 */
int sec_handshake_write(struct sec_handshake *hs, const unsigned char *payload, size_t payload_len,
			unsigned char *out, size_t out_cap, size_t *out_len);

/*
 * Reads the next handshake message; its payload goes to payload (at most
 * payload_cap bytes). Returns 0, SEC_ESTATE, SEC_EINVAL (too short),
 * SEC_EKEY (low-order or non-canonical key), SEC_EDECRYPT, SEC_ETOOBIG.
 */
int sec_handshake_read(struct sec_handshake *hs, const unsigned char *msg, size_t msg_len,
		       unsigned char *payload, size_t payload_cap, size_t *payload_len);

/*
 * Copies the remote static key into rs. Returns 0, or SEC_ESTATE if it is not
 * known yet or the handshake failed.
 */
int sec_handshake_remote_static(const struct sec_handshake *hs, unsigned char rs[32]);

/* Returns 1 when all three messages have been processed, else 0. */
int sec_handshake_done(const struct sec_handshake *hs);

/*
 * Copies the handshake hash h (HASHLEN bytes) into h_out and sets *len, once
 * sec_handshake_done() is 1 (also after split). Returns 0 or SEC_ESTATE.
 */
int sec_handshake_hash(const struct sec_handshake *hs, unsigned char h_out[SEC_HASH_MAX], size_t *len);

/*
 * After the handshake: derives the two transport ciphers (Split()). *send is
 * for messages this side writes, *recv for those it reads; the caller owns
 * both and frees them with sec_cipher_free(). Works once: a second call
 * returns SEC_ESTATE. Returns 0, SEC_ESTATE or SEC_ENOMEM (then *send and
 * *recv are NULL). The handshake may be freed afterwards.
 */
int sec_handshake_split(struct sec_handshake *hs, struct sec_cipher **send, struct sec_cipher **recv);

/* Wipes and frees hs. NULL-safe. */
void sec_handshake_free(struct sec_handshake *hs);

/*
 * Encrypts len bytes of pt into out (len + SEC_TAG_BYTES bytes) with the next
 * nonce; pt and out may be the same buffer. Returns 0 or SEC_ENONCE,
 * SEC_ETOOBIG (len + tag over 65,535).
 */
int sec_cipher_seal(struct sec_cipher *c, const unsigned char *pt, size_t len, unsigned char *out);

/*
 * Decrypts and authenticates len bytes of ct into out (len - SEC_TAG_BYTES
 * bytes); ct and out may be the same buffer. Returns 0, SEC_EDECRYPT (the
 * channel must close; the nonce is not consumed), SEC_ENONCE, SEC_EINVAL
 * (shorter than a tag) or SEC_ETOOBIG (over 65,535 bytes).
 */
int sec_cipher_open(struct sec_cipher *c, const unsigned char *ct, size_t len, unsigned char *out);

/* The nonce the next seal/open will use (tests, and to rekey before wrap). */
uint64_t sec_cipher_nonce(const struct sec_cipher *c);

/*
 * Sets the next nonce. For tests only (to reach the end of the nonce space);
 * protocol code never calls it.
 */
void sec_cipher_set_nonce(struct sec_cipher *c, uint64_t n);

/* Wipes and frees c. NULL-safe. */
void sec_cipher_free(struct sec_cipher *c);

#endif
