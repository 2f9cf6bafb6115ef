/*
 * store/store.h - shoal's persistent state in one LMDB environment.
 *
 * Invariants:
 * - One environment per agent, in DIR/index.lmdb (a directory), named
 *   databases inside; docs/storage.md lists every key and value.
 * - Folders and devices are numbered (u32) inside the store; device number 0
 *   is always the local device. Numbers never change once given.
 * - Every write goes through store_write(), which runs a callback in one
 *   write transaction and, when the map is full, aborts, grows the map and
 *   runs the callback again: callbacks must have no side effect outside the
 *   transaction. Write transactions begin and end on the calling thread.
 * - store_file_put() keeps the derived data consistent in the same
 *   transaction: the sequence index, the block map (local device only) and the
 *   per-(folder, device) counts in the checkpoint.
 * - Thread rules: one write transaction at a time per environment (LMDB's
 *   rule; store_write() refuses to nest); a write transaction begins and ends
 *   on one thread. The environment is opened with MDB_NOTLS, so a read
 *   transaction is not tied to a thread, but a struct store and its
 *   transactions are meant for one thread at a time: nothing here locks.
 * - Growing the map remaps it, so it needs no read transaction open in this
 *   process: store_write() returns STORE_EBUSY rather than grow under one.
 * - Within a write transaction, a pointer a read gave out is valid only until
 *   the next write in that transaction (LMDB's rule). store_file_put() copes
 *   with f pointing there (it copies first); other callers must not rely on it.
 * - Nothing here logs, or includes proto/, crypto/ or agent/ headers.
 */
#ifndef SHOAL_STORE_STORE_H
#define SHOAL_STORE_STORE_H

#include <stddef.h>
#include <stdint.h>

enum {
	STORE_ENOTFOUND = -1200, /* no such key */
	STORE_ECORRUPT = -1201,	 /* a record that does not decode */
	STORE_EIO = -1202,	 /* LMDB reported an I/O or panic error */
	STORE_EINVAL = -1203,
	STORE_ENOMEM = -1204,
	STORE_EFULL = -1205,	/* the map cannot grow any more (disk full) */
	STORE_EVERSION = -1206, /* the database was written by an incompatible version */
	STORE_EREADERS = -1207, /* too many readers */
	STORE_EBUSY = -1208,	/* the map must grow but read transactions are open */
};

/* Longest name (and symlink target) a file entry takes, in bytes. */
#define STORE_NAME_MAX 65535u

/*
 * Reads go through LMDB's map of the whole database, and every page read
 * stays mapped into the process (counted in its RSS, and harder for the
 * kernel to reclaim than unmapped page cache). Above STORE_MAP_RESIDENT_MAX
 * of file-backed pages in the process, store_trim_map() unmaps the map's
 * pages (madvise MADV_DONTNEED; they stay in the page cache, and a later
 * read maps them again). Returns 1 when it unmapped.
 * store_trim_map_idle() does it only when fewer than a few thousand entries
 * were read or committed since its last call: call it periodically (the
 * agent: every second), so that long passes are not slowed by faulting
 * their pages in again.
 */
#define STORE_MAP_RESIDENT_MAX (32u << 20)
struct store;
int store_trim_map(struct store *s);
int store_trim_map_idle(struct store *s);
/* How many times store_trim_map() unmapped since the store was opened. */
unsigned long store_map_trims(struct store *s);

/* Returns a static English description of a STORE_E* code or a -errno. */
const char *store_strerror(int rc);

struct store;	  /* opaque */
struct store_txn; /* opaque: one LMDB transaction */

#define STORE_LOCAL 0u /* device number of this device */

/*
 * Opens (creating if needed) the environment DIR/index.lmdb under dir, which
 * must exist; index.lmdb is created with mode 0700, its files 0600. Clears
 * stale reader slots left by killed processes. The map starts at 64 MiB (or
 * the size an earlier run grew it to) and doubles on demand up to 1 TiB.
 * Returns 0, -errno, STORE_EVERSION, STORE_ECORRUPT or STORE_EIO; *out is
 * set only on success. Close with store_close().
 */
int store_open(struct store **out, const char *dir);
/*
 * The same with the initial map size and the growth cap in bytes (0 for the
 * defaults). For tests of map growth; the agent uses store_open().
 */
int store_open_with_mapsize(struct store **out, const char *dir, size_t map_size, size_t map_max);
/*
 * Opens an existing environment read-only (for a CLI next to a running
 * agent). Creates nothing: a missing environment is -ENOENT. store_write()
 * on it returns STORE_EINVAL.
 */
int store_open_readonly(struct store **out, const char *dir);
/* Closes the environment; every transaction must have ended. NULL is a no-op. */
void store_close(struct store *s);

/* Figures about the environment, for tests, benchmarks and a status command. */
struct store_stat {
	uint64_t map_size;	  /* current map size in bytes */
	uint64_t used_bytes;	  /* pages in use times page size */
	uint32_t map_grows;	  /* times store_write() grew the map since open */
	uint32_t readers_cleared; /* stale reader slots cleared by the open */
	uint32_t readers_used;	  /* reader slots in use (any process) */
};
int store_stat_get(struct store *s, struct store_stat *st);

/*
 * Read transactions. store_read_begin() returns 0 or a negative code
 * (STORE_EREADERS when every reader slot is taken); every pointer a read
 * gives out is valid until store_read_end(). Reads (get, each) also take the
 * txn store_write() passes to its callback.
 */
int store_read_begin(struct store *s, struct store_txn **txn);
void store_read_end(struct store_txn *txn);

/*
 * Runs fn(txn, arg) in a write transaction and commits it when fn returns 0.
 * A negative return from fn aborts and is returned. On MDB_MAP_FULL (seen by
 * any store call inside fn, which then returns STORE_EFULL, or by the commit)
 * the transaction is aborted, the map doubled, and fn called again, whatever
 * fn returned. Returns 0, fn's code, STORE_EFULL (1 TiB reached, or one
 * transaction too large), STORE_EBUSY (must grow while a read transaction is
 * open), STORE_EINVAL (read-only store, or called from inside fn), STORE_EIO
 * or -errno (e.g. -ENOSPC or -EIO from commit). The txn is valid only inside
 * fn. The commit is durable (fsync): batch many changes into one call.
 */
int store_write(struct store *s, int (*fn)(struct store_txn *txn, void *arg), void *arg);

/* ---- numbering ---- */

/*
 * Looks up (and with create set, assigns) the number of a folder ID or device
 * ID. Returns 0 or STORE_ENOTFOUND (create not set), or another error.
 * create needs a write transaction (else STORE_EINVAL). Folders and peer
 * devices are numbered from 1 in order of creation; a folder ID is 1 to 511
 * bytes.
 */
int store_folder_num(struct store_txn *txn, const char *folder_id, int create, uint32_t *num);
int store_device_num(struct store_txn *txn, const uint8_t device_id[32], int create, uint32_t *num);

/* ---- file index ---- */

enum store_ftype { STORE_FILE = 0, STORE_DIR = 1, STORE_SYMLINK = 2 };
#define STORE_FLAG_DELETED 0x1u
#define STORE_FLAG_INVALID 0x2u
#define STORE_FLAG_LOCALCHANGE 0x4u /* receive-only folder: a local change not sent */

struct store_counter {
	uint64_t id, value;
};

struct store_block {
	uint8_t hash[32];
	uint32_t size;
};

/*
 * One entry of a device's index. When the store fills one (get, iteration),
 * name and target point into the transaction's memory (valid until it ends)
 * and version and blocks are allocated: release with store_file_release().
 * When the caller fills one for a put, the caller owns everything, and the
 * struct should start zeroed (owned NULL) if it is ever passed to
 * store_file_release(). A name is 1 to STORE_NAME_MAX bytes without NUL.
 */
struct store_file {
	const char *name;
	size_t name_len;
	uint32_t type, flags, mode;
	uint64_t size;
	int64_t mtime_s;
	uint32_t mtime_ns;
	uint64_t sequence;
	uint64_t inode;	 /* local device only: change detection */
	int64_t ctime_s; /* local device only */
	uint32_t ctime_ns;
	uint32_t block_size;
	const char *target;
	size_t target_len;
	size_t nversion;
	struct store_counter *version;
	size_t nblocks;
	struct store_block *blocks;
	void *owned; /* private: what the store allocated (version and blocks), or NULL */
};

/*
 * Frees what the store allocated into f (only f->owned: never what the
 * caller put there) and zeroes f. Safe on a zeroed struct and on NULL.
 */
void store_file_release(struct store_file *f);

/*
 * Reads one entry. Returns 0, STORE_ENOTFOUND, STORE_ECORRUPT, STORE_EINVAL
 * (bad name) or STORE_ENOMEM. With with_blocks clear the block list is not
 * decoded (nblocks = 0). f is overwritten (release what it held first); on
 * success release it with store_file_release().
 */
int store_file_get(struct store_txn *txn, uint32_t folder, uint32_t dev, const char *name,
		   size_t name_len, int with_blocks, struct store_file *f);

/*
 * Writes one entry, replacing any entry of that name. For the local device
 * (dev 0) with f->sequence 0, the store assigns the next sequence number and
 * writes it back into f->sequence; for other devices the given sequence is
 * kept. Maintains the sequence index, the block map (dev 0) and the counts
 * and max_seq of the (folder, dev) checkpoint. Needs a write transaction.
 * Returns 0, STORE_EINVAL (bad fields; a sequence of 0 for a peer; a sequence
 * another entry of (folder, dev) already holds, which means a peer's index
 * is inconsistent), STORE_ECORRUPT or an LMDB error. The sequence written
 * back into f belongs to this transaction: if it is aborted, reset
 * f->sequence to 0 before putting f again.
 */
int store_file_put(struct store_txn *txn, uint32_t folder, uint32_t dev, struct store_file *f);

/*
 * Removes one entry and everything derived from it (sequence key, block map
 * entries, its share of the counts; max_seq stays). STORE_ENOTFOUND if absent.
 */
int store_file_del(struct store_txn *txn, uint32_t folder, uint32_t dev, const char *name,
		   size_t name_len);

/*
 * Calls cb for every entry of (folder, dev) in key order, starting after
 * start (NULL or "" for the beginning). Key order is byte order of the names
 * for names up to 400 bytes; a longer name sorts by its first 380 bytes
 * (before the names that extend those). cb returns 0 to go on, 1 to stop, or
 * a negative code that is returned; returns 0 otherwise. f and everything it
 * points to are valid only during the call; cb must not write to the store.
 */
typedef int (*store_file_cb)(const struct store_file *f, void *arg);
int store_files_each(struct store_txn *txn, uint32_t folder, uint32_t dev, const char *start_after,
		     size_t start_len, int with_blocks, store_file_cb cb, void *arg);

/*
 * The order store_files_each() visits two names in: negative, 0 or positive.
 * Byte order with the shorter first on a tie, except for long names (above).
 * Names longer than STORE_ORDER_PREFIX bytes keep byte order only against
 * names that differ within their first STORE_ORDER_PREFIX bytes: a
 * directory of 381 to 400 bytes comes after the files in it that are longer
 * than 400, and names longer than 400 with the same first 380 bytes come in
 * no useful order.
 */
#define STORE_ORDER_PREFIX 380u
#define STORE_ORDER_EXACT 400u /* names up to this long are in byte order among themselves */
int store_name_order(const char *a, size_t al, const char *b, size_t bl);

/* The same, in sequence order, for entries with sequence > after_seq. */
int store_seq_each(struct store_txn *txn, uint32_t folder, uint32_t dev, uint64_t after_seq,
		   int with_blocks, store_file_cb cb, void *arg);

/*
 * Drops a device's whole index of a folder (its index ID changed): every
 * entry, its sequence keys and block map entries, and the checkpoint (which
 * reads as zero afterwards: put the new index_id).
 */
int store_index_drop(struct store_txn *txn, uint32_t folder, uint32_t dev);

/* ---- block map: hash -> where a local copy lives ---- */

/*
 * Calls cb for each local file that holds a block with this hash (folder,
 * name, offset, size). cb returns 0 to go on, 1 to stop, or a negative code.
 * name points into the transaction's memory and is not NUL-terminated. Only
 * the local device's files are in the map.
 */
typedef int (*store_block_cb)(uint32_t folder, const char *name, size_t name_len, uint64_t offset,
			      uint32_t size, void *arg);
int store_block_each(struct store_txn *txn, const uint8_t hash[32], store_block_cb cb, void *arg);

/* ---- checkpoints: per (folder, device) ---- */

struct store_checkpoint {
	uint64_t index_id; /* the index this record is about */
	uint64_t max_seq;  /* highest sequence held of that index */
	uint64_t files;	   /* live (not deleted) files, directories and links */
	uint64_t bytes;	   /* their total size */
	uint64_t deleted;  /* tombstones */
};

/* Returns 0 (zeroed record when none exists yet: never STORE_ENOTFOUND). */
int store_checkpoint_get(struct store_txn *txn, uint32_t folder, uint32_t dev,
			 struct store_checkpoint *cp);
/* Writes the whole record; store_file_put() keeps updating counts and max_seq. */
int store_checkpoint_put(struct store_txn *txn, uint32_t folder, uint32_t dev,
			 const struct store_checkpoint *cp);

/*
 * ---- partial downloads: (folder, name) -> what is already in the temp file ----
 * A record says which blocks of one wanted version (ident: the agent's hash of
 * the version's size and block list) are verified in the temporary file tmp.
 * store_partial_get() fills p with pointers into the transaction's memory;
 * store_partials_each() calls cb for every record (cb returns 0 to go on, 1 to
 * stop, < 0 for an error). Get and del return STORE_ENOTFOUND when absent.
 */
struct store_partial {
	const char *tmp;         /* the temporary file's name in the file's directory */
	size_t tmp_len;
	uint8_t ident[32];
	uint64_t time_ns;        /* when the record was last written */
	uint32_t nblocks;
	const uint8_t *bitmap;   /* (nblocks + 7) / 8 bytes, bit i = block i verified */
};
int store_partial_put(struct store_txn *txn, uint32_t folder, const char *name, size_t name_len,
		      const struct store_partial *p);
int store_partial_get(struct store_txn *txn, uint32_t folder, const char *name, size_t name_len,
		      struct store_partial *p);
int store_partial_del(struct store_txn *txn, uint32_t folder, const char *name, size_t name_len);
typedef int (*store_partial_cb)(uint32_t folder, const char *name, size_t name_len,
				const struct store_partial *p, void *arg);
int store_partials_each(struct store_txn *txn, store_partial_cb cb, void *arg);

/*
 * ---- durable events: seq (u64) -> time (ns since the epoch) and a JSON text ----
 * store_event_put() appends one event; seq must be above every stored one.
 * store_events_each() calls cb for events with seq > after_seq in order; json
 * is not NUL-terminated and valid only during the call; cb returns 0 to go
 * on, 1 to stop, < 0 for an error that is returned. store_event_last() gives
 * the highest stored seq (0 when none). store_events_prune() deletes events
 * older than before_ns and sets *removed.
 */
int store_event_put(struct store_txn *txn, uint64_t seq, uint64_t time_ns, const char *json,
		    size_t len);
typedef int (*store_event_cb)(uint64_t seq, uint64_t time_ns, const char *json, size_t len,
			      void *arg);
int store_events_each(struct store_txn *txn, uint64_t after_seq, store_event_cb cb, void *arg);
int store_event_last(struct store_txn *txn, uint64_t *seq);
int store_events_prune(struct store_txn *txn, uint64_t before_ns, size_t *removed);
/* Deletes the oldest events beyond the newest keep; sets *removed. */
int store_events_trim(struct store_txn *txn, size_t keep, size_t *removed);

/*
 * ---- small settings ----
 * store_meta_get() copies the value of key into val and sets *len (when len
 * is not NULL) to its size; a value longer than cap is not copied and gives
 * STORE_EINVAL (with *len set). Keys are 1 to 511 bytes; "schema",
 * "next_folder" and "next_device" belong to the store.
 */
int store_meta_get(struct store_txn *txn, const char *key, void *val, size_t cap, size_t *len);
int store_meta_put(struct store_txn *txn, const char *key, const void *val, size_t len);

#endif
