/*
 * agent/events.h - the agent's event stream, pushed to `shoal events`.
 *
 * Every event is one JSON object on one line with a sequence number ("seq"),
 * a UTC time ("time") and a "type". Durable events (transfers started,
 * completed, failed; conflicts; errors) are also written to LMDB, in one
 * transaction per second at most, and pruned after EVENTS_KEEP_DAYS; the
 * others (state changes, index updates, progress) live in a ring of the last
 * EVENTS_RING events only. After a restart numbering continues from the last
 * stored (durable) event, so numbers of an earlier run's transient events may
 * be used again.
 *
 * Use: struct json *j = events_begin(ag, "type"); json_key(j, ...) ...;
 * events_end(ag, j, durable). Nothing is sent when nobody listens except
 * that durable events are always stored.
 */
#ifndef SHOAL_AGENT_EVENTS_H
#define SHOAL_AGENT_EVENTS_H

#include <stddef.h>
#include <stdint.h>

#include "agent/json.h"

#define EVENTS_RING 1024
#define EVENTS_KEEP_DAYS 7
#define EVENTS_KEEP_MAX 10000 /* durable events kept at most, whatever their age */

struct agent;
struct ctl_client;

int events_init(struct agent *ag);
void events_release(struct agent *ag);
/* Opens an event object with seq, time and type written. Never NULL. */
struct json *events_begin(struct agent *ag, const char *type);
void events_end(struct agent *ag, struct json *j, int durable);
/* Writes the durable events waiting for a commit; called once a second and at exit. */
void events_flush(struct agent *ag);

/*
 * Replays events after since to a control client (stored ones first), then
 * keeps it subscribed. write_line(cl, text, len) sends one line; it returns
 * non-zero when the client should be dropped (too slow).
 */
typedef int (*events_write_fn)(struct ctl_client *cl, const char *line, size_t len);
void events_subscribe(struct agent *ag, struct ctl_client *cl, uint64_t since, events_write_fn fn);
void events_unsubscribe(struct agent *ag, struct ctl_client *cl);

#endif
