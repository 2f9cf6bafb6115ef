/*
 * crypto/sec.h - the crypto folder's error vocabulary and library set-up.
 *
 * Invariants: every function of this folder that can fail returns 0 or a
 * negative code from the enum below; nothing here touches a socket, logs, or
 * includes a header of proto/, store/ or agent/. Secret key material lives in
 * sodium_malloc() memory and is wiped before it is freed.
 */
#ifndef SHOAL_CRYPTO_SEC_H
#define SHOAL_CRYPTO_SEC_H

enum {
	SEC_EINVAL = -1100,     /* bad argument or malformed input */
	SEC_EDECRYPT = -1101,   /* authentication failed: tampered or wrong key */
	SEC_EKEY = -1102,       /* low-order or non-canonical public key */
	SEC_ESTATE = -1103,     /* call out of order for the handshake state */
	SEC_ENONCE = -1104,     /* nonce space exhausted: the channel must close */
	SEC_ETOOBIG = -1105,    /* message larger than Noise's 65,535 bytes */
	SEC_EDEVID = -1106,     /* device ID malformed (length or alphabet) */
	SEC_EDEVIDCHECK = -1107,/* device ID check character wrong: a typo */
	SEC_ENOMEM = -1108,     /* out of (secure) memory */
	SEC_EKEYFILE = -1109,   /* key file malformed */
	SEC_EUNAVAIL = -1110,   /* cipher suite not available on this CPU */
};

/*
 * Initialises libsodium. Call once before any other sec_ function; safe to
 * call more than once. Returns 0 or SEC_ENOMEM.
 */
int sec_init(void);

/* Returns a static English description of a SEC_E* code or a -errno. */
const char *sec_strerror(int rc);

#endif
