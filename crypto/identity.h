/*
 * crypto/identity.h - a device's long-term identity and its device ID.
 *
 * Invariants:
 * - A device owns one Ed25519 key pair. The handshake uses its X25519 form
 *   (crypto_sign_ed25519_sk_to_curve25519), and the device ID is a hash of
 *   that X25519 public key: BLAKE2b-256("shoal-device-id" || x_pk). Binding the
 *   ID to the exact key the Noise handshake proves means an ID is authorised
 *   only on what the handshake proved, never on what a peer states.
 * - A device ID is rendered as 56 base32 characters (RFC 4648 alphabet, no
 *   padding): four groups of 13 data characters, each followed by a Luhn
 *   mod-32 check character, written as eight dash-separated groups of seven.
 *   Parsing ignores case, dashes and spaces and refuses a wrong check
 *   character, so a typo is caught instead of naming another device.
 */
#ifndef SHOAL_CRYPTO_IDENTITY_H
#define SHOAL_CRYPTO_IDENTITY_H

#include <stddef.h>
#include <stdint.h>

#define SEC_DEVID_BYTES 32
#define SEC_DEVID_STRLEN 63 /* 56 characters and 7 dashes, without the NUL */

struct sec_identity {
	unsigned char ed_pk[32];
	unsigned char *ed_sk; /* 64 bytes, sodium_malloc'd */
	unsigned char *x_sk;  /* 32 bytes, sodium_malloc'd: X25519 form of ed_sk */
	unsigned char x_pk[32];
	unsigned char id[SEC_DEVID_BYTES];
};

/*
 * Fills a caller-allocated identity with a fresh random key pair. Returns 0 or
 * SEC_ENOMEM. Release with sec_identity_release() whatever the result.
 */
int sec_identity_generate(struct sec_identity *id);

/* Same, from a 32-byte Ed25519 seed (deterministic; tests use it). */
int sec_identity_from_seed(struct sec_identity *id, const unsigned char seed[32]);

/*
 * Reads a key file written by sec_identity_save(). Returns 0, -errno from the
 * file system (-ENOENT when there is none) or SEC_EKEYFILE.
 */
int sec_identity_load(struct sec_identity *id, const char *path);

/*
 * Writes the identity's seed to path atomically (temporary file created with
 * O_EXCL in the same directory, fsync, rename, fsync of the directory) with
 * mode 0600. Returns 0 or -errno.
 */
int sec_identity_save(const struct sec_identity *id, const char *path);

/*
 * Wipes and frees the secret parts. NULL-safe on zeroed identities and on
 * ones a failed generate/from_seed/load left behind (those set ed_sk and
 * x_sk to NULL first); may be called twice.
 */
void sec_identity_release(struct sec_identity *id);

/* Device ID of an X25519 public key. */
void sec_devid_from_x25519(const unsigned char x_pk[32], unsigned char id[SEC_DEVID_BYTES]);

/* Renders id into out (NUL-terminated, SEC_DEVID_STRLEN characters). */
void sec_devid_format(const unsigned char id[SEC_DEVID_BYTES], char out[SEC_DEVID_STRLEN + 1]);

/*
 * Parses a rendered device ID. Returns 0, SEC_EDEVID (wrong length or
 * alphabet) or SEC_EDEVIDCHECK (a check character does not match).
 */
int sec_devid_parse(const char *s, unsigned char id[SEC_DEVID_BYTES]);

/* The first 8 bytes of a device ID, big-endian: the ID in version vectors. */
uint64_t sec_devid_short(const unsigned char id[SEC_DEVID_BYTES]);

#endif
