/*
 * store/file.c - the file index of each (folder, device) and what is derived
 * from it in the same transaction: the sequence index, the block map (local
 * device only) and the counts and max_seq of the checkpoint.
 *
 * A pointer LMDB hands out in a write transaction is valid only until the
 * next write in it (pages move, or are spilled). So store_file_put() and
 * store_file_del() first copy what they need (the encoded new record, the old
 * record) into the transaction's scratch memory and only then write.
 */
#include <stdlib.h>
#include <string.h>

#include "store/internal.h"

#define SKEY_LEN 16u /* folder(u32 BE) dev(u32 BE) seq(u64 BE) */

/* A parsed "files" value; the pointers point into it. */
struct rec {
	const uint8_t *p;
	size_t len;
	uint32_t name_len, target_len, nversion, nblocks;
	const uint8_t *name, *target, *version, *blocks;
};

/* Growable arrays for decoding many records in a row. */
struct arrays {
	void *p;
	size_t cap;
};

static int
name_ok(const char *name, size_t len)
{
	return name && len > 0 && len <= STORE_NAME_MAX && !memchr(name, 0, len);
}

static int
rec_parse(const void *data, size_t len, struct rec *r)
{
	const uint8_t *p = data;
	uint64_t need;

	if (len < STORE__REC_HDR || p[0] != STORE__REC_VERSION)
		return STORE_ECORRUPT;
	r->p = p;
	r->len = len;
	r->name_len = store__get_le32(p + 64);
	r->target_len = store__get_le32(p + 68);
	r->nversion = store__get_le32(p + 72);
	r->nblocks = store__get_le32(p + 76);
	need = (uint64_t)STORE__REC_HDR + r->name_len + r->target_len +
	       (uint64_t)r->nversion * STORE__COUNTER_REC + (uint64_t)r->nblocks * STORE__BLOCK_REC;
	if (need != len || r->name_len == 0)
		return STORE_ECORRUPT;
	r->name = p + STORE__REC_HDR;
	r->target = r->name + r->name_len;
	r->version = r->target + r->target_len;
	r->blocks = r->version + (size_t)r->nversion * STORE__COUNTER_REC;
	return 0;
}

static size_t
rec_size(const struct store_file *f)
{
	return STORE__REC_HDR + f->name_len + f->target_len + f->nversion * STORE__COUNTER_REC +
	       f->nblocks * STORE__BLOCK_REC;
}

static void
rec_encode(uint8_t *p, const struct store_file *f, uint64_t seq)
{
	size_t i;

	memset(p, 0, STORE__REC_HDR);
	p[0] = STORE__REC_VERSION;
	p[1] = (uint8_t)f->type;
	store__le32(p + 4, f->flags);
	store__le32(p + 8, f->mode);
	store__le32(p + 12, f->mtime_ns);
	store__le64(p + 16, f->size);
	store__le64(p + 24, (uint64_t)f->mtime_s);
	store__le64(p + 32, seq);
	store__le64(p + 40, f->inode);
	store__le64(p + 48, (uint64_t)f->ctime_s);
	store__le32(p + 56, f->ctime_ns);
	store__le32(p + 60, f->block_size);
	store__le32(p + 64, (uint32_t)f->name_len);
	store__le32(p + 68, (uint32_t)f->target_len);
	store__le32(p + 72, (uint32_t)f->nversion);
	store__le32(p + 76, (uint32_t)f->nblocks);
	p += STORE__REC_HDR;
	memcpy(p, f->name, f->name_len);
	p += f->name_len;
	if (f->target_len)
		memcpy(p, f->target, f->target_len);
	p += f->target_len;
	for (i = 0; i < f->nversion; i++, p += STORE__COUNTER_REC) {
		store__le64(p, f->version[i].id);
		store__le64(p + 8, f->version[i].value);
	}
	for (i = 0; i < f->nblocks; i++, p += STORE__BLOCK_REC) {
		memcpy(p, f->blocks[i].hash, 32);
		store__le32(p + 32, f->blocks[i].size);
	}
}

/* Bytes of the arrays rec_decode() fills: versions first, then blocks. */
static size_t
rec_arrays_size(const struct rec *r, int with_blocks)
{
	return (size_t)r->nversion * sizeof(struct store_counter) +
	       (with_blocks ? (size_t)r->nblocks * sizeof(struct store_block) : 0);
}

/* Fills f from r; arrays (rec_arrays_size() bytes, 8-aligned) receives the lists. */
static void
rec_decode(const struct rec *r, int with_blocks, void *arrays, struct store_file *f)
{
	const uint8_t *p = r->p;
	const uint8_t *q;
	size_t i;

	memset(f, 0, sizeof(*f));
	f->name = (const char *)r->name;
	f->name_len = r->name_len;
	f->type = p[1];
	f->flags = store__get_le32(p + 4);
	f->mode = store__get_le32(p + 8);
	f->mtime_ns = store__get_le32(p + 12);
	f->size = store__get_le64(p + 16);
	f->mtime_s = (int64_t)store__get_le64(p + 24);
	f->sequence = store__get_le64(p + 32);
	f->inode = store__get_le64(p + 40);
	f->ctime_s = (int64_t)store__get_le64(p + 48);
	f->ctime_ns = store__get_le32(p + 56);
	f->block_size = store__get_le32(p + 60);
	f->target = (const char *)r->target;
	f->target_len = r->target_len;
	f->nversion = r->nversion;
	if (r->nversion) {
		f->version = arrays;
		for (i = 0, q = r->version; i < r->nversion; i++, q += STORE__COUNTER_REC) {
			f->version[i].id = store__get_le64(q);
			f->version[i].value = store__get_le64(q + 8);
		}
	}
	if (with_blocks && r->nblocks) {
		f->nblocks = r->nblocks;
		f->blocks = (struct store_block *)((char *)arrays +
						   r->nversion * sizeof(struct store_counter));
		for (i = 0, q = r->blocks; i < r->nblocks; i++, q += STORE__BLOCK_REC) {
			memcpy(f->blocks[i].hash, q, 32);
			f->blocks[i].size = store__get_le32(q + 32);
		}
	}
}

static int
arrays_reserve(struct arrays *a, size_t n)
{
	void *p;

	if (n <= a->cap)
		return 0;
	p = realloc(a->p, n);
	if (!p)
		return STORE_ENOMEM;
	a->p = p;
	a->cap = n;
	return 0;
}

void
store_file_release(struct store_file *f)
{
	if (!f)
		return;
	free(f->owned);
	memset(f, 0, sizeof(*f));
}

/* ---- keys ---- */

static void
fd_prefix(uint8_t *key, uint32_t folder, uint32_t dev)
{
	store__be32(key, folder);
	store__be32(key + 4, dev);
}

/*
 * Writes the "files" key of name (without a probe byte for long names) and
 * returns its length: names up to 400 bytes are the key; longer ones are
 * their first 380 bytes, 0x00 and the 128-bit hash, then a probe byte.
 */
static size_t
key_name(uint8_t *key, uint32_t folder, uint32_t dev, const char *name, size_t len)
{
	uint8_t *p = key + STORE__FD_LEN;

	fd_prefix(key, folder, dev);
	if (len <= STORE__NAME_KEY_MAX) {
		memcpy(p, name, len);
		return STORE__FD_LEN + len;
	}
	memcpy(p, name, STORE__NAME_PREFIX);
	p[STORE__NAME_PREFIX] = 0;
	store__hash128(name, len, p + STORE__NAME_PREFIX + 1);
	return STORE__FD_LEN + STORE__LONG_KEY - 1;
}

int
store_name_order(const char *a, size_t al, const char *b, size_t bl)
{
	uint8_t ka[STORE__KEY_MAX], kb[STORE__KEY_MAX];
	size_t la, lb;
	int r;

	if (al <= STORE__NAME_KEY_MAX && bl <= STORE__NAME_KEY_MAX) {
		r = memcmp(a, b, al < bl ? al : bl);
		return r ? r : al < bl ? -1 : al > bl;
	}
	la = key_name(ka, 0, 0, a, al);
	lb = key_name(kb, 0, 0, b, bl);
	r = memcmp(ka, kb, la < lb ? la : lb);
	if (r)
		return r;
	if (la != lb)
		return la < lb ? -1 : 1;
	/* The same prefix and hash: the probe byte decides, unknown here. */
	r = memcmp(a, b, al < bl ? al : bl);
	return r ? r : al < bl ? -1 : al > bl;
}

/*
 * Finds the entry of name. Returns 0 with key/klen its key and val its
 * value, STORE_ENOTFOUND with key/klen the key a new entry takes, or an
 * error. Long names that share prefix and hash take probe bytes 0, 1, ...;
 * every stored name of the group is compared, so holes left by deletes are
 * fine.
 */
static int
lookup(struct store_txn *txn, uint32_t folder, uint32_t dev, const char *name, size_t len,
       uint8_t *key, size_t *klen, MDB_val *val)
{
	uint8_t used[32] = {0};
	MDB_cursor *c = NULL;
	MDB_val k;
	struct rec r;
	size_t base;
	unsigned probe;
	int rc;

	base = key_name(key, folder, dev, name, len);
	if (len <= STORE__NAME_KEY_MAX) {
		*klen = base;
		k.mv_size = base;
		k.mv_data = key;
		rc = mdb_get(txn->t, txn->s->files, &k, val);
		return store__err(txn, rc);
	}
	rc = store__err(txn, mdb_cursor_open(txn->t, txn->s->files, &c));
	if (rc)
		goto out;
	key[base] = 0;
	k.mv_size = base + 1;
	k.mv_data = key;
	rc = mdb_cursor_get(c, &k, val, MDB_SET_RANGE);
	while (rc == 0 && k.mv_size == base + 1 && memcmp(k.mv_data, key, base) == 0) {
		probe = ((const uint8_t *)k.mv_data)[base];
		used[probe / 8] |= (uint8_t)(1u << (probe % 8));
		if (rec_parse(val->mv_data, val->mv_size, &r) == 0 && r.name_len == len &&
		    memcmp(r.name, name, len) == 0) {
			key[base] = (uint8_t)probe;
			*klen = base + 1;
			rc = 0;
			goto out;
		}
		rc = mdb_cursor_get(c, &k, val, MDB_NEXT);
	}
	if (rc && rc != MDB_NOTFOUND) {
		rc = store__err(txn, rc);
		goto out;
	}
	for (probe = 0; probe < 256; probe++)
		if (!(used[probe / 8] & (1u << (probe % 8))))
			break;
	if (probe == 256) {
		rc = STORE_EFULL; /* 256 long names with one prefix and hash */
		goto out;
	}
	key[base] = (uint8_t)probe;
	*klen = base + 1;
	rc = STORE_ENOTFOUND;
out:
	if (c)
		mdb_cursor_close(c);
	return rc;
}

static void
skey(uint8_t *key, uint32_t folder, uint32_t dev, uint64_t seq)
{
	fd_prefix(key, folder, dev);
	store__be64(key + 8, seq);
}

static void
bkey(uint8_t *key, const uint8_t *hash, uint32_t folder, const uint8_t *namehash, uint32_t idx)
{
	memcpy(key, hash, 32);
	store__be32(key + 32, folder);
	memcpy(key + 36, namehash, 8);
	store__be32(key + 44, idx);
}

/* ---- derived data ---- */

/* Deletes the sequence key seq if it still names namekey. */
static int
seq_del(struct store_txn *txn, uint32_t folder, uint32_t dev, uint64_t seq, const uint8_t *nk,
	size_t nklen)
{
	uint8_t key[SKEY_LEN];
	MDB_val k = {SKEY_LEN, key}, v;
	int rc;

	skey(key, folder, dev, seq);
	rc = mdb_get(txn->t, txn->s->seq, &k, &v);
	if (rc == MDB_NOTFOUND)
		return 0;
	if (rc)
		return store__err(txn, rc);
	if (v.mv_size != nklen || memcmp(v.mv_data, nk, nklen) != 0)
		return 0;
	return store__err(txn, mdb_del(txn->t, txn->s->seq, &k, NULL));
}

/* Deletes block map entry (hash, idx) of the file if it still names it. */
static int
block_del(struct store_txn *txn, MDB_cursor *c, const uint8_t *key, const uint8_t *name, size_t len)
{
	MDB_val k = {STORE__BKEY_LEN, (void *)key}, v;
	int rc;

	rc = mdb_cursor_get(c, &k, &v, MDB_SET_KEY);
	if (rc == MDB_NOTFOUND)
		return 0;
	if (rc)
		return store__err(txn, rc);
	if (v.mv_size != 12 + len || memcmp((uint8_t *)v.mv_data + 12, name, len) != 0)
		return 0; /* a colliding file took the slot over */
	return store__err(txn, mdb_cursor_del(c, 0));
}

static int
block_put(struct store_txn *txn, MDB_cursor *c, const uint8_t *key, uint64_t off, uint32_t size,
	  const uint8_t *name, size_t len)
{
	MDB_val k = {STORE__BKEY_LEN, (void *)key}, v = {12 + len, NULL};
	uint8_t *p;
	int rc;

	rc = store__err(txn, mdb_cursor_put(c, &k, &v, MDB_RESERVE));
	if (rc)
		return rc;
	p = v.mv_data;
	store__le64(p, off);
	store__le32(p + 8, size);
	memcpy(p + 12, name, len);
	return 0;
}

/*
 * Brings the block map from the old block list (rec format, nold entries) to
 * the new one (rec format, nnew entries); entries at the same index with the
 * same hash, size and offset are left alone.
 */
static int
blocks_update(struct store_txn *txn, uint32_t folder, const uint8_t *name, size_t len,
	      const uint8_t *old, size_t nold, const uint8_t *new, size_t nnew)
{
	uint8_t namehash[16], key[STORE__BKEY_LEN];
	MDB_cursor *c = NULL;
	uint64_t off_old = 0, off_new = 0;
	size_t i;
	int rc, same;

	if (!nold && !nnew)
		return 0;
	store__hash128(name, len, namehash);
	rc = store__err(txn, mdb_cursor_open(txn->t, txn->s->blocks, &c));
	if (rc)
		goto out;
	for (i = 0; i < nold; i++) {
		const uint8_t *o = old + i * STORE__BLOCK_REC;
		const uint8_t *n = i < nnew ? new + i *STORE__BLOCK_REC : NULL;

		same = n && off_old == off_new && memcmp(o, n, STORE__BLOCK_REC) == 0;
		if (!same) {
			bkey(key, o, folder, namehash, (uint32_t)i);
			rc = block_del(txn, c, key, name, len);
			if (rc)
				goto out;
		}
		off_old += store__get_le32(o + 32);
		if (i < nnew)
			off_new += store__get_le32(n + 32);
	}
	off_old = off_new = 0;
	for (i = 0; i < nnew; i++) {
		const uint8_t *o = i < nold ? old + i * STORE__BLOCK_REC : NULL;
		const uint8_t *n = new + i *STORE__BLOCK_REC;

		same = o && off_old == off_new && memcmp(o, n, STORE__BLOCK_REC) == 0;
		if (!same) {
			bkey(key, n, folder, namehash, (uint32_t)i);
			rc = block_put(txn, c, key, off_new, store__get_le32(n + 32), name, len);
			if (rc)
				goto out;
		}
		if (i < nold)
			off_old += store__get_le32(o + 32);
		off_new += store__get_le32(n + 32);
	}
out:
	if (c)
		mdb_cursor_close(c);
	return rc;
}

static uint64_t
sub_sat(uint64_t a, uint64_t b)
{
	return a > b ? a - b : 0;
}

/* Removes (sign < 0) or adds (sign > 0) one record's share of the counts. */
static void
count(struct store_checkpoint *cp, const uint8_t *rec, int sign)
{
	uint32_t flags = store__get_le32(rec + 4);
	uint64_t size = store__get_le64(rec + 16);

	if (flags & STORE_FLAG_DELETED) {
		cp->deleted = sign > 0 ? cp->deleted + 1 : sub_sat(cp->deleted, 1);
	} else if (sign > 0) {
		cp->files++;
		cp->bytes += size;
	} else {
		cp->files = sub_sat(cp->files, 1);
		cp->bytes = sub_sat(cp->bytes, size);
	}
}

static int
check_file(const struct store_file *f)
{
	if (!name_ok(f->name, f->name_len) || f->type > STORE_SYMLINK ||
	    f->target_len > STORE_NAME_MAX || (f->target_len && !f->target) ||
	    (f->nversion && !f->version) || (f->nblocks && !f->blocks) ||
	    f->nversion > UINT32_MAX / STORE__COUNTER_REC ||
	    f->nblocks > UINT32_MAX / STORE__BLOCK_REC)
		return STORE_EINVAL;
	return 0;
}

int
store_file_put(struct store_txn *txn, uint32_t folder, uint32_t dev, struct store_file *f)
{
	uint8_t key[STORE__KEY_MAX], skeybuf[SKEY_LEN];
	struct store_checkpoint cp;
	MDB_val k, v, sk, sv;
	struct rec old = {0};
	uint8_t *buf, *oldblocks = NULL, *oldrec = NULL;
	uint64_t seq;
	size_t klen, nklen, reclen, oldcopy = 0;
	int rc, found;

	if (!txn->write)
		return STORE_EINVAL;
	rc = check_file(f);
	if (rc)
		return rc;
	rc = lookup(txn, folder, dev, f->name, f->name_len, key, &klen, &v);
	if (rc && rc != STORE_ENOTFOUND)
		return rc;
	found = rc == 0;
	nklen = klen - STORE__FD_LEN;
	if (found) {
		rc = rec_parse(v.mv_data, v.mv_size, &old);
		if (rc)
			return rc;
		/* The header (counts, sequence) and, for dev 0, the block list. */
		oldcopy =
		    STORE__REC_HDR + (dev == STORE_LOCAL ? old.nblocks * STORE__BLOCK_REC : 0);
	}
	rc = store_checkpoint_get(txn, folder, dev, &cp);
	if (rc)
		return rc;
	seq = f->sequence;
	if (seq == 0 && dev == STORE_LOCAL)
		seq = cp.max_seq + 1;
	if (seq == 0)
		return STORE_EINVAL;

	/* Copy everything out of LMDB memory (f may point there too) before writing. */
	reclen = rec_size(f);
	buf = store__scratch(txn, reclen + oldcopy);
	if (!buf)
		return STORE_ENOMEM;
	rec_encode(buf, f, seq);
	if (found) {
		oldrec = buf + reclen;
		memcpy(oldrec, old.p, STORE__REC_HDR);
		if (dev == STORE_LOCAL) {
			oldblocks = oldrec + STORE__REC_HDR;
			memcpy(oldblocks, old.blocks, (size_t)old.nblocks * STORE__BLOCK_REC);
		}
	}

	/* Sequence index: another entry holding seq is an error (a peer's bad index). */
	skey(skeybuf, folder, dev, seq);
	sk.mv_size = SKEY_LEN;
	sk.mv_data = skeybuf;
	rc = mdb_get(txn->t, txn->s->seq, &sk, &sv);
	if (rc == 0 && (sv.mv_size != nklen || memcmp(sv.mv_data, key + STORE__FD_LEN, nklen)))
		return STORE_EINVAL;
	if (rc && rc != MDB_NOTFOUND)
		return store__err(txn, rc);
	if (rc == MDB_NOTFOUND) {
		if (found) {
			rc = seq_del(txn, folder, dev, store__get_le64(oldrec + 32),
				     key + STORE__FD_LEN, nklen);
			if (rc)
				return rc;
		}
		sv.mv_size = nklen;
		sv.mv_data = key + STORE__FD_LEN;
		rc = store__err(txn, mdb_put(txn->t, txn->s->seq, &sk, &sv, 0));
		if (rc)
			return rc;
	}

	if (dev == STORE_LOCAL) {
		rc = blocks_update(txn, folder, buf + STORE__REC_HDR, f->name_len, oldblocks,
				   found ? old.nblocks : 0,
				   buf + reclen - f->nblocks * STORE__BLOCK_REC, f->nblocks);
		if (rc)
			return rc;
	}

	k.mv_size = klen;
	k.mv_data = key;
	v.mv_size = reclen;
	v.mv_data = buf;
	rc = store__err(txn, mdb_put(txn->t, txn->s->files, &k, &v, 0));
	if (rc)
		return rc;

	if (found)
		count(&cp, oldrec, -1);
	count(&cp, buf, 1);
	if (seq > cp.max_seq)
		cp.max_seq = seq;
	rc = store_checkpoint_put(txn, folder, dev, &cp);
	if (rc)
		return rc;
	f->sequence = seq;
	return 0;
}

/* Removes the derived data of one record (a copy in scratch memory, not LMDB's). */
static int
unindex(struct store_txn *txn, uint32_t folder, uint32_t dev, const uint8_t *nk, size_t nklen,
	const struct rec *r, struct store_checkpoint *cp)
{
	int rc;

	rc = seq_del(txn, folder, dev, store__get_le64(r->p + 32), nk, nklen);
	if (rc)
		return rc;
	if (dev == STORE_LOCAL) {
		rc = blocks_update(txn, folder, r->name, r->name_len, r->blocks, r->nblocks, NULL,
				   0);
		if (rc)
			return rc;
	}
	if (cp)
		count(cp, r->p, -1);
	return 0;
}

int
store_file_del(struct store_txn *txn, uint32_t folder, uint32_t dev, const char *name,
	       size_t name_len)
{
	uint8_t key[STORE__KEY_MAX];
	struct store_checkpoint cp;
	struct rec r;
	MDB_val k, v;
	uint8_t *buf;
	size_t klen;
	int rc;

	if (!txn->write || !name_ok(name, name_len))
		return STORE_EINVAL;
	rc = lookup(txn, folder, dev, name, name_len, key, &klen, &v);
	if (rc)
		return rc;
	buf = store__scratch(txn, v.mv_size);
	if (!buf)
		return STORE_ENOMEM;
	memcpy(buf, v.mv_data, v.mv_size);
	rc = rec_parse(buf, v.mv_size, &r);
	if (rc)
		return rc;
	rc = store_checkpoint_get(txn, folder, dev, &cp);
	if (rc)
		return rc;
	rc = unindex(txn, folder, dev, key + STORE__FD_LEN, klen - STORE__FD_LEN, &r, &cp);
	if (rc)
		return rc;
	k.mv_size = klen;
	k.mv_data = key;
	rc = store__err(txn, mdb_del(txn->t, txn->s->files, &k, NULL));
	if (rc)
		return rc;
	return store_checkpoint_put(txn, folder, dev, &cp);
}

int
store_index_drop(struct store_txn *txn, uint32_t folder, uint32_t dev)
{
	uint8_t prefix[STORE__FD_LEN];
	MDB_cursor *c = NULL;
	MDB_val k, v;
	struct rec r;
	uint8_t *buf;
	MDB_dbi dbs[2];
	int rc = 0, i;

	if (!txn->write)
		return STORE_EINVAL;
	fd_prefix(prefix, folder, dev);

	/* Local files first hand their block map entries back. */
	if (dev == STORE_LOCAL) {
		rc = store__err(txn, mdb_cursor_open(txn->t, txn->s->files, &c));
		if (rc)
			goto out;
		k.mv_size = STORE__FD_LEN;
		k.mv_data = prefix;
		rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
		while (rc == 0 && k.mv_size >= STORE__FD_LEN &&
		       memcmp(k.mv_data, prefix, STORE__FD_LEN) == 0) {
			buf = store__scratch(txn, v.mv_size);
			if (!buf) {
				rc = STORE_ENOMEM;
				goto out;
			}
			memcpy(buf, v.mv_data, v.mv_size);
			rc = rec_parse(buf, v.mv_size, &r);
			if (rc)
				goto out;
			rc = blocks_update(txn, folder, r.name, r.name_len, r.blocks, r.nblocks,
					   NULL, 0);
			if (rc)
				goto out;
			rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
		}
		if (rc && rc != MDB_NOTFOUND) {
			rc = store__err(txn, rc);
			goto out;
		}
		mdb_cursor_close(c);
		c = NULL;
	}

	/* Then every key of (folder, dev) goes from "files" and "sequence". */
	dbs[0] = txn->s->files;
	dbs[1] = txn->s->seq;
	for (i = 0; i < 2; i++) {
		rc = store__err(txn, mdb_cursor_open(txn->t, dbs[i], &c));
		if (rc)
			goto out;
		k.mv_size = STORE__FD_LEN;
		k.mv_data = prefix;
		rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
		while (rc == 0 && k.mv_size >= STORE__FD_LEN &&
		       memcmp(k.mv_data, prefix, STORE__FD_LEN) == 0) {
			rc = mdb_cursor_del(c, 0);
			if (rc)
				break;
			k.mv_size = STORE__FD_LEN;
			k.mv_data = prefix;
			rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
		}
		if (rc && rc != MDB_NOTFOUND) {
			rc = store__err(txn, rc);
			goto out;
		}
		mdb_cursor_close(c);
		c = NULL;
	}

	k.mv_size = STORE__FD_LEN;
	k.mv_data = prefix;
	rc = mdb_del(txn->t, txn->s->ckpt, &k, NULL);
	rc = rc == MDB_NOTFOUND ? 0 : store__err(txn, rc);
out:
	if (c)
		mdb_cursor_close(c);
	return rc;
}

/* ---- reads ---- */

int
store_file_get(struct store_txn *txn, uint32_t folder, uint32_t dev, const char *name,
	       size_t name_len, int with_blocks, struct store_file *f)
{
	uint8_t key[STORE__KEY_MAX];
	struct rec r;
	MDB_val v;
	size_t klen, n;
	void *arrays = NULL;
	int rc;

	memset(f, 0, sizeof(*f));
	if (!name_ok(name, name_len))
		return STORE_EINVAL;
	rc = lookup(txn, folder, dev, name, name_len, key, &klen, &v);
	if (rc)
		return rc;
	rc = rec_parse(v.mv_data, v.mv_size, &r);
	if (rc)
		return rc;
	if (r.name_len != name_len || memcmp(r.name, name, name_len) != 0)
		return STORE_ECORRUPT;
	n = rec_arrays_size(&r, with_blocks);
	if (n) {
		arrays = malloc(n);
		if (!arrays)
			return STORE_ENOMEM;
	}
	rec_decode(&r, with_blocks, arrays, f);
	f->owned = arrays;
	store__note_read(txn);
	return 0;
}

/* Decodes one value into f (arrays reused) and calls cb. */
static int
visit(const MDB_val *v, int with_blocks, struct arrays *a, store_file_cb cb, void *arg)
{
	struct store_file f;
	struct rec r;
	int rc;

	rc = rec_parse(v->mv_data, v->mv_size, &r);
	if (rc)
		return rc;
	rc = arrays_reserve(a, rec_arrays_size(&r, with_blocks));
	if (rc)
		return rc;
	rec_decode(&r, with_blocks, a->p, &f);
	return cb(&f, arg);
}

int
store_files_each(struct store_txn *txn, uint32_t folder, uint32_t dev, const char *start_after,
		 size_t start_len, int with_blocks, store_file_cb cb, void *arg)
{
	uint8_t key[STORE__KEY_MAX];
	struct arrays a = {0};
	MDB_cursor *c = NULL;
	MDB_val k, v;
	size_t klen = STORE__FD_LEN;
	int rc, skip = 0;

	fd_prefix(key, folder, dev);
	if (start_after && start_len) {
		if (!name_ok(start_after, start_len))
			return STORE_EINVAL;
		rc = lookup(txn, folder, dev, start_after, start_len, key, &klen, &v);
		if (rc && rc != STORE_ENOTFOUND)
			return rc;
		skip = rc == 0;
	}
	rc = store__err(txn, mdb_cursor_open(txn->t, txn->s->files, &c));
	if (rc)
		goto out;
	k.mv_size = klen;
	k.mv_data = key;
	rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
	if (rc == 0 && skip && k.mv_size == klen && memcmp(k.mv_data, key, klen) == 0)
		rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
	while (rc == 0 && k.mv_size > STORE__FD_LEN && memcmp(k.mv_data, key, STORE__FD_LEN) == 0) {
		store__note_read(txn);
		rc = visit(&v, with_blocks, &a, cb, arg);
		if (rc)
			goto out;
		rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
	}
	rc = rc == MDB_NOTFOUND ? 0 : store__err(txn, rc);
out:
	if (c)
		mdb_cursor_close(c);
	free(a.p);
	return rc < 0 ? rc : 0;
}

int
store_seq_each(struct store_txn *txn, uint32_t folder, uint32_t dev, uint64_t after_seq,
	       int with_blocks, store_file_cb cb, void *arg)
{
	uint8_t key[SKEY_LEN], fkey[STORE__KEY_MAX];
	struct arrays a = {0};
	MDB_cursor *c = NULL;
	MDB_val k, v, fk, fv;
	int rc;

	if (after_seq == UINT64_MAX)
		return 0;
	skey(key, folder, dev, after_seq + 1);
	fd_prefix(fkey, folder, dev);
	rc = store__err(txn, mdb_cursor_open(txn->t, txn->s->seq, &c));
	if (rc)
		goto out;
	k.mv_size = SKEY_LEN;
	k.mv_data = key;
	rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
	while (rc == 0 && k.mv_size == SKEY_LEN && memcmp(k.mv_data, key, STORE__FD_LEN) == 0) {
		if (v.mv_size == 0 || v.mv_size > STORE__KEY_MAX - STORE__FD_LEN) {
			rc = STORE_ECORRUPT;
			goto out;
		}
		memcpy(fkey + STORE__FD_LEN, v.mv_data, v.mv_size);
		fk.mv_size = STORE__FD_LEN + v.mv_size;
		fk.mv_data = fkey;
		rc = mdb_get(txn->t, txn->s->files, &fk, &fv);
		if (rc) {
			rc = rc == MDB_NOTFOUND ? STORE_ECORRUPT : store__err(txn, rc);
			goto out;
		}
		store__note_read(txn);
		rc = visit(&fv, with_blocks, &a, cb, arg);
		if (rc)
			goto out;
		rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
	}
	rc = rc == MDB_NOTFOUND ? 0 : store__err(txn, rc);
out:
	if (c)
		mdb_cursor_close(c);
	free(a.p);
	return rc < 0 ? rc : 0;
}

/* ---- block map ---- */

int
store_block_each(struct store_txn *txn, const uint8_t hash[32], store_block_cb cb, void *arg)
{
	MDB_cursor *c = NULL;
	MDB_val k = {32, (void *)hash}, v;
	const uint8_t *p;
	int rc;

	rc = store__err(txn, mdb_cursor_open(txn->t, txn->s->blocks, &c));
	if (rc)
		goto out;
	rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
	while (rc == 0 && k.mv_size == STORE__BKEY_LEN && memcmp(k.mv_data, hash, 32) == 0) {
		if (v.mv_size <= 12) {
			rc = STORE_ECORRUPT;
			goto out;
		}
		p = v.mv_data;
		rc = cb(store__get_be32((const uint8_t *)k.mv_data + 32), (const char *)p + 12,
			v.mv_size - 12, store__get_le64(p), store__get_le32(p + 8), arg);
		if (rc)
			goto out;
		rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
	}
	rc = rc == MDB_NOTFOUND ? 0 : store__err(txn, rc);
out:
	if (c)
		mdb_cursor_close(c);
	return rc < 0 ? rc : 0;
}
