/*
 * store/store.c - the LMDB environment: open and close, transactions and map
 * growth, error translation, numbering, checkpoints and meta settings.
 * The file index, sequence index and block map are in store/file.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "store/internal.h"

#define MIB ((size_t)1 << 20)
#define DEFAULT_MAP_SIZE (64 * MIB)
#if SIZE_MAX > 0xffffffffu
#define DEFAULT_MAP_MAX ((size_t)1 << 40) /* 1 TiB */
#else
#define DEFAULT_MAP_MAX ((size_t)1 << 30)
#endif
#define MAX_DBS 16 /* seven used; room for partials and events */

const char *
store_strerror(int rc)
{
	switch (rc) {
	case 0:
		return "success";
	case STORE_ENOTFOUND:
		return "no such key";
	case STORE_ECORRUPT:
		return "a stored record does not decode";
	case STORE_EIO:
		return "the database reported an I/O error or panic";
	case STORE_EINVAL:
		return "invalid argument";
	case STORE_ENOMEM:
		return "out of memory";
	case STORE_EFULL:
		return "the database cannot grow any more";
	case STORE_EVERSION:
		return "the database was written by an incompatible version";
	case STORE_EREADERS:
		return "too many readers";
	case STORE_EBUSY:
		return "the map must grow but read transactions are open";
	}
	if (rc < 0 && rc > -4096)
		return strerror(-rc);
	return "unknown store error";
}

int
store__err(struct store_txn *txn, int rc)
{
	switch (rc) {
	case MDB_SUCCESS:
		return 0;
	case MDB_NOTFOUND:
		return STORE_ENOTFOUND;
	case MDB_MAP_FULL:
		if (txn)
			txn->map_full = 1;
		return STORE_EFULL;
	case MDB_TXN_FULL:
		return STORE_EFULL;
	case MDB_READERS_FULL:
		return STORE_EREADERS;
	case MDB_VERSION_MISMATCH:
		return STORE_EVERSION;
	case MDB_CORRUPTED:
	case MDB_PAGE_NOTFOUND:
	case MDB_INVALID:
		return STORE_ECORRUPT;
	case MDB_KEYEXIST:
	case MDB_BAD_TXN:
	case MDB_BAD_VALSIZE:
	case MDB_BAD_DBI:
	case MDB_BAD_RSLOT:
	case MDB_INCOMPATIBLE:
		return STORE_EINVAL;
	case ENOMEM:
		return STORE_ENOMEM;
	}
	if (rc > 0)
		return -rc; /* errno from LMDB, e.g. ENOSPC or EIO */
	return STORE_EIO;   /* MDB_PANIC, MDB_MAP_RESIZED and the rest */
}

unsigned char *
store__scratch(struct store_txn *txn, size_t n)
{
	unsigned char *p;
	size_t cap;

	if (n <= txn->scratch_cap)
		return txn->scratch;
	cap = txn->scratch_cap ? txn->scratch_cap : 4096;
	while (cap < n)
		cap *= 2;
	p = realloc(txn->scratch, cap);
	if (!p)
		return NULL;
	txn->scratch = p;
	txn->scratch_cap = cap;
	return p;
}

static uint64_t
fmix64(uint64_t k)
{
	k ^= k >> 33;
	k *= 0xff51afd7ed558ccdULL;
	k ^= k >> 33;
	k *= 0xc4ceb9fe1a85ec53ULL;
	k ^= k >> 33;
	return k;
}

void
store__hash128(const void *p, size_t n, uint8_t out[16])
{
	const unsigned char *b = p;
	uint64_t h1 = 0xcbf29ce484222325ULL; /* FNV-1a 64 offset basis */
	uint64_t h2 = 0x84222325cbf29ce4ULL; /* a second, unrelated start */
	size_t i;

	for (i = 0; i < n; i++) {
		h1 = (h1 ^ b[i]) * 0x100000001b3ULL; /* FNV-1a 64 prime */
		h2 = (h2 ^ b[i] ^ (h1 >> 56)) * 0x9e3779b97f4a7c15ULL;
	}
	h1 = fmix64(h1 ^ (uint64_t)n);
	h2 = fmix64(h2 + h1);
	h1 += h2;
	store__be64(out, h1);
	store__be64(out + 8, h2);
}

/* ---- environment ---- */

/* Begins an LMDB transaction, adopting a map grown by another process. */
static int
txn_begin(struct store *s, unsigned flags, MDB_txn **t)
{
	int rc;

	rc = mdb_txn_begin(s->env, NULL, flags, t);
	if (rc == MDB_MAP_RESIZED) {
		if (s->nreaders)
			return STORE_EBUSY;
		rc = mdb_env_set_mapsize(s->env, 0);
		if (rc == 0)
			rc = mdb_txn_begin(s->env, NULL, flags, t);
	}
	return store__err(NULL, rc);
}

static int
open_dbs(struct store *s, MDB_txn *t)
{
	static const struct {
		const char *name;
		size_t off;
	} dbs[] = {
	    {"meta", offsetof(struct store, meta)},
	    {"folders", offsetof(struct store, folders)},
	    {"devices", offsetof(struct store, devices)},
	    {"files", offsetof(struct store, files)},
	    {"sequence", offsetof(struct store, seq)},
	    {"blocks", offsetof(struct store, blocks)},
	    {"checkpoints", offsetof(struct store, ckpt)},
	    {"events", offsetof(struct store, events)},
	    {"partials", offsetof(struct store, partials)},
	};
	unsigned flags = s->rdonly ? 0 : MDB_CREATE;
	size_t i;
	int rc;

	for (i = 0; i < sizeof(dbs) / sizeof(dbs[0]); i++) {
		rc = mdb_dbi_open(t, dbs[i].name, flags, (MDB_dbi *)((char *)s + dbs[i].off));
		if (rc == MDB_NOTFOUND)
			return STORE_EVERSION; /* not a shoal store, or a much older one */
		if (rc)
			return store__err(NULL, rc);
	}
	return 0;
}

/* Reads or (read-write, first open) writes the schema version. */
static int
check_schema(struct store *s, MDB_txn *t)
{
	MDB_val k = {6, (void *)"schema"}, v;
	uint8_t buf[4];
	int rc;

	rc = mdb_get(t, s->meta, &k, &v);
	if (rc == MDB_NOTFOUND && !s->rdonly) {
		store__le32(buf, STORE__SCHEMA);
		v.mv_size = sizeof(buf);
		v.mv_data = buf;
		return store__err(NULL, mdb_put(t, s->meta, &k, &v, 0));
	}
	if (rc == MDB_NOTFOUND)
		return STORE_EVERSION;
	if (rc)
		return store__err(NULL, rc);
	if (v.mv_size != 4 || store__get_le32(v.mv_data) != STORE__SCHEMA)
		return STORE_EVERSION;
	return 0;
}

static int
open_env(struct store **out, const char *dir, int rdonly, size_t map_size, size_t map_max)
{
	struct store *s = NULL;
	char *path = NULL;
	MDB_txn *t = NULL;
	MDB_envinfo info;
	struct stat st;
	size_t len;
	int rc, dead = 0, fresh = 0;

	*out = NULL;
	if (!dir || !*dir)
		return STORE_EINVAL;
	len = strlen(dir) + sizeof("/index.lmdb/data.mdb");
	path = malloc(len);
	s = calloc(1, sizeof(*s));
	if (!path || !s) {
		rc = STORE_ENOMEM;
		goto out;
	}
	s->rdonly = rdonly;
	s->map_max = map_max ? map_max : DEFAULT_MAP_MAX;
	if (!map_size)
		map_size = DEFAULT_MAP_SIZE;
	if (map_size > s->map_max)
		map_size = s->map_max;

	snprintf(path, len, "%s/index.lmdb/data.mdb", dir);
	if (stat(path, &st) != 0) {
		/* Read-only: LMDB would create a lock file; touch nothing. */
		if (rdonly || errno != ENOENT) {
			rc = -errno;
			goto out;
		}
		fresh = 1;
	}
	snprintf(path, len, "%s/index.lmdb", dir);
	if (!rdonly && mkdir(path, 0700) != 0 && errno != EEXIST) {
		rc = -errno;
		goto out;
	}

	rc = store__err(NULL, mdb_env_create(&s->env));
	if (rc)
		goto out;
	rc = store__err(NULL, mdb_env_set_maxdbs(s->env, MAX_DBS));
	if (rc)
		goto out;
	/* No MDB_WRITEMAP (SIGBUS on a full disk), no MDB_NOSYNC (callers batch). */
	rc = store__err(NULL,
			mdb_env_open(s->env, path, MDB_NOTLS | (rdonly ? MDB_RDONLY : 0), 0600));
	if (rc)
		goto out;
	rc = store__err(NULL, mdb_reader_check(s->env, &dead));
	if (rc)
		goto out;
	s->readers_cleared = (uint32_t)dead;

	/* An existing environment keeps the size it grew to; a new one starts at map_size. */
	if (!rdonly) {
		rc = store__err(NULL, mdb_env_info(s->env, &info));
		if (rc)
			goto out;
		if (fresh || info.me_mapsize < map_size) {
			rc = store__err(NULL, mdb_env_set_mapsize(s->env, map_size));
			if (rc)
				goto out;
		}
	}

	rc = txn_begin(s, rdonly ? MDB_RDONLY : 0, &t);
	if (rc)
		goto out;
	rc = open_dbs(s, t);
	if (rc)
		goto out;
	rc = check_schema(s, t);
	if (rc)
		goto out;
	rc = store__err(NULL, mdb_txn_commit(t));
	t = NULL;
	if (rc)
		goto out;
	*out = s;
	s = NULL;
out:
	if (t)
		mdb_txn_abort(t);
	if (s && s->env)
		mdb_env_close(s->env);
	free(s);
	free(path);
	return rc;
}

int
store_open(struct store **out, const char *dir)
{
	return open_env(out, dir, 0, 0, 0);
}

int
store_open_with_mapsize(struct store **out, const char *dir, size_t map_size, size_t map_max)
{
	return open_env(out, dir, 0, map_size, map_max);
}

int
store_open_readonly(struct store **out, const char *dir)
{
	return open_env(out, dir, 1, 0, 0);
}

void
store_close(struct store *s)
{
	if (!s)
		return;
	mdb_env_close(s->env);
	free(s);
}

int
store_stat_get(struct store *s, struct store_stat *st)
{
	MDB_envinfo info;
	MDB_stat ms;
	int rc;

	memset(st, 0, sizeof(*st));
	rc = store__err(NULL, mdb_env_info(s->env, &info));
	if (rc)
		return rc;
	rc = store__err(NULL, mdb_env_stat(s->env, &ms));
	if (rc)
		return rc;
	st->map_size = info.me_mapsize;
	st->used_bytes = (uint64_t)(info.me_last_pgno + 1) * ms.ms_psize;
	st->map_grows = s->map_grows;
	st->readers_cleared = s->readers_cleared;
	st->readers_used = info.me_numreaders;
	return 0;
}

/* ---- the map's pages in this process ---- */

/* The process's resident file-backed pages (statm "shared"): the map, the binary, libraries. */
static unsigned long
resident_file_bytes(void)
{
	char buf[160];
	unsigned long size, resident, shared;
	ssize_t n;
	int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	if (sscanf(buf, "%lu %lu %lu", &size, &resident, &shared) != 3)
		return 0;
	return shared * (unsigned long)sysconf(_SC_PAGESIZE);
}

/*
 * Unmaps the pages of the mapping that holds p (LMDB's map: mdb_env_info()
 * gives its address only for MDB_FIXEDMAP, so /proc/self/maps tells).
 */
static int
unmap_pages_around(const void *p)
{
	char line[512];
	uintptr_t at = (uintptr_t)p;
	int done = 0;
	FILE *f = fopen("/proc/self/maps", "re");

	if (!f)
		return 0;
	while (!done && fgets(line, sizeof(line), f)) {
		unsigned long lo, hi;
		if (sscanf(line, "%lx-%lx", &lo, &hi) != 2 || at < lo || at >= hi)
			continue;
		/*
		 * The map is read-only and shared (no MDB_WRITEMAP): this only
		 * drops page table entries. Pointers into it stay valid; a read
		 * faults the page back in from the page cache. The map does not
		 * move meanwhile: it is only grown while this process has no
		 * transaction open, and the caller is inside one.
		 */
		done = madvise((void *)lo, hi - lo, MADV_DONTNEED) == 0;
	}
	fclose(f);
	return done;
}

int
store_trim_map(struct store *s)
{
	struct store_txn *txn;
	MDB_val k = {6, (void *)"schema"}, v;
	int done;

	if (resident_file_bytes() < STORE_MAP_RESIDENT_MAX || store_read_begin(s, &txn) != 0)
		return 0;
	/* Any value read in a read transaction lies in the map. */
	done = mdb_get(txn->t, s->meta, &k, &v) == 0 && unmap_pages_around(v.mv_data);
	store_read_end(txn);
	if (done)
		atomic_fetch_add_explicit(&s->map_trims, 1, memory_order_relaxed);
	return done;
}

unsigned long
store_map_trims(struct store *s)
{
	return atomic_load_explicit(&s->map_trims, memory_order_relaxed);
}

int
store_trim_map_idle(struct store *s)
{
	unsigned long work = atomic_load_explicit(&s->work, memory_order_relaxed);
	unsigned long since = work - s->work_seen;

	s->work_seen = work;
	/* A few reads (an expiry step, a status answer) are not a pass that unmapping would slow. */
	if (since >= STORE__IDLE_WORK)
		return 0;
	return store_trim_map(s);
}

/* ---- transactions ---- */

int
store_read_begin(struct store *s, struct store_txn **out)
{
	struct store_txn *txn;
	int rc;

	*out = NULL;
	txn = calloc(1, sizeof(*txn));
	if (!txn)
		return STORE_ENOMEM;
	rc = txn_begin(s, MDB_RDONLY, &txn->t);
	if (rc) {
		free(txn);
		return rc;
	}
	txn->s = s;
	s->nreaders++;
	*out = txn;
	return 0;
}

void
store_read_end(struct store_txn *txn)
{
	if (!txn)
		return;
	mdb_txn_abort(txn->t);
	txn->s->nreaders--;
	free(txn);
}

/* Doubles the map (up to map_max); no transaction of this process may be open. */
static int
grow(struct store *s)
{
	MDB_envinfo info;
	size_t next;
	int rc;

	rc = store__err(NULL, mdb_env_info(s->env, &info));
	if (rc)
		return rc;
	if (info.me_mapsize >= s->map_max)
		return STORE_EFULL;
	if (s->nreaders)
		return STORE_EBUSY;
	next = info.me_mapsize > s->map_max / 2 ? s->map_max : info.me_mapsize * 2;
	rc = store__err(NULL, mdb_env_set_mapsize(s->env, next));
	if (rc)
		return rc;
	s->map_grows++;
	return 0;
}

int
store_write(struct store *s, int (*fn)(struct store_txn *txn, void *arg), void *arg)
{
	struct store_txn txn = {.s = s, .write = 1};
	int rc, mrc;

	if (s->rdonly || s->writing)
		return STORE_EINVAL;
	s->writing = 1;
	for (;;) {
		rc = txn_begin(s, 0, &txn.t);
		if (rc)
			break;
		txn.map_full = 0;
		rc = fn(&txn, arg);
		if (rc >= 0 && !txn.map_full) {
			mrc = mdb_txn_commit(txn.t);
			txn.t = NULL;
			rc = store__err(&txn, mrc);
			if (!txn.map_full)
				break;
		} else {
			mdb_txn_abort(txn.t);
			txn.t = NULL;
			if (!txn.map_full)
				break;
		}
		rc = grow(s);
		if (rc)
			break;
	}
	s->writing = 0;
	free(txn.scratch);
	atomic_fetch_add_explicit(&s->work, 1, memory_order_relaxed);
	return rc;
}

/* ---- numbering ---- */

static int
counter_next(struct store_txn *txn, const char *name, uint32_t *num)
{
	MDB_val k = {strlen(name), (void *)name}, v;
	uint8_t buf[4];
	uint32_t n = 1;
	int rc;

	rc = mdb_get(txn->t, txn->s->meta, &k, &v);
	if (rc == 0) {
		if (v.mv_size != 4)
			return STORE_ECORRUPT;
		n = store__get_le32(v.mv_data);
	} else if (rc != MDB_NOTFOUND) {
		return store__err(txn, rc);
	}
	if (n == 0 || n == UINT32_MAX)
		return STORE_EFULL;
	store__le32(buf, n + 1);
	v.mv_size = 4;
	v.mv_data = buf;
	rc = store__err(txn, mdb_put(txn->t, txn->s->meta, &k, &v, 0));
	if (rc == 0)
		*num = n;
	return rc;
}

static int
number(struct store_txn *txn, MDB_dbi dbi, const char *counter, MDB_val *k, int create,
       uint32_t *num)
{
	MDB_val v;
	uint8_t buf[4];
	uint32_t n = 0;
	int rc;

	rc = mdb_get(txn->t, dbi, k, &v);
	if (rc == 0) {
		if (v.mv_size != 4)
			return STORE_ECORRUPT;
		*num = store__get_le32(v.mv_data);
		return 0;
	}
	if (rc != MDB_NOTFOUND || !create)
		return store__err(txn, rc);
	if (!txn->write)
		return STORE_EINVAL;
	rc = counter_next(txn, counter, &n);
	if (rc)
		return rc;
	store__le32(buf, n);
	v.mv_size = 4;
	v.mv_data = buf;
	rc = store__err(txn, mdb_put(txn->t, dbi, k, &v, MDB_NOOVERWRITE));
	if (rc == 0)
		*num = n;
	return rc;
}

int
store_folder_num(struct store_txn *txn, const char *folder_id, int create, uint32_t *num)
{
	MDB_val k;

	if (!folder_id)
		return STORE_EINVAL;
	k.mv_size = strlen(folder_id);
	k.mv_data = (void *)folder_id;
	if (k.mv_size == 0 || k.mv_size > 511)
		return STORE_EINVAL;
	return number(txn, txn->s->folders, "next_folder", &k, create, num);
}

int
store_device_num(struct store_txn *txn, const uint8_t device_id[32], int create, uint32_t *num)
{
	MDB_val k = {32, (void *)device_id};

	return number(txn, txn->s->devices, "next_device", &k, create, num);
}

/* ---- checkpoints ---- */

static void
fd_key(uint8_t *p, uint32_t folder, uint32_t dev)
{
	store__be32(p, folder);
	store__be32(p + 4, dev);
}

int
store_checkpoint_get(struct store_txn *txn, uint32_t folder, uint32_t dev,
		     struct store_checkpoint *cp)
{
	uint8_t key[8];
	MDB_val k = {8, key}, v;
	const uint8_t *p;
	int rc;

	memset(cp, 0, sizeof(*cp));
	fd_key(key, folder, dev);
	rc = mdb_get(txn->t, txn->s->ckpt, &k, &v);
	if (rc == MDB_NOTFOUND)
		return 0;
	if (rc)
		return store__err(txn, rc);
	if (v.mv_size != STORE__CP_LEN)
		return STORE_ECORRUPT;
	p = v.mv_data;
	cp->index_id = store__get_le64(p);
	cp->max_seq = store__get_le64(p + 8);
	cp->files = store__get_le64(p + 16);
	cp->bytes = store__get_le64(p + 24);
	cp->deleted = store__get_le64(p + 32);
	return 0;
}

int
store_checkpoint_put(struct store_txn *txn, uint32_t folder, uint32_t dev,
		     const struct store_checkpoint *cp)
{
	uint8_t key[8], buf[STORE__CP_LEN];
	MDB_val k = {8, key}, v = {sizeof(buf), buf};

	if (!txn->write)
		return STORE_EINVAL;
	fd_key(key, folder, dev);
	store__le64(buf, cp->index_id);
	store__le64(buf + 8, cp->max_seq);
	store__le64(buf + 16, cp->files);
	store__le64(buf + 24, cp->bytes);
	store__le64(buf + 32, cp->deleted);
	return store__err(txn, mdb_put(txn->t, txn->s->ckpt, &k, &v, 0));
}

/* ---- meta ---- */

int
store_meta_get(struct store_txn *txn, const char *key, void *val, size_t cap, size_t *len)
{
	MDB_val k, v;
	int rc;

	if (!key || !*key || strlen(key) > 511)
		return STORE_EINVAL;
	k.mv_size = strlen(key);
	k.mv_data = (void *)key;
	rc = mdb_get(txn->t, txn->s->meta, &k, &v);
	if (rc)
		return store__err(txn, rc);
	if (len)
		*len = v.mv_size;
	if (v.mv_size > cap)
		return STORE_EINVAL;
	if (v.mv_size)
		memcpy(val, v.mv_data, v.mv_size);
	return 0;
}

int
store_meta_put(struct store_txn *txn, const char *key, const void *val, size_t len)
{
	MDB_val k, v = {len, (void *)val};

	if (!txn->write || !key || !*key || strlen(key) > 511 || (len && !val))
		return STORE_EINVAL;
	k.mv_size = strlen(key);
	k.mv_data = (void *)key;
	return store__err(txn, mdb_put(txn->t, txn->s->meta, &k, &v, 0));
}
