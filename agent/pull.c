/*
 * agent/pull.c - the puller: brings a folder up to the cluster's newest
 * versions.
 *
 * A pull runs in phases: plan (compare every shared device's index with the
 * local one by version vector), directories, files, symlinks, deletions, then
 * directory metadata. A file is written into a temporary ".shoal-tmp-*" file
 * in its own directory; each block comes from a local copy when the block map
 * knows one, else from the device that announced the version, with many
 * requests in flight (bounded by bytes). Every block's hash is checked before
 * it is written. Finished files are finalised in groups on the thread pool
 * (mode, mtime, one syncfs for the group or an fdatasync each, renames, one
 * more syncfs or an fsync per directory) and recorded in one transaction
 * every half second, so many small files cost few flushes and commits.
 */
#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "agent/agent.h"
#include "agent/events.h"
#include "agent/fsops.h"
#include "agent/log.h"
#include "agent/util.h"
#include "agent/version.h"
#include "crypto/chunker.h"

#define PULL_ACTIVE_MAX 64            /* files open at once */
#define PULL_INFLIGHT_MAX (8u << 20) /* block bytes requested or being written: plenty for
					 a LAN's bandwidth-delay product, small enough for RAM */
#define PULL_FINISH_BATCH 64
#define PULL_FINISHING_MAX 3 /* finish jobs at once: their fdatasyncs overlap, and the disk's
				cache flushes of concurrent fsyncs are merged */
#define PULL_FINISHED_MAX (2 * PULL_FINISH_BATCH) /* finished files waiting, at most */
/*
 * Bytes of downloaded files that a crash would lose: files waiting for or in
 * a finish job, not yet renamed, whose blocks no partial record lists. No new
 * file is opened above this, so a kill costs at most this plus what is in
 * flight (e2e.killloop).
 */
#define PULL_UNSAVED_MAX (8u << 20)
/*
 * A finish job of at least this many files makes them durable with one
 * syncfs(2) before the renames and one after, instead of one fdatasync per
 * file and one fsync per directory: on a journalled file system each of those
 * waits for its own commit and disk cache flush. syncfs also writes what
 * other programs left dirty on the same file system; when one takes longer
 * than PULL_SYNCFS_SLOW_MS, the puller goes back to per-file syncs for
 * PULL_SYNCFS_BACKOFF_MS so a busy neighbour does not hold up every batch.
 */
#define PULL_GROUP_SYNC_MIN 4
#define PULL_SYNCFS_SLOW_MS 1000
#define PULL_SYNCFS_BACKOFF_MS 60000
#define PULL_FINISH_WAIT_MS 200 /* a finished file waits at most this long for its batch */
#define PULL_RECORD_BATCH 1000
/*
 * Finished files are recorded at most this long after their rename, in one
 * transaction for many finish jobs: each LMDB commit costs the event loop two
 * fdatasyncs (4 ms on a journalled ext4 here), which one commit per batch of 64
 * small files made a fifth of a 10,000-file pull. A crash before the commit
 * loses only the records: the files are in place, and the next scan adopts
 * the peer's version of exactly that content without a new version.
 */
#define PULL_RECORD_WAIT_MS 500
#define PULL_RETRY_MS 5000
#define PULL_RUN_MAX (64u << 20)      /* the longest range of local blocks copied by one job */
#define PULL_RELEASE_MIN (16u << 20)  /* a replaced file this big is freed off the critical path */
/*
 * A large file's received blocks are handed to the disk every this many
 * bytes (sync_file_range WRITE, which does not wait). With plenty of memory
 * the kernel would otherwise keep a whole GiB dirty until the finish job's
 * sync, and the disk would start only once the network was done.
 */
#define PULL_WRITEBACK_KICK (16u << 20)
#define DURABLE_PULL_BYTES (1u << 20) /* a pull this big is kept in the durable event log */
/*
 * A pull plans a window of at most PULL_WINDOW needed items per device at a
 * time, in index key order, so its memory does not grow with the folder:
 * at about 190 bytes an item, holding the plan of a million files took
 * 190 MiB (docs/performance.md "Scale"). A window also ends after
 * PULL_WINDOW_VISIT entries of one device's index, so that a device with
 * little to give does not make every window read to the end of its index.
 */
#define PULL_WINDOW_DEFAULT 4096

/* PULL_WINDOW; SHOAL_PULL_WINDOW (2 or more) replaces it, for tests. */
static size_t
pull_window(void)
{
	static size_t v;
	if (!v) {
		const char *e = getenv("SHOAL_PULL_WINDOW");
		v = e && atoi(e) >= 2 ? (size_t)atoi(e) : PULL_WINDOW_DEFAULT;
	}
	return v;
}
#define PULL_WINDOW pull_window()
#define PULL_WINDOW_VISIT (4 * PULL_WINDOW)


/*
 * What the local index recorded for a path when the pull was planned. Before
 * a pulled version replaces or deletes what is on disk, the disk must still
 * match it: a change made since the last scan is never overwritten; the item
 * waits for the scan that records it.
 */
struct disk_state {
	int have;            /* a live local entry exists */
	uint32_t type;
	uint64_t size, ino;
	int64_t mtime_s;
	uint32_t mtime_ns;
};

struct need_item {
	char *name;
	size_t name_len;
	uint32_t dev;
	uint32_t type, flags;
	uint64_t size;
	int local_live;
	uint64_t local_size;
	struct store_counter *version;
	size_t nversion;
	struct disk_state local; /* what the local index says is on disk */
	uint64_t conflict_loser; /* non-zero: keep the local file as a conflict copy; the
				    short ID of the device that made the losing edit */
};

struct pull_file;

struct block_req {
	struct block_req *next; /* hash chain */
	uint64_t sent_ms;
	uint32_t id;
	struct pull_file *pf;
	size_t index;
	struct conn *conn;
};

struct pull_file {
	struct pull_file *next;
	struct puller *p;
	struct store_file rf; /* the wanted version, blocks included (owned) */
	char *name;
	const char *base;
	uint32_t dev;
	int fd, dirfd;
	uint64_t fsdev; /* st_dev of the temporary file (finish_work) */
	int old_fd; /* O_PATH descriptor of the large file this one replaced, or -1 */
	char tmp[64];
	uint64_t *offsets;
	size_t next_block, done_blocks, pending; /* pending: requests and jobs in flight */
	int failed;
	int changed; /* the target changed on disk since the last scan */
	struct disk_state expect;
	uint64_t conflict_loser;
	char conflict[300]; /* the conflict copy's name in the same directory, if any */
	uint8_t ident[32];  /* this version: hash of its size and block list */
	uint8_t *done_map;  /* bit i: block i verified in the temp file */
	uint8_t *resume_map; /* blocks a record says are there: verified again before use */
	size_t saved_done;  /* done_blocks when the partial record was last written */
	int opening;        /* open_work() is creating the temp file: no blocks yet */
	int copying;        /* a local run of this file is on the thread pool */
	struct write_job *runq, *runq_tail; /* local runs waiting for it, in order */
	int had_record;     /* a partial record for this name existed when we began */
	int open_root;      /* deferred creation: a duplicate of the folder's root, or -1 */
	uint64_t unsaved;   /* what it counts in the puller's unsaved_bytes */
	struct stat st;
	pthread_mutex_t wlock; /* one writer at a time (write_work) */
	uint64_t unkicked;     /* bytes written since the last writeback kick (under wlock) */
};

/*
 * One block from the network or a resumed temp file, or a local run: nblk
 * consecutive blocks that lie back to back in a local file (src_root/src_name
 * from src_off), copied by one job. The runs of one file go to the thread
 * pool one at a time (pull_file.runq): parallel writers of one file only
 * contend on its inode lock.
 */
struct write_job {
	uv_work_t work;
	struct pull_file *pf;
	size_t index, nblk;
	uint8_t *data;   /* the block's bytes (network, resumed); NULL for a run */
	size_t len;      /* bytes: the block, or the whole run */
	size_t budget;   /* what the job counts in the puller's inflight_bytes */
	int rc;
	/* a local run: from src_root/src_name at src_off */
	int src_root;
	char *src_name;
	uint64_t src_off;
	int verify_only; /* a resumed block: read it back from the temp file and check it */
	struct disk_state trust; /* the source as indexed; see local_find */
	int copied;      /* done in the kernel without a rehash */
	uint8_t *bad;    /* run: bit k set when block index+k did not check out (fetch it) */
	struct fs_copy_stats cs;
	struct write_job *next; /* pull_file.runq */
};

/* A partial download to record: the file stopped (failed or abort) with blocks verified. */
struct psave {
	struct psave *next;
	char *name;
	char tmp[64];
	uint8_t ident[32];
	uint32_t nblocks;
	uint8_t *bitmap;
	int drop; /* delete the record instead */
};

struct finish_job {
	uv_work_t work;
	struct puller *p;
	struct pull_file **files;
	size_t n;
	int group;         /* syncfs for the batch (PULL_GROUP_SYNC_MIN) */
	uint64_t sync_ms;  /* how long the first syncfs took */
};

enum pull_phase { PH_DIRS, PH_FILES, PH_LINKS, PH_DELETES, PH_DIRMETA, PH_DONE };

struct puller {
	struct folder *f;
	struct need_item *items; /* the current window of the plan */
	size_t nitems, next;
	int deleting;            /* the second sweep: deletions */
	size_t windows;          /* planned so far */
	int more;                /* windows after this one in the sweep */
	char *cursor;            /* the window's last name (key order; owned) */
	size_t cursor_len;
	int targeted;            /* planned from f->dirty: one window, deletions in tdel */
	struct need_item *tdel;
	size_t ntdel;
	struct need_item *dirs;  /* directories created or kept: their metadata comes last */
	size_t ndirs, capdirs;
	struct need_item *deldirs; /* directories to delete once the files in them are gone */
	size_t ndeldirs, capdeldirs;
	enum pull_phase phase;
	struct pull_file *active;
	size_t nactive;
	size_t inflight_bytes;
	uint64_t unsaved_bytes; /* see PULL_UNSAVED_MAX */
	size_t record_bad;      /* the batch entry a failed record write stopped at */
	uint64_t finished_since_ms; /* when the oldest file in finished[] got there */
	size_t jobs;
	struct pull_file **finished;
	size_t nfinished, capfinished;
	int finishing; /* finish jobs on the thread pool */
	struct store_file *batch;
	size_t nbatch, capbatch;
	uint64_t batch_since_ms; /* when the oldest record in batch[] was queued */
	uint64_t group_off_until_ms; /* per-file syncs until then (PULL_SYNCFS_SLOW_MS) */
	uint64_t last_expire_ms;
	size_t failures, done_files;
	uint64_t bytes_net, bytes_local, bytes_resumed, bytes_cloned;
	uint64_t started_ms;
	int aborted;
	int stopping;
	int in_advance, again;
	int advance_due; /* pull_advance_soon() asked for a turn at the end of this loop turn */
	size_t deferred; /* items skipped because disk or index moved on: rescan, then pull */
	struct psave *saves; /* partial records of files given up, to write outside a txn */
	char **touched; /* parent directories whose mtime our writes disturbed */
	size_t ntouched, captouched;
};

/* Outstanding requests of every puller of the agent, by request id. */
#define REQTAB 1024
static struct block_req *reqtab[REQTAB];

static void pull_advance(struct puller *p);

/*
 * A full disk stops the pull: one message however many files hit it (status
 * shows it; the per-file detail went to the rate-limited log).
 */
static void
pull_stop_no_space(struct puller *p)
{
	folder_set_error(p->f, "no space left on the device: pulling stopped until there is");
	p->stopping = 1;
}

/*
 * Asks for pull_advance() at the end of this turn of the event loop (a check
 * handle runs after the poll): the many responses and finished jobs that one
 * poll returns then cost one pass over the active files instead of one each.
 */
static void
pull_advance_soon(struct puller *p)
{
	struct agent *ag = p->f->ag;

	if (ag->stopping) {
		pull_advance(p);
		return;
	}
	p->advance_due = 1;
	if (!ag->pull_check_on) {
		uv_check_start(&ag->pull_check, pull_on_check);
		ag->pull_check_on = 1;
	}
}

void
pull_on_check(uv_check_t *h)
{
	struct agent *ag = h->data;

	uv_check_stop(h);
	ag->pull_check_on = 0;
	for (struct folder *f = ag->folders; f; f = f->next) {
		if (f->pull && f->pull->advance_due) {
			f->pull->advance_due = 0;
			pull_advance(f->pull);
		}
	}
}
static void pull_save_partials(struct puller *p);
static void touch_parent(struct puller *p, const char *name, size_t len);

/* ---- conflicts ---- */

/* The device whose counter is highest in v: the one that made the last edit. */
static uint64_t
vv_last_modifier(const struct store_counter *v, size_t n)
{
	uint64_t id = 0, max = 0;
	for (size_t i = 0; i < n; i++) {
		if (v[i].value > max || (v[i].value == max && v[i].id > id)) {
			max = v[i].value;
			id = v[i].id;
		}
	}
	return id;
}

/*
 * Decides a conflict between concurrent versions so that every device decides
 * the same: an edit beats a delete; else the newer mtime wins, and on a tie the
 * version last changed by the device with the larger short ID. Returns 0 when
 * the local version wins, 1 when the remote one wins and the local one is a
 * delete (nothing to keep), 2 when the remote one wins over a local edit.
 */
static int
conflict_remote_wins(const struct store_file *r, const struct store_file *l)
{
	int rdel = !!(r->flags & STORE_FLAG_DELETED), ldel = !!(l->flags & STORE_FLAG_DELETED);
	if (rdel != ldel)
		return ldel ? 1 : 0;
	if (rdel)
		return 0; /* both deleted: nothing to do */
	if (r->mtime_s != l->mtime_s || r->mtime_ns != l->mtime_ns)
		return (r->mtime_s > l->mtime_s ||
			(r->mtime_s == l->mtime_s && r->mtime_ns > l->mtime_ns))
			       ? 2
			       : 0;
	return vv_last_modifier(r->version, r->nversion) >
			       vv_last_modifier(l->version, l->nversion)
		       ? 2
		       : 0;
}

/*
 * NAME.sync-conflict-YYYYMMDD-HHMMSS-DEVICE.EXT in the same directory: the
 * losing version's modification time and the first seven characters of its
 * editor's device ID.
 */
static void
conflict_name(const char *base, uint64_t loser, int64_t mtime, char *out, size_t len)
{
	static const char b32[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
	char dev[8], stamp[32];
	const char *dot = strrchr(base, '.');
	time_t now = mtime > 0 ? (time_t)mtime : time(NULL);
	struct tm tm;

	for (int i = 0; i < 7; i++)
		dev[i] = b32[(loser >> (59 - 5 * i)) & 31];
	dev[7] = '\0';
	localtime_r(&now, &tm);
	strftime(stamp, sizeof(stamp), "%Y%m%d-%H%M%S", &tm);
	if (!dot || dot == base)
		dot = base + strlen(base);
	snprintf(out, len, "%.*s.sync-conflict-%s-%s%s", (int)(dot - base), base, stamp, dev, dot);
}

/* ---- planning ---- */

struct plan_ctx {
	struct store_txn *txn;
	uint32_t folder, dev;
	enum folder_mode mode;
	uint64_t self_id; /* this device's short ID (0: counting only) */
	struct need_item *items;
	size_t n, cap;
	int collect;
	struct counts need, delta_files_pos, delta_files_neg;
	int64_t dfiles, dbytes;
	size_t conflicts;
	/* windows (collect only): see PULL_WINDOW */
	int deleting;       /* collect deletions (else everything else) */
	size_t dev_items, dev_visited;
	int dev_full;       /* this device's part of the window is complete */
	char *end;          /* the window ends at this name (key order), NULL: no end yet */
	size_t end_len;
	/* a window never ends inside a group of names with the same first
	   STORE_ORDER_PREFIX bytes: their key order is not their name order */
	int holding;
	char group[STORE_ORDER_EXACT]; /* the prefix, then 0xff: the group's last possible name */
};

static int plan_entry(struct plan_ctx *x, const struct store_file *r);

/* The window ends at name, or before where another device's part ended. */
static int
window_end_at(struct plan_ctx *x, const char *name, size_t len)
{
	if (x->end && store_name_order(name, len, x->end, x->end_len) >= 0)
		return 0;
	return bytes_replace(&x->end, &x->end_len, name, len);
}

/*
 * Plans one entry of a device's index. Collecting, it also tracks the window:
 * once this device has given PULL_WINDOW items or PULL_WINDOW_VISIT entries,
 * the window ends at this name or before (x->end), and what any device gave
 * after x->end is dropped by plan_window().
 */
static int
plan_one(const struct store_file *r, void *arg)
{
	struct plan_ctx *x = arg;
	int rc;

	if (x->collect && x->end && store_name_order(r->name, r->name_len, x->end, x->end_len) > 0)
		return 1; /* past the window another device ended */
	if (x->holding) {
		if (r->name_len > STORE_ORDER_PREFIX &&
		    memcmp(r->name, x->group, STORE_ORDER_PREFIX) == 0)
			return plan_entry(x, r);
		/* The group is complete: the window ends after it, on every device. */
		x->holding = 0;
		rc = window_end_at(x, x->group, STORE_ORDER_EXACT);
		return rc < 0 ? rc : 1;
	}
	x->dev_visited++;
	rc = plan_entry(x, r);
	if (rc < 0 || !x->collect || x->dev_full ||
	    (x->dev_items < PULL_WINDOW && x->dev_visited < PULL_WINDOW_VISIT))
		return rc;
	/* This device's part of the window is complete: the window ends here at the latest. */
	x->dev_full = 1;
	if (r->name_len > STORE_ORDER_PREFIX) {
		/* ...or with the last name of this group. */
		x->holding = 1;
		memcpy(x->group, r->name, STORE_ORDER_PREFIX);
		memset(x->group + STORE_ORDER_PREFIX, 0xff, STORE_ORDER_EXACT - STORE_ORDER_PREFIX);
		return 0;
	}
	rc = window_end_at(x, r->name, r->name_len);
	return rc < 0 ? rc : 1;
}

static int
plan_entry(struct plan_ctx *x, const struct store_file *r)
{
	struct store_file l;
	int have, local_live = 0;
	uint64_t local_size = 0, conflict_loser = 0;
	struct disk_state ds;
	int rc;

	if (r->flags & STORE_FLAG_INVALID)
		return 0;
	rc = store_file_get(x->txn, x->folder, STORE_LOCAL, r->name, r->name_len, 0, &l);
	if (rc != 0 && rc != STORE_ENOTFOUND)
		return rc;
	have = rc == 0;
	memset(&ds, 0, sizeof(ds));
	if (have && !(l.flags & STORE_FLAG_DELETED)) {
		ds.have = 1;
		ds.type = l.type;
		ds.size = l.size;
		ds.ino = l.inode;
		ds.mtime_s = l.mtime_s;
		ds.mtime_ns = l.mtime_ns;
	}
	if (have) {
		enum vv_order o = vv_compare(r->version, r->nversion, l.version, l.nversion);
		local_live = !(l.flags & STORE_FLAG_DELETED);
		local_size = l.size;
		int want = o == VV_GREATER;
		if (x->mode == MODE_RECEIVE && (l.flags & STORE_FLAG_LOCALCHANGE) &&
		    (o == VV_GREATER || o == VV_CONCURRENT)) {
			/*
			 * Receive-only: the cluster's newer version replaces a local
			 * edit, which is kept beside it as a conflict copy (that
			 * stays local) rather than lost.
			 */
			want = 1;
			if (l.type == STORE_FILE && r->type == STORE_FILE &&
			    !(l.flags & STORE_FLAG_DELETED) && !(r->flags & STORE_FLAG_DELETED))
				conflict_loser = x->self_id;
		} else if (x->mode == MODE_RECEIVE && (l.flags & STORE_FLAG_LOCALCHANGE) &&
			   o == VV_EQUAL && l.type == STORE_DIR && r->type == STORE_DIR &&
			   !(l.flags & STORE_FLAG_DELETED) && !(r->flags & STORE_FLAG_DELETED) &&
			   l.mode == r->mode) {
			/*
			 * Receive-only: a directory whose only local change is its
			 * mtime (files written into it, by us before a crash cut the
			 * pull short, or by someone) gets the cluster's mtime back.
			 */
			want = 1;
		} else if (o == VV_CONCURRENT) {
			if (x->mode == MODE_RECEIVE) {
				want = 1;
			} else {
				/* Both changed it: every device picks the same winner. */
				int w = conflict_remote_wins(r, &l);
				want = w != 0;
				/*
				 * Only the device that made the losing edit keeps a copy of
				 * it (and sends it to everyone): the others just take the
				 * winner, so there is one copy however many devices there are.
				 */
				if (w == 2 && l.type == STORE_FILE && r->type == STORE_FILE &&
				    !(l.flags & STORE_FLAG_DELETED) && x->self_id &&
				    vv_last_modifier(l.version, l.nversion) == x->self_id)
					conflict_loser = x->self_id;
				x->conflicts += !want;
			}
		}
		store_file_release(&l);
		if (!want)
			return 0;
		if ((r->flags & STORE_FLAG_DELETED) && !local_live)
			return 0;
	} else if (r->flags & STORE_FLAG_DELETED) {
		return 0;
	}
	if (x->collect && (!x->dev_full || x->holding) &&
	    !(r->flags & STORE_FLAG_DELETED) == !x->deleting) {
		/* Several devices may offer the same name: keep the newest. */
		if (x->n == x->cap) {
			size_t cap = x->cap ? 2 * x->cap : 256;
			struct need_item *ni = realloc(x->items, cap * sizeof(*ni));
			if (!ni)
				return -ENOMEM;
			x->items = ni;
			x->cap = cap;
		}
		struct need_item *it = &x->items[x->n];
		memset(it, 0, sizeof(*it));
		it->name = strndup(r->name, r->name_len);
		it->version = malloc((r->nversion ? r->nversion : 1) * sizeof(*it->version));
		if (!it->name || !it->version) {
			free(it->name);
			free(it->version);
			return -ENOMEM;
		}
		memcpy(it->version, r->version, r->nversion * sizeof(*it->version));
		it->nversion = r->nversion;
		it->name_len = r->name_len;
		it->dev = x->dev;
		it->type = r->type;
		it->flags = r->flags;
		it->size = r->size;
		it->local_live = local_live;
		it->local_size = local_size;
		it->local = ds;
		it->conflict_loser = conflict_loser;
		x->n++;
		x->dev_items++;
	}
	x->need.files++;
	if (!(r->flags & STORE_FLAG_DELETED)) {
		x->need.bytes += r->size;
		if (!local_live)
			x->dfiles++;
		x->dbytes += (int64_t)r->size - (int64_t)(local_live ? local_size : 0);
	} else if (local_live) {
		x->dfiles--;
		x->dbytes -= (int64_t)local_size;
	}
	return 0;
}

static int
item_cmp_name(const void *a, const void *b)
{
	const struct need_item *x = a, *y = b;
	size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
	int c = memcmp(x->name, y->name, n);
	if (c)
		return c;
	return x->name_len < y->name_len ? -1 : x->name_len > y->name_len;
}

static int
item_phase(const struct need_item *it)
{
	if (it->flags & STORE_FLAG_DELETED)
		return 3;
	return it->type == STORE_DIR ? 0 : it->type == STORE_FILE ? 1 : 2;
}

static int
item_cmp_order(const void *a, const void *b)
{
	const struct need_item *x = a, *y = b;
	int px = item_phase(x), py = item_phase(y);
	if (px != py)
		return px - py;
	/* Deletions go deepest first: reverse name order puts children before parents. */
	return px == 3 ? item_cmp_name(b, a) : item_cmp_name(a, b);
}

static void
items_free(struct need_item *items, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(items[i].name);
		free(items[i].version);
	}
	free(items);
}

/* Several devices may offer the same name: keeps the item whose version dominates. */
static void
items_dedupe(struct plan_ctx *x)
{
	size_t w = 0;

	if (x->n < 2)
		return;
	qsort(x->items, x->n, sizeof(*x->items), item_cmp_name);
	for (size_t i = 0; i < x->n; i++) {
		if (w > 0 && item_cmp_name(&x->items[w - 1], &x->items[i]) == 0) {
			struct need_item *k = &x->items[w - 1], *o = &x->items[i];
			if (vv_compare(o->version, o->nversion, k->version, k->nversion) == VV_GREATER) {
				struct need_item t = *k;
				*k = *o;
				*o = t;
			}
			free(o->name);
			free(o->version);
			continue;
		}
		x->items[w++] = x->items[i];
	}
	x->n = w;
}

/* Starts a plan: x set up, with a read transaction. */
static int
plan_begin(struct plan_ctx *x, struct store *st, uint32_t folder, enum folder_mode mode,
	   uint64_t self_id, int collect, int deleting)
{
	memset(x, 0, sizeof(*x));
	x->self_id = self_id;
	x->folder = folder;
	x->mode = mode;
	x->collect = collect;
	x->deleting = deleting;
	return store_read_begin(st, &x->txn);
}

/* Ends the plan's transaction; when rc < 0, drops what it gathered. Returns rc. */
static int
plan_end(struct plan_ctx *x, int rc)
{
	store_read_end(x->txn);
	x->txn = NULL;
	if (rc < 0) {
		items_free(x->items, x->n);
		x->items = NULL;
		x->n = 0;
		free(x->end);
		x->end = NULL;
	}
	return rc;
}

/*
 * Gathers the items of one window: after the name `after` (NULL: from the
 * start), deletions or everything else, up to x->end (set when there are
 * more windows), and counts what the window needs.
 */
static int
plan_window(struct store *st, uint32_t folder, const uint32_t *devs, size_t ndevs,
	    enum folder_mode mode, uint64_t self_id, const char *after, size_t after_len,
	    int deleting, struct plan_ctx *x)
{
	struct store_checkpoint cp;
	int rc = plan_begin(x, st, folder, mode, self_id, 1, deleting);

	if (rc != 0)
		return rc;
	for (size_t i = 0; i < ndevs && rc >= 0; i++) {
		x->dev = devs[i];
		x->dev_items = x->dev_visited = 0;
		x->dev_full = 0;
		rc = store_files_each(x->txn, folder, devs[i], after, after_len, 0, plan_one, x);
		if (x->holding && rc >= 0) {
			/* The group ran to the end of this device's index: end the window
			 * after it for the devices still to come. */
			x->holding = 0;
			rc = window_end_at(x, x->group, STORE_ORDER_EXACT);
		}
	}
	if (rc >= 0)
		rc = store_checkpoint_get(x->txn, folder, STORE_LOCAL, &cp);
	if (plan_end(x, rc) < 0)
		return rc;
	if (x->end) {
		/* What devices gave past the window's end comes in the next window. */
		size_t w = 0;
		for (size_t i = 0; i < x->n; i++) {
			struct need_item *it = &x->items[i];
			if (store_name_order(it->name, it->name_len, x->end, x->end_len) > 0) {
				free(it->name);
				free(it->version);
			} else {
				x->items[w++] = *it;
			}
		}
		x->n = w;
	}
	if (ndevs > 1)
		items_dedupe(x);
	return 0;
}

/* The names of x's items in the order a pull works on them (malloc'd); frees the items. */
static int
items_take_names(struct plan_ctx *x, char ***names, size_t *n)
{
	if (x->n > 1)
		qsort(x->items, x->n, sizeof(*x->items), item_cmp_order);
	*names = calloc(x->n ? x->n : 1, sizeof(**names));
	if (!*names) {
		items_free(x->items, x->n);
		return -ENOMEM;
	}
	for (size_t i = 0; i < x->n; i++) {
		(*names)[i] = x->items[i].name;
		x->items[i].name = NULL;
	}
	*n = x->n;
	items_free(x->items, x->n);
	x->items = NULL;
	x->n = 0;
	return 0;
}

/* ---- what the next pull plans ---- */

/*
 * A pull plans only the names whose records changed since the last pull
 * began (f->dirty): names in a peer's index update and names a scan
 * recorded. Walking a whole index in windows for every edit cost a
 * folder of 100,000 files about a third of a CPU second on the receiver
 * (docs/performance.md "Scale"). Every name is planned, in windows, when
 * more than PULL_WINDOW names changed, and after whatever can make a name
 * needed without a change of its records: the agent's start, a device
 * connecting (a pull plans only what connected devices offer), a change of
 * shares or mode, a revert, forgotten deletions, and a pull that failed,
 * was aborted or deferred.
 */
void
folder_dirty_name(struct folder *f, const char *name, size_t len)
{
	if (f->dirty_all || f->mode == MODE_SEND)
		return; /* a send-only folder never pulls */
	if (f->dirty.n >= PULL_WINDOW || strmap_put(&f->dirty, name, len, 0) != 0)
		folder_dirty_all(f);
}

void
folder_dirty_all(struct folder *f)
{
	f->dirty_all = 1;
	strmap_clear(&f->dirty);
	if (f->pull_count) {
		/* A full pull's count was of what the devices offered before: count again. */
		if (f->counting && f->counting_for_pull) {
			plan_count_free(f->counting);
			f->counting = NULL;
		}
		f->pull_count = 0;
	}
}

struct names_ctx {
	struct plan_ctx *x;
	const uint32_t *devs;
	size_t ndevs;
};

static int
plan_name(const char *name, size_t len, uint64_t val, void *arg)
{
	struct names_ctx *c = arg;
	(void)val;

	for (size_t i = 0; i < c->ndevs; i++) {
		struct store_file r;
		int rc = store_file_get(c->x->txn, c->x->folder, c->devs[i], name, len, 0, &r);
		if (rc == STORE_ENOTFOUND)
			continue;
		if (rc != 0)
			return rc;
		c->x->dev = c->devs[i];
		rc = plan_entry(c->x, &r);
		store_file_release(&r);
		if (rc < 0)
			return rc;
	}
	return 0;
}

/* Plans the names of a set, as plan_window() plans a window (with no end). */
static int
plan_names(struct store *st, uint32_t folder, const uint32_t *devs, size_t ndevs,
	   enum folder_mode mode, uint64_t self_id, const struct strmap *names, int deleting,
	   struct plan_ctx *x)
{
	struct names_ctx c = {x, devs, ndevs};
	int rc = plan_begin(x, st, folder, mode, self_id, 1, deleting);

	if (rc != 0)
		return rc;
	rc = strmap_each(names, plan_name, &c);
	if (plan_end(x, rc) < 0)
		return rc;
	if (ndevs > 1)
		items_dedupe(x);
	return 0;
}

int
plan_names_list(struct store *st, uint32_t folder, const uint32_t *devs, size_t ndevs,
		enum folder_mode mode, const struct strmap *names, int deleting, char ***out,
		size_t *n, struct counts *need)
{
	struct plan_ctx x;
	int rc = plan_names(st, folder, devs, ndevs, mode, 0, names, deleting, &x);

	if (rc != 0)
		return rc;
	*need = x.need;
	return items_take_names(&x, out, n);
}

/* ---- counting in slices ---- */

/*
 * The folder's global and need figures come from a whole walk of every
 * device's index, like the first window of a full pull: seconds at a million
 * entries. The agent runs it in slices of at most `max` entries between
 * other work on its loop (agent.c, folder_update_counts()); the store may
 * change between slices, so a count that raced a change is redone.
 */
struct plan_count {
	struct plan_ctx x;
	uint32_t devs[64];
	size_t ndevs, dev_ix;
	char *after;
	size_t after_len;
	size_t visited, max;
};

int
plan_count_begin(uint32_t folder, const uint32_t *devs, size_t ndevs, enum folder_mode mode,
		 struct plan_count **out)
{
	struct plan_count *c = calloc(1, sizeof(*c));

	if (!c)
		return -ENOMEM;
	c->x.folder = folder;
	c->x.mode = mode;
	c->ndevs = ndevs < 64 ? ndevs : 64;
	memcpy(c->devs, devs, c->ndevs * sizeof(*devs));
	*out = c;
	return 0;
}

static int
count_one(const struct store_file *r, void *arg)
{
	struct plan_count *c = arg;
	int rc = plan_entry(&c->x, r);

	if (rc < 0)
		return rc;
	if (++c->visited < c->max)
		return 0;
	/* The slice is full: the next one starts after this name. */
	return bytes_replace(&c->after, &c->after_len, r->name, r->name_len) ? -ENOMEM : 1;
}

int
plan_count_step(struct plan_count *c, struct store *st, size_t max, int *done)
{
	int rc;

	*done = 0;
	c->visited = 0;
	c->max = max ? max : 1;
	rc = store_read_begin(st, &c->x.txn);
	if (rc != 0)
		return rc;
	while (rc == 0 && c->dev_ix < c->ndevs && c->visited < c->max) {
		char *after = c->after;
		c->after = NULL;
		c->x.dev = c->devs[c->dev_ix];
		rc = store_files_each(c->x.txn, c->x.folder, c->x.dev, after, c->after_len, 0,
				      count_one, c);
		free(after);
		if (rc == 0 && !c->after) {
			c->dev_ix++; /* this device's index is done */
			c->after_len = 0;
		}
	}
	store_read_end(c->x.txn);
	c->x.txn = NULL;
	if (rc < 0)
		return rc;
	*done = c->dev_ix >= c->ndevs;
	return 0;
}

void
plan_count_result(const struct plan_count *c, const struct counts *local, struct counts *global,
		  struct counts *need)
{
	*need = c->x.need;
	global->files = (uint64_t)((int64_t)local->files + c->x.dfiles);
	global->bytes = (uint64_t)((int64_t)local->bytes + c->x.dbytes);
}

void
plan_count_free(struct plan_count *c)
{
	if (!c)
		return;
	free(c->after);
	free(c);
}

int
plan_counts(struct store *st, uint32_t folder, const uint32_t *devs, size_t ndevs,
	    enum folder_mode mode, struct counts *local, struct counts *global, struct counts *need)
{
	struct plan_count *c;
	struct store_txn *txn;
	struct store_checkpoint cp;
	int done, rc = store_read_begin(st, &txn);

	if (rc != 0)
		return rc;
	store_checkpoint_get(txn, folder, STORE_LOCAL, &cp);
	store_read_end(txn);
	local->files = cp.files;
	local->bytes = cp.bytes;
	if ((rc = plan_count_begin(folder, devs, ndevs, mode, &c)) != 0)
		return rc;
	rc = plan_count_step(c, st, SIZE_MAX, &done);
	if (rc == 0)
		plan_count_result(c, local, global, need);
	plan_count_free(c);
	return rc;
}

int
plan_window_names(struct store *st, uint32_t folder, const uint32_t *devs, size_t ndevs,
		  enum folder_mode mode, const char *after, size_t after_len, int deleting,
		  char ***names, size_t *n, char **end, size_t *end_len)
{
	struct plan_ctx x;
	int rc = plan_window(st, folder, devs, ndevs, mode, 0, after, after_len, deleting, &x);

	if (rc != 0)
		return rc;
	if ((rc = items_take_names(&x, names, n)) != 0) {
		free(x.end);
		return rc;
	}
	*end = x.end;
	*end_len = x.end_len;
	return 0;
}

/* ---- recording ---- */

static int
txn_record(struct store_txn *txn, void *arg)
{
	struct puller *p = arg;
	size_t bad = 0;
	int rc;

	/* A finished file's partial record goes with it. */
	for (size_t i = 0; i < p->nbatch; i++) {
		if (p->batch[i].type != STORE_FILE)
			continue;
		rc = store_partial_del(txn, p->f->num, p->batch[i].name, p->batch[i].name_len);
		if (rc != 0 && rc != STORE_ENOTFOUND)
			return rc;
	}
	rc = local_records_put(txn, p->f->num, p->batch, p->nbatch, &bad);
	/* Logged by pull_flush() if it still fails: a full map is grown and this runs again. */
	p->record_bad = rc != 0 ? bad : SIZE_MAX;
	return rc;
}

static void
batch_clear(struct puller *p)
{
	local_records_free(p->batch, p->nbatch);
	p->nbatch = 0;
}

static int
pull_flush(struct puller *p)
{
	int rc;
	if (p->nbatch == 0)
		return 0;
	p->record_bad = SIZE_MAX;
	rc = store_write(p->f->ag->store, txn_record, p);
	if (rc != 0) {
		if (p->record_bad < p->nbatch)
			log_warn("%s: cannot record %.*s: %s", p->f->id,
				 (int)p->batch[p->record_bad].name_len, p->batch[p->record_bad].name,
				 store_strerror(rc));
		/* Keep the records: the files are on disk. Stop pulling and try again at the end. */
		folder_set_error(p->f, "cannot record pulled files: %s", store_strerror(rc));
		p->stopping = 1;
		return rc;
	}
	batch_clear(p);
	agent_local_index_changed(p->f->ag, p->f);
	return 0;
}

/* Flushes the records when enough wait or the oldest has waited long enough. */
static void
pull_flush_due(struct puller *p)
{
	if (p->nbatch >= PULL_RECORD_BATCH ||
	    (p->nbatch > 0 && now_ms() - p->batch_since_ms >= PULL_RECORD_WAIT_MS))
		pull_flush(p);
}

/* Queues a local record copied from rf (which it does not take). */
static int
pull_record(struct puller *p, const struct store_file *rf, const struct stat *st, int keep_blocks)
{
	struct store_file *r;

	/* Never flushes: callers may hold a read transaction. pull_advance() flushes. */
	if (p->nbatch == p->capbatch) {
		size_t cap = p->capbatch ? 2 * p->capbatch : 256;
		struct store_file *nb = realloc(p->batch, cap * sizeof(*nb));
		if (!nb)
			return -ENOMEM;
		p->batch = nb;
		p->capbatch = cap;
	}
	if (p->nbatch == 0)
		p->batch_since_ms = now_ms();
	r = &p->batch[p->nbatch];
	*r = *rf;
	r->flags &= ~STORE_FLAG_LOCALCHANGE;
	r->mode &= 0777; /* what was applied: setuid, setgid and sticky bits never are */
	r->owned = NULL;
	r->name = strndup(rf->name, rf->name_len);
	r->target = rf->target_len ? strndup(rf->target, rf->target_len) : NULL;
	r->version = malloc((rf->nversion ? rf->nversion : 1) * sizeof(*r->version));
	r->blocks = NULL;
	r->nblocks = 0;
	if (keep_blocks && rf->nblocks) {
		r->blocks = malloc(rf->nblocks * sizeof(*r->blocks));
		if (r->blocks) {
			memcpy(r->blocks, rf->blocks, rf->nblocks * sizeof(*r->blocks));
			r->nblocks = rf->nblocks;
		}
	}
	if (!r->name || !r->version || (rf->target_len && !r->target) ||
	    (keep_blocks && rf->nblocks && !r->blocks)) {
		free((char *)r->name);
		free((char *)r->target);
		free(r->version);
		free(r->blocks);
		return -ENOMEM;
	}
	memcpy(r->version, rf->version, rf->nversion * sizeof(*r->version));
	if (st) {
		r->inode = st->st_ino;
		r->ctime_s = st->st_ctim.tv_sec;
		r->ctime_ns = (uint32_t)st->st_ctim.tv_nsec;
	} else {
		r->inode = 0;
		r->ctime_s = 0;
		r->ctime_ns = 0;
	}
	p->nbatch++;
	return 0;
}

static int
fetch_remote(struct puller *p, const struct need_item *it, int with_blocks, struct store_file *rf,
	     struct store_txn **txn)
{
	int rc = store_read_begin(p->f->ag->store, txn);
	if (rc != 0)
		return rc;
	rc = store_file_get(*txn, p->f->num, it->dev, it->name, it->name_len, with_blocks, rf);
	if (rc != 0)
		store_read_end(*txn);
	return rc;
}

/*
 * Returns 1 when base in dirfd still is what the local index recorded (or is
 * absent when nothing was recorded). A directory where one is expected
 * matches whatever its times; it is merged into, not replaced.
 */
static int
disk_matches(int dirfd, const char *base, const struct disk_state *d, int want_dir)
{
	struct stat st;

	if (fstatat(dirfd, base, &st, AT_SYMLINK_NOFOLLOW) != 0)
		return errno == ENOENT; /* gone: a local delete loses to the pulled version */
	if (want_dir && S_ISDIR(st.st_mode))
		return 1;
	if (!d->have)
		return 0; /* something new that no scan has recorded yet */
	if (S_ISDIR(st.st_mode))
		return d->type == STORE_DIR;
	if (S_ISLNK(st.st_mode))
		return d->type == STORE_SYMLINK;
	return S_ISREG(st.st_mode) && d->type == STORE_FILE && (uint64_t)st.st_size == d->size &&
	       st.st_mtim.tv_sec == d->mtime_s && (uint32_t)st.st_mtim.tv_nsec == d->mtime_ns &&
	       (d->ino == 0 || (uint64_t)st.st_ino == d->ino);
}

/* The peer's entry may have changed since the plan: act only on the planned version. */
static int
item_current(const struct need_item *it, const struct store_file *rf)
{
	int deleted = !!(rf->flags & STORE_FLAG_DELETED);
	return deleted == !!(it->flags & STORE_FLAG_DELETED) && rf->type == it->type &&
	       vv_compare(rf->version, rf->nversion, it->version, it->nversion) == VV_EQUAL;
}

/* The item could not be applied as planned: look again after a scan. */
static void
item_defer(struct puller *p, const struct need_item *it, const char *why)
{
	log_info("%s: %s: %s; trying again after a rescan", p->f->id, it->name, why);
	p->deferred++;
}

/* ---- request table ---- */

static void
req_add(struct block_req *r)
{
	struct block_req **b = &reqtab[r->id % REQTAB];
	r->next = *b;
	*b = r;
}

static struct block_req *
req_peek(uint32_t id)
{
	for (struct block_req *r = reqtab[id % REQTAB]; r; r = r->next)
		if (r->id == id)
			return r;
	return NULL;
}

static struct block_req *
req_take(uint32_t id)
{
	struct block_req **pp = &reqtab[id % REQTAB];
	while (*pp) {
		if ((*pp)->id == id) {
			struct block_req *r = *pp;
			*pp = r->next;
			return r;
		}
		pp = &(*pp)->next;
	}
	return NULL;
}

/* ---- files ---- */

static void
pf_fail(struct pull_file *pf, const char *why)
{
	if (!pf->failed) {
		pf->failed = 1;
		log_peer(LOG_WARN, "%s: cannot pull %s: %s", pf->p->f->id, pf->name, why);
	}
}

/*
 * The blocks a partial record of pf should list, in out: those verified in
 * this attempt, and those an earlier record listed that are not checked yet
 * (they are checked again whenever the file is resumed). Without the latter,
 * a kill soon after a restart would leave a record of the few blocks
 * checked so far, and the next attempt would fetch the rest again.
 */
static void
pf_save_map(const struct pull_file *pf, uint8_t *out)
{
	size_t bl = (pf->rf.nblocks + 7) / 8;
	memcpy(out, pf->done_map, bl);
	for (size_t i = 0; pf->resume_map && i < bl; i++)
		out[i] |= pf->resume_map[i];
}

/* Queues the partial record of pf to be written (or, with drop, deleted). */
static void
psave_add(struct pull_file *pf, int drop)
{
	struct puller *p = pf->p;
	struct psave *ps = calloc(1, sizeof(*ps));
	size_t bl = (pf->rf.nblocks + 7) / 8;

	if (!ps || !(ps->name = strdup(pf->name)) || !(ps->bitmap = malloc(bl ? bl : 1))) {
		if (ps)
			free(ps->name);
		free(ps);
		return;
	}
	memcpy(ps->tmp, pf->tmp, sizeof(ps->tmp));
	memcpy(ps->ident, pf->ident, 32);
	ps->nblocks = (uint32_t)pf->rf.nblocks;
	if (bl)
		pf_save_map(pf, ps->bitmap);
	ps->drop = drop;
	ps->next = p->saves;
	p->saves = ps;
}

static void
pf_free(struct pull_file *pf)
{
	pf->p->unsaved_bytes -= pf->unsaved;
	pf->unsaved = 0;
	/*
	 * A file given up with verified blocks keeps its temp file and a record
	 * of them, so that the next attempt (or the next run) resumes it.
	 */
	int keep = pf->failed && !pf->changed && pf->done_blocks > 0 && pf->done_map &&
		   pf->fd >= 0 && pf->dirfd >= 0;
	if (keep)
		psave_add(pf, 0);
	else if (pf->failed && (pf->had_record || pf->saved_done > 0))
		psave_add(pf, 1);
	if (pf->fd >= 0)
		close(pf->fd);
	if (pf->old_fd >= 0)
		close(pf->old_fd);
	if (pf->open_root >= 0)
		close(pf->open_root);
	if (pf->dirfd >= 0) {
		if (pf->failed && !keep)
			unlinkat(pf->dirfd, pf->tmp, 0);
		close(pf->dirfd);
	}
	store_file_release(&pf->rf);
	free(pf->name);
	free(pf->offsets);
	free(pf->done_map);
	free(pf->resume_map);
	pthread_mutex_destroy(&pf->wlock);
	free(pf);
}

static void
pf_unlink_active(struct pull_file *pf)
{
	struct puller *p = pf->p;
	struct pull_file **pp = &p->active;
	while (*pp && *pp != pf)
		pp = &(*pp)->next;
	if (*pp) {
		*pp = pf->next;
		p->nactive--;
	}
}

/* Called when a block finished (or failed); moves the file on when nothing is pending. */
static void
pf_settle(struct pull_file *pf)
{
	struct puller *p = pf->p;

	if (pf->pending > 0)
		return;
	if (!pf->failed && pf->done_blocks < pf->rf.nblocks && !p->aborted)
		return;
	pf_unlink_active(pf);
	if (pf->failed || p->aborted) {
		if (!p->aborted)
			p->failures++;
		pf->failed = 1;
		pf_free(pf);
		return;
	}
	if (p->nfinished == p->capfinished) {
		size_t cap = p->capfinished ? 2 * p->capfinished : PULL_FINISH_BATCH;
		struct pull_file **nf = realloc(p->finished, cap * sizeof(*nf));
		if (!nf) {
			pf->failed = 1;
			p->failures++;
			pf_free(pf);
			return;
		}
		p->finished = nf;
		p->capfinished = cap;
	}
	/*
	 * Until it is renamed, a crash loses the blocks no partial record lists.
	 * Not those of a one-block file: its write gave it the version's mtime,
	 * and the next run verifies it in place (open_work).
	 */
	if (pf->rf.nblocks > 1 && pf->done_blocks > pf->saved_done)
		pf->unsaved = pf->rf.size / pf->rf.nblocks * (pf->done_blocks - pf->saved_done);
	p->unsaved_bytes += pf->unsaved;
	if (p->nfinished == 0)
		p->finished_since_ms = now_ms();
	p->finished[p->nfinished++] = pf;
}

/* The source still is what the scanner indexed (the trust it puts in size, mtime and inode). */
static int
src_trusted(int fd, const struct disk_state *t)
{
	struct stat sst;
	return t->have && fstat(fd, &sst) == 0 && (uint64_t)sst.st_size == t->size &&
	       (uint64_t)sst.st_ino == t->ino && sst.st_mtim.tv_sec == t->mtime_s &&
	       (uint32_t)sst.st_mtim.tv_nsec == t->mtime_ns;
}

/*
 * A local run. A source that still is exactly what the scanner indexed holds
 * the recorded blocks: the kernel copies (or clones) the whole range and
 * nothing is rehashed. Otherwise, or when the kernel cannot copy, each block
 * is read, checked against its hash and written; one that does not match is
 * marked in bad and fetched from a peer instead.
 */
static void
run_work(struct write_job *j)
{
	struct pull_file *pf = j->pf;
	uint64_t out = pf->offsets[j->index], soff = j->src_off;
	size_t maxb = 0;
	uint8_t *buf;
	int fd = fs_open_beneath(j->src_root, j->src_name, O_RDONLY, 0);

	if (fd < 0) {
		j->rc = fd;
		return;
	}
	if (src_trusted(fd, &j->trust)) {
		int rc = fs_copy_range(fd, j->src_off, pf->fd, out, j->len, &j->cs);
		/* Still the indexed file after the copy? Then the bytes are good. */
		if (rc == 0 && src_trusted(fd, &j->trust)) {
			close(fd);
			j->copied = 1;
			j->rc = 0;
			return;
		}
		if (rc == -ENOSPC) {
			close(fd);
			j->rc = -ENOSPC;
			return;
		}
		/* Fall back to reading and checking. */
		j->cs.cloned = j->cs.copied = 0;
	}
	for (size_t k = 0; k < j->nblk; k++)
		if (pf->rf.blocks[j->index + k].size > maxb)
			maxb = pf->rf.blocks[j->index + k].size;
	buf = malloc(maxb ? maxb : 1);
	if (!buf) {
		close(fd);
		j->rc = -ENOMEM;
		return;
	}
	j->rc = 0;
	for (size_t k = 0; k < j->nblk && j->rc == 0; k++) {
		const struct store_block *b = &pf->rf.blocks[j->index + k];
		unsigned char h[32];
		size_t off = 0;
		while (off < b->size) {
			ssize_t r = pread(fd, buf + off, b->size - off, (off_t)(soff + off));
			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0)
				break;
			off += (size_t)r;
		}
		soff += b->size;
		if (off == b->size)
			sec_block_hash(buf, off, h);
		if (off != b->size || sodium_memcmp(h, b->hash, 32) != 0) {
			j->bad[k / 8] |= (uint8_t)(1u << (k % 8));
			continue;
		}
		for (off = 0; off < b->size;) {
			ssize_t r = pwrite(pf->fd, buf + off, b->size - off,
					   (off_t)(pf->offsets[j->index + k] + off));
			if (r < 0 && errno == EINTR)
				continue;
			if (r < 0) {
				j->rc = -errno;
				break;
			}
			off += (size_t)r;
		}
	}
	free(buf);
	close(fd);
}

static int temp_create(struct pull_file *pf, int reserve);

/* The version's mtime as futimens() wants it (access time the same). */
static void
version_times(const struct store_file *rf, struct timespec ts[2])
{
	ts[0].tv_sec = (time_t)rf->mtime_s;
	ts[0].tv_nsec = (long)rf->mtime_ns;
	ts[1] = ts[0];
}

static void
write_work(uv_work_t *w)
{
	struct write_job *j = w->data;
	struct pull_file *pf = j->pf;
	const struct store_block *b = &pf->rf.blocks[j->index];
	unsigned char h[32];
	size_t off = 0;

	if (j->src_name) {
		run_work(j);
		return;
	}
	if (j->verify_only) {
		while (off < j->len) {
			ssize_t r = pread(pf->fd, j->data + off, j->len - off,
					  (off_t)(pf->offsets[j->index] + off));
			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0)
				break;
			off += (size_t)r;
		}
		sec_block_hash(j->data, off, h);
		j->rc = off == j->len && sodium_memcmp(h, b->hash, 32) == 0 ? 0 : -EBADMSG;
		return;
	}
	sec_block_hash(j->data, j->len, h);
	if (sodium_memcmp(h, b->hash, 32) != 0) {
		j->rc = -EBADMSG;
		return;
	}
	if (pf->fd < 0 && pf->open_root >= 0) {
		/* A one-block file is created with its only write (pf_open). */
		pf->dirfd = fs_open_parent(pf->open_root, pf->name, &pf->base);
		if (pf->dirfd < 0) {
			j->rc = pf->dirfd;
			return;
		}
		if ((j->rc = temp_create(pf, 0)) != 0)
			return;
	}
	int kick = 0;
	pthread_mutex_lock(&pf->wlock);
	while (off < j->len) {
		ssize_t r = pwrite(pf->fd, j->data + off, j->len - off,
				   (off_t)(pf->offsets[j->index] + off));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			j->rc = -errno;
			break;
		}
		off += (size_t)r;
	}
	pf->unkicked += off;
	if (pf->unkicked >= PULL_WRITEBACK_KICK) {
		pf->unkicked = 0;
		kick = 1;
	}
	pthread_mutex_unlock(&pf->wlock);
	if (off < j->len)
		return;
	/* Start writing what is dirty now, so the disk works while the rest arrives. */
	if (kick)
		sync_file_range(pf->fd, 0, 0, SYNC_FILE_RANGE_WRITE);
	if (pf->rf.nblocks == 1) {
		/* The whole file is here: its mtime marks it finished for a next run (open_work). */
		struct timespec ts[2];
		version_times(&pf->rf, ts);
		futimens(pf->fd, ts);
	}
	j->rc = 0;
}

static int pf_request(struct pull_file *pf, size_t index);

static void write_done(uv_work_t *w, int status);

static void
job_free(struct write_job *j)
{
	if (j->src_name) {
		free(j->src_name);
		close(j->src_root);
	}
	free(j->bad);
	free(j->data);
	free(j);
}

static void
block_done(struct pull_file *pf, size_t index)
{
	pf->done_blocks++;
	pf->done_map[index / 8] |= (uint8_t)(1u << (index % 8));
	pf->p->f->pull_done_bytes += pf->rf.blocks[index].size;
}

/* Fetches blocks [index, index + n) of pf from the peer; fails pf when it cannot. */
static void
refetch(struct pull_file *pf, size_t index, size_t n, const uint8_t *only)
{
	for (size_t k = 0; k < n && !pf->failed; k++) {
		if (only && !(only[k / 8] & (1u << (k % 8))))
			continue;
		if (pf_request(pf, index + k) != 0)
			pf_fail(pf, "no connected device has the block");
	}
}

static void
run_submit(struct write_job *j)
{
	struct pull_file *pf = j->pf;
	struct puller *p = pf->p;

	if (uv_queue_work(p->f->ag->loop, &j->work, write_work, write_done) != 0) {
		pf->pending--;
		job_free(j);
		pf_fail(pf, "cannot queue a copy");
		return;
	}
	p->jobs++;
	pf->copying = 1;
}

/* A local run finished: account for its blocks, then start the file's next run. */
static void
run_done(struct write_job *j, int status)
{
	struct pull_file *pf = j->pf;
	struct puller *p = pf->p;

	pf->copying = 0;
	if (status == 0 && j->rc == 0) {
		for (size_t k = 0; k < j->nblk; k++) {
			if (j->bad[k / 8] & (1u << (k % 8)))
				continue;
			block_done(pf, j->index + k);
			p->bytes_local += pf->rf.blocks[j->index + k].size;
		}
		p->bytes_cloned += j->cs.cloned;
		if (!p->aborted)
			refetch(pf, j->index, j->nblk, j->bad); /* what went stale comes from a peer */
	} else if ((j->rc == -ENODATA || j->rc == -ENOENT || j->rc == -ELOOP || j->rc == -EXDEV) &&
		   !p->aborted) {
		/* The local copy went away: fetch these blocks from the peer. */
		refetch(pf, j->index, j->nblk, NULL);
	} else if (j->rc == -ENOSPC) {
		pf_fail(pf, "no space left on the device");
		pull_stop_no_space(p);
	} else {
		pf_fail(pf, strerror(j->rc < 0 ? -j->rc : EIO));
	}
	job_free(j);
	while (pf->runq && !pf->copying) {
		struct write_job *n = pf->runq;
		pf->runq = n->next;
		if (!pf->runq)
			pf->runq_tail = NULL;
		if (pf->failed || p->aborted || p->stopping) {
			pf->pending--;
			job_free(n);
		} else {
			run_submit(n);
		}
	}
}

static void
write_done(uv_work_t *w, int status)
{
	struct write_job *j = w->data;
	struct pull_file *pf = j->pf;
	struct puller *p = pf->p;

	p->jobs--;
	p->inflight_bytes -= j->budget;
	pf->pending--;
	if (j->verify_only && (status != 0 || j->rc != 0) && pf->resume_map)
		pf->resume_map[j->index / 8] &= (uint8_t)~(1u << (j->index % 8));
	if (j->src_name) {
		run_done(j, status);
		j = NULL;
	} else if (j->verify_only && (status != 0 || j->rc != 0) && !p->aborted && !pf->failed) {
		/* What the temp file held of this block is not right: fetch it. */
		if (pf_request(pf, j->index) != 0)
			pf_fail(pf, "the device that has it is not connected");
	} else if (status == 0 && j->rc == 0) {
		block_done(pf, j->index);
		if (!j->verify_only)
			p->bytes_net += j->len;
		else
			p->bytes_resumed += j->len;
	} else if (j->rc == -EBADMSG) {
		pf_fail(pf, "a block from the peer does not match its hash");
	} else if (j->rc == -ENOSPC) {
		pf_fail(pf, "no space left on the device");
		pull_stop_no_space(p);
	} else {
		pf_fail(pf, strerror(j->rc < 0 ? -j->rc : EIO));
	}
	if (j)
		job_free(j);
	/* Large files: remember progress every 64 blocks too, not only once a second. */
	if (!pf->failed && pf->done_blocks >= pf->saved_done + 64 && !p->in_advance)
		pull_save_partials(p);
	pf_settle(pf);
	pull_advance_soon(p);
}

/* Queues a network block (data, src_root -1) or a resumed one to check (src_root -2). */
static int
queue_write(struct pull_file *pf, size_t index, uint8_t *data, int src_root)
{
	struct puller *p = pf->p;
	struct write_job *j = calloc(1, sizeof(*j));

	if (!j)
		return -ENOMEM;
	j->verify_only = src_root == -2;
	j->src_root = -1;
	j->pf = pf;
	j->index = index;
	j->nblk = 1;
	j->data = data;
	j->len = pf->rf.blocks[index].size;
	j->budget = j->len;
	j->work.data = j;
	if (uv_queue_work(p->f->ag->loop, &j->work, write_work, write_done) != 0) {
		free(j);
		return -ENOMEM;
	}
	p->jobs++;
	p->inflight_bytes += j->budget;
	pf->pending++;
	return 0;
}

/*
 * Queues a local run of nblk blocks from index, len bytes in all, found at
 * src_off in src_root/src_name (both taken, also on failure). It goes to the
 * thread pool now, or after the file's runs before it.
 */
static int
queue_run(struct pull_file *pf, size_t index, size_t nblk, size_t len, int src_root,
	  char *src_name, uint64_t src_off, const struct disk_state *trust)
{
	struct write_job *j = calloc(1, sizeof(*j));

	if (!j || !(j->bad = calloc((nblk + 7) / 8, 1))) {
		free(j);
		free(src_name);
		close(src_root);
		return -ENOMEM;
	}
	j->pf = pf;
	j->index = index;
	j->nblk = nblk;
	j->len = len;
	j->src_root = src_root;
	j->src_name = src_name;
	j->src_off = src_off;
	j->trust = *trust;
	j->work.data = j;
	pf->pending++;
	if (pf->copying) {
		if (pf->runq_tail)
			pf->runq_tail->next = j;
		else
			pf->runq = j;
		pf->runq_tail = j;
		return 0;
	}
	run_submit(j);
	return 0;
}

static int
pf_request(struct pull_file *pf, size_t index)
{
	struct puller *p = pf->p;
	struct agent *ag = p->f->ag;
	struct device *d = agent_device_by_num(ag, pf->dev);
	struct block_req *r;
	struct proto_request req;

	if (!d || !d->conn || !conn_active(d->conn))
		return -ENOTCONN;
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->id = ++ag->next_req_id;
	r->sent_ms = now_ms();
	r->pf = pf;
	r->index = index;
	r->conn = d->conn;
	memset(&req, 0, sizeof(req));
	req.id = r->id;
	req.folder.p = (const uint8_t *)p->f->id;
	req.folder.len = strlen(p->f->id);
	req.name.p = (const uint8_t *)pf->name;
	req.name.len = pf->rf.name_len;
	req.offset = pf->offsets[index];
	req.size = pf->rf.blocks[index].size;
	memcpy(req.hash, pf->rf.blocks[index].hash, 32);
	if (conn_request(d->conn, &req) != 0) {
		free(r);
		return -ENOTCONN;
	}
	req_add(r);
	pf->pending++;
	p->inflight_bytes += req.size;
	return 0;
}

struct local_find {
	struct agent *ag;
	struct store_txn *txn;
	uint32_t size;
	int rootfd;
	uint32_t folder;
	char *name;
	uint64_t off;
	struct disk_state trust; /* the source's recorded state: when the disk still matches,
				    its blocks are what the index says and need no rehash */
};

static int
local_found(uint32_t folder, const char *name, size_t name_len, uint64_t offset, uint32_t size,
	    void *arg)
{
	struct local_find *lf = arg;
	if (size != lf->size)
		return 0;
	for (struct folder *f = lf->ag->folders; f; f = f->next) {
		if (f->num == folder && f->rootfd >= 0) {
			struct store_file rec;
			lf->name = strndup(name, name_len);
			if (!lf->name)
				return -ENOMEM;
			lf->rootfd = f->rootfd;
			lf->folder = folder;
			lf->off = offset;
			memset(&lf->trust, 0, sizeof(lf->trust));
			if (store_file_get(lf->txn, folder, STORE_LOCAL, name, name_len, 0, &rec) == 0) {
				if (rec.type == STORE_FILE && !(rec.flags & STORE_FLAG_DELETED) &&
				    rec.inode) {
					lf->trust.have = 1;
					lf->trust.size = rec.size;
					lf->trust.ino = rec.inode;
					lf->trust.mtime_s = rec.mtime_s;
					lf->trust.mtime_ns = rec.mtime_ns;
				}
				store_file_release(&rec);
			}
			return 1;
		}
	}
	return 0;
}

/* Does the block map put a block right after the run so far, in the same file? */
struct run_next {
	uint32_t folder;
	const char *name;
	size_t name_len;
	uint64_t off;
	uint32_t size;
	int found;
};

static int
run_extends(uint32_t folder, const char *name, size_t name_len, uint64_t offset, uint32_t size,
	    void *arg)
{
	struct run_next *x = arg;
	if (folder != x->folder || offset != x->off || size != x->size ||
	    name_len != x->name_len || memcmp(name, x->name, name_len) != 0)
		return 0;
	x->found = 1;
	return 1;
}

/*
 * Starts as many block fetches of pf as the in-flight budget allows. Blocks
 * a local file holds go as runs: the following blocks join the run while the
 * block map puts each right after the previous one in the same file, so an
 * unchanged stretch of a large file is one copy (or clone) instead of one per
 * block.
 */
static void
pf_pump(struct pull_file *pf, struct store_txn *txn)
{
	struct puller *p = pf->p;

	if (pf->opening)
		return;
	while (!pf->failed && !p->aborted && pf->next_block < pf->rf.nblocks &&
	       p->inflight_bytes < PULL_INFLIGHT_MAX) {
		size_t i = pf->next_block++;
		const struct store_block *b = &pf->rf.blocks[i];
		struct local_find lf = {p->f->ag, txn, b->size, -1, 0, NULL, 0, {0}};
		if (pf->resume_map && (pf->resume_map[i / 8] & (1u << (i % 8)))) {
			uint8_t *data = malloc(b->size);
			if (data && queue_write(pf, i, data, -2) == 0)
				continue;
			free(data);
		}
		if (txn && pf->fd >= 0)
			store_block_each(txn, b->hash, local_found, &lf);
		if (lf.name) {
			size_t n = 1, len = b->size;
			struct run_next x = {lf.folder, lf.name, strlen(lf.name), 0, 0, 0};
			while (i + n < pf->rf.nblocks && len < PULL_RUN_MAX &&
			       !(pf->resume_map && (pf->resume_map[(i + n) / 8] & (1u << ((i + n) % 8))))) {
				x.off = lf.off + len;
				x.size = pf->rf.blocks[i + n].size;
				x.found = 0;
				store_block_each(txn, pf->rf.blocks[i + n].hash, run_extends, &x);
				if (!x.found)
					break;
				len += x.size;
				n++;
			}
			int root = fcntl(lf.rootfd, F_DUPFD_CLOEXEC, 3);
			if (root >= 0 && queue_run(pf, i, n, len, root, lf.name, lf.off, &lf.trust) == 0) {
				pf->next_block = i + n;
				continue;
			}
			if (root < 0)
				free(lf.name);
		}
		if (pf_request(pf, i) != 0) {
			pf_fail(pf, "the device that has it is not connected");
			break;
		}
	}
}

/* The identity of a version's content: its size and block list. */
static void
pf_ident(const struct store_file *rf, uint8_t out[32])
{
	crypto_generichash_state st;
	uint8_t b[8];

	crypto_generichash_init(&st, NULL, 0, 32);
	for (int i = 0; i < 8; i++)
		b[i] = (uint8_t)(rf->size >> (8 * i));
	crypto_generichash_update(&st, b, 8);
	for (size_t i = 0; i < rf->nblocks; i++) {
		crypto_generichash_update(&st, rf->blocks[i].hash, 32);
		for (int k = 0; k < 4; k++)
			b[k] = (uint8_t)(rf->blocks[i].size >> (8 * k));
		crypto_generichash_update(&st, b, 4);
	}
	crypto_generichash_final(&st, out, 32);
}

/*
 * Picks up an earlier attempt: when a partial record for this very version
 * names a temp file, the blocks it records become pf's resume_map; open_work()
 * then keeps them if that file is still there with the right size (else
 * resume_stale), and they are read back and checked before they count (a
 * power cut may have lost what the page cache held).
 */
static void
pf_try_resume(struct pull_file *pf, struct store_txn *txn)
{
	struct puller *p = pf->p;
	struct store_partial sp;
	size_t bl = (pf->rf.nblocks + 7) / 8;

	if (store_partial_get(txn, p->f->num, pf->name, pf->rf.name_len, &sp) != 0)
		return;
	pf->had_record = 1; /* delete it if this attempt fails with nothing to keep */
	if (memcmp(sp.ident, pf->ident, 32) != 0 || sp.nblocks != pf->rf.nblocks ||
	    sp.tmp_len != strlen(pf->tmp) || memcmp(sp.tmp, pf->tmp, sp.tmp_len) != 0)
		return;
	if (!(pf->resume_map = malloc(bl ? bl : 1)))
		return;
	if (bl)
		memcpy(pf->resume_map, sp.bitmap, bl);
}

static void
pf_resumed(struct pull_file *pf)
{
	struct puller *p = pf->p;
	size_t nbits = 0;

	for (size_t i = 0; i < pf->rf.nblocks; i++)
		nbits += !!(pf->resume_map[i / 8] & (1u << (i % 8)));
	log_info("%s: resuming %s: %zu of %zu blocks are already here", p->f->id, pf->name, nbits,
		 pf->rf.nblocks);
	struct json *j = events_begin(p->f->ag, "transfer_resumed");
	json_key(j, "folder");
	json_str(j, p->f->id);
	json_key(j, "item");
	json_str(j, pf->name);
	json_key(j, "blocks_present");
	json_u64(j, nbits);
	json_key(j, "blocks");
	json_u64(j, pf->rf.nblocks);
	events_end(p->f->ag, j, 1);
}

/*
 * Opening a file's temp file is a job of its own on the thread pool: creating
 * an inode costs the filesystem real time (ext4 scans for a free one), and a
 * pull of many small files would otherwise create them one by one on the
 * event loop. The file takes no blocks until it is open (pf->opening).
 */
struct open_job {
	uv_work_t work;
	struct pull_file *pf;
	int rootfd; /* a duplicate of the folder's root, ours */
	int rc;
	int resume_stale; /* the recorded temp file is gone or of the wrong size */
	int look_done;    /* look for such a file (the folder's temps_seen when queued) */
	int found_done;   /* an earlier run's temp file of this version, finished: verify it */
};

/*
 * Creates pf's temp file in its directory (pf->dirfd), ours alone; a stale one
 * of an earlier attempt goes first. With reserve, the space is reserved now,
 * so a full disk shows up here and not half-way through a large file.
 * Returns 0 or -errno.
 */
static int
temp_create(struct pull_file *pf, int reserve)
{
	pf->fd = openat(pf->dirfd, pf->tmp, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
			0600);
	if (pf->fd < 0 && errno == EEXIST && unlinkat(pf->dirfd, pf->tmp, 0) == 0)
		pf->fd = openat(pf->dirfd, pf->tmp,
				O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (pf->fd < 0)
		return -errno;
	if (reserve && pf->rf.size > 0) {
		int e = posix_fallocate(pf->fd, 0, (off_t)pf->rf.size);
		if (e == EOPNOTSUPP || e == EINVAL)
			e = ftruncate(pf->fd, (off_t)pf->rf.size) == 0 ? 0 : errno;
		return -e;
	}
	return 0;
}

/*
 * Opens an earlier attempt's temp file of pf if it is a regular file of the
 * version's size (and, with mtime, of its mtime to the nanosecond): then
 * pf->fd holds it and 1 is returned.
 */
static int
temp_reopen(struct pull_file *pf, int mtime)
{
	struct stat st;
	int fd = openat(pf->dirfd, pf->tmp, O_RDWR | O_NOFOLLOW | O_CLOEXEC);

	if (fd < 0)
		return 0;
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && (uint64_t)st.st_size == pf->rf.size &&
	    (!mtime || (st.st_mtim.tv_sec == pf->rf.mtime_s &&
			(uint32_t)st.st_mtim.tv_nsec == pf->rf.mtime_ns))) {
		pf->fd = fd;
		return 1;
	}
	close(fd);
	return 0;
}

static void
open_work(uv_work_t *w)
{
	struct open_job *j = w->data;
	struct pull_file *pf = j->pf;

	pf->dirfd = fs_open_parent(j->rootfd, pf->name, &pf->base);
	if (pf->dirfd < 0) {
		j->rc = pf->dirfd;
		return;
	}
	if (pf->resume_map) {
		if (temp_reopen(pf, 0))
			return;
		j->resume_stale = 1;
	}
	/*
	 * An earlier run that stopped between a file's last write and its rename
	 * left a temp file with the version's size and mtime (set by the write of
	 * a one-block file, or by the finish job). Its blocks are verified by
	 * hash like a resumed file's instead of being fetched again.
	 */
	if (j->look_done && pf->rf.size > 0 && temp_reopen(pf, 1)) {
		j->found_done = 1;
		return;
	}
	j->rc = temp_create(pf, 1);
}

static void
open_done(uv_work_t *w, int status)
{
	struct open_job *j = w->data;
	struct pull_file *pf = j->pf;
	struct puller *p = pf->p;
	int rc = status != 0 ? status : j->rc;

	p->jobs--;
	pf->pending--;
	pf->opening = 0;
	close(j->rootfd);
	if (j->found_done && rc == 0 && !pf->resume_map) {
		size_t bl = (pf->rf.nblocks + 7) / 8;
		if ((pf->resume_map = malloc(bl ? bl : 1))) {
			memset(pf->resume_map, 0, bl ? bl : 1);
			for (size_t i = 0; i < pf->rf.nblocks; i++)
				pf->resume_map[i / 8] |= (uint8_t)(1u << (i % 8));
		}
	}
	if (j->resume_stale || rc != 0) {
		free(pf->resume_map);
		pf->resume_map = NULL;
	} else if (pf->resume_map) {
		pf_resumed(pf);
	}
	if (rc != 0) {
		pf_fail(pf, strerror(-rc));
		if (rc == -ENOSPC)
			pull_stop_no_space(p);
	}
	free(j);
	pf_settle(pf);
	pull_advance_soon(p); /* pumps the file's blocks */
}

/* store_block_each(): a local file of a shared folder holds the block. */
static int
block_known(uint32_t folder, const char *name, size_t name_len, uint64_t offset, uint32_t size,
	    void *arg)
{
	(void)folder;
	(void)name;
	(void)name_len;
	(void)offset;
	(void)size;
	*(int *)arg = 1;
	return 1;
}

static int
pf_open(struct puller *p, struct need_item *it, struct store_txn *txn)
{
	struct pull_file *pf = calloc(1, sizeof(*pf));
	uint64_t off = 0;
	int rc;

	if (!pf)
		return -ENOMEM;
	pthread_mutex_init(&pf->wlock, NULL);
	pf->p = p;
	pf->fd = -1;
	pf->dirfd = -1;
	pf->old_fd = -1;
	pf->open_root = -1;
	pf->dev = it->dev;
	pf->name = it->name;
	it->name = NULL;
	rc = store_file_get(txn, p->f->num, it->dev, pf->name, it->name_len, 1, &pf->rf);
	if (rc != 0 || !item_current(it, &pf->rf)) {
		if (rc == 0)
			store_file_release(&pf->rf);
		it->name = pf->name;
		pf->name = NULL;
		if (rc == 0 || rc == STORE_ENOTFOUND)
			item_defer(p, it, "the peer's entry changed meanwhile");
		pthread_mutex_destroy(&pf->wlock);
		free(pf);
		return rc == STORE_ENOTFOUND ? 0 : rc;
	}
	/* rf outlives the read transaction: its name must not point into LMDB's memory. */
	pf->rf.name = pf->name;
	pf->rf.target = NULL;
	pf->rf.target_len = 0;
	pf->expect = it->local;
	pf->conflict_loser = it->conflict_loser;
	{
		struct json *j = events_begin(p->f->ag, "item_started");
		json_key(j, "folder");
		json_str(j, p->f->id);
		json_key(j, "item");
		json_str(j, pf->name);
		json_key(j, "size");
		json_u64(j, pf->rf.size);
		events_end(p->f->ag, j, 0);
	}
	pf->offsets = malloc((pf->rf.nblocks ? pf->rf.nblocks : 1) * sizeof(*pf->offsets));
	if (!pf->offsets) {
		pf->failed = 1;
		pf_free(pf);
		return -ENOMEM;
	}
	for (size_t i = 0; i < pf->rf.nblocks; i++) {
		pf->offsets[i] = off;
		off += pf->rf.blocks[i].size;
	}
	pf->next = p->active;
	p->active = pf;
	p->nactive++;
	touch_parent(p, pf->name, pf->rf.name_len);
	fs_temp_name(pf->name, pf->tmp);
	pf_ident(&pf->rf, pf->ident);
	pf->done_map = calloc((pf->rf.nblocks + 7) / 8 + 1, 1);
	if (!pf->done_map) {
		pf_fail(pf, "out of memory");
		pf_settle(pf);
		return 0;
	}
	pf_try_resume(pf, txn);
	/*
	 * A file of one block that no local file has is created by the job that
	 * writes that block: one trip through the thread pool instead of two,
	 * and no descriptor held while the block is on its way. Its size needs
	 * no reservation; a full disk shows up at the write.
	 */
	if (pf->rf.nblocks == 1 && !pf->resume_map && !p->f->temps_seen && txn) {
		int known = 0;
		store_block_each(txn, pf->rf.blocks[0].hash, block_known, &known);
		if (!known && (pf->open_root = fcntl(p->f->rootfd, F_DUPFD_CLOEXEC, 3)) >= 0) {
			pf_pump(pf, txn); /* no open_done will */
			return 0;
		}
	}
	struct open_job *oj = calloc(1, sizeof(*oj));
	if (oj)
		oj->rootfd = fcntl(p->f->rootfd, F_DUPFD_CLOEXEC, 3);
	if (!oj || oj->rootfd < 0) {
		free(oj);
		pf_fail(pf, "out of memory or descriptors");
		pf_settle(pf);
		return 0;
	}
	oj->pf = pf;
	oj->look_done = p->f->temps_seen;
	oj->work.data = oj;
	if (uv_queue_work(p->f->ag->loop, &oj->work, open_work, open_done) != 0) {
		close(oj->rootfd);
		free(oj);
		pf_fail(pf, "cannot queue the file's creation");
		pf_settle(pf);
		return 0;
	}
	p->jobs++;
	pf->pending++;
	pf->opening = 1;
	return 0;
}

/* ---- finishing (thread pool) ---- */

/*
 * Makes every file system that holds a file of the batch durable with one
 * syncfs(2) each (a batch rarely spans more than one). On failure every file
 * of that file system is marked failed: syncfs cannot say which one it was.
 */
static void
finish_syncfs(struct finish_job *j, int mark)
{
	for (size_t i = 0; i < j->n; i++) {
		struct pull_file *pf = j->files[i];
		int seen = 0;
		if (pf->failed || pf->changed)
			continue;
		for (size_t k = 0; k < i && !seen; k++)
			seen = !j->files[k]->failed && !j->files[k]->changed &&
			       j->files[k]->fsdev == pf->fsdev;
		if (seen)
			continue;
		if (syncfs(pf->fd) != 0 && mark) {
			int e = errno ? errno : EIO;
			for (size_t k = i; k < j->n; k++)
				if (j->files[k]->fsdev == pf->fsdev && !j->files[k]->failed)
					j->files[k]->failed = e;
		}
	}
}

static void
finish_work(uv_work_t *w)
{
	struct finish_job *j = w->data;
	int lastdir = -1;
	int group = j->group;

	/*
	 * Every file is durable before its rename. Start the write-back of the
	 * whole batch first, so the disk sees it together; then either one
	 * syncfs for the batch (group) or one fdatasync per file.
	 */
	for (size_t i = 0; i < j->n; i++) {
		struct pull_file *pf = j->files[i];
		struct stat st;
		sync_file_range(pf->fd, 0, 0, SYNC_FILE_RANGE_WRITE);
		if (group)
			pf->fsdev = fstat(pf->fd, &st) == 0 ? (uint64_t)st.st_dev : 0;
	}
	for (size_t i = 0; i < j->n; i++) {
		struct pull_file *pf = j->files[i];
		struct timespec ts[2];
		version_times(&pf->rf, ts);
		if (fchmod(pf->fd, pf->rf.mode & 0777) != 0 || futimens(pf->fd, ts) != 0 ||
		    (!group && fdatasync(pf->fd) != 0))
			pf->failed = errno ? errno : EIO;
	}
	if (group) {
		uint64_t t0 = now_ms();
		finish_syncfs(j, 1);
		j->sync_ms = now_ms() - t0;
	}
	for (size_t i = 0; i < j->n; i++) {
		struct pull_file *pf = j->files[i];
		if (pf->failed)
			continue;
		if (!disk_matches(pf->dirfd, pf->base, &pf->expect, 0)) {
			pf->changed = 1;
			continue;
		}
		if (pf->conflict_loser) {
			/* Keep the losing local edit next to the winner; it syncs as a new file. */
			conflict_name(pf->base, pf->conflict_loser, pf->expect.mtime_s, pf->conflict,
				      sizeof(pf->conflict));
			if (strlen(pf->conflict) > 255 ||
			    renameat(pf->dirfd, pf->base, pf->dirfd, pf->conflict) != 0) {
				pf->failed = errno ? errno : ENAMETOOLONG;
				pf->conflict[0] = '\0';
				continue;
			}
		}
		/*
		 * Freeing a large file's blocks and pages takes a while (a quarter of a
		 * second for 1 GiB on ext4), and the rename that replaces it would do it
		 * before it returns. Holding the old inode open moves that work to a
		 * job of its own after the new file is in place and recorded.
		 */
		if (!pf->conflict_loser && pf->expect.have && pf->expect.type == STORE_FILE &&
		    pf->expect.size >= PULL_RELEASE_MIN)
			pf->old_fd = openat(pf->dirfd, pf->base, O_PATH | O_NOFOLLOW | O_CLOEXEC);
		if (renameat(pf->dirfd, pf->tmp, pf->dirfd, pf->base) != 0) {
			/* A directory the cluster replaced by this file goes once it is empty. */
			if (!((errno == EISDIR || errno == ENOTEMPTY || errno == EEXIST) &&
			      unlinkat(pf->dirfd, pf->base, AT_REMOVEDIR) == 0 &&
			      renameat(pf->dirfd, pf->tmp, pf->dirfd, pf->base) == 0)) {
				pf->failed = errno;
				continue;
			}
		}
		if (fstat(pf->fd, &pf->st) != 0)
			pf->failed = errno;
	}
	/* One fsync per directory (or one syncfs) makes the renames durable. */
	if (group) {
		finish_syncfs(j, 0);
		return;
	}
	for (size_t i = 0; i < j->n; i++) {
		struct pull_file *pf = j->files[i];
		if (pf->failed || pf->changed)
			continue;
		struct stat ds;
		if (fstat(pf->dirfd, &ds) == 0 && (int)ds.st_ino != lastdir) {
			fsync(pf->dirfd);
			lastdir = (int)ds.st_ino;
		}
	}
}

static void
note_conflict(struct puller *p, struct pull_file *pf)
{
	size_t dl = (size_t)(pf->base - pf->name);
	char *copy = malloc(dl + strlen(pf->conflict) + 1);
	struct json *j;

	if (!copy)
		return;
	memcpy(copy, pf->name, dl);
	strcpy(copy + dl, pf->conflict);
	log_warn("%s: conflict on %s: both devices changed it; the other version wins, this "
		 "device's edit is kept as %s",
		 p->f->id, pf->name, copy);
	j = events_begin(p->f->ag, "conflict");
	json_key(j, "folder");
	json_str(j, p->f->id);
	json_key(j, "item");
	json_str(j, pf->name);
	json_key(j, "copy");
	json_str(j, copy);
	events_end(p->f->ag, j, 1);
	folder_add_scope(p->f, copy); /* scanned and sent like any new file */
	p->f->scan_wanted = 1;
}

/* Closes the replaced files finish_work() held open, which frees them. */
struct release_job {
	uv_work_t work;
	size_t n;
	int fds[];
};

static void
release_work(uv_work_t *w)
{
	struct release_job *r = w->data;
	for (size_t i = 0; i < r->n; i++)
		close(r->fds[i]);
}

static void
release_done(uv_work_t *w, int status)
{
	(void)status;
	free(w->data);
}

/* Hands the old files of a finished batch to the thread pool (closes them here if it cannot). */
static void
release_old(struct puller *p, struct pull_file **files, size_t n)
{
	struct release_job *r;
	size_t k = 0;

	for (size_t i = 0; i < n; i++)
		k += files[i]->old_fd >= 0;
	if (k == 0)
		return;
	r = malloc(sizeof(*r) + k * sizeof(r->fds[0]));
	if (!r)
		return; /* pf_free() closes them */
	r->n = 0;
	for (size_t i = 0; i < n; i++) {
		if (files[i]->old_fd >= 0) {
			r->fds[r->n++] = files[i]->old_fd;
			files[i]->old_fd = -1;
		}
	}
	r->work.data = r;
	if (uv_queue_work(p->f->ag->loop, &r->work, release_work, release_done) != 0) {
		release_work(&r->work);
		free(r);
	}
}

static void
finish_done(uv_work_t *w, int status)
{
	struct finish_job *j = w->data;
	struct puller *p = j->p;

	p->finishing--;
	p->jobs--;
	if (j->group && j->sync_ms >= PULL_SYNCFS_SLOW_MS && now_ms() >= p->group_off_until_ms) {
		log_info("%s: syncing the file system took %.1f s (other writers on it?); syncing "
			 "pulled files one by one for a minute", p->f->id, (double)j->sync_ms / 1000.0);
		p->group_off_until_ms = now_ms() + PULL_SYNCFS_BACKOFF_MS;
	}
	release_old(p, j->files, j->n);
	for (size_t i = 0; i < j->n; i++) {
		struct pull_file *pf = j->files[i];
		if (pf->changed || status != 0 || pf->failed)
			watch_unexpect(p->f, pf->name, strlen(pf->name));
		if (pf->changed) {
			log_info("%s: %s changed on disk since the last scan; not replacing it, "
				 "rescanning first", p->f->id, pf->name);
			p->deferred++;
			pf->failed = 1; /* removes the temporary file */
		} else if (status != 0 || pf->failed) {
			log_warn("%s: cannot finish %s: %s", p->f->id, pf->name,
				 strerror(pf->failed > 0 ? pf->failed : EIO));
			if (pf->failed == ENOSPC)
				pull_stop_no_space(p);
			pf->failed = 1;
			p->failures++;
		} else {
			if (pull_record(p, &pf->rf, &pf->st, 1) != 0)
				p->failures++;
			p->done_files++;
			if (pf->conflict[0])
				note_conflict(p, pf);
		}
		struct json *ev = events_begin(p->f->ag, "item_finished");
		json_key(ev, "folder");
		json_str(ev, p->f->id);
		json_key(ev, "item");
		json_str(ev, pf->name);
		json_key(ev, "error");
		if (pf->failed && !pf->changed)
			json_str(ev, "failed");
		else
			json_null(ev);
		events_end(p->f->ag, ev, 0);
		pf_free(pf);
	}
	free(j->files);
	free(j);
	pull_flush_due(p);
	pull_advance_soon(p);
}

static void
pull_finish_batch(struct puller *p)
{
	struct finish_job *j;

	if (p->finishing >= PULL_FINISHING_MAX || p->nfinished == 0)
		return;
	j = calloc(1, sizeof(*j));
	if (!j)
		return;
	j->p = p;
	j->files = p->finished;
	j->n = p->nfinished;
	j->group = j->n >= PULL_GROUP_SYNC_MIN && now_ms() >= p->group_off_until_ms;
	for (size_t i = 0; i < j->n; i++)
		watch_expect(p->f, j->files[i]->name, strlen(j->files[i]->name));
	p->finished = NULL;
	p->nfinished = 0;
	p->capfinished = 0;
	j->work.data = j;
	if (uv_queue_work(p->f->ag->loop, &j->work, finish_work, finish_done) != 0) {
		p->finished = j->files;
		p->nfinished = p->capfinished = j->n;
		free(j);
		return;
	}
	p->finishing++;
	p->jobs++;
}

/* ---- partial records ---- */

struct psave_ctx {
	struct puller *p;
	int rc;
};

static int
txn_psave(struct store_txn *txn, void *arg)
{
	struct puller *p = arg;
	uint64_t now = wall_ns();
	int rc;

	for (struct psave *ps = p->saves; ps; ps = ps->next) {
		if (ps->drop) {
			rc = store_partial_del(txn, p->f->num, ps->name, strlen(ps->name));
			if (rc != 0 && rc != STORE_ENOTFOUND)
				return rc;
			continue;
		}
		struct store_partial sp = {ps->tmp, strlen(ps->tmp), {0}, now, ps->nblocks, ps->bitmap};
		memcpy(sp.ident, ps->ident, 32);
		if ((rc = store_partial_put(txn, p->f->num, ps->name, strlen(ps->name), &sp)) != 0)
			return rc;
	}
	for (struct pull_file *pf = p->active; pf; pf = pf->next) {
		if (pf->done_blocks <= pf->saved_done || !pf->done_map || pf->failed)
			continue;
		uint8_t *map = malloc((pf->rf.nblocks + 7) / 8 + 1);
		if (!map)
			return -ENOMEM;
		pf_save_map(pf, map);
		struct store_partial sp = {pf->tmp, strlen(pf->tmp), {0}, now,
					   (uint32_t)pf->rf.nblocks, map};
		memcpy(sp.ident, pf->ident, 32);
		rc = store_partial_put(txn, p->f->num, pf->name, pf->rf.name_len, &sp);
		free(map);
		if (rc != 0)
			return rc;
	}
	return 0;
}

/*
 * Writes what is worth remembering about unfinished files: called about once
 * a second and when the pull ends, never inside a read transaction. A crash
 * loses at most a second of records; the blocks themselves stay in the temp
 * files and are verified again when resumed.
 */
static void
pull_save_partials(struct puller *p)
{
	int any = p->saves != NULL;
	for (struct pull_file *pf = p->active; pf && !any; pf = pf->next)
		any = pf->done_blocks > pf->saved_done && !pf->failed;
	if (!any)
		return;
	if (store_write(p->f->ag->store, txn_psave, p) == 0) {
		for (struct pull_file *pf = p->active; pf; pf = pf->next)
			if (!pf->failed)
				pf->saved_done = pf->done_blocks;
	}
	while (p->saves) {
		struct psave *ps = p->saves;
		p->saves = ps->next;
		free(ps->name);
		free(ps->bitmap);
		free(ps);
	}
}

/* ---- the synchronous phases ---- */

/* Remembers name's parent directory so its recorded mtime can be put back. */
static void
touch_parent(struct puller *p, const char *name, size_t len)
{
	const char *slash = memrchr(name, '/', len);
	if (!slash)
		return;
	if (p->ntouched && strlen(p->touched[p->ntouched - 1]) == (size_t)(slash - name) &&
	    memcmp(p->touched[p->ntouched - 1], name, (size_t)(slash - name)) == 0)
		return;
	if (p->ntouched == p->captouched) {
		size_t cap = p->captouched ? 2 * p->captouched : 64;
		char **n = realloc(p->touched, cap * sizeof(*n));
		if (!n)
			return;
		p->touched = n;
		p->captouched = cap;
	}
	if ((p->touched[p->ntouched] = strndup(name, (size_t)(slash - name))))
		p->ntouched++;
}

static int
str_cmp_desc(const void *a, const void *b)
{
	return strcmp(*(char *const *)b, *(char *const *)a);
}

/* Puts back the recorded mtime of directories that only changed because we wrote into them. */
static void
restore_touched(struct puller *p)
{
	struct store_txn *txn;

	if (p->ntouched == 0 || store_read_begin(p->f->ag->store, &txn) != 0)
		return;
	qsort(p->touched, p->ntouched, sizeof(*p->touched), str_cmp_desc);
	for (size_t i = 0; i < p->ntouched; i++) {
		struct store_file lf;
		const char *base;
		if (i > 0 && strcmp(p->touched[i], p->touched[i - 1]) == 0)
			continue;
		if (store_file_get(txn, p->f->num, STORE_LOCAL, p->touched[i], strlen(p->touched[i]),
				   0, &lf) != 0)
			continue;
		int dfd = lf.type == STORE_DIR && !(lf.flags & STORE_FLAG_DELETED)
				  ? fs_open_parent(p->f->rootfd, p->touched[i], &base)
				  : -1;
		if (dfd >= 0) {
			struct timespec ts[2];
			ts[0].tv_sec = lf.mtime_s;
			ts[0].tv_nsec = lf.mtime_ns;
			ts[1] = ts[0];
			utimensat(dfd, base, ts, AT_SYMLINK_NOFOLLOW);
			close(dfd);
		}
		store_file_release(&lf);
	}
	store_read_end(txn);
}

static void
do_dir(struct puller *p, struct need_item *it)
{
	struct store_file rf;
	struct store_txn *txn;
	const char *base;
	int dfd;

	if (fetch_remote(p, it, 0, &rf, &txn) != 0)
		return;
	if (!item_current(it, &rf)) {
		item_defer(p, it, "the peer's entry changed meanwhile");
		goto out;
	}
	dfd = fs_open_parent(p->f->rootfd, it->name, &base);
	if (dfd < 0) {
		log_warn("%s: cannot create directory %s: %s", p->f->id, it->name, strerror(-dfd));
		p->failures++;
		goto out;
	}
	if (!disk_matches(dfd, base, &it->local, 1)) {
		item_defer(p, it, "something else is in the way on disk");
	} else {
		struct stat st;
		/* A file or link the cluster replaced by a directory goes first. */
		if (fstatat(dfd, base, &st, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISDIR(st.st_mode))
			unlinkat(dfd, base, 0);
		/* The puller watches what it creates: the watcher need not scan it. */
		watch_expect(p->f, it->name, it->name_len);
		if (mkdirat(dfd, base, 0700) == 0) {
			watch_dir(p->f, it->name);
		} else {
			int e = errno;
			watch_unexpect(p->f, it->name, it->name_len);
			if (e != EEXIST) {
				log_warn("%s: cannot create directory %s: %s", p->f->id, it->name,
					 strerror(e));
				p->failures++;
			}
		}
	}
	close(dfd);
out:
	store_file_release(&rf);
	store_read_end(txn);
}

static void
do_dirmeta(struct puller *p, struct need_item *it)
{
	struct store_file rf;
	struct store_txn *txn;
	struct stat st;
	int dfd;

	if (fetch_remote(p, it, 0, &rf, &txn) != 0)
		return;
	if (!item_current(it, &rf))
		goto out; /* deferred already when the directory was created */
	/* Through a descriptor of the directory itself: a link put in its place is not followed. */
	dfd = fs_open_beneath(p->f->rootfd, it->name, O_RDONLY | O_DIRECTORY, 0);
	if (dfd >= 0) {
		struct timespec ts[2];
		ts[0].tv_sec = rf.mtime_s;
		ts[0].tv_nsec = rf.mtime_ns;
		ts[1] = ts[0];
		if (fchmod(dfd, rf.mode & 0777) == 0 && futimens(dfd, ts) == 0 &&
		    fstat(dfd, &st) == 0 && S_ISDIR(st.st_mode)) {
			pull_record(p, &rf, &st, 0);
			p->done_files++;
		} else {
			p->failures++;
		}
		close(dfd);
	} else if (dfd != -ENOENT) {
		p->failures++;
	}
out:
	store_file_release(&rf);
	store_read_end(txn);
}

static void
do_link(struct puller *p, struct need_item *it)
{
	struct store_file rf;
	struct store_txn *txn;
	const char *base;
	char tmp[64];
	char target[PROTO_PATH_MAX + 1];
	struct stat st;
	int dfd = -1;

	if (fetch_remote(p, it, 0, &rf, &txn) != 0)
		return;
	if (!item_current(it, &rf)) {
		item_defer(p, it, "the peer's entry changed meanwhile");
		goto out;
	}
	touch_parent(p, it->name, it->name_len);
	dfd = fs_open_parent(p->f->rootfd, it->name, &base);
	if (dfd < 0 || rf.target_len == 0 || rf.target_len > PROTO_PATH_MAX) {
		p->failures++;
		goto out;
	}
	if (!disk_matches(dfd, base, &it->local, 0)) {
		item_defer(p, it, "it changed on disk since the last scan");
		goto out;
	}
	memcpy(target, rf.target, rf.target_len);
	target[rf.target_len] = '\0';
	fs_temp_name(it->name, tmp);
	unlinkat(dfd, tmp, 0);
	if (symlinkat(target, dfd, tmp) != 0 || renameat(dfd, tmp, dfd, base) != 0) {
		log_warn("%s: cannot create link %s: %s", p->f->id, it->name, strerror(errno));
		unlinkat(dfd, tmp, 0);
		p->failures++;
		goto out;
	}
	struct timespec ts[2];
	ts[0].tv_sec = rf.mtime_s;
	ts[0].tv_nsec = rf.mtime_ns;
	ts[1] = ts[0];
	utimensat(dfd, base, ts, AT_SYMLINK_NOFOLLOW);
	if (fstatat(dfd, base, &st, AT_SYMLINK_NOFOLLOW) == 0) {
		/* The scanner compares the link's own mode bits. */
		rf.mode = st.st_mode & 0777;
		pull_record(p, &rf, &st, 0);
		p->done_files++;
	}
out:
	if (dfd >= 0)
		close(dfd);
	store_file_release(&rf);
	store_read_end(txn);
}

static void
do_delete(struct puller *p, struct need_item *it)
{
	struct store_file rf;
	struct store_txn *txn;
	const char *base;
	struct stat st;
	int dfd;

	if (fetch_remote(p, it, 0, &rf, &txn) != 0)
		return;
	if (!item_current(it, &rf)) {
		item_defer(p, it, "the peer's entry changed meanwhile");
		goto out;
	}
	touch_parent(p, it->name, it->name_len);
	dfd = fs_open_parent(p->f->rootfd, it->name, &base);
	if (dfd >= 0) {
		if (fstatat(dfd, base, &st, AT_SYMLINK_NOFOLLOW) != 0) {
			if (errno == ENOENT) {
				pull_record(p, &rf, NULL, 0);
				p->done_files++;
			} else {
				log_warn("%s: cannot delete %s: %s", p->f->id, it->name,
					 strerror(errno));
				p->failures++;
			}
		} else if (!disk_matches(dfd, base, &it->local, 0)) {
			/* An edit racing a delete wins: it is scanned and sent instead. */
			item_defer(p, it, "it changed on disk since the last scan; keeping it");
		} else {
			int dir = S_ISDIR(st.st_mode);
			watch_expect(p->f, it->name, it->name_len);
			if (unlinkat(dfd, base, dir ? AT_REMOVEDIR : 0) == 0) {
				pull_record(p, &rf, NULL, 0);
				p->done_files++;
			} else {
				log_warn("%s: cannot delete %s: %s", p->f->id, it->name,
					 strerror(errno));
				watch_unexpect(p->f, it->name, it->name_len);
				p->failures++;
			}
		}
		close(dfd);
	} else if (dfd == -ENOENT) {
		pull_record(p, &rf, NULL, 0);
	} else {
		p->failures++;
	}
out:
	store_file_release(&rf);
	store_read_end(txn);
}

/* ---- driving ---- */

/* The devices a pull plans from: only what a connected device can serve; the rest waits. */
size_t
pull_devices(struct folder *f, uint32_t devs[64])
{
	size_t n = 0;

	for (struct device *d = f->ag->devices; d && n < 64; d = d->next)
		if (folder_shared_with(f, d) && d->conn && conn_active(d->conn))
			devs[n++] = d->num;
	return n;
}

/* Moves an item into a list kept for the end of the pull. */
static int
item_keep(struct need_item **list, size_t *n, size_t *cap, struct need_item *it)
{
	if (*n == *cap) {
		size_t c = *cap ? 2 * *cap : 64;
		struct need_item *l = realloc(*list, c * sizeof(*l));
		if (!l)
			return -ENOMEM;
		*list = l;
		*cap = c;
	}
	(*list)[(*n)++] = *it;
	it->name = NULL;
	it->version = NULL;
	return 0;
}

/* Makes x's items the puller's window, in the order they are worked on. */
static void
window_take(struct puller *p, struct plan_ctx *x)
{
	if (x->n > 1)
		qsort(x->items, x->n, sizeof(*x->items), item_cmp_order);
	p->items = x->items;
	p->nitems = x->n;
	p->next = 0;
	p->windows++;
	p->more = x->end != NULL;
	free(p->cursor);
	p->cursor = x->end;
	p->cursor_len = x->end_len;
	x->items = NULL;
	x->end = NULL;
}

/*
 * Plans the next window: of the same sweep, or (deleting set while the
 * creating sweep is on) the first of the deletions, and sets the phase that
 * works on it. A window that cannot be planned is empty and the last.
 */
static void
pull_next_window(struct puller *p, int deleting)
{
	struct folder *f = p->f;
	struct plan_ctx x;
	uint32_t devs[64];
	size_t ndevs;
	int first = deleting && !p->deleting;
	int rc;

	items_free(p->items, p->nitems);
	p->items = NULL;
	p->nitems = p->next = 0;
	if (first) {
		free(p->cursor);
		p->cursor = NULL;
		p->cursor_len = 0;
		p->deleting = 1;
	}
	p->phase = deleting ? PH_DELETES : PH_DIRS;
	p->more = 0;
	if (p->targeted) {
		/* One window of changed names; its deletions were planned with it. */
		if (first) {
			struct plan_ctx t = {.items = p->tdel, .n = p->ntdel};
			p->tdel = NULL;
			p->ntdel = 0;
			window_take(p, &t);
		}
		return;
	}
	ndevs = pull_devices(f, devs);
	if (ndevs == 0)
		return; /* what the devices that went away have waits for them */
	rc = plan_window(f->ag->store, f->num, devs, ndevs, f->mode, f->ag->short_id, p->cursor,
			 p->cursor_len, deleting, &x);
	if (rc != 0) {
		log_warn("%s: cannot plan the rest of the pull: %s", f->id, store_strerror(rc));
		p->failures++;
		return;
	}
	window_take(p, &x);
}

static void
pull_end(struct puller *p)
{
	struct folder *f = p->f;

	pull_save_partials(p);
	if (pull_flush(p) != 0 && p->nbatch) {
		log_error("%s: %zu pulled items are on disk but could not be recorded; the next "
			  "scan records them", f->id, p->nbatch);
		batch_clear(p);
	}
	if (!p->failures && !p->aborted && !p->stopping)
		f->temps_seen = 0; /* every temp file an earlier run left was used or replaced */
	if (p->deferred && !p->aborted) {
		/* Something changed under us: scan, then plan again. */
		f->scan_wanted = 1;
		f->pull_wanted = 1;
	}
	if (p->deferred || p->failures || p->aborted)
		folder_dirty_all(f); /* what is left is planned again, whatever its name */
	{
		struct json *j = events_begin(f->ag, p->failures || p->aborted ? "transfer_failed"
									       : "transfer_completed");
		json_key(j, "folder");
		json_str(j, f->id);
		json_key(j, "items");
		json_u64(j, p->done_files);
		json_key(j, "failed");
		json_u64(j, p->failures);
		json_key(j, "bytes_from_peers");
		json_u64(j, p->bytes_net);
		json_key(j, "bytes_reused");
		json_u64(j, p->bytes_local);
		json_key(j, "seconds");
		json_dbl(j, (double)(now_ms() - p->started_ms) / 1000.0);
		/* Kept in the durable log when it failed or moved real data (1 MiB or more);
		 * the many tiny pulls of a busy folder stay transient. */
		events_end(f->ag, j, p->failures || p->aborted || f->pull_total_bytes >= DURABLE_PULL_BYTES);
	}
	folder_progress_event(f, now_ms());
	f->pull_total_bytes = f->pull_done_bytes = 0;
	f->pull_rate = f->pull_rate_mark_ms = 0;
	if (!p->aborted)
		log_info("pulled %s: %zu items (%s%zu windows), %.1f MB from peers, %.1f MB reused "
			 "locally (%.1f MB cloned), %.1f MB resumed, %zu failed, %.2f s",
			 f->id, p->done_files, p->targeted ? "changed names, " : "", p->windows,
			 (double)p->bytes_net / 1e6,
			 (double)p->bytes_local / 1e6, (double)p->bytes_cloned / 1e6,
			 (double)p->bytes_resumed / 1e6, p->failures,
			 (double)(now_ms() - p->started_ms) / 1000.0);
	if (p->failures && !p->aborted) {
		f->pull_wanted = 1;
		f->pull_at_ms = now_ms() + PULL_RETRY_MS;
	} else if (!p->aborted && f->state == FOLDER_ERROR && !p->stopping) {
		folder_clear_error(f);
	}
	items_free(p->items, p->nitems);
	items_free(p->tdel, p->ntdel);
	items_free(p->dirs, p->ndirs);
	items_free(p->deldirs, p->ndeldirs);
	free(p->cursor);
	for (size_t i = 0; i < p->ntouched; i++)
		free(p->touched[i]);
	free(p->touched);
	batch_clear(p);
	free(p->batch);
	free(p->finished);
	f->pull = NULL;
	free(p);
	folder_job_done(f);
}

static void
pull_advance(struct puller *p)
{
	struct store_txn *txn = NULL;

	if (p->in_advance) {
		p->again = 1;
		return;
	}
	p->in_advance = 1;
again:
	p->again = 0;
	/* Settle files whose last block came back or that failed. */
	for (struct pull_file *pf = p->active, *nx; pf; pf = nx) {
		nx = pf->next;
		if (p->aborted || p->stopping)
			pf->failed = 1;
		pf_settle(pf);
	}
	if (p->aborted || p->stopping) {
		if (p->jobs == 0 && p->nactive == 0) {
			for (size_t i = 0; i < p->nfinished; i++) {
				p->finished[i]->failed = 1;
				pf_free(p->finished[i]);
			}
			p->nfinished = 0;
			pull_end(p);
			return;
		}
		p->in_advance = 0;
		return;
	}
	for (;;) {
		if (p->phase == PH_DIRS) {
			while (p->next < p->nitems && item_phase(&p->items[p->next]) == 0)
			{
				struct need_item *it = &p->items[p->next++];
				do_dir(p, it);
				/* Its mtime and mode are set once everything in it is written. */
				if (item_keep(&p->dirs, &p->ndirs, &p->capdirs, it) != 0)
					p->failures++;
				if (p->nbatch >= PULL_RECORD_BATCH)
					pull_flush(p);
			}
			p->phase = PH_FILES;
		}
		if (p->phase == PH_FILES) {
			if (store_read_begin(p->f->ag->store, &txn) == 0) {
				for (struct pull_file *pf = p->active; pf; pf = pf->next)
					pf_pump(pf, txn);
				/* Finished files waiting for a finish job hold two descriptors
				 * each: no new file while too many wait. */
				while (p->nactive < PULL_ACTIVE_MAX &&
				       p->nfinished < PULL_FINISHED_MAX &&
				       p->unsaved_bytes < PULL_UNSAVED_MAX &&
				       p->inflight_bytes < PULL_INFLIGHT_MAX && p->next < p->nitems &&
				       item_phase(&p->items[p->next]) == 1) {
					if (pf_open(p, &p->items[p->next++], txn) != 0)
						p->failures++;
				}
				store_read_end(txn);
			}
			/*
			 * A batch is finished when full, when nothing else is going
			 * on, or when its oldest file has waited PULL_FINISH_WAIT_MS:
			 * small files done next to a long large one would otherwise
			 * wait for it, and a crash would lose them.
			 */
			if (p->nfinished >= PULL_FINISH_BATCH || p->unsaved_bytes >= PULL_UNSAVED_MAX ||
			    (p->nfinished > 0 &&
			     (p->nactive == 0 || p->jobs == 0 ||
			      now_ms() - p->finished_since_ms >= PULL_FINISH_WAIT_MS)))
				pull_finish_batch(p);
			pull_flush_due(p);
			int more_files = p->next < p->nitems && item_phase(&p->items[p->next]) == 1;
			if (more_files)
				break;
			/*
			 * The next window's files start while this one's are still on
			 * their way; the deletions wait for every file, since a file
			 * about to be deleted may be the local source of a new one.
			 */
			if (!p->more && (p->nactive > 0 || p->nfinished > 0 || p->finishing))
				break;
			if (!p->more)
				pull_flush(p);
			p->phase = PH_LINKS;
		}
		if (p->phase == PH_LINKS) {
			while (p->next < p->nitems && item_phase(&p->items[p->next]) == 2)
			{
				do_link(p, &p->items[p->next++]);
				if (p->nbatch >= PULL_RECORD_BATCH)
					pull_flush(p);
			}
			/* The next window, or (every file done) the first one of deletions. */
			pull_next_window(p, !p->more);
			continue;
		}
		if (p->phase == PH_DELETES) {
			while (p->next < p->nitems)
			{
				struct need_item *it = &p->items[p->next++];
				/* A directory goes once what is in it is gone, maybe in a later window. */
				if (it->type == STORE_DIR) {
					if (item_keep(&p->deldirs, &p->ndeldirs, &p->capdeldirs, it) != 0)
						p->failures++;
					continue;
				}
				do_delete(p, it);
				if (p->nbatch >= PULL_RECORD_BATCH)
					pull_flush(p);
			}
			if (p->more) {
				pull_next_window(p, 1);
				continue;
			}
			/* Deepest first: reverse name order puts children before parents. */
			if (p->ndeldirs > 1)
				qsort(p->deldirs, p->ndeldirs, sizeof(*p->deldirs), item_cmp_name);
			for (size_t i = p->ndeldirs; i-- > 0;) {
				do_delete(p, &p->deldirs[i]);
				if (p->nbatch >= PULL_RECORD_BATCH)
					pull_flush(p);
			}
			p->phase = PH_DIRMETA;
		}
		if (p->phase == PH_DIRMETA) {
			/* Directories this pull did not change get their recorded mtime back. */
			pull_flush(p);
			restore_touched(p);
			/* Deepest first, so setting a child's mtime does not disturb its parent. */
			if (p->ndirs > 1)
				qsort(p->dirs, p->ndirs, sizeof(*p->dirs), item_cmp_name);
			for (size_t i = p->ndirs; i-- > 0;)
				do_dirmeta(p, &p->dirs[i]);
			p->phase = PH_DONE;
		}
		if (p->phase == PH_DONE) {
			if (p->jobs == 0) {
				pull_end(p);
				return;
			}
			break;
		}
	}
	if (p->again)
		goto again;
	p->in_advance = 0;
}

int
pull_start(struct folder *f)
{
	struct agent *ag = f->ag;
	struct plan_ctx x, xdel = {0};
	uint32_t devs[64];
	size_t ndevs = 0;
	struct puller *p;
	int rc, targeted;

	struct stat mst;
	if (fstatat(f->rootfd, ".shoal-folder", &mst, AT_SYMLINK_NOFOLLOW) != 0) {
		folder_set_error(f, "the folder marker %s/.shoal-folder is missing: is the disk "
				    "mounted? Not pulling into it",
				 f->path);
		return 1;
	}
	ndevs = pull_devices(f, devs);
	if (ndevs == 0)
		return 1;
	targeted = !f->dirty_all && !f->pull_count;
	if (targeted) {
		/* Only what changed since the last pull began (folder_dirty_name()). */
		if (f->dirty.n == 0)
			return 1;
		rc = plan_names(ag->store, f->num, devs, ndevs, f->mode, ag->short_id, &f->dirty, 0,
				&x);
		if (rc == 0 && (rc = plan_names(ag->store, f->num, devs, ndevs, f->mode,
						ag->short_id, &f->dirty, 1, &xdel)) != 0)
			items_free(x.items, x.n);
		if (rc != 0)
			return rc;
		strmap_clear(&f->dirty); /* changes from now on are the next pull's */
	} else {
		/*
		 * Every name: first what it all needs, counted in slices (in one go,
		 * a million entries held the loop for seconds). Changes from the
		 * count's start on are the next pull's.
		 */
		if (f->pull_count == 0) {
			strmap_clear(&f->dirty);
			f->dirty_all = 0;
			folder_count_for_pull(f);
			if (f->pull_count != 2)
				return PULL_COUNTING;
			f->pull_wanted = 0; /* counted at once: this is the pull it asked for */
		}
		if (f->pull_count != 2)
			return PULL_COUNTING;
		f->pull_count = 0;
		rc = plan_window(ag->store, f->num, devs, ndevs, f->mode, ag->short_id, NULL, 0, 0,
				 &x);
		if (rc != 0) {
			folder_dirty_all(f);
			return rc;
		}
		x.need = f->pull_need;
		if (x.need.files == 0 && x.n > 0)
			x.need.files = x.n; /* changed since the count: pulled all the same */
	}
	if (x.need.files == 0) {
		items_free(x.items, x.n);
		items_free(xdel.items, xdel.n);
		free(x.end);
		return 1; /* nothing to do */
	}
	p = calloc(1, sizeof(*p));
	if (!p) {
		items_free(x.items, x.n);
		items_free(xdel.items, xdel.n);
		free(x.end);
		folder_dirty_all(f);
		return -ENOMEM;
	}
	p->f = f;
	p->targeted = targeted;
	p->tdel = xdel.items;
	p->ntdel = xdel.n;
	window_take(p, &x);
	p->started_ms = now_ms();
	f->pull = p;
	if (f->state != FOLDER_ERROR)
		folder_set_state(f, FOLDER_SYNCING);
	log_info("%s: pulling %llu items (%.1f MB)", f->id, (unsigned long long)x.need.files,
		 (double)x.need.bytes / 1e6);
	f->pull_total_bytes = x.need.bytes;
	f->pull_done_bytes = 0;
	f->pull_rate = 0;
	f->pull_rate_mark_ms = now_ms();
	f->pull_rate_mark_bytes = 0;
	struct json *j = events_begin(ag, "transfer_started");
	json_key(j, "folder");
	json_str(j, f->id);
	json_key(j, "items");
	json_u64(j, x.need.files);
	json_key(j, "bytes");
	json_u64(j, x.need.bytes);
	events_end(ag, j, x.need.bytes >= DURABLE_PULL_BYTES);
	folder_progress_event(f, now_ms());
	pull_advance(p);
	return 0;
}

void
pull_abort(struct folder *f)
{
	if (f->pull) {
		f->pull->aborted = 1;
		pull_advance(f->pull);
	}
}

void
pull_on_response(struct agent *ag, struct conn *c, const struct proto_response *r)
{
	struct block_req *br = req_peek(r->id);
	struct pull_file *pf;
	struct puller *p;
	(void)ag;

	if (!br)
		return; /* a late answer to a request already given up */
	if (br->conn != c) {
		/* Only the device that was asked may answer. */
		conn_close(c, "response to a request it was not sent");
		return;
	}
	req_take(r->id);
	pf = br->pf;
	p = pf->p;
	pf->pending--;
	p->inflight_bytes -= pf->rf.blocks[br->index].size;
	if (r->code != PROTO_R_OK || r->data.len != pf->rf.blocks[br->index].size) {
		pf_fail(pf, r->code == PROTO_R_OK ? "the peer sent a block of the wrong size"
						  : "the peer could not serve a block");
	} else if (!pf->failed && !p->aborted) {
		uint8_t *data = malloc(r->data.len);
		if (data)
			memcpy(data, r->data.p, r->data.len);
		if (!data || queue_write(pf, br->index, data, -1) != 0) {
			free(data);
			pf_fail(pf, "out of memory");
		}
	}
	free(br);
	pf_settle(pf);
	pull_advance_soon(p);
}

void
pull_on_conn_closed(struct agent *ag, struct conn *c)
{
	/*
	 * This may run deep inside a puller's own call chain (a failed send
	 * closes the connection), so it only marks: the files settle on the
	 * puller's next advance, which agent_kick() schedules.
	 */
	for (size_t b = 0; b < REQTAB; b++) {
		struct block_req **pp = &reqtab[b];
		while (*pp) {
			struct block_req *r = *pp;
			if (r->conn != c) {
				pp = &r->next;
				continue;
			}
			*pp = r->next;
			r->pf->pending--;
			r->pf->p->inflight_bytes -= r->pf->rf.blocks[r->index].size;
			pf_fail(r->pf, "the connection closed");
			free(r);
		}
	}
	agent_kick(ag);
}

#define REQ_TIMEOUT_MS 60000

/* Fails requests a peer has left unanswered for a minute (it may keep pinging). */
static void
req_expire(struct puller *p, uint64_t now)
{
	for (size_t b = 0; b < REQTAB; b++) {
		struct block_req **pp = &reqtab[b];
		while (*pp) {
			struct block_req *r = *pp;
			if (r->pf->p != p || now - r->sent_ms < REQ_TIMEOUT_MS) {
				pp = &r->next;
				continue;
			}
			*pp = r->next;
			r->pf->pending--;
			p->inflight_bytes -= r->pf->rf.blocks[r->index].size;
			pf_fail(r->pf, "the peer did not answer a block request within a minute");
			free(r);
		}
	}
}

void
pull_poke(struct folder *f)
{
	struct puller *p = f->pull;
	uint64_t now = now_ms();

	if (!p)
		return;
	if (now - p->last_expire_ms >= 500) {
		p->last_expire_ms = now;
		req_expire(p, now);
		if (!p->in_advance)
			pull_save_partials(p);
	}
	pull_advance(p);
}

/* ---- revert (receive-only folders) ---- */

struct revert_ctx {
	struct store_txn *txn;
	struct folder *f;
	uint32_t devs[64];
	size_t ndevs;
	struct store_file *recs; /* local changes the cluster has a version of */
	size_t nrecs, caprecs;
	char **gone;             /* local additions: removed from disk and index */
	size_t ngone, capgone;
};

static int
revert_one(const struct store_file *lf, void *arg)
{
	struct revert_ctx *x = arg;
	int known = 0;

	if (!(lf->flags & STORE_FLAG_LOCALCHANGE))
		return 0;
	for (size_t i = 0; i < x->ndevs && !known; i++) {
		struct store_file rf;
		if (store_file_get(x->txn, x->f->num, x->devs[i], lf->name, lf->name_len, 0, &rf) == 0) {
			known = 1;
			store_file_release(&rf);
		}
	}
	if (known) {
		if (x->nrecs == x->caprecs) {
			size_t cap = x->caprecs ? 2 * x->caprecs : 64;
			struct store_file *n = realloc(x->recs, cap * sizeof(*n));
			if (!n)
				return -ENOMEM;
			x->recs = n;
			x->caprecs = cap;
		}
		struct store_file *r = &x->recs[x->nrecs];
		*r = *lf;
		r->owned = NULL;
		r->name = strndup(lf->name, lf->name_len);
		r->target = lf->target_len ? strndup(lf->target, lf->target_len) : NULL;
		/* No version: whatever the cluster has is newer, and is pulled back. */
		r->version = NULL;
		r->nversion = 0;
		r->blocks = NULL;
		r->nblocks = 0;
		r->flags &= ~STORE_FLAG_LOCALCHANGE;
		r->sequence = 0;
		if (!r->name)
			return -ENOMEM;
		x->nrecs++;
	} else {
		if (x->ngone == x->capgone) {
			size_t cap = x->capgone ? 2 * x->capgone : 64;
			char **n = realloc(x->gone, cap * sizeof(*n));
			if (!n)
				return -ENOMEM;
			x->gone = n;
			x->capgone = cap;
		}
		if (!(x->gone[x->ngone] = strndup(lf->name, lf->name_len)))
			return -ENOMEM;
		x->ngone++;
	}
	return 0;
}

static int
txn_revert(struct store_txn *txn, void *arg)
{
	struct revert_ctx *x = arg;
	int rc = local_records_put(txn, x->f->num, x->recs, x->nrecs, NULL);
	if (rc != 0)
		return rc;
	for (size_t i = 0; i < x->ngone; i++) {
		rc = store_file_del(txn, x->f->num, STORE_LOCAL, x->gone[i], strlen(x->gone[i]));
		if (rc != 0 && rc != STORE_ENOTFOUND)
			return rc;
	}
	return 0;
}

static int
str_cmp_desc2(const void *a, const void *b)
{
	return strcmp(*(char *const *)b, *(char *const *)a);
}

int
folder_revert(struct folder *f)
{
	struct revert_ctx x;
	int rc;

	if (f->mode != MODE_RECEIVE)
		return -EINVAL;
	if (f->rootfd < 0 || f->scan || f->pull)
		return -EBUSY;
	memset(&x, 0, sizeof(x));
	x.f = f;
	for (struct device *d = f->ag->devices; d && x.ndevs < 64; d = d->next)
		if (folder_shared_with(f, d))
			x.devs[x.ndevs++] = d->num;
	rc = store_read_begin(f->ag->store, &x.txn);
	if (rc == 0) {
		rc = store_files_each(x.txn, f->num, STORE_LOCAL, NULL, 0, 0, revert_one, &x);
		store_read_end(x.txn);
	}
	/* Local additions leave the disk first (children before parents), then the index. */
	qsort(x.gone, x.ngone, sizeof(*x.gone), str_cmp_desc2);
	for (size_t i = 0; rc == 0 && i < x.ngone; i++) {
		const char *base;
		struct stat st;
		int dfd = fs_open_parent(f->rootfd, x.gone[i], &base);
		if (dfd < 0)
			continue;
		if (fstatat(dfd, base, &st, AT_SYMLINK_NOFOLLOW) == 0)
			unlinkat(dfd, base, S_ISDIR(st.st_mode) ? AT_REMOVEDIR : 0);
		close(dfd);
	}
	if (rc == 0)
		rc = store_write(f->ag->store, txn_revert, &x);
	if (rc == 0)
		log_info("%s: reverted %zu local change%s; %zu local addition%s removed", f->id,
			 x.nrecs, x.nrecs == 1 ? "" : "s", x.ngone, x.ngone == 1 ? "" : "s");
	local_records_free(x.recs, x.nrecs);
	free(x.recs);
	for (size_t i = 0; i < x.ngone; i++)
		free(x.gone[i]);
	free(x.gone);
	folder_dirty_all(f);
	f->pull_wanted = 1;
	f->pull_at_ms = 0;
	agent_kick(f->ag);
	return rc;
}

/* ---- housekeeping: partial downloads nobody resumed for a day ---- */

#define PARTIAL_MAX_AGE_NS (24ull * 3600 * 1000000000)

struct stale_partial {
	uint32_t folder;
	char *name;
	char tmp[64];
};

struct stale_ctx {
	struct stale_partial *v;
	size_t n, cap;
	uint64_t before;
};

static int
stale_one(uint32_t folder, const char *name, size_t name_len, const struct store_partial *sp,
	  void *arg)
{
	struct stale_ctx *x = arg;
	if (sp->time_ns >= x->before || sp->tmp_len >= 64)
		return 0;
	if (x->n == x->cap) {
		size_t cap = x->cap ? 2 * x->cap : 16;
		struct stale_partial *nv = realloc(x->v, cap * sizeof(*nv));
		if (!nv)
			return 1;
		x->v = nv;
		x->cap = cap;
	}
	struct stale_partial *e = &x->v[x->n];
	if (!(e->name = strndup(name, name_len)))
		return 1;
	e->folder = folder;
	memcpy(e->tmp, sp->tmp, sp->tmp_len);
	e->tmp[sp->tmp_len] = '\0';
	x->n++;
	return 0;
}

static int
txn_drop_stale(struct store_txn *txn, void *arg)
{
	struct stale_ctx *x = arg;
	for (size_t i = 0; i < x->n; i++) {
		int rc = store_partial_del(txn, x->v[i].folder, x->v[i].name, strlen(x->v[i].name));
		if (rc != 0 && rc != STORE_ENOTFOUND)
			return rc;
	}
	return 0;
}

void
pull_cleanup_partials(struct agent *ag)
{
	struct stale_ctx x = {NULL, 0, 0, wall_ns() - PARTIAL_MAX_AGE_NS};
	struct store_txn *txn;

	if (store_read_begin(ag->store, &txn) != 0)
		return;
	store_partials_each(txn, stale_one, &x);
	store_read_end(txn);
	for (size_t i = 0; i < x.n; i++) {
		for (struct folder *f = ag->folders; f; f = f->next) {
			const char *base;
			int dfd;
			if (f->num != x.v[i].folder || f->rootfd < 0 || f->pull)
				continue;
			dfd = fs_open_parent(f->rootfd, x.v[i].name, &base);
			if (dfd >= 0) {
				unlinkat(dfd, x.v[i].tmp, 0);
				close(dfd);
			}
		}
	}
	if (x.n) {
		store_write(ag->store, txn_drop_stale, &x);
		log_info("removed %zu partial download%s nobody resumed for a day", x.n,
			 x.n == 1 ? "" : "s");
	}
	for (size_t i = 0; i < x.n; i++)
		free(x.v[i].name);
	free(x.v);
}
