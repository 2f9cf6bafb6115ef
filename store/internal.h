/*
 * store/internal.h - what the files of store/ share; nothing outside store/
 * includes it.
 *
 * Byte order: keys are big-endian so that LMDB's memcmp order is numeric
 * order; values are little-endian. docs/storage.md has every layout.
 */
#ifndef SHOAL_STORE_INTERNAL_H
#define SHOAL_STORE_INTERNAL_H

#include <lmdb.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

#define STORE__SCHEMA 1u       /* meta "schema"; bump on any layout change */
#define STORE__REC_VERSION 1u  /* first byte of a "files" value */
#define STORE__REC_HDR 80u     /* fixed part of a "files" value */
#define STORE__BLOCK_REC 36u   /* hash(32) size(u32 LE) */
#define STORE__COUNTER_REC 16u /* id(u64 LE) value(u64 LE) */

/* Names longer than this are keyed by a prefix and a hash (see key_name()). */
#define STORE__NAME_KEY_MAX STORE_ORDER_EXACT
#define STORE__NAME_PREFIX STORE_ORDER_PREFIX
/* prefix, 0x00, hash(16), probe byte */
#define STORE__LONG_KEY (STORE__NAME_PREFIX + 1u + 16u + 1u)
#define STORE__FD_LEN 8u /* folder(u32 BE) dev(u32 BE) */
#define STORE__KEY_MAX (STORE__FD_LEN + STORE__NAME_KEY_MAX)

#define STORE__BKEY_LEN 48u /* hash(32) folder(4) namehash(8) index(4) */
#define STORE__CP_LEN 40u   /* five u64 LE */

struct store {
	MDB_env *env;
	MDB_dbi meta, folders, devices, files, seq, blocks, ckpt, events, partials;
	int rdonly;
	int writing;	   /* inside store_write() */
	unsigned nreaders; /* open read transactions */
	size_t map_max;	   /* growth cap */
	uint32_t map_grows;
	uint32_t readers_cleared;
	_Atomic unsigned long work;  /* entries read and commits: store_trim_map_idle() */
	unsigned long work_seen;     /* work at the last store_trim_map_idle() */
	_Atomic unsigned long map_trims;
};

struct store_txn {
	struct store *s;
	MDB_txn *t;
	int write;
	int map_full;		/* an operation saw MDB_MAP_FULL: grow and retry */
	unsigned char *scratch; /* write transactions: reused working memory */
	size_t scratch_cap;
};

/* Counts an entry read (see store_trim_map_idle()). */
#define STORE__IDLE_WORK 4096u /* fewer reads and commits than this between calls: idle */
static inline void
store__note_read(struct store_txn *txn)
{
	atomic_fetch_add_explicit(&txn->s->work, 1, memory_order_relaxed);
}

/* Translates an LMDB or errno code (0 stays 0); notes MDB_MAP_FULL in txn. */
int store__err(struct store_txn *txn, int rc);
/* Returns txn->scratch grown to at least n bytes, or NULL. */
unsigned char *store__scratch(struct store_txn *txn, size_t n);
/*
 * A 128-bit non-cryptographic hash (two FNV-1a lanes with a final mix), used
 * only to shorten long keys; the full name is kept in the value and compared.
 */
void store__hash128(const void *p, size_t n, uint8_t out[16]);

static inline void
store__be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static inline uint32_t
store__get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline void
store__be64(uint8_t *p, uint64_t v)
{
	store__be32(p, (uint32_t)(v >> 32));
	store__be32(p + 4, (uint32_t)v);
}

static inline uint64_t
store__get_be64(const uint8_t *p)
{
	return (uint64_t)store__get_be32(p) << 32 | store__get_be32(p + 4);
}

static inline void
store__le32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

static inline uint32_t
store__get_le32(const uint8_t *p)
{
	return (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

static inline void
store__le64(uint8_t *p, uint64_t v)
{
	store__le32(p, (uint32_t)v);
	store__le32(p + 4, (uint32_t)(v >> 32));
}

static inline uint64_t
store__get_le64(const uint8_t *p)
{
	return (uint64_t)store__get_le32(p + 4) << 32 | store__get_le32(p);
}

#endif
