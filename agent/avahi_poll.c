/*
 * agent/avahi_poll.c - AvahiPoll on libuv: AvahiWatch on a shared uv_poll_t
 * per fd, AvahiTimeout on a uv_timer_t. The invariants are in avahi_poll.h.
 */
#include <stdint.h>
#include <stdlib.h>
#include <sys/time.h>

#include "agent/avahi_poll.h"
#include "agent/log.h"

struct fdpoll;

/* Avahi declares these two types and leaves their bodies to the poll implementation. */
struct AvahiWatch {
	struct AvahiWatch *next;
	struct fdpoll *fp;
	AvahiWatchEvent events;	 /* what the owner wants */
	AvahiWatchEvent revents; /* what happened, during the owner's callback */
	AvahiWatchCallback cb;
	void *userdata;
	int dead; /* freed by the owner; memory goes after the dispatch */
};

struct AvahiTimeout {
	uv_timer_t timer;
	struct avpoll *ap;
	struct AvahiTimeout *prev, *next;
	AvahiTimeoutCallback cb;
	void *userdata;
};

/* Every watch of one fd, on one poll handle. */
struct fdpoll {
	uv_poll_t handle;
	struct avpoll *ap; /* not used once closing */
	struct fdpoll *next;
	struct AvahiWatch *watches; /* newest first */
	int fd;
	int polling;	 /* UV_READABLE/UV_WRITABLE the handle is started for; 0 stopped */
	int dispatching; /* on_poll is walking the watches: do not free them */
	int closing;	 /* uv_close() called: unlinked from ap, memory goes in on_fdpoll_closed */
};

struct avpoll {
	AvahiPoll api;
	uv_loop_t *loop;
	struct fdpoll *fds;
	struct AvahiTimeout *timeouts;
};

/* ---- watches ---- */

static void
on_fdpoll_closed(uv_handle_t *h)
{
	struct fdpoll *fp = h->data;

	while (fp->watches) {
		struct AvahiWatch *w = fp->watches;
		fp->watches = w->next;
		free(w);
	}
	free(fp);
}

/* Unlinks fp from its adapter and closes its handle (which stops polling now). */
static void
fdpoll_close(struct fdpoll *fp)
{
	struct fdpoll **pp;

	if (fp->closing)
		return;
	for (pp = &fp->ap->fds; *pp; pp = &(*pp)->next) {
		if (*pp == fp) {
			*pp = fp->next;
			break;
		}
	}
	fp->closing = 1;
	fp->polling = 0;
	uv_close((uv_handle_t *)&fp->handle, on_fdpoll_closed);
}

/* Frees the dead watches (never while on_poll walks the list). */
static void
fdpoll_sweep(struct fdpoll *fp)
{
	struct AvahiWatch **pw = &fp->watches;

	while (*pw) {
		struct AvahiWatch *w = *pw;
		if (w->dead) {
			*pw = w->next;
			free(w);
		} else {
			pw = &w->next;
		}
	}
}

static void on_poll(uv_poll_t *h, int status, int events);

/*
 * Starts, restarts or stops the handle for what the live watches want, and
 * closes it once no live watch is left.
 */
static void
fdpoll_arm(struct fdpoll *fp)
{
	int want = 0, live = 0, rc;

	if (fp->closing)
		return;
	for (struct AvahiWatch *w = fp->watches; w; w = w->next) {
		if (w->dead)
			continue;
		live = 1;
		if (w->events & AVAHI_WATCH_IN)
			want |= UV_READABLE;
		if (w->events & AVAHI_WATCH_OUT)
			want |= UV_WRITABLE;
	}
	if (!live) {
		fdpoll_close(fp);
		return;
	}
	if (want == fp->polling)
		return;
	if (want == 0) {
		uv_poll_stop(&fp->handle);
		fp->polling = 0;
		return;
	}
	rc = uv_poll_start(&fp->handle, want, on_poll);
	if (rc != 0) {
		log_warn("mDNS: cannot poll fd %d: %s", fp->fd, uv_strerror(rc));
		fp->polling = 0;
		return;
	}
	fp->polling = want;
}

static void
on_poll(uv_poll_t *h, int status, int events)
{
	struct fdpoll *fp = h->data;
	AvahiWatchEvent ev = 0;

	if (status < 0) {
		/* POLLERR: libuv has stopped the handle. */
		ev |= AVAHI_WATCH_ERR;
		fp->polling = 0;
	}
	if (events & UV_READABLE)
		ev |= AVAHI_WATCH_IN;
	if (events & UV_WRITABLE)
		ev |= AVAHI_WATCH_OUT;

	/*
	 * A callback may free any watch of this fd, add new ones (at the head,
	 * so this walk does not visit them) or free the whole adapter; the
	 * list's memory stays until the sweep below or the close callback.
	 */
	fp->dispatching = 1;
	for (struct AvahiWatch *w = fp->watches; w; w = w->next) {
		AvahiWatchEvent mine = ev & (w->events | AVAHI_WATCH_ERR | AVAHI_WATCH_HUP);
		if (w->dead || mine == 0)
			continue;
		w->revents = mine;
		w->cb(w, fp->fd, mine, w->userdata);
		w->revents = 0;
	}
	fp->dispatching = 0;
	fdpoll_sweep(fp);
	fdpoll_arm(fp);
}

static AvahiWatch *
watch_new(const AvahiPoll *api, int fd, AvahiWatchEvent events, AvahiWatchCallback cb,
	  void *userdata)
{
	struct avpoll *ap = api->userdata;
	struct fdpoll *fp;
	struct AvahiWatch *w;
	int rc;

	w = calloc(1, sizeof(*w));
	if (!w)
		return NULL;
	for (fp = ap->fds; fp && fp->fd != fd; fp = fp->next)
		;
	if (!fp) {
		fp = calloc(1, sizeof(*fp));
		if (!fp) {
			free(w);
			return NULL;
		}
		rc = uv_poll_init(ap->loop, &fp->handle, fd);
		if (rc != 0) {
			log_warn("mDNS: cannot watch fd %d: %s", fd, uv_strerror(rc));
			free(fp);
			free(w);
			return NULL;
		}
		fp->handle.data = fp;
		fp->ap = ap;
		fp->fd = fd;
		fp->next = ap->fds;
		ap->fds = fp;
	}
	w->fp = fp;
	w->events = events;
	w->cb = cb;
	w->userdata = userdata;
	w->next = fp->watches;
	fp->watches = w;
	fdpoll_arm(fp);
	return w;
}

static void
watch_update(AvahiWatch *w, AvahiWatchEvent events)
{
	w->events = events;
	fdpoll_arm(w->fp);
}

static AvahiWatchEvent
watch_get_events(AvahiWatch *w)
{
	return w->revents;
}

static void
watch_free(AvahiWatch *w)
{
	struct fdpoll *fp = w->fp;

	w->dead = 1;
	/* The last watch of the fd closes the handle now, before the owner closes the fd. */
	fdpoll_arm(fp);
	if (!fp->dispatching && !fp->closing)
		fdpoll_sweep(fp);
}

/* ---- timeouts ---- */

/*
 * Milliseconds from now until the absolute time tv, 0 if past. Rounded up,
 * plus one: libuv's clock counts whole (truncated) milliseconds, so a timer
 * of n ms can fire up to 1 ms early, and Avahi must never see it early.
 */
static uint64_t
ms_until(const struct timeval *tv)
{
	struct timeval now;
	int64_t us;

	gettimeofday(&now, NULL);
	us = ((int64_t)tv->tv_sec - (int64_t)now.tv_sec) * 1000000 +
	     ((int64_t)tv->tv_usec - (int64_t)now.tv_usec);
	return us <= 0 ? 0 : (uint64_t)(us + 999) / 1000 + 1;
}

static void
on_timer(uv_timer_t *timer)
{
	struct AvahiTimeout *t = timer->data;

	/* The callback may update or free t: nothing touches t after it. */
	t->cb(t, t->userdata);
}

static void
timeout_arm(struct AvahiTimeout *t, const struct timeval *tv)
{
	uv_timer_stop(&t->timer);
	if (!tv)
		return;
	uv_update_time(t->ap->loop);
	uv_timer_start(&t->timer, on_timer, ms_until(tv), 0);
}

static AvahiTimeout *
timeout_new(const AvahiPoll *api, const struct timeval *tv, AvahiTimeoutCallback cb, void *userdata)
{
	struct avpoll *ap = api->userdata;
	struct AvahiTimeout *t = calloc(1, sizeof(*t));

	if (!t)
		return NULL;
	uv_timer_init(ap->loop, &t->timer);
	t->timer.data = t;
	t->ap = ap;
	t->cb = cb;
	t->userdata = userdata;
	t->next = ap->timeouts;
	if (t->next)
		t->next->prev = t;
	ap->timeouts = t;
	timeout_arm(t, tv);
	return t;
}

static void
timeout_update(AvahiTimeout *t, const struct timeval *tv)
{
	timeout_arm(t, tv);
}

static void
on_timeout_closed(uv_handle_t *h)
{
	free(h->data);
}

static void
timeout_free(AvahiTimeout *t)
{
	if (t->prev)
		t->prev->next = t->next;
	else
		t->ap->timeouts = t->next;
	if (t->next)
		t->next->prev = t->prev;
	uv_close((uv_handle_t *)&t->timer, on_timeout_closed);
}

/* ---- the adapter ---- */

struct avpoll *
avpoll_new(uv_loop_t *loop)
{
	struct avpoll *ap = calloc(1, sizeof(*ap));

	if (!ap)
		return NULL;
	ap->loop = loop;
	ap->api.userdata = ap;
	ap->api.watch_new = watch_new;
	ap->api.watch_update = watch_update;
	ap->api.watch_get_events = watch_get_events;
	ap->api.watch_free = watch_free;
	ap->api.timeout_new = timeout_new;
	ap->api.timeout_update = timeout_update;
	ap->api.timeout_free = timeout_free;
	return ap;
}

const AvahiPoll *
avpoll_api(struct avpoll *p)
{
	return &p->api;
}

void
avpoll_free(struct avpoll *p)
{
	if (!p)
		return;
	while (p->fds) {
		struct fdpoll *fp = p->fds;
		for (struct AvahiWatch *w = fp->watches; w; w = w->next)
			w->dead = 1;
		fdpoll_close(fp);
	}
	while (p->timeouts)
		timeout_free(p->timeouts);
	free(p);
}
