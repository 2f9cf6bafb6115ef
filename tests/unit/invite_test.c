/*
 * tests/unit/invite_test.c - the invite code format.
 */
#include <ctype.h>
#include <string.h>

#include "proto/invite.h"
#include "test.h"

static void
sample(struct proto_invite *iv)
{
	memset(iv, 0, sizeof(*iv));
	for (int i = 0; i < 32; i++)
		iv->owner[i] = (uint8_t)(i * 7 + 1);
	for (int i = 0; i < 16; i++)
		iv->secret[i] = (uint8_t)(200 - i);
	iv->expires = 1795000000;
	strcpy(iv->folder, "projects");
	strcpy(iv->label, "Projects 2026 é");
	iv->naddrs = 2;
	strcpy(iv->addrs[0], "192.0.2.1:22100");
	strcpy(iv->addrs[1], "[fe80::1%eth0]:22100");
}

TEST(roundtrip)
{
	struct proto_invite a, b;
	char code[PROTO_INVITE_CODE_MAX];

	sample(&a);
	ASSERT_EQ(proto_invite_encode(&a, code, sizeof(code)), 0);
	ASSERT(strncmp(code, "SHOAL1-", 7) == 0);
	ASSERT_EQ(proto_invite_decode(code, &b), 0);
	ASSERT_MEMEQ(a.owner, b.owner, 32);
	ASSERT_MEMEQ(a.secret, b.secret, 16);
	ASSERT_UEQ(a.expires, b.expires);
	ASSERT_STREQ(b.folder, "projects");
	ASSERT_STREQ(b.label, "Projects 2026 é");
	ASSERT_EQ(b.naddrs, 2);
	ASSERT_STREQ(b.addrs[1], "[fe80::1%eth0]:22100");
	/* No addresses, no label. */
	a.naddrs = 0;
	a.label[0] = '\0';
	ASSERT_EQ(proto_invite_encode(&a, code, sizeof(code)), 0);
	ASSERT_EQ(proto_invite_decode(code, &b), 0);
	ASSERT_EQ(b.naddrs, 0);
	ASSERT_STREQ(b.label, "");
}

TEST(lenient_paste)
{
	struct proto_invite a, b;
	char code[PROTO_INVITE_CODE_MAX], mangled[2 * PROTO_INVITE_CODE_MAX];
	size_t o = 0;

	sample(&a);
	ASSERT_EQ(proto_invite_encode(&a, code, sizeof(code)), 0);
	/* Lower case, line breaks and dashes every 20 characters, spaces around. */
	mangled[o++] = ' ';
	for (size_t i = 0; code[i]; i++) {
		mangled[o++] = (char)tolower((unsigned char)code[i]);
		if (i > 7 && i % 20 == 0)
			mangled[o++] = i % 40 ? '-' : '\n';
	}
	mangled[o++] = '\n';
	mangled[o] = '\0';
	ASSERT_EQ(proto_invite_decode(mangled, &b), 0);
	ASSERT_MEMEQ(a.secret, b.secret, 16);
}

TEST(mangled_codes)
{
	struct proto_invite a, b;
	char code[PROTO_INVITE_CODE_MAX];
	static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

	sample(&a);
	ASSERT_EQ(proto_invite_encode(&a, code, sizeof(code)), 0);
	size_t len = strlen(code);
	/* Every single-character substitution is caught by the checksum. */
	for (size_t i = 7; i < len; i++) {
		char saved = code[i];
		for (const char *c = alphabet; *c; c++) {
			if (*c == saved)
				continue;
			code[i] = *c;
			int rc = proto_invite_decode(code, &b);
			if (rc == 0)
				TEST_FAIL("substitution at %zu (%c) was accepted", i, *c);
		}
		code[i] = saved;
	}
	/* Every truncation fails. */
	for (size_t n = 0; n < len; n++) {
		char t[PROTO_INVITE_CODE_MAX];
		memcpy(t, code, n);
		t[n] = '\0';
		ASSERT(proto_invite_decode(t, &b) != 0);
	}
	ASSERT_EQ(proto_invite_decode("hello", &b), PROTO_EPREFIX);
	ASSERT_EQ(proto_invite_decode("SHOAL1-!!!!", &b), PROTO_ECHECKSUM);
	ASSERT_EQ(proto_invite_decode(code, &b), 0);
}

TEST(bad_fields)
{
	struct proto_invite a;
	char code[PROTO_INVITE_CODE_MAX];

	sample(&a);
	strcpy(a.folder, "../x");
	ASSERT_EQ(proto_invite_encode(&a, code, sizeof(code)), PROTO_EMALFORMED);
	sample(&a);
	a.folder[0] = '\0';
	ASSERT_EQ(proto_invite_encode(&a, code, sizeof(code)), PROTO_EMALFORMED);
	sample(&a);
	strcpy(a.addrs[0], "bad\naddr");
	ASSERT_EQ(proto_invite_encode(&a, code, sizeof(code)), PROTO_EMALFORMED);
	sample(&a);
	ASSERT_EQ(proto_invite_encode(&a, code, 20), PROTO_ETOOBIG);
}

TEST(crc32_vector)
{
	/* The standard check value of CRC-32/ISO-HDLC. */
	ASSERT_UEQ(proto_crc32("123456789", 9), 0xcbf43926u);
}

TEST_LIST_BEGIN
TEST_ENTRY(roundtrip)
TEST_ENTRY(lenient_paste)
TEST_ENTRY(mangled_codes)
TEST_ENTRY(bad_fields)
TEST_ENTRY(crc32_vector)
TEST_LIST_END
