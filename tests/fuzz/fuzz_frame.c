/*
 * tests/fuzz/fuzz_frame.c - fuzzes proto_frame_parse() and the fragment
 * assembler against small reference models written here.
 *
 * Input: byte 0 says how the rest is cut into pieces; the rest is the data.
 *   bits 0-3  s: the piece size parameter
 *   bit 4     0: every piece is s + 1 bytes; 1: sizes 1..4(s + 1) from a
 *             PRNG seeded with byte 0
 *   bits 5-7  the assembler's max, from max_table[] below
 * Three checks run on every input:
 * 1. proto_frame_parse() on the whole input agrees with the reference.
 * 2. The rest, arriving in pieces as from a socket and parsed frame by frame
 *    after each piece, gives the same frames at the same offsets as parsing
 *    it whole, and stops at the same malformed header.
 * 3. The pieces, fed to proto_assembler_push() as decrypted frames, give
 *    the messages, errors and "need more" answers of a reference assembler;
 *    returned messages lie within max and the buffer stays within its
 *    documented bounds.
 */
#include <string.h>

#include "proto/proto.h"
#include "tests/fuzz/fuzz.h"

static const size_t max_table[8] = {PROTO_MSG_MAX, 1, 2, 7, 64, 1000, 4096, 300000};

/* Cuts the input into pieces as byte 0 says. */
struct cutter {
	uint8_t sel;
	uint32_t rng;
};

static void
cutter_init(struct cutter *c, uint8_t sel)
{
	c->sel = sel;
	c->rng = 0x9e3779b9u ^ sel;
}

/* Returns the size of the next piece, 1..left (left > 0). */
static size_t
cutter_next(struct cutter *c, size_t left)
{
	size_t s = (size_t)(c->sel & 0x0f) + 1, n;

	if (c->sel & 0x10) {
		/* xorshift32 */
		c->rng ^= c->rng << 13;
		c->rng ^= c->rng >> 17;
		c->rng ^= c->rng << 5;
		n = 1 + c->rng % (4 * s);
	} else {
		n = s;
	}
	return n < left ? n : left;
}

/* ---- 1. one call on the whole input ---- */

/* The reference: what proto_frame_parse() must return for buf[0..len). */
static int
ref_frame(const uint8_t *buf, size_t len)
{
	size_t n;

	if (len < 2)
		return 0;
	n = (size_t)buf[0] * 256 + buf[1];
	if (n == 0)
		return PROTO_EMALFORMED;
	return len >= 2 + n ? (int)(2 + n) : 0;
}

/* Checks one call on buf[0..len); returns its result and the body it found. */
static int
check_frame(const uint8_t *buf, size_t len, const uint8_t **body, size_t *body_len)
{
	int rc, want;

	*body = NULL;
	*body_len = 0;
	rc = proto_frame_parse(buf, len, body, body_len);
	want = ref_frame(buf, len);
	FUZZ_ASSERT_EQ(rc, want);
	if (rc > 0) {
		FUZZ_ASSERT_ULE(rc, len);
		FUZZ_ASSERT(*body == buf + PROTO_FRAME_HDR);
		FUZZ_ASSERT_UEQ(*body_len, (size_t)rc - PROTO_FRAME_HDR);
		FUZZ_ASSERT(*body_len >= 1 && *body_len <= PROTO_FRAME_MAX);
	}
	return rc;
}

/* ---- 2. a stream of frames arriving in pieces ---- */

struct frame_ref {
	size_t off, len; /* of the body, from the start of the stream */
};

static void
check_stream(uint8_t sel, const uint8_t *data, size_t len)
{
	struct frame_ref *ref;
	struct cutter cut;
	size_t nref = 0, off = 0, ref_end, k = 0, arrived = 0;
	int ref_rc, rc = 0;

	/* The reference: the stream parsed whole. */
	ref = malloc((len / 3 + 1) * sizeof(*ref));
	FUZZ_ASSERT(ref != NULL);
	for (;;) {
		ref_rc = ref_frame(data + off, len - off);
		if (ref_rc <= 0)
			break;
		ref[nref].off = off + PROTO_FRAME_HDR;
		ref[nref].len = (size_t)ref_rc - PROTO_FRAME_HDR;
		nref++;
		off += (size_t)ref_rc;
	}
	ref_end = off;

	/*
	 * The same bytes arriving a piece at a time: after each piece, parse
	 * what has not been consumed, from an exactly-sized copy.
	 */
	cutter_init(&cut, sel);
	off = 0;
	while (arrived < len && rc >= 0) {
		arrived += cutter_next(&cut, len - arrived);
		do {
			uint8_t *copy = fuzz_dup(data + off, arrived - off);
			const uint8_t *body;
			size_t body_len;

			rc = check_frame(copy, arrived - off, &body, &body_len);
			if (rc > 0) {
				FUZZ_ASSERT(k < nref);
				FUZZ_ASSERT_UEQ(off + (size_t)(body - copy), ref[k].off);
				FUZZ_ASSERT_UEQ(body_len, ref[k].len);
				FUZZ_ASSERT_MEMEQ(body, data + ref[k].off, body_len);
				k++;
				off += (size_t)rc;
			}
			free(copy);
		} while (rc > 0);
		/* After PROTO_EMALFORMED the connection closes: stop reading. */
	}
	FUZZ_ASSERT_UEQ(k, nref);
	FUZZ_ASSERT_UEQ(off, ref_end);
	if (len > 0)
		FUZZ_ASSERT_EQ(rc, ref_rc);
	free(ref);
}

/* ---- 3. the assembler ---- */

/* The reference assembler: the bytes of the message being put together. */
struct ref_asm {
	uint8_t *buf;
	size_t len;
};

static void
check_assembler(uint8_t sel, const uint8_t *data, size_t len)
{
	struct proto_assembler a;
	struct ref_asm ref = {NULL, 0};
	struct cutter cut;
	size_t max = max_table[sel >> 5], off = 0, n, cap0;
	const uint8_t *msg;
	size_t msg_len;
	int rc, want;

	ref.buf = malloc(len ? len : 1);
	FUZZ_ASSERT(ref.buf != NULL);
	proto_assembler_init(&a, max);
	cutter_init(&cut, sel);
	while (off < len) {
		uint8_t *pt;
		size_t pt_len = cutter_next(&cut, len - off);
		int was_empty = ref.len == 0;

		pt = fuzz_dup(data + off, pt_len);
		off += pt_len;

		/* What the reference says. */
		n = pt_len - 1;
		if (pt_len < 2 || (pt[0] != PROTO_FRAG_MORE && pt[0] != PROTO_FRAG_LAST))
			want = PROTO_EMALFORMED;
		else if (ref.len + n > max)
			want = PROTO_ETOOBIG;
		else
			want = pt[0] == PROTO_FRAG_LAST;
		if (want >= 0) {
			memcpy(ref.buf + ref.len, pt + 1, n);
			ref.len += n;
		}

		cap0 = a.cap;
		msg = NULL;
		msg_len = 0;
		rc = proto_assembler_push(&a, pt, pt_len, &msg, &msg_len);
		FUZZ_ASSERT_EQ(rc, want);
		if (rc == 1) {
			FUZZ_ASSERT(msg != NULL);
			FUZZ_ASSERT(msg_len >= 1);
			FUZZ_ASSERT_ULE(msg_len, max);
			FUZZ_ASSERT_UEQ(msg_len, ref.len);
			FUZZ_ASSERT_MEMEQ(msg, ref.buf, ref.len);
			if (was_empty) {
				/* A single-fragment message is not copied. */
				FUZZ_ASSERT(msg == pt + 1);
			} else {
				/* The message lies within the assembler's buffer. */
				FUZZ_ASSERT(msg == a.buf);
				FUZZ_ASSERT_ULE(msg_len, a.cap);
			}
		}
		if (rc != 0)
			ref.len = 0; /* handed out, or dropped after an error */
		FUZZ_ASSERT_UEQ(a.len, ref.len);
		FUZZ_ASSERT_ULE(a.len, a.cap);
		FUZZ_ASSERT_ULE(a.cap, max);
		FUZZ_ASSERT(a.cap == 0 || a.buf != NULL);
		if (a.cap > cap0) {
			/* Grown: never past twice the bytes of the current message. */
			size_t cur = rc == 0 ? a.len : msg_len;

			FUZZ_ASSERT(rc == 0 || rc == 1);
			FUZZ_ASSERT_ULE(a.cap, 2 * cur);
		}
		if (was_empty && cap0 > 256u * 1024 && a.cap == cap0 && cap0 != n)
			FUZZ_FAIL("a %zu-byte buffer was kept after its message", cap0);
		free(pt);
	}
	proto_assembler_release(&a);
	FUZZ_ASSERT(a.buf == NULL && a.len == 0 && a.cap == 0);
	free(ref.buf);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *body;
	size_t body_len;

	check_frame(data, size, &body, &body_len);
	if (size < 1)
		return 0;
	check_stream(data[0], data + 1, size - 1);
	check_assembler(data[0], data + 1, size - 1);
	return 0;
}
