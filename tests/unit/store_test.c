/*
 * tests/unit/store_test.c - store/: the environment, numbering, the file
 * index and what is derived from it, map growth and stale readers.
 * Each case works in its own mkdtemp directory under /tmp and removes it.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <ftw.h>
#include <lmdb.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "store/store.h"
#include "test.h"

#define ASSERT_OK(expr)                                                                            \
	do {                                                                                       \
		int rc_ = (expr);                                                                  \
		if (rc_ != 0)                                                                      \
			TEST_FAIL("%s: %d (%s)", #expr, rc_, store_strerror(rc_));                 \
	} while (0)

static char tmpdir[64];

static void
tmp_make(void)
{
	strcpy(tmpdir, "/tmp/store_test.XXXXXX");
	ASSERT(mkdtemp(tmpdir) != NULL);
}

static int
rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void
tmp_remove(void)
{
	ASSERT_EQ(nftw(tmpdir, rm_one, 16, FTW_DEPTH | FTW_PHYS), 0);
}

static struct store *
open_store(void)
{
	struct store *s = NULL;

	ASSERT_OK(store_open(&s, tmpdir));
	ASSERT(s != NULL);
	return s;
}

/* ---- a generic write callback: runs a list of operations ---- */

enum op_kind { OP_PUT, OP_DEL, OP_DROP };

struct op {
	enum op_kind kind;
	uint32_t folder, dev;
	struct store_file *f;
	int want;
};

struct ops {
	struct op *v;
	size_t n;
};

static int
run_ops(struct store_txn *txn, void *arg)
{
	struct ops *o = arg;
	size_t i;
	int rc;

	for (i = 0; i < o->n; i++) {
		struct op *op = &o->v[i];

		if (op->kind == OP_PUT)
			rc = store_file_put(txn, op->folder, op->dev, op->f);
		else if (op->kind == OP_DEL)
			rc = store_file_del(txn, op->folder, op->dev, op->f->name, op->f->name_len);
		else
			rc = store_index_drop(txn, op->folder, op->dev);
		if (rc != op->want)
			TEST_FAIL("op %zu: %d (%s), want %d", i, rc, store_strerror(rc), op->want);
		if (rc)
			return rc;
	}
	return 0;
}

static void
put1(struct store *s, uint32_t folder, uint32_t dev, struct store_file *f)
{
	struct op op = {OP_PUT, folder, dev, f, 0};
	struct ops o = {&op, 1};

	ASSERT_OK(store_write(s, run_ops, &o));
}

static void
del1(struct store *s, uint32_t folder, uint32_t dev, struct store_file *f, int want)
{
	struct op op = {OP_DEL, folder, dev, f, want};
	struct ops o = {&op, 1};

	ASSERT_EQ(store_write(s, run_ops, &o), want);
}

static void
drop1(struct store *s, uint32_t folder, uint32_t dev)
{
	struct op op = {OP_DROP, folder, dev, NULL, 0};
	struct ops o = {&op, 1};

	ASSERT_OK(store_write(s, run_ops, &o));
}

/* A file entry whose contents follow from seed; blocks is caller storage. */
static void
make_file(struct store_file *f, const char *name, uint32_t type, uint32_t seed,
	  struct store_block *blocks, size_t nblocks, struct store_counter *ver, size_t nver)
{
	size_t i;

	memset(f, 0, sizeof(*f));
	f->name = name;
	f->name_len = strlen(name);
	f->type = type;
	f->mode = 0644 + seed % 8;
	f->mtime_s = 1700000000 + seed;
	f->mtime_ns = seed * 7;
	f->inode = 1000 + seed;
	f->ctime_s = -5 - (int64_t)seed;
	f->ctime_ns = seed * 11;
	f->block_size = 128 * 1024;
	for (i = 0; i < nblocks; i++) {
		memset(blocks[i].hash, 0, 32);
		blocks[i].hash[0] = (uint8_t)seed;
		blocks[i].hash[1] = (uint8_t)(seed >> 8);
		blocks[i].hash[2] = (uint8_t)i;
		blocks[i].hash[3] = (uint8_t)(i >> 8);
		blocks[i].hash[31] = 0xa5;
		blocks[i].size = 1000 + (uint32_t)i;
		f->size += blocks[i].size;
	}
	f->blocks = nblocks ? blocks : NULL;
	f->nblocks = nblocks;
	for (i = 0; i < nver; i++) {
		ver[i].id = 0x1111111111111111ULL * (i + 1);
		ver[i].value = seed + i;
	}
	f->version = nver ? ver : NULL;
	f->nversion = nver;
}

static void
assert_same_file(const struct store_file *a, const struct store_file *b, int with_blocks)
{
	size_t i;

	ASSERT_UEQ(a->name_len, b->name_len);
	ASSERT_MEMEQ(a->name, b->name, a->name_len);
	ASSERT_UEQ(a->type, b->type);
	ASSERT_UEQ(a->flags, b->flags);
	ASSERT_UEQ(a->mode, b->mode);
	ASSERT_UEQ(a->size, b->size);
	ASSERT_EQ(a->mtime_s, b->mtime_s);
	ASSERT_UEQ(a->mtime_ns, b->mtime_ns);
	ASSERT_UEQ(a->sequence, b->sequence);
	ASSERT_UEQ(a->inode, b->inode);
	ASSERT_EQ(a->ctime_s, b->ctime_s);
	ASSERT_UEQ(a->ctime_ns, b->ctime_ns);
	ASSERT_UEQ(a->block_size, b->block_size);
	ASSERT_UEQ(a->target_len, b->target_len);
	if (a->target_len)
		ASSERT_MEMEQ(a->target, b->target, a->target_len);
	ASSERT_UEQ(a->nversion, b->nversion);
	for (i = 0; i < a->nversion; i++) {
		ASSERT_UEQ(a->version[i].id, b->version[i].id);
		ASSERT_UEQ(a->version[i].value, b->version[i].value);
	}
	if (!with_blocks)
		return;
	ASSERT_UEQ(a->nblocks, b->nblocks);
	for (i = 0; i < a->nblocks; i++) {
		ASSERT_MEMEQ(a->blocks[i].hash, b->blocks[i].hash, 32);
		ASSERT_UEQ(a->blocks[i].size, b->blocks[i].size);
	}
}

static void
check_get(struct store *s, uint32_t folder, uint32_t dev, const struct store_file *want)
{
	struct store_txn *txn;
	struct store_file got;

	ASSERT_OK(store_read_begin(s, &txn));
	ASSERT_OK(store_file_get(txn, folder, dev, want->name, want->name_len, 1, &got));
	assert_same_file(want, &got, 1);
	store_file_release(&got);
	ASSERT_OK(store_file_get(txn, folder, dev, want->name, want->name_len, 0, &got));
	ASSERT_UEQ(got.nblocks, 0);
	ASSERT(got.blocks == NULL);
	assert_same_file(want, &got, 0);
	store_file_release(&got);
	store_read_end(txn);
}

static int
get_rc(struct store *s, uint32_t folder, uint32_t dev, const char *name, size_t len)
{
	struct store_txn *txn;
	struct store_file got;
	int rc;

	ASSERT_OK(store_read_begin(s, &txn));
	rc = store_file_get(txn, folder, dev, name, len, 1, &got);
	store_file_release(&got);
	store_read_end(txn);
	return rc;
}

static struct store_checkpoint
get_cp(struct store *s, uint32_t folder, uint32_t dev)
{
	struct store_checkpoint cp;
	struct store_txn *txn;

	ASSERT_OK(store_read_begin(s, &txn));
	ASSERT_OK(store_checkpoint_get(txn, folder, dev, &cp));
	store_read_end(txn);
	return cp;
}

/* ---- open, close, schema ---- */

static int
put_meta(struct store_txn *txn, void *arg)
{
	const char *val = arg;

	return store_meta_put(txn, "greeting", val, strlen(val));
}

static int
put_schema(struct store_txn *txn, void *arg)
{
	uint8_t v[4] = {2, 0, 0, 0};

	(void)arg;
	return store_meta_put(txn, "schema", v, sizeof(v));
}

TEST(open_reopen)
{
	struct store *s;
	struct store_txn *txn;
	struct stat st;
	char buf[32], path[128];
	size_t len;

	tmp_make();
	s = open_store();
	snprintf(path, sizeof(path), "%s/index.lmdb", tmpdir);
	ASSERT_EQ(stat(path, &st), 0);
	ASSERT(S_ISDIR(st.st_mode));
	ASSERT_UEQ(st.st_mode & 0777, 0700);
	ASSERT_OK(store_write(s, put_meta, "hello"));
	store_close(s);

	s = open_store();
	ASSERT_OK(store_read_begin(s, &txn));
	ASSERT_OK(store_meta_get(txn, "greeting", buf, sizeof(buf), &len));
	ASSERT_UEQ(len, 5);
	ASSERT_MEMEQ(buf, "hello", 5);
	ASSERT_EQ(store_meta_get(txn, "greeting", buf, 2, &len), STORE_EINVAL);
	ASSERT_UEQ(len, 5);
	ASSERT_EQ(store_meta_get(txn, "nothing", buf, sizeof(buf), &len), STORE_ENOTFOUND);
	store_read_end(txn);
	store_close(s);

	/* Read-only: reads work, writes are refused. (LMDB forbids opening one
	 * environment twice in a process, so this is not next to the other.) */
	ASSERT_OK(store_open_readonly(&s, tmpdir));
	ASSERT_OK(store_read_begin(s, &txn));
	ASSERT_OK(store_meta_get(txn, "greeting", buf, sizeof(buf), &len));
	ASSERT_UEQ(len, 5);
	store_read_end(txn);
	ASSERT_EQ(store_write(s, put_meta, "x"), STORE_EINVAL);
	store_close(s);
	tmp_remove();
}

TEST(schema_mismatch)
{
	struct store *s;

	tmp_make();
	s = open_store();
	ASSERT_OK(store_write(s, put_schema, NULL));
	store_close(s);
	s = (struct store *)1;
	ASSERT_EQ(store_open(&s, tmpdir), STORE_EVERSION);
	ASSERT(s == NULL);
	ASSERT_EQ(store_open_readonly(&s, tmpdir), STORE_EVERSION);
	tmp_remove();
}

TEST(readonly_missing)
{
	struct store *s = NULL;
	char path[128];
	struct stat st;

	tmp_make();
	snprintf(path, sizeof(path), "%s/nothing", tmpdir);
	ASSERT_EQ(store_open_readonly(&s, path), -ENOENT);
	ASSERT(s == NULL);
	ASSERT_EQ(stat(path, &st), -1);
	/* An existing state dir without an index is not touched either. */
	ASSERT_EQ(store_open_readonly(&s, tmpdir), -ENOENT);
	snprintf(path, sizeof(path), "%s/index.lmdb", tmpdir);
	ASSERT_EQ(stat(path, &st), -1);
	/* store_open does not create the state dir itself. */
	snprintf(path, sizeof(path), "%s/nothing", tmpdir);
	ASSERT_EQ(store_open(&s, path), -ENOENT);
	ASSERT_NE(stat(path, &st), 0);
	tmp_remove();
}

/* ---- numbering ---- */

struct nums {
	uint32_t f[3], d[3];
};

static const uint8_t dev_a[32] = {1, 2, 3}, dev_b[32] = {9, 9, 9}, dev_c[32] = {0xff};

static int
number_all(struct store_txn *txn, void *arg)
{
	struct nums *n = arg;
	int rc = 0;

	rc = rc ? rc : store_folder_num(txn, "default", 1, &n->f[0]);
	rc = rc ? rc : store_folder_num(txn, "photos-abcd", 1, &n->f[1]);
	rc = rc ? rc : store_folder_num(txn, "default", 1, &n->f[2]);
	rc = rc ? rc : store_device_num(txn, dev_a, 1, &n->d[0]);
	rc = rc ? rc : store_device_num(txn, dev_b, 1, &n->d[1]);
	rc = rc ? rc : store_device_num(txn, dev_a, 1, &n->d[2]);
	return rc;
}

TEST(numbering)
{
	struct store *s;
	struct store_txn *txn;
	struct nums n;
	uint32_t num;

	tmp_make();
	s = open_store();
	ASSERT_OK(store_write(s, number_all, &n));
	ASSERT_UEQ(n.f[0], 1);
	ASSERT_UEQ(n.f[1], 2);
	ASSERT_UEQ(n.f[2], 1);
	ASSERT_UEQ(n.d[0], 1); /* peers start at 1: 0 is the local device */
	ASSERT_UEQ(n.d[1], 2);
	ASSERT_UEQ(n.d[2], 1);
	store_close(s);

	s = open_store();
	ASSERT_OK(store_read_begin(s, &txn));
	ASSERT_OK(store_folder_num(txn, "photos-abcd", 0, &num));
	ASSERT_UEQ(num, 2);
	ASSERT_OK(store_device_num(txn, dev_b, 0, &num));
	ASSERT_UEQ(num, 2);
	ASSERT_EQ(store_folder_num(txn, "unknown", 0, &num), STORE_ENOTFOUND);
	ASSERT_EQ(store_device_num(txn, dev_c, 0, &num), STORE_ENOTFOUND);
	ASSERT_EQ(store_device_num(txn, dev_c, 1, &num), STORE_EINVAL); /* read txn */
	store_read_end(txn);
	/* Numbering again after reopen gives the same numbers, new ones continue. */
	ASSERT_OK(store_write(s, number_all, &n));
	ASSERT_UEQ(n.f[0], 1);
	ASSERT_UEQ(n.f[1], 2);
	ASSERT_UEQ(n.d[0], 1);
	ASSERT_UEQ(n.d[1], 2);
	store_close(s);
	tmp_remove();
}

/* ---- round trips ---- */

TEST(roundtrip)
{
	static struct store_block blocks[3000];
	struct store_counter ver[5][40];
	struct store_file f[5];
	struct store *s;
	struct op ops[5];
	struct ops o = {ops, 0};
	size_t i;

	tmp_make();
	s = open_store();
	make_file(&f[0], "a/regular.txt", STORE_FILE, 1, blocks, 3000, ver[0], 40);
	make_file(&f[1], "a", STORE_DIR, 2, NULL, 0, ver[1], 3);
	f[1].mode = 0755;
	make_file(&f[2], "a/link", STORE_SYMLINK, 3, NULL, 0, ver[2], 1);
	f[2].target = "../elsewhere/target";
	f[2].target_len = strlen(f[2].target);
	make_file(&f[3], "gone.bin", STORE_FILE, 4, NULL, 0, ver[3], 2);
	f[3].flags = STORE_FLAG_DELETED;
	make_file(&f[4], "empty", STORE_FILE, 5, NULL, 0, NULL, 0);
	f[4].flags = STORE_FLAG_INVALID | STORE_FLAG_LOCALCHANGE;
	for (i = 0; i < 5; i++)
		ops[o.n++] = (struct op){OP_PUT, 1, STORE_LOCAL, &f[i], 0};
	ASSERT_OK(store_write(s, run_ops, &o));
	for (i = 0; i < 5; i++)
		ASSERT_UEQ(f[i].sequence, i + 1);
	store_close(s);

	s = open_store();
	for (i = 0; i < 5; i++)
		check_get(s, 1, STORE_LOCAL, &f[i]);
	ASSERT_EQ(get_rc(s, 1, 3, f[0].name, f[0].name_len), STORE_ENOTFOUND);
	ASSERT_EQ(get_rc(s, 2, STORE_LOCAL, f[0].name, f[0].name_len), STORE_ENOTFOUND);
	ASSERT_EQ(get_rc(s, 1, STORE_LOCAL, "a/regular.tx", 12), STORE_ENOTFOUND);
	ASSERT_EQ(get_rc(s, 1, STORE_LOCAL, "a\0b", 3), STORE_EINVAL);

	/* The same records under a peer, with the peer's sequence numbers. */
	for (i = 0; i < 5; i++) {
		f[i].sequence = 100 + i * 10;
		put1(s, 1, 3, &f[i]);
		ASSERT_UEQ(f[i].sequence, 100 + i * 10);
	}
	for (i = 0; i < 5; i++)
		check_get(s, 1, 3, &f[i]);
	ASSERT_UEQ(get_cp(s, 1, 3).max_seq, 140);
	store_close(s);

	/* store_file_release: safe on zeroed structs and twice. */
	{
		struct store_file z;

		memset(&z, 0, sizeof(z));
		store_file_release(&z);
		store_file_release(&z);
		store_file_release(NULL);
	}
	tmp_remove();
}

struct get_put {
	const char *name;
	size_t len;
};

/* Reads an entry and puts it back unchanged in the same write transaction. */
static int
reput(struct store_txn *txn, void *arg)
{
	struct get_put *gp = arg;
	struct store_file f;
	int rc;

	rc = store_file_get(txn, 1, STORE_LOCAL, gp->name, gp->len, 1, &f);
	if (rc)
		return rc;
	rc = store_file_put(txn, 1, STORE_LOCAL, &f);
	store_file_release(&f);
	return rc;
}

static char *
long_name(size_t len, char tail)
{
	char *p = malloc(len + 1);
	size_t i;

	ASSERT(p != NULL);
	for (i = 0; i < len; i++)
		p[i] = (char)('a' + i % 26);
	p[len - 1] = tail;
	p[len] = 0;
	return p;
}

struct order_check {
	char *last;
	size_t last_len, n;
};

/* Every name must come after the one before in store_name_order(). */
static int
check_order(const struct store_file *f, void *arg)
{
	struct order_check *o = arg;

	if (o->last) {
		ASSERT(store_name_order(o->last, o->last_len, f->name, f->name_len) < 0);
		ASSERT(store_name_order(f->name, f->name_len, o->last, o->last_len) > 0);
		free(o->last);
	}
	ASSERT_EQ(store_name_order(f->name, f->name_len, f->name, f->name_len), 0);
	o->last = malloc(f->name_len);
	ASSERT(o->last != NULL);
	memcpy(o->last, f->name, f->name_len);
	o->last_len = f->name_len;
	o->n++;
	return 0;
}

static int
collect_names(const struct store_file *f, void *arg)
{
	size_t *n = arg;

	(void)f;
	(*n)++;
	return 0;
}

/* Both iterations of folder 1's local index see want entries. */
static void
count_both(struct store_txn *txn, int with_blocks, size_t want)
{
	size_t n = 0;

	ASSERT_OK(store_files_each(txn, 1, STORE_LOCAL, NULL, 0, with_blocks, collect_names, &n));
	ASSERT_UEQ(n, want);
	n = 0;
	ASSERT_OK(store_seq_each(txn, 1, STORE_LOCAL, 0, with_blocks, collect_names, &n));
	ASSERT_UEQ(n, want);
}

TEST(long_names)
{
	struct store_block blocks[5][4];
	struct store_counter ver[5][2];
	struct store_file f[5];
	char *names[5];
	struct store *s;
	struct store_txn *txn;
	size_t i;
	struct get_put gp;

	tmp_make();
	s = open_store();
	names[0] = long_name(401, 'x');
	names[1] = long_name(4000, 'y');
	names[2] = long_name(4000, 'z'); /* shares 3999 bytes with names[1] */
	names[3] = long_name(400, 'w');	 /* the longest name keyed as itself */
	names[4] = long_name(381, 'v');	 /* the prefix of the long ones, and more */
	for (i = 0; i < 5; i++) {
		make_file(&f[i], names[i], STORE_FILE, (uint32_t)i, blocks[i], 4, ver[i], 2);
		put1(s, 1, STORE_LOCAL, &f[i]);
	}
	store_close(s);
	s = open_store();
	for (i = 0; i < 5; i++)
		check_get(s, 1, STORE_LOCAL, &f[i]);
	ASSERT_EQ(get_rc(s, 1, STORE_LOCAL, names[1], 3999), STORE_ENOTFOUND);
	ASSERT_EQ(get_cp(s, 1, STORE_LOCAL).files, 5);

	/* A re-put of a long name replaces, it does not add. */
	gp.name = names[2];
	gp.len = 4000;
	ASSERT_OK(store_write(s, reput, &gp));
	ASSERT_EQ(get_cp(s, 1, STORE_LOCAL).files, 5);
	ASSERT_OK(store_read_begin(s, &txn));
	count_both(txn, 0, 5);
	{
		/* store_name_order() is the order of the iteration, long names included. */
		struct order_check o = {0};
		ASSERT_OK(store_files_each(txn, 1, STORE_LOCAL, NULL, 0, 0, check_order, &o));
		ASSERT_UEQ(o.n, 5);
		free(o.last);
		/* Not byte order: a long name sorts before a shorter one with its first 380 bytes. */
		char *mid = long_name(385, 'a');
		ASSERT(memcmp(mid, names[0], 385) < 0);
		ASSERT(store_name_order(mid, 385, names[0], 401) > 0);
		free(mid);
		ASSERT(store_name_order("a", 1, "a/x", 3) < 0);
		ASSERT(store_name_order("b", 1, "a/x", 3) > 0);
	}
	store_read_end(txn);

	/* Deleting one of the pair leaves the other. */
	del1(s, 1, STORE_LOCAL, &f[1], 0);
	ASSERT_EQ(get_rc(s, 1, STORE_LOCAL, names[1], 4000), STORE_ENOTFOUND);
	check_get(s, 1, STORE_LOCAL, &f[2]);
	del1(s, 1, STORE_LOCAL, &f[1], STORE_ENOTFOUND);
	ASSERT_EQ(get_cp(s, 1, STORE_LOCAL).files, 4);

	/* Too long, empty or NUL-carrying names are refused. */
	{
		char *huge = long_name(STORE_NAME_MAX + 1, 'q');
		struct store_file bad;
		struct op op = {OP_PUT, 1, STORE_LOCAL, &bad, STORE_EINVAL};
		struct ops o = {&op, 1};

		make_file(&bad, huge, STORE_FILE, 9, NULL, 0, NULL, 0);
		ASSERT_EQ(store_write(s, run_ops, &o), STORE_EINVAL);
		bad.name_len = 0;
		ASSERT_EQ(store_write(s, run_ops, &o), STORE_EINVAL);
		bad.name = "a\0b";
		bad.name_len = 3;
		ASSERT_EQ(store_write(s, run_ops, &o), STORE_EINVAL);
		free(huge);
	}
	store_close(s);
	for (i = 0; i < 5; i++)
		free(names[i]);
	tmp_remove();
}

/* ---- sequences ---- */

struct seen {
	char names[16][16];
	uint64_t seqs[16];
	size_t n;
	size_t stop_after; /* 0: never */
	int fail;
};

static int
record(const struct store_file *f, void *arg)
{
	struct seen *s = arg;

	ASSERT(s->n < 16);
	ASSERT(f->name_len < 16);
	memcpy(s->names[s->n], f->name, f->name_len);
	s->names[s->n][f->name_len] = 0;
	s->seqs[s->n] = f->sequence;
	s->n++;
	if (s->fail && s->n == s->stop_after)
		return s->fail;
	return s->stop_after && s->n == s->stop_after ? 1 : 0;
}

static struct seen
seq_list(struct store *s, uint32_t folder, uint32_t dev, uint64_t after)
{
	struct store_txn *txn;
	struct seen seen;

	memset(&seen, 0, sizeof(seen));
	ASSERT_OK(store_read_begin(s, &txn));
	ASSERT_OK(store_seq_each(txn, folder, dev, after, 1, record, &seen));
	store_read_end(txn);
	return seen;
}

TEST(sequence)
{
	static const char *const names[] = {"c", "a", "b", "d"};
	struct store_file f[4];
	struct store *s;
	struct store_checkpoint cp;
	struct seen seen;
	size_t i;

	tmp_make();
	s = open_store();
	for (i = 0; i < 4; i++) {
		make_file(&f[i], names[i], STORE_FILE, (uint32_t)i, NULL, 0, NULL, 0);
		put1(s, 1, STORE_LOCAL, &f[i]);
		ASSERT_UEQ(f[i].sequence, i + 1);
	}
	cp = get_cp(s, 1, STORE_LOCAL);
	ASSERT_UEQ(cp.max_seq, 4);

	/* From checkpoint 2: entries with sequence 3 and 4, in sequence order. */
	seen = seq_list(s, 1, STORE_LOCAL, 2);
	ASSERT_UEQ(seen.n, 2);
	ASSERT_STREQ(seen.names[0], "b");
	ASSERT_UEQ(seen.seqs[0], 3);
	ASSERT_STREQ(seen.names[1], "d");
	ASSERT_UEQ(seen.seqs[1], 4);

	/* Re-put "c" (sequence 1) with sequence 0: it moves to 5. */
	f[0].sequence = 0;
	f[0].mtime_s++;
	put1(s, 1, STORE_LOCAL, &f[0]);
	ASSERT_UEQ(f[0].sequence, 5);
	seen = seq_list(s, 1, STORE_LOCAL, 0);
	ASSERT_UEQ(seen.n, 4);
	ASSERT_STREQ(seen.names[0], "a");
	ASSERT_UEQ(seen.seqs[0], 2);
	ASSERT_STREQ(seen.names[3], "c");
	ASSERT_UEQ(seen.seqs[3], 5);
	seen = seq_list(s, 1, STORE_LOCAL, 4);
	ASSERT_UEQ(seen.n, 1);
	ASSERT_STREQ(seen.names[0], "c");
	check_get(s, 1, STORE_LOCAL, &f[0]);

	/* A no-change put keeping its sequence keeps its place. */
	put1(s, 1, STORE_LOCAL, &f[0]);
	ASSERT_UEQ(f[0].sequence, 5);
	ASSERT_UEQ(seq_list(s, 1, STORE_LOCAL, 0).n, 4);
	ASSERT_UEQ(get_cp(s, 1, STORE_LOCAL).max_seq, 5);

	/* Deleting removes the sequence key; max_seq stays. */
	del1(s, 1, STORE_LOCAL, &f[1], 0);
	seen = seq_list(s, 1, STORE_LOCAL, 0);
	ASSERT_UEQ(seen.n, 3);
	ASSERT_STREQ(seen.names[0], "b");
	ASSERT_UEQ(get_cp(s, 1, STORE_LOCAL).max_seq, 5);
	make_file(&f[1], "a", STORE_FILE, 7, NULL, 0, NULL, 0);
	put1(s, 1, STORE_LOCAL, &f[1]);
	ASSERT_UEQ(f[1].sequence, 6);

	/* Peers: sequences are theirs; max_seq rises to the highest. */
	f[2].sequence = 50;
	put1(s, 1, 2, &f[2]);
	f[3].sequence = 20;
	put1(s, 1, 2, &f[3]);
	ASSERT_UEQ(get_cp(s, 1, 2).max_seq, 50);
	seen = seq_list(s, 1, 2, 0);
	ASSERT_UEQ(seen.n, 2);
	ASSERT_STREQ(seen.names[0], "d");
	ASSERT_STREQ(seen.names[1], "b");
	ASSERT_UEQ(seq_list(s, 1, 2, 20).n, 1);
	ASSERT_UEQ(seq_list(s, 1, 2, 50).n, 0);
	ASSERT_UEQ(seq_list(s, 1, 2, UINT64_MAX).n, 0);
	/* The local index is untouched by the peer's. */
	ASSERT_UEQ(seq_list(s, 1, STORE_LOCAL, 0).n, 4);

	/* A peer's entry taking a sequence another entry holds, or 0, is refused. */
	{
		struct store_file g;
		struct op op = {OP_PUT, 1, 2, &g, STORE_EINVAL};
		struct ops o = {&op, 1};

		make_file(&g, "zz", STORE_FILE, 8, NULL, 0, NULL, 0);
		g.sequence = 50;
		ASSERT_EQ(store_write(s, run_ops, &o), STORE_EINVAL);
		g.sequence = 0;
		ASSERT_EQ(store_write(s, run_ops, &o), STORE_EINVAL);
		ASSERT_EQ(get_rc(s, 1, 2, "zz", 2), STORE_ENOTFOUND);
		ASSERT_UEQ(seq_list(s, 1, 2, 0).n, 2);
	}
	store_close(s);
	tmp_remove();
}

/* ---- block map ---- */

struct hit {
	uint32_t folder;
	char name[64];
	uint64_t offset;
	uint32_t size;
};

struct hits {
	struct hit v[8];
	size_t n;
};

static int
on_block(uint32_t folder, const char *name, size_t len, uint64_t offset, uint32_t size, void *arg)
{
	struct hits *h = arg;

	ASSERT(h->n < 8);
	ASSERT(len < 64);
	h->v[h->n].folder = folder;
	memcpy(h->v[h->n].name, name, len);
	h->v[h->n].name[len] = 0;
	h->v[h->n].offset = offset;
	h->v[h->n].size = size;
	h->n++;
	return 0;
}

static struct hits
find_block(struct store *s, const uint8_t hash[32])
{
	struct store_txn *txn;
	struct hits h;

	memset(&h, 0, sizeof(h));
	ASSERT_OK(store_read_begin(s, &txn));
	ASSERT_OK(store_block_each(txn, hash, on_block, &h));
	store_read_end(txn);
	return h;
}

TEST(block_map)
{
	struct store_block b1[10], b2[10], b3[3], b4[10];
	struct store_file f, g, r;
	struct store *s;
	struct hits h;
	uint64_t off;
	size_t i;

	tmp_make();
	s = open_store();
	make_file(&f, "data.bin", STORE_FILE, 1, b1, 10, NULL, 0);
	put1(s, 7, STORE_LOCAL, &f);
	for (i = 0, off = 0; i < 10; i++) {
		h = find_block(s, b1[i].hash);
		ASSERT_UEQ(h.n, 1);
		ASSERT_UEQ(h.v[0].folder, 7);
		ASSERT_STREQ(h.v[0].name, "data.bin");
		ASSERT_UEQ(h.v[0].offset, off);
		ASSERT_UEQ(h.v[0].size, b1[i].size);
		off += b1[i].size;
	}

	/* A second local file sharing block 3 (at another offset). */
	make_file(&g, "copy.bin", STORE_FILE, 2, b3, 3, NULL, 0);
	b3[2] = b1[3];
	put1(s, 8, STORE_LOCAL, &g);
	h = find_block(s, b1[3].hash);
	ASSERT_UEQ(h.n, 2);
	ASSERT_UEQ(h.v[0].folder + h.v[1].folder, 15);
	for (i = 0; i < 2; i++)
		if (h.v[i].folder == 8)
			ASSERT_UEQ(h.v[i].offset, (uint64_t)b3[0].size + b3[1].size);

	/* Replace f: first 5 blocks kept, the rest new; one inserted block shifts offsets. */
	make_file(&f, "data.bin", STORE_FILE, 3, b2, 10, NULL, 0);
	for (i = 0; i < 5; i++)
		b2[i] = b1[i];
	b2[5].size = 7; /* b2[5] is new; b2[6..9] new too */
	put1(s, 7, STORE_LOCAL, &f);
	for (i = 5; i < 10; i++)
		ASSERT_UEQ(find_block(s, b1[i].hash).n, 0);
	for (i = 0, off = 0; i < 10; i++) {
		h = find_block(s, b2[i].hash);
		ASSERT_UEQ(h.n, i == 3 ? 2 : 1);
		ASSERT_UEQ(h.v[h.v[0].folder == 7 ? 0 : 1].offset, off);
		off += b2[i].size;
	}

	/* Remote devices' blocks are not in the map. */
	make_file(&r, "remote.bin", STORE_FILE, 4, b4, 10, NULL, 0);
	r.sequence = 1;
	put1(s, 7, 1, &r);
	for (i = 0; i < 10; i++)
		ASSERT_UEQ(find_block(s, b4[i].hash).n, 0);
	memcpy(b4, b2, sizeof(b4));
	r.sequence = 2;
	put1(s, 7, 1, &r);
	for (i = 0; i < 10; i++)
		ASSERT_UEQ(find_block(s, b2[i].hash).n, i == 3 ? 2 : 1);

	/* Delete: gone; the other file's entry stays. */
	del1(s, 7, STORE_LOCAL, &f, 0);
	for (i = 0; i < 10; i++)
		ASSERT_UEQ(find_block(s, b2[i].hash).n, i == 3 ? 1 : 0);
	h = find_block(s, b1[3].hash);
	ASSERT_STREQ(h.v[0].name, "copy.bin");

	/* A tombstone with no blocks clears the map too; index drop of dev 0 as well. */
	put1(s, 7, STORE_LOCAL, &f);
	ASSERT_UEQ(find_block(s, b2[9].hash).n, 1);
	drop1(s, 7, STORE_LOCAL);
	ASSERT_UEQ(find_block(s, b2[9].hash).n, 0);
	ASSERT_UEQ(find_block(s, b1[3].hash).n, 1);
	g.sequence = 0;
	g.flags = STORE_FLAG_DELETED;
	g.blocks = NULL;
	g.nblocks = 0;
	put1(s, 8, STORE_LOCAL, &g);
	ASSERT_UEQ(find_block(s, b1[3].hash).n, 0);
	ASSERT_UEQ(find_block(s, b3[0].hash).n, 0);
	store_close(s);
	tmp_remove();
}

/* ---- counts ---- */

#define ASSERT_CP(cp, f, b, d)                                                                     \
	do {                                                                                       \
		ASSERT_UEQ((cp).files, f);                                                         \
		ASSERT_UEQ((cp).bytes, b);                                                         \
		ASSERT_UEQ((cp).deleted, d);                                                       \
	} while (0)

static int
set_index_id(struct store_txn *txn, void *arg)
{
	struct store_checkpoint cp;
	int rc;

	(void)arg;
	rc = store_checkpoint_get(txn, 1, 2, &cp);
	if (rc)
		return rc;
	cp.index_id = 0xfeedface;
	return store_checkpoint_put(txn, 1, 2, &cp);
}

TEST(counts)
{
	struct store_file f[3];
	struct store *s;
	struct store_checkpoint cp;
	uint32_t dev;

	tmp_make();
	s = open_store();
	for (dev = 0; dev < 3; dev += 2) {
		make_file(&f[0], "one", STORE_FILE, 1, NULL, 0, NULL, 0);
		f[0].size = 100;
		make_file(&f[1], "two", STORE_FILE, 2, NULL, 0, NULL, 0);
		f[1].size = 20;
		make_file(&f[2], "dir", STORE_DIR, 3, NULL, 0, NULL, 0);
		if (dev) {
			f[0].sequence = 10;
			f[1].sequence = 11;
			f[2].sequence = 12;
		}
		put1(s, 1, dev, &f[0]);
		put1(s, 1, dev, &f[1]);
		put1(s, 1, dev, &f[2]);
		ASSERT_CP(get_cp(s, 1, dev), 3, 120, 0);
		/* Replacement: the new size counts instead of the old. */
		f[0].size = 1000;
		f[0].sequence = dev ? 13 : 0;
		put1(s, 1, dev, &f[0]);
		ASSERT_CP(get_cp(s, 1, dev), 3, 1020, 0);
		/* Same record again: nothing changes. */
		put1(s, 1, dev, &f[0]);
		ASSERT_CP(get_cp(s, 1, dev), 3, 1020, 0);
		/* Tombstone. */
		f[1].flags = STORE_FLAG_DELETED;
		f[1].size = 0;
		f[1].sequence = dev ? 14 : 0;
		put1(s, 1, dev, &f[1]);
		ASSERT_CP(get_cp(s, 1, dev), 2, 1000, 1);
		/* Tombstone revived. */
		f[1].flags = 0;
		f[1].size = 5;
		f[1].sequence = dev ? 15 : 0;
		put1(s, 1, dev, &f[1]);
		ASSERT_CP(get_cp(s, 1, dev), 3, 1005, 0);
		f[1].flags = STORE_FLAG_DELETED;
		f[1].sequence = dev ? 16 : 0;
		put1(s, 1, dev, &f[1]);
		/* Delete a live entry and a tombstone. */
		del1(s, 1, dev, &f[0], 0);
		ASSERT_CP(get_cp(s, 1, dev), 1, 0, 1);
		del1(s, 1, dev, &f[1], 0);
		ASSERT_CP(get_cp(s, 1, dev), 1, 0, 0);
	}
	/* Other (folder, dev) pairs are apart. */
	ASSERT_CP(get_cp(s, 1, 1), 0, 0, 0);
	ASSERT_CP(get_cp(s, 2, 0), 0, 0, 0);

	/* Index drop: everything of (1, 2) goes, the checkpoint reads zero. */
	ASSERT_OK(store_write(s, set_index_id, NULL));
	cp = get_cp(s, 1, 2);
	ASSERT_UEQ(cp.index_id, 0xfeedface);
	ASSERT_UEQ(cp.max_seq, 16);
	drop1(s, 1, 2);
	cp = get_cp(s, 1, 2);
	ASSERT_CP(cp, 0, 0, 0);
	ASSERT_UEQ(cp.max_seq, 0);
	ASSERT_UEQ(cp.index_id, 0);
	ASSERT_EQ(get_rc(s, 1, 2, "dir", 3), STORE_ENOTFOUND);
	ASSERT_UEQ(seq_list(s, 1, 2, 0).n, 0);
	/* The local index of the folder is still there. */
	ASSERT_CP(get_cp(s, 1, 0), 1, 0, 0);
	ASSERT_UEQ(seq_list(s, 1, 0, 0).n, 1);
	store_close(s);
	tmp_remove();
}

/* ---- map growth ---- */

struct batch {
	uint32_t first, n;
	size_t nblocks;
	int calls;
};

static int
put_batch(struct store_txn *txn, void *arg)
{
	struct batch *b = arg;
	static struct store_block blocks[64];
	struct store_file f;
	char name[64];
	uint32_t i;
	int rc;

	b->calls++;
	for (i = b->first; i < b->first + b->n; i++) {
		snprintf(name, sizeof(name), "dir%03u/file-%08u.dat", i % 500, i);
		make_file(&f, name, STORE_FILE, i, b->nblocks ? blocks : NULL, b->nblocks, NULL, 0);
		/* Unique hashes per file so the block map grows too. */
		for (size_t j = 0; j < b->nblocks; j++) {
			memcpy(blocks[j].hash + 8, &i, sizeof(i));
			blocks[j].hash[12] = (uint8_t)j;
		}
		rc = store_file_put(txn, 1, STORE_LOCAL, &f);
		if (rc)
			return rc;
	}
	return 0;
}

TEST(map_growth)
{
	struct store *s;
	struct store_stat st;
	struct store_txn *txn;
	struct batch b = {0, 2000, 32, 0};
	size_t n = 0;
	int total_calls = 0;
	uint32_t i;

	tmp_make();
	ASSERT_OK(store_open_with_mapsize(&s, tmpdir, 256 * 1024, 0));
	ASSERT_OK(store_stat_get(s, &st));
	ASSERT_UEQ(st.map_size, 256 * 1024);
	for (i = 0; i < 3; i++) {
		b.first = i * 2000;
		b.calls = 0;
		ASSERT_OK(store_write(s, put_batch, &b));
		total_calls += b.calls;
	}
	ASSERT_OK(store_stat_get(s, &st));
	fprintf(stderr, "map grew %u times to %llu bytes, %llu used, %d callback runs\n",
		st.map_grows, (unsigned long long)st.map_size, (unsigned long long)st.used_bytes,
		total_calls);
	ASSERT(st.map_grows >= 3);
	ASSERT_UEQ(total_calls, 3 + st.map_grows);
	ASSERT(st.map_size > 256 * 1024);
	store_close(s);

	/* All there after reopen (which keeps the grown size). */
	s = open_store();
	ASSERT_OK(store_read_begin(s, &txn));
	ASSERT_OK(store_files_each(txn, 1, STORE_LOCAL, NULL, 0, 1, collect_names, &n));
	ASSERT_UEQ(n, 6000);
	n = 0;
	ASSERT_OK(store_seq_each(txn, 1, STORE_LOCAL, 0, 0, collect_names, &n));
	ASSERT_UEQ(n, 6000);
	store_read_end(txn);
	ASSERT_UEQ(get_cp(s, 1, STORE_LOCAL).files, 6000);
	ASSERT_UEQ(get_cp(s, 1, STORE_LOCAL).max_seq, 6000);
	store_close(s);

	/* A cap: growth stops with STORE_EFULL and nothing of the batch is kept. */
	ASSERT_OK(store_open_with_mapsize(&s, tmpdir, 0, 1)); /* cap below the current size */
	b.first = 100000;
	b.n = 20000;
	ASSERT_EQ(store_write(s, put_batch, &b), STORE_EFULL);
	ASSERT_EQ(get_rc(s, 1, STORE_LOCAL, "dir000/file-00100000.dat", 24), STORE_ENOTFOUND);
	/* Growth under an open read transaction is refused, not done. */
	store_close(s);
	ASSERT_OK(store_open_with_mapsize(&s, tmpdir, 0, 0));
	ASSERT_OK(store_read_begin(s, &txn));
	ASSERT_EQ(store_write(s, put_batch, &b), STORE_EBUSY);
	store_read_end(txn);
	store_close(s);
	tmp_remove();
}

/* ---- stale readers ---- */

struct reader_scan {
	char pid[16];
	int hits;
};

static int
on_reader_line(const char *msg, void *arg)
{
	struct reader_scan *r = arg;
	char word[32];

	if (sscanf(msg, "%31s", word) == 1 && strcmp(word, r->pid) == 0)
		r->hits++;
	return 0;
}

/* How many reader slots the process pid holds, read with LMDB directly. */
static int
reader_slots(pid_t pid)
{
	struct reader_scan r = {{0}, 0};
	MDB_env *env;
	char path[128];

	snprintf(r.pid, sizeof(r.pid), "%d", (int)pid);
	snprintf(path, sizeof(path), "%s/index.lmdb", tmpdir);
	ASSERT_EQ(mdb_env_create(&env), 0);
	ASSERT_EQ(mdb_env_set_maxdbs(env, 16), 0);
	ASSERT_EQ(mdb_env_open(env, path, MDB_NOTLS | MDB_RDONLY, 0600), 0);
	ASSERT(mdb_reader_list(env, on_reader_line, &r) >= 0);
	mdb_env_close(env);
	return r.hits;
}

/*
 * A stale slot matters when the environment stays open in some process
 * (LMDB resets the reader table when the first process opens it). So: child
 * A holds the environment open like a running agent; child B opens it, begins
 * a read and _exit()s; then this process opens it and must clear B's slot.
 */
TEST(stale_reader)
{
	struct store *s;
	struct store_txn *txn;
	struct store_stat st;
	int ready[2], quit[2], status;
	pid_t a, b;
	char c;

	tmp_make();
	s = open_store();
	store_close(s);
	ASSERT_EQ(pipe(ready), 0);
	ASSERT_EQ(pipe(quit), 0);
	a = fork();
	ASSERT(a >= 0);
	if (a == 0) {
		close(ready[0]);
		close(quit[1]);
		if (store_open(&s, tmpdir) != 0)
			_exit(1);
		if (write(ready[1], "r", 1) != 1)
			_exit(1);
		while (read(quit[0], &c, 1) > 0)
			;
		store_close(s);
		_exit(0);
	}
	close(ready[1]);
	close(quit[0]);
	ASSERT_EQ(read(ready[0], &c, 1), 1);

	b = fork();
	ASSERT(b >= 0);
	if (b == 0) {
		if (store_open(&s, tmpdir) != 0 || store_read_begin(s, &txn) != 0)
			_exit(1);
		_exit(0); /* the reader slot is left behind */
	}
	ASSERT_EQ(waitpid(b, &status, 0), b);
	ASSERT(WIFEXITED(status));
	ASSERT_EQ(WEXITSTATUS(status), 0);
	ASSERT_EQ(reader_slots(b), 1);

	s = open_store();
	ASSERT_OK(store_stat_get(s, &st));
	ASSERT_UEQ(st.readers_cleared, 1);
	ASSERT_OK(store_read_begin(s, &txn));
	store_read_end(txn);
	store_close(s);
	ASSERT_EQ(reader_slots(b), 0);

	close(quit[1]);
	close(ready[0]);
	ASSERT_EQ(waitpid(a, &status, 0), a);
	ASSERT(WIFEXITED(status));
	ASSERT_EQ(WEXITSTATUS(status), 0);
	tmp_remove();
}

/* ---- iteration ---- */

static struct seen
files_list(struct store *s, const char *start, size_t stop_after, int fail, int want_rc)
{
	struct store_txn *txn;
	struct seen seen;

	memset(&seen, 0, sizeof(seen));
	seen.stop_after = stop_after;
	seen.fail = fail;
	ASSERT_OK(store_read_begin(s, &txn));
	ASSERT_EQ(store_files_each(txn, 1, STORE_LOCAL, start, start ? strlen(start) : 0, 1, record,
				   &seen),
		  want_rc);
	store_read_end(txn);
	return seen;
}

TEST(files_each_paging)
{
	static const char *const names[] = {"m", "b", "a/x", "a", "z", "b0", "c"};
	static const char *const sorted[] = {"a", "a/x", "b", "b0", "c", "m", "z"};
	struct store_file f;
	struct store *s;
	struct seen seen;
	char last[16];
	size_t i, got = 0;

	tmp_make();
	s = open_store();
	for (i = 0; i < 7; i++) {
		make_file(&f, names[i], STORE_FILE, (uint32_t)i, NULL, 0, NULL, 0);
		put1(s, 1, STORE_LOCAL, &f);
		/* Neighbours that must not show up. */
		make_file(&f, names[i], STORE_FILE, (uint32_t)i, NULL, 0, NULL, 0);
		put1(s, 2, STORE_LOCAL, &f);
		f.sequence = i + 1;
		put1(s, 1, 1, &f);
	}
	seen = files_list(s, NULL, 0, 0, 0);
	ASSERT_UEQ(seen.n, 7);
	for (i = 0; i < 7; i++)
		ASSERT_STREQ(seen.names[i], sorted[i]);

	/* Pages of 3: each starts after the last name of the one before. */
	last[0] = 0;
	for (;;) {
		seen = files_list(s, last[0] ? last : NULL, 3, 0, 0);
		for (i = 0; i < seen.n; i++)
			ASSERT_STREQ(seen.names[i], sorted[got + i]);
		got += seen.n;
		if (seen.n < 3)
			break;
		strcpy(last, seen.names[seen.n - 1]);
	}
	ASSERT_UEQ(got, 7);

	/* Starting after a name that is not there: the next one in order. */
	seen = files_list(s, "b00", 0, 0, 0);
	ASSERT_UEQ(seen.n, 3);
	ASSERT_STREQ(seen.names[0], "c");
	seen = files_list(s, "zz", 0, 0, 0);
	ASSERT_UEQ(seen.n, 0);
	seen = files_list(s, "", 0, 0, 0);
	ASSERT_UEQ(seen.n, 7);

	/* Stop with 1; a negative code comes back as is. */
	seen = files_list(s, NULL, 2, 0, 0);
	ASSERT_UEQ(seen.n, 2);
	seen = files_list(s, "a", 2, -1234, -1234);
	ASSERT_UEQ(seen.n, 2);
	ASSERT_STREQ(seen.names[1], "b");
	{
		struct store_txn *txn;

		memset(&seen, 0, sizeof(seen));
		seen.stop_after = 1;
		seen.fail = -77;
		ASSERT_OK(store_read_begin(s, &txn));
		ASSERT_EQ(store_seq_each(txn, 1, 1, 0, 0, record, &seen), -77);
		ASSERT_UEQ(seen.n, 1);
		store_read_end(txn);
	}
	store_close(s);
	tmp_remove();
}

/* ---- performance (prints, asserts nothing about speed) ---- */

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

TEST(perf)
{
	struct store *s;
	struct store_txn *txn;
	struct store_stat st;
	struct batch b = {0, 1000, 1, 0};
	double t0, t1, t2, t3;
	size_t n = 0;
	uint32_t i;

	tmp_make();
	s = open_store();
	t0 = now();
	for (i = 0; i < 100; i++) {
		b.first = i * 1000;
		ASSERT_OK(store_write(s, put_batch, &b));
	}
	t1 = now();
	ASSERT_OK(store_read_begin(s, &txn));
	ASSERT_OK(store_files_each(txn, 1, STORE_LOCAL, NULL, 0, 1, collect_names, &n));
	t2 = now();
	ASSERT_UEQ(n, 100000);
	n = 0;
	ASSERT_OK(store_seq_each(txn, 1, STORE_LOCAL, 0, 1, collect_names, &n));
	t3 = now();
	ASSERT_UEQ(n, 100000);
	store_read_end(txn);
	ASSERT_OK(store_stat_get(s, &st));
	printf("perf: put 100000 entries (1 block each) in 100 batches: %.3f s (%.1f us/entry)\n",
	       t1 - t0, (t1 - t0) * 1e6 / 100000);
	printf("perf: files_each 100000: %.3f s; seq_each 100000: %.3f s\n", t2 - t1, t3 - t2);
	printf("perf: database %.1f MiB used, map %.1f MiB\n", (double)st.used_bytes / 1048576,
	       (double)st.map_size / 1048576);
	store_close(s);
	tmp_remove();
}

/* The process's resident file-backed pages (statm "shared"), in bytes. */
static unsigned long
resident_file_bytes(void)
{
	unsigned long size, resident, shared;
	FILE *f = fopen("/proc/self/statm", "r");

	ASSERT(f != NULL);
	ASSERT_EQ(fscanf(f, "%lu %lu %lu", &size, &resident, &shared), 3);
	fclose(f);
	return shared * (unsigned long)sysconf(_SC_PAGESIZE);
}

/*
 * After a pass over an index larger than STORE_MAP_RESIDENT_MAX, once the
 * store is idle, store_trim_map_idle() unmaps what the pass mapped, and
 * what is read after that (also with pointers from before) stays right.
 */
TEST(map_trim)
{
	struct store *s;
	struct store_txn *txn;
	struct store_stat st;
	struct store_file f;
	struct batch b = {0, 1000, 16, 0};
	char name[32];

	tmp_make();
	s = open_store();
	for (uint32_t i = 0; i < 100; i++) {
		b.first = i * 1000;
		ASSERT_OK(store_write(s, put_batch, &b));
	}
	ASSERT_OK(store_stat_get(s, &st));
	ASSERT(st.used_bytes > 2 * (uint64_t)STORE_MAP_RESIDENT_MAX);
	ASSERT_OK(store_read_begin(s, &txn));
	count_both(txn, 1, 100000);
	printf("map_trim: database %.1f MiB, mapped after the pass %.1f MiB\n",
	       (double)st.used_bytes / 1048576, (double)resident_file_bytes() / 1048576);
	/* The pass itself is not slowed down: its pages stay mapped. */
	ASSERT_UEQ(store_map_trims(s), 0);
	ASSERT(resident_file_bytes() >= STORE_MAP_RESIDENT_MAX);
	/* The first call after a pass only notes it; the next, with a few reads between, unmaps. */
	ASSERT_EQ(store_trim_map_idle(s), 0);
	snprintf(name, sizeof(name), "dir%03u/file-%08u.dat", 5u % 500, 5u);
	ASSERT_OK(store_file_get(txn, 1, STORE_LOCAL, name, strlen(name), 0, &f));
	store_file_release(&f);
	ASSERT_EQ(store_trim_map_idle(s), 1);
	ASSERT(resident_file_bytes() < STORE_MAP_RESIDENT_MAX);
	ASSERT_UEQ(store_map_trims(s), 1);
	ASSERT_EQ(store_trim_map(s), 0); /* nothing to do below the limit */
	/* Still readable after its pages were unmapped, in the same transaction. */
	snprintf(name, sizeof(name), "dir%03u/file-%08u.dat", 77777u % 500, 77777u);
	ASSERT_OK(store_file_get(txn, 1, STORE_LOCAL, name, strlen(name), 1, &f));
	ASSERT_EQ(store_trim_map_idle(s), 0); /* below the limit again */
	ASSERT_UEQ(f.name_len, strlen(name));
	ASSERT(memcmp(f.name, name, f.name_len) == 0);
	ASSERT_UEQ(f.mode, 0644u + 77777u % 8);
	store_file_release(&f);
	store_read_end(txn);
	store_close(s);
	tmp_remove();
}

TEST_LIST_BEGIN
TEST_ENTRY(open_reopen)
TEST_ENTRY(schema_mismatch)
TEST_ENTRY(readonly_missing)
TEST_ENTRY(numbering)
TEST_ENTRY(roundtrip)
TEST_ENTRY(long_names)
TEST_ENTRY(sequence)
TEST_ENTRY(block_map)
TEST_ENTRY(counts)
TEST_ENTRY(map_growth)
TEST_ENTRY(stale_reader)
TEST_ENTRY(files_each_paging)
TEST_ENTRY(perf)
TEST_ENTRY(map_trim)
TEST_LIST_END
