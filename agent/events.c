/*
 * agent/events.c - event sequence, ring, durable log and subscribers.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agent/agent.h"
#include "agent/events.h"
#include "agent/log.h"
#include "agent/util.h"

struct ev {
	uint64_t seq, time_ns;
	char *text;
	size_t len;
	int durable, stored;
};

struct sub {
	struct sub *next;
	struct ctl_client *cl;
	events_write_fn write;
};

/*
 * Sequence numbers handed out are reserved in the store EVENTS_RESERVE at a
 * time, so that after a restart, even one after a crash, numbering goes on
 * above every number a subscriber may have seen, transient events included.
 */
#define EVENTS_RESERVE 10000u
#define EVENTS_RESERVED_KEY "event_seq_reserved"

struct events {
	uint64_t seq;
	uint64_t reserved; /* numbers up to this one are reserved in the store */
	struct ev ring[EVENTS_RING];
	size_t head, count; /* ring[head] is the oldest */
	struct sub *subs;
	struct json cur;
	int in_event;
	uint64_t last_prune_ms;
};

static int
txn_reserve(struct store_txn *txn, void *arg)
{
	return store_meta_put(txn, EVENTS_RESERVED_KEY, arg, sizeof(uint64_t));
}

static void
events_reserve(struct agent *ag, struct events *e)
{
	uint64_t upto = e->seq + EVENTS_RESERVE;
	int rc = store_write(ag->store, txn_reserve, &upto);

	if (rc != 0)
		log_warn("cannot reserve event numbers: %s", store_strerror(rc));
	/* Even when that failed: try again only after another EVENTS_RESERVE events. */
	e->reserved = upto;
}

int
events_init(struct agent *ag)
{
	struct events *e = calloc(1, sizeof(*e));
	struct store_txn *txn;
	uint64_t reserved = 0;
	size_t len = 0;

	if (!e)
		return -ENOMEM;
	if (store_read_begin(ag->store, &txn) == 0) {
		store_event_last(txn, &e->seq);
		if (store_meta_get(txn, EVENTS_RESERVED_KEY, &reserved, sizeof(reserved), &len) == 0 &&
		    len == sizeof(reserved) && reserved > e->seq)
			e->seq = reserved;
		store_read_end(txn);
	}
	events_reserve(ag, e);
	ag->events = e;
	return 0;
}

void
events_release(struct agent *ag)
{
	struct events *e = ag->events;
	if (!e)
		return;
	events_flush(ag);
	for (size_t i = 0; i < EVENTS_RING; i++)
		free(e->ring[i].text);
	while (e->subs) {
		struct sub *s = e->subs;
		e->subs = s->next;
		free(s);
	}
	json_release(&e->cur);
	free(e);
	ag->events = NULL;
}

static void
fmt_time(uint64_t ns, char *out, size_t len)
{
	time_t t = (time_t)(ns / 1000000000u);
	struct tm tm;
	gmtime_r(&t, &tm);
	size_t n = strftime(out, len, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out + n, len - n, ".%03uZ", (unsigned)(ns / 1000000u % 1000u));
}

struct json *
events_begin(struct agent *ag, const char *type)
{
	struct events *e = ag->events;
	char ts[40];

	json_release(&e->cur);
	json_init(&e->cur);
	e->in_event = 1;
	fmt_time(wall_ns(), ts, sizeof(ts));
	json_obj_open(&e->cur);
	json_key(&e->cur, "seq");
	json_u64(&e->cur, e->seq + 1);
	json_key(&e->cur, "time");
	json_str(&e->cur, ts);
	json_key(&e->cur, "type");
	json_str(&e->cur, type);
	return &e->cur;
}

void
events_end(struct agent *ag, struct json *j, int durable)
{
	struct events *e = ag->events;
	struct ev *slot;
	const char *text;

	json_obj_close(j);
	text = json_finish(j);
	e->in_event = 0;
	if (!text)
		return;
	e->seq++;
	if (e->seq >= e->reserved)
		events_reserve(ag, e);
	if (e->count == EVENTS_RING) {
		slot = &e->ring[e->head];
		if (slot->durable && !slot->stored)
			events_flush(ag);
		free(slot->text);
		e->head = (e->head + 1) % EVENTS_RING;
		e->count--;
	}
	slot = &e->ring[(e->head + e->count) % EVENTS_RING];
	memset(slot, 0, sizeof(*slot));
	slot->seq = e->seq;
	slot->time_ns = wall_ns();
	slot->len = strlen(text);
	slot->text = strdup(text);
	slot->durable = durable;
	if (!slot->text)
		return;
	e->count++;
	for (struct sub **pp = &e->subs; *pp;) {
		struct sub *s = *pp;
		if (s->write(s->cl, slot->text, slot->len) != 0) {
			*pp = s->next;
			free(s);
			continue;
		}
		pp = &s->next;
	}
}

static int
txn_store_events(struct store_txn *txn, void *arg)
{
	struct events *e = arg;
	for (size_t i = 0; i < e->count; i++) {
		struct ev *v = &e->ring[(e->head + i) % EVENTS_RING];
		if (!v->durable || v->stored)
			continue;
		int rc = store_event_put(txn, v->seq, v->time_ns, v->text, v->len);
		if (rc != 0)
			return rc;
	}
	return 0;
}

static int
txn_prune(struct store_txn *txn, void *arg)
{
	size_t removed;
	int rc = store_events_prune(txn, *(uint64_t *)arg, &removed);
	/* And never more than EVENTS_KEEP_MAX of them, however busy the folders. */
	return rc ? rc : store_events_trim(txn, EVENTS_KEEP_MAX, &removed);
}

void
events_flush(struct agent *ag)
{
	struct events *e = ag->events;
	int pending = 0;

	if (!e)
		return;
	for (size_t i = 0; i < e->count; i++) {
		struct ev *v = &e->ring[(e->head + i) % EVENTS_RING];
		pending |= v->durable && !v->stored;
	}
	if (pending) {
		int rc = store_write(ag->store, txn_store_events, e);
		if (rc != 0)
			log_warn("cannot store events: %s", store_strerror(rc));
		for (size_t i = 0; i < e->count; i++)
			e->ring[(e->head + i) % EVENTS_RING].stored = 1;
	}
	if (now_ms() - e->last_prune_ms > 600 * 1000) {
		uint64_t before = wall_ns() - (uint64_t)EVENTS_KEEP_DAYS * 86400 * 1000000000ull;
		e->last_prune_ms = now_ms();
		store_write(ag->store, txn_prune, &before);
	}
}

struct replay {
	struct ctl_client *cl;
	events_write_fn write;
	uint64_t below;
	int dropped;
};

static int
replay_one(uint64_t seq, uint64_t time_ns, const char *json, size_t len, void *arg)
{
	struct replay *r = arg;
	(void)time_ns;
	if (seq >= r->below)
		return 1;
	if (r->write(r->cl, json, len) != 0) {
		r->dropped = 1;
		return 1;
	}
	return 0;
}

void
events_subscribe(struct agent *ag, struct ctl_client *cl, uint64_t since, events_write_fn fn)
{
	struct events *e = ag->events;
	uint64_t oldest = e->count ? e->ring[e->head].seq : e->seq + 1;
	struct sub *s;

	/* Stored events older than the ring first, then the ring. */
	if (since + 1 < oldest) {
		struct store_txn *txn;
		struct replay r = {cl, fn, oldest, 0};
		events_flush(ag);
		if (store_read_begin(ag->store, &txn) == 0) {
			store_events_each(txn, since, replay_one, &r);
			store_read_end(txn);
		}
		if (r.dropped)
			return;
	}
	for (size_t i = 0; i < e->count; i++) {
		struct ev *v = &e->ring[(e->head + i) % EVENTS_RING];
		if (v->seq > since && fn(cl, v->text, v->len) != 0)
			return;
	}
	s = calloc(1, sizeof(*s));
	if (!s)
		return;
	s->cl = cl;
	s->write = fn;
	s->next = e->subs;
	e->subs = s;
}

void
events_unsubscribe(struct agent *ag, struct ctl_client *cl)
{
	struct events *e = ag->events;
	if (!e)
		return;
	for (struct sub **pp = &e->subs; *pp; pp = &(*pp)->next) {
		if ((*pp)->cl == cl) {
			struct sub *s = *pp;
			*pp = s->next;
			free(s);
			return;
		}
	}
}
