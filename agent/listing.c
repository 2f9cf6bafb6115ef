/*
 * agent/listing.c - paging through the cluster's view of a folder.
 *
 * The view of a name is its newest version among this device's index and the
 * indexes of the devices the folder is shared with. A page is built by taking
 * up to limit names after the cursor from every index (each in name order)
 * and merging: any of the first limit names of the view is among the first
 * limit names of some index, so a page costs O(devices * limit) reads
 * whatever the folder's size.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agent/config.h"
#include "agent/home.h"
#include "agent/json.h"
#include "agent/listing.h"
#include "agent/version.h"
#include "store/store.h"

struct lentry {
	char *name;
	size_t name_len;
	uint32_t dev;
	struct store_file f; /* version copied; blocks not read */
};

struct collect {
	const char *prefix;
	size_t prefix_len;
	size_t limit;
	uint32_t dev;
	struct lentry *v;
	size_t n, cap, taken;
};

static int
under(const char *name, size_t len, const char *prefix, size_t plen)
{
	if (plen == 0)
		return 1;
	return len >= plen && memcmp(name, prefix, plen) == 0 && (len == plen || name[plen] == '/');
}

static int
collect_one(const struct store_file *f, void *arg)
{
	struct collect *c = arg;
	struct lentry *e;

	if (c->prefix_len) {
		if (f->name_len < c->prefix_len || memcmp(f->name, c->prefix, c->prefix_len) != 0)
			return 1; /* past the subtree */
		if (!under(f->name, f->name_len, c->prefix, c->prefix_len))
			return 0;
	}
	if (c->taken >= c->limit)
		return 1;
	c->taken++;
	if (c->n == c->cap) {
		size_t cap = c->cap ? 2 * c->cap : 64;
		struct lentry *nv = realloc(c->v, cap * sizeof(*nv));
		if (!nv)
			return -ENOMEM;
		c->v = nv;
		c->cap = cap;
	}
	e = &c->v[c->n];
	memset(e, 0, sizeof(*e));
	e->name = strndup(f->name, f->name_len);
	e->name_len = f->name_len;
	e->dev = c->dev;
	e->f = *f;
	e->f.owned = NULL;
	e->f.name = NULL;
	e->f.target = NULL;
	e->f.blocks = NULL;
	e->f.nblocks = 0;
	e->f.version = malloc((f->nversion ? f->nversion : 1) * sizeof(*f->version));
	if (!e->name || !e->f.version) {
		free(e->name);
		free(e->f.version);
		return -ENOMEM;
	}
	memcpy(e->f.version, f->version, f->nversion * sizeof(*f->version));
	c->n++;
	return 0;
}

static int
lentry_cmp(const void *a, const void *b)
{
	const struct lentry *x = a, *y = b;
	size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
	int r = memcmp(x->name, y->name, n);
	if (r)
		return r;
	if (x->name_len != y->name_len)
		return x->name_len < y->name_len ? -1 : 1;
	return x->dev < y->dev ? -1 : x->dev > y->dev; /* the local device (0) first */
}

static int
open_folder(const char *home, const char *folder, struct config *cfg, struct cfg_folder **cf,
	    struct store **st, uint32_t *fnum, uint32_t *devs, size_t *ndevs)
{
	char err[256];
	char *cpath = home_file(home, "config");
	struct store_txn *txn;
	int rc = config_load(cfg, cpath, err, sizeof(err));

	free(cpath);
	if (rc != 0) {
		fprintf(stderr, "shoal: cannot read the configuration: %s\n", err[0] ? err : strerror(-rc));
		return 1;
	}
	*cf = config_folder(cfg, folder);
	if (!*cf) {
		fprintf(stderr, "shoal: no folder %s\n", folder);
		return 1;
	}
	rc = store_open_readonly(st, home);
	if (rc != 0) {
		fprintf(stderr, "shoal: no index yet in %s (has the agent run?)\n", home);
		return 1;
	}
	rc = store_read_begin(*st, &txn);
	if (rc != 0) {
		fprintf(stderr, "shoal: cannot read the index: %s\n", store_strerror(rc));
		store_close(*st);
		return 1;
	}
	if (store_folder_num(txn, folder, 0, fnum) != 0) {
		store_read_end(txn);
		store_close(*st);
		fprintf(stderr, "shoal: folder %s has not been scanned yet\n", folder);
		return 1;
	}
	devs[0] = STORE_LOCAL;
	*ndevs = 1;
	for (size_t i = 0; i < (*cf)->nshares && *ndevs < 64; i++)
		if (store_device_num(txn, (*cf)->shares[i], 0, &devs[*ndevs]) == 0)
			(*ndevs)++;
	store_read_end(txn);
	return 0;
}

static const char *
view_state(const struct lentry *local, const struct lentry *best, int concurrent)
{
	if (concurrent)
		return "conflict";
	if (local && (local->f.flags & STORE_FLAG_LOCALCHANGE))
		return "local-change";
	if (!local || best != local)
		return "needed";
	return "synced";
}

static void
lentries_clear(struct collect *c)
{
	for (size_t i = 0; i < c->n; i++) {
		free(c->v[i].name);
		free(c->v[i].f.version);
	}
	c->n = 0;
}

/* memcmp order of two names, the shorter first on a tie (the order of the index keys). */
static int
name_cmp(const char *a, size_t al, const char *b, size_t bl)
{
	int r = memcmp(a, b, al < bl ? al : bl);
	if (r)
		return r;
	return al < bl ? -1 : al > bl;
}

struct page {
	struct json *j;
	int json;
	size_t limit, shown;
	char *last; /* the last name shown (owned) */
};

/*
 * Shows the names of c (sorted) up to and including bound (all when bound is
 * NULL) until the page is full; returns -ENOMEM or 0.
 */
static int
page_emit(struct page *pg, struct collect *c, const char *bound, size_t bound_len)
{
	for (size_t i = 0; i < c->n && pg->shown < pg->limit;) {
		size_t k = i;
		struct lentry *local = NULL, *best = NULL;
		int concurrent = 0;
		if (bound && name_cmp(c->v[i].name, c->v[i].name_len, bound, bound_len) > 0)
			break; /* some index was not read this far: the next round has it */
		while (k < c->n && c->v[k].name_len == c->v[i].name_len &&
		       memcmp(c->v[k].name, c->v[i].name, c->v[i].name_len) == 0) {
			struct lentry *e = &c->v[k];
			if (e->dev == STORE_LOCAL)
				local = e;
			if (!best) {
				best = e;
			} else {
				enum vv_order o = vv_compare(e->f.version, e->f.nversion, best->f.version,
							     best->f.nversion);
				if (o == VV_GREATER)
					best = e;
				else if (o == VV_CONCURRENT)
					concurrent = 1;
			}
			k++;
		}
		i = k;
		if ((best->f.flags & STORE_FLAG_DELETED) && (!local || (local->f.flags & STORE_FLAG_DELETED)))
			continue; /* gone everywhere that matters */
		const char *state = view_state(local, best, concurrent);
		const char *type = best->f.type == STORE_DIR ? "dir" : best->f.type == STORE_SYMLINK ? "link" : "file";
		int deleted = !!(best->f.flags & STORE_FLAG_DELETED);
		free(pg->last);
		if (!(pg->last = strdup(best->name)))
			return -ENOMEM;
		pg->shown++;
		if (pg->json) {
			struct json *j = pg->j;
			json_obj_open(j);
			json_key(j, "name");
			json_str(j, best->name);
			json_key(j, "type");
			json_str(j, type);
			json_key(j, "size");
			json_u64(j, best->f.size);
			json_key(j, "mtime");
			json_i64(j, best->f.mtime_s);
			json_key(j, "deleted");
			json_bool(j, deleted);
			json_key(j, "state");
			json_str(j, state);
			json_obj_close(j);
		} else {
			char ts[32];
			time_t t = (time_t)best->f.mtime_s;
			struct tm tm;
			localtime_r(&t, &tm);
			strftime(ts, sizeof(ts), "%Y-%m-%d %H:%M:%S", &tm);
			printf("%-12s %-4s %12llu  %s  %s%s%s\n", state, type,
			       (unsigned long long)best->f.size, ts, best->name,
			       best->f.type == STORE_DIR ? "/" : "", deleted ? " (deleted)" : "");
		}
	}
	return 0;
}

/*
 * A page is built in rounds. Each round reads up to limit names after the
 * cursor from every index and shows the merged names, but only up to the
 * smallest "last name read" of the indexes that had limit names to give: past
 * it, some index was not read, and a name there could lack that index's
 * (perhaps newer) version. Names that are deleted everywhere take an index's
 * share of a round without being shown, so a folder with many tombstones can
 * need more than one round for a page; without the rounds such a page came
 * out short, with no next cursor, as if the listing had ended.
 */
int
ls_run(const char *home, const char *folder, const char *path, const char *cursor, size_t limit,
       int json)
{
	struct config cfg;
	struct cfg_folder *cf;
	struct store *st = NULL;
	struct store_txn *txn = NULL;
	uint32_t fnum, devs[64];
	size_t ndevs;
	struct collect c;
	struct json j;
	struct page pg = {&j, json, limit, 0, NULL};
	char *from = NULL, *bound = NULL;
	size_t bound_len = 0;
	int rc = 1, more = 0;

	memset(&cfg, 0, sizeof(cfg));
	memset(&c, 0, sizeof(c));
	json_init(&j);
	if (open_folder(home, folder, &cfg, &cf, &st, &fnum, devs, &ndevs) != 0)
		goto out;
	c.prefix = path ? path : "";
	c.prefix_len = strlen(c.prefix);
	c.limit = limit;
	if (store_read_begin(st, &txn) != 0)
		goto out;
	if (!(from = strdup(cursor && *cursor ? cursor : c.prefix)))
		goto out;
	if (json) {
		json_obj_open(&j);
		json_key(&j, "folder");
		json_str(&j, folder);
		json_key(&j, "items");
		json_arr_open(&j);
	}
	for (int round = 0; limit > 0; round++) {
		lentries_clear(&c);
		free(bound);
		bound = NULL;
		for (size_t i = 0; i < ndevs; i++) {
			c.dev = devs[i];
			c.taken = 0;
			if (round == 0 && (!cursor || !*cursor) && c.prefix_len) {
				struct store_file f;
				if (store_file_get(txn, fnum, devs[i], c.prefix, c.prefix_len, 0, &f) == 0) {
					int r = collect_one(&f, &c);
					store_file_release(&f);
					if (r < 0)
						goto out;
				}
			}
			if (store_files_each(txn, fnum, devs[i], from, strlen(from), 0, collect_one, &c) < 0)
				goto out;
			if (c.taken >= limit && c.n > 0) {
				/* This index may have more: the round is complete up to its last name. */
				const struct lentry *e = &c.v[c.n - 1];
				if (!bound || name_cmp(e->name, e->name_len, bound, bound_len) < 0) {
					free(bound);
					if (!(bound = strndup(e->name, e->name_len)))
						goto out;
					bound_len = e->name_len;
				}
			}
		}
		qsort(c.v, c.n, sizeof(*c.v), lentry_cmp);
		if (page_emit(&pg, &c, bound, bound_len) != 0)
			goto out;
		if (pg.shown == limit) {
			more = 1; /* a full page: there may be more after its last name */
			break;
		}
		if (!bound)
			break; /* every index was read to its end */
		free(from);
		from = bound;
		bound = NULL;
	}
	if (json) {
		json_arr_close(&j);
		json_key(&j, "next_cursor");
		if (more)
			json_str(&j, pg.last);
		else
			json_null(&j);
		json_obj_close(&j);
		printf("%s\n", json_finish(&j));
	} else if (more) {
		printf("next cursor: %s\n", pg.last);
	} else {
		printf("(end of listing)\n");
	}
	rc = 0;
out:
	if (txn)
		store_read_end(txn);
	lentries_clear(&c);
	free(c.v);
	free(from);
	free(bound);
	free(pg.last);
	if (st)
		store_close(st);
	config_release(&cfg);
	json_release(&j);
	return rc;
}

struct conflict_ctx {
	const char *folder;
	struct json *j;
	int json;
	size_t n;
};

static int
conflict_one(const struct store_file *f, void *arg)
{
	struct conflict_ctx *x = arg;
	if ((f->flags & STORE_FLAG_DELETED) || !memmem(f->name, f->name_len, ".sync-conflict-", 15))
		return 0;
	x->n++;
	if (x->json) {
		json_obj_open(x->j);
		json_key(x->j, "folder");
		json_str(x->j, x->folder);
		json_key(x->j, "name");
		json_strn(x->j, f->name, f->name_len);
		json_key(x->j, "size");
		json_u64(x->j, f->size);
		json_key(x->j, "mtime");
		json_i64(x->j, f->mtime_s);
		json_obj_close(x->j);
	} else {
		printf("%s\t%.*s\t%llu bytes\n", x->folder, (int)f->name_len, f->name,
		       (unsigned long long)f->size);
	}
	return 0;
}

int
conflicts_run(const char *home, const char *folder, int json)
{
	struct config cfg;
	char err[256];
	char *cpath = home_file(home, "config");
	struct store *st = NULL;
	struct json j;
	struct conflict_ctx x = {NULL, &j, json, 0};
	int rc = config_load(&cfg, cpath, err, sizeof(err));

	free(cpath);
	if (rc != 0) {
		fprintf(stderr, "shoal: cannot read the configuration: %s\n", err[0] ? err : strerror(-rc));
		return 1;
	}
	json_init(&j);
	json_arr_open(&j);
	if (store_open_readonly(&st, home) == 0) {
		for (size_t i = 0; i < cfg.nfolders; i++) {
			struct store_txn *txn;
			uint32_t fnum;
			if (folder && strcmp(folder, cfg.folders[i].id) != 0)
				continue;
			if (store_read_begin(st, &txn) != 0)
				continue;
			x.folder = cfg.folders[i].id;
			if (store_folder_num(txn, x.folder, 0, &fnum) == 0)
				store_files_each(txn, fnum, STORE_LOCAL, NULL, 0, 0, conflict_one, &x);
			store_read_end(txn);
		}
		store_close(st);
	}
	json_arr_close(&j);
	if (json)
		printf("%s\n", json_finish(&j));
	else if (x.n == 0)
		printf("no conflicts\n");
	json_release(&j);
	config_release(&cfg);
	return 0;
}
