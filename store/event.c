/*
 * store/event.c - the durable event log: what `shoal events` replays after a
 * restart (transfers started, completed, failed; conflicts; errors).
 *
 * Key: seq (u64 BE). Value: time in ns since the epoch (u64 LE), then the
 * event's JSON text.
 */
#include <string.h>

#include "store/internal.h"

int
store_event_put(struct store_txn *txn, uint64_t seq, uint64_t time_ns, const char *json,
		size_t len)
{
	uint8_t key[8];
	MDB_val k = {8, key}, v;
	unsigned char *buf;

	if (!txn->write || len > (1u << 20))
		return STORE_EINVAL;
	buf = store__scratch(txn, 8 + len);
	if (!buf)
		return STORE_ENOMEM;
	store__be64(key, seq);
	store__le64(buf, time_ns);
	memcpy(buf + 8, json, len);
	v.mv_size = 8 + len;
	v.mv_data = buf;
	return store__err(txn, mdb_put(txn->t, txn->s->events, &k, &v, MDB_APPEND));
}

int
store_events_each(struct store_txn *txn, uint64_t after_seq, store_event_cb cb, void *arg)
{
	uint8_t key[8];
	MDB_cursor *c;
	MDB_val k = {8, key}, v;
	int rc;

	if (after_seq == UINT64_MAX)
		return 0;
	store__be64(key, after_seq + 1);
	rc = mdb_cursor_open(txn->t, txn->s->events, &c);
	if (rc)
		return store__err(txn, rc);
	rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
	while (rc == 0) {
		if (k.mv_size != 8 || v.mv_size < 8) {
			rc = STORE_ECORRUPT;
			break;
		}
		const uint8_t *p = v.mv_data;
		rc = cb(store__get_be64(k.mv_data), store__get_le64(p), (const char *)p + 8,
			v.mv_size - 8, arg);
		if (rc != 0)
			break;
		rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
	}
	mdb_cursor_close(c);
	if (rc == MDB_NOTFOUND || rc == 1)
		return 0;
	return rc < 0 ? rc : store__err(txn, rc);
}

int
store_event_last(struct store_txn *txn, uint64_t *seq)
{
	MDB_cursor *c;
	MDB_val k, v;
	int rc;

	*seq = 0;
	rc = mdb_cursor_open(txn->t, txn->s->events, &c);
	if (rc)
		return store__err(txn, rc);
	rc = mdb_cursor_get(c, &k, &v, MDB_LAST);
	if (rc == 0 && k.mv_size == 8)
		*seq = store__get_be64(k.mv_data);
	mdb_cursor_close(c);
	return rc == MDB_NOTFOUND ? 0 : store__err(txn, rc);
}

int
store_events_prune(struct store_txn *txn, uint64_t before_ns, size_t *removed)
{
	MDB_cursor *c;
	MDB_val k, v;
	int rc;

	*removed = 0;
	if (!txn->write)
		return STORE_EINVAL;
	rc = mdb_cursor_open(txn->t, txn->s->events, &c);
	if (rc)
		return store__err(txn, rc);
	rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
	while (rc == 0) {
		if (v.mv_size < 8 || store__get_le64(v.mv_data) >= before_ns)
			break;
		rc = mdb_cursor_del(c, 0);
		if (rc)
			break;
		(*removed)++;
		rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
	}
	mdb_cursor_close(c);
	return rc == MDB_NOTFOUND || rc == 0 ? 0 : store__err(txn, rc);
}

int
store_events_trim(struct store_txn *txn, size_t keep, size_t *removed)
{
	MDB_stat st;
	MDB_cursor *c;
	MDB_val k, v;
	int rc;

	*removed = 0;
	if (!txn->write)
		return STORE_EINVAL;
	rc = mdb_stat(txn->t, txn->s->events, &st);
	if (rc)
		return store__err(txn, rc);
	if (st.ms_entries <= keep)
		return 0;
	rc = mdb_cursor_open(txn->t, txn->s->events, &c);
	if (rc)
		return store__err(txn, rc);
	size_t extra = st.ms_entries - keep;
	rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
	while (rc == 0 && *removed < extra) {
		rc = mdb_cursor_del(c, 0);
		if (rc)
			break;
		(*removed)++;
		rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
	}
	mdb_cursor_close(c);
	return rc == MDB_NOTFOUND || rc == 0 ? 0 : store__err(txn, rc);
}
