/*
 * proto/invite.h - the invite code: one line an owner gives a new member.
 *
 * The code carries the owner's device ID (the member pins that key), the
 * folder's ID and label, a random secret (the owner keeps only its hash), an
 * expiry time (informative: the owner decides) and up to PROTO_INVITE_ADDRS
 * addresses where the owner may be reached. Layout before encoding:
 *   version (1) = 1 | owner ID (32) | secret (16) | expires (u64 BE, seconds
 *   since the epoch, 0 = never) | folder (len u8 + bytes) | label (len u8 +
 *   bytes) | address count (u8) | each address (len u8 + bytes) | CRC-32 (u32
 *   BE, IEEE) of everything before it
 * rendered as "SHOAL1-" and the RFC 4648 base32 of those bytes. Decoding
 * ignores case, white space and dashes after the prefix (a code split by a
 * mail program still works), and a mangled code fails its checksum.
 */
#ifndef SHOAL_PROTO_INVITE_H
#define SHOAL_PROTO_INVITE_H

#include <stddef.h>
#include <stdint.h>

#include "proto/proto.h"

#define PROTO_INVITE_PREFIX "SHOAL1-"
#define PROTO_INVITE_ADDRS 8
#define PROTO_INVITE_ADDR_MAX 63
#define PROTO_INVITE_FIELD_MAX 64
#define PROTO_INVITE_CODE_MAX 1200 /* characters, with the terminating NUL */

enum {
	PROTO_ECHECKSUM = -1007, /* a code that does not pass its checksum: mangled */
	PROTO_EPREFIX = -1008,   /* not an invite code at all */
};

struct proto_invite {
	uint8_t owner[32];
	uint8_t secret[16];
	uint64_t expires;
	char folder[PROTO_INVITE_FIELD_MAX + 1];
	char label[PROTO_INVITE_FIELD_MAX + 1];
	size_t naddrs;
	char addrs[PROTO_INVITE_ADDRS][PROTO_INVITE_ADDR_MAX + 1];
};

/* Writes the code (NUL-terminated) into out. Returns 0, PROTO_ETOOBIG or PROTO_EMALFORMED. */
int proto_invite_encode(const struct proto_invite *iv, char *out, size_t cap);

/*
 * Parses a code. Returns 0, PROTO_EPREFIX (no "SHOAL1-" in front),
 * PROTO_ECHECKSUM (damaged), PROTO_EMALFORMED (well-formed checksum but bad
 * fields: an empty or overlong folder, control characters) or PROTO_ETOOBIG.
 */
int proto_invite_decode(const char *code, struct proto_invite *iv);

/* CRC-32 (IEEE 802.3, reflected, as zlib computes it). */
uint32_t proto_crc32(const void *p, size_t n);

#endif
