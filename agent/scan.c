/*
 * agent/scan.c - the scanner: walks a folder, finds what changed since the
 * local index, hashes changed files on the thread pool and records the result
 * in batched transactions.
 *
 * Steps: (1) a thread-pool job walks the tree with openat-family calls and
 * lstat-style information only; (2) the loop compares each entry with the
 * local index (size, mtime, inode, ctime, mode, type, link target) and finds
 * deletions; (3) changed files are cut and hashed, several at a time so both
 * cores work; (4) results are written in batches of SCAN_BATCH entries.
 * A file that changes while it is hashed is not recorded half-old half-new:
 * it is left for the next scan, which starts soon.
 */
#include <dirent.h>
#include <pthread.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "agent/agent.h"
#include "agent/events.h"
#include "agent/fsops.h"
#include "agent/log.h"
#include "agent/util.h"
#include "agent/version.h"
#include "crypto/chunker.h"
#include "proto/proto.h"

#define SCAN_BATCH 1000
/* Entries compared with the index per loop turn (scan_compare()). */
#define SCAN_SLICE agent_slice_entries()
#define SCAN_TRIM_ENTRIES 65536
#define SCAN_HASH_JOBS 4
#define MARKER ".shoal-folder"

/*
 * One entry found by the walk. A folder of a million files has a million of
 * these in memory during a scan, so the common part is kept small (64 bytes,
 * the name in the scanner's arena); what only a symlink or a changed entry
 * needs is in a separate struct scan_extra.
 */
struct scan_extra {
	char *target; /* a symlink's target */
	/* filled on the loop */
	struct store_counter *prev_version;
	size_t prev_nversion;
	uint32_t prev_block_size;
	struct store_counter *adopted; /* a peer's version of exactly this content */
	size_t nadopted;
};

struct scan_entry {
	char *name;           /* NUL-terminated, owned by the scanner's name arena */
	struct scan_extra *x; /* NULL until needed; owned */
	uint64_t size, ino;
	int64_t mtime_s, ctime_s;
	uint32_t mtime_ns, ctime_ns;
	uint32_t name_len;    /* at most PROTO_PATH_MAX */
	uint16_t mode;
	uint8_t type;
};

/* Names of the entries, packed into large chunks instead of one allocation each. */
#define ARENA_CHUNK (256u << 10)
struct arena_chunk {
	struct arena_chunk *next;
	size_t used;
	char data[];
};

/* One file to hash, and what hashing it found. */
struct hash_item {
	struct scan_entry *e;
	struct store_block *blocks;
	size_t nblocks;
	uint32_t block_size;
	int err;      /* -errno or 0 */
	int changed;  /* the file changed while it was read */
};

/*
 * One thread-pool job hashes up to HASH_GROUP_FILES small files, or one file
 * of HASH_GROUP_BYTES or more: a job per tiny file spent more time handing
 * work to the pool and back than hashing.
 */
#define HASH_GROUP_FILES 64
#define HASH_GROUP_BYTES (1u << 20)
struct hash_job {
	uv_work_t work;
	struct scanner *s;
	int rootfd;
	size_t n;
	struct hash_item items[HASH_GROUP_FILES];
};

struct scanner {
	struct folder *f;
	uv_work_t walk;
	int rootfd;
	int walk_err;
	size_t skipped;
	size_t temps; /* temp files of an earlier run found and kept */
	char **scopes; /* paths to scan (each with what is under it); NULL: the whole folder */
	size_t nscopes;
	char **unsure; /* paths the walk could not read: nothing at or under them is deleted */
	size_t nunsure;
	struct arena_chunk *names; /* the newest chunk first */
	char path[PROTO_PATH_MAX + 2]; /* the walk's scratch: the name being looked at */
	struct scan_entry *ents;
	size_t nents, cap;
	uint32_t *todo; /* indexes of entries to hash */
	size_t ntodo, next, captodo;
	/* comparing with the index, a slice per loop turn (scan_compare()) */
	int comparing;
	size_t slices;
	size_t cmp_next;   /* the next entry to compare */
	uint32_t *rec;     /* indexes of changed entries to record without hashing */
	size_t nrec, caprec;
	struct deletions *dels; /* what the index has and the walk did not find */
	size_t inflight;
	struct store_file *batch;
	size_t nbatch;
	int retry;
	int aborted;
	int failed;
	uint64_t started_ms;
	uint64_t hashed_bytes;
	size_t changes;
};

/* ---- walking (thread pool) ---- */

/* A copy of name[0..len) with a terminator, owned by the scanner; NULL when out of memory. */
static char *
arena_strndup(struct scanner *s, const char *name, size_t len)
{
	struct arena_chunk *c = s->names;
	char *p;

	if (!c || ARENA_CHUNK - c->used < len + 1) {
		size_t room = len + 1 > ARENA_CHUNK ? len + 1 : ARENA_CHUNK;
		c = malloc(sizeof(*c) + room);
		if (!c)
			return NULL;
		c->used = 0;
		c->next = s->names;
		s->names = c;
	}
	p = c->data + c->used;
	memcpy(p, name, len);
	p[len] = '\0';
	c->used += len + 1;
	return p;
}

static struct scan_extra *
entry_extra(struct scan_entry *e)
{
	if (!e->x)
		e->x = calloc(1, sizeof(*e->x));
	return e->x;
}

static int
ents_push(struct scanner *s, struct scan_entry *e)
{
	if (s->nents >= UINT32_MAX - 1)
		return -ENOMEM; /* entries are numbered with 32 bits */
	if (s->nents == s->cap) {
		size_t cap = s->cap ? 2 * s->cap : 1024;
		struct scan_entry *n = realloc(s->ents, cap * sizeof(*n));
		if (!n)
			return -ENOMEM;
		s->ents = n;
		s->cap = cap;
	}
	s->ents[s->nents++] = *e;
	return 0;
}

static void
unsure_add(struct scanner *s, const char *path)
{
	char **n = realloc(s->unsure, (s->nunsure + 1) * sizeof(*n));
	if (!n)
		return;
	s->unsure = n;
	if ((n[s->nunsure] = strdup(path)))
		s->nunsure++;
}

static int
unsure_covers(const struct scanner *s, const char *name, size_t len)
{
	for (size_t i = 0; i < s->nunsure; i++) {
		size_t ul = strlen(s->unsure[i]);
		if (len >= ul && memcmp(name, s->unsure[i], ul) == 0 && (len == ul || name[ul] == '/'))
			return 1;
	}
	return 0;
}

static int walk_dir(struct scanner *s, const char *dir, int depth);

/*
 * Records the entry n of directory dfd, whose path in the folder is name
 * (copied), and walks into it when it is a directory.
 */
static int
add_entry(struct scanner *s, int dfd, const char *n, const char *name, int depth, int recurse)
{
	struct scan_entry e;
	struct stat st;
	size_t name_len = strlen(name);
	char *target = NULL;
	int rc;

	memset(&e, 0, sizeof(e));
	if (proto_path_check((const uint8_t *)name, name_len) != 0) {
		s->skipped++;
		return 0;
	}
	if (fstatat(dfd, n, &st, AT_SYMLINK_NOFOLLOW) != 0) {
		if (errno != ENOENT) {
			s->skipped++;
			unsure_add(s, name);
		}
		return 0;
	}
	e.mode = st.st_mode & 0777; /* permission bits only: never setuid, setgid, sticky */
	e.ino = st.st_ino;
	e.mtime_s = st.st_mtim.tv_sec;
	e.mtime_ns = (uint32_t)st.st_mtim.tv_nsec;
	e.ctime_s = st.st_ctim.tv_sec;
	e.ctime_ns = (uint32_t)st.st_ctim.tv_nsec;
	if (S_ISREG(st.st_mode)) {
		e.type = STORE_FILE;
		e.size = (uint64_t)st.st_size;
	} else if (S_ISDIR(st.st_mode)) {
		e.type = STORE_DIR;
	} else if (S_ISLNK(st.st_mode)) {
		char buf[PROTO_PATH_MAX + 1];
		ssize_t l = readlinkat(dfd, n, buf, sizeof(buf) - 1);
		if (l <= 0) {
			s->skipped++;
			unsure_add(s, name);
			return 0;
		}
		buf[l] = '\0';
		e.type = STORE_SYMLINK;
		if (!(target = strdup(buf)) || !entry_extra(&e)) {
			free(target);
			return -ENOMEM;
		}
		e.x->target = target;
	} else {
		return 0; /* sockets, fifos and devices do not sync */
	}
	e.name_len = (uint32_t)name_len;
	if (!(e.name = arena_strndup(s, name, name_len)) || (rc = ents_push(s, &e)) != 0) {
		free(target);
		free(e.x);
		return -ENOMEM;
	}
	if (e.type == STORE_DIR && recurse) {
		/* e.name stays where it is (the arena never moves a name). */
		rc = walk_dir(s, e.name, depth + 1);
		if (rc != 0 && rc != -ENOMEM) {
			/* Unreadable: skipped, and nothing under it counts as deleted. */
			s->skipped++;
			unsure_add(s, e.name);
			rc = 0;
		}
	}
	return rc;
}

static int
walk_dir(struct scanner *s, const char *dir, int depth)
{
	int dfd = fs_open_beneath(s->rootfd, dir[0] ? dir : ".", O_RDONLY | O_DIRECTORY, 0);
	DIR *d;
	struct dirent *de;
	size_t dlen = strlen(dir);
	int rc = 0;

	if (dfd < 0)
		return dfd;
	if (depth > 256) {
		close(dfd);
		return -ELOOP;
	}
	d = fdopendir(dfd);
	if (!d) {
		rc = -errno;
		close(dfd);
		return rc;
	}
	while ((de = readdir(d)) != NULL) {
		const char *n = de->d_name;
		size_t nlen = strlen(n);
		char *name = s->path;

		if (n[0] == '.' && (n[1] == '\0' || (n[1] == '.' && n[2] == '\0')))
			continue;
		if (strncmp(n, ".shoal", 6) == 0) {
			/*
			 * A temporary file nobody touched for a day is left over: remove it.
			 * "Touched" is the inode's change time, not its mtime: a finished
			 * temp file gets the version's (often old) mtime before its sync
			 * and rename, and one a crash left there may still be resumed.
			 */
			struct stat tst;
			if (strncmp(n, ".shoal-tmp-", 11) == 0 &&
			    fstatat(dirfd(d), n, &tst, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(tst.st_mode)) {
				if (tst.st_ctim.tv_sec + 86400 < time(NULL))
					unlinkat(dirfd(d), n, 0);
				else
					s->temps++; /* the puller may find it finished */
			}
			continue;
		}
		if ((dlen ? dlen + 1 : 0) + nlen > PROTO_PATH_MAX) {
			s->skipped++; /* too long to be a valid name */
			continue;
		}
		if (dlen) {
			memcpy(name, dir, dlen);
			name[dlen] = '/';
			memcpy(name + dlen + 1, n, nlen + 1);
		} else {
			memcpy(name, n, nlen + 1);
		}
		if ((rc = add_entry(s, dirfd(d), n, name, depth, 1)) != 0)
			break;
	}
	closedir(d);
	return rc;
}

/*
 * Walks one scope: a path (file, link or directory) and all under it. A scope
 * that starts with SCOPE_SHALLOW is a directory's own entry only (its mtime
 * changed because something in it was added or removed).
 */
static int
walk_scope(struct scanner *s, const char *scope)
{
	const char *base;
	int dfd, rc, shallow = scope[0] == SCOPE_SHALLOW;

	scope += shallow;
	dfd = fs_open_parent(s->rootfd, scope, &base);
	if (dfd < 0)
		return dfd == -ENOENT || dfd == -ENOTDIR ? 0 : dfd; /* gone: its entries are deleted */
	rc = add_entry(s, dfd, base, scope, 1, !shallow);
	close(dfd);
	return rc;
}

static void
walk_work(uv_work_t *w)
{
	struct scanner *s = w->data;
	struct stat st;

	if (fstatat(s->rootfd, MARKER, &st, AT_SYMLINK_NOFOLLOW) != 0) {
		s->walk_err = -ENOENT;
		return;
	}
	if (!s->scopes) {
		s->walk_err = walk_dir(s, "", 0);
		return;
	}
	for (size_t i = 0; i < s->nscopes && s->walk_err == 0; i++) {
		int rc = walk_scope(s, s->scopes[i]);
		if (rc == -ENOMEM)
			s->walk_err = rc;
		else if (rc != 0)
			unsure_add(s, s->scopes[i] + (s->scopes[i][0] == SCOPE_SHALLOW));
	}
}

/* ---- hashing (thread pool) ---- */

/* Blocks found by chunk_range(), with their start offsets. */
struct blist {
	struct store_block *b;
	uint64_t *off;
	size_t n, cap;
};

static int
blist_push(struct blist *l, uint64_t off, const unsigned char hash[32], uint32_t size)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 64;
		struct store_block *nb = realloc(l->b, cap * sizeof(*nb));
		if (!nb)
			return -ENOMEM;
		l->b = nb;
		uint64_t *no = realloc(l->off, cap * sizeof(*no));
		if (!no)
			return -ENOMEM;
		l->off = no;
		l->cap = cap;
	}
	memcpy(l->b[l->n].hash, hash, 32);
	l->b[l->n].size = size;
	l->off[l->n] = off;
	l->n++;
	return 0;
}

/* Index of the block of l that starts at off, or -1. */
static ssize_t
blist_find(const struct blist *l, uint64_t off)
{
	size_t lo = 0, hi = l->n;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (l->off[mid] < off)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < l->n && l->off[lo] == off ? (ssize_t)lo : -1;
}

/*
 * Cuts and hashes fd from start (a cut point) towards its end, appending to
 * out. It stops when the next block would start at or after stop_after, or,
 * with sync, at the first cut point that sync also has (*sync_ix is then its
 * index in sync; -1 when the file ended first). Returns 0 or -errno.
 */
static int
chunk_range(int fd, uint64_t start, const struct sec_chunker *ck, uint64_t stop_after,
	    const struct blist *sync, ssize_t *sync_ix, struct blist *out)
{
	size_t cap = 2 * (size_t)ck->max_size, have = 0, pos = 0;
	uint8_t *buf = malloc(cap);
	uint64_t off = start; /* file offset of buf[pos] */
	int eof = 0, rc = 0;

	if (sync_ix)
		*sync_ix = -1;
	if (!buf)
		return -ENOMEM;
	for (;;) {
		if (off >= stop_after)
			break;
		if (sync && off > start) {
			ssize_t k = blist_find(sync, off);
			if (k >= 0) {
				*sync_ix = k;
				break;
			}
		}
		if (!eof && have - pos < ck->max_size) {
			memmove(buf, buf + pos, have - pos);
			have -= pos;
			pos = 0;
			while (have < cap) {
				ssize_t r = pread(fd, buf + have, cap - have, (off_t)(off + have));
				if (r < 0 && errno == EINTR)
					continue;
				if (r < 0) {
					rc = -errno;
					goto out;
				}
				if (r == 0) {
					eof = 1;
					break;
				}
				have += (size_t)r;
			}
		}
		if (have == pos)
			break;
		size_t n = sec_chunker_cut(ck, buf + pos, have - pos);
		unsigned char h[32];
		sec_block_hash(buf + pos, n, h);
		if ((rc = blist_push(out, off, h, (uint32_t)n)) != 0)
			goto out;
		pos += n;
		off += n;
	}
out:
	free(buf);
	return rc;
}

struct half {
	int fd;
	uint64_t start;
	const struct sec_chunker *ck;
	struct blist l;
	int rc;
};

static void *
half_main(void *arg)
{
	struct half *h = arg;
	h->rc = chunk_range(h->fd, h->start, h->ck, UINT64_MAX, NULL, NULL, &h->l);
	return NULL;
}

#define PARALLEL_MIN (64u << 20)

/*
 * Chunks and hashes a whole file. A large file is done by two threads: one
 * from the start, one from the middle; content-defined cut points agree again
 * after the first shared one, so the first thread runs on past the middle
 * until it meets a cut point of the second and the two lists are spliced
 * there. The result is exactly what one thread would find, in about half
 * the time on two cores.
 */
static int
chunk_file(int fd, uint64_t size, const struct sec_chunker *ck, struct blist *out, uint64_t par_min)
{
	struct half h;
	pthread_t t;
	ssize_t k = -1;
	int rc;

	if (size < par_min)
		return chunk_range(fd, 0, ck, UINT64_MAX, NULL, NULL, out);
	memset(&h, 0, sizeof(h));
	h.fd = fd;
	h.start = size / 2;
	h.ck = ck;
	if (pthread_create(&t, NULL, half_main, &h) != 0)
		return chunk_range(fd, 0, ck, UINT64_MAX, NULL, NULL, out);
	rc = chunk_range(fd, 0, ck, h.start, NULL, NULL, out);
	pthread_join(t, NULL);
	if (rc == 0 && h.rc != 0)
		rc = h.rc;
	if (rc == 0) {
		uint64_t next = out->n ? out->off[out->n - 1] + out->b[out->n - 1].size : 0;
		k = blist_find(&h.l, next); /* already in step (the middle may be a cut point) */
		if (k < 0 && next < size)
			rc = chunk_range(fd, next, ck, UINT64_MAX, &h.l, &k, out);
	}
	for (size_t i = k < 0 ? h.l.n : (size_t)k; rc == 0 && i < h.l.n; i++)
		rc = blist_push(out, h.l.off[i], h.l.b[i].hash, h.l.b[i].size);
	free(h.l.b);
	free(h.l.off);
	return rc;
}

int
scan_chunk_fd(int fd, uint64_t size, uint32_t avg, int parallel, struct store_block **blocks,
	      size_t *n)
{
	struct sec_chunker ck;
	struct blist l = {0};
	int rc = sec_chunker_init(&ck, avg);

	if (rc != 0)
		return -EINVAL;
	rc = chunk_file(fd, size, &ck, &l, parallel ? 0 : UINT64_MAX);
	free(l.off);
	if (rc != 0) {
		free(l.b);
		return rc;
	}
	*blocks = l.b;
	*n = l.n;
	return 0;
}

static void
hash_one(int rootfd, struct hash_item *j)
{
	struct scan_entry *e = j->e;
	struct sec_chunker ck;
	struct stat st, st2;
	struct blist l = {0};
	uint64_t total = 0;
	int fd, rc;

	fd = fs_open_beneath(rootfd, e->name, O_RDONLY, 0);
	if (fd < 0) {
		j->err = fd;
		return;
	}
	if (fstat(fd, &st) != 0) {
		j->err = -errno;
		goto out;
	}
	if ((uint64_t)st.st_size != e->size || st.st_mtim.tv_sec != e->mtime_s ||
	    (uint32_t)st.st_mtim.tv_nsec != e->mtime_ns) {
		j->changed = 1;
		goto out;
	}
	j->block_size = sec_chunker_avg_for_size(e->size, e->x ? e->x->prev_block_size : 0);
	sec_chunker_init(&ck, j->block_size);
	rc = chunk_file(fd, e->size, &ck, &l, PARALLEL_MIN);
	if (rc != 0) {
		j->err = rc;
		goto out;
	}
	for (size_t i = 0; i < l.n; i++)
		total += l.b[i].size;
	j->blocks = l.b;
	j->nblocks = l.n;
	l.b = NULL;
	if (fstat(fd, &st2) != 0 || total != e->size || (uint64_t)st2.st_size != e->size ||
	    st2.st_mtim.tv_sec != st.st_mtim.tv_sec || st2.st_mtim.tv_nsec != st.st_mtim.tv_nsec)
		j->changed = 1;
out:
	free(l.b);
	free(l.off);
	if (fd >= 0)
		close(fd);
}

/* ---- recording (loop) ---- */

static void
entry_free(struct scan_entry *e)
{
	if (!e->x)
		return;
	free(e->x->target);
	free(e->x->adopted);
	free(e->x->prev_version);
	free(e->x);
	e->x = NULL;
}

static void deletions_free(struct deletions *d);

static void
scanner_free(struct scanner *s)
{
	deletions_free(s->dels);
	free(s->rec);
	for (size_t i = 0; i < s->nents; i++)
		entry_free(&s->ents[i]);
	free(s->ents);
	while (s->names) {
		struct arena_chunk *c = s->names;
		s->names = c->next;
		free(c);
	}
	free(s->todo);
	for (size_t i = 0; i < s->nunsure; i++)
		free(s->unsure[i]);
	free(s->unsure);
	for (size_t i = 0; i < s->nscopes; i++)
		free(s->scopes[i]);
	free(s->scopes);
	local_records_free(s->batch, s->nbatch);
	free(s->batch);
	if (s->rootfd >= 0)
		close(s->rootfd);
	free(s);
}

static int
txn_put_batch(struct store_txn *txn, void *arg)
{
	struct scanner *s = arg;
	char key[32];
	uint64_t saved = 0;
	size_t len = 0;

	/* The highest counter this device gave itself, for the inflation check after a restart. */
	snprintf(key, sizeof(key), "selfmax/%u", s->f->num);
	if (store_meta_get(txn, key, &saved, sizeof(saved), &len) != 0 || len != sizeof(saved) ||
	    saved < s->f->self_max) {
		int rc = store_meta_put(txn, key, &s->f->self_max, sizeof(s->f->self_max));
		if (rc != 0)
			return rc;
	}
	return local_records_put(txn, s->f->num, s->batch, s->nbatch, NULL);
}

static int
scan_flush(struct scanner *s)
{
	int rc = 0;
	if (s->nbatch == 0)
		return 0;
	size_t n = s->nbatch;
	rc = store_write(s->f->ag->store, txn_put_batch, s);
	for (size_t i = 0; rc == 0 && i < n; i++)
		folder_dirty_name(s->f, s->batch[i].name, s->batch[i].name_len);
	local_records_free(s->batch, s->nbatch);
	s->changes += s->nbatch;
	s->nbatch = 0;
	if (rc != 0) {
		folder_set_error(s->f, "cannot record the scan: %s", store_strerror(rc));
		s->failed = 1;
		return rc;
	}
	agent_local_index_changed(s->f->ag, s->f);
	struct json *j = events_begin(s->f->ag, "local_index_updated");
	json_key(j, "folder");
	json_str(j, s->f->id);
	json_key(j, "items");
	json_u64(j, n);
	events_end(s->f->ag, j, 0);
	return 0;
}

/*
 * Builds the new version: the previous one with our counter above every
 * counter in it and not below the clock (seconds since the epoch), so that a
 * counter can be judged against the time: a peer that claims a counter of ours
 * far in the future invented an edit (see the index checks in conn.c).
 */
static int
bump_version(struct folder *f, const struct store_counter *prev, size_t n,
	     struct store_counter **out, size_t *nout)
{
	struct agent *ag = f->ag;
	uint64_t max = 0;
	size_t me = n;
	struct store_counter *v = malloc((n + 1) * sizeof(*v));

	if (!v)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		v[i] = prev[i];
		if (prev[i].value > max)
			max = prev[i].value;
		if (prev[i].id == ag->short_id)
			me = i;
	}
	if (me == n) {
		v[n].id = ag->short_id;
		n++;
	}
	v[me].value = max + 1;
	if (v[me].value < (uint64_t)time(NULL))
		v[me].value = (uint64_t)time(NULL);
	if (v[me].value > f->self_max)
		f->self_max = v[me].value;
	*out = v;
	*nout = n;
	return 0;
}

/* Adds one record to the batch; takes ownership of blocks. */
static int
scan_record(struct scanner *s, struct scan_entry *e, int deleted, struct store_block *blocks,
	    size_t nblocks, uint32_t block_size)
{
	struct folder *f = s->f;
	struct store_file *r;
	int rc;

	if (s->nbatch == SCAN_BATCH && (rc = scan_flush(s)) != 0) {
		free(blocks);
		return rc;
	}
	if (!s->batch && !(s->batch = calloc(SCAN_BATCH, sizeof(*s->batch)))) {
		free(blocks);
		return -ENOMEM;
	}
	r = &s->batch[s->nbatch];
	memset(r, 0, sizeof(*r));
	r->name = strndup(e->name, e->name_len);
	r->name_len = e->name_len;
	if (!r->name) {
		free(blocks);
		return -ENOMEM;
	}
	r->type = e->type;
	r->mode = e->mode;
	r->mtime_s = e->mtime_s;
	r->mtime_ns = e->mtime_ns;
	r->inode = e->ino;
	r->ctime_s = e->ctime_s;
	r->ctime_ns = e->ctime_ns;
	if (deleted) {
		r->flags = STORE_FLAG_DELETED;
		r->size = 0;
	} else {
		r->size = e->type == STORE_FILE ? e->size : 0;
		r->blocks = blocks;
		r->nblocks = nblocks;
		r->block_size = block_size;
		if (e->x && e->x->target) {
			r->target = strdup(e->x->target);
			r->target_len = strlen(e->x->target);
			if (!r->target) {
				free((char *)r->name);
				free(blocks);
				return -ENOMEM;
			}
		}
	}
	const struct store_counter *prev = e->x ? e->x->prev_version : NULL;
	size_t nprev = e->x ? e->x->prev_nversion : 0;
	if (e->x && e->x->adopted) {
		/* The content is exactly a version a peer announced: that version it is. */
		r->version = e->x->adopted;
		r->nversion = e->x->nadopted;
		e->x->adopted = NULL;
		e->x->nadopted = 0;
	} else if (f->mode == MODE_RECEIVE) {
		/* Keep the cluster's version; mark the change as ours only. */
		r->flags |= STORE_FLAG_LOCALCHANGE;
		if (nprev) {
			r->version = malloc(nprev * sizeof(*r->version));
			if (!r->version) {
				free((char *)r->name);
				free((char *)r->target);
				free(r->blocks);
				return -ENOMEM;
			}
			memcpy(r->version, prev, nprev * sizeof(*r->version));
			r->nversion = nprev;
		}
	} else if ((rc = bump_version(f, prev, nprev, &r->version, &r->nversion)) != 0) {
		free((char *)r->name);
		free((char *)r->target);
		free(r->blocks);
		return rc;
	}
	s->nbatch++;
	return 0;
}

static void scan_next(struct scanner *s);

/*
 * A file whose content is exactly what a peer announces under the same name
 * takes that peer's version instead of a new one of ours: after a crash
 * between a pulled file's rename and its record, or when two devices start
 * out with the same files, nothing then looks like a conflict. A version that
 * the one recorded here already supersedes is not adopted (that content came
 * back by a local edit, which is a change of ours).
 */
static void
adopt_version(struct scanner *s, struct scan_entry *e, const struct store_block *blocks,
	      size_t nblocks)
{
	struct folder *f = s->f;
	struct store_txn *txn;
	struct device *d = f->ag->devices;

	while (d && !folder_shared_with(f, d))
		d = d->next;
	if (!d || store_read_begin(f->ag->store, &txn) != 0)
		return; /* no peer (no index to adopt from), or no index to read */
	for (; d && !(e->x && e->x->adopted); d = d->next) {
		struct store_file rf;
		if (!folder_shared_with(f, d) ||
		    store_file_get(txn, f->num, d->num, e->name, e->name_len, 1, &rf) != 0)
			continue;
		int same = rf.type == STORE_FILE && !(rf.flags & (STORE_FLAG_DELETED | STORE_FLAG_INVALID)) &&
			   rf.size == e->size && rf.nblocks == nblocks && rf.nversion > 0;
		for (size_t i = 0; same && i < nblocks; i++)
			same = rf.blocks[i].size == blocks[i].size &&
			       memcmp(rf.blocks[i].hash, blocks[i].hash, 32) == 0;
		if (same && e->x && e->x->prev_nversion &&
		    vv_compare(rf.version, rf.nversion, e->x->prev_version, e->x->prev_nversion) ==
			    VV_LESSER)
			same = 0;
		if (same && entry_extra(e) &&
		    (e->x->adopted = malloc(rf.nversion * sizeof(*e->x->adopted)))) {
			memcpy(e->x->adopted, rf.version, rf.nversion * sizeof(*e->x->adopted));
			e->x->nadopted = rf.nversion;
		}
		store_file_release(&rf);
	}
	store_read_end(txn);
}

static void
scan_finish(struct scanner *s)
{
	struct folder *f = s->f;
	int retry = s->retry;

	if (!s->failed)
		scan_flush(s);
	if (!s->failed) {
		if (!s->scopes)
			log_info("scanned %s: %zu entries, %zu changed, %.1f MB hashed in %.2f s",
				 f->id, s->nents, s->changes, (double)s->hashed_bytes / 1e6,
				 (double)(now_ms() - s->started_ms) / 1000.0);
		else
			log_debug("scanned %zu path%s of %s: %zu entries, %zu changed", s->nscopes,
				  s->nscopes == 1 ? "" : "s", f->id, s->nents, s->changes);
		if (s->skipped)
			log_warn("%s: %zu names were skipped (not valid UTF-8, control characters, "
				 "or unreadable)",
				 f->id, s->skipped);
		/* A good scan clears a scan's error, not a pull's (a full disk stays reported). */
		if (f->state == FOLDER_ERROR && s->walk_err == 0 && !f->error_from_pull)
			folder_clear_error(f);
	}
	if (s->temps)
		f->temps_seen = 1;
	f->scan = NULL;
	if (!s->aborted) {
		f->scan_done_gen = f->scan_running_gen;
		control_scan_finished(f->ag, f);
	}
	size_t nents = s->nents;
	scanner_free(s);
	/* A large scan's memory went back to malloc in many arenas (the walk ran on
	 * the thread pool): hand it back to the system, or an idle agent keeps it. */
	if (nents >= SCAN_TRIM_ENTRIES)
		malloc_trim(0);
	if (retry) {
		f->scan_wanted = 1;
		f->next_scan_ms = now_ms() + 500;
	}
	folder_job_done(f);
}

static void
hash_work(uv_work_t *w)
{
	struct hash_job *j = w->data;

	for (size_t i = 0; i < j->n; i++)
		hash_one(j->rootfd, &j->items[i]);
}

static void
hash_item_done(struct scanner *s, struct hash_item *j, int status)
{
	if (!s->aborted && !s->failed) {
		if (status != 0 || j->changed) {
			s->retry = 1;
			free(j->blocks);
		} else if (j->err == -ENOENT) {
			s->retry = 1; /* removed while we looked: the next scan records it */
			free(j->blocks);
		} else if (j->err != 0) {
			log_warn("%s: cannot read %s: %s", s->f->id, j->e->name, strerror(-j->err));
			free(j->blocks);
		} else {
			s->hashed_bytes += j->e->size;
			adopt_version(s, j->e, j->blocks, j->nblocks);
			if (scan_record(s, j->e, 0, j->blocks, j->nblocks, j->block_size) != 0)
				s->failed = 1;
		}
	} else {
		free(j->blocks);
	}
}

static void
hash_done(uv_work_t *w, int status)
{
	struct hash_job *j = w->data;
	struct scanner *s = j->s;

	s->inflight--;
	close(j->rootfd);
	for (size_t i = 0; i < j->n; i++)
		hash_item_done(s, &j->items[i], status);
	free(j);
	scan_next(s);
}

static void
scan_next(struct scanner *s)
{
	while (!s->aborted && !s->failed && s->inflight < SCAN_HASH_JOBS && s->next < s->ntodo) {
		struct hash_job *j = calloc(1, sizeof(*j));
		if (!j) {
			s->failed = 1;
			break;
		}
		j->s = s;
		for (uint64_t bytes = 0; j->n < HASH_GROUP_FILES && s->next < s->ntodo &&
					 bytes < HASH_GROUP_BYTES;) {
			struct scan_entry *e = &s->ents[s->todo[s->next]];
			if (j->n > 0 && bytes + e->size > HASH_GROUP_BYTES)
				break; /* a large file starts the next job */
			j->items[j->n++].e = e;
			s->next++;
			bytes += e->size;
		}
		j->work.data = j;
		j->rootfd = fcntl(s->rootfd, F_DUPFD_CLOEXEC, 3);
		if (j->rootfd < 0 || uv_queue_work(s->f->ag->loop, &j->work, hash_work, hash_done) != 0) {
			if (j->rootfd >= 0)
				close(j->rootfd);
			free(j);
			s->failed = 1; /* what the job held was not hashed yet: nothing to free */
			break;
		}
		s->inflight++;
	}
	if (s->inflight == 0 && (s->next >= s->ntodo || s->aborted || s->failed))
		scan_finish(s);
}

/* Name set for finding deletions. */
struct nameset {
	uint32_t *slots; /* index + 1 into ents, 0 = empty */
	size_t cap;
	struct scan_entry *ents;
};

static uint64_t
name_hash(const char *p, size_t n)
{
	uint64_t h = 1469598103934665603ull;
	for (size_t i = 0; i < n; i++) {
		h ^= (unsigned char)p[i];
		h *= 1099511628211ull;
	}
	return h;
}

static int
nameset_build(struct nameset *ns, struct scan_entry *ents, size_t n)
{
	ns->cap = 16;
	while (ns->cap < 2 * n)
		ns->cap *= 2;
	ns->slots = calloc(ns->cap, sizeof(*ns->slots));
	ns->ents = ents;
	if (!ns->slots)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		size_t k = name_hash(ents[i].name, ents[i].name_len) & (ns->cap - 1);
		while (ns->slots[k])
			k = (k + 1) & (ns->cap - 1);
		ns->slots[k] = (uint32_t)(i + 1);
	}
	return 0;
}

static int
nameset_has(const struct nameset *ns, const char *p, size_t n)
{
	size_t k = name_hash(p, n) & (ns->cap - 1);
	while (ns->slots[k]) {
		const struct scan_entry *e = &ns->ents[ns->slots[k] - 1];
		if (e->name_len == n && memcmp(e->name, p, n) == 0)
			return 1;
		k = (k + 1) & (ns->cap - 1);
	}
	return 0;
}

struct del_ctx {
	struct scanner *s;
	const char *scope; /* NULL: every entry */
	size_t scope_len;
	struct nameset *ns;
	struct scan_entry *dels;
	size_t ndels, cap;
	int err;
};

static int
find_deleted(const struct store_file *sf, void *arg)
{
	struct del_ctx *x = arg;
	struct scan_entry e;

	if (x->scope) {
		/* Names under the scope are contiguous in key order after the scope itself. */
		if (sf->name_len < x->scope_len || memcmp(sf->name, x->scope, x->scope_len) != 0)
			return 1;
		if (sf->name_len > x->scope_len && sf->name[x->scope_len] != '/')
			return 0; /* "scope-x" sorts between "scope" and "scope/..." */
	}
	if (sf->flags & STORE_FLAG_DELETED)
		return 0;
	if (nameset_has(x->ns, sf->name, sf->name_len))
		return 0;
	if (unsure_covers(x->s, sf->name, sf->name_len))
		return 0;
	if (x->ndels == x->cap) {
		size_t cap = x->cap ? 2 * x->cap : 64;
		struct scan_entry *n = realloc(x->dels, cap * sizeof(*n));
		if (!n)
			return -ENOMEM;
		x->dels = n;
		x->cap = cap;
	}
	memset(&e, 0, sizeof(e));
	e.name = arena_strndup(x->s, sf->name, sf->name_len);
	e.name_len = (uint32_t)sf->name_len;
	e.type = (uint8_t)sf->type;
	e.mode = (uint16_t)sf->mode;
	e.mtime_s = sf->mtime_s;
	e.mtime_ns = sf->mtime_ns;
	if (!e.name)
		return -ENOMEM;
	if (sf->nversion) {
		if (!entry_extra(&e) ||
		    !(e.x->prev_version = malloc(sf->nversion * sizeof(*e.x->prev_version)))) {
			free(e.x);
			return -ENOMEM;
		}
		memcpy(e.x->prev_version, sf->version, sf->nversion * sizeof(*e.x->prev_version));
		e.x->prev_nversion = sf->nversion;
	}
	x->dels[x->ndels++] = e;
	return 0;
}

static int
entry_changed(const struct scan_entry *e, const struct store_file *sf)
{
	if (sf->flags & STORE_FLAG_DELETED)
		return 1;
	if (sf->type != e->type || sf->mode != e->mode)
		return 1;
	if (sf->mtime_s != e->mtime_s || sf->mtime_ns != e->mtime_ns)
		return 1;
	if (e->type == STORE_FILE &&
	    (sf->size != e->size || sf->inode != e->ino || sf->ctime_s != e->ctime_s ||
	     sf->ctime_ns != e->ctime_ns))
		return 2; /* content may differ: rehash */
	if (e->type == STORE_SYMLINK &&
	    (sf->target_len != strlen(e->x->target) ||
	     memcmp(sf->target, e->x->target, sf->target_len)))
		return 1;
	return 0;
}

static int
u32_push(uint32_t **v, size_t *n, size_t *cap, uint32_t x)
{
	if (*n == *cap) {
		size_t c = *cap ? 2 * *cap : 256;
		uint32_t *nv = realloc(*v, c * sizeof(*nv));
		if (!nv)
			return -ENOMEM;
		*v = nv;
		*cap = c;
	}
	(*v)[(*n)++] = x;
	return 0;
}

static void scan_compare(struct scanner *s);

static void
walk_done(uv_work_t *w, int status)
{
	struct scanner *s = w->data;
	struct folder *f = s->f;

	if (s->aborted || status != 0) {
		s->failed = 1;
		scan_finish(s);
		return;
	}
	if (s->walk_err == -ENOENT) {
		folder_set_error(f, "the folder marker %s/" MARKER " is missing: is the disk "
				    "mounted? Not scanning, so nothing is deleted by mistake",
				 f->path);
		s->failed = 1;
		scan_finish(s);
		return;
	}
	if (s->walk_err != 0) {
		folder_set_error(f, "cannot read the folder: %s", strerror(-s->walk_err));
		s->failed = 1;
		scan_finish(s);
		return;
	}
	/* Every directory found is watched (again: a renamed one gets its new path). */
	if (!s->scopes)
		watch_dir(f, "");
	for (size_t i = 0; i < s->nents; i++)
		if (s->ents[i].type == STORE_DIR)
			watch_dir(f, s->ents[i].name);
	s->comparing = 1;
	scan_compare(s);
}

/* Compares entry i of the walk with the local index. */
static void
compare_one(struct scanner *s, struct store_txn *txn, size_t i)
{
	struct scan_entry *e = &s->ents[i];
	struct store_file sf;
	int ch = 2;
	int rc = store_file_get(txn, s->f->num, STORE_LOCAL, e->name, e->name_len, 0, &sf);

	if (rc == 0) {
		ch = entry_changed(e, &sf);
		if (ch && entry_extra(e)) {
			e->x->prev_block_size = sf.block_size;
			if (sf.nversion &&
			    (e->x->prev_version = malloc(sf.nversion * sizeof(*e->x->prev_version)))) {
				memcpy(e->x->prev_version, sf.version,
				       sf.nversion * sizeof(*e->x->prev_version));
				e->x->prev_nversion = sf.nversion;
			}
		}
		store_file_release(&sf);
	}
	if (ch == 0)
		return;
	/* Grown as needed: a rescan that finds little to do allocates little. */
	if (e->type == STORE_FILE && e->size > 0) {
		if (u32_push(&s->todo, &s->ntodo, &s->captodo, (uint32_t)i) != 0)
			s->failed = 1;
	} else if (u32_push(&s->rec, &s->nrec, &s->caprec, (uint32_t)i) != 0) {
		s->failed = 1;
	}
}

/*
 * What the index has and the walk did not find. A whole-folder scan walks the
 * local index a slice at a time (from after `after`); a scoped one walks each
 * scope's part at once.
 */
struct deletions {
	struct nameset ns;
	struct del_ctx dx;
	char *after;
	size_t after_len;
	size_t visited;
	int started, done;
};

static int
find_deleted_slice(const struct store_file *sf, void *arg)
{
	struct deletions *d = arg;
	int rc = find_deleted(sf, &d->dx);

	if (rc != 0 || ++d->visited < SCAN_SLICE)
		return rc;
	/* The slice is full: the next one starts after this name. */
	return bytes_replace(&d->after, &d->after_len, sf->name, sf->name_len) ? -ENOMEM : 1;
}

/* One step of finding deletions; sets d->done after the last. Returns 0 or a negative code. */
static int
deletions_step(struct scanner *s, struct store_txn *txn)
{
	struct deletions *d = s->dels;
	struct folder *f = s->f;
	int rc = 0;

	if (!d->started) {
		d->started = 1;
		if (nameset_build(&d->ns, s->ents, s->nents) != 0)
			return -ENOMEM;
		d->dx.s = s;
		d->dx.ns = &d->ns;
	}
	if (!s->scopes) {
		char *after = d->after;
		d->after = NULL;
		d->visited = 0;
		rc = store_files_each(txn, f->num, STORE_LOCAL, after, d->after_len, 0,
				      find_deleted_slice, d);
		free(after);
		d->done = rc == 0 && !d->after;
		return rc < 0 ? rc : 0;
	}
	for (size_t k = 0; k < s->nscopes && rc >= 0; k++) {
		struct store_file sf;
		int shallow = s->scopes[k][0] == SCOPE_SHALLOW;
		d->dx.scope = s->scopes[k] + shallow;
		d->dx.scope_len = strlen(d->dx.scope);
		/* The scope itself, then what sorts after it. */
		if (store_file_get(txn, f->num, STORE_LOCAL, d->dx.scope, d->dx.scope_len, 0, &sf) ==
		    0) {
			rc = find_deleted(&sf, &d->dx);
			store_file_release(&sf);
		}
		if (rc >= 0 && !shallow)
			rc = store_files_each(txn, f->num, STORE_LOCAL, d->dx.scope, d->dx.scope_len, 0,
					      find_deleted, &d->dx);
	}
	d->done = 1;
	return rc < 0 ? rc : 0;
}

static void
deletions_free(struct deletions *d)
{
	if (!d)
		return;
	for (size_t i = 0; i < d->dx.ndels; i++)
		entry_free(&d->dx.dels[i]);
	free(d->dx.dels);
	free(d->ns.slots);
	free(d->after);
	free(d);
}

/*
 * Compares the walk with the local index, then finds what the index has
 * that the walk did not, SCAN_SLICE entries per loop turn: in one go, a
 * million-entry folder held the loop (peers, the CLI) for over a second.
 * The rest of the slices run from the agent's idle handler (scan_slice()).
 * Then the changes without content are recorded and the hashing starts.
 */
static void
scan_compare(struct scanner *s)
{
	struct store_txn *txn = NULL;
	size_t end = s->cmp_next + SCAN_SLICE < s->nents ? s->cmp_next + SCAN_SLICE : s->nents;

	s->slices++;
	if (s->aborted || (!s->dels && !(s->dels = calloc(1, sizeof(*s->dels)))) ||
	    store_read_begin(s->f->ag->store, &txn) != 0)
		s->failed = 1;
	for (; s->cmp_next < end && !s->failed; s->cmp_next++)
		compare_one(s, txn, s->cmp_next);
	if (!s->failed && s->cmp_next == s->nents && deletions_step(s, txn) != 0)
		s->failed = 1;
	store_read_end(txn);
	if (!s->failed && !s->dels->done) {
		agent_slices_start(s->f->ag); /* the next slice at the next loop turn */
		return;
	}
	s->comparing = 0;
	if (s->slices > 1)
		log_debug("compared %s with its index in %zu slices", s->f->id, s->slices);
	for (size_t i = 0; i < s->nrec && !s->failed; i++) {
		struct scan_entry *e = &s->ents[s->rec[i]];
		if (e->type == STORE_FILE)
			adopt_version(s, e, NULL, 0); /* an empty file matches an empty version */
		if (scan_record(s, e, 0, NULL, 0, 0) != 0)
			s->failed = 1;
	}
	for (size_t i = 0; s->dels && i < s->dels->dx.ndels && !s->failed; i++)
		if (scan_record(s, &s->dels->dx.dels[i], 1, NULL, 0, 0) != 0)
			s->failed = 1;
	deletions_free(s->dels);
	s->dels = NULL;
	free(s->rec);
	s->rec = NULL;
	s->nrec = s->caprec = 0;
	scan_next(s);
}

int
scan_slice(struct folder *f)
{
	if (!f->scan || !f->scan->comparing)
		return 0;
	scan_compare(f->scan);
	return f->scan && f->scan->comparing;
}

int
scan_start(struct folder *f, char **scopes, size_t nscopes)
{
	struct scanner *s = calloc(1, sizeof(*s));

	if (!s) {
		for (size_t i = 0; i < nscopes; i++)
			free(scopes[i]);
		free(scopes);
		return -ENOMEM;
	}
	s->scopes = scopes;
	s->nscopes = nscopes;
	s->f = f;
	s->started_ms = now_ms();
	s->rootfd = fcntl(f->rootfd, F_DUPFD_CLOEXEC, 3);
	if (s->rootfd < 0) {
		int rc = -errno;
		scanner_free(s);
		return rc;
	}
	s->walk.data = s;
	if (uv_queue_work(f->ag->loop, &s->walk, walk_work, walk_done) != 0) {
		scanner_free(s);
		return -ENOMEM;
	}
	f->scan = s;
	return 0;
}

void
scan_abort(struct folder *f)
{
	if (f->scan) {
		f->scan->aborted = 1;
		if (f->scan->comparing)
			scan_compare(f->scan); /* ends it now: no slice may be left for later */
	}
}
