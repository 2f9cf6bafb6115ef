/*
 * tests/fuzz/fuzz_handshake.c - feeds hostile bytes to every handshake read
 * of Noise XX, and to sec_cipher_open().
 *
 * Everything is deterministic (tests/fuzz/fuzz_noise.h): fixed static and
 * ephemeral keys, the agent's suite (ChaChaPoly_BLAKE2b) and prologue, empty
 * payloads as the agent sends. The input is, in turn:
 *   a. message 2, read by an initiator that wrote message 1;
 *   b. message 1, read by a fresh responder (which then writes message 2);
 *   c. message 3, read by a responder that read the genuine message 1 and
 *      wrote message 2;
 *   d. a transport message, opened at nonce 0 (copied and in place) and at
 *      the last nonce by the responder's receive cipher of each suite.
 * Checks: nothing crashes or trips ASan/UBSan; each read returns 0 or the
 * error its length and key say (SEC_ETOOBIG over 65,535 bytes, SEC_EINVAL
 * below the minimum, SEC_EKEY for a non-canonical or small-order e, else 0,
 * SEC_EDECRYPT or SEC_EKEY); a failed handshake refuses every later call;
 * one that succeeds reports the remote static key and completes, and on the
 * genuine message reports the genuine peer; the payload is exactly the rest.
 */
#include <sodium.h>
#include <string.h>

#include "tests/fuzz/fuzz.h"
#include "tests/fuzz/fuzz_noise.h"

#define SUITE SEC_SUITE_CHACHAPOLY_BLAKE2B
#define MSG1_MIN 32
#define MSG2_MIN (32 + 48 + 16)
#define MSG3_MIN (48 + 16)

static struct {
	int ready;
	struct sec_identity id[2];
	struct fuzz_genuine g;		       /* with SUITE */
	struct sec_cipher *recv[FUZZ_NSUITES]; /* the responder's, NULL if unavailable */
	unsigned char ct[FUZZ_NSUITES][64];    /* genuine transport message per suite */
	size_t ct_len;
} st;

static void
setup(void)
{
	static const unsigned char *const payload[3] = {NULL, NULL, NULL};
	static const size_t plen[3] = {0, 0, 0};
	struct fuzz_genuine g;
	int rc;

	if (st.ready)
		return;
	FUZZ_ASSERT_EQ(sec_init(), 0);
	for (int side = 0; side < 2; side++)
		FUZZ_ASSERT_EQ(sec_identity_from_seed(&st.id[side], fuzz_seed[side]), 0);
	FUZZ_ASSERT_EQ(fuzz_genuine_run(&st.g, SUITE, st.id, payload, plen), 0);
	FUZZ_ASSERT_UEQ(st.g.len[0], MSG1_MIN);
	FUZZ_ASSERT_UEQ(st.g.len[1], MSG2_MIN);
	FUZZ_ASSERT_UEQ(st.g.len[2], MSG3_MIN);
	st.ct_len = sizeof(fuzz_transport_pt) + SEC_TAG_BYTES;
	for (int s = 0; s < FUZZ_NSUITES; s++) {
		rc = fuzz_genuine_run(&g, (enum sec_suite)s, st.id, payload, plen);
		if (rc == SEC_EUNAVAIL)
			continue; /* AESGCM without AES-NI */
		FUZZ_ASSERT_EQ(rc, 0);
		FUZZ_ASSERT_EQ(sec_cipher_seal(g.send[0], fuzz_transport_pt,
					       sizeof(fuzz_transport_pt), st.ct[s]),
			       0);
		st.recv[s] = g.recv[1];
		sec_cipher_free(g.send[0]);
		sec_cipher_free(g.recv[0]);
		sec_cipher_free(g.send[1]);
	}
	st.ready = 1;
}

/*
 * Whether a received X25519 public key must be accepted: canonical (below
 * p = 2^255 - 19, bit 255 clear) and not of small order, which libsodium's
 * X25519 reports by refusing the all-zero result.
 */
static int
key_acceptable(const unsigned char pk[32])
{
	static const unsigned char p[32] = {0xed, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
					    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
					    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
					    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f};
	unsigned char out[32];
	int i;

	for (i = 31; i >= 0 && pk[i] == p[i]; i--)
		;
	if (i < 0 || pk[i] > p[i])
		return 0; /* p itself, or above it (bit 255 included) */
	return crypto_scalarmult(out, fuzz_ephemeral[0], pk) == 0;
}

/* Checks the result of a read of size bytes whose minimum is min_len. */
static void
check_read_rc(int rc, const uint8_t *data, size_t size, size_t min_len, int has_e)
{
	if (size > SEC_NOISE_MAX_MSG) {
		FUZZ_ASSERT_EQ(rc, SEC_ETOOBIG);
	} else if (size < min_len) {
		FUZZ_ASSERT_EQ(rc, SEC_EINVAL);
	} else if (has_e && !key_acceptable(data)) {
		FUZZ_ASSERT_EQ(rc, SEC_EKEY);
	} else if (has_e && min_len == MSG1_MIN) {
		FUZZ_ASSERT_EQ(rc, 0); /* message 1 is e and a clear payload */
	} else if (rc != 0 && rc != SEC_EDECRYPT && rc != SEC_EKEY) {
		FUZZ_FAIL("sec_handshake_read: unexpected result %d (%s)", rc, sec_strerror(rc));
	}
}

/* A failed handshake refuses everything. */
static void
check_unusable(struct sec_handshake *hs)
{
	unsigned char buf[128], h[SEC_HASH_MAX];
	struct sec_cipher *a = NULL, *b = NULL;
	size_t len;

	FUZZ_ASSERT_EQ(sec_handshake_done(hs), 0);
	FUZZ_ASSERT_EQ(sec_handshake_write(hs, NULL, 0, buf, sizeof(buf), &len), SEC_ESTATE);
	FUZZ_ASSERT_EQ(sec_handshake_read(hs, st.g.msg[1], st.g.len[1], buf, sizeof(buf), &len),
		       SEC_ESTATE);
	FUZZ_ASSERT_EQ(sec_handshake_remote_static(hs, buf), SEC_ESTATE);
	FUZZ_ASSERT_EQ(sec_handshake_hash(hs, h, &len), SEC_ESTATE);
	FUZZ_ASSERT_EQ(sec_handshake_split(hs, &a, &b), SEC_ESTATE);
	FUZZ_ASSERT(a == NULL && b == NULL);
}

/* A completed handshake hands out its hash and splits once. */
static void
check_done(struct sec_handshake *hs)
{
	unsigned char h[SEC_HASH_MAX];
	struct sec_cipher *a, *b;
	size_t len;

	FUZZ_ASSERT_EQ(sec_handshake_done(hs), 1);
	FUZZ_ASSERT_EQ(sec_handshake_hash(hs, h, &len), 0);
	FUZZ_ASSERT_UEQ(len, 64);
	FUZZ_ASSERT_EQ(sec_handshake_split(hs, &a, &b), 0);
	FUZZ_ASSERT(a != NULL && b != NULL);
	sec_cipher_free(a);
	sec_cipher_free(b);
	FUZZ_ASSERT_EQ(sec_handshake_split(hs, &a, &b), SEC_ESTATE);
}

static int
is_genuine(const uint8_t *data, size_t size, int m)
{
	return size == st.g.len[m] && memcmp(data, st.g.msg[m], size) == 0;
}

/*
 * Reads data as the next message into an exactly-sized payload buffer and
 * checks the result; returns it.
 */
static int
read_msg(struct sec_handshake *hs, const uint8_t *data, size_t size, size_t min_len, int has_e)
{
	size_t rest = size >= min_len && size <= SEC_NOISE_MAX_MSG ? size - min_len : 0;
	unsigned char *payload = malloc(rest ? rest : 1);
	size_t plen = 12345;
	int rc;

	FUZZ_ASSERT(payload != NULL);
	rc = sec_handshake_read(hs, data, size, payload, rest, &plen);
	check_read_rc(rc, data, size, min_len, has_e);
	if (rc == 0) {
		FUZZ_ASSERT_UEQ(plen, rest);
		if (min_len == MSG1_MIN) /* in clear */
			FUZZ_ASSERT_MEMEQ(payload, data + MSG1_MIN, rest);
	}
	free(payload);
	return rc;
}

/* a. The initiator reads the input as message 2. */
static void
stage_msg2(const uint8_t *data, size_t size)
{
	struct sec_handshake *hs;
	unsigned char out[512], rs[32];
	size_t len;
	int rc;

	FUZZ_ASSERT_EQ(fuzz_hs_new(&hs, SUITE, 0, &st.id[0]), 0);
	FUZZ_ASSERT_EQ(sec_handshake_write(hs, NULL, 0, out, sizeof(out), &len), 0);
	FUZZ_ASSERT_UEQ(len, st.g.len[0]);
	FUZZ_ASSERT_MEMEQ(out, st.g.msg[0], len);
	FUZZ_ASSERT_EQ(sec_handshake_remote_static(hs, rs), SEC_ESTATE);

	rc = read_msg(hs, data, size, MSG2_MIN, 1);
	if (is_genuine(data, size, 1))
		FUZZ_ASSERT_EQ(rc, 0);
	if (rc == 0) {
		FUZZ_ASSERT_EQ(sec_handshake_remote_static(hs, rs), 0);
		if (is_genuine(data, size, 1))
			FUZZ_ASSERT_MEMEQ(rs, st.id[1].x_pk, 32);
		FUZZ_ASSERT_EQ(sec_handshake_done(hs), 0);
		FUZZ_ASSERT_EQ(sec_handshake_write(hs, NULL, 0, out, sizeof(out), &len), 0);
		FUZZ_ASSERT_UEQ(len, MSG3_MIN);
		if (is_genuine(data, size, 1))
			FUZZ_ASSERT_MEMEQ(out, st.g.msg[2], len);
		check_done(hs);
	} else {
		check_unusable(hs);
	}
	sec_handshake_free(hs);
}

/* b. A fresh responder reads the input as message 1. */
static void
stage_msg1(const uint8_t *data, size_t size)
{
	struct sec_handshake *hs;
	unsigned char out[512], rs[32];
	size_t len;
	int rc;

	FUZZ_ASSERT_EQ(fuzz_hs_new(&hs, SUITE, 1, &st.id[1]), 0);
	rc = read_msg(hs, data, size, MSG1_MIN, 1);
	if (rc == 0) {
		/* Message 1 reveals no static key. */
		FUZZ_ASSERT_EQ(sec_handshake_remote_static(hs, rs), SEC_ESTATE);
		FUZZ_ASSERT_EQ(sec_handshake_write(hs, NULL, 0, out, sizeof(out), &len), 0);
		FUZZ_ASSERT_UEQ(len, MSG2_MIN);
		if (is_genuine(data, size, 0))
			FUZZ_ASSERT_MEMEQ(out, st.g.msg[1], len);
		FUZZ_ASSERT_EQ(sec_handshake_done(hs), 0);
	} else {
		check_unusable(hs);
	}
	sec_handshake_free(hs);
}

/* c. A responder past message 2 reads the input as message 3. */
static void
stage_msg3(const uint8_t *data, size_t size)
{
	struct sec_handshake *hs;
	unsigned char out[512], rs[32];
	size_t len;
	int rc;

	FUZZ_ASSERT_EQ(fuzz_hs_new(&hs, SUITE, 1, &st.id[1]), 0);
	FUZZ_ASSERT_EQ(sec_handshake_read(hs, st.g.msg[0], st.g.len[0], out, sizeof(out), &len), 0);
	FUZZ_ASSERT_EQ(sec_handshake_write(hs, NULL, 0, out, sizeof(out), &len), 0);
	FUZZ_ASSERT_MEMEQ(out, st.g.msg[1], len);

	rc = read_msg(hs, data, size, MSG3_MIN, 0);
	if (is_genuine(data, size, 2))
		FUZZ_ASSERT_EQ(rc, 0);
	if (rc == 0) {
		FUZZ_ASSERT_EQ(sec_handshake_remote_static(hs, rs), 0);
		if (is_genuine(data, size, 2))
			FUZZ_ASSERT_MEMEQ(rs, st.id[0].x_pk, 32);
		check_done(hs);
	} else {
		check_unusable(hs);
	}
	sec_handshake_free(hs);
}

/* d. The input as a transport message. */
static void
stage_transport(const uint8_t *data, size_t size)
{
	size_t out_len = size >= SEC_TAG_BYTES ? size - SEC_TAG_BYTES : 0;
	unsigned char *out, *inplace;
	int want, rc;

	for (int s = 0; s < FUZZ_NSUITES; s++) {
		struct sec_cipher *c = st.recv[s];

		if (c == NULL)
			continue;
		out = malloc(out_len ? out_len : 1);
		FUZZ_ASSERT(out != NULL);
		sec_cipher_set_nonce(c, 0);
		rc = sec_cipher_open(c, data, size, out);
		if (size > SEC_NOISE_MAX_MSG)
			want = SEC_ETOOBIG;
		else if (size < SEC_TAG_BYTES)
			want = SEC_EINVAL;
		else if (size == st.ct_len && memcmp(data, st.ct[s], size) == 0)
			want = 0;
		else
			want = rc == 0 ? 0 : SEC_EDECRYPT;
		FUZZ_ASSERT_EQ(rc, want);
		/* A failed open does not consume the nonce. */
		FUZZ_ASSERT_UEQ(sec_cipher_nonce(c), rc == 0 ? 1 : 0);

		/* In place: the same result and the same plaintext. */
		inplace = fuzz_dup(data, size);
		sec_cipher_set_nonce(c, 0);
		FUZZ_ASSERT_EQ(sec_cipher_open(c, inplace, size, inplace), rc);
		if (rc == 0)
			FUZZ_ASSERT_MEMEQ(inplace, out, out_len);
		free(inplace);

		/* The last nonce is never used. */
		sec_cipher_set_nonce(c, UINT64_MAX);
		rc = sec_cipher_open(c, data, size, out);
		if (size >= SEC_TAG_BYTES && size <= SEC_NOISE_MAX_MSG)
			FUZZ_ASSERT_EQ(rc, SEC_ENONCE);
		else
			FUZZ_ASSERT(rc == SEC_EINVAL || rc == SEC_ETOOBIG);
		FUZZ_ASSERT_UEQ(sec_cipher_nonce(c), UINT64_MAX);
		free(out);
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	setup();
	stage_msg2(data, size);
	stage_msg1(data, size);
	stage_msg3(data, size);
	stage_transport(data, size);
	return 0;
}
