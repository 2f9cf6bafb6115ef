/*
 * store/partial.c - records of partial downloads, so that a restart resumes
 * instead of fetching verified blocks again.
 *
 * Key: folder (u32 BE) | hash128(name) (16). Value: name length (u16 LE) |
 * name | temp name length (u8) | temp name | ident (32) | time (u64 LE) |
 * block count (u32 LE) | bitmap. The name is kept in the value and compared
 * on read, so a hash collision reads as "not found".
 */
#include <string.h>

#include "store/internal.h"

#define PKEY_LEN 20u

static void
pkey(uint8_t *k, uint32_t folder, const char *name, size_t len)
{
	store__be32(k, folder);
	store__hash128(name, len, k + 4);
}

struct pval {
	const char *name;
	size_t name_len;
	struct store_partial p;
};

static int
pparse(const uint8_t *v, size_t n, struct pval *out)
{
	size_t o = 0, tl, bl;

	if (n < 2)
		return STORE_ECORRUPT;
	out->name_len = (size_t)v[0] | (size_t)v[1] << 8;
	o = 2;
	if (o + out->name_len + 1 > n)
		return STORE_ECORRUPT;
	out->name = (const char *)v + o;
	o += out->name_len;
	tl = v[o++];
	if (o + tl + 32 + 8 + 4 > n)
		return STORE_ECORRUPT;
	out->p.tmp = (const char *)v + o;
	out->p.tmp_len = tl;
	o += tl;
	memcpy(out->p.ident, v + o, 32);
	o += 32;
	out->p.time_ns = store__get_le64(v + o);
	o += 8;
	out->p.nblocks = store__get_le32(v + o);
	o += 4;
	bl = ((size_t)out->p.nblocks + 7) / 8;
	if (o + bl != n)
		return STORE_ECORRUPT;
	out->p.bitmap = v + o;
	return 0;
}

int
store_partial_put(struct store_txn *txn, uint32_t folder, const char *name, size_t name_len,
		  const struct store_partial *p)
{
	uint8_t key[PKEY_LEN];
	MDB_val k = {PKEY_LEN, key}, v;
	size_t bl = ((size_t)p->nblocks + 7) / 8, n, o = 0;
	uint8_t *buf;

	if (!txn->write || name_len == 0 || name_len > 65535 || p->tmp_len > 255)
		return STORE_EINVAL;
	n = 2 + name_len + 1 + p->tmp_len + 32 + 8 + 4 + bl;
	buf = store__scratch(txn, n);
	if (!buf)
		return STORE_ENOMEM;
	buf[o++] = (uint8_t)name_len;
	buf[o++] = (uint8_t)(name_len >> 8);
	memcpy(buf + o, name, name_len);
	o += name_len;
	buf[o++] = (uint8_t)p->tmp_len;
	memcpy(buf + o, p->tmp, p->tmp_len);
	o += p->tmp_len;
	memcpy(buf + o, p->ident, 32);
	o += 32;
	store__le64(buf + o, p->time_ns);
	o += 8;
	store__le32(buf + o, p->nblocks);
	o += 4;
	if (bl)
		memcpy(buf + o, p->bitmap, bl);
	pkey(key, folder, name, name_len);
	v.mv_size = n;
	v.mv_data = buf;
	return store__err(txn, mdb_put(txn->t, txn->s->partials, &k, &v, 0));
}

int
store_partial_get(struct store_txn *txn, uint32_t folder, const char *name, size_t name_len,
		  struct store_partial *p)
{
	uint8_t key[PKEY_LEN];
	MDB_val k = {PKEY_LEN, key}, v;
	struct pval pv;
	int rc;

	pkey(key, folder, name, name_len);
	rc = mdb_get(txn->t, txn->s->partials, &k, &v);
	if (rc)
		return store__err(txn, rc);
	rc = pparse(v.mv_data, v.mv_size, &pv);
	if (rc)
		return rc;
	if (pv.name_len != name_len || memcmp(pv.name, name, name_len) != 0)
		return STORE_ENOTFOUND;
	*p = pv.p;
	return 0;
}

int
store_partial_del(struct store_txn *txn, uint32_t folder, const char *name, size_t name_len)
{
	uint8_t key[PKEY_LEN];
	MDB_val k = {PKEY_LEN, key};

	if (!txn->write)
		return STORE_EINVAL;
	pkey(key, folder, name, name_len);
	return store__err(txn, mdb_del(txn->t, txn->s->partials, &k, NULL));
}

int
store_partials_each(struct store_txn *txn, store_partial_cb cb, void *arg)
{
	MDB_cursor *c;
	MDB_val k, v;
	int rc;

	rc = mdb_cursor_open(txn->t, txn->s->partials, &c);
	if (rc)
		return store__err(txn, rc);
	rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
	while (rc == 0) {
		struct pval pv;
		if (k.mv_size != PKEY_LEN || pparse(v.mv_data, v.mv_size, &pv) != 0) {
			rc = STORE_ECORRUPT;
			break;
		}
		rc = cb(store__get_be32(k.mv_data), pv.name, pv.name_len, &pv.p, arg);
		if (rc != 0)
			break;
		rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
	}
	mdb_cursor_close(c);
	if (rc == MDB_NOTFOUND || rc == 1)
		return 0;
	return rc < 0 ? rc : store__err(txn, rc);
}
