/*
 * crypto/sec.c - library set-up and the crypto folder's error strings.
 */
#include <string.h>

#include <sodium.h>

#include "crypto/sec.h"

int
sec_init(void)
{
	/* sodium_init() returns 1 when it already ran, which is fine. */
	if (sodium_init() < 0)
		return SEC_ENOMEM;
	return 0;
}

const char *
sec_strerror(int rc)
{
	switch (rc) {
	case 0:
		return "success";
	case SEC_EINVAL:
		return "invalid argument or malformed input";
	case SEC_EDECRYPT:
		return "authentication failed: message tampered with or wrong key";
	case SEC_EKEY:
		return "low-order or non-canonical public key";
	case SEC_ESTATE:
		return "call out of order for the handshake state";
	case SEC_ENONCE:
		return "nonce space exhausted";
	case SEC_ETOOBIG:
		return "message too large";
	case SEC_EDEVID:
		return "malformed device ID";
	case SEC_EDEVIDCHECK:
		return "device ID check character does not match (typo?)";
	case SEC_ENOMEM:
		return "out of secure memory";
	case SEC_EKEYFILE:
		return "malformed key file";
	case SEC_EUNAVAIL:
		return "cipher suite not available on this CPU";
	}
	if (rc < 0 && rc > -4096)
		return strerror(-rc);
	return "unknown error";
}
