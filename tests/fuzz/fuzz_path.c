/*
 * tests/fuzz/fuzz_path.c - fuzzes proto_path_check() against a reference
 * written independently here from its documented contract.
 *
 * Input: the path bytes. The reference accepts a path that is non-empty, at
 * most 4095 bytes, made of '/'-separated components of 1..255 bytes, none
 * "." or "..", none starting with ".shoal", with no NUL or control byte
 * (0x01-0x1f, 0x7f), and valid UTF-8. UTF-8 is checked here with the
 * well-formed byte sequence table of the Unicode standard (table 3-7), where
 * proto/proto.c decodes code points, so the two share no code.
 */
#include <stdbool.h>
#include <string.h>

#include "proto/proto.h"
#include "tests/fuzz/fuzz.h"

/*
 * Returns the length of the well-formed UTF-8 sequence at p (n > 0 bytes
 * available), or 0. Unicode 15, table 3-7:
 *   00..7F
 *   C2..DF 80..BF
 *   E0     A0..BF 80..BF
 *   E1..EC 80..BF 80..BF
 *   ED     80..9F 80..BF
 *   EE..EF 80..BF 80..BF
 *   F0     90..BF 80..BF 80..BF
 *   F1..F3 80..BF 80..BF 80..BF
 *   F4     80..8F 80..BF 80..BF
 */
static size_t
ref_utf8(const uint8_t *p, size_t n)
{
	uint8_t lo = 0x80, hi = 0xbf;
	size_t len;

	if (p[0] <= 0x7f)
		return 1;
	if (p[0] >= 0xc2 && p[0] <= 0xdf)
		len = 2;
	else if (p[0] >= 0xe0 && p[0] <= 0xef)
		len = 3;
	else if (p[0] >= 0xf0 && p[0] <= 0xf4)
		len = 4;
	else
		return 0;
	if (p[0] == 0xe0)
		lo = 0xa0;
	else if (p[0] == 0xed)
		hi = 0x9f;
	else if (p[0] == 0xf0)
		lo = 0x90;
	else if (p[0] == 0xf4)
		hi = 0x8f;
	if (n < len)
		return 0;
	/* The second byte has the narrowed range, the others 80..BF. */
	if (p[1] < lo || p[1] > hi)
		return 0;
	for (size_t i = 2; i < len; i++)
		if (p[i] < 0x80 || p[i] > 0xbf)
			return 0;
	return len;
}

static bool
ref_component(const uint8_t *p, size_t len)
{
	size_t i, k;

	if (len < 1 || len > 255)
		return false;
	if (len == 1 && p[0] == '.')
		return false;
	if (len == 2 && p[0] == '.' && p[1] == '.')
		return false;
	if (len >= 6 && memcmp(p, ".shoal", 6) == 0)
		return false;
	for (i = 0; i < len; i += k) {
		if (p[i] == 0x00 || p[i] < 0x20 || p[i] == 0x7f)
			return false;
		k = ref_utf8(p + i, len - i);
		if (k == 0)
			return false;
	}
	return true;
}

static bool
ref_path(const uint8_t *p, size_t len)
{
	const uint8_t *end = p + len, *slash;

	if (len == 0 || len > 4095)
		return false;
	for (;;) {
		slash = memchr(p, '/', (size_t)(end - p));
		if (slash == NULL)
			return ref_component(p, (size_t)(end - p));
		if (!ref_component(p, (size_t)(slash - p)))
			return false;
		p = slash + 1; /* a trailing '/' leaves an empty last component */
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	bool want = ref_path(data, size);
	int rc = proto_path_check(data, size);

	if (rc != 0 && rc != PROTO_EPATH)
		FUZZ_FAIL("proto_path_check: unexpected result %d", rc);
	if ((rc == 0) != want) {
		fuzz_hexdump("path", data, size);
		FUZZ_FAIL("proto_path_check gives %d, the reference %s it", rc,
			  want ? "accepts" : "refuses");
	}
	return 0;
}
