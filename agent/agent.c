/*
 * agent/agent.c - the agent process: start-up, configuration reloads, the
 * housekeeping timer, folder jobs, and shutdown.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <malloc.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "agent/agent.h"
#include "agent/discovery.h"
#include "agent/events.h"
#include "agent/expire.h"
#include "agent/home.h"
#include "agent/invites.h"
#include "agent/log.h"
#include "agent/util.h"
#include "crypto/sec.h"

#define TICK_MS 1000
#define RESCAN_WATCHED_MS (3600u * 1000) /* the safety net while the watcher works */
#define RESCAN_UNWATCHED_MS (60u * 1000) /* without a watcher, or past its limit */

const char *
folder_state_name(enum folder_state s)
{
	switch (s) {
	case FOLDER_IDLE:
		return "idle";
	case FOLDER_SCANNING:
		return "scanning";
	case FOLDER_SYNCING:
		return "syncing";
	case FOLDER_ERROR:
		return "error";
	}
	return "?";
}

void
folder_set_state(struct folder *f, enum folder_state st)
{
	struct json *j;

	if (f->state == st)
		return;
	if (f->ag->events) {
		j = events_begin(f->ag, "folder_state");
		json_key(j, "folder");
		json_str(j, f->id);
		json_key(j, "from");
		json_str(j, folder_state_name(f->state));
		json_key(j, "to");
		json_str(j, folder_state_name(st));
		events_end(f->ag, j, 0);
	}
	f->state = st;
}

void
folder_set_error(struct folder *f, const char *fmt, ...)
{
	char msg[sizeof(f->error)];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (f->state != FOLDER_ERROR || strcmp(msg, f->error) != 0) {
		log_error("folder %s: %s", f->id, msg);
		if (f->ag->events) {
			struct json *j = events_begin(f->ag, "error");
			json_key(j, "folder");
			json_str(j, f->id);
			json_key(j, "message");
			json_str(j, msg);
			events_end(f->ag, j, 1);
		}
	}
	snprintf(f->error, sizeof(f->error), "%s", msg);
	/* Who may clear it: a pull's error (a full disk) only a pull that succeeds. */
	f->error_from_pull = f->pull != NULL;
	folder_set_state(f, FOLDER_ERROR);
}

void
folder_clear_error(struct folder *f)
{
	if (f->state == FOLDER_ERROR)
		log_info("folder %s: error cleared", f->id);
	f->error[0] = '\0';
	folder_set_state(f, FOLDER_IDLE);
}

int
folder_add_scope(struct folder *f, char *path)
{
	char **n;

	if (!path)
		return -ENOMEM;
	if (f->scan_full || f->nscan_scopes >= 10000) {
		f->scan_full = 1;
		free(path);
		return 0;
	}
	n = realloc(f->scan_scopes, (f->nscan_scopes + 1) * sizeof(*n));
	if (!n) {
		free(path);
		return -ENOMEM;
	}
	f->scan_scopes = n;
	n[f->nscan_scopes++] = path;
	return 0;
}

static void
folder_drop_scopes(struct folder *f)
{
	for (size_t i = 0; i < f->nscan_scopes; i++)
		free(f->scan_scopes[i]);
	free(f->scan_scopes);
	f->scan_scopes = NULL;
	f->nscan_scopes = 0;
}

static int
str_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* True when scope covers path: equal, or path is under it. */
static int
scope_covers(const char *scope, const char *path)
{
	size_t pl = strlen(scope);
	return strncmp(path, scope, pl) == 0 && (path[pl] == '\0' || path[pl] == '/');
}

/*
 * Hands the folder's scopes to a scan: sorted, without duplicates, without a
 * scope under another one, and without a directory's own entry (a shallow
 * scope) that a deep scope already covers.
 */
static void
folder_take_scopes(struct folder *f, char ***out, size_t *nout)
{
	char **v = f->scan_scopes;
	size_t n = f->nscan_scopes, w = 0;
	char *keep = calloc(n ? n : 1, 1);
	ssize_t last_deep = -1;

	if (!keep) {
		/* No memory for the bookkeeping: scan the whole folder instead. */
		folder_drop_scopes(f);
		*out = NULL;
		*nout = 0;
		return;
	}
	qsort(v, n, sizeof(*v), str_cmp); /* shallow scopes ('\1'...) sort first */
	for (size_t i = 0; i < n; i++) {
		keep[i] = 1;
		if (v[i][0] == SCOPE_SHALLOW) {
			keep[i] = !(i > 0 && strcmp(v[i], v[i - 1]) == 0);
			continue;
		}
		if (last_deep >= 0 && scope_covers(v[last_deep], v[i]))
			keep[i] = 0;
		else
			last_deep = (ssize_t)i;
	}
	for (size_t i = 0; i < n && n < 2000; i++) {
		if (!keep[i] || v[i][0] != SCOPE_SHALLOW)
			continue;
		for (size_t k = 0; k < n; k++)
			if (keep[k] && v[k][0] != SCOPE_SHALLOW && scope_covers(v[k], v[i] + 1))
				keep[i] = 0;
	}
	for (size_t i = 0; i < n; i++) {
		if (keep[i])
			v[w++] = v[i];
		else
			free(v[i]);
	}
	free(keep);
	*out = v;
	*nout = w;
	f->scan_scopes = NULL;
	f->nscan_scopes = 0;
}

static struct device *
device_find(struct agent *ag, const unsigned char id[32])
{
	for (struct device *d = ag->devices; d; d = d->next)
		if (memcmp(d->id, id, 32) == 0)
			return d;
	return NULL;
}

struct device *
agent_device(struct agent *ag, const unsigned char id[32])
{
	struct device *d = device_find(ag, id);
	return d && !d->mark ? d : NULL; /* a removed device is not known any more */
}

struct device *
agent_device_by_num(struct agent *ag, uint32_t num)
{
	for (struct device *d = ag->devices; d; d = d->next)
		if (d->num == num)
			return d;
	return NULL;
}

struct folder *
agent_folder(struct agent *ag, const char *id, size_t len)
{
	for (struct folder *f = ag->folders; f; f = f->next)
		if (strlen(f->id) == len && memcmp(f->id, id, len) == 0)
			return f;
	return NULL;
}

int
folder_shared_with(const struct folder *f, const struct device *d)
{
	for (size_t i = 0; i < f->nshares; i++)
		if (memcmp(f->shares[i], d->id, 32) == 0)
			return 1;
	return 0;
}

static void
on_kick(uv_timer_t *t);

void
agent_kick(struct agent *ag)
{
	if (!ag->stopping)
		uv_timer_start(&ag->kick, on_kick, 0, 0);
}

void
agent_local_index_changed(struct agent *ag, struct folder *f)
{
	for (struct device *d = ag->devices; d; d = d->next)
		if (d->conn && conn_active(d->conn) && folder_shared_with(f, d))
			conn_index_changed(d->conn, f);
}

/*
 * Counting a folder's global and need figures walks every device's index
 * (pull.c, "counting in slices"). A folder that fits in one slice is counted
 * at once, as before; a larger one a slice per loop turn (ag->slice_idle), so
 * that peers and the CLI are answered meanwhile, and at most once per
 * COUNT_GAP times as long as its last count took: a busy folder of a million
 * files is not counted after every edit.
 */
#define COUNT_GAP 4

size_t
agent_slice_entries(void)
{
	static size_t v;
	if (!v) {
		const char *e = getenv("SHOAL_SLICE");
		v = e && atoi(e) >= 2 ? (size_t)atoi(e) : 16384;
	}
	return v;
}

static void on_slice_idle(uv_idle_t *h);

static void
counts_slice(struct folder *f)
{
	struct agent *ag = f->ag;
	uint64_t now = now_ms();
	int done = 0, rc;

	if (!f->counting) {
		uint32_t devs[64];
		size_t n = 0;
		if (f->pull_count == 1) {
			/* A full pull waits for this one: what the connected devices offer. */
			n = pull_devices(f, devs);
			f->counting_for_pull = 1;
		} else {
			if (!f->counts_wanted || now < f->count_next_ms)
				return;
			for (struct device *d = ag->devices; d && n < 64; d = d->next)
				if (folder_shared_with(f, d))
					devs[n++] = d->num;
			f->counting_for_pull = 0;
			f->counts_wanted = 0;
		}
		if (plan_count_begin(f->num, devs, n, f->mode, &f->counting) != 0)
			return;
		f->count_started_ms = now;
	}
	rc = plan_count_step(f->counting, ag->store, agent_slice_entries(), &done);
	if (rc == 0 && !done) {
		agent_slices_start(ag);
		return;
	}
	if (rc == 0 && f->counting_for_pull) {
		struct counts local = {0}, global;
		plan_count_result(f->counting, &local, &global, &f->pull_need);
		plan_count_free(f->counting);
		f->counting = NULL;
		f->pull_count = 2;
		f->pull_wanted = 1;
		f->pull_at_ms = 0;
		agent_kick(ag);
		return;
	}
	if (rc == 0) {
		struct store_txn *txn;
		struct store_checkpoint cp;
		if ((rc = store_read_begin(ag->store, &txn)) == 0) {
			rc = store_checkpoint_get(txn, f->num, STORE_LOCAL, &cp);
			store_read_end(txn);
		}
		if (rc == 0) {
			f->local.files = cp.files;
			f->local.bytes = cp.bytes;
			plan_count_result(f->counting, &f->local, &f->global, &f->need);
		}
	}
	if (rc != 0) {
		log_debug("%s: cannot count what it needs: %s", f->id, store_strerror(rc));
		if (!f->counting_for_pull)
			f->counts_wanted = 1; /* again at a later tick (a pull's count too) */
	}
	plan_count_free(f->counting);
	f->counting = NULL;
	now = now_ms();
	f->count_next_ms = now + COUNT_GAP * (now - f->count_started_ms);
	if (now - f->count_started_ms >= 1000)
		log_debug("%s: counted what it needs in %.2f s", f->id,
			  (double)(now - f->count_started_ms) / 1000.0);
}

static void
on_slice_idle(uv_idle_t *h)
{
	struct agent *ag = h->data;
	int busy = 0;

	for (struct folder *f = ag->folders; f; f = f->next) {
		busy |= scan_slice(f);
		if (f->counting)
			counts_slice(f);
		busy |= f->counting != NULL;
	}
	if (!busy) {
		uv_idle_stop(&ag->slice_idle);
		ag->slice_idle_on = 0;
	}
}

void
agent_slices_start(struct agent *ag)
{
	if (!ag->slice_idle_on && !ag->stopping) {
		uv_idle_start(&ag->slice_idle, on_slice_idle);
		ag->slice_idle_on = 1;
	}
}

void
folder_count_for_pull(struct folder *f)
{
	if (f->counting && !f->counting_for_pull) {
		/* The status figures' count gives way, and runs again afterwards. */
		plan_count_free(f->counting);
		f->counting = NULL;
		f->counts_wanted = 1;
	}
	f->pull_count = 1;
	if (!f->counting)
		counts_slice(f);
}

/* The figures are counted again: now when the folder is small, else soon (above). */
static void
folder_update_counts(struct folder *f)
{
	f->counts_wanted = 1;
	if (!f->counting)
		counts_slice(f);
}

int
local_records_put(struct store_txn *txn, uint32_t folder, struct store_file *recs, size_t n,
		  size_t *failed)
{
	for (size_t i = 0; i < n; i++) {
		recs[i].sequence = 0; /* a retry after map growth must not reuse one */
		int rc = store_file_put(txn, folder, STORE_LOCAL, &recs[i]);
		if (rc != 0) {
			if (failed)
				*failed = i;
			return rc;
		}
	}
	return 0;
}

void
local_records_free(struct store_file *recs, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free((char *)recs[i].name);
		free((char *)recs[i].target);
		free(recs[i].version);
		free(recs[i].blocks);
		memset(&recs[i], 0, sizeof(recs[i]));
	}
}

void
folder_job_done(struct folder *f)
{
	if (f->state != FOLDER_ERROR)
		folder_set_state(f, FOLDER_IDLE);
	if (!f->ag->stopping)
		folder_update_counts(f);
	agent_kick(f->ag);
}

/* ---- folders and devices from the configuration ---- */

struct folder_init {
	const char *id;
	uint32_t num;
	uint64_t index_id;
	int fresh;
};

static int
txn_folder_init(struct store_txn *txn, void *arg)
{
	struct folder_init *x = arg;
	struct store_checkpoint cp;
	int rc = store_folder_num(txn, x->id, 1, &x->num);
	if (rc != 0)
		return rc;
	rc = store_checkpoint_get(txn, x->num, STORE_LOCAL, &cp);
	if (rc != 0)
		return rc;
	x->fresh = cp.max_seq == 0; /* nothing recorded yet: a marker may be created */
	if (cp.index_id == 0) {
		while (cp.index_id == 0)
			randombytes_buf(&cp.index_id, sizeof(cp.index_id));
		rc = store_checkpoint_put(txn, x->num, STORE_LOCAL, &cp);
	}
	x->index_id = cp.index_id;
	return rc;
}

static int
txn_device_num(struct store_txn *txn, void *arg)
{
	struct device *d = arg;
	return store_device_num(txn, d->id, 1, &d->num);
}

static void
folder_open_root(struct folder *f)
{
	struct stat st;
	struct folder_init x = {f->id, 0, 0, 0};
	int rc;

	rc = store_write(f->ag->store, txn_folder_init, &x);
	if (rc != 0) {
		folder_set_error(f, "database: %s", store_strerror(rc));
		return;
	}
	f->num = x.num;
	f->index_id = x.index_id;
	{
		struct store_txn *txn;
		char key[32];
		uint64_t v = 0;
		size_t len = 0;
		snprintf(key, sizeof(key), "selfmax/%u", f->num);
		if (store_read_begin(f->ag->store, &txn) == 0) {
			if (store_meta_get(txn, key, &v, sizeof(v), &len) == 0 && len == sizeof(v))
				f->self_max = v;
			store_read_end(txn);
		}
	}
	f->rootfd = open(f->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (f->rootfd < 0) {
		folder_set_error(f, "cannot open %s: %s", f->path, strerror(errno));
		return;
	}
	if (fstatat(f->rootfd, ".shoal-folder", &st, AT_SYMLINK_NOFOLLOW) != 0) {
		if (x.fresh) {
			int fd = openat(f->rootfd, ".shoal-folder", O_WRONLY | O_CREAT | O_CLOEXEC,
					0644);
			if (fd >= 0)
				close(fd);
		}
	}
	f->scan_wanted = 1;
	f->pull_wanted = 1;
	folder_dirty_all(f);
}

static void
folder_free(struct folder *f)
{
	watch_folder_clear(f);
	strmap_clear(&f->dirty);
	plan_count_free(f->counting);
	folder_drop_scopes(f);
	if (f->rootfd >= 0)
		close(f->rootfd);
	free(f->id);
	free(f->label);
	free(f->path);
	free(f->shares);
	free(f);
}

static int
shares_equal(const struct folder *f, const struct cfg_folder *cf)
{
	if (f->nshares != cf->nshares)
		return 0;
	for (size_t i = 0; i < cf->nshares; i++)
		if (memcmp(f->shares[i], cf->shares[i], 32) != 0)
			return 0;
	return 1;
}

static void dial_devices(struct agent *ag, uint64_t now);

static void
close_device_conns(struct agent *ag, const unsigned char id[32], const char *why)
{
	struct device *d = device_find(ag, id);
	if (!d)
		return;
	if (d->conn && !conn_answering_join(d->conn))
		conn_close(d->conn, why);
	if (d->dialing && !conn_answering_join(d->dialing))
		conn_close(d->dialing, why);
	d->next_dial_ms = 0;
}

static int
shares_contains(const struct folder *f, const unsigned char id[32])
{
	for (size_t i = 0; i < f->nshares; i++)
		if (memcmp(f->shares[i], id, 32) == 0)
			return 1;
	return 0;
}

static void
device_free(struct device *d)
{
	free(d->name);
	for (size_t k = 0; k < d->naddrs; k++)
		free(d->addrs[k]);
	free(d->addrs);
	for (size_t k = 0; k < 4; k++)
		free(d->found_addrs[k]);
	free(d);
}

/* Frees removed devices once no connection refers to them. */
static void
devices_sweep(struct agent *ag)
{
	for (struct device **pp = &ag->devices; *pp;) {
		struct device *d = *pp;
		int used = 0;
		if (d->mark) {
			for (struct conn *c = ag->conns; c; c = conn_next(c))
				used |= conn_device(c) == d;
		}
		if (!d->mark || used) {
			pp = &d->next;
			continue;
		}
		*pp = d->next;
		device_free(d);
	}
}

/* Brings devices and folders in line with ag->cfg. */
static void
agent_apply_config(struct agent *ag)
{
	struct config *c = &ag->cfg;

	ag->reload_pending = 0;
	for (struct device *d = ag->devices; d; d = d->next)
		d->mark = 1;
	for (size_t i = 0; i < c->npeers; i++) {
		struct cfg_peer *cp = &c->peers[i];
		struct device *d;
		if (memcmp(cp->id, ag->ident.id, 32) == 0)
			continue;
		d = device_find(ag, cp->id);
		if (!d) {
			d = calloc(1, sizeof(*d));
			if (!d)
				continue;
			d->ag = ag;
			memcpy(d->id, cp->id, 32);
			sec_devid_format(d->id, d->idstr);
			d->short_id = sec_devid_short(d->id);
			if (store_write(ag->store, txn_device_num, d) != 0) {
				free(d);
				continue;
			}
			d->next = ag->devices;
			ag->devices = d;
		}
		d->mark = 0;
		d->join_refused = 0; /* a new `shoal join` may carry a new invite */
		free(d->name);
		d->name = cp->name ? strdup(cp->name) : NULL;
		for (size_t k = 0; k < d->naddrs; k++)
			free(d->addrs[k]);
		free(d->addrs);
		d->addrs = NULL;
		d->naddrs = 0;
		if (cp->naddrs && (d->addrs = calloc(cp->naddrs, sizeof(char *)))) {
			for (size_t k = 0; k < cp->naddrs; k++)
				if ((d->addrs[d->naddrs] = strdup(cp->addrs[k])))
					d->naddrs++;
		}
	}
	for (struct device *d = ag->devices; d; d = d->next)
		if (d->mark)
			close_device_conns(ag, d->id, "device removed");
	devices_sweep(ag);

	/* Folders: keep the unchanged, drop the removed or changed, add the new. */
	for (struct folder *f = ag->folders; f; f = f->next)
		f->mark = 1;
	for (size_t i = 0; i < c->nfolders; i++) {
		struct cfg_folder *cf = &c->folders[i];
		struct folder *f = agent_folder(ag, cf->id, strlen(cf->id));
		if (!f || strcmp(f->path, cf->path) != 0 || f->mode != cf->mode)
			continue;
		f->mark = 0;
		free(f->label);
		f->label = cf->label ? strdup(cf->label) : NULL;
		if (!shares_equal(f, cf)) {
			/* Whoever gained or lost this folder renegotiates it. */
			for (size_t k = 0; k < f->nshares; k++)
				if (!config_folder_shared(cf, f->shares[k]))
					close_device_conns(ag, f->shares[k], "folder unshared");
			for (size_t k = 0; k < cf->nshares; k++)
				if (!shares_contains(f, cf->shares[k]))
					close_device_conns(ag, cf->shares[k], "folder shared");
			free(f->shares);
			f->shares = NULL;
			f->nshares = 0;
			if (cf->nshares && (f->shares = malloc(cf->nshares * 32))) {
				memcpy(f->shares, cf->shares, cf->nshares * 32);
				f->nshares = cf->nshares;
			}
			f->pull_wanted = 1;
			folder_dirty_all(f);
		}
	}
	for (struct folder **pp = &ag->folders; *pp;) {
		struct folder *f = *pp;
		if (!f->mark) {
			pp = &f->next;
			continue;
		}
		for (size_t k = 0; k < f->nshares; k++)
			close_device_conns(ag, f->shares[k], "folder changed");
		if (f->scan || f->pull) {
			/* Finish removing it once its job has stopped. */
			scan_abort(f);
			pull_abort(f);
			ag->reload_pending = 1;
			pp = &f->next;
			continue;
		}
		*pp = f->next;
		log_info("folder %s removed", f->id);
		folder_free(f);
	}
	for (size_t i = 0; i < c->nfolders; i++) {
		struct cfg_folder *cf = &c->folders[i];
		struct folder *f;
		if (agent_folder(ag, cf->id, strlen(cf->id)))
			continue;
		f = calloc(1, sizeof(*f));
		if (!f)
			continue;
		f->ag = ag;
		f->rootfd = -1;
		f->id = strdup(cf->id);
		f->path = strdup(cf->path);
		f->label = cf->label ? strdup(cf->label) : NULL;
		f->mode = cf->mode;
		f->dirty_all = 1;
		if (cf->nshares && (f->shares = malloc(cf->nshares * 32))) {
			memcpy(f->shares, cf->shares, cf->nshares * 32);
			f->nshares = cf->nshares;
		}
		if (!f->id || !f->path) {
			folder_free(f);
			continue;
		}
		f->next = ag->folders;
		ag->folders = f;
		log_info("folder %s (%s) at %s", f->id, mode_name(f->mode), f->path);
		folder_open_root(f);
		for (size_t k = 0; k < f->nshares; k++)
			close_device_conns(ag, f->shares[k], "folder added");
	}
	/* Whoever was cut off above to renegotiate its folders is dialled again now, not at the next tick. */
	if (ag->listening)
		dial_devices(ag, now_ms());
	agent_kick(ag);
}

/* ---- configuration reloads ---- */

static int
config_changed(struct agent *ag)
{
	struct stat st;
	if (stat(ag->config_path, &st) != 0)
		return 0;
	return st.st_mtim.tv_sec != ag->cfg_st.st_mtim.tv_sec ||
	       st.st_mtim.tv_nsec != ag->cfg_st.st_mtim.tv_nsec || st.st_ino != ag->cfg_st.st_ino ||
	       st.st_size != ag->cfg_st.st_size;
}

/* Re-reads the configuration file. Returns 0 or a negative code (old one kept). */
int
agent_reload(struct agent *ag)
{
	struct config nc;
	char err[256];
	int rc;

	stat(ag->config_path, &ag->cfg_st);
	rc = config_load(&nc, ag->config_path, err, sizeof(err));
	if (rc != 0) {
		log_error("cannot reload %s: %s; keeping the previous configuration",
			  ag->config_path, err[0] ? err : strerror(-rc));
		return rc;
	}
	config_release(&ag->cfg);
	ag->cfg = nc;
	log_info("configuration loaded: %zu folder%s, %zu device%s", nc.nfolders,
		 nc.nfolders == 1 ? "" : "s", nc.npeers, nc.npeers == 1 ? "" : "s");
	agent_apply_config(ag);
	return 0;
}

int
agent_add_member(struct agent *ag, const unsigned char id[32], const char *name,
		 const char *folder)
{
	struct config c;
	struct cfg_peer *p;
	struct cfg_folder *f;
	char err[256];
	int lock = invites_lock(ag->home), rc;

	if (lock < 0)
		return lock;
	rc = config_load(&c, ag->config_path, err, sizeof(err));
	if (rc == 0) {
		p = config_peer(&c, id);
		if (!p && !(p = config_add_peer(&c, id)))
			rc = -ENOMEM;
		if (rc == 0 && name[0] && !p->name)
			rc = config_set_str(&p->name, name);
		f = config_folder(&c, folder);
		if (rc == 0 && !f)
			rc = -ENOENT;
		if (rc == 0)
			rc = config_folder_share(f, id);
		if (rc == 0)
			rc = config_save(&c, ag->config_path);
		config_release(&c);
	}
	invites_unlock(lock);
	if (rc == 0)
		rc = agent_reload(ag);
	return rc;
}

/* ---- timers ---- */

/* Transfer progress, about once a second while a folder pulls: bytes, speed, ETA. */
void
folder_progress_event(struct folder *f, uint64_t now)
{
	struct json *j;
	uint64_t dt = now - f->pull_rate_mark_ms;

	if (f->pull_rate_mark_ms && dt > 0) {
		uint64_t rate = (f->pull_done_bytes - f->pull_rate_mark_bytes) * 1000 / dt;
		/* A little smoothing so the ETA does not jump about. */
		f->pull_rate = f->pull_rate ? (f->pull_rate + rate) / 2 : rate;
	}
	f->pull_rate_mark_ms = now;
	f->pull_rate_mark_bytes = f->pull_done_bytes;
	j = events_begin(f->ag, "transfer_progress");
	json_key(j, "folder");
	json_str(j, f->id);
	json_key(j, "bytes_done");
	json_u64(j, f->pull_done_bytes);
	json_key(j, "bytes_total");
	json_u64(j, f->pull_total_bytes);
	json_key(j, "bytes_per_s");
	json_u64(j, f->pull_rate);
	json_key(j, "eta_s");
	if (f->pull_rate && f->pull_total_bytes >= f->pull_done_bytes)
		json_u64(j, (f->pull_total_bytes - f->pull_done_bytes) / f->pull_rate);
	else
		json_null(j);
	events_end(f->ag, j, 0);
}

static void
dial_devices(struct agent *ag, uint64_t now)
{
	for (struct device *d = ag->devices; d; d = d->next) {
		size_t nfound = 0;
		while (nfound < 4 && d->found_addrs[nfound])
			nfound++;
		if (d->mark || d->conn || d->dialing || d->naddrs + nfound == 0 || now < d->next_dial_ms ||
		    d->join_refused)
			continue;
		int shares = 0;
		for (struct folder *f = ag->folders; f; f = f->next)
			shares |= folder_shared_with(f, d);
		if (!shares)
			continue;
		size_t ix = d->addr_ix++ % (d->naddrs + nfound);
		const char *addr = ix < d->naddrs ? d->addrs[ix] : d->found_addrs[ix - d->naddrs];
		/* Back off 1 s, 2 s, 4 s ... up to 60 s, with jitter, until one works. */
		d->backoff_ms = d->backoff_ms ? d->backoff_ms * 2 : 1000;
		if (d->backoff_ms > 60000)
			d->backoff_ms = 60000;
		d->next_dial_ms = now + d->backoff_ms / 2 + randombytes_uniform(d->backoff_ms / 2 + 1);
		conn_dial(ag, d, addr);
	}
}

/*
 * Blocks (up to 4 MiB) and their frames are allocated and freed at hundreds
 * of megabytes a second. With glibc's defaults, each was an mmap and munmap
 * of fresh pages, or the heap's top was trimmed and grown again: page
 * faults and zeroing cost both agents about a fifth of their CPU in a 1 GiB
 * transfer (docs/performance.md). So buffers below 8 MiB come from the heap,
 * and free() leaves up to 64 MiB at its top; trim_when_quiet() gives it back.
 */
static void
malloc_settings(void)
{
#ifdef M_MMAP_THRESHOLD
	mallopt(M_MMAP_THRESHOLD, 8 << 20);
	mallopt(M_TRIM_THRESHOLD, 64 << 20);
#endif
}

/* Once the connections have moved nothing for two ticks, and no pull runs, free
 * memory beyond 4 MiB goes back to the system (see malloc_settings). */
static void
trim_when_quiet(struct agent *ag, uint64_t now)
{
	uint64_t bytes = 0;
	int busy = 0;

	for (const struct conn *c = ag->conns; c; c = conn_next(c))
		bytes += conn_in_bytes(c) + conn_out_bytes(c);
	for (const struct folder *f = ag->folders; f; f = f->next)
		busy |= f->pull != NULL;
	if (busy || bytes != ag->trim_bytes) {
		ag->trim_bytes = bytes;
		ag->trim_quiet_ms = now;
		ag->trim_due = 1;
		return;
	}
	if (!ag->trim_due || now - ag->trim_quiet_ms < 2 * TICK_MS)
		return;
	ag->trim_due = 0;
#ifdef M_MMAP_THRESHOLD
	if (mallinfo2().fordblks > (4u << 20))
		malloc_trim(0);
#endif
}

static void
on_tick(uv_timer_t *t)
{
	struct agent *ag = t->data;
	uint64_t now = now_ms();

	if (ag->stopping)
		return;
	if (config_changed(ag) || ag->reload_pending)
		agent_reload(ag);
	devices_sweep(ag);
	events_flush(ag);
	if (now >= ag->next_housekeeping_ms) {
		ag->next_housekeeping_ms = now + 3600 * 1000;
		pull_cleanup_partials(ag);
	}
	expire_tick(ag, now);
	for (struct folder *f = ag->folders; f; f = f->next)
		if (f->pull)
			folder_progress_event(f, now);
	for (struct conn *c = ag->conns, *nx; c; c = nx) {
		nx = conn_next(c);
		conn_tick(c, now);
	}
	dial_devices(ag, now);
	for (struct folder *f = ag->folders; f; f = f->next)
		if ((f->counts_wanted || f->pull_count == 1) && !f->counting && !ag->stopping)
			counts_slice(f); /* waited for its gap, or failed */
	trim_when_quiet(ag, now);
	/* What a scan or pull left mapped of the index, once it is done (docs/storage.md). */
	store_trim_map_idle(ag->store);
	watch_tick(ag, now);
	for (struct folder *f = ag->folders; f; f = f->next) {
		/* A folder whose path was missing (an unmounted disk) is tried again. */
		if (f->rootfd < 0 && !f->mark && now >= f->next_scan_ms + 10000) {
			f->next_scan_ms = now;
			folder_open_root(f);
			if (f->rootfd >= 0)
				folder_clear_error(f);
		}
	}
	for (struct folder *f = ag->folders; f; f = f->next) {
		if (f->rootfd >= 0 && now >= f->next_scan_ms + ag->rescan_interval_ms &&
		    !f->scan_wanted) {
			f->scan_wanted = 1;
			f->next_scan_ms = now;
		}
	}
	agent_kick(ag);
}

static void
on_kick(uv_timer_t *t)
{
	struct agent *ag = t->data;
	uint64_t now = now_ms(), wake = UINT64_MAX;

	if (ag->stopping)
		return;
	for (struct folder *f = ag->folders; f; f = f->next) {
		if (f->pull) {
			pull_poke(f);
			continue;
		}
		if (f->scan || f->rootfd < 0 || f->mark)
			continue;
		if (f->scan_wanted) {
			if (now < f->next_scan_ms) {
				wake = wake < f->next_scan_ms ? wake : f->next_scan_ms;
				continue;
			}
			char **scopes = NULL;
			size_t nscopes = 0;
			f->scan_wanted = 0;
			if (f->scan_full || f->nscan_scopes == 0) {
				/* A whole-folder scan: the periodic safety net restarts from here. */
				f->scan_full = 0;
				f->next_scan_ms = now;
				folder_drop_scopes(f);
			} else {
				folder_take_scopes(f, &scopes, &nscopes);
			}
			f->scan_running_gen = f->scan_req_gen;
			if (f->state != FOLDER_ERROR)
				folder_set_state(f, FOLDER_SCANNING);
			if (scan_start(f, scopes, nscopes) != 0) {
				folder_set_error(f, "cannot start a scan");
				continue;
			}
			f->pull_wanted = 1;
			continue;
		}
		if (f->pull_wanted && f->mode != MODE_SEND) {
			if (now < f->pull_at_ms) {
				wake = wake < f->pull_at_ms ? wake : f->pull_at_ms;
				continue;
			}
			f->pull_wanted = 0;
			/* pull_start() sets the folder syncing when there is something to pull. */
			int rc = pull_start(f);
			if (rc != 0 && rc != PULL_COUNTING) {
				if (rc < 0)
					folder_set_error(f, "cannot plan the pull: %s",
							 store_strerror(rc));
				folder_update_counts(f);
			}
		} else if (f->pull_wanted) {
			f->pull_wanted = 0;
			folder_update_counts(f);
		}
	}
	if (wake != UINT64_MAX)
		uv_timer_start(&ag->kick, on_kick, wake - now, 0);
}

/* ---- listening ---- */

static void
on_connection(uv_stream_t *server, int status)
{
	struct agent *ag = server->data;
	if (status < 0) {
		log_warn("accept: %s", uv_strerror(status));
		return;
	}
	conn_accept(ag, server);
}

static int
agent_listen(struct agent *ag, const char *addr)
{
	struct sockaddr_storage ss;
	char host[64];
	const char *colon = strrchr(addr, ':');
	int port, rc;

	if (!colon || (size_t)(colon - addr) >= sizeof(host))
		return -EINVAL;
	port = atoi(colon + 1);
	if (port < 0 || port > 65535)
		return -EINVAL;
	if (addr[0] == '[') {
		if (colon - addr < 3 || colon[-1] != ']')
			return -EINVAL;
		size_t n = (size_t)(colon - addr) - 2;
		memcpy(host, addr + 1, n);
		host[n] = '\0';
	} else {
		memcpy(host, addr, (size_t)(colon - addr));
		host[colon - addr] = '\0';
	}
	if (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) != 0 &&
	    uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) != 0)
		return -EINVAL;
	uv_tcp_init(ag->loop, &ag->listener);
	ag->listener.data = ag;
	ag->listening = 1;
	rc = uv_tcp_bind(&ag->listener, (struct sockaddr *)&ss, 0);
	if (rc == 0)
		rc = uv_listen((uv_stream_t *)&ag->listener, 128, on_connection);
	if (rc == 0) {
		int len = sizeof(ss);
		uv_tcp_getsockname(&ag->listener, (struct sockaddr *)&ss, &len);
		port = ss.ss_family == AF_INET ? ntohs(((struct sockaddr_in *)&ss)->sin_port)
					       : ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
		snprintf(ag->listen_addr, sizeof(ag->listen_addr), "%s%s%s:%d",
			 ss.ss_family == AF_INET6 ? "[" : "", host,
			 ss.ss_family == AF_INET6 ? "]" : "", port);
	}
	return rc;
}

/* ---- shutdown ---- */

static void
on_handle_closed(uv_handle_t *h)
{
	(void)h;
}

static void
agent_stop(struct agent *ag, const char *why)
{
	if (ag->stopping)
		return;
	ag->stopping = 1;
	log_info("stopping: %s", why);
	/* Connections first: their outstanding requests fail, then the pullers wind down. */
	for (struct conn *c = ag->conns, *nx; c; c = nx) {
		nx = conn_next(c);
		conn_close(c, "shutting down");
	}
	for (struct folder *f = ag->folders; f; f = f->next) {
		scan_abort(f);
		pull_abort(f);
	}
	uv_timer_stop(&ag->tick);
	uv_timer_stop(&ag->kick);
	uv_close((uv_handle_t *)&ag->tick, on_handle_closed);
	uv_close((uv_handle_t *)&ag->kick, on_handle_closed);
	uv_close((uv_handle_t *)&ag->pull_check, on_handle_closed);
	uv_close((uv_handle_t *)&ag->slice_idle, on_handle_closed);
	uv_close((uv_handle_t *)&ag->sig_term, on_handle_closed);
	uv_close((uv_handle_t *)&ag->sig_int, on_handle_closed);
	uv_close((uv_handle_t *)&ag->sig_hup, on_handle_closed);
	if (ag->listening)
		uv_close((uv_handle_t *)&ag->listener, on_handle_closed);
	control_close(ag);
	watch_stop(ag);
	discovery_stop(ag->disc);
	ag->disc = NULL;
}

/* discovery: a device announced itself at addr (a hint: the handshake checks the key). */
static void
on_mdns_found(void *arg, const char *idstr, const char *addr)
{
	struct agent *ag = arg;
	unsigned char id[32];
	struct device *d;
	char *copy;
	size_t k;

	if (sec_devid_parse(idstr, id) != 0 || !(d = agent_device(ag, id)))
		return;
	for (k = 0; k < 4 && d->found_addrs[k]; k++)
		if (strcmp(d->found_addrs[k], addr) == 0)
			return;
	if (!(copy = strdup(addr)))
		return;
	free(d->found_addrs[3]);
	memmove(&d->found_addrs[1], &d->found_addrs[0], 3 * sizeof(char *));
	d->found_addrs[0] = copy;
	log_info("mDNS: %s is at %s", d->name ? d->name : d->idstr, addr);
	if (!d->conn && !d->dialing) {
		d->addr_ix = d->naddrs; /* the new address first */
		d->backoff_ms = 0;
		d->next_dial_ms = 0;
		agent_kick(ag);
	}
}

static void
on_signal(uv_signal_t *s, int signum)
{
	struct agent *ag = s->data;
	if (signum == SIGHUP) {
		log_info("SIGHUP: reloading the configuration");
		agent_reload(ag);
		return;
	}
	agent_stop(ag, signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

/* ---- start-up ---- */

static int
agent_default_folder(struct agent *ag)
{
	char *path = home_default_folder();
	struct cfg_folder *f;
	int rc;

	if (!path)
		return -ENOMEM;
	rc = mkdir_p(path, 0700);
	if (rc == 0) {
		char *marker = path_join(path, ".shoal-folder");
		int fd = marker ? open(marker, O_WRONLY | O_CREAT | O_CLOEXEC, 0644) : -1;
		if (fd >= 0)
			close(fd);
		free(marker);
		f = config_add_folder(&ag->cfg, "default", path, MODE_SENDRECEIVE);
		rc = f ? config_save(&ag->cfg, ag->config_path) : -ENOMEM;
	}
	if (rc == 0)
		log_info("created the default folder \"default\" at %s (send-receive)", path);
	else
		log_error("cannot create the default folder %s: %s", path, strerror(-rc));
	free(path);
	return rc;
}

int
agent_run(const char *home_opt, const char *listen, int no_mdns)
{
	struct agent *ag = calloc(1, sizeof(*ag));
	char err[256];
	char *lockpath = NULL;
	int created = 0, rc, exit_code = 1;
	uv_loop_t loop;

	if (!ag)
		return 1;
	/* A peer that vanishes mid-write is an error code, not a signal. */
	signal(SIGPIPE, SIG_IGN);
	malloc_settings();
	ag->lockfd = -1;
	ag->no_mdns = no_mdns;
	ag->rescan_interval_ms = RESCAN_WATCHED_MS;
	ag->rescan_fallback_ms = RESCAN_UNWATCHED_MS;
	if (getenv("SHOAL_RESCAN_S") && atoi(getenv("SHOAL_RESCAN_S")) > 0)
		ag->rescan_interval_ms = ag->rescan_fallback_ms =
			(uint64_t)atoi(getenv("SHOAL_RESCAN_S")) * 1000;
	ag->home = home_resolve(home_opt);
	if (!ag->home || home_ensure(ag->home) != 0) {
		log_error("cannot create the state directory %s", ag->home ? ag->home : "?");
		goto out_free;
	}
	ag->config_path = home_file(ag->home, "config");
	ag->sock_path = home_file(ag->home, "control.sock");
	lockpath = home_file(ag->home, "agent.lock");
	ag->lockfd = open(lockpath, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (ag->lockfd < 0 || flock(ag->lockfd, LOCK_EX | LOCK_NB) != 0) {
		log_error("another shoal agent is already running with the state directory %s",
			  ag->home);
		goto out_free;
	}
	rc = home_identity(ag->home, &ag->ident, 1, &created);
	if (rc != 0) {
		log_error("cannot load or create the device key in %s: %s", ag->home,
			  sec_strerror(rc));
		goto out_free;
	}
	sec_devid_format(ag->ident.id, ag->idstr);
	ag->short_id = sec_devid_short(ag->ident.id);
	if (created)
		log_info("created a new device identity");
	rc = config_load(&ag->cfg, ag->config_path, err, sizeof(err));
	if (rc != 0) {
		log_error("cannot read %s: %s", ag->config_path, err[0] ? err : strerror(-rc));
		goto out_free;
	}
	stat(ag->config_path, &ag->cfg_st);
	if (ag->cfg.nfolders == 0 && !getenv("SHOAL_NO_DEFAULT_FOLDER"))
		agent_default_folder(ag);
	stat(ag->config_path, &ag->cfg_st);
	rc = store_open(&ag->store, ag->home);
	if (rc != 0) {
		log_error("cannot open the database in %s: %s", ag->home, store_strerror(rc));
		goto out_free;
	}
	if (uv_loop_init(&loop) != 0)
		goto out_store;
	ag->loop = &loop;
	if (events_init(ag) != 0)
		goto out_store;
	uv_timer_init(ag->loop, &ag->tick);
	uv_timer_init(ag->loop, &ag->kick);
	uv_check_init(ag->loop, &ag->pull_check);
	uv_idle_init(ag->loop, &ag->slice_idle);
	ag->tick.data = ag->kick.data = ag->pull_check.data = ag->slice_idle.data = ag;
	uv_signal_init(ag->loop, &ag->sig_term);
	uv_signal_init(ag->loop, &ag->sig_int);
	uv_signal_init(ag->loop, &ag->sig_hup);
	ag->sig_term.data = ag->sig_int.data = ag->sig_hup.data = ag;
	uv_signal_start(&ag->sig_term, on_signal, SIGTERM);
	uv_signal_start(&ag->sig_int, on_signal, SIGINT);
	uv_signal_start(&ag->sig_hup, on_signal, SIGHUP);

	log_info("shoal %s, device ID %s", SHOAL_VERSION, ag->idstr);
	const char *la = listen ? listen : ag->cfg.listen ? ag->cfg.listen : CFG_DEFAULT_LISTEN;
	rc = agent_listen(ag, la);
	if (rc != 0) {
		log_error("cannot listen on %s: %s", la, rc == -EINVAL ? "bad address" : uv_strerror(rc));
		ag->exit_code = 1;
		agent_stop(ag, "cannot listen");
		goto run;
	}
	log_info("listening on %s", ag->listen_addr);
	if (control_listen(ag) != 0)
		log_warn("no control socket at %s: status and reloads go through the files only",
			 ag->sock_path);
	if (getenv("SHOAL_NO_WATCH") || watch_start(ag) != 0)
		ag->rescan_interval_ms = ag->rescan_fallback_ms;
	agent_apply_config(ag);
	if (!no_mdns) {
		rc = discovery_start(ag->loop, ag->idstr, ag->cfg.name,
				     atoi(strrchr(ag->listen_addr, ':') + 1), on_mdns_found, ag,
				     &ag->disc);
		if (rc != 0)
			log_warn("mDNS discovery not started: %s", strerror(-rc));
	}
	if (created || ag->cfg.npeers == 0)
		log_info("to share: on the other device run `shoal device add %s --addr "
			 "THIS-HOST:%s`, and here `shoal device add THEIR-ID` and `shoal folder "
			 "share FOLDER THEIR-ID`",
			 ag->idstr, strrchr(ag->listen_addr, ':') + 1);
	uv_timer_start(&ag->tick, on_tick, TICK_MS, TICK_MS);
	agent_kick(ag);
run:
	uv_run(ag->loop, UV_RUN_DEFAULT);
	/* Folders and devices go once every job and connection has ended. */
	while (ag->folders) {
		struct folder *f = ag->folders;
		ag->folders = f->next;
		folder_free(f);
	}
	for (struct device *d = ag->devices; d; d = d->next)
		d->mark = 1;
	devices_sweep(ag);
	events_release(ag);
	rc = uv_loop_close(ag->loop);
	if (rc != 0)
		log_warn("event loop closed with handles left: %s", uv_strerror(rc));
	exit_code = ag->exit_code;
	if (exit_code == 0)
		log_info("stopped");
out_store:
	store_close(ag->store);
out_free:
	if (ag->lockfd >= 0)
		close(ag->lockfd);
	free(lockpath);
	expire_release(ag);
	config_release(&ag->cfg);
	sec_identity_release(&ag->ident);
	free(ag->home);
	free(ag->config_path);
	free(ag->sock_path);
	free(ag->listen_override);
	free(ag);
	return exit_code;
}
