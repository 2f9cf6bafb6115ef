/*
 * tests/fuzz/fuzz_msg.c - fuzzes proto_msg_decode() and checks the
 * encoders against it.
 *
 * Input: one message as a peer would send it (the plaintext after
 * reassembly). For every input:
 * - the result is 0 or one of the documented codes, and a failed decode
 *   leaves the message zeroed;
 * - a decoded message satisfies its documented invariants: every file and
 *   request name passes proto_path_check(), values lie in their ranges, a
 *   file's blocks add up to its size, and every byte field points into the
 *   input (zero-copy);
 * - the input without its last byte, or with one more byte, does not decode;
 * - the message re-encoded with the proto_encode_* function of its type
 *   decodes again to the same field values, and encoding that gives the same
 *   bytes (a response is encoded both whole and as header plus data, which
 *   must agree).
 */
#include <string.h>

#include "proto/msg.h"
#include "proto/proto.h"
#include "tests/fuzz/fuzz.h"

/* ---- invariants of one decoded message ---- */

static void
check_within(struct proto_bytes b, const uint8_t *buf, size_t len)
{
	if (b.len == 0)
		return;
	FUZZ_ASSERT(b.p != NULL);
	FUZZ_ASSERT(b.p >= buf && b.p <= buf + len);
	FUZZ_ASSERT_ULE(b.len, (size_t)(buf + len - b.p));
}

static void
check_str(struct proto_bytes b, size_t min, size_t max, const uint8_t *buf, size_t len)
{
	FUZZ_ASSERT(b.len >= min);
	FUZZ_ASSERT_ULE(b.len, max);
	check_within(b, buf, len);
}

static void
check_file(const struct proto_file *f, const uint8_t *buf, size_t len)
{
	uint64_t sum = 0;

	check_str(f->name, 1, PROTO_PATH_MAX, buf, len);
	FUZZ_ASSERT_EQ(proto_path_check(f->name.p, f->name.len), 0);
	FUZZ_ASSERT_ULE(f->type, PROTO_SYMLINK);
	FUZZ_ASSERT_UEQ(f->flags & ~(uint32_t)(PROTO_FLAG_DELETED | PROTO_FLAG_INVALID), 0);
	FUZZ_ASSERT_ULE(f->mode, 07777);
	FUZZ_ASSERT_ULE(f->size, INT64_MAX);
	FUZZ_ASSERT_ULE(f->mtime_ns, 999999999);
	FUZZ_ASSERT(f->sequence >= 1 && f->sequence <= INT64_MAX);
	check_str(f->target, 0, PROTO_PATH_MAX, buf, len);
	if (f->target.len > 0)
		FUZZ_ASSERT(memchr(f->target.p, 0, f->target.len) == NULL);
	if (f->type == PROTO_SYMLINK && !(f->flags & PROTO_FLAG_DELETED))
		FUZZ_ASSERT(f->target.len > 0);
	if (f->type != PROTO_SYMLINK)
		FUZZ_ASSERT_UEQ(f->target.len, 0);
	FUZZ_ASSERT_ULE(f->nversion, PROTO_MAX_VERSION);
	FUZZ_ASSERT(f->nversion == 0 || f->version != NULL);
	FUZZ_ASSERT_ULE(f->nblocks, PROTO_MAX_BLOCKS);
	FUZZ_ASSERT(f->nblocks == 0 || f->blocks != NULL);
	if (f->type != PROTO_FILE)
		FUZZ_ASSERT_UEQ(f->size, 0);
	if (f->type != PROTO_FILE || (f->flags & PROTO_FLAG_DELETED)) {
		FUZZ_ASSERT_UEQ(f->nblocks, 0);
		return;
	}
	for (size_t i = 0; i < f->nblocks; i++) {
		FUZZ_ASSERT(f->blocks[i].size >= 1);
		FUZZ_ASSERT_ULE(f->blocks[i].size, PROTO_BLOCK_MAX);
		sum += f->blocks[i].size;
	}
	FUZZ_ASSERT_UEQ(sum, f->size);
}

static void
check_msg(const struct proto_msg *m, const uint8_t *buf, size_t len)
{
	const struct proto_hello *h = &m->u.hello;
	const struct proto_index *x = &m->u.index;
	const struct proto_request *r = &m->u.request;
	const struct proto_response *s = &m->u.response;

	switch (m->type) {
	case PROTO_HELLO:
		check_str(h->device_name, 0, PROTO_STR_MAX, buf, len);
		check_str(h->client_name, 0, PROTO_STR_MAX, buf, len);
		check_str(h->client_version, 0, PROTO_STR_MAX, buf, len);
		FUZZ_ASSERT_ULE(h->nfolders, PROTO_MAX_FOLDERS);
		FUZZ_ASSERT(h->nfolders == 0 || h->folders != NULL);
		for (size_t i = 0; i < h->nfolders; i++) {
			check_str(h->folders[i].id, 1, PROTO_STR_MAX, buf, len);
			check_str(h->folders[i].label, 0, PROTO_STR_MAX, buf, len);
			FUZZ_ASSERT_UEQ(h->folders[i].flags &
					    ~(uint32_t)(PROTO_FOLDER_SEND | PROTO_FOLDER_RECEIVE),
					0);
		}
		break;
	case PROTO_INDEX:
	case PROTO_INDEX_UPDATE:
		check_str(x->folder, 1, PROTO_STR_MAX, buf, len);
		FUZZ_ASSERT_ULE(x->last, 1);
		FUZZ_ASSERT_ULE(x->nfiles, PROTO_MAX_FILES);
		FUZZ_ASSERT(x->nfiles == 0 || x->files != NULL);
		for (size_t i = 0; i < x->nfiles; i++)
			check_file(&x->files[i], buf, len);
		break;
	case PROTO_REQUEST:
		check_str(r->folder, 1, PROTO_STR_MAX, buf, len);
		check_str(r->name, 1, PROTO_PATH_MAX, buf, len);
		FUZZ_ASSERT_EQ(proto_path_check(r->name.p, r->name.len), 0);
		FUZZ_ASSERT(r->size >= 1);
		FUZZ_ASSERT_ULE(r->size, PROTO_BLOCK_MAX);
		FUZZ_ASSERT_ULE(r->offset, (uint64_t)INT64_MAX - r->size);
		break;
	case PROTO_RESPONSE:
		FUZZ_ASSERT_ULE(s->code, PROTO_R_ERROR);
		check_str(s->data, 0, PROTO_BLOCK_MAX, buf, len);
		break;
	case PROTO_PING:
		break;
	case PROTO_CLOSE:
		check_str(m->u.close.reason, 0, PROTO_STR_MAX, buf, len);
		break;
	case PROTO_JOIN:
		check_str(m->u.join.folder, 1, PROTO_STR_MAX, buf, len);
		check_str(m->u.join.secret, PROTO_INVITE_SECRET, PROTO_INVITE_SECRET, buf, len);
		check_str(m->u.join.device_name, 0, PROTO_STR_MAX, buf, len);
		break;
	case PROTO_JOIN_RESULT:
		FUZZ_ASSERT_ULE(m->u.join_result.code, PROTO_J_ERROR);
		check_str(m->u.join_result.message, 0, PROTO_STR_MAX, buf, len);
		break;
	default:
		FUZZ_FAIL("decoded an unknown type %d", (int)m->type);
	}
}

/* ---- equality of two decoded messages ---- */

static void
bytes_eq(struct proto_bytes a, struct proto_bytes b)
{
	FUZZ_ASSERT_UEQ(a.len, b.len);
	FUZZ_ASSERT_MEMEQ(a.p, b.p, a.len);
}

static void
file_eq(const struct proto_file *a, const struct proto_file *b)
{
	bytes_eq(a->name, b->name);
	FUZZ_ASSERT_UEQ(a->type, b->type);
	FUZZ_ASSERT_UEQ(a->flags, b->flags);
	FUZZ_ASSERT_UEQ(a->mode, b->mode);
	FUZZ_ASSERT_UEQ(a->size, b->size);
	FUZZ_ASSERT_EQ(a->mtime_s, b->mtime_s);
	FUZZ_ASSERT_UEQ(a->mtime_ns, b->mtime_ns);
	FUZZ_ASSERT_UEQ(a->sequence, b->sequence);
	FUZZ_ASSERT_UEQ(a->block_size, b->block_size);
	bytes_eq(a->target, b->target);
	FUZZ_ASSERT_UEQ(a->nversion, b->nversion);
	for (size_t i = 0; i < a->nversion; i++) {
		FUZZ_ASSERT_UEQ(a->version[i].id, b->version[i].id);
		FUZZ_ASSERT_UEQ(a->version[i].value, b->version[i].value);
	}
	FUZZ_ASSERT_UEQ(a->nblocks, b->nblocks);
	for (size_t i = 0; i < a->nblocks; i++) {
		FUZZ_ASSERT_MEMEQ(a->blocks[i].hash, b->blocks[i].hash, 32);
		FUZZ_ASSERT_UEQ(a->blocks[i].size, b->blocks[i].size);
	}
}

static void
folder_eq(const struct proto_folder *a, const struct proto_folder *b)
{
	bytes_eq(a->id, b->id);
	bytes_eq(a->label, b->label);
	FUZZ_ASSERT_UEQ(a->flags, b->flags);
	FUZZ_ASSERT_UEQ(a->index_id, b->index_id);
	FUZZ_ASSERT_UEQ(a->max_seq, b->max_seq);
	FUZZ_ASSERT_UEQ(a->peer_index_id, b->peer_index_id);
	FUZZ_ASSERT_UEQ(a->peer_max_seq, b->peer_max_seq);
}

/*
 * proto_encode_close() and proto_encode_join_result() take a C string, so a
 * reason or message that holds a NUL goes out up to that NUL: the re-encoded
 * text is that prefix.
 */
static struct proto_bytes
close_reason_sent(struct proto_bytes r)
{
	const uint8_t *nul = r.len ? memchr(r.p, 0, r.len) : NULL;

	if (nul != NULL)
		r.len = (size_t)(nul - r.p);
	return r;
}

/* b must be the decoding of a's re-encoding. */
static void
msg_eq(const struct proto_msg *a, const struct proto_msg *b)
{
	FUZZ_ASSERT_EQ(a->type, b->type);
	switch (a->type) {
	case PROTO_HELLO:
		bytes_eq(a->u.hello.device_name, b->u.hello.device_name);
		bytes_eq(a->u.hello.client_name, b->u.hello.client_name);
		bytes_eq(a->u.hello.client_version, b->u.hello.client_version);
		FUZZ_ASSERT_UEQ(a->u.hello.nfolders, b->u.hello.nfolders);
		for (size_t i = 0; i < a->u.hello.nfolders; i++)
			folder_eq(&a->u.hello.folders[i], &b->u.hello.folders[i]);
		break;
	case PROTO_INDEX:
	case PROTO_INDEX_UPDATE:
		bytes_eq(a->u.index.folder, b->u.index.folder);
		FUZZ_ASSERT_UEQ(a->u.index.index_id, b->u.index.index_id);
		FUZZ_ASSERT_UEQ(a->u.index.last, b->u.index.last);
		FUZZ_ASSERT_UEQ(a->u.index.nfiles, b->u.index.nfiles);
		for (size_t i = 0; i < a->u.index.nfiles; i++)
			file_eq(&a->u.index.files[i], &b->u.index.files[i]);
		break;
	case PROTO_REQUEST:
		FUZZ_ASSERT_UEQ(a->u.request.id, b->u.request.id);
		bytes_eq(a->u.request.folder, b->u.request.folder);
		bytes_eq(a->u.request.name, b->u.request.name);
		FUZZ_ASSERT_UEQ(a->u.request.offset, b->u.request.offset);
		FUZZ_ASSERT_UEQ(a->u.request.size, b->u.request.size);
		FUZZ_ASSERT_MEMEQ(a->u.request.hash, b->u.request.hash, 32);
		break;
	case PROTO_RESPONSE:
		FUZZ_ASSERT_UEQ(a->u.response.id, b->u.response.id);
		FUZZ_ASSERT_UEQ(a->u.response.code, b->u.response.code);
		bytes_eq(a->u.response.data, b->u.response.data);
		break;
	case PROTO_PING:
		break;
	case PROTO_CLOSE:
		bytes_eq(close_reason_sent(a->u.close.reason), b->u.close.reason);
		break;
	case PROTO_JOIN:
		bytes_eq(a->u.join.folder, b->u.join.folder);
		bytes_eq(a->u.join.secret, b->u.join.secret);
		bytes_eq(a->u.join.device_name, b->u.join.device_name);
		break;
	case PROTO_JOIN_RESULT:
		FUZZ_ASSERT_UEQ(a->u.join_result.code, b->u.join_result.code);
		bytes_eq(close_reason_sent(a->u.join_result.message), b->u.join_result.message);
		break;
	}
}

/* ---- re-encoding ---- */

/*
 * Encodes m into b with the encoder of its type. With split, a response is
 * written as proto_encode_response_header() and its data appended.
 */
static void
encode(struct proto_buf *b, const struct proto_msg *m, int split)
{
	const struct proto_index *x = &m->u.index;
	const struct proto_response *s = &m->u.response;
	char *reason;
	int rc = 0;

	switch (m->type) {
	case PROTO_HELLO:
		rc = proto_encode_hello(b, &m->u.hello);
		break;
	case PROTO_INDEX:
	case PROTO_INDEX_UPDATE:
		rc = proto_encode_index_begin(b, m->type, x->folder.p, x->folder.len, x->index_id,
					      x->last, (uint32_t)x->nfiles);
		for (size_t i = 0; i < x->nfiles && rc == 0; i++)
			rc = proto_encode_file(b, &x->files[i]);
		break;
	case PROTO_REQUEST:
		rc = proto_encode_request(b, &m->u.request);
		break;
	case PROTO_RESPONSE:
		if (split) {
			rc = proto_encode_response_header(b, s->id, s->code, (uint32_t)s->data.len);
			if (rc == 0)
				rc = proto_buf_append(b, s->data.p, s->data.len);
		} else {
			rc = proto_encode_response(b, s);
		}
		break;
	case PROTO_PING:
		rc = proto_encode_ping(b);
		break;
	case PROTO_CLOSE:
		reason = malloc(m->u.close.reason.len + 1);
		FUZZ_ASSERT(reason != NULL);
		if (m->u.close.reason.len > 0)
			memcpy(reason, m->u.close.reason.p, m->u.close.reason.len);
		reason[m->u.close.reason.len] = '\0';
		rc = proto_encode_close(b, reason);
		free(reason);
		break;
	case PROTO_JOIN:
		rc = proto_encode_join(b, &m->u.join);
		break;
	case PROTO_JOIN_RESULT:
		reason = malloc(m->u.join_result.message.len + 1);
		FUZZ_ASSERT(reason != NULL);
		if (m->u.join_result.message.len > 0)
			memcpy(reason, m->u.join_result.message.p, m->u.join_result.message.len);
		reason[m->u.join_result.message.len] = '\0';
		rc = proto_encode_join_result(b, m->u.join_result.code, reason);
		free(reason);
		break;
	}
	FUZZ_ASSERT_EQ(rc, 0);
}

/* ---- decoding ---- */

static int
rc_known(int rc)
{
	return rc == 0 || rc == PROTO_EMALFORMED || rc == PROTO_ETOOBIG || rc == PROTO_ETYPE ||
	       rc == PROTO_EDEPTH || rc == PROTO_EPATH || rc == PROTO_EUNKNOWN;
}

/* Decodes buf[0..len) and checks the result's documented properties. */
static int
decode(const uint8_t *buf, size_t len, struct proto_msg *m)
{
	static const struct proto_msg zero;
	int rc;

	rc = proto_msg_decode(buf, len, m);
	if (!rc_known(rc))
		FUZZ_FAIL("proto_msg_decode: unexpected result %d (%s)", rc, proto_strerror(rc));
	if (rc < 0) {
		/* "On failure msg is zeroed and nothing needs releasing." */
		FUZZ_ASSERT(memcmp(m, &zero, sizeof(zero)) == 0);
		return rc;
	}
	check_msg(m, buf, len);
	return 0;
}

/* Decodes an exactly-sized copy of buf[0..len) and discards the message. */
static int
decode_copy(const uint8_t *buf, size_t len)
{
	struct proto_msg m;
	uint8_t *copy = fuzz_dup(buf, len);
	int rc;

	rc = decode(copy, len, &m);
	proto_msg_release(&m);
	free(copy);
	return rc;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct proto_msg m1, m2;
	struct proto_buf enc1, enc2, enc3;
	uint8_t *longer;
	int rc;

	rc = decode(data, size, &m1);
	if (rc < 0)
		return 0;

	/* A message is exactly one msgpack array: no prefix of it decodes. */
	FUZZ_ASSERT(size > 0);
	rc = decode_copy(data, size - 1);
	if (rc == 0)
		FUZZ_FAIL("the input without its last byte decoded too");
	longer = malloc(size + 1);
	FUZZ_ASSERT(longer != NULL);
	memcpy(longer, data, size);
	longer[size] = 0xc0; /* nil */
	FUZZ_ASSERT_EQ(decode_copy(longer, size + 1), PROTO_EMALFORMED);
	free(longer);

	/* Re-encode, decode again: the same values. */
	proto_buf_init(&enc1);
	proto_buf_init(&enc2);
	proto_buf_init(&enc3);
	encode(&enc1, &m1, 0);
	rc = decode(enc1.p, enc1.len, &m2);
	if (rc != 0) {
		fuzz_hexdump("re-encoded", enc1.p, enc1.len);
		FUZZ_FAIL("the re-encoded message does not decode: %d (%s)", rc,
			  proto_strerror(rc));
	}
	msg_eq(&m1, &m2);

	/* Encoding is a function of the values: the same bytes both times. */
	encode(&enc2, &m2, 0);
	FUZZ_ASSERT_UEQ(enc2.len, enc1.len);
	FUZZ_ASSERT_MEMEQ(enc2.p, enc1.p, enc1.len);
	if (m1.type == PROTO_RESPONSE) {
		encode(&enc3, &m1, 1);
		FUZZ_ASSERT_UEQ(enc3.len, enc1.len);
		FUZZ_ASSERT_MEMEQ(enc3.p, enc1.p, enc1.len);
	}

	proto_msg_release(&m2);
	proto_msg_release(&m1);
	proto_buf_release(&enc1);
	proto_buf_release(&enc2);
	proto_buf_release(&enc3);
	return 0;
}
