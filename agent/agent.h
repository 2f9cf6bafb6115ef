/*
 * agent/agent.h - the running agent: its devices, folders and connections.
 *
 * Invariants:
 * - One libuv loop, one thread. LMDB is used from the loop thread only;
 *   hashing, file reads and writes, fsync and renames run on the libuv thread
 *   pool and hand results back to the loop.
 * - A folder runs at most one job at a time: a scan or a pull. A scan never
 *   sees a file the puller renamed but has not yet recorded.
 * - Devices and folders come from the configuration file; a reload updates
 *   them in place and closes the connections whose sharing changed, so every
 *   connection always works on what the configuration says now.
 * - A connection's device is known only after the handshake proved its key.
 */
#ifndef SHOAL_AGENT_AGENT_H
#define SHOAL_AGENT_AGENT_H

#include <stdint.h>
#include <sys/stat.h>

#include <uv.h>

#include "agent/config.h"
#include "agent/json.h"
#include "agent/util.h"
#include "crypto/identity.h"
#include "crypto/noise.h"
#include "proto/msg.h"
#include "store/store.h"

struct conn;
struct ctl_client;
struct events;
struct scanner;
struct watcher;
struct wpend;
struct puller;

struct counts {
	uint64_t files, bytes;
};

struct device {
	struct device *next;
	struct agent *ag;
	unsigned char id[32];
	char idstr[SEC_DEVID_STRLEN + 1];
	uint64_t short_id;
	char *name;
	char **addrs;
	size_t naddrs;
	uint32_t num;           /* store device number */
	struct conn *conn;      /* the authenticated connection, or NULL */
	struct conn *dialing;   /* an outgoing connection still being set up */
	uint64_t next_dial_ms;
	uint32_t backoff_ms;
	size_t addr_ix;
	char *found_addrs[4];   /* addresses mDNS reported, newest first */
	uint64_t in_bytes, out_bytes; /* totals over all connections */
	int mark;               /* reload bookkeeping */
	int join_refused;       /* our invite for it was refused: stop dialling it */
};

enum folder_state { FOLDER_IDLE, FOLDER_SCANNING, FOLDER_SYNCING, FOLDER_ERROR };

struct folder {
	struct folder *next;
	struct agent *ag;
	char *id, *label, *path;
	enum folder_mode mode;
	unsigned char (*shares)[32];
	size_t nshares;
	uint32_t num;
	int rootfd;
	uint64_t index_id;
	enum folder_state state;
	char error[256];
	struct scanner *scan;
	struct puller *pull;
	int scan_wanted, pull_wanted;
	uint64_t pull_at_ms;    /* debounce: pull no earlier than this */
	uint64_t next_scan_ms;
	struct counts local, global, need;
	int mark;
	/* scoped scans: paths the watcher or `shoal scan` asked for */
	char **scan_scopes;
	size_t nscan_scopes;
	int scan_full;             /* the next scan covers the whole folder */
	uint64_t scan_req_gen;     /* bumped by each `shoal scan --wait` */
	uint64_t scan_done_gen;    /* the request generation the last finished scan covered */
	uint64_t scan_running_gen;
	struct wpend *wpend;       /* watcher: paths waiting to settle */
	size_t nwpend;
	struct strmap wpend_map;   /* path -> its struct wpend */
	/* names the puller is about to rename into place or delete, until when (ms):
	   the watcher drops their events (watch_expect) */
	struct strmap own_changes;
	int full_scan_pending;
	uint64_t full_scan_at_ms;
	/* the running pull, for status and progress events */
	uint64_t pull_done_bytes, pull_total_bytes, pull_rate;
	uint64_t pull_rate_mark_bytes, pull_rate_mark_ms;
	size_t conflicts;
	uint64_t self_max;         /* the highest counter this device gave itself in this folder */
	int error_from_pull;       /* the error was raised by a pull (e.g. a full disk) */
	int temps_seen;            /* a scan found temp files an earlier run left (pull.c checks
				      each new file for a finished one) */
	/* What the next pull plans (see folder_dirty_name() in pull.c): the names whose
	   records changed since the last pull started, or every name. */
	struct strmap dirty;
	int dirty_all;
	/* global and need are counted in slices (folder_update_counts()) */
	struct plan_count *counting;
	int counts_wanted;
	int counting_for_pull;     /* counting runs for a full pull (folder_count_for_pull()) */
	int pull_count;            /* a full pull's count: 0 none, 1 asked, 2 done (pull_need) */
	struct counts pull_need;
	uint64_t count_started_ms, count_next_ms;
};

struct agent {
	uv_loop_t *loop;
	char *home;
	char *config_path;
	char *sock_path;
	struct sec_identity ident;
	char idstr[SEC_DEVID_STRLEN + 1];
	uint64_t short_id;
	struct store *store;
	struct config cfg;
	struct stat cfg_st;
	char *listen_override;
	int no_mdns;
	struct discovery *disc; /* mDNS (discovery.c); NULL with --no-mdns */
	int lockfd;

	uv_tcp_t listener;
	int listening;
	char listen_addr[80];
	uv_pipe_t control;
	int control_open;
	struct ctl_client *ctl_clients; /* open control connections (control.c) */
	uv_timer_t tick;
	uv_timer_t kick;        /* runs folder work soon after something changed */
	uv_check_t pull_check;  /* runs the pullers' deferred work once per loop turn (pull.c) */
	int pull_check_on;
	uv_idle_t slice_idle;   /* a slice of a large folder's scan or count per loop turn */
	int slice_idle_on;
	uv_signal_t sig_term, sig_int, sig_hup;

	struct folder *folders;
	struct device *devices;
	struct conn *conns;
	uint32_t next_req_id;
	struct events *events;
	struct watcher *watch;
	uint64_t rescan_fallback_ms;
	uint64_t next_housekeeping_ms;
	uint64_t trim_bytes, trim_quiet_ms; /* trim_when_quiet() */
	int trim_due;
	int stopping;
	int reload_pending;
	int exit_code;
	uint64_t rescan_interval_ms;
	struct expire_state *expire; /* forgetting old deletions (expire.c) */
};

/* Runs the agent until SIGTERM/SIGINT. Returns the process exit code. */
int agent_run(const char *home, const char *listen, int no_mdns);

struct device *agent_device(struct agent *ag, const unsigned char id[32]);
struct device *agent_device_by_num(struct agent *ag, uint32_t num);
struct folder *agent_folder(struct agent *ag, const char *id, size_t len);
int folder_shared_with(const struct folder *f, const struct device *d);

/* Asks for folder work (scan or pull) on the next turn of the loop. */
void agent_kick(struct agent *ag);
/*
 * An owner accepted an invite: adds the device to the configuration file and
 * shares folder with it, then reloads. Returns 0 or a negative code.
 */
int agent_add_member(struct agent *ag, const unsigned char id[32], const char *name,
		     const char *folder);
/* Re-reads the configuration file and applies it. Returns 0 or a negative code. */
int agent_reload(struct agent *ag);
/* The folder's local index grew: tell every connected peer that shares it. */
void agent_local_index_changed(struct agent *ag, struct folder *f);
void folder_set_error(struct folder *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void folder_clear_error(struct folder *f);
const char *folder_state_name(enum folder_state s);

/* ---- connections (conn.c) ---- */
void conn_accept(struct agent *ag, uv_stream_t *server);
int conn_dial(struct agent *ag, struct device *d, const char *addr);
void conn_close(struct conn *c, const char *reason);
void conn_tick(struct conn *c, uint64_t now);
/* Queues a block request; returns 0 or a negative code (not connected). */
int conn_request(struct conn *c, const struct proto_request *r);
/* Wakes the index sender of c for folder f. */
void conn_index_changed(struct conn *c, struct folder *f);
struct device *conn_device(const struct conn *c);
struct conn *conn_next(const struct conn *c);
int conn_active(const struct conn *c);
/* The connection is answering a JOIN and closes by itself once the answer is written. */
int conn_answering_join(const struct conn *c);
const char *conn_address(const struct conn *c);
uint64_t conn_in_bytes(const struct conn *c);
uint64_t conn_out_bytes(const struct conn *c);

/* ---- scanner (scan.c) ---- */
/*
 * Starts a scan of f: of the given paths (and what is under them; takes the
 * array and its strings), or of the whole folder when scopes is NULL.
 * Returns 0 or a negative code; folder_job_done() follows.
 */
int scan_start(struct folder *f, char **scopes, size_t nscopes);
/*
 * Counts, in slices, what the connected devices offer f (its need), for a
 * full pull: sets f->pull_count to 2 and f->pull_need, and asks for a pull,
 * when done (at once for a folder that fits in one slice).
 */
void folder_count_for_pull(struct folder *f);
/* Runs scan_slice() and the counting slices at each loop turn until none is left. */
void agent_slices_start(struct agent *ag);
/* Index entries a slice handles: 16384; SHOAL_SLICE (2 or more) replaces it, for tests. */
size_t agent_slice_entries(void);
void scan_abort(struct folder *f);
/*
 * Runs the next slice of the scan's comparison with the index, if it is at
 * that step; returns 1 while more slices are to come (agent_slices_start()).
 */
int scan_slice(struct folder *f);
/*
 * Cuts and hashes size bytes of fd with average block size avg, with two
 * threads when parallel is set (the result is the same). *blocks is malloc'd.
 * Returns 0 or a negative code. For tests.
 */
int scan_chunk_fd(int fd, uint64_t size, uint32_t avg, int parallel, struct store_block **blocks,
		  size_t *n);

/* ---- puller (pull.c) ---- */
/*
 * Starts a pull of what f needs. Returns 0 (started), 1 (nothing to pull),
 * PULL_COUNTING (a full pull counts first, in slices, and is asked for again
 * when the count is done) or a negative code.
 */
#define PULL_COUNTING 2
int pull_start(struct folder *f);
/* The connected devices f is shared with (at most 64); returns how many. */
size_t pull_devices(struct folder *f, uint32_t devs[64]);
void pull_abort(struct folder *f);
/* A response arrived for one of the puller's requests. */
void pull_on_response(struct agent *ag, struct conn *c, const struct proto_response *r);
/* A connection closed: fail its outstanding requests. */
void pull_on_conn_closed(struct agent *ag, struct conn *c);
/* Removes partial downloads (temp file and record) older than a day. */
void pull_cleanup_partials(struct agent *ag);
/* Runs the pullers' work deferred to the end of this loop turn (ag->pull_check). */
void pull_on_check(uv_check_t *h);
/* Lets a running pull settle what changed (called from the kick handler). */
void pull_poke(struct folder *f);
/*
 * The names of one window of a pull's plan (see PULL_WINDOW in pull.c), in
 * the order they are worked on: after `after` (NULL: the first window),
 * deletions or everything else. *end is where the window ends (owned; NULL:
 * the last window of the sweep), to pass as `after` for the next one. For
 * tests.
 */
int plan_window_names(struct store *st, uint32_t folder, const uint32_t *devs, size_t ndevs,
		      enum folder_mode mode, const char *after, size_t after_len, int deleting,
		      char ***names, size_t *n, char **end, size_t *end_len);
/*
 * The next pull plans name (its record changed), or every name (see pull.c,
 * "what the next pull plans").
 */
void folder_dirty_name(struct folder *f, const char *name, size_t len);
void folder_dirty_all(struct folder *f);
/*
 * The names a pull would plan out of a set, deletions or everything else, in
 * the order it works on them, and what they need. For tests.
 */
int plan_names_list(struct store *st, uint32_t folder, const uint32_t *devs, size_t ndevs,
		    enum folder_mode mode, const struct strmap *names, int deleting, char ***out,
		    size_t *n, struct counts *need);
/*
 * Counting global/need in slices (see pull.c): begin, then steps of at most
 * max index entries each until *done, then the result (global is local plus
 * what the plan would change), then free.
 */
struct plan_count;
int plan_count_begin(uint32_t folder, const uint32_t *devs, size_t ndevs, enum folder_mode mode,
		     struct plan_count **out);
int plan_count_step(struct plan_count *c, struct store *st, size_t max, int *done);
void plan_count_result(const struct plan_count *c, const struct counts *local,
		       struct counts *global, struct counts *need);
void plan_count_free(struct plan_count *c);
/* Counts global/need for f from the store (also used by the offline CLI). */
int plan_counts(struct store *st, uint32_t folder, const uint32_t *devs, size_t ndevs,
		enum folder_mode mode, struct counts *local, struct counts *global, struct counts *need);

/*
 * Local records the agent builds (scanner, puller, revert) own their name,
 * target, version and blocks. local_records_put() writes n of them to this
 * device's index of folder in txn, each with a fresh sequence; on failure
 * *failed (when not NULL) is the index of the record that failed.
 * local_records_free() frees what they hold.
 */
int local_records_put(struct store_txn *txn, uint32_t folder, struct store_file *recs, size_t n,
		      size_t *failed);
void local_records_free(struct store_file *recs, size_t n);

/* Called by scan.c and pull.c when the folder's job ends. */
void folder_job_done(struct folder *f);

/*
 * Receive-only folders: local changes go back to the cluster's version (pulled
 * again) and local additions are removed. Returns 0, -EINVAL (not receive-only),
 * -EBUSY (a scan or pull runs: try again) or a store error.
 */
int folder_revert(struct folder *f);
/*
 * Adds a path (taken over) to the folder's next scoped scan. Returns 0 or
 * -ENOMEM. A path that starts with SCOPE_SHALLOW names a directory whose own
 * entry (mode, mtime) is rescanned without what is under it.
 */
#define SCOPE_SHALLOW '\1'

int folder_add_scope(struct folder *f, char *path);
void folder_set_state(struct folder *f, enum folder_state s);
/* Emits a transfer_progress event for the folder's running pull (also at its start and end). */
void folder_progress_event(struct folder *f, uint64_t now);
/* A scan of f finished: answer `shoal scan --wait` clients it covered. */
void control_scan_finished(struct agent *ag, struct folder *f);

/* ---- watcher (watch.c) ---- */
int watch_start(struct agent *ag);
void watch_stop(struct agent *ag);
int watch_available(const struct agent *ag);
/* Watches the directory path of f (again: after a rename the path is updated). */
void watch_dir(struct folder *f, const char *path);
void watch_folder_clear(struct folder *f);
void watch_folder_clear_pending(struct folder *f);
/*
 * The puller is about to rename a file into place at name, or delete it:
 * the watcher drops that one event (the puller records what it did), for at
 * most WATCH_EXPECT_MS. watch_unexpect() takes it back (the rename failed).
 */
void watch_expect(struct folder *f, const char *name, size_t len);
void watch_unexpect(struct folder *f, const char *name, size_t len);
/* Forgets expected events that did not come (a directory not watched yet). */
void watch_tick(struct agent *ag, uint64_t now);

/* ---- control socket (control.c) ---- */
int control_listen(struct agent *ag);
void control_close(struct agent *ag);
void status_json_running(struct agent *ag, struct json *j);

#endif
