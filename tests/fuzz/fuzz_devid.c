/*
 * tests/fuzz/fuzz_devid.c - fuzzes sec_devid_parse() and sec_devid_format().
 *
 * Input: a device ID as a user would type it, made a C string (up to the
 * first NUL). Checks:
 * - the result is 0, SEC_EDEVID or SEC_EDEVIDCHECK;
 * - a parsed ID formats to a SEC_DEVID_STRLEN-character string that parses
 *   back to the same 32 bytes;
 * - that string is the input with dashes and spaces removed and letters
 *   upper-cased (plus the dashes): an ID has exactly one rendering up to
 *   case, dashes and spaces, so two different strings never name one device;
 * - the first 32 input bytes (zero-padded), taken as an ID, format and parse
 *   back to themselves.
 */
#include <string.h>

#include "crypto/identity.h"
#include "crypto/sec.h"
#include "tests/fuzz/fuzz.h"

/* Checks the shape of a formatted ID: groups of 7 from A-Z2-7, dashes between. */
static void
check_rendering(const char *s)
{
	FUZZ_ASSERT_UEQ(strlen(s), SEC_DEVID_STRLEN);
	for (size_t i = 0; i < SEC_DEVID_STRLEN; i++) {
		if (i % 8 == 7)
			FUZZ_ASSERT(s[i] == '-');
		else
			FUZZ_ASSERT((s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '2' && s[i] <= '7'));
	}
}

/* Checks that id formats to a well-formed string that parses back to id. */
static void
check_roundtrip(const unsigned char id[SEC_DEVID_BYTES], char out[SEC_DEVID_STRLEN + 1])
{
	unsigned char back[SEC_DEVID_BYTES];

	memset(out, 'x', SEC_DEVID_STRLEN + 1);
	sec_devid_format(id, out);
	check_rendering(out);
	FUZZ_ASSERT_EQ(sec_devid_parse(out, back), 0);
	FUZZ_ASSERT_MEMEQ(back, id, SEC_DEVID_BYTES);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	unsigned char id[SEC_DEVID_BYTES], raw[SEC_DEVID_BYTES] = {0};
	char out[SEC_DEVID_STRLEN + 1], norm_in[64], norm_out[64];
	size_t n_in = 0, n_out = 0;
	char *s;
	int rc;

	/* Any 32 bytes are an ID. */
	memcpy(raw, data, size < sizeof(raw) ? size : sizeof(raw));
	check_roundtrip(raw, out);

	s = malloc(size + 1);
	FUZZ_ASSERT(s != NULL);
	if (size > 0)
		memcpy(s, data, size);
	s[size] = '\0';
	rc = sec_devid_parse(s, id);
	if (rc != 0 && rc != SEC_EDEVID && rc != SEC_EDEVIDCHECK)
		FUZZ_FAIL("sec_devid_parse: unexpected result %d", rc);
	if (rc == 0) {
		check_roundtrip(id, out);
		/* Input and rendering agree up to case, dashes and spaces. */
		for (const char *p = s; *p; p++) {
			if (*p == '-' || *p == ' ')
				continue;
			FUZZ_ASSERT(n_in < sizeof(norm_in) - 1);
			norm_in[n_in++] = *p >= 'a' && *p <= 'z' ? (char)(*p - 'a' + 'A') : *p;
		}
		for (const char *p = out; *p; p++)
			if (*p != '-')
				norm_out[n_out++] = *p;
		norm_in[n_in] = '\0';
		norm_out[n_out] = '\0';
		if (strcmp(norm_in, norm_out) != 0)
			FUZZ_FAIL("\"%s\" parsed, but renders as \"%s\"", s, out);
	}
	free(s);
	return 0;
}
