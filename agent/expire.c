/*
 * agent/expire.c - forgetting old deletions (see expire.h for the rule).
 *
 * A pass walks every index of every folder in name order, EXPIRE_STEP
 * entries per tick of the agent and only while the folder is idle, so a
 * million-entry index costs the loop a few milliseconds per second for a
 * while and nothing races a scan or a pull. Passes run every hour, or every
 * quarter of the retention when that is shorter.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agent/agent.h"
#include "agent/config.h"
#include "agent/expire.h"
#include "agent/log.h"
#include "agent/util.h"
#include "agent/version.h"

#define EXPIRE_STEP 5000
#define EXPIRE_FIRST_MS (60 * 1000)  /* the first pass, after the start */
#define EXPIRE_EVERY_MS (3600 * 1000)

struct expire_state {
	uint64_t next_ms; /* when the next pass starts */
	int active;
	uint32_t folder;  /* number of the folder being walked */
	size_t dev_ix;	  /* which of its indexes: 0 is ours, then the sharing peers */
	struct expire_cursor cur;
	uint64_t removed; /* forgotten in this folder during this pass */
};

void
expire_cursor_reset(struct expire_cursor *c)
{
	free(c->name);
	c->name = NULL;
	c->len = 0;
}

/* A tombstone that may be forgotten, copied out of the read transaction. */
struct cand {
	char *name;
	size_t len;
	uint64_t seq;
	struct store_counter *version;
	size_t nversion;
};

struct walk {
	uint64_t cutoff_s;
	size_t max, seen;
	struct cand *c;
	size_t n;
	char *last;
	size_t last_len;
	int oom;
};

static uint64_t
deleted_at(const struct store_counter *v, size_t n)
{
	uint64_t t = 0;

	for (size_t i = 0; i < n; i++)
		if (v[i].value > t)
			t = v[i].value;
	return t;
}

static int
walk_cb(const struct store_file *f, void *arg)
{
	struct walk *w = arg;
	char *last = realloc(w->last, f->name_len);

	if (!last) {
		w->oom = 1;
		return 1;
	}
	memcpy(last, f->name, f->name_len);
	w->last = last;
	w->last_len = f->name_len;
	w->seen++;
	if ((f->flags & STORE_FLAG_DELETED) &&
	    !(f->flags & (STORE_FLAG_LOCALCHANGE | STORE_FLAG_INVALID)) && f->nversion > 0 &&
	    deleted_at(f->version, f->nversion) < w->cutoff_s) {
		struct cand *c = realloc(w->c, (w->n + 1) * sizeof(*c));
		if (!c) {
			w->oom = 1;
			return 1;
		}
		w->c = c;
		c = &w->c[w->n];
		c->name = malloc(f->name_len);
		c->version = malloc(f->nversion * sizeof(*c->version));
		if (!c->name || !c->version) {
			free(c->name);
			free(c->version);
			w->oom = 1;
			return 1;
		}
		memcpy(c->name, f->name, f->name_len);
		memcpy(c->version, f->version, f->nversion * sizeof(*c->version));
		c->len = f->name_len;
		c->seq = f->sequence;
		c->nversion = f->nversion;
		w->n++;
	}
	return w->seen >= w->max ? 1 : 0;
}

/* Does some other index still hold this name live, with a version the tombstone supersedes? */
static int
still_wanted(struct store_txn *txn, uint32_t folder, const uint32_t *others, size_t nothers,
	     const struct cand *c)
{
	for (size_t i = 0; i < nothers; i++) {
		struct store_file o = { 0 };
		int rc = store_file_get(txn, folder, others[i], c->name, c->len, 0, &o);
		if (rc == STORE_ENOTFOUND)
			continue;
		if (rc != 0)
			return rc;
		int live = !(o.flags & STORE_FLAG_DELETED);
		enum vv_order ord = vv_compare(c->version, c->nversion, o.version, o.nversion);
		store_file_release(&o);
		if (live && ord == VV_GREATER)
			return 1;
	}
	return 0;
}

struct forget {
	uint32_t folder, dev;
	const struct cand *c;
	size_t n;
	uint64_t removed;
};

static int
txn_forget(struct store_txn *txn, void *arg)
{
	struct forget *fg = arg;

	fg->removed = 0;
	for (size_t i = 0; i < fg->n; i++) {
		const struct cand *c = &fg->c[i];
		struct store_file f = { 0 };
		int rc = store_file_get(txn, fg->folder, fg->dev, c->name, c->len, 0, &f);
		if (rc == STORE_ENOTFOUND)
			continue;
		if (rc != 0)
			return rc;
		/* Only the very tombstone that was judged: the entry may have changed since. */
		int same = (f.flags & STORE_FLAG_DELETED) && f.sequence == c->seq;
		store_file_release(&f);
		if (!same)
			continue;
		rc = store_file_del(txn, fg->folder, fg->dev, c->name, c->len);
		if (rc != 0 && rc != STORE_ENOTFOUND)
			return rc;
		fg->removed += rc == 0;
	}
	return 0;
}

int
expire_step(struct store *s, uint32_t folder, uint32_t dev, const uint32_t *others,
	    size_t nothers, uint64_t cutoff_s, size_t max, struct expire_cursor *cur, int *done,
	    uint64_t *removed)
{
	struct walk w = { .cutoff_s = cutoff_s, .max = max ? max : 1 };
	struct store_txn *txn;
	size_t keep = 0;
	int rc;

	*done = 0;
	rc = store_read_begin(s, &txn);
	if (rc != 0)
		return rc;
	rc = store_files_each(txn, folder, dev, cur->name, cur->len, 0, walk_cb, &w);
	if (rc == 0 && w.oom)
		rc = -ENOMEM;
	/* Keep only the candidates nobody still needs. */
	for (size_t i = 0; rc == 0 && i < w.n; i++) {
		int want = still_wanted(txn, folder, others, nothers, &w.c[i]);
		if (want < 0) {
			rc = want;
		} else if (!want) {
			struct cand t = w.c[keep];
			w.c[keep++] = w.c[i];
			w.c[i] = t;
		}
	}
	store_read_end(txn);
	if (rc == 0 && keep > 0) {
		struct forget fg = { .folder = folder, .dev = dev, .c = w.c, .n = keep };
		rc = store_write(s, txn_forget, &fg);
		if (rc == 0)
			*removed += fg.removed;
	}
	if (rc == 0) {
		if (w.seen < w.max) {
			*done = 1;
			expire_cursor_reset(cur);
			free(w.last);
		} else {
			free(cur->name);
			cur->name = w.last;
			cur->len = w.last_len;
		}
		w.last = NULL;
	}
	free(w.last);
	for (size_t i = 0; i < w.n; i++) {
		free(w.c[i].name);
		free(w.c[i].version);
	}
	free(w.c);
	return rc;
}

/* ---- the agent's passes ---- */

static uint64_t
retention_s(const struct agent *ag)
{
	/* A test hook: retentions below the configurable minute, for end-to-end tests. */
	const char *env = getenv("SHOAL_FORGET_DELETED_S");
	if (env && *env) {
		char *end;
		unsigned long long v = strtoull(env, &end, 10);
		if (*end == '\0' && v > 0)
			return v;
	}
	return ag->cfg.forget_deleted_s ? ag->cfg.forget_deleted_s : CFG_DEFAULT_FORGET_DELETED_S;
}

static uint64_t
pass_every_ms(const struct agent *ag)
{
	uint64_t quarter = retention_s(ag) * 1000 / 4;
	return quarter < EXPIRE_EVERY_MS ? quarter : EXPIRE_EVERY_MS;
}

/* The folder with the lowest number above num, or NULL. */
static struct folder *
folder_after(struct agent *ag, uint32_t num)
{
	struct folder *best = NULL;

	for (struct folder *f = ag->folders; f; f = f->next)
		if (f->num > num && (!best || f->num < best->num))
			best = f;
	return best;
}

/* Index numbers of a folder: ours first, then each sharing peer's. Returns how many. */
static size_t
folder_indexes(struct agent *ag, struct folder *f, uint32_t **out)
{
	size_t n = 1;
	uint32_t *v;

	for (struct device *d = ag->devices; d; d = d->next)
		n += folder_shared_with(f, d) && d->num != STORE_LOCAL;
	v = malloc(n * sizeof(*v));
	if (!v)
		return 0;
	n = 0;
	v[n++] = STORE_LOCAL;
	for (struct device *d = ag->devices; d; d = d->next)
		if (folder_shared_with(f, d) && d->num != STORE_LOCAL)
			v[n++] = d->num;
	*out = v;
	return n;
}

static void
folder_done(struct agent *ag, struct expire_state *st, struct folder *f)
{
	if (st->removed > 0) {
		uint64_t r = retention_s(ag);
		log_info("folder %s: forgot %llu deletions older than %llu %s that every device "
			 "has seen",
			 f->id, (unsigned long long)st->removed,
			 (unsigned long long)(r % 86400 == 0 ? r / 86400 : r),
			 r % 86400 == 0 ? "days" : "seconds");
		folder_dirty_all(f); /* a name may be needed again now (pull.c) */
	}
	st->removed = 0;
	st->dev_ix = 0;
	expire_cursor_reset(&st->cur);
	struct folder *next = folder_after(ag, f->num);
	if (next) {
		st->folder = next->num;
	} else {
		st->active = 0;
		st->next_ms = now_ms() + pass_every_ms(ag);
	}
}

void
expire_tick(struct agent *ag, uint64_t now)
{
	struct expire_state *st = ag->expire;

	if (!st) {
		st = calloc(1, sizeof(*st));
		if (!st)
			return;
		ag->expire = st;
		st->next_ms = now + (pass_every_ms(ag) < EXPIRE_FIRST_MS ? pass_every_ms(ag)
									 : EXPIRE_FIRST_MS);
	}
	if (!st->active) {
		if (now < st->next_ms)
			return;
		struct folder *first = folder_after(ag, 0);
		if (!first) {
			st->next_ms = now + pass_every_ms(ag);
			return;
		}
		st->active = 1;
		st->folder = first->num;
		st->dev_ix = 0;
		st->removed = 0;
		expire_cursor_reset(&st->cur);
	}

	struct folder *f = NULL;
	for (struct folder *g = ag->folders; g; g = g->next)
		if (g->num == st->folder)
			f = g;
	if (!f) { /* removed during the pass */
		f = folder_after(ag, st->folder);
		expire_cursor_reset(&st->cur);
		st->dev_ix = 0;
		st->removed = 0;
		if (!f) {
			st->active = 0;
			st->next_ms = now + pass_every_ms(ag);
			return;
		}
		st->folder = f->num;
	}
	/* Never alongside a scan or a pull of the folder: wait for it to be idle. */
	if (f->scan || f->pull || f->scan_wanted || f->pull_wanted)
		return;

	uint32_t *idx = NULL;
	size_t n = folder_indexes(ag, f, &idx);
	if (n == 0)
		return;
	if (st->dev_ix >= n) {
		free(idx);
		folder_done(ag, st, f);
		return;
	}
	uint32_t dev = idx[st->dev_ix];
	/* The others: every index of the folder but the one being walked. */
	idx[st->dev_ix] = idx[n - 1];
	uint64_t cutoff = (uint64_t)time(NULL) - retention_s(ag);
	int done = 0;
	int rc = expire_step(ag->store, f->num, dev, idx, n - 1, cutoff, EXPIRE_STEP, &st->cur,
			     &done, &st->removed);
	free(idx);
	if (rc != 0) {
		/* A busy or full store: the pass goes on at a later tick from the same place. */
		log_debug("folder %s: forgetting old deletions: %s", f->id, store_strerror(rc));
		return;
	}
	if (done && ++st->dev_ix >= n)
		folder_done(ag, st, f);
}

void
expire_release(struct agent *ag)
{
	struct expire_state *st = ag->expire;

	if (!st)
		return;
	expire_cursor_reset(&st->cur);
	free(st);
	ag->expire = NULL;
}
