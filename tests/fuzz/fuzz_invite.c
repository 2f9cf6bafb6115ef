/*
 * tests/fuzz/fuzz_invite.c - fuzzes proto_invite_decode() and checks
 * proto_invite_encode() against it.
 *
 * Input: an invite code as pasted by a user, made a C string (up to the
 * first NUL). Checks:
 * - the result is 0, PROTO_EPREFIX, PROTO_ECHECKSUM, PROTO_EMALFORMED or
 *   PROTO_ETOOBIG;
 * - a decoded invite has the documented fields: a folder ID of 1..64
 *   characters from [A-Za-z0-9._-] not starting with '.', a label of at most
 *   64 characters, at most PROTO_INVITE_ADDRS addresses of 1..63 characters,
 *   no control character anywhere, every string NUL-terminated;
 * - it encodes again, and that code decodes to the same invite;
 * - that code is the input with leading white space dropped, case folded, and
 *   dashes and white space after the prefix removed: decoding ignores only
 *   those, so any other change to a code (a character added, removed or
 *   replaced) must make it fail, as the header promises ("a mangled code
 *   fails its checksum").
 */
#include <string.h>

#include "proto/invite.h"
#include "proto/proto.h"
#include "tests/fuzz/fuzz.h"

static void
check_text(const char *s, size_t max, size_t min)
{
	size_t n = strnlen(s, max + 1);

	FUZZ_ASSERT_ULE(n, max);
	FUZZ_ASSERT(n >= min);
	for (size_t i = 0; i < n; i++)
		FUZZ_ASSERT((unsigned char)s[i] >= 0x20 && (unsigned char)s[i] != 0x7f);
}

static void
check_invite(const struct proto_invite *iv)
{
	check_text(iv->folder, PROTO_INVITE_FIELD_MAX, 1);
	FUZZ_ASSERT(iv->folder[0] != '.');
	for (const char *p = iv->folder; *p; p++)
		FUZZ_ASSERT((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
			    (*p >= '0' && *p <= '9') || *p == '.' || *p == '_' || *p == '-');
	check_text(iv->label, PROTO_INVITE_FIELD_MAX, 0);
	FUZZ_ASSERT_ULE(iv->naddrs, PROTO_INVITE_ADDRS);
	for (size_t i = 0; i < iv->naddrs; i++)
		check_text(iv->addrs[i], PROTO_INVITE_ADDR_MAX, 1);
}

static void
invite_eq(const struct proto_invite *a, const struct proto_invite *b)
{
	FUZZ_ASSERT_MEMEQ(a->owner, b->owner, sizeof(a->owner));
	FUZZ_ASSERT_MEMEQ(a->secret, b->secret, sizeof(a->secret));
	FUZZ_ASSERT_UEQ(a->expires, b->expires);
	FUZZ_ASSERT(strcmp(a->folder, b->folder) == 0);
	FUZZ_ASSERT(strcmp(a->label, b->label) == 0);
	FUZZ_ASSERT_UEQ(a->naddrs, b->naddrs);
	for (size_t i = 0; i < a->naddrs; i++)
		FUZZ_ASSERT(strcmp(a->addrs[i], b->addrs[i]) == 0);
}

static int
is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* What decoding reads of s: the documented normalization, into out (cap > strlen(s)). */
static void
normalize(const char *s, char *out)
{
	size_t prefix = strlen(PROTO_INVITE_PREFIX), n = 0;

	while (is_space(*s))
		s++;
	for (; *s; s++) {
		if (n >= prefix && (*s == '-' || is_space(*s)))
			continue;
		out[n++] = *s >= 'a' && *s <= 'z' ? (char)(*s - 'a' + 'A') : *s;
	}
	out[n] = '\0';
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct proto_invite iv, back;
	char code[PROTO_INVITE_CODE_MAX], *s, *norm;
	int rc;

	s = malloc(size + 1);
	FUZZ_ASSERT(s != NULL);
	if (size > 0)
		memcpy(s, data, size);
	s[size] = '\0';
	rc = proto_invite_decode(s, &iv);
	if (rc != 0 && rc != PROTO_EPREFIX && rc != PROTO_ECHECKSUM && rc != PROTO_EMALFORMED &&
	    rc != PROTO_ETOOBIG)
		FUZZ_FAIL("proto_invite_decode: unexpected result %d", rc);
	if (rc == 0) {
		check_invite(&iv);
		FUZZ_ASSERT_EQ(proto_invite_encode(&iv, code, sizeof(code)), 0);
		FUZZ_ASSERT_EQ(proto_invite_decode(code, &back), 0);
		invite_eq(&iv, &back);

		norm = malloc(size + 1);
		FUZZ_ASSERT(norm != NULL);
		normalize(s, norm);
		if (strcmp(norm, code) != 0)
			FUZZ_FAIL("\"%s\" decodes, but the invite's code is \"%s\"", s, code);
		free(norm);
	}
	free(s);
	return 0;
}
