/*
 * proto/msg.c - the messages' msgpack layout, their encoders and decoder.
 *
 * Each message and each nested record (folder, file, version counter, block)
 * is described once, by a schema: the list of its fields in wire order, with
 * each field's kind, where it lives in the C struct and its limits. The
 * encoder and the decoder both walk these schemas, so the two cannot drift;
 * docs/protocol.md is written from them. Checks that involve more than one
 * field (a file's blocks add up to its size, ...) are a schema's check
 * function, run after its fields have decoded.
 *
 * Decoded arrays come from a per-message arena: a list of chunks that
 * msg->alloc points to and proto_msg_release() frees.
 */
#include <assert.h>
#include <msgpack.h>
#include <stdalign.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "proto/internal.h"
#include "proto/msg.h"

/* ---- schemas ---- */

enum kind {
	K_UINT, /* an integer in [min, max], in a uint32_t or uint64_t (width) */
	K_INT,	/* any integer that fits an int64_t */
	K_MASK, /* an unsigned integer with no bits outside max set */
	K_STR,	/* a str of min..max bytes, as struct proto_bytes */
	K_PATH, /* a str that passes proto_path_check(), as struct proto_bytes */
	K_BIN,	/* a bin of min..max bytes, as struct proto_bytes */
	K_HASH, /* a bin of exactly 32 bytes, copied into uint8_t[32] */
	K_LIST, /* an array of up to max records (sub): count at off, pointer at off2 */
};

struct schema;

struct field {
	const char *name; /* the C member, for debuggers and readers */
	uint8_t kind;
	uint8_t width; /* bytes of the C integer for K_UINT and K_MASK */
	uint16_t off, off2;
	uint64_t min, max;
	const struct schema *sub;
};

struct schema {
	size_t size;		       /* of one C record, for K_LIST */
	int (*check)(const void *obj); /* cross-field checks, or NULL */
	size_t nfields;
	const struct field *fields;
};

/* The tables read best one field per line. */
/* clang-format off */
#define MEMBER_SIZE(T, m) sizeof(((T *)0)->m)
#define F_UINT(T, m, lo, hi) {#m, K_UINT, MEMBER_SIZE(T, m), offsetof(T, m), 0, lo, hi, NULL}
#define F_MASK(T, m, bits) {#m, K_MASK, MEMBER_SIZE(T, m), offsetof(T, m), 0, 0, bits, NULL}
#define F_INT(T, m) {#m, K_INT, 8, offsetof(T, m), 0, 0, 0, NULL}
#define F_STR(T, m, lo, hi) {#m, K_STR, 0, offsetof(T, m), 0, lo, hi, NULL}
#define F_PATH(T, m) {#m, K_PATH, 0, offsetof(T, m), 0, 0, PROTO_PATH_MAX, NULL}
#define F_BIN(T, m, hi) {#m, K_BIN, 0, offsetof(T, m), 0, 0, hi, NULL}
#define F_HASH(T, m) {#m, K_HASH, 0, offsetof(T, m), 0, 32, 32, NULL}
#define F_LIST(T, n, m, hi, s) {#m, K_LIST, 0, offsetof(T, n), offsetof(T, m), 0, hi, s}
#define SCHEMA(T, chk, f) {sizeof(T), chk, sizeof(f) / sizeof((f)[0]), f}

/* counter: [id, value] */
static const struct field counter_fields[] = {
	F_UINT(struct proto_counter, id, 0, UINT64_MAX),
	F_UINT(struct proto_counter, value, 0, UINT64_MAX),
};
static const struct schema counter_schema = SCHEMA(struct proto_counter, NULL, counter_fields);

/* block: [hash, size] */
static const struct field block_fields[] = {
	F_HASH(struct proto_block, hash),
	F_UINT(struct proto_block, size, 1, PROTO_BLOCK_MAX),
};
static const struct schema block_schema = SCHEMA(struct proto_block, NULL, block_fields);

static int file_check(const void *obj);

/*
 * file: [name, type, flags, mode, size, mtime_s, mtime_ns, sequence,
 *        block_size, target, [counter...], [block...]]
 */
static const struct field file_fields[] = {
	F_PATH(struct proto_file, name),
	F_UINT(struct proto_file, type, PROTO_FILE, PROTO_SYMLINK),
	F_MASK(struct proto_file, flags, PROTO_FLAG_DELETED | PROTO_FLAG_INVALID),
	F_UINT(struct proto_file, mode, 0, 07777),
	F_UINT(struct proto_file, size, 0, INT64_MAX),
	F_INT(struct proto_file, mtime_s),
	F_UINT(struct proto_file, mtime_ns, 0, 999999999),
	F_UINT(struct proto_file, sequence, 1, INT64_MAX),
	F_UINT(struct proto_file, block_size, 0, UINT32_MAX),
	F_STR(struct proto_file, target, 0, PROTO_PATH_MAX),
	F_LIST(struct proto_file, nversion, version, PROTO_MAX_VERSION, &counter_schema),
	F_LIST(struct proto_file, nblocks, blocks, PROTO_MAX_BLOCKS, &block_schema),
};
static const struct schema file_schema = SCHEMA(struct proto_file, file_check, file_fields);

/* folder: [id, label, flags, index_id, max_seq, peer_index_id, peer_max_seq] */
static const struct field folder_fields[] = {
	F_STR(struct proto_folder, id, 1, PROTO_STR_MAX),
	F_STR(struct proto_folder, label, 0, PROTO_STR_MAX),
	F_MASK(struct proto_folder, flags, PROTO_FOLDER_SEND | PROTO_FOLDER_RECEIVE),
	F_UINT(struct proto_folder, index_id, 0, UINT64_MAX),
	F_UINT(struct proto_folder, max_seq, 0, UINT64_MAX),
	F_UINT(struct proto_folder, peer_index_id, 0, UINT64_MAX),
	F_UINT(struct proto_folder, peer_max_seq, 0, UINT64_MAX),
};
static const struct schema folder_schema = SCHEMA(struct proto_folder, NULL, folder_fields);

/* HELLO: [1, device_name, client_name, client_version, [folder...]] */
static const struct field hello_fields[] = {
	F_STR(struct proto_hello, device_name, 0, PROTO_STR_MAX),
	F_STR(struct proto_hello, client_name, 0, PROTO_STR_MAX),
	F_STR(struct proto_hello, client_version, 0, PROTO_STR_MAX),
	F_LIST(struct proto_hello, nfolders, folders, PROTO_MAX_FOLDERS, &folder_schema),
};
static const struct schema hello_schema = SCHEMA(struct proto_hello, NULL, hello_fields);

/* INDEX, INDEX_UPDATE: [2 or 3, folder, index_id, last, [file...]] */
static const struct field index_fields[] = {
	F_STR(struct proto_index, folder, 1, PROTO_STR_MAX),
	F_UINT(struct proto_index, index_id, 0, UINT64_MAX),
	F_UINT(struct proto_index, last, 0, 1),
	F_LIST(struct proto_index, nfiles, files, PROTO_MAX_FILES, &file_schema),
};
static const struct schema index_schema = SCHEMA(struct proto_index, NULL, index_fields);

static int request_check(const void *obj);

/* REQUEST: [4, id, folder, name, offset, size, hash] */
static const struct field request_fields[] = {
	F_UINT(struct proto_request, id, 0, UINT32_MAX),
	F_STR(struct proto_request, folder, 1, PROTO_STR_MAX),
	F_PATH(struct proto_request, name),
	F_UINT(struct proto_request, offset, 0, INT64_MAX),
	F_UINT(struct proto_request, size, 1, PROTO_BLOCK_MAX),
	F_HASH(struct proto_request, hash),
};
static const struct schema request_schema =
	SCHEMA(struct proto_request, request_check, request_fields);

/* RESPONSE: [5, id, code, data] */
static const struct field response_fields[] = {
	F_UINT(struct proto_response, id, 0, UINT32_MAX),
	F_UINT(struct proto_response, code, PROTO_R_OK, PROTO_R_ERROR),
	F_BIN(struct proto_response, data, PROTO_BLOCK_MAX),
};
static const struct schema response_schema = SCHEMA(struct proto_response, NULL, response_fields);

/* PING: [6] */
static const struct schema ping_schema = {0, NULL, 0, NULL};

/* CLOSE: [7, reason] */
static const struct field close_fields[] = {
	F_STR(struct proto_close, reason, 0, PROTO_STR_MAX),
};
static const struct schema close_schema = SCHEMA(struct proto_close, NULL, close_fields);

/* JOIN: [8, folder, secret, device_name] */
static const struct field join_fields[] = {
	F_STR(struct proto_join, folder, 1, PROTO_STR_MAX),
	F_BIN(struct proto_join, secret, PROTO_INVITE_SECRET),
	F_STR(struct proto_join, device_name, 0, PROTO_STR_MAX),
};
static int join_check(const void *obj);
static const struct schema join_schema = SCHEMA(struct proto_join, join_check, join_fields);

/* JOIN_RESULT: [9, code, message] */
static const struct field join_result_fields[] = {
	F_UINT(struct proto_join_result, code, PROTO_J_OK, PROTO_J_ERROR),
	F_STR(struct proto_join_result, message, 0, PROTO_STR_MAX),
};
static const struct schema join_result_schema =
	SCHEMA(struct proto_join_result, NULL, join_result_fields);

/* The schema of each message type, indexed by enum proto_type. */
static const struct schema *const msg_schemas[] = {
	[PROTO_HELLO] = &hello_schema,
	[PROTO_INDEX] = &index_schema,
	[PROTO_INDEX_UPDATE] = &index_schema,
	[PROTO_REQUEST] = &request_schema,
	[PROTO_RESPONSE] = &response_schema,
	[PROTO_PING] = &ping_schema,
	[PROTO_CLOSE] = &close_schema,
	[PROTO_JOIN] = &join_schema,
	[PROTO_JOIN_RESULT] = &join_result_schema,
};
#define NTYPES (sizeof(msg_schemas) / sizeof(msg_schemas[0]))
/* clang-format on */

/* ---- cross-field checks ---- */

static int
join_check(const void *obj)
{
	const struct proto_join *j = obj;
	return j->secret.len == PROTO_INVITE_SECRET ? 0 : PROTO_EMALFORMED;
}

static int
file_check(const void *obj)
{
	const struct proto_file *f = obj;
	bool deleted = f->flags & PROTO_FLAG_DELETED;
	uint64_t sum = 0;

	if (f->type == PROTO_SYMLINK) {
		if (f->target.len == 0 && !deleted)
			return PROTO_EMALFORMED;
		if (memchr(f->target.p, 0, f->target.len) != NULL)
			return PROTO_EMALFORMED;
	} else if (f->target.len != 0) {
		return PROTO_EMALFORMED;
	}
	if (f->type != PROTO_FILE && f->size != 0)
		return PROTO_EMALFORMED;
	if (f->type != PROTO_FILE || deleted)
		return f->nblocks == 0 ? 0 : PROTO_EMALFORMED;
	/* At most 2^22 blocks of at most 2^22 bytes: the sum cannot overflow. */
	for (size_t i = 0; i < f->nblocks; i++)
		sum += f->blocks[i].size;
	return sum == f->size ? 0 : PROTO_EMALFORMED;
}

static int
request_check(const void *obj)
{
	const struct proto_request *r = obj;

	return r->offset <= (uint64_t)INT64_MAX - r->size ? 0 : PROTO_EMALFORMED;
}

/* ---- the decoder's arena ---- */

struct chunk {
	struct chunk *next;
	size_t used, cap;
	alignas(max_align_t) unsigned char data[];
};

#define CHUNK_MIN 4096u
#define CHUNK_MAX (1024u * 1024)

/* Returns n bytes (n > 0) from msg's arena, or NULL when out of memory. */
static void *
arena_alloc(struct proto_msg *msg, size_t n)
{
	const size_t align = alignof(max_align_t);
	struct chunk *c = msg->alloc;
	size_t cap;
	void *p;

	n = (n + align - 1) & ~(align - 1);
	if (c == NULL || c->cap - c->used < n) {
		cap = c ? c->cap * 2 : CHUNK_MIN;
		if (cap > CHUNK_MAX)
			cap = CHUNK_MAX;
		if (cap < n)
			cap = n;
		c = malloc(sizeof(*c) + cap);
		if (c == NULL)
			return NULL;
		c->next = msg->alloc;
		c->used = 0;
		c->cap = cap;
		msg->alloc = c;
	}
	p = c->data + c->used;
	c->used += n;
	return p;
}

void
proto_msg_release(struct proto_msg *msg)
{
	struct chunk *c = msg->alloc, *next;

	for (; c != NULL; c = next) {
		next = c->next;
		free(c);
	}
	memset(msg, 0, sizeof(*msg));
}

/* ---- decoding ---- */

static int decode_record(struct proto_reader *r, const struct schema *s, void *obj,
			 struct proto_msg *msg, unsigned depth);

/*
 * The fewest bytes one encoded record of schema s can take: its array
 * header and each field's smallest encoding.
 */
static size_t
min_encoded(const struct schema *s)
{
	size_t n = 1;

	for (size_t i = 0; i < s->nfields; i++) {
		const struct field *f = &s->fields[i];

		switch (f->kind) {
		case K_STR:
		case K_PATH:
		case K_BIN:
			n += 1 + f->min; /* fixstr or bin8 header */
			break;
		case K_HASH:
			n += 2 + 32;
			break;
		default:
			n += 1; /* a fixint or an empty fixarray */
			break;
		}
	}
	return n;
}

static void
store_uint(void *p, unsigned width, uint64_t v)
{
	if (width == 4) {
		uint32_t v32 = (uint32_t)v;

		memcpy(p, &v32, 4);
	} else {
		memcpy(p, &v, 8);
	}
}

static int
decode_list(struct proto_reader *r, const struct field *f, unsigned char *base,
	    struct proto_msg *msg, unsigned depth)
{
	unsigned char *elems = NULL;
	uint32_t n;
	int rc;

	if (depth > PROTO_MAX_DEPTH)
		return PROTO_EDEPTH;
	rc = proto__rd_array(r, &n, f->max);
	if (rc < 0)
		return rc;
	/* Check the count against the bytes left before allocating for it. */
	if ((uint64_t)n * min_encoded(f->sub) > proto__rd_left(r))
		return PROTO_EMALFORMED;
	if (n > 0) {
		elems = arena_alloc(msg, (size_t)n * f->sub->size);
		if (elems == NULL)
			return PROTO_ENOMEM;
		memset(elems, 0, (size_t)n * f->sub->size);
	}
	for (uint32_t i = 0; i < n; i++) {
		rc = decode_record(r, f->sub, elems + (size_t)i * f->sub->size, msg, depth + 1);
		if (rc < 0)
			return rc;
	}
	memcpy(base + f->off, &(size_t){n}, sizeof(size_t));
	memcpy(base + f->off2, &elems, sizeof(elems));
	return 0;
}

/* Decodes one field of a record at nesting level depth into base. */
static int
decode_field(struct proto_reader *r, const struct field *f, unsigned char *base,
	     struct proto_msg *msg, unsigned depth)
{
	struct proto_bytes *bytes = (struct proto_bytes *)(base + f->off);
	struct proto_bytes b;
	uint64_t u;
	int64_t i;
	int rc;

	switch (f->kind) {
	case K_UINT:
	case K_MASK:
		rc = proto__rd_uint(r, &u);
		if (rc < 0)
			return rc;
		if (f->kind == K_UINT ? (u < f->min || u > f->max) : (u & ~f->max) != 0)
			return PROTO_EMALFORMED;
		store_uint(base + f->off, f->width, u);
		return 0;
	case K_INT:
		rc = proto__rd_int(r, &i);
		if (rc < 0)
			return rc;
		memcpy(base + f->off, &i, sizeof(i));
		return 0;
	case K_STR:
	case K_PATH:
		rc = proto__rd_str(r, bytes, f->max);
		if (rc < 0)
			return rc;
		if (bytes->len < f->min)
			return PROTO_EMALFORMED;
		if (f->kind == K_PATH)
			return proto_path_check(bytes->p, bytes->len);
		return 0;
	case K_BIN:
		rc = proto__rd_bin(r, bytes, f->max);
		if (rc < 0)
			return rc;
		return bytes->len < f->min ? PROTO_EMALFORMED : 0;
	case K_HASH:
		rc = proto__rd_bin(r, &b, 32);
		if (rc == PROTO_ETOOBIG || (rc == 0 && b.len != 32))
			return PROTO_EMALFORMED;
		if (rc < 0)
			return rc;
		memcpy(base + f->off, b.p, 32);
		return 0;
	case K_LIST:
		return decode_list(r, f, base, msg, depth + 1);
	}
	return PROTO_EMALFORMED;
}

/*
 * Decodes the fields of schema s from the n elements left in an array at
 * nesting level depth, then skips the elements a later version may have
 * appended and runs the schema's check.
 */
static int
decode_fields(struct proto_reader *r, const struct schema *s, void *obj, uint32_t n,
	      struct proto_msg *msg, unsigned depth)
{
	int rc;

	if (n < s->nfields)
		return PROTO_EMALFORMED;
	for (size_t i = 0; i < s->nfields; i++) {
		rc = decode_field(r, &s->fields[i], obj, msg, depth);
		if (rc < 0)
			return rc;
	}
	for (uint32_t i = (uint32_t)s->nfields; i < n; i++) {
		rc = proto__rd_skip(r, depth + 1);
		if (rc < 0)
			return rc;
	}
	return s->check ? s->check(obj) : 0;
}

/* Decodes one record (an array) at nesting level depth. */
static int
decode_record(struct proto_reader *r, const struct schema *s, void *obj, struct proto_msg *msg,
	      unsigned depth)
{
	uint32_t n;
	int rc;

	if (depth > PROTO_MAX_DEPTH)
		return PROTO_EDEPTH;
	rc = proto__rd_array(r, &n, UINT32_MAX);
	if (rc < 0)
		return rc;
	return decode_fields(r, s, obj, n, msg, depth);
}

int
proto_msg_decode(const uint8_t *buf, size_t len, struct proto_msg *msg)
{
	struct proto_reader r;
	int64_t type;
	uint32_t n;
	int rc;

	memset(msg, 0, sizeof(*msg));
	proto__rd_init(&r, buf, len);
	rc = proto__rd_array(&r, &n, UINT32_MAX);
	if (rc < 0)
		goto out;
	if (n == 0) {
		rc = PROTO_EMALFORMED;
		goto out;
	}
	rc = proto__rd_int(&r, &type);
	if (rc < 0)
		goto out;
	if (type < 0 || (uint64_t)type >= NTYPES || msg_schemas[type] == NULL) {
		rc = PROTO_EUNKNOWN;
		goto out;
	}
	msg->type = (enum proto_type)type;
	rc = decode_fields(&r, msg_schemas[type], &msg->u, n - 1, msg, 1);
	if (rc < 0)
		goto out;
	if (proto__rd_left(&r) != 0)
		rc = PROTO_EMALFORMED;
out:
	if (rc < 0)
		proto_msg_release(msg);
	return rc;
}

/* ---- encoding ---- */

static int
buf_write(void *data, const char *p, size_t n)
{
	return proto_buf_append(data, p, n) < 0 ? -1 : 0;
}

static int encode_record(msgpack_packer *pk, const struct schema *s, const void *obj);

/*
 * Encodes the fields of s from obj. With open_tail, the last field is
 * written as a header only: a K_LIST's array header for its count, or a
 * K_BIN's header for its length; the caller appends the contents.
 */
static int
encode_fields(msgpack_packer *pk, const struct schema *s, const void *obj, bool open_tail)
{
	const unsigned char *base = obj;
	int rc = 0;

	for (size_t i = 0; i < s->nfields && rc == 0; i++) {
		const struct field *f = &s->fields[i];
		const struct proto_bytes *bytes = (const void *)(base + f->off);
		bool head_only = open_tail && i == s->nfields - 1;
		const unsigned char *elems;
		uint32_t v32;
		uint64_t v64;
		int64_t i64;
		size_t n;

		switch (f->kind) {
		case K_UINT:
		case K_MASK:
			if (f->width == 4) {
				memcpy(&v32, base + f->off, 4);
				v64 = v32;
			} else {
				memcpy(&v64, base + f->off, 8);
			}
			rc = msgpack_pack_uint64(pk, v64);
			break;
		case K_INT:
			memcpy(&i64, base + f->off, 8);
			rc = msgpack_pack_int64(pk, i64);
			break;
		case K_STR:
		case K_PATH:
			rc = msgpack_pack_str(pk, bytes->len);
			if (rc == 0 && bytes->len > 0)
				rc = msgpack_pack_str_body(pk, bytes->p, bytes->len);
			break;
		case K_BIN:
			rc = msgpack_pack_bin(pk, bytes->len);
			if (rc == 0 && bytes->len > 0 && !head_only)
				rc = msgpack_pack_bin_body(pk, bytes->p, bytes->len);
			break;
		case K_HASH:
			rc = msgpack_pack_bin(pk, 32);
			if (rc == 0)
				rc = msgpack_pack_bin_body(pk, base + f->off, 32);
			break;
		case K_LIST:
			memcpy(&n, base + f->off, sizeof(n));
			memcpy(&elems, base + f->off2, sizeof(elems));
			rc = msgpack_pack_array(pk, n);
			for (size_t k = 0; k < n && rc == 0 && !head_only; k++)
				rc = encode_record(pk, f->sub, elems + k * f->sub->size);
			break;
		}
	}
	return rc;
}

static int
encode_record(msgpack_packer *pk, const struct schema *s, const void *obj)
{
	int rc;

	rc = msgpack_pack_array(pk, s->nfields);
	if (rc == 0)
		rc = encode_fields(pk, s, obj, false);
	return rc;
}

/* Appends one message of the given type; on failure b is left as it was. */
static int
encode_msg(struct proto_buf *b, enum proto_type type, const void *obj, bool open_tail)
{
	const struct schema *s = msg_schemas[type];
	size_t len0 = b->len;
	msgpack_packer pk;
	int rc;

	msgpack_packer_init(&pk, b, buf_write);
	rc = msgpack_pack_array(&pk, 1 + s->nfields);
	if (rc == 0)
		rc = msgpack_pack_uint64(&pk, type);
	if (rc == 0)
		rc = encode_fields(&pk, s, obj, open_tail);
	if (rc != 0) {
		b->len = len0;
		return PROTO_ENOMEM;
	}
	return 0;
}

int
proto_encode_hello(struct proto_buf *b, const struct proto_hello *h)
{
	return encode_msg(b, PROTO_HELLO, h, false);
}

int
proto_encode_index_begin(struct proto_buf *b, enum proto_type type, const uint8_t *folder,
			 size_t folder_len, uint64_t index_id, uint32_t last, uint32_t nfiles)
{
	struct proto_index idx = {
	    .folder = {folder, folder_len},
	    .index_id = index_id,
	    .last = last,
	    .nfiles = nfiles,
	};

	assert(type == PROTO_INDEX || type == PROTO_INDEX_UPDATE);
	return encode_msg(b, type, &idx, true);
}

int
proto_encode_file(struct proto_buf *b, const struct proto_file *f)
{
	size_t len0 = b->len;
	msgpack_packer pk;

	msgpack_packer_init(&pk, b, buf_write);
	if (encode_record(&pk, &file_schema, f) != 0) {
		b->len = len0;
		return PROTO_ENOMEM;
	}
	return 0;
}

int
proto_encode_request(struct proto_buf *b, const struct proto_request *r)
{
	return encode_msg(b, PROTO_REQUEST, r, false);
}

int
proto_encode_response_header(struct proto_buf *b, uint32_t id, uint32_t code, uint32_t data_len)
{
	struct proto_response r = {.id = id, .code = code, .data = {NULL, data_len}};

	return encode_msg(b, PROTO_RESPONSE, &r, true);
}

int
proto_encode_response(struct proto_buf *b, const struct proto_response *r)
{
	return encode_msg(b, PROTO_RESPONSE, r, false);
}

int
proto_encode_ping(struct proto_buf *b)
{
	return encode_msg(b, PROTO_PING, NULL, false);
}

int
proto_encode_close(struct proto_buf *b, const char *reason)
{
	struct proto_close c = {.reason = {(const uint8_t *)reason, reason ? strlen(reason) : 0}};

	return encode_msg(b, PROTO_CLOSE, &c, false);
}

int
proto_encode_join(struct proto_buf *b, const struct proto_join *j)
{
	return encode_msg(b, PROTO_JOIN, j, false);
}

int
proto_encode_join_result(struct proto_buf *b, uint32_t code, const char *message)
{
	struct proto_join_result r = {.code = code,
				      .message = {(const uint8_t *)message, message ? strlen(message) : 0}};

	return encode_msg(b, PROTO_JOIN_RESULT, &r, false);
}
