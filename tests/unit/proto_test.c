/*
 * tests/unit/proto_test.c - tests for proto/: messages, frames, fragments,
 * paths.
 *
 * The executable is linked with -Wl,--wrap=malloc,--wrap=realloc so that the
 * hostile-input cases can assert that no decode allocates more than a small
 * multiple of its input. Inputs are copied into buffers of exactly their
 * length so that ASan catches a read past the end.
 */
#include <errno.h>
#include <msgpack.h>
#include <time.h>

#include "proto/msg.h"
#include "proto/proto.h"
#include "tests/unit/test.h"

/* ---- allocation accounting (see proto.cmake for the --wrap flags) ---- */

void *__real_malloc(size_t n);
void *__real_realloc(void *p, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_realloc(void *p, size_t n);

static size_t alloc_total, alloc_largest;

void *
__wrap_malloc(size_t n)
{
	alloc_total += n;
	if (n > alloc_largest)
		alloc_largest = n;
	return __real_malloc(n);
}

void *
__wrap_realloc(void *p, size_t n)
{
	alloc_total += n;
	if (n > alloc_largest)
		alloc_largest = n;
	return __real_realloc(p, n);
}

static void
alloc_reset(void)
{
	alloc_total = 0;
	alloc_largest = 0;
}

/* ---- helpers ---- */

static struct proto_bytes
B(const char *s) {
	return (struct proto_bytes){(const uint8_t *)s, strlen(s)};
}

static uint64_t rng_state = 0x9e3779b97f4a7c15u;

static uint64_t
rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

/* Decodes a private copy of exactly len bytes, so ASan sees any overread. */
static int
decode_copy(const uint8_t *p, size_t len, struct proto_msg *m, uint8_t **copy)
{
	*copy = malloc(len ? len : 1);
	ASSERT(*copy != NULL);
	if (len)
		memcpy(*copy, p, len);
	return proto_msg_decode(*copy, len, m);
}

static void
assert_bytes_eq(struct proto_bytes a, struct proto_bytes b)
{
	ASSERT_UEQ(a.len, b.len);
	if (a.len)
		ASSERT_MEMEQ(a.p, b.p, a.len);
}

/* ---- invariants every decoded message must satisfy ---- */

static void
check_file(const struct proto_file *f)
{
	uint64_t sum = 0;

	ASSERT_EQ(proto_path_check(f->name.p, f->name.len), 0);
	ASSERT(f->type <= PROTO_SYMLINK);
	ASSERT((f->flags & ~(PROTO_FLAG_DELETED | PROTO_FLAG_INVALID)) == 0);
	ASSERT(f->mode <= 07777);
	ASSERT(f->mtime_ns < 1000000000u);
	ASSERT(f->sequence >= 1);
	ASSERT(f->nversion <= PROTO_MAX_VERSION);
	ASSERT(f->nblocks <= PROTO_MAX_BLOCKS);
	ASSERT(f->target.len <= PROTO_PATH_MAX);
	ASSERT(memchr(f->target.p ? f->target.p : (const uint8_t *)"", 0, f->target.len) == NULL);
	if (f->type != PROTO_SYMLINK)
		ASSERT_UEQ(f->target.len, 0);
	else if (!(f->flags & PROTO_FLAG_DELETED))
		ASSERT(f->target.len > 0);
	if (f->type != PROTO_FILE)
		ASSERT_UEQ(f->size, 0);
	if (f->type != PROTO_FILE || (f->flags & PROTO_FLAG_DELETED)) {
		ASSERT_UEQ(f->nblocks, 0);
		return;
	}
	for (size_t i = 0; i < f->nblocks; i++) {
		ASSERT(f->blocks[i].size >= 1 && f->blocks[i].size <= PROTO_BLOCK_MAX);
		sum += f->blocks[i].size;
	}
	ASSERT_UEQ(sum, f->size);
}

static void
check_msg(const struct proto_msg *m)
{
	switch (m->type) {
	case PROTO_HELLO:
		ASSERT(m->u.hello.nfolders <= PROTO_MAX_FOLDERS);
		ASSERT(m->u.hello.device_name.len <= PROTO_STR_MAX);
		for (size_t i = 0; i < m->u.hello.nfolders; i++) {
			ASSERT(m->u.hello.folders[i].id.len >= 1);
			ASSERT(m->u.hello.folders[i].id.len <= PROTO_STR_MAX);
			ASSERT((m->u.hello.folders[i].flags & ~3u) == 0);
		}
		break;
	case PROTO_INDEX:
	case PROTO_INDEX_UPDATE:
		ASSERT(m->u.index.nfiles <= PROTO_MAX_FILES);
		ASSERT(m->u.index.last <= 1);
		ASSERT(m->u.index.folder.len >= 1);
		for (size_t i = 0; i < m->u.index.nfiles; i++)
			check_file(&m->u.index.files[i]);
		break;
	case PROTO_REQUEST:
		ASSERT(m->u.request.size >= 1 && m->u.request.size <= PROTO_BLOCK_MAX);
		ASSERT_EQ(proto_path_check(m->u.request.name.p, m->u.request.name.len), 0);
		ASSERT(m->u.request.offset <= (uint64_t)INT64_MAX - m->u.request.size);
		break;
	case PROTO_RESPONSE:
		ASSERT(m->u.response.code <= PROTO_R_ERROR);
		ASSERT(m->u.response.data.len <= PROTO_BLOCK_MAX);
		break;
	case PROTO_PING:
		break;
	case PROTO_CLOSE:
		ASSERT(m->u.close.reason.len <= PROTO_STR_MAX);
		break;
	default:
		TEST_FAIL("decoded unknown type %d", (int)m->type);
	}
}

/* ---- equality ---- */

static void
assert_file_eq(const struct proto_file *a, const struct proto_file *b)
{
	assert_bytes_eq(a->name, b->name);
	ASSERT_UEQ(a->type, b->type);
	ASSERT_UEQ(a->flags, b->flags);
	ASSERT_UEQ(a->mode, b->mode);
	ASSERT_UEQ(a->size, b->size);
	ASSERT_EQ(a->mtime_s, b->mtime_s);
	ASSERT_UEQ(a->mtime_ns, b->mtime_ns);
	ASSERT_UEQ(a->sequence, b->sequence);
	ASSERT_UEQ(a->block_size, b->block_size);
	assert_bytes_eq(a->target, b->target);
	ASSERT_UEQ(a->nversion, b->nversion);
	for (size_t i = 0; i < a->nversion; i++) {
		ASSERT_UEQ(a->version[i].id, b->version[i].id);
		ASSERT_UEQ(a->version[i].value, b->version[i].value);
	}
	ASSERT_UEQ(a->nblocks, b->nblocks);
	for (size_t i = 0; i < a->nblocks; i++) {
		ASSERT_MEMEQ(a->blocks[i].hash, b->blocks[i].hash, 32);
		ASSERT_UEQ(a->blocks[i].size, b->blocks[i].size);
	}
}

static void
assert_folder_eq(const struct proto_folder *a, const struct proto_folder *b)
{
	assert_bytes_eq(a->id, b->id);
	assert_bytes_eq(a->label, b->label);
	ASSERT_UEQ(a->flags, b->flags);
	ASSERT_UEQ(a->index_id, b->index_id);
	ASSERT_UEQ(a->max_seq, b->max_seq);
	ASSERT_UEQ(a->peer_index_id, b->peer_index_id);
	ASSERT_UEQ(a->peer_max_seq, b->peer_max_seq);
}

/* ---- sample messages ---- */

static char long_name[PROTO_PATH_MAX + 1]; /* 16 components of 255 bytes */
static char long_target[PROTO_PATH_MAX + 1];
static char long_str[PROTO_STR_MAX + 1];

static void
init_strings(void)
{
	size_t i;

	for (i = 0; i < PROTO_PATH_MAX; i++)
		long_name[i] = (i % 256 == 255) ? '/' : (char)('a' + i % 26);
	long_name[PROTO_PATH_MAX] = 0;
	ASSERT_EQ(proto_path_check((const uint8_t *)long_name, PROTO_PATH_MAX), 0);
	for (i = 0; i < PROTO_PATH_MAX; i++)
		long_target[i] = (i % 3 == 0) ? '/' : 'x';
	memset(long_str, 'L', PROTO_STR_MAX);
}

static void
fill_hash(uint8_t h[32])
{
	for (int i = 0; i < 32; i += 8) {
		uint64_t v = rng();

		memcpy(h + i, &v, 8);
	}
}

/*
 * Fills f as a regular file of nblocks random-size blocks and nversion
 * counters, using caller-provided arrays.
 */
static void
make_file(struct proto_file *f, const char *name, struct proto_block *blocks, size_t nblocks,
	  struct proto_counter *version, size_t nversion)
{
	memset(f, 0, sizeof(*f));
	f->name = B(name);
	f->type = PROTO_FILE;
	f->mode = 0644;
	f->mtime_s = 1700000000 + (int64_t)(rng() % 100000);
	f->mtime_ns = (uint32_t)(rng() % 1000000000u);
	f->sequence = 1 + rng() % 1000000;
	f->block_size = 128 * 1024;
	f->target = B("");
	for (size_t i = 0; i < nblocks; i++) {
		fill_hash(blocks[i].hash);
		blocks[i].size = 32 * 1024 + (uint32_t)(rng() % (480 * 1024));
		f->size += blocks[i].size;
	}
	f->nblocks = nblocks;
	f->blocks = nblocks ? blocks : NULL;
	for (size_t i = 0; i < nversion; i++) {
		version[i].id = rng();
		version[i].value = rng() % 5000000000u;
	}
	f->nversion = nversion;
	f->version = nversion ? version : NULL;
}

static void
encode_index(struct proto_buf *b, enum proto_type type, const char *folder, uint64_t index_id,
	     uint32_t last, const struct proto_file *files, size_t n)
{
	ASSERT_EQ(proto_encode_index_begin(b, type, (const uint8_t *)folder, strlen(folder),
					   index_id, last, (uint32_t)n),
		  0);
	for (size_t i = 0; i < n; i++)
		ASSERT_EQ(proto_encode_file(b, &files[i]), 0);
}

#define NCORPUS 9

/* Encodes a set of small, realistic messages of every type into bufs. */
static void
build_corpus(struct proto_buf bufs[NCORPUS])
{
	struct proto_folder folders[2] = {
	    {B("abcd-1234"), B("Photos"), PROTO_FOLDER_SEND | PROTO_FOLDER_RECEIVE,
	     0x1122334455667788u, 4242, 0xdeadbeefcafe, 17},
	    {B("x"), B(""), 0, 1, 0, 0, 0},
	};
	struct proto_hello h = {B("nas-büro"), B("shoal"), B("0.1.0"), 2, folders};
	struct proto_block blocks[3];
	struct proto_counter version[2];
	struct proto_file files[4];
	struct proto_request rq = {7, B("abcd-1234"), B("docs/report.pdf"), 3u << 20, 131072, {0}};
	uint8_t data[100];
	struct proto_response rs = {7, PROTO_R_OK, {data, sizeof(data)}};

	make_file(&files[0], "docs/report.pdf", blocks, 3, version, 2);
	make_file(&files[1], "docs", NULL, 0, NULL, 0);
	files[1].type = PROTO_DIR;
	files[1].mode = 0755;
	make_file(&files[2], "link", NULL, 0, version, 1);
	files[2].type = PROTO_SYMLINK;
	files[2].target = B("docs/report.pdf");
	make_file(&files[3], "old.txt", NULL, 0, version, 2);
	files[3].flags = PROTO_FLAG_DELETED;
	files[3].size = 1234;
	fill_hash(rq.hash);
	memset(data, 0xa5, sizeof(data));

	for (int i = 0; i < NCORPUS; i++)
		proto_buf_init(&bufs[i]);
	ASSERT_EQ(proto_encode_hello(&bufs[0], &h), 0);
	encode_index(&bufs[1], PROTO_INDEX, "abcd-1234", 99, 1, files, 4);
	encode_index(&bufs[2], PROTO_INDEX_UPDATE, "abcd-1234", 99, 0, files, 2);
	ASSERT_EQ(proto_encode_request(&bufs[3], &rq), 0);
	ASSERT_EQ(proto_encode_response(&bufs[4], &rs), 0);
	ASSERT_EQ(proto_encode_ping(&bufs[5]), 0);
	ASSERT_EQ(proto_encode_close(&bufs[6], "shutting down"), 0);
	ASSERT_EQ(proto_encode_close(&bufs[7], ""), 0);
	encode_index(&bufs[8], PROTO_INDEX, "abcd-1234", 99, 1, NULL, 0);
}

static void
release_corpus(struct proto_buf bufs[NCORPUS])
{
	for (int i = 0; i < NCORPUS; i++)
		proto_buf_release(&bufs[i]);
}

/* ---- round trips ---- */

TEST(roundtrip_hello)
{
	struct proto_folder folders[40];
	struct proto_hello h = {B("nas-büro"), B("shoal"), B("0.1.0"), 40, folders};
	struct proto_hello e = {B(""), B(""), B(""), 0, NULL};
	struct proto_buf b;
	struct proto_msg m;

	init_strings();
	for (int i = 0; i < 40; i++) {
		folders[i] = (struct proto_folder){
		    i == 0 ? (struct proto_bytes){(const uint8_t *)long_str, PROTO_STR_MAX}
			   : B("folder-id"),
		    i == 1 ? B("") : B("Label with spaces ✓"),
		    (uint32_t)i & 3,
		    rng(),
		    i == 2 ? UINT64_MAX : rng() >> (i % 64),
		    i == 3 ? 0 : rng(),
		    (uint64_t)i,
		};
	}
	h.device_name = (struct proto_bytes){(const uint8_t *)long_str, PROTO_STR_MAX};

	proto_buf_init(&b);
	ASSERT_EQ(proto_encode_hello(&b, &h), 0);
	ASSERT_EQ(proto_msg_decode(b.p, b.len, &m), 0);
	ASSERT_EQ(m.type, PROTO_HELLO);
	assert_bytes_eq(m.u.hello.device_name, h.device_name);
	assert_bytes_eq(m.u.hello.client_name, h.client_name);
	assert_bytes_eq(m.u.hello.client_version, h.client_version);
	ASSERT_UEQ(m.u.hello.nfolders, 40);
	for (int i = 0; i < 40; i++)
		assert_folder_eq(&m.u.hello.folders[i], &folders[i]);
	check_msg(&m);
	proto_msg_release(&m);
	ASSERT(m.alloc == NULL);

	/* Empty strings and no folders. */
	proto_buf_reset(&b);
	ASSERT_EQ(proto_encode_hello(&b, &e), 0);
	ASSERT_EQ(proto_msg_decode(b.p, b.len, &m), 0);
	ASSERT_EQ(m.type, PROTO_HELLO);
	ASSERT_UEQ(m.u.hello.device_name.len, 0);
	ASSERT_UEQ(m.u.hello.nfolders, 0);
	ASSERT(m.u.hello.folders == NULL);
	proto_msg_release(&m);
	proto_buf_release(&b);
}

TEST(roundtrip_index)
{
	enum { NBLOCKS = 20000, NFILES = 6 };
	static struct proto_block blocks[NBLOCKS];
	static struct proto_counter version[PROTO_MAX_VERSION];
	struct proto_file files[NFILES];
	struct proto_buf b;
	struct proto_msg m;

	init_strings();
	make_file(&files[0], long_name, blocks, NBLOCKS, version, PROTO_MAX_VERSION);
	files[0].mode = 07777;
	files[0].mtime_ns = 999999999;
	files[0].sequence = (uint64_t)INT64_MAX;
	files[0].flags = PROTO_FLAG_INVALID;
	make_file(&files[1], "empty", NULL, 0, NULL, 0); /* a 0-byte file */
	files[1].mtime_s = -86400;			 /* before 1970 */
	files[1].mtime_ns = 0;
	make_file(&files[2], "é/ü", NULL, 0, version, 1);
	files[2].type = PROTO_DIR;
	files[2].mode = 0700;
	make_file(&files[3], "a/link", NULL, 0, version, 3);
	files[3].type = PROTO_SYMLINK;
	files[3].target = (struct proto_bytes){(const uint8_t *)long_target, PROTO_PATH_MAX};
	make_file(&files[4], ".hidden/gone", NULL, 0, version, 2);
	files[4].flags = PROTO_FLAG_DELETED;
	files[4].size = 5u << 30;
	make_file(&files[5], "dead-link", NULL, 0, version, 2);
	files[5].type = PROTO_SYMLINK;
	files[5].flags = PROTO_FLAG_DELETED;

	for (int t = PROTO_INDEX; t <= PROTO_INDEX_UPDATE; t++) {
		proto_buf_init(&b);
		encode_index(&b, t, "abcd-1234", 0xfedcba9876543210u, t == PROTO_INDEX, files,
			     NFILES);
		ASSERT_EQ(proto_msg_decode(b.p, b.len, &m), 0);
		ASSERT_EQ(m.type, t);
		assert_bytes_eq(m.u.index.folder, B("abcd-1234"));
		ASSERT_UEQ(m.u.index.index_id, 0xfedcba9876543210u);
		ASSERT_UEQ(m.u.index.last, t == PROTO_INDEX);
		ASSERT_UEQ(m.u.index.nfiles, NFILES);
		for (int i = 0; i < NFILES; i++)
			assert_file_eq(&m.u.index.files[i], &files[i]);
		check_msg(&m);
		/* Byte fields point into the decoded buffer. */
		ASSERT(m.u.index.files[0].name.p >= b.p && m.u.index.files[0].name.p < b.p + b.len);
		proto_msg_release(&m);
		proto_buf_release(&b);
	}
}

TEST(roundtrip_small)
{
	struct proto_request rq = {UINT32_MAX,	    B("f"),
				   B("a/b/c.txt"),  (uint64_t)INT64_MAX - PROTO_BLOCK_MAX,
				   PROTO_BLOCK_MAX, {0}};
	static uint8_t data[PROTO_BLOCK_MAX];
	struct proto_response rs = {12, PROTO_R_CHANGED, {data, sizeof(data)}};
	struct proto_buf b;
	struct proto_msg m;
	size_t hdr;

	init_strings();
	fill_hash(rq.hash);
	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)(i * 7);
	proto_buf_init(&b);

	ASSERT_EQ(proto_encode_request(&b, &rq), 0);
	ASSERT_EQ(proto_msg_decode(b.p, b.len, &m), 0);
	ASSERT_EQ(m.type, PROTO_REQUEST);
	ASSERT_UEQ(m.u.request.id, rq.id);
	assert_bytes_eq(m.u.request.folder, rq.folder);
	assert_bytes_eq(m.u.request.name, rq.name);
	ASSERT_UEQ(m.u.request.offset, rq.offset);
	ASSERT_UEQ(m.u.request.size, rq.size);
	ASSERT_MEMEQ(m.u.request.hash, rq.hash, 32);
	proto_msg_release(&m);

	/* A request with the longest name. */
	proto_buf_reset(&b);
	rq.name = (struct proto_bytes){(const uint8_t *)long_name, PROTO_PATH_MAX};
	rq.offset = 0;
	rq.size = 1;
	ASSERT_EQ(proto_encode_request(&b, &rq), 0);
	ASSERT_EQ(proto_msg_decode(b.p, b.len, &m), 0);
	assert_bytes_eq(m.u.request.name, rq.name);
	proto_msg_release(&m);

	proto_buf_reset(&b);
	ASSERT_EQ(proto_encode_response(&b, &rs), 0);
	ASSERT_EQ(proto_msg_decode(b.p, b.len, &m), 0);
	ASSERT_EQ(m.type, PROTO_RESPONSE);
	ASSERT_UEQ(m.u.response.id, 12);
	ASSERT_UEQ(m.u.response.code, PROTO_R_CHANGED);
	assert_bytes_eq(m.u.response.data, rs.data);
	proto_msg_release(&m);

	/* The zero-copy header, followed by the data, gives the same bytes. */
	{
		struct proto_buf c;

		proto_buf_init(&c);
		ASSERT_EQ(proto_encode_response_header(&c, 12, PROTO_R_CHANGED, sizeof(data)), 0);
		hdr = c.len;
		ASSERT(hdr < 16);
		ASSERT_EQ(proto_buf_append(&c, data, sizeof(data)), 0);
		ASSERT_UEQ(c.len, b.len);
		ASSERT_MEMEQ(c.p, b.p, b.len);
		proto_buf_release(&c);
	}

	/* An empty response. */
	proto_buf_reset(&b);
	ASSERT_EQ(proto_encode_response_header(&b, 3, PROTO_R_NOTFOUND, 0), 0);
	ASSERT_EQ(proto_msg_decode(b.p, b.len, &m), 0);
	ASSERT_EQ(m.type, PROTO_RESPONSE);
	ASSERT_UEQ(m.u.response.code, PROTO_R_NOTFOUND);
	ASSERT_UEQ(m.u.response.data.len, 0);
	proto_msg_release(&m);

	proto_buf_reset(&b);
	ASSERT_EQ(proto_encode_ping(&b), 0);
	ASSERT_EQ(proto_msg_decode(b.p, b.len, &m), 0);
	ASSERT_EQ(m.type, PROTO_PING);
	proto_msg_release(&m);

	proto_buf_reset(&b);
	ASSERT_EQ(proto_encode_close(&b, long_str), 0);
	ASSERT_EQ(proto_msg_decode(b.p, b.len, &m), 0);
	ASSERT_EQ(m.type, PROTO_CLOSE);
	assert_bytes_eq(m.u.close.reason, B(long_str));
	proto_msg_release(&m);

	proto_buf_reset(&b);
	ASSERT_EQ(proto_encode_close(&b, ""), 0);
	ASSERT_EQ(proto_msg_decode(b.p, b.len, &m), 0);
	ASSERT_UEQ(m.u.close.reason.len, 0);
	proto_msg_release(&m);
	proto_buf_release(&b);
}

/* The exact bytes of small messages: pins the field order and compact forms. */
TEST(golden)
{
	static const uint8_t ping[] = {0x91, 0x06};
	static const uint8_t close[] = {0x92, 0x07, 0xa3, 'b', 'y', 'e'};
	static const uint8_t resp_hdr[] = {0x94, 0x05, 0xcd, 0x01, 0x00, 0x01, 0xc5, 0x01, 0x00};
	static const uint8_t index_hdr[] = {0x95, 0x02, 0xa1, 'f', 0x2a, 0x01, 0x92};
	uint8_t req[] = {0x97, 0x04, 0x05, 0xa1, 'f',  0xa3, 'a',  '/',	 'b', 0xce,
			 0x00, 0x01, 0x00, 0x00, 0xcd, 0x10, 0x00, 0xc4, 0x20};
	uint8_t file[] = {0x9c, 0xa1, 'a',  0x00, 0x00, 0xcd, 0x01, 0xa4, 0x05,
			  0xd1, 0xff, 0x00, 0x07, 0x01, 0xcd, 0x10, 0x00, 0xa0,
			  0x91, 0x92, 0x03, 0x04, 0x91, 0x92, 0xc4, 0x20};
	struct proto_request rq = {5, B("f"), B("a/b"), 65536, 4096, {0}};
	struct proto_counter c = {3, 4};
	struct proto_block blk = {{0}, 5};
	struct proto_file f = {B("a"), PROTO_FILE, 0,	  0644, 5,  -256, 7,
			       1,      4096,	   B(""), 1,	&c, 1,	  &blk};
	struct proto_buf b;

	memset(rq.hash, 0xee, 32);
	memset(blk.hash, 0x11, 32);
	proto_buf_init(&b);
	ASSERT_EQ(proto_encode_ping(&b), 0);
	ASSERT_UEQ(b.len, sizeof(ping));
	ASSERT_MEMEQ(b.p, ping, sizeof(ping));

	proto_buf_reset(&b);
	ASSERT_EQ(proto_encode_close(&b, "bye"), 0);
	ASSERT_UEQ(b.len, sizeof(close));
	ASSERT_MEMEQ(b.p, close, sizeof(close));

	proto_buf_reset(&b);
	ASSERT_EQ(proto_encode_response_header(&b, 256, 1, 256), 0);
	ASSERT_UEQ(b.len, sizeof(resp_hdr));
	ASSERT_MEMEQ(b.p, resp_hdr, sizeof(resp_hdr));

	proto_buf_reset(&b);
	ASSERT_EQ(proto_encode_request(&b, &rq), 0);
	ASSERT_UEQ(b.len, sizeof(req) + 32);
	ASSERT_MEMEQ(b.p, req, sizeof(req));
	ASSERT_MEMEQ(b.p + sizeof(req), rq.hash, 32);

	proto_buf_reset(&b);
	ASSERT_EQ(proto_encode_index_begin(&b, PROTO_INDEX, (const uint8_t *)"f", 1, 42, 1, 2), 0);
	ASSERT_UEQ(b.len, sizeof(index_hdr));
	ASSERT_MEMEQ(b.p, index_hdr, sizeof(index_hdr));

	proto_buf_reset(&b);
	ASSERT_EQ(proto_encode_file(&b, &f), 0);
	ASSERT_UEQ(b.len, sizeof(file) + 32 + 1);
	ASSERT_MEMEQ(b.p, file, sizeof(file));
	ASSERT_MEMEQ(b.p + sizeof(file), blk.hash, 32);
	ASSERT_EQ(b.p[sizeof(file) + 32], 0x05);
	proto_buf_release(&b);
}

/* ---- truncation and bit flips ---- */

TEST(truncation)
{
	struct proto_buf bufs[NCORPUS];
	struct proto_msg m;
	uint8_t *copy;

	build_corpus(bufs);
	for (int i = 0; i < NCORPUS; i++) {
		ASSERT_EQ(decode_copy(bufs[i].p, bufs[i].len, &m, &copy), 0);
		check_msg(&m);
		proto_msg_release(&m);
		free(copy);
		for (size_t n = 0; n < bufs[i].len; n++) {
			int rc = decode_copy(bufs[i].p, n, &m, &copy);

			if (rc >= 0)
				TEST_FAIL("message %d: prefix of %zu/%zu bytes decoded", i, n,
					  bufs[i].len);
			ASSERT(m.alloc == NULL);
			proto_msg_release(&m); /* harmless after a failure */
			free(copy);
		}
		/* One byte too many is malformed too. */
		{
			uint8_t *p = malloc(bufs[i].len + 1);

			memcpy(p, bufs[i].p, bufs[i].len);
			p[bufs[i].len] = 0xc0;
			ASSERT_EQ(proto_msg_decode(p, bufs[i].len + 1, &m), PROTO_EMALFORMED);
			free(p);
		}
	}
	release_corpus(bufs);
}

TEST(bitflip)
{
	struct proto_buf bufs[NCORPUS];
	struct proto_msg m;
	size_t ok = 0, total = 0;
	uint8_t *copy;

	build_corpus(bufs);
	for (int i = 0; i < NCORPUS; i++) {
		for (size_t bit = 0; bit < bufs[i].len * 8; bit++) {
			int rc;

			bufs[i].p[bit / 8] ^= (uint8_t)(1u << (bit % 8));
			alloc_reset();
			rc = decode_copy(bufs[i].p, bufs[i].len, &m, &copy);
			/* The arena stays within a small multiple of the input. */
			if (alloc_total > 64 * 1024 + 16 * bufs[i].len)
				TEST_FAIL("message %d bit %zu: %zu bytes allocated", i, bit,
					  alloc_total);
			total++;
			if (rc == 0) {
				check_msg(&m);
				ok++;
			} else {
				ASSERT(rc <= PROTO_EMALFORMED && rc >= PROTO_EUNKNOWN);
				ASSERT(m.alloc == NULL);
			}
			proto_msg_release(&m);
			free(copy);
			bufs[i].p[bit / 8] ^= (uint8_t)(1u << (bit % 8));
		}
	}
	printf("bitflip: %zu of %zu flipped messages still decode (and pass the checks)\n", ok,
	       total);
	release_corpus(bufs);
}

/* ---- hostile input ---- */

struct hostile {
	const char *what;
	uint8_t bytes[16];
	size_t len;
	int want; /* 0: any error */
};

TEST(hostile_counts)
{
	static const struct hostile cases[] = {
	    {"array32 of 4G-16M elements", {0xdd, 0xff, 0x00, 0x00, 0x00}, 5, PROTO_EMALFORMED},
	    {"str32 of 4 GiB", {0xdb, 0xff, 0xff, 0xff, 0xff}, 5, PROTO_ETYPE},
	    {"array16 of 65535", {0xdc, 0xff, 0xff, 0x06}, 4, PROTO_EMALFORMED},
	    {"trailing map32 4G",
	     {0x92, 0x06, 0xdf, 0xff, 0xff, 0xff, 0xff, 0},
	     8,
	     PROTO_EMALFORMED},
	    {"trailing str32 4G", {0x92, 0x06, 0xdb, 0xff, 0xff, 0xff, 0xff}, 7, PROTO_EMALFORMED},
	    {"trailing bin32 4G", {0x92, 0x06, 0xc6, 0xff, 0xff, 0xff, 0xff}, 7, PROTO_EMALFORMED},
	    {"trailing ext32 4G",
	     {0x92, 0x06, 0xc9, 0xff, 0xff, 0xff, 0xff, 1},
	     8,
	     PROTO_EMALFORMED},
	    {"trailing array32",
	     {0x92, 0x06, 0xdd, 0x7f, 0xff, 0xff, 0xff, 0x06},
	     8,
	     PROTO_EMALFORMED},
	    {"close reason str32 4G", {0x92, 0x07, 0xdb, 0xff, 0xff, 0xff, 0xff}, 7, PROTO_ETOOBIG},
	    {"response data bin32 4G",
	     {0x94, 0x05, 0x01, 0x00, 0xc6, 0xff, 0xff, 0xff, 0xff},
	     9,
	     PROTO_ETOOBIG},
	    {"response data bin32 4 MiB",
	     {0x94, 0x05, 0x01, 0x00, 0xc6, 0x00, 0x40, 0x00, 0x00},
	     9,
	     PROTO_EMALFORMED},
	    {"hello folders array32 1024",
	     {0x95, 0x01, 0xa0, 0xa0, 0xa0, 0xdd, 0x00, 0x00, 0x04, 0x00, 0x90, 0x90, 0x90},
	     13,
	     PROTO_EMALFORMED},
	    {"hello folders array32 1025",
	     {0x95, 0x01, 0xa0, 0xa0, 0xa0, 0xdd, 0x00, 0x00, 0x04, 0x01},
	     10,
	     PROTO_ETOOBIG},
	    {"index files array32 100000",
	     {0x95, 0x02, 0xa1, 'f', 0x01, 0x01, 0xdd, 0x00, 0x01, 0x86, 0xa0, 0x9c, 0x9c, 0x9c},
	     14,
	     PROTO_EMALFORMED},
	    {"index files array32 100001",
	     {0x95, 0x02, 0xa1, 'f', 0x01, 0x01, 0xdd, 0x00, 0x01, 0x86, 0xa1},
	     11,
	     PROTO_ETOOBIG},
	    {"reserved byte 0xc1", {0x92, 0x06, 0xc1}, 3, PROTO_EMALFORMED},
	    {"empty input", {0}, 0, PROTO_EMALFORMED},
	    {"empty array", {0x90}, 1, PROTO_EMALFORMED},
	    {"type 0", {0x91, 0x00}, 2, PROTO_EUNKNOWN},
	    {"type 10", {0x91, 0x0a}, 2, PROTO_EUNKNOWN},
	    {"JOIN without fields", {0x91, 0x08}, 2, PROTO_EMALFORMED},
	    {"type -1", {0x91, 0xff}, 2, PROTO_EUNKNOWN},
	    {"type 2^64-1",
	     {0x91, 0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
	     10,
	     PROTO_EMALFORMED},
	    {"type str", {0x91, 0xa1, '1'}, 3, PROTO_ETYPE},
	    {"close without reason", {0x91, 0x07}, 2, PROTO_EMALFORMED},
	    {"map at top", {0x81, 0x06, 0x06}, 3, PROTO_ETYPE},
	};
	struct proto_buf bufs[NCORPUS];
	struct proto_msg m;
	uint8_t *copy;

	/* The accounting sees the decoder's allocations (the --wrap flags are in effect). */
	build_corpus(bufs);
	alloc_reset();
	ASSERT_EQ(proto_msg_decode(bufs[0].p, bufs[0].len, &m), 0);
	ASSERT(alloc_total >= 2 * sizeof(struct proto_folder));
	proto_msg_release(&m);
	release_corpus(bufs);

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct hostile *c = &cases[i];
		int rc;

		alloc_reset();
		rc = decode_copy(c->bytes, c->len, &m, &copy);
		free(copy);
		if (rc != c->want)
			TEST_FAIL("%s: got %d (%s), want %d", c->what, rc, proto_strerror(rc),
				  c->want);
		if (alloc_largest > 4096 || alloc_total > 4096 + 64)
			TEST_FAIL("%s: allocated %zu bytes (largest %zu)", c->what, alloc_total,
				  alloc_largest);
		ASSERT(m.alloc == NULL);
	}
}

/* Builds [6, <depth nested containers opened by open>, nil] and decodes it. */
static int
decode_nested(size_t depth, uint8_t open)
{
	size_t len = 2 + depth + 1;
	uint8_t *p = malloc(len);
	struct proto_msg m;
	int rc;

	p[0] = 0x92;
	p[1] = 0x06;
	memset(p + 2, open, depth);
	p[len - 1] = 0xc0;
	rc = proto_msg_decode(p, len, &m);
	proto_msg_release(&m);
	free(p);
	return rc;
}

TEST(depth)
{
	struct proto_msg m;
	clock_t t0;

	/* The top-level array is level 1: a trailing element may nest 7 more. */
	ASSERT_EQ(decode_nested(PROTO_MAX_DEPTH - 1, 0x91), 0);
	ASSERT_EQ(decode_nested(PROTO_MAX_DEPTH, 0x91), PROTO_EDEPTH);
	ASSERT_EQ(decode_nested(100, 0x91), PROTO_EDEPTH);
	t0 = clock();
	ASSERT_EQ(decode_nested(1000000, 0x91), PROTO_EDEPTH);
	ASSERT_EQ(decode_nested(1000000, 0xdc), PROTO_EDEPTH);
	ASSERT_EQ(decode_nested(100, 0x81), PROTO_EDEPTH);
	ASSERT((double)(clock() - t0) / CLOCKS_PER_SEC < 1.0);

	/* 100 nested arrays where a message begins: the type is not an integer. */
	{
		uint8_t p[101];

		memset(p, 0x91, 100);
		p[100] = 0x06;
		ASSERT_EQ(proto_msg_decode(p, sizeof(p), &m), PROTO_ETYPE);
	}
}

/* ---- raw encodings, written independently of proto's encoders ---- */

static int
pack_cb(void *data, const char *p, size_t n)
{
	return proto_buf_append(data, p, n) < 0 ? -1 : 0;
}

static void
pack_str(msgpack_packer *pk, const char *s)
{
	msgpack_pack_str_with_body(pk, s, strlen(s));
}

/* Values of a wrong type for a field: an int where a str or array is expected, and back. */
enum { WRONG_NONE = -1 };

#define FILE_NFIELDS 12

/*
 * Packs a valid two-block file, with field bad (0..11, or WRONG_NONE) given
 * a value of the wrong msgpack type, bad_sub (0..1) of the first version
 * counter or block (field 10 or 11) likewise when sub >= 0, and extra
 * trailing elements of every kind when extra is set.
 */
static void
pack_file(msgpack_packer *pk, int bad, int sub, int extra)
{
	uint8_t hash[32];

	memset(hash, 0x42, sizeof(hash));
	msgpack_pack_array(pk, FILE_NFIELDS + (extra ? 5 : 0));
	for (int i = 0; i < FILE_NFIELDS; i++) {
		if (i == bad) {
			if (i == 0 || i == 9 || i == 10 || i == 11)
				msgpack_pack_uint64(pk, 1);
			else
				pack_str(pk, "1");
			continue;
		}
		switch (i) {
		case 0:
			pack_str(pk, "dir/file.bin");
			break;
		case 1:
			msgpack_pack_uint64(pk, PROTO_FILE);
			break;
		case 2:
			msgpack_pack_uint64(pk, 0);
			break;
		case 3:
			msgpack_pack_uint64(pk, 0600);
			break;
		case 4:
			msgpack_pack_uint64(pk, 300);
			break;
		case 5:
			msgpack_pack_int64(pk, -5);
			break;
		case 6:
			msgpack_pack_uint64(pk, 5);
			break;
		case 7:
			msgpack_pack_uint64(pk, 9);
			break;
		case 8:
			msgpack_pack_uint64(pk, 65536);
			break;
		case 9:
			pack_str(pk, "");
			break;
		case 10:
			msgpack_pack_array(pk, 1);
			msgpack_pack_array(pk, 2 + (extra ? 1 : 0));
			if (sub == 0 && bad == 10 + 100)
				pack_str(pk, "id");
			else
				msgpack_pack_uint64(pk, 77);
			msgpack_pack_uint64(pk, 1);
			if (extra)
				msgpack_pack_nil(pk);
			break;
		case 11:
			msgpack_pack_array(pk, 2);
			for (int k = 0; k < 2; k++) {
				msgpack_pack_array(pk, 2 + (extra ? 1 : 0));
				msgpack_pack_bin_with_body(pk, hash, 32);
				msgpack_pack_uint64(pk, k == 0 ? 100 : 200);
				if (extra)
					msgpack_pack_double(pk, 1.5);
			}
			break;
		}
	}
	if (extra) {
		msgpack_pack_nil(pk);
		msgpack_pack_true(pk);
		msgpack_pack_map(pk, 1);
		pack_str(pk, "k");
		msgpack_pack_array(pk, 0);
		msgpack_pack_bin_with_body(pk, "xyz", 3);
		msgpack_pack_int64(pk, -1000000);
	}
}

/* Decodes [2, "f", 1, 1, [file]] with the file packed as pack_file() does. */
static int
decode_raw_file(int bad, int sub, int extra)
{
	struct proto_buf b;
	struct proto_msg m;
	msgpack_packer pk;
	uint8_t *copy;
	int rc;

	proto_buf_init(&b);
	msgpack_packer_init(&pk, &b, pack_cb);
	msgpack_pack_array(&pk, 5 + (extra ? 2 : 0));
	msgpack_pack_uint64(&pk, PROTO_INDEX);
	pack_str(&pk, "f");
	msgpack_pack_uint64(&pk, 1);
	msgpack_pack_uint64(&pk, 1);
	msgpack_pack_array(&pk, 1);
	pack_file(&pk, bad, sub, extra);
	if (extra) {
		pack_str(&pk, "a later field");
		msgpack_pack_array(&pk, 1);
		msgpack_pack_array(&pk, 1);
		msgpack_pack_map(&pk, 0);
	}
	rc = decode_copy(b.p, b.len, &m, &copy);
	if (rc == 0) {
		check_msg(&m);
		ASSERT_UEQ(m.u.index.nfiles, 1);
		assert_bytes_eq(m.u.index.files[0].name, B("dir/file.bin"));
		ASSERT_EQ(m.u.index.files[0].mtime_s, -5);
		ASSERT_UEQ(m.u.index.files[0].nblocks, 2);
		ASSERT_UEQ(m.u.index.files[0].blocks[1].size, 200);
		ASSERT_UEQ(m.u.index.files[0].version[0].id, 77);
	}
	proto_msg_release(&m);
	free(copy);
	proto_buf_release(&b);
	return rc;
}

TEST(forward_compat)
{
	/* The raw encoding matches the decoder's view of the field order. */
	ASSERT_EQ(decode_raw_file(WRONG_NONE, -1, 0), 0);
	/* Unknown trailing elements of any type are skipped in every record. */
	ASSERT_EQ(decode_raw_file(WRONG_NONE, -1, 1), 0);
}

TEST(wrong_types)
{
	for (int i = 0; i < FILE_NFIELDS; i++) {
		int rc = decode_raw_file(i, -1, 0);

		if (rc != PROTO_ETYPE)
			TEST_FAIL("file field %d of the wrong type: got %d (%s)", i, rc,
				  proto_strerror(rc));
	}
	ASSERT_EQ(decode_raw_file(110, 0, 0), PROTO_ETYPE); /* a str counter id */

	/* Wrong types in the other messages. */
	{
		static const struct hostile cases[] = {
		    {"request id str", {0x97, 0x04, 0xa1, '1'}, 16, PROTO_ETYPE},
		    {"request folder int", {0x97, 0x04, 0x01, 0x01}, 16, PROTO_ETYPE},
		    {"request hash str",
		     {0x97, 0x04, 0x01, 0xa1, 'f', 0xa1, 'a', 0x00, 0x01, 0xa1, 'h'},
		     16,
		     PROTO_ETYPE},
		    {"response data str", {0x94, 0x05, 0x01, 0x00, 0xa1, 'x'}, 16, PROTO_ETYPE},
		    {"close reason bin", {0x92, 0x07, 0xc4, 0x01, 'x'}, 16, PROTO_ETYPE},
		    {"hello name int", {0x95, 0x01, 0x01}, 16, PROTO_ETYPE},
		    {"hello folders map", {0x95, 0x01, 0xa0, 0xa0, 0xa0, 0x80}, 16, PROTO_ETYPE},
		    {"hello folder str",
		     {0x95, 0x01, 0xa0, 0xa0, 0xa0, 0x91, 0xa0},
		     16,
		     PROTO_ETYPE},
		    {"index files nil", {0x95, 0x02, 0xa1, 'f', 0x01, 0x01, 0xc0}, 16, PROTO_ETYPE},
		    {"index last bool", {0x95, 0x02, 0xa1, 'f', 0x01, 0xc3, 0x90}, 16, PROTO_ETYPE},
		    {"index id float",
		     {0x95, 0x02, 0xa1, 'f', 0xca, 0, 0, 0, 0, 0x01, 0x90},
		     11,
		     PROTO_ETYPE},
		};
		struct proto_msg m;
		uint8_t *copy;

		/* Each case is padded with zeros (fixints) so that counts fit. */
		for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
			int rc = decode_copy(cases[i].bytes, cases[i].len, &m, &copy);

			free(copy);
			if (rc != cases[i].want)
				TEST_FAIL("%s: got %d, want %d", cases[i].what, rc, cases[i].want);
		}
	}
}

/* ---- values out of range ---- */

/* Encodes one file f in an index message with proto's encoder and decodes it. */
static int
decode_file(const struct proto_file *f)
{
	struct proto_buf b;
	struct proto_msg m;
	uint8_t *copy;
	int rc;

	proto_buf_init(&b);
	encode_index(&b, PROTO_INDEX, "f", 1, 1, f, 1);
	rc = decode_copy(b.p, b.len, &m, &copy);
	if (rc == 0)
		check_msg(&m);
	proto_msg_release(&m);
	free(copy);
	proto_buf_release(&b);
	return rc;
}

static int
decode_request(const struct proto_request *r)
{
	struct proto_buf b;
	struct proto_msg m;
	int rc;

	proto_buf_init(&b);
	ASSERT_EQ(proto_encode_request(&b, r), 0);
	rc = proto_msg_decode(b.p, b.len, &m);
	proto_msg_release(&m);
	proto_buf_release(&b);
	return rc;
}

TEST(ranges)
{
	struct proto_block blocks[3];
	struct proto_counter version[2];
	struct proto_file f, g;
	struct proto_request rq = {1, B("f"), B("a"), 0, 1, {0}};
	struct proto_buf b;
	struct proto_msg m;

	make_file(&f, "a/b", blocks, 3, version, 2);
	ASSERT_EQ(decode_file(&f), 0);

#define BAD(stmt, want)                                                                            \
	do {                                                                                       \
		g = f;                                                                             \
		stmt;                                                                              \
		int rc_ = decode_file(&g);                                                         \
		if (rc_ != (want))                                                                 \
			TEST_FAIL("%s: got %d (%s), want %d", #stmt, rc_, proto_strerror(rc_),     \
				  (want));                                                         \
	} while (0)

	BAD(g.size += 1, PROTO_EMALFORMED);
	BAD(g.size -= 1, PROTO_EMALFORMED);
	BAD(g.nblocks = 2, PROTO_EMALFORMED);
	BAD(g.nblocks = 0, PROTO_EMALFORMED);
	BAD((g.nblocks = 0, g.size = 0, g.flags = PROTO_FLAG_DELETED), 0);
	BAD(g.flags = PROTO_FLAG_DELETED, PROTO_EMALFORMED); /* a tombstone has no blocks */
	BAD(g.mtime_ns = 1000000000, PROTO_EMALFORMED);
	BAD(g.mtime_ns = UINT32_MAX, PROTO_EMALFORMED);
	BAD(g.mode = 010000, PROTO_EMALFORMED);
	BAD(g.sequence = 0, PROTO_EMALFORMED);
	BAD(g.type = 3, PROTO_EMALFORMED);
	BAD(g.flags = 4, PROTO_EMALFORMED);
	BAD(g.flags = 0x80000000u, PROTO_EMALFORMED);
	BAD(g.name = B("../x"), PROTO_EPATH);
	BAD(g.name = B(""), PROTO_EPATH);
	BAD(g.target = B("x"), PROTO_EMALFORMED); /* a target on a file */
	BAD((g.type = PROTO_DIR, g.nblocks = 0, g.size = 0), 0);
	BAD((g.type = PROTO_DIR, g.nblocks = 0), PROTO_EMALFORMED); /* a dir with a size */
	BAD((g.type = PROTO_DIR, g.size = 0), PROTO_EMALFORMED);    /* a dir with blocks */
	BAD((g.type = PROTO_SYMLINK, g.nblocks = 0, g.size = 0), PROTO_EMALFORMED); /* no target */
	BAD((g.type = PROTO_SYMLINK, g.nblocks = 0, g.size = 0, g.target = B("t")), 0);
	BAD((g.type = PROTO_SYMLINK, g.nblocks = 0, g.size = 0,
	     g.target = (struct proto_bytes){(const uint8_t *)"a\0b", 3}),
	    PROTO_EMALFORMED);
	BAD((g.type = PROTO_SYMLINK, g.nblocks = 0, g.size = 0,
	     g.target = (struct proto_bytes){(const uint8_t *)long_target, PROTO_PATH_MAX + 1}),
	    PROTO_ETOOBIG);
	BAD(blocks[1].size = 0, PROTO_EMALFORMED);
	blocks[1].size = 1000;
	f.size = blocks[0].size + blocks[1].size + blocks[2].size;
	ASSERT_EQ(decode_file(&f), 0);
	BAD((blocks[1].size = PROTO_BLOCK_MAX + 1, g.size += PROTO_BLOCK_MAX + 1 - 1000),
	    PROTO_EMALFORMED);
	blocks[1].size = 1000;
	BAD(g.size = (uint64_t)INT64_MAX + 1, PROTO_EMALFORMED);

	{
		static struct proto_counter many[PROTO_MAX_VERSION + 1];

		BAD((g.nversion = PROTO_MAX_VERSION + 1, g.version = many), PROTO_ETOOBIG);
		BAD((g.nversion = PROTO_MAX_VERSION, g.version = many), 0);
	}
#undef BAD

	/* Requests. */
	ASSERT_EQ(decode_request(&rq), 0);
	rq.size = 0;
	ASSERT_EQ(decode_request(&rq), PROTO_EMALFORMED);
	rq.size = PROTO_BLOCK_MAX + 1;
	ASSERT_EQ(decode_request(&rq), PROTO_EMALFORMED);
	rq.size = PROTO_BLOCK_MAX;
	ASSERT_EQ(decode_request(&rq), 0);
	rq.offset = (uint64_t)INT64_MAX - PROTO_BLOCK_MAX + 1;
	ASSERT_EQ(decode_request(&rq), PROTO_EMALFORMED);
	rq.offset = 0;
	rq.name = B("/etc/passwd");
	ASSERT_EQ(decode_request(&rq), PROTO_EPATH);
	rq.name = B("a");
	rq.folder = B("");
	ASSERT_EQ(decode_request(&rq), PROTO_EMALFORMED);

	/* A hash must be exactly 32 bytes. */
	for (int n = 31; n <= 33; n += 2) {
		uint8_t raw[64] = {0x97, 0x04, 0x01, 0xa1, 'f',	      0xa1,
				   'a',	 0x00, 0x01, 0xc4, (uint8_t)n};

		ASSERT_EQ(proto_msg_decode(raw, 11 + (size_t)n, &m), PROTO_EMALFORMED);
	}

	/* A response code past the last one, an index whose last flag is 2. */
	{
		static const uint8_t resp[] = {0x94, 0x05, 0x01, 0x05, 0xc4, 0x00};
		static const uint8_t idx[] = {0x95, 0x02, 0xa1, 'f', 0x01, 0x02, 0x90};
		static const uint8_t idx_ok[] = {0x95, 0x02, 0xa1, 'f', 0x01, 0x01, 0x90};
		static const uint8_t neg[] = {0x95, 0x02, 0xa1, 'f', 0xff, 0x01, 0x90};

		ASSERT_EQ(proto_msg_decode(resp, sizeof(resp), &m), PROTO_EMALFORMED);
		ASSERT_EQ(proto_msg_decode(idx, sizeof(idx), &m), PROTO_EMALFORMED);
		ASSERT_EQ(proto_msg_decode(neg, sizeof(neg), &m), PROTO_EMALFORMED);
		ASSERT_EQ(proto_msg_decode(idx_ok, sizeof(idx_ok), &m), 0);
		proto_msg_release(&m);
	}

	/* A string one byte over its limit. */
	{
		struct proto_hello h = {
		    {(const uint8_t *)long_str, PROTO_STR_MAX + 1}, B(""), B(""), 0, NULL};

		memset(long_str, 'L', sizeof(long_str));
		proto_buf_init(&b);
		ASSERT_EQ(proto_encode_hello(&b, &h), 0);
		ASSERT_EQ(proto_msg_decode(b.p, b.len, &m), PROTO_ETOOBIG);
		proto_buf_release(&b);
	}
}

/* ---- paths ---- */

TEST(path_check)
{
	static char buf[8192];
	struct {
		const char *p;
		size_t len; /* 0: strlen */
		int want;
	} cases[] = {
	    {"..", 0, PROTO_EPATH},
	    {".", 0, PROTO_EPATH},
	    {"a/../../b", 0, PROTO_EPATH},
	    {"a/..", 0, PROTO_EPATH},
	    {"a/./b", 0, PROTO_EPATH},
	    {"/etc/passwd", 0, PROTO_EPATH},
	    {"a//b", 0, PROTO_EPATH},
	    {"a/", 0, PROTO_EPATH},
	    {"/", 0, PROTO_EPATH},
	    {"./a", 0, PROTO_EPATH},
	    {"a\0b", 3, PROTO_EPATH},
	    {"a\0", 2, PROTO_EPATH},
	    {"a\nb", 0, PROTO_EPATH},
	    {"a\tb", 0, PROTO_EPATH},
	    {"\x01", 0, PROTO_EPATH},
	    {"a\x1f", 0, PROTO_EPATH},
	    {"a\x7f", 0, PROTO_EPATH},
	    {".shoal-tmp", 0, PROTO_EPATH},
	    {".shoal", 0, PROTO_EPATH},
	    {"x/.shoal.foo", 0, PROTO_EPATH},
	    {"x/.shoal/y", 0, PROTO_EPATH},
	    {"\xc3", 0, PROTO_EPATH},		  /* truncated */
	    {"\xc3\x28", 0, PROTO_EPATH},	  /* bad continuation */
	    {"\x80", 0, PROTO_EPATH},		  /* a lone continuation byte */
	    {"\xc0\xaf", 0, PROTO_EPATH},	  /* overlong '/' */
	    {"\xc1\xbf", 0, PROTO_EPATH},	  /* overlong */
	    {"\xe0\x80\xaf", 0, PROTO_EPATH},	  /* overlong '/' */
	    {"\xe0\x9f\xbf", 0, PROTO_EPATH},	  /* overlong U+07FF */
	    {"\xf0\x80\x80\xaf", 0, PROTO_EPATH}, /* overlong '/' */
	    {"\xf0\x8f\xbf\xbf", 0, PROTO_EPATH}, /* overlong U+FFFF */
	    {"\xed\xa0\x80", 0, PROTO_EPATH},	  /* U+D800 */
	    {"\xed\xbf\xbf", 0, PROTO_EPATH},	  /* U+DFFF */
	    {"\xf4\x90\x80\x80", 0, PROTO_EPATH}, /* U+110000 */
	    {"\xf5\x80\x80\x80", 0, PROTO_EPATH},
	    {"\xff", 0, PROTO_EPATH},
	    {"", 0, PROTO_EPATH},
	    {"a", 0, 0},
	    {"a/b/c", 0, 0},
	    {"é/ü", 0, 0},
	    {"..a", 0, 0},
	    {"a..", 0, 0},
	    {"...", 0, 0},
	    {".hidden", 0, 0},
	    {".shoa", 0, 0},
	    {"x.shoal", 0, 0},
	    {"\xed\x9f\xbf", 0, 0},	/* U+D7FF */
	    {"\xee\x80\x80", 0, 0},	/* U+E000 */
	    {"\xf4\x8f\xbf\xbf", 0, 0}, /* U+10FFFF */
	    {"\xf0\x9f\x90\x9f", 0, 0}, /* a fish */
	    {"\xdf\xbf", 0, 0},		/* U+07FF */
	    {"a b/c-d_e~f", 0, 0},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t len = cases[i].len ? cases[i].len : strlen(cases[i].p);
		int rc = proto_path_check((const uint8_t *)cases[i].p, len);

		if (rc != cases[i].want) {
			test_hexdump("path", cases[i].p, len);
			TEST_FAIL("case %zu: got %d, want %d", i, rc, cases[i].want);
		}
	}

	/* Component lengths: 255 bytes pass, 256 do not. */
	memset(buf, 'c', sizeof(buf));
	ASSERT_EQ(proto_path_check((const uint8_t *)buf, PROTO_NAME_MAX), 0);
	ASSERT_EQ(proto_path_check((const uint8_t *)buf, PROTO_NAME_MAX + 1), PROTO_EPATH);
	buf[0] = 'a';
	buf[1] = '/';
	ASSERT_EQ(proto_path_check((const uint8_t *)buf, 2 + PROTO_NAME_MAX), 0);
	ASSERT_EQ(proto_path_check((const uint8_t *)buf, 2 + PROTO_NAME_MAX + 1), PROTO_EPATH);

	/* Path lengths: 4095 bytes pass, 4096 do not. */
	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (i % 100 == 99) ? '/' : 'p';
	buf[PROTO_PATH_MAX - 1] = 'p';
	ASSERT_EQ(proto_path_check((const uint8_t *)buf, PROTO_PATH_MAX), 0);
	buf[PROTO_PATH_MAX] = 'p';
	ASSERT_EQ(proto_path_check((const uint8_t *)buf, PROTO_PATH_MAX + 1), PROTO_EPATH);
}

/* ---- frames and fragments ---- */

TEST(frames)
{
	uint8_t buf[PROTO_FRAME_HDR + PROTO_FRAME_MAX + 1] = {0};
	const uint8_t *body = NULL;
	size_t body_len = 0;

	ASSERT_EQ(proto_frame_parse(buf, 0, &body, &body_len), 0);
	buf[0] = 0x00;
	ASSERT_EQ(proto_frame_parse(buf, 1, &body, &body_len), 0);
	buf[1] = 0x00;
	ASSERT_EQ(proto_frame_parse(buf, 2, &body, &body_len), PROTO_EMALFORMED);
	ASSERT_EQ(proto_frame_parse(buf, 10, &body, &body_len), PROTO_EMALFORMED);

	proto_frame_header(buf, 3);
	ASSERT_EQ(buf[0], 0);
	ASSERT_EQ(buf[1], 3);
	memcpy(buf + 2, "abcZ", 4);
	ASSERT_EQ(proto_frame_parse(buf, 2, &body, &body_len), 0);
	ASSERT_EQ(proto_frame_parse(buf, 4, &body, &body_len), 0);
	ASSERT_EQ(proto_frame_parse(buf, 5, &body, &body_len), 5);
	ASSERT(body == buf + 2);
	ASSERT_UEQ(body_len, 3);
	ASSERT_EQ(proto_frame_parse(buf, 6, &body, &body_len), 5); /* the next frame's byte */

	proto_frame_header(buf, PROTO_FRAME_MAX);
	ASSERT_EQ(buf[0], 0xff);
	ASSERT_EQ(buf[1], 0xff);
	ASSERT_EQ(proto_frame_parse(buf, PROTO_FRAME_HDR + PROTO_FRAME_MAX - 1, &body, &body_len),
		  0);
	ASSERT_EQ(proto_frame_parse(buf, sizeof(buf), &body, &body_len),
		  PROTO_FRAME_HDR + PROTO_FRAME_MAX);
	ASSERT_UEQ(body_len, PROTO_FRAME_MAX);

	proto_frame_header(buf, 0x1234);
	ASSERT_EQ(buf[0], 0x12);
	ASSERT_EQ(buf[1], 0x34);
}

TEST(assembler)
{
	static uint8_t frag[PROTO_FRAGMENT_MAX];
	static uint8_t want[3 * PROTO_FRAGMENT_MAX];
	struct proto_assembler a;
	const uint8_t *msg;
	size_t msg_len, off;

	proto_assembler_init(&a, 200000);

	/* A single-fragment message points into the input. */
	frag[0] = PROTO_FRAG_LAST;
	memcpy(frag + 1, "hello", 5);
	ASSERT_EQ(proto_assembler_push(&a, frag, 6, &msg, &msg_len), 1);
	ASSERT(msg == frag + 1);
	ASSERT_UEQ(msg_len, 5);
	ASSERT(a.buf == NULL);

	/* Three fragments of different sizes reassemble. */
	for (size_t i = 0; i < sizeof(want); i++)
		want[i] = (uint8_t)(rng() >> 11);
	off = 0;
	for (int i = 0; i < 3; i++) {
		size_t n = i == 0 ? PROTO_FRAGMENT_MAX - 1 : i == 1 ? 1 : 1000;
		int rc;

		frag[0] = i == 2 ? PROTO_FRAG_LAST : PROTO_FRAG_MORE;
		memcpy(frag + 1, want + off, n);
		off += n;
		rc = proto_assembler_push(&a, frag, n + 1, &msg, &msg_len);
		ASSERT_EQ(rc, i == 2 ? 1 : 0);
		ASSERT(a.cap <= 2 * off);
	}
	ASSERT_UEQ(msg_len, off);
	ASSERT_MEMEQ(msg, want, off);
	/* The assembler starts over: the next single fragment is zero copy again. */
	frag[0] = PROTO_FRAG_LAST;
	ASSERT_EQ(proto_assembler_push(&a, frag, 2, &msg, &msg_len), 1);
	ASSERT(msg == frag + 1);
	ASSERT_UEQ(msg_len, 1);

	/* Empty frames, a flag byte alone, and unknown flags are malformed. */
	ASSERT_EQ(proto_assembler_push(&a, frag, 0, &msg, &msg_len), PROTO_EMALFORMED);
	ASSERT_EQ(proto_assembler_push(&a, frag, 1, &msg, &msg_len), PROTO_EMALFORMED);
	frag[0] = 2;
	ASSERT_EQ(proto_assembler_push(&a, frag, 10, &msg, &msg_len), PROTO_EMALFORMED);
	frag[0] = 0xff;
	ASSERT_EQ(proto_assembler_push(&a, frag, 10, &msg, &msg_len), PROTO_EMALFORMED);
	proto_assembler_release(&a);

	/* Past max: PROTO_ETOOBIG, and memory never went beyond max. */
	proto_assembler_init(&a, 3 * PROTO_FRAGMENT_MAX / 2);
	frag[0] = PROTO_FRAG_MORE;
	ASSERT_EQ(proto_assembler_push(&a, frag, PROTO_FRAGMENT_MAX, &msg, &msg_len), 0);
	ASSERT_EQ(proto_assembler_push(&a, frag, PROTO_FRAGMENT_MAX, &msg, &msg_len),
		  PROTO_ETOOBIG);
	ASSERT(a.cap <= a.max);
	proto_assembler_release(&a);

	proto_assembler_init(&a, 10);
	frag[0] = PROTO_FRAG_LAST;
	ASSERT_EQ(proto_assembler_push(&a, frag, 11, &msg, &msg_len), 1);
	ASSERT_EQ(proto_assembler_push(&a, frag, 12, &msg, &msg_len), PROTO_ETOOBIG);
	frag[0] = PROTO_FRAG_MORE;
	ASSERT_EQ(proto_assembler_push(&a, frag, 6, &msg, &msg_len), 0);
	frag[0] = PROTO_FRAG_LAST;
	ASSERT_EQ(proto_assembler_push(&a, frag, 6, &msg, &msg_len), 1);
	ASSERT_UEQ(msg_len, 10);
	frag[0] = PROTO_FRAG_MORE;
	ASSERT_EQ(proto_assembler_push(&a, frag, 6, &msg, &msg_len), 0);
	ASSERT_EQ(proto_assembler_push(&a, frag, 7, &msg, &msg_len), PROTO_ETOOBIG);
	ASSERT(a.cap <= 10);
	proto_assembler_release(&a);
	proto_assembler_release(&a); /* twice is harmless */
}

/* ---- the rest ---- */

TEST(strerror)
{
	for (int rc = PROTO_EUNKNOWN; rc <= PROTO_EMALFORMED; rc++) {
		const char *s = proto_strerror(rc);

		ASSERT(s != NULL && *s != 0);
		ASSERT(strcmp(s, "unknown error") != 0);
	}
	ASSERT_STREQ(proto_strerror(-ENOENT), strerror(ENOENT));
	ASSERT_STREQ(proto_strerror(0), "success");
	ASSERT(proto_strerror(-999) != NULL && *proto_strerror(-999) != 0);
	ASSERT_STREQ(proto_strerror(-5000), "unknown error");
	ASSERT_STREQ(proto_strerror(7), "unknown error");
}

TEST(buf)
{
	struct proto_buf b;

	proto_buf_init(&b);
	ASSERT_EQ(proto_buf_append(&b, "", 0), 0);
	for (int i = 0; i < 10000; i++)
		ASSERT_EQ(proto_buf_append(&b, "abc", 3), 0);
	ASSERT_UEQ(b.len, 30000);
	ASSERT(b.cap >= b.len);
	ASSERT_MEMEQ(b.p + 29997, "abc", 3);
	ASSERT_EQ(proto_buf_reserve(&b, 100000), 0);
	ASSERT(b.cap - b.len >= 100000);
	ASSERT_EQ(proto_buf_reserve(&b, SIZE_MAX), PROTO_ENOMEM);
	proto_buf_reset(&b);
	ASSERT_UEQ(b.len, 0);
	proto_buf_release(&b);
	ASSERT(b.p == NULL);
}

/* Prints decode throughput for an index batch of 1000 files; asserts nothing about speed. */
TEST(perf_index)
{
	enum { NFILES = 1000, NBLK = 8, NVER = 3, ROUNDS = 200 };
	static struct proto_block blocks[NFILES][NBLK];
	static struct proto_counter version[NFILES][NVER];
	static char names[NFILES][64];
	static struct proto_file files[NFILES];
	struct proto_buf b;
	struct proto_msg m;
	struct timespec t0, t1;
	double s;

	for (int i = 0; i < NFILES; i++) {
		snprintf(names[i], sizeof(names[i]), "photos/2024/holiday/IMG_%06d.jpg", i);
		make_file(&files[i], names[i], blocks[i], 1 + (size_t)i % NBLK, version[i],
			  1 + (size_t)i % NVER);
	}
	proto_buf_init(&b);
	encode_index(&b, PROTO_INDEX, "abcd-1234", 1, 1, files, NFILES);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int r = 0; r < ROUNDS; r++) {
		ASSERT_EQ(proto_msg_decode(b.p, b.len, &m), 0);
		ASSERT_UEQ(m.u.index.nfiles, NFILES);
		proto_msg_release(&m);
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	printf("perf_index: %zu-byte batch of %d files, %.1f us per decode, %.0f MB/s, "
	       "%.2f M files/s\n",
	       b.len, NFILES, s / ROUNDS * 1e6, (double)b.len * ROUNDS / s / 1e6,
	       (double)NFILES * ROUNDS / s / 1e6);
	proto_buf_release(&b);
}

TEST_LIST_BEGIN
TEST_ENTRY(roundtrip_hello)
TEST_ENTRY(roundtrip_index)
TEST_ENTRY(roundtrip_small)
TEST_ENTRY(golden)
TEST_ENTRY(truncation)
TEST_ENTRY(bitflip)
TEST_ENTRY(hostile_counts)
TEST_ENTRY(depth)
TEST_ENTRY(forward_compat)
TEST_ENTRY(wrong_types)
TEST_ENTRY(ranges)
TEST_ENTRY(path_check)
TEST_ENTRY(frames)
TEST_ENTRY(assembler)
TEST_ENTRY(strerror)
TEST_ENTRY(buf)
TEST_ENTRY(perf_index)
TEST_LIST_END
