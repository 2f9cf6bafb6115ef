/*
 * tests/unit/crypto_test.c - tests of crypto/: Noise XX against the cacophony
 * known-answer vectors (tests/vectors/noise-25519-*.json), tampering and
 * key checks, identity and device IDs, and the chunker.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "crypto/chunker.h"
#include "crypto/identity.h"
#include "crypto/noise.h"
#include "crypto/sec.h"
#include "tests/unit/test.h"

#define ASSERT_OK(expr) ASSERT_EQ((expr), 0)

static void
setup(void)
{
	ASSERT_OK(sec_init());
}

static double
now_sec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t
splitmix64(uint64_t *state)
{
	uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));

	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

/* Fills buf with splitmix64(seed) output, little-endian. */
static void
fill_random(unsigned char *buf, size_t len, uint64_t seed)
{
	size_t i;
	uint64_t v = 0;

	for (i = 0; i < len; i++) {
		if (i % 8 == 0)
			v = splitmix64(&seed);
		buf[i] = (unsigned char)(v >> (8 * (i % 8)));
	}
}

static void
unhex(const char *hex, unsigned char *out, size_t len)
{
	size_t bin_len = 0;

	ASSERT_OK(sodium_hex2bin(out, len, hex, strlen(hex), NULL, &bin_len, NULL));
	ASSERT_UEQ(bin_len, len);
}

/* Minimal JSON field extraction for the cacophony vector files. */

static char *
read_text_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	char *buf;
	long len;

	if (!f)
		TEST_FAIL("cannot open %s: %s", path, strerror(errno));
	ASSERT_OK(fseek(f, 0, SEEK_END));
	len = ftell(f);
	ASSERT(len > 0);
	rewind(f);
	buf = malloc((size_t)len + 1);
	ASSERT(buf != NULL);
	ASSERT_UEQ(fread(buf, 1, (size_t)len, f), (size_t)len);
	buf[len] = '\0';
	fclose(f);
	return buf;
}

/*
 * Finds the next `"key": "hex"` at or after *pos and before end, decodes the
 * hex into out (at most cap bytes) and returns its length, or -1 when absent.
 * *pos moves past the value.
 */
static long
json_hex(const char **pos, const char *end, const char *key, unsigned char *out, size_t cap)
{
	char pat[64];
	const char *p, *q;
	size_t bin_len = 0;

	snprintf(pat, sizeof(pat), "\"%s\": \"", key);
	p = strstr(*pos, pat);
	if (!p || p >= end)
		return -1;
	p += strlen(pat);
	q = strchr(p, '"');
	ASSERT(q != NULL);
	ASSERT((size_t)(q - p) / 2 <= cap);
	ASSERT_OK(sodium_hex2bin(out, cap, p, (size_t)(q - p), NULL, &bin_len, NULL));
	*pos = q + 1;
	return (long)bin_len;
}

struct vector {
	unsigned char prologue[64], init_static[32], init_eph[32];
	unsigned char resp_static[32], resp_eph[32], hash[64];
	size_t prologue_len, nmsg;
	unsigned char payload[8][256], ct[8][512];
	size_t payload_len[8], ct_len[8];
};

static void
load_vector(const char *file, const char *protocol, struct vector *v)
{
	char path[512], pat[128];
	char *json;
	const char *start, *end, *p;
	long n;

	snprintf(path, sizeof(path), "%s/tests/vectors/%s", SHOAL_SOURCE_DIR, file);
	json = read_text_file(path);
	snprintf(pat, sizeof(pat), "\"protocol_name\": \"%s\"", protocol);
	start = strstr(json, pat);
	if (!start)
		TEST_FAIL("%s not in %s", protocol, path);
	end = strstr(start + 1, "\"protocol_name\"");
	if (!end)
		end = json + strlen(json);

	memset(v, 0, sizeof(*v));
	p = start;
	n = json_hex(&p, end, "init_prologue", v->prologue, sizeof(v->prologue));
	ASSERT(n >= 0);
	v->prologue_len = (size_t)n;
	p = start;
	ASSERT_EQ(json_hex(&p, end, "init_static", v->init_static, 32), 32);
	p = start;
	ASSERT_EQ(json_hex(&p, end, "init_ephemeral", v->init_eph, 32), 32);
	p = start;
	ASSERT_EQ(json_hex(&p, end, "resp_static", v->resp_static, 32), 32);
	p = start;
	ASSERT_EQ(json_hex(&p, end, "resp_ephemeral", v->resp_eph, 32), 32);
	p = start;
	ASSERT_EQ(json_hex(&p, end, "handshake_hash", v->hash, 64), 64);
	p = strstr(start, "\"messages\"");
	ASSERT(p != NULL && p < end);
	for (;;) {
		ASSERT(v->nmsg < 8);
		n = json_hex(&p, end, "payload", v->payload[v->nmsg], sizeof(v->payload[0]));
		if (n < 0)
			break;
		v->payload_len[v->nmsg] = (size_t)n;
		n = json_hex(&p, end, "ciphertext", v->ct[v->nmsg], sizeof(v->ct[0]));
		ASSERT(n >= 0);
		v->ct_len[v->nmsg] = (size_t)n;
		v->nmsg++;
	}
	free(json);
}

/* Noise */

static int
aesgcm_skipped(enum sec_suite suite)
{
	if (suite == SEC_SUITE_AESGCM_SHA512 && !crypto_aead_aes256gcm_is_available()) {
		printf("skipped: AES-GCM not available on this CPU\n");
		return 1;
	}
	return 0;
}

static void
run_vector(enum sec_suite suite, const char *file, const char *protocol)
{
	struct sec_handshake *hs[2];
	struct sec_cipher *send[2], *recv[2];
	struct vector v;
	unsigned char buf[1024], pt[1024], pub[32], rs[32], h[SEC_HASH_MAX];
	size_t len, plen, hlen, m;
	int side;

	setup();
	if (aesgcm_skipped(suite)) {
		ASSERT_EQ(sec_handshake_new(&hs[0], suite, 1, buf, NULL, 0), SEC_EUNAVAIL);
		return;
	}
	load_vector(file, protocol, &v);
	ASSERT_UEQ(v.nmsg, 6);

	ASSERT_OK(sec_handshake_new(&hs[0], suite, 1, v.init_static, v.prologue, v.prologue_len));
	ASSERT_OK(sec_handshake_new(&hs[1], suite, 0, v.resp_static, v.prologue, v.prologue_len));
	ASSERT_OK(sec_handshake_set_ephemeral(hs[0], v.init_eph));
	ASSERT_OK(sec_handshake_set_ephemeral(hs[1], v.resp_eph));

	/* Handshake messages alternate initiator (0), responder (1), initiator. */
	for (m = 0; m < 3; m++) {
		side = (int)(m % 2);
		ASSERT_OK(sec_handshake_write(hs[side], v.payload[m], v.payload_len[m], buf,
					      sizeof(buf), &len));
		ASSERT_UEQ(len, v.ct_len[m]);
		ASSERT_MEMEQ(buf, v.ct[m], len);
		ASSERT_OK(sec_handshake_read(hs[!side], buf, len, pt, sizeof(pt), &plen));
		ASSERT_UEQ(plen, v.payload_len[m]);
		ASSERT_MEMEQ(pt, v.payload[m], plen);
	}
	for (side = 0; side < 2; side++) {
		ASSERT_EQ(sec_handshake_done(hs[side]), 1);
		ASSERT_OK(sec_handshake_hash(hs[side], h, &hlen));
		ASSERT_UEQ(hlen, 64);
		ASSERT_MEMEQ(h, v.hash, 64);
		/* Each side learned the other's static key. */
		ASSERT_OK(sec_handshake_remote_static(hs[side], rs));
		ASSERT_OK(crypto_scalarmult_base(pub, side == 0 ? v.resp_static : v.init_static));
		ASSERT_MEMEQ(rs, pub, 32);
		ASSERT_OK(sec_handshake_split(hs[side], &send[side], &recv[side]));
	}
	/* Transport messages keep alternating: message 3 is the responder's. */
	for (m = 3; m < v.nmsg; m++) {
		side = (int)(m % 2);
		ASSERT_OK(sec_cipher_seal(send[side], v.payload[m], v.payload_len[m], buf));
		ASSERT_UEQ(v.payload_len[m] + SEC_TAG_BYTES, v.ct_len[m]);
		ASSERT_MEMEQ(buf, v.ct[m], v.ct_len[m]);
		ASSERT_OK(sec_cipher_open(recv[!side], buf, v.ct_len[m], pt));
		ASSERT_MEMEQ(pt, v.payload[m], v.payload_len[m]);
	}
	/* The hash stays available after Split(). */
	ASSERT_OK(sec_handshake_hash(hs[1], h, &hlen));
	ASSERT_MEMEQ(h, v.hash, 64);
	for (side = 0; side < 2; side++) {
		sec_handshake_free(hs[side]);
		sec_cipher_free(send[side]);
		sec_cipher_free(recv[side]);
	}
}

TEST(noise_vector_chachapoly_blake2b)
{
	run_vector(SEC_SUITE_CHACHAPOLY_BLAKE2B, "noise-25519-chachapoly-blake2b.json",
		   "Noise_XX_25519_ChaChaPoly_BLAKE2b");
}

TEST(noise_vector_chachapoly_sha512)
{
	run_vector(SEC_SUITE_CHACHAPOLY_SHA512, "noise-25519-chachapoly-sha512.json",
		   "Noise_XX_25519_ChaChaPoly_SHA512");
}

TEST(noise_vector_aesgcm_sha512)
{
	run_vector(SEC_SUITE_AESGCM_SHA512, "noise-25519-aesgcm-sha512.json",
		   "Noise_XX_25519_AESGCM_SHA512");
}

/* A pair of handshakes with fixed keys, so every run makes the same bytes. */
struct pair {
	struct sec_handshake *hs[2];
	unsigned char s[2][32], e[2][32];
	unsigned char msg[3][256];
	size_t len[3];
};

static const unsigned char prologue[] = "shoal test prologue";
static const unsigned char hs_payload[3][12] = {"first msg..", "second msg.", "third msg.."};

static void
pair_new(struct pair *p, enum sec_suite suite, uint64_t seed)
{
	int side;

	fill_random(&p->s[0][0], sizeof(p->s), seed);
	fill_random(&p->e[0][0], sizeof(p->e), seed + 1);
	for (side = 0; side < 2; side++) {
		ASSERT_OK(sec_handshake_new(&p->hs[side], suite, side == 0, p->s[side], prologue,
					    sizeof(prologue)));
		ASSERT_OK(sec_handshake_set_ephemeral(p->hs[side], p->e[side]));
	}
}

static void
pair_free(struct pair *p)
{
	sec_handshake_free(p->hs[0]);
	sec_handshake_free(p->hs[1]);
}

/*
 * Runs the handshake; message tamper_msg has byte tamper_at xored with mask
 * on the way. Returns 0, or the first error and in *fail_side the side (0
 * initiator, 1 responder) whose call failed.
 */
static int
pair_run(struct pair *p, int tamper_msg, size_t tamper_at, unsigned char mask, int *fail_side)
{
	unsigned char pt[256];
	size_t plen;
	int m, side, rc;

	for (m = 0; m < 3; m++) {
		side = m % 2;
		*fail_side = side;
		rc = sec_handshake_write(p->hs[side], hs_payload[m], sizeof(hs_payload[m]),
					 p->msg[m], sizeof(p->msg[m]), &p->len[m]);
		if (rc < 0)
			return rc;
		if (m == tamper_msg)
			p->msg[m][tamper_at] ^= mask;
		*fail_side = !side;
		rc = sec_handshake_read(p->hs[!side], p->msg[m], p->len[m], pt, sizeof(pt), &plen);
		if (rc < 0)
			return rc;
		ASSERT_UEQ(plen, sizeof(hs_payload[m]));
		if (m != tamper_msg)
			ASSERT_MEMEQ(pt, hs_payload[m], plen);
	}
	*fail_side = -1;
	return 0;
}

static void
pair_ok(struct pair *p)
{
	int fail_side;

	ASSERT_OK(pair_run(p, -1, 0, 0, &fail_side));
}

static void
assert_unusable(struct sec_handshake *hs)
{
	unsigned char buf[256], h[SEC_HASH_MAX];
	struct sec_cipher *a, *b;
	size_t len;

	ASSERT_EQ(sec_handshake_done(hs), 0);
	ASSERT_EQ(sec_handshake_write(hs, NULL, 0, buf, sizeof(buf), &len), SEC_ESTATE);
	ASSERT_EQ(sec_handshake_read(hs, buf, sizeof(buf), buf, sizeof(buf), &len), SEC_ESTATE);
	ASSERT_EQ(sec_handshake_remote_static(hs, buf), SEC_ESTATE);
	ASSERT_EQ(sec_handshake_hash(hs, h, &len), SEC_ESTATE);
	ASSERT_EQ(sec_handshake_split(hs, &a, &b), SEC_ESTATE);
	ASSERT(a == NULL && b == NULL);
}

static void
run_roundtrip(enum sec_suite suite)
{
	struct sec_cipher *send[2], *recv[2];
	struct pair p;
	unsigned char buf[SEC_NOISE_MAX_MSG], copy[SEC_NOISE_MAX_MSG], h[2][SEC_HASH_MAX];
	unsigned char pub[32], rs[32];
	size_t hlen, len;
	int side, i;

	pair_new(&p, suite, 1000 + (uint64_t)suite);
	pair_ok(&p);
	for (side = 0; side < 2; side++) {
		ASSERT_OK(sec_handshake_hash(p.hs[side], h[side], &hlen));
		ASSERT_OK(sec_handshake_remote_static(p.hs[side], rs));
		ASSERT_OK(crypto_scalarmult_base(pub, p.s[!side]));
		ASSERT_MEMEQ(rs, pub, 32);
		ASSERT_OK(sec_handshake_split(p.hs[side], &send[side], &recv[side]));
	}
	ASSERT_MEMEQ(h[0], h[1], 64);
	/* Split() happens once. */
	for (side = 0; side < 2; side++) {
		struct sec_cipher *a = send[0], *b = recv[0];
		ASSERT_EQ(sec_handshake_split(p.hs[side], &a, &b), SEC_ESTATE);
		ASSERT(a == NULL && b == NULL);
	}
	pair_free(&p);

	/* Empty payloads, passed as NULL. */
	{
		unsigned char m1[256], out[256];
		size_t len1, plen;
		int fs;
		pair_new(&p, suite, 2000 + (uint64_t)suite);
		for (i = 0; i < 3; i++) {
			fs = i % 2;
			ASSERT_OK(sec_handshake_write(p.hs[fs], NULL, 0, m1, sizeof(m1), &len1));
			ASSERT_UEQ(len1, i == 0 ? 32 : i == 1 ? 96 : 64);
			ASSERT_OK(sec_handshake_read(p.hs[!fs], m1, len1, NULL, 0, &plen));
			ASSERT_UEQ(plen, 0);
		}
		ASSERT_EQ(sec_handshake_done(p.hs[0]) + sec_handshake_done(p.hs[1]), 2);
		pair_free(&p);
		ASSERT_OK(sec_cipher_seal(send[0], NULL, 0, out));
		ASSERT_OK(sec_cipher_open(recv[1], out, SEC_TAG_BYTES, NULL));
		ASSERT_OK(sec_cipher_seal(send[1], NULL, 0, out));
		ASSERT_OK(sec_cipher_open(recv[0], out, SEC_TAG_BYTES, NULL));
	}

	/* In place, both directions, sizes up to the largest message. */
	for (i = 0; i < 40; i++) {
		side = i % 2;
		len = i == 39 ? SEC_NOISE_MAX_MSG - SEC_TAG_BYTES : (size_t)i * 37;
		fill_random(buf, len, (uint64_t)i);
		memcpy(copy, buf, len);
		ASSERT_OK(sec_cipher_seal(send[side], buf, len, buf));
		ASSERT_OK(sec_cipher_open(recv[!side], buf, len + SEC_TAG_BYTES, buf));
		ASSERT_MEMEQ(buf, copy, len);
	}
	ASSERT_UEQ(sec_cipher_nonce(send[0]), 21);
	ASSERT_UEQ(sec_cipher_nonce(recv[1]), 21);
	for (side = 0; side < 2; side++) {
		sec_cipher_free(send[side]);
		sec_cipher_free(recv[side]);
	}
}

TEST(noise_roundtrip)
{
	setup();
	run_roundtrip(SEC_SUITE_CHACHAPOLY_BLAKE2B);
	run_roundtrip(SEC_SUITE_CHACHAPOLY_SHA512);
	if (!aesgcm_skipped(SEC_SUITE_AESGCM_SHA512))
		run_roundtrip(SEC_SUITE_AESGCM_SHA512);
}

TEST(noise_tamper_handshake)
{
	static const enum sec_suite suites[] = {SEC_SUITE_CHACHAPOLY_BLAKE2B,
						SEC_SUITE_AESGCM_SHA512};
	static const unsigned char masks[] = {0x01, 0x80};
	struct pair p;
	size_t len[3], at;
	int m, k, s, rc, fs;

	setup();
	for (s = 0; s < 2; s++) {
		if (aesgcm_skipped(suites[s]))
			continue;
		pair_new(&p, suites[s], 7);
		pair_ok(&p);
		memcpy(len, p.len, sizeof(len));
		pair_free(&p);
		ASSERT_UEQ(len[0], 32 + 12);
		ASSERT_UEQ(len[1], 32 + 48 + 12 + 16);
		ASSERT_UEQ(len[2], 48 + 12 + 16);

		for (m = 0; m < 3; m++) {
			for (at = 0; at < len[m]; at++) {
				for (k = 0; k < 2; k++) {
					pair_new(&p, suites[s], 7);
					rc = pair_run(&p, m, at, masks[k], &fs);
					if (rc != SEC_EDECRYPT && rc != SEC_EKEY)
						TEST_FAIL("msg %d byte %zu mask %02x: rc %d", m, at,
							  masks[k], rc);
					/*
					 * Message 1 is not authenticated: a change to its
					 * payload shows when the initiator reads message 2.
					 * Later messages fail when they are read.
					 */
					if (m > 0 || rc == SEC_EKEY)
						ASSERT_EQ(fs, !(m % 2));
					else
						ASSERT_EQ(fs, 0);
					assert_unusable(p.hs[fs]);
					pair_free(&p);
				}
			}
		}
	}
}

TEST(noise_tamper_transport)
{
	struct sec_cipher *send[2], *recv[2];
	struct pair p;
	unsigned char msg[100], ct[100 + SEC_TAG_BYTES], bad[sizeof(ct)], out[sizeof(ct)];
	size_t at;
	int side;

	setup();
	pair_new(&p, SEC_SUITE_CHACHAPOLY_BLAKE2B, 11);
	pair_ok(&p);
	for (side = 0; side < 2; side++)
		ASSERT_OK(sec_handshake_split(p.hs[side], &send[side], &recv[side]));
	pair_free(&p);

	fill_random(msg, sizeof(msg), 3);
	ASSERT_OK(sec_cipher_seal(send[0], msg, sizeof(msg), ct));
	for (at = 0; at < sizeof(ct); at++) {
		memcpy(bad, ct, sizeof(ct));
		bad[at] ^= 0x01;
		ASSERT_EQ(sec_cipher_open(recv[1], bad, sizeof(bad), out), SEC_EDECRYPT);
		/* A failed open does not consume the nonce. */
		ASSERT_UEQ(sec_cipher_nonce(recv[1]), 0);
	}
	/* Truncations. */
	for (at = 0; at < sizeof(ct); at++) {
		int rc = sec_cipher_open(recv[1], ct, at, out);
		ASSERT_EQ(rc, at < SEC_TAG_BYTES ? SEC_EINVAL : SEC_EDECRYPT);
	}
	/* The wrong direction's key fails too. */
	ASSERT_EQ(sec_cipher_open(recv[0], ct, sizeof(ct), out), SEC_EDECRYPT);
	ASSERT_OK(sec_cipher_open(recv[1], ct, sizeof(ct), out));
	ASSERT_MEMEQ(out, msg, sizeof(msg));
	/* A replay fails: the nonce has moved on. */
	ASSERT_EQ(sec_cipher_open(recv[1], ct, sizeof(ct), out), SEC_EDECRYPT);
	ASSERT_UEQ(sec_cipher_nonce(recv[1]), 1);
	for (side = 0; side < 2; side++) {
		sec_cipher_free(send[side]);
		sec_cipher_free(recv[side]);
	}
}

TEST(noise_wrong_key)
{
	struct sec_handshake *ini, *resp;
	unsigned char expected_s[32], impostor_s[32], ini_s[32], expected_pub[32];
	unsigned char impostor_pub[32], rs[32], msg[256], pt[256];
	size_t len, plen;

	setup();
	fill_random(expected_s, 32, 21);
	fill_random(impostor_s, 32, 22);
	fill_random(ini_s, 32, 23);
	ASSERT_OK(crypto_scalarmult_base(expected_pub, expected_s));
	ASSERT_OK(crypto_scalarmult_base(impostor_pub, impostor_s));

	ASSERT_OK(sec_handshake_new(&ini, SEC_SUITE_CHACHAPOLY_BLAKE2B, 1, ini_s, NULL, 0));
	ASSERT_OK(sec_handshake_new(&resp, SEC_SUITE_CHACHAPOLY_BLAKE2B, 0, impostor_s, NULL, 0));
	ASSERT_EQ(sec_handshake_remote_static(ini, rs), SEC_ESTATE);
	ASSERT_OK(sec_handshake_write(ini, NULL, 0, msg, sizeof(msg), &len));
	ASSERT_OK(sec_handshake_read(resp, msg, len, pt, sizeof(pt), &plen));
	ASSERT_EQ(sec_handshake_remote_static(ini, rs), SEC_ESTATE);
	ASSERT_OK(sec_handshake_write(resp, NULL, 0, msg, sizeof(msg), &len));
	ASSERT_OK(sec_handshake_read(ini, msg, len, pt, sizeof(pt), &plen));

	/* Message 3 is not written yet, and rs already shows the impostor. */
	ASSERT_EQ(sec_handshake_done(ini), 0);
	ASSERT_OK(sec_handshake_remote_static(ini, rs));
	ASSERT_MEMEQ(rs, impostor_pub, 32);
	ASSERT(memcmp(rs, expected_pub, 32) != 0);
	/* The responder has not learned the initiator's key. */
	ASSERT_EQ(sec_handshake_remote_static(resp, rs), SEC_ESTATE);
	sec_handshake_free(ini);
	sec_handshake_free(resp);
}

/*
 * The X25519 points of small order (libsodium's blacklist, from
 * cr.yp.to/ecdh.html and the "May the Fourth" paper), canonical first.
 */
static const char *const small_order_hex[] = {
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0100000000000000000000000000000000000000000000000000000000000000",
    "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
    "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", /* p */
    "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", /* p + 1 */
};

/* The responder reads a message 1 carrying e; the initiator a message 2. */
static void
assert_e_refused(const unsigned char e[32], int rc_expected)
{
	struct sec_handshake *ini, *resp;
	unsigned char s[32], msg[256], pt[256];
	size_t len, plen;

	fill_random(s, 32, 31);
	ASSERT_OK(sec_handshake_new(&resp, SEC_SUITE_CHACHAPOLY_BLAKE2B, 0, s, NULL, 0));
	memcpy(msg, e, 32);
	ASSERT_EQ(sec_handshake_read(resp, msg, 32, pt, sizeof(pt), &plen), rc_expected);
	if (rc_expected < 0)
		assert_unusable(resp);
	sec_handshake_free(resp);

	ASSERT_OK(sec_handshake_new(&ini, SEC_SUITE_CHACHAPOLY_BLAKE2B, 1, s, NULL, 0));
	ASSERT_OK(sec_handshake_write(ini, NULL, 0, msg, sizeof(msg), &len));
	memcpy(msg, e, 32);
	memset(msg + 32, 0x55, 64);
	ASSERT_EQ(sec_handshake_read(ini, msg, 96, pt, sizeof(pt), &plen),
		  rc_expected < 0 ? rc_expected : SEC_EDECRYPT);
	assert_unusable(ini);
	sec_handshake_free(ini);
}

TEST(noise_low_order)
{
	unsigned char pt[32], scalar[32], shared[32];
	size_t i;

	setup();
	fill_random(scalar, 32, 41);
	for (i = 0; i < sizeof(small_order_hex) / sizeof(small_order_hex[0]); i++) {
		unhex(small_order_hex[i], pt, 32);
		/* The list is right: libsodium refuses each of them. */
		ASSERT_EQ(crypto_scalarmult(shared, scalar, pt), -1);
		assert_e_refused(pt, SEC_EKEY);
		/* With bit 255 set they are refused as non-canonical. */
		pt[31] |= 0x80;
		assert_e_refused(pt, SEC_EKEY);
	}
}

TEST(noise_noncanonical)
{
	unsigned char priv[32], pub[32];

	setup();
	fill_random(priv, 32, 51);
	ASSERT_OK(crypto_scalarmult_base(pub, priv));
	ASSERT_EQ(pub[31] & 0x80, 0);
	/* A good key with bit 255 set. */
	pub[31] |= 0x80;
	assert_e_refused(pub, SEC_EKEY);
	/* p + 1 = 2^255 - 18, and 2^255 - 1, the largest value below bit 255. */
	unhex("eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", pub, 32);
	assert_e_refused(pub, SEC_EKEY);
	unhex("ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", pub, 32);
	assert_e_refused(pub, SEC_EKEY);
	unhex("f0ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", pub, 32);
	assert_e_refused(pub, SEC_EKEY);
	/* p - 2 is canonical and of large order: accepted (then bad MAC). */
	unhex("ebffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", pub, 32);
	assert_e_refused(pub, 0);
}

TEST(noise_nonce_limit)
{
	struct sec_cipher *send[2], *recv[2];
	struct pair p;
	unsigned char msg[16 + SEC_TAG_BYTES], out[sizeof(msg)];
	int side;

	setup();
	pair_new(&p, SEC_SUITE_CHACHAPOLY_SHA512, 61);
	pair_ok(&p);
	for (side = 0; side < 2; side++)
		ASSERT_OK(sec_handshake_split(p.hs[side], &send[side], &recv[side]));
	pair_free(&p);

	sec_cipher_set_nonce(send[0], UINT64_MAX - 2);
	sec_cipher_set_nonce(recv[1], UINT64_MAX - 2);
	memset(msg, 'x', 16);
	ASSERT_OK(sec_cipher_seal(send[0], msg, 16, msg));
	ASSERT_OK(sec_cipher_open(recv[1], msg, sizeof(msg), out));
	memset(msg, 'y', 16);
	ASSERT_OK(sec_cipher_seal(send[0], msg, 16, msg));
	ASSERT_OK(sec_cipher_open(recv[1], msg, sizeof(msg), out));
	ASSERT_UEQ(sec_cipher_nonce(send[0]), UINT64_MAX);
	ASSERT_UEQ(sec_cipher_nonce(recv[1]), UINT64_MAX);
	/* 2^64 - 1 is never used. */
	ASSERT_EQ(sec_cipher_seal(send[0], msg, 16, out), SEC_ENONCE);
	ASSERT_EQ(sec_cipher_open(recv[1], msg, sizeof(msg), out), SEC_ENONCE);
	ASSERT_UEQ(sec_cipher_nonce(send[0]), UINT64_MAX);
	for (side = 0; side < 2; side++) {
		sec_cipher_free(send[side]);
		sec_cipher_free(recv[side]);
	}
}

TEST(noise_state_order)
{
	struct sec_handshake *ini, *resp;
	struct sec_cipher *a, *b;
	unsigned char s[32], e[32], msg[256], pt[256], h[SEC_HASH_MAX];
	size_t len, len3, plen;

	setup();
	fill_random(s, 32, 71);
	fill_random(e, 32, 72);
	ASSERT_EQ(sec_handshake_new(&ini, (enum sec_suite)3, 1, s, NULL, 0), SEC_EINVAL);
	ASSERT(ini == NULL);

	/* The initiator cannot read first. */
	ASSERT_OK(sec_handshake_new(&ini, SEC_SUITE_CHACHAPOLY_BLAKE2B, 1, s, NULL, 0));
	memset(msg, 9, 64);
	ASSERT_EQ(sec_handshake_read(ini, msg, 64, pt, sizeof(pt), &plen), SEC_ESTATE);
	assert_unusable(ini);
	sec_handshake_free(ini);

	/* The responder cannot write first. */
	ASSERT_OK(sec_handshake_new(&resp, SEC_SUITE_CHACHAPOLY_BLAKE2B, 0, s, NULL, 0));
	ASSERT_EQ(sec_handshake_write(resp, NULL, 0, msg, sizeof(msg), &len), SEC_ESTATE);
	assert_unusable(resp);
	sec_handshake_free(resp);

	ASSERT_OK(sec_handshake_new(&ini, SEC_SUITE_CHACHAPOLY_BLAKE2B, 1, s, NULL, 0));
	ASSERT_OK(sec_handshake_new(&resp, SEC_SUITE_CHACHAPOLY_BLAKE2B, 0, s, NULL, 0));
	ASSERT_EQ(sec_handshake_hash(ini, h, &len), SEC_ESTATE);
	ASSERT_EQ(sec_handshake_split(ini, &a, &b), SEC_ESTATE);
	ASSERT_OK(sec_handshake_write(ini, NULL, 0, msg, sizeof(msg), &len));
	/* The ephemeral is fixed only before this side's first write. */
	ASSERT_EQ(sec_handshake_set_ephemeral(ini, e), SEC_ESTATE);
	ASSERT_OK(sec_handshake_read(resp, msg, len, pt, sizeof(pt), &plen));
	ASSERT_UEQ(plen, 0);
	ASSERT_OK(sec_handshake_set_ephemeral(resp, e));
	ASSERT_OK(sec_handshake_write(resp, NULL, 0, msg, sizeof(msg), &len));
	ASSERT_EQ(sec_handshake_set_ephemeral(resp, e), SEC_ESTATE);
	ASSERT_OK(sec_handshake_read(ini, msg, len, pt, sizeof(pt), &plen));
	ASSERT_OK(sec_handshake_write(ini, NULL, 0, msg, sizeof(msg), &len3));
	ASSERT_EQ(sec_handshake_done(ini), 1);
	ASSERT_EQ(sec_handshake_done(resp), 0);
	ASSERT_EQ(sec_handshake_split(resp, &a, &b), SEC_ESTATE);
	/* A fourth handshake message is out of order. */
	ASSERT_EQ(sec_handshake_write(ini, NULL, 0, pt, sizeof(pt), &len), SEC_ESTATE);
	ASSERT_EQ(sec_handshake_done(ini), 1);
	ASSERT_OK(sec_handshake_read(resp, msg, len3, pt, sizeof(pt), &plen));
	ASSERT_EQ(sec_handshake_read(resp, msg, len3, pt, sizeof(pt), &plen), SEC_ESTATE);
	ASSERT_OK(sec_handshake_split(resp, &a, &b));
	sec_cipher_free(a);
	sec_cipher_free(b);
	ASSERT_OK(sec_handshake_split(ini, &a, &b));
	sec_cipher_free(a);
	sec_cipher_free(b);
	sec_handshake_free(ini);
	sec_handshake_free(resp);
}

TEST(noise_too_big)
{
	struct sec_handshake *ini, *resp;
	struct sec_cipher *send[2], *recv[2];
	struct pair p;
	unsigned char *big, s[32], msg[256], pt[256];
	size_t len, plen;
	int side;

	setup();
	big = calloc(1, SEC_NOISE_MAX_MSG + 1 + SEC_TAG_BYTES);
	ASSERT(big != NULL);
	fill_random(s, 32, 81);

	ASSERT_OK(sec_handshake_new(&ini, SEC_SUITE_CHACHAPOLY_BLAKE2B, 1, s, NULL, 0));
	ASSERT_EQ(
	    sec_handshake_write(ini, big, SEC_NOISE_MAX_MSG - 31, big, SEC_NOISE_MAX_MSG + 1, &len),
	    SEC_ETOOBIG);
	sec_handshake_free(ini);
	/* The largest message 1 fits exactly. */
	ASSERT_OK(sec_handshake_new(&ini, SEC_SUITE_CHACHAPOLY_BLAKE2B, 1, s, NULL, 0));
	ASSERT_OK(sec_handshake_write(ini, big + 40000, SEC_NOISE_MAX_MSG - 32 - 40000, big,
				      SEC_NOISE_MAX_MSG, &len));
	ASSERT_UEQ(len, SEC_NOISE_MAX_MSG - 40000);
	sec_handshake_free(ini);
	/* An output buffer too small. */
	ASSERT_OK(sec_handshake_new(&ini, SEC_SUITE_CHACHAPOLY_BLAKE2B, 1, s, NULL, 0));
	ASSERT_EQ(sec_handshake_write(ini, pt, 10, msg, 41, &len), SEC_ETOOBIG);
	sec_handshake_free(ini);
	/* A payload buffer too small, and a message over 65,535 bytes. */
	ASSERT_OK(sec_handshake_new(&ini, SEC_SUITE_CHACHAPOLY_BLAKE2B, 1, s, NULL, 0));
	ASSERT_OK(sec_handshake_new(&resp, SEC_SUITE_CHACHAPOLY_BLAKE2B, 0, s, NULL, 0));
	memset(pt, 0, sizeof(pt));
	ASSERT_OK(sec_handshake_write(ini, pt, 10, msg, sizeof(msg), &len));
	ASSERT_EQ(sec_handshake_read(resp, msg, len, pt, 9, &plen), SEC_ETOOBIG);
	sec_handshake_free(resp);
	ASSERT_OK(sec_handshake_new(&resp, SEC_SUITE_CHACHAPOLY_BLAKE2B, 0, s, NULL, 0));
	ASSERT_EQ(
	    sec_handshake_read(resp, big, SEC_NOISE_MAX_MSG + 1, big, SEC_NOISE_MAX_MSG + 1, &plen),
	    SEC_ETOOBIG);
	sec_handshake_free(resp);
	ASSERT_OK(sec_handshake_new(&resp, SEC_SUITE_CHACHAPOLY_BLAKE2B, 0, s, NULL, 0));
	ASSERT_EQ(sec_handshake_read(resp, msg, 31, pt, sizeof(pt), &plen), SEC_EINVAL);
	sec_handshake_free(resp);
	sec_handshake_free(ini);

	/* Transport: 65,535 bytes with the tag is the most. */
	pair_new(&p, SEC_SUITE_CHACHAPOLY_BLAKE2B, 82);
	pair_ok(&p);
	for (side = 0; side < 2; side++)
		ASSERT_OK(sec_handshake_split(p.hs[side], &send[side], &recv[side]));
	pair_free(&p);
	ASSERT_EQ(sec_cipher_seal(send[0], big, SEC_NOISE_MAX_MSG - SEC_TAG_BYTES + 1, big),
		  SEC_ETOOBIG);
	ASSERT_EQ(sec_cipher_open(recv[1], big, SEC_NOISE_MAX_MSG + 1, big), SEC_ETOOBIG);
	ASSERT_UEQ(sec_cipher_nonce(send[0]), 0);
	ASSERT_OK(sec_cipher_seal(send[0], big, SEC_NOISE_MAX_MSG - SEC_TAG_BYTES, big));
	ASSERT_OK(sec_cipher_open(recv[1], big, SEC_NOISE_MAX_MSG, big));
	for (side = 0; side < 2; side++) {
		sec_cipher_free(send[side]);
		sec_cipher_free(recv[side]);
	}
	free(big);
}

/* Identity */

/* RFC 8032 section 7.1, test 1; x_pk and the ID computed independently. */
static const char rfc8032_seed[] =
    "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
static const char rfc8032_pk[] = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
static const char rfc8032_xpk[] =
    "d85e07ec22b0ad881537c2f44d662d1a143cf830c57aca4305d85c7a90f6b62e";
static const char rfc8032_id[] = "7f8f499de7ddd7bca59283a5508f84d70ef7917a23530879c86a0b6b4620f798";
static const char rfc8032_devid[] =
    "P6HUTHP-H3XL3Z5-JMSQOSV-BD4E24W-HPPEL2E-NJQQ6O7-INIFWWR-RA66MAQ";

TEST(identity_known_answer)
{
	struct sec_identity id;
	unsigned char seed[32], want[32], x_pk[32];
	char str[SEC_DEVID_STRLEN + 1];

	setup();
	unhex(rfc8032_seed, seed, 32);
	ASSERT_OK(sec_identity_from_seed(&id, seed));
	unhex(rfc8032_pk, want, 32);
	ASSERT_MEMEQ(id.ed_pk, want, 32);
	unhex(rfc8032_xpk, want, 32);
	ASSERT_MEMEQ(id.x_pk, want, 32);
	ASSERT_OK(crypto_scalarmult_base(x_pk, id.x_sk));
	ASSERT_MEMEQ(x_pk, id.x_pk, 32);
	ASSERT_MEMEQ(id.ed_sk, seed, 32);
	unhex(rfc8032_id, want, 32);
	ASSERT_MEMEQ(id.id, want, 32);
	sec_devid_from_x25519(id.x_pk, x_pk);
	ASSERT_MEMEQ(x_pk, want, 32);
	sec_devid_format(id.id, str);
	ASSERT_STREQ(str, rfc8032_devid);
	ASSERT_UEQ(sec_devid_short(id.id), UINT64_C(0x7f8f499de7ddd7bc));
	sec_identity_release(&id);
	ASSERT(id.ed_sk == NULL && id.x_sk == NULL);
	sec_identity_release(&id);

	/* Two generated identities differ, and are self-consistent. */
	{
		struct sec_identity a, b;
		ASSERT_OK(sec_identity_generate(&a));
		ASSERT_OK(sec_identity_generate(&b));
		ASSERT(memcmp(a.ed_pk, b.ed_pk, 32) != 0);
		ASSERT_OK(crypto_scalarmult_base(x_pk, a.x_sk));
		ASSERT_MEMEQ(x_pk, a.x_pk, 32);
		sec_identity_release(&a);
		sec_identity_release(&b);
	}
}

static char tmpdir[256];

static void
make_tmpdir(void)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/shoal-crypto-test-XXXXXX");
	ASSERT(mkdtemp(tmpdir) != NULL);
}

static void
remove_tmpdir(void)
{
	DIR *d = opendir(tmpdir);
	struct dirent *de;
	char path[512];

	ASSERT(d != NULL);
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", tmpdir, de->d_name);
		ASSERT_OK(unlink(path));
	}
	closedir(d);
	ASSERT_OK(rmdir(tmpdir));
}

static int
count_entries(void)
{
	DIR *d = opendir(tmpdir);
	struct dirent *de;
	int n = 0;

	ASSERT(d != NULL);
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

static void
write_file(const char *path, const char *data, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	ASSERT(fd >= 0);
	ASSERT_EQ(write(fd, data, len), (long long)len);
	ASSERT_OK(close(fd));
}

TEST(identity_save_load)
{
	struct sec_identity a, b;
	unsigned char seed[32];
	char path[512], *text;
	struct stat st;
	mode_t old_umask;

	setup();
	make_tmpdir();
	snprintf(path, sizeof(path), "%s/key", tmpdir);
	unhex(rfc8032_seed, seed, 32);
	ASSERT_OK(sec_identity_from_seed(&a, seed));
	ASSERT_EQ(sec_identity_load(&b, path), -ENOENT);
	sec_identity_release(&b);

	/* Even a permissive umask gives 0600. */
	old_umask = umask(0);
	ASSERT_OK(sec_identity_save(&a, path));
	umask(old_umask);
	ASSERT_OK(stat(path, &st));
	ASSERT_EQ(st.st_mode & 07777, 0600);
	ASSERT_EQ(count_entries(), 1);
	text = read_text_file(path);
	ASSERT_STREQ(text, "shoal-ed25519-seed-v1\n"
			   "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60\n");
	free(text);

	ASSERT_OK(sec_identity_load(&b, path));
	ASSERT_MEMEQ(b.ed_pk, a.ed_pk, 32);
	ASSERT_MEMEQ(b.ed_sk, a.ed_sk, 64);
	ASSERT_MEMEQ(b.x_sk, a.x_sk, 32);
	ASSERT_MEMEQ(b.x_pk, a.x_pk, 32);
	ASSERT_MEMEQ(b.id, a.id, 32);
	sec_identity_release(&b);

	/* Saving over an existing file replaces it atomically. */
	sec_identity_release(&a);
	ASSERT_OK(sec_identity_generate(&a));
	ASSERT_OK(sec_identity_save(&a, path));
	ASSERT_EQ(count_entries(), 1);
	ASSERT_OK(sec_identity_load(&b, path));
	ASSERT_MEMEQ(b.id, a.id, 32);
	sec_identity_release(&a);
	sec_identity_release(&b);

	/* A directory that does not exist. */
	snprintf(path, sizeof(path), "%s/nodir/key", tmpdir);
	ASSERT_OK(sec_identity_from_seed(&a, seed));
	ASSERT_EQ(sec_identity_save(&a, path), -ENOENT);
	sec_identity_release(&a);
	remove_tmpdir();
}

TEST(identity_keyfile_malformed)
{
	static const char *const bad[] = {
	    "",
	    "shoal-ed25519-seed-v1\n",
	    "shoal-ed25519-seed-v2\n"
	    "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60\n",
	    "shoal-ed25519-seed-v1\n"
	    "9D61B19DEFFD5A60BA844AF492EC2CC44449C5697B326919703BAC031CAE7F60\n",
	    "shoal-ed25519-seed-v1\n"
	    "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f6\n",
	    "shoal-ed25519-seed-v1\n"
	    "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f600\n",
	    "shoal-ed25519-seed-v1\n"
	    "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
	    "shoal-ed25519-seed-v1\n"
	    "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60\n\n",
	    "shoal-ed25519-seed-v1\r\n"
	    "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60\n",
	    "shoal-ed25519-seed-v1\n"
	    "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7fzz\n",
	    "shoal-ed25519-seed-v1\n"
	    " 9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f6\n",
	};
	struct sec_identity id;
	char path[512];
	size_t i;

	setup();
	make_tmpdir();
	snprintf(path, sizeof(path), "%s/key", tmpdir);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		write_file(path, bad[i], strlen(bad[i]));
		if (sec_identity_load(&id, path) != SEC_EKEYFILE)
			TEST_FAIL("bad key file %zu accepted", i);
		ASSERT(id.ed_sk == NULL && id.x_sk == NULL);
		sec_identity_release(&id);
	}
	ASSERT_EQ(sec_identity_load(&id, tmpdir), -EISDIR);
	sec_identity_release(&id);
	/* The well-formed file loads. */
	write_file(path,
		   "shoal-ed25519-seed-v1\n"
		   "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60\n",
		   22 + 65);
	ASSERT_OK(sec_identity_load(&id, path));
	sec_identity_release(&id);
	remove_tmpdir();
}

/* Device IDs */

static const char b32[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

TEST(devid_format_known)
{
	unsigned char id[32], back[32];
	char str[SEC_DEVID_STRLEN + 1];
	int i;

	setup();
	/* Rendered by an independent implementation of the same rules. */
	for (i = 0; i < 32; i++)
		id[i] = (unsigned char)i;
	sec_devid_format(id, str);
	ASSERT_STREQ(str, "AAAQEAY-EAUDAO5-CAJBIFQ-YDIOB4X-IBCEQTC-QKRMFYM-YDENBWH-A5DYPQS");
	ASSERT_OK(sec_devid_parse(str, back));
	ASSERT_MEMEQ(back, id, 32);
	memset(id, 0, 32);
	sec_devid_format(id, str);
	ASSERT_STREQ(str, "AAAAAAA-AAAAAAA-AAAAAAA-AAAAAAA-AAAAAAA-AAAAAAA-AAAAAAA-AAAAAAA");
}

TEST(devid_roundtrip)
{
	unsigned char id[32], back[32];
	char str[SEC_DEVID_STRLEN + 1];
	int i, j;

	setup();
	for (i = 0; i < 2000; i++) {
		fill_random(id, 32, (uint64_t)i * 7919);
		memset(str, 0x5a, sizeof(str));
		sec_devid_format(id, str);
		ASSERT_UEQ(strlen(str), SEC_DEVID_STRLEN);
		for (j = 0; j < SEC_DEVID_STRLEN; j++) {
			if (j % 8 == 7)
				ASSERT_EQ(str[j], '-');
			else
				ASSERT(strchr(b32, str[j]) != NULL);
		}
		memset(back, 0, 32);
		ASSERT_OK(sec_devid_parse(str, back));
		ASSERT_MEMEQ(back, id, 32);
	}
}

TEST(devid_typo)
{
	static const char others[] = "0189!@a";
	unsigned char id[32], back[32];
	char str[SEC_DEVID_STRLEN + 1], typo[SEC_DEVID_STRLEN + 1], longer[80];
	int pos, k, rc, checked = 0;

	setup();
	memset(back, 0, sizeof(back));
	unhex(rfc8032_id, id, 32);
	sec_devid_format(id, str);
	for (pos = 0; pos < SEC_DEVID_STRLEN; pos++) {
		if (str[pos] == '-')
			continue;
		/* Every other character of the alphabet: a wrong check character. */
		for (k = 0; k < 32; k++) {
			if (b32[k] == str[pos])
				continue;
			memcpy(typo, str, sizeof(str));
			typo[pos] = b32[k];
			rc = sec_devid_parse(typo, back);
			if (rc != SEC_EDEVIDCHECK)
				TEST_FAIL("%s at %d: rc %d", typo, pos, rc);
			/* In lower case too. */
			if (typo[pos] >= 'A' && typo[pos] <= 'Z') {
				typo[pos] = (char)(typo[pos] - 'A' + 'a');
				ASSERT_EQ(sec_devid_parse(typo, back), SEC_EDEVIDCHECK);
			}
			checked++;
		}
		/* Characters outside the alphabet. */
		for (k = 0; others[k]; k++) {
			memcpy(typo, str, sizeof(str));
			typo[pos] = others[k];
			rc = sec_devid_parse(typo, back);
			if (others[k] == 'a' && str[pos] == 'A')
				ASSERT_OK(rc);
			else if (others[k] != 'a')
				ASSERT_EQ(rc, SEC_EDEVID);
		}
	}
	ASSERT_EQ(checked, 56 * 31);
	/* Missing and extra characters. */
	memcpy(typo, str, sizeof(str));
	typo[SEC_DEVID_STRLEN - 1] = '\0';
	ASSERT_EQ(sec_devid_parse(typo, back), SEC_EDEVID);
	snprintf(longer, sizeof(longer), "%sA", str);
	ASSERT_EQ(sec_devid_parse(longer, back), SEC_EDEVID);
	ASSERT_EQ(sec_devid_parse(str + 1, back), SEC_EDEVID);
	ASSERT_EQ(sec_devid_parse("", back), SEC_EDEVID);
}

/* Luhn mod 32 as in the Wikipedia "Luhn mod N algorithm" article. */
static int
test_luhn32(const int *cp, int n)
{
	int factor = 2, sum = 0, i, addend;

	for (i = n - 1; i >= 0; i--) {
		addend = factor * cp[i];
		factor = factor == 2 ? 1 : 2;
		sum += addend / 32 + addend % 32;
	}
	return (32 - sum % 32) % 32;
}

TEST(devid_lenient_input)
{
	unsigned char id[32], back[32];
	char str[SEC_DEVID_STRLEN + 1], in[128];
	int cp[13], i, j, n, orig, pad;

	setup();
	unhex(rfc8032_id, id, 32);
	sec_devid_format(id, str);

	/* Lower case, no dashes. */
	for (i = 0, n = 0; str[i]; i++)
		if (str[i] != '-')
			in[n++] =
			    (char)(str[i] >= 'A' && str[i] <= 'Z' ? str[i] - 'A' + 'a' : str[i]);
	in[n] = '\0';
	ASSERT_UEQ(strlen(in), 56);
	memset(back, 0, 32);
	ASSERT_OK(sec_devid_parse(in, back));
	ASSERT_MEMEQ(back, id, 32);

	/* Spaces in place of dashes, mixed case, stray separators. */
	snprintf(in, sizeof(in),
		 " p6huthp h3xl3z5-JMSQOSV BD4E24W--HPPEL2E NJQQ6O7-INIFWWR-RA66MAq ");
	memset(back, 0, 32);
	ASSERT_OK(sec_devid_parse(in, back));
	ASSERT_MEMEQ(back, id, 32);
	ASSERT_EQ(sec_devid_parse("P6HUTHP_H3XL3Z5-JMSQOSV-BD4E24W-HPPEL2E-NJQQ6O7-INIFWWR-RA66MAQ",
				  back),
		  SEC_EDEVID);

	/*
	 * A non-canonical rendering: padding bits set in the last data character
	 * (index 54), with a check character that matches. It names no ID.
	 */
	for (i = 0, n = 0; str[i]; i++)
		if (str[i] != '-')
			in[n++] = str[i];
	in[n] = '\0';
	/* Code point 0 or 16: the one data bit, then four clear padding bits. */
	orig = (int)(strchr(b32, in[54]) - b32);
	ASSERT_EQ(orig & 15, 0);
	for (j = 0; j < 13; j++)
		cp[j] = (int)(strchr(b32, in[42 + j]) - b32);
	for (pad = 1; pad < 16; pad++) {
		cp[12] = orig | pad;
		in[54] = b32[cp[12]];
		in[55] = b32[test_luhn32(cp, 13)];
		ASSERT_EQ(sec_devid_parse(in, back), SEC_EDEVID);
	}
	/* And with the padding clear again, the same construction parses. */
	cp[12] = orig;
	in[54] = b32[orig];
	in[55] = b32[test_luhn32(cp, 13)];
	ASSERT_STREQ(in + 49, "RA66MAQ");
	ASSERT_OK(sec_devid_parse(in, back));
	ASSERT_MEMEQ(back, id, 32);
}

/* Chunker */

TEST(chunker_gear_table)
{
	const uint64_t *gear = sec_chunker_gear_table();
	uint64_t state = UINT64_C(0x73686f616c676561); /* "shoalgea" */
	int i;

	for (i = 0; i < 256; i++)
		ASSERT_UEQ(gear[i], splitmix64(&state));
	ASSERT_UEQ(gear[0], UINT64_C(0xbb7a4f06fe70d32a));
	ASSERT_UEQ(gear[1], UINT64_C(0xf2912ec038ae2388));
	ASSERT_UEQ(gear[255], UINT64_C(0x30cd9fea9fd7531d));
}

static size_t
chunk_all(const struct sec_chunker *c, const unsigned char *buf, size_t len, size_t *sizes,
	  size_t cap)
{
	size_t off = 0, n = 0, b;

	while (off < len) {
		b = sec_chunker_cut(c, buf + off, len - off);
		ASSERT(b > 0 && b <= len - off);
		ASSERT(n < cap);
		sizes[n++] = b;
		off += b;
	}
	return n;
}

TEST(chunker_pinned_cuts)
{
	/* Recorded from this implementation; they must never change. */
	static const size_t want64k[] = {137356, 131431, 63669, 26361, 77524, 79900, 59506, 76319};
	static const size_t want1m[] = {1232527, 1058181, 1050883, 1224781,
					1442877, 897890,  1855122, 1368708};
	struct sec_chunker c;
	size_t len = 16u << 20, sizes[4096], n, i;
	unsigned char *buf = malloc(len);

	setup();
	ASSERT(buf != NULL);
	fill_random(buf, len, 0x5eed);

	ASSERT_OK(sec_chunker_init(&c, 64 * 1024));
	ASSERT_UEQ(c.min_size, 16 * 1024);
	ASSERT_UEQ(c.max_size, 256 * 1024);
	ASSERT_UEQ(__builtin_popcountll(c.mask_s), 18);
	ASSERT_UEQ(__builtin_popcountll(c.mask_l), 14);
	n = chunk_all(&c, buf, len, sizes, 4096);
	for (i = 0; i < sizeof(want64k) / sizeof(want64k[0]); i++)
		ASSERT_UEQ(sizes[i], want64k[i]);
	ASSERT_UEQ(n, 221);

	ASSERT_OK(sec_chunker_init(&c, 1024 * 1024));
	ASSERT_UEQ(__builtin_popcountll(c.mask_s), 22);
	ASSERT_UEQ(__builtin_popcountll(c.mask_l), 18);
	n = chunk_all(&c, buf, len, sizes, 4096);
	for (i = 0; i < sizeof(want1m) / sizeof(want1m[0]); i++)
		ASSERT_UEQ(sizes[i], want1m[i]);
	ASSERT_UEQ(n, 14);
	free(buf);
}

/* The chunker as FastCDC defines it, one byte at a time, to check the fast one against. */
static size_t
reference_cut(const struct sec_chunker *c, const unsigned char *buf, size_t len)
{
	const uint64_t *gear = sec_chunker_gear_table();
	size_t i = c->min_size, end = c->max_size < len ? c->max_size : len;
	uint64_t fp = 0;

	if (len <= i)
		return len;
	for (; i < end; i++) {
		fp = (fp << 1) + gear[buf[i]];
		if (!(fp & (i < c->avg_size ? c->mask_s : c->mask_l)))
			return i + 1;
	}
	return end;
}

TEST(chunker_matches_reference)
{
	/*
	 * Every cut of many buffers, at every average size, on lengths of both
	 * parities and with the switch from mask_s to mask_l at both parities
	 * of the offset, equals the byte-at-a-time reference.
	 */
	size_t len = 24u << 20, checked = 0;
	unsigned char *buf = malloc(len);

	setup();
	ASSERT(buf != NULL);
	fill_random(buf, len, 0xc0ffee);
	/* Low-entropy stretches make cuts land at max_size and right after min_size too. */
	memset(buf + (3u << 20), 0, 1u << 20);
	memset(buf + (9u << 20), 0xff, 3u << 19);
	for (uint32_t avg = SEC_CHUNK_AVG_MIN; avg <= SEC_CHUNK_AVG_MAX; avg *= 2) {
		struct sec_chunker c;
		ASSERT_OK(sec_chunker_init(&c, avg));
		for (size_t skew = 0; skew < 3; skew++) {
			size_t off = skew;
			while (off < len) {
				size_t rest = len - off, want = reference_cut(&c, buf + off, rest);
				ASSERT_UEQ(sec_chunker_cut(&c, buf + off, rest), want);
				/* The same chunk with the buffer cut short: odd and even ends. */
				for (size_t cut = want - want % 2; cut + 2 > want && cut > 0; cut--)
					ASSERT_UEQ(sec_chunker_cut(&c, buf + off, cut),
						   reference_cut(&c, buf + off, cut));
				off += want;
				checked++;
			}
		}
	}
	ASSERT(checked > 1000);
	free(buf);
}

TEST(chunker_bounds)
{
	static const uint32_t avgs[] = {64 * 1024, 128 * 1024, 256 * 1024, 1024 * 1024};
	struct sec_chunker c;
	size_t len = 48u << 20, *sizes, n, i, k, total, again;
	unsigned char *buf = malloc(len);
	double mean;

	setup();
	sizes = malloc(4096 * sizeof(*sizes));
	ASSERT(buf != NULL && sizes != NULL);
	fill_random(buf, len, 99);
	for (k = 0; k < sizeof(avgs) / sizeof(avgs[0]); k++) {
		ASSERT_OK(sec_chunker_init(&c, avgs[k]));
		n = chunk_all(&c, buf, len, sizes, 4096);
		for (i = 0, total = 0; i < n; i++) {
			if (i + 1 < n) {
				ASSERT(sizes[i] >= c.min_size);
				ASSERT(sizes[i] <= c.max_size);
			}
			total += sizes[i];
		}
		ASSERT_UEQ(total, len);
		mean = (double)len / (double)n;
		printf("avg %u: %zu blocks, mean %.0f\n", avgs[k], n, mean);
		/* Normalized chunking keeps the mean near the target. */
		ASSERT(mean > 0.75 * avgs[k] && mean < 1.5 * avgs[k]);
		/* Determinism. */
		for (i = 0, total = 0; i < n; i++) {
			again = sec_chunker_cut(&c, buf + total, len - total);
			ASSERT_UEQ(again, sizes[i]);
			total += again;
		}
	}

	/* Constant data has no cut points: every block is max_size. */
	memset(buf, 0, len);
	ASSERT_OK(sec_chunker_init(&c, 64 * 1024));
	n = chunk_all(&c, buf, 1000000, sizes, 4096);
	for (i = 0; i + 1 < n; i++)
		ASSERT_UEQ(sizes[i], c.max_size);
	ASSERT_UEQ(sizes[n - 1], 1000000 - (n - 1) * c.max_size);

	/* Short inputs. */
	ASSERT_UEQ(sec_chunker_cut(&c, buf, 0), 0);
	ASSERT_UEQ(sec_chunker_cut(&c, buf, 1), 1);
	ASSERT_UEQ(sec_chunker_cut(&c, buf, c.min_size), c.min_size);
	ASSERT_EQ(sec_chunker_init(&c, 96 * 1024), SEC_EINVAL);
	ASSERT_EQ(sec_chunker_init(&c, 32 * 1024), SEC_EINVAL);
	ASSERT_EQ(sec_chunker_init(&c, 2048 * 1024), SEC_EINVAL);
	free(buf);
	free(sizes);
}

struct blocks {
	size_t n;
	size_t size[4096];
	unsigned char hash[4096][SEC_BLOCK_HASH_BYTES];
};

static void
chunk_and_hash(const struct sec_chunker *c, const unsigned char *buf, size_t len, struct blocks *b)
{
	size_t off = 0, i;

	b->n = chunk_all(c, buf, len, b->size, 4096);
	for (i = 0; i < b->n; i++) {
		sec_block_hash(buf + off, b->size[i], b->hash[i]);
		off += b->size[i];
	}
}

TEST(chunker_insertion)
{
	struct sec_chunker c;
	size_t len = 64u << 20, at = 1000, i, d;
	unsigned char *buf = malloc(len + 100);
	struct blocks *a = malloc(sizeof(*a)), *b = malloc(sizeof(*b));

	setup();
	ASSERT(buf && a && b);
	fill_random(buf, len, 12345);
	ASSERT_OK(sec_chunker_init(&c, sec_chunker_avg_for_size(len, 0)));
	ASSERT_UEQ(c.avg_size, 64 * 1024);
	chunk_and_hash(&c, buf, len, a);

	memmove(buf + at + 100, buf + at, len - at);
	fill_random(buf + at, 100, 777);
	chunk_and_hash(&c, buf, len + 100, b);
	printf("%zu blocks before, %zu after the insertion\n", a->n, b->n);

	/* Only the first block or two differ; the rest are the same, shifted. */
	for (d = 1; d <= 2; d++)
		if (b->n - d == a->n - d && memcmp(b->hash[d], a->hash[d], 32) == 0)
			break;
	if (d > 2)
		TEST_FAIL("blocks after the insertion do not resynchronise by block 2");
	ASSERT(memcmp(b->hash[0], a->hash[0], 32) != 0);
	ASSERT_UEQ(b->n, a->n);
	for (i = d; i < a->n; i++) {
		ASSERT_UEQ(b->size[i], a->size[i]);
		ASSERT_MEMEQ(b->hash[i], a->hash[i], 32);
	}
	printf("blocks changed: %zu\n", d);
	free(buf);
	free(a);
	free(b);
}

TEST(chunker_avg_for_size)
{
	const uint64_t KiB = 1024, MiB = 1024 * KiB, GiB = 1024 * MiB;

	ASSERT_UEQ(sec_chunker_avg_for_size(0, 0), 64 * KiB);
	ASSERT_UEQ(sec_chunker_avg_for_size(100 * MiB, 0), 64 * KiB);
	ASSERT_UEQ(sec_chunker_avg_for_size(256 * MiB, 0), 128 * KiB);
	/* 300 MiB / 2048 = 150 KiB: nearer 128 KiB than 256 KiB. */
	ASSERT_UEQ(sec_chunker_avg_for_size(300 * MiB, 0), 128 * KiB);
	/* Exactly 192 KiB ties and goes down; above it goes up. */
	ASSERT_UEQ(sec_chunker_avg_for_size(384 * MiB, 0), 128 * KiB);
	ASSERT_UEQ(sec_chunker_avg_for_size(384 * MiB + 2048, 0), 256 * KiB);
	ASSERT_UEQ(sec_chunker_avg_for_size(400 * MiB, 0), 256 * KiB);
	ASSERT_UEQ(sec_chunker_avg_for_size(1 * GiB, 0), 512 * KiB);
	ASSERT_UEQ(sec_chunker_avg_for_size(2 * GiB, 0), 1024 * KiB);
	ASSERT_UEQ(sec_chunker_avg_for_size(1000 * GiB, 0), 1024 * KiB);

	/* Hysteresis: kept within a factor of two of the choice (256 KiB). */
	ASSERT_UEQ(sec_chunker_avg_for_size(512 * MiB, 128 * KiB), 128 * KiB);
	ASSERT_UEQ(sec_chunker_avg_for_size(512 * MiB, 256 * KiB), 256 * KiB);
	ASSERT_UEQ(sec_chunker_avg_for_size(512 * MiB, 512 * KiB), 512 * KiB);
	ASSERT_UEQ(sec_chunker_avg_for_size(512 * MiB, 64 * KiB), 256 * KiB);
	ASSERT_UEQ(sec_chunker_avg_for_size(512 * MiB, 1024 * KiB), 256 * KiB);
	/* A file that grew from 100 MiB to 150 MiB keeps 64 KiB; at 1 GiB it moves. */
	ASSERT_UEQ(sec_chunker_avg_for_size(150 * MiB, 64 * KiB), 64 * KiB);
	ASSERT_UEQ(sec_chunker_avg_for_size(1 * GiB, 64 * KiB), 512 * KiB);
	/* Invalid previous sizes are ignored. */
	ASSERT_UEQ(sec_chunker_avg_for_size(512 * MiB, 200 * KiB), 256 * KiB);
	ASSERT_UEQ(sec_chunker_avg_for_size(100 * MiB, 32 * KiB), 64 * KiB);
	ASSERT_UEQ(sec_chunker_avg_for_size(4 * GiB, 2048 * KiB), 1024 * KiB);
	ASSERT_UEQ(sec_chunker_avg_for_size(4 * GiB, 512 * KiB), 512 * KiB);
}

TEST(chunker_throughput)
{
	struct sec_chunker c;
	size_t len = 128u << 20, off, n;
	unsigned char *buf = malloc(len), h[32];
	double t0, t_cut, t_hash;

	setup();
	ASSERT(buf != NULL);
	fill_random(buf, len, 2024);
	ASSERT_OK(sec_chunker_init(&c, 64 * 1024));
	t0 = now_sec();
	for (off = 0, n = 0; off < len; n++)
		off += sec_chunker_cut(&c, buf + off, len - off);
	t_cut = now_sec() - t0;
	t0 = now_sec();
	sec_block_hash(buf, len, h);
	t_hash = now_sec() - t0;
	ASSERT_UEQ(off, len);
	ASSERT(n > len / (256 * 1024));
	printf("chunker: %.0f MB/s (%zu blocks); BLAKE2b-256: %.0f MB/s\n",
	       (double)len / 1e6 / t_cut, n, (double)len / 1e6 / t_hash);
	free(buf);
}

TEST_LIST_BEGIN
TEST_ENTRY(noise_vector_chachapoly_blake2b)
TEST_ENTRY(noise_vector_chachapoly_sha512)
TEST_ENTRY(noise_vector_aesgcm_sha512)
TEST_ENTRY(noise_roundtrip)
TEST_ENTRY(noise_tamper_handshake)
TEST_ENTRY(noise_tamper_transport)
TEST_ENTRY(noise_wrong_key)
TEST_ENTRY(noise_low_order)
TEST_ENTRY(noise_noncanonical)
TEST_ENTRY(noise_nonce_limit)
TEST_ENTRY(noise_state_order)
TEST_ENTRY(noise_too_big)
TEST_ENTRY(identity_known_answer)
TEST_ENTRY(identity_save_load)
TEST_ENTRY(identity_keyfile_malformed)
TEST_ENTRY(devid_format_known)
TEST_ENTRY(devid_roundtrip)
TEST_ENTRY(devid_typo)
TEST_ENTRY(devid_lenient_input)
TEST_ENTRY(chunker_gear_table)
TEST_ENTRY(chunker_pinned_cuts)
TEST_ENTRY(chunker_bounds)
TEST_ENTRY(chunker_matches_reference)
TEST_ENTRY(chunker_insertion)
TEST_ENTRY(chunker_avg_for_size)
TEST_ENTRY(chunker_throughput)
TEST_LIST_END
