/*
 * tests/unit/avahi_poll_test.c - the AvahiPoll adapter on libuv, without any
 * daemon: watches on pipes and socket pairs, two watches on one fd, freeing
 * inside callbacks, fd number reuse, absolute timeouts after a blocked loop,
 * and discovery started with no D-Bus bus at all. Every case closes every
 * handle and ends with uv_loop_close() == 0.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <uv.h>

#include "agent/avahi_poll.h"
#include "agent/discovery.h"
#include "test.h"

static uv_loop_t loop;
static struct avpoll *ap;
static const AvahiPoll *api;

static void
setup(void)
{
	ASSERT_EQ(uv_loop_init(&loop), 0);
	ap = avpoll_new(&loop);
	ASSERT(ap != NULL);
	api = avpoll_api(ap);
}

static void
count_handle(uv_handle_t *h, void *arg)
{
	size_t *n = arg;
	if (!uv_is_closing(h))
		(*n)++;
}

/* Handles of the loop not yet closing. */
static size_t
open_handles(void)
{
	size_t n = 0;
	uv_walk(&loop, count_handle, &n);
	return n;
}

static void
teardown(void)
{
	avpoll_free(ap);
	ap = NULL;
	ASSERT_EQ(uv_run(&loop, UV_RUN_DEFAULT), 0);
	ASSERT_EQ(uv_loop_close(&loop), 0);
}

/* Turns the loop (without blocking) until *flag reaches want or 2 s pass. */
static void
run_until(const int *flag, int want)
{
	uint64_t end = uv_hrtime() + 2000000000u;

	while (*flag < want && uv_hrtime() < end) {
		uv_run(&loop, UV_RUN_NOWAIT);
		if (*flag < want)
			usleep(1000);
	}
	ASSERT_EQ(*flag, want);
}

/* Turns the loop a few times; for "must not fire". */
static void
run_briefly(void)
{
	for (int i = 0; i < 20; i++) {
		uv_run(&loop, UV_RUN_NOWAIT);
		usleep(1000);
	}
}

static int64_t
wall_us(void)
{
	struct timeval tv;
	gettimeofday(&tv, NULL);
	return (int64_t)tv.tv_sec * 1000000 + tv.tv_usec;
}

static struct timeval
wall_in_ms(int ms)
{
	int64_t us = wall_us() + (int64_t)ms * 1000;
	struct timeval tv = {.tv_sec = us / 1000000, .tv_usec = us % 1000000};
	return tv;
}

static int64_t
tv_us(const struct timeval *tv)
{
	return (int64_t)tv->tv_sec * 1000000 + tv->tv_usec;
}

/* ---- watches ---- */

struct reader {
	int calls;
	AvahiWatchEvent last;
	AvahiWatchEvent seen_by_get; /* watch_get_events() inside the callback */
	int free_self;
	AvahiWatch **free_other; /* a watch to free from this callback */
};

static void
on_readable(AvahiWatch *w, int fd, AvahiWatchEvent ev, void *arg)
{
	struct reader *r = arg;
	char buf[64];

	r->calls++;
	r->last = ev;
	r->seen_by_get = api->watch_get_events(w);
	if (ev & AVAHI_WATCH_IN)
		ASSERT(read(fd, buf, sizeof(buf)) > 0);
	if (r->free_other && *r->free_other) {
		api->watch_free(*r->free_other);
		*r->free_other = NULL;
	}
	if (r->free_self)
		api->watch_free(w);
}

TEST(watch_pipe)
{
	struct reader r = {0};
	AvahiWatch *w;
	int p[2];

	setup();
	ASSERT_EQ(pipe(p), 0);
	w = api->watch_new(api, p[0], AVAHI_WATCH_IN, on_readable, &r);
	ASSERT(w != NULL);
	run_briefly();
	ASSERT_EQ(r.calls, 0); /* nothing to read yet */

	ASSERT_EQ(write(p[1], "x", 1), 1);
	run_until(&r.calls, 1);
	ASSERT_EQ(r.last, AVAHI_WATCH_IN);
	ASSERT_EQ(r.seen_by_get, AVAHI_WATCH_IN);
	ASSERT_EQ(api->watch_get_events(w), 0); /* only during the callback */

	/* Disabled: data waits. Enabled again: it fires. */
	api->watch_update(w, 0);
	ASSERT_EQ(write(p[1], "y", 1), 1);
	run_briefly();
	ASSERT_EQ(r.calls, 1);
	api->watch_update(w, AVAHI_WATCH_IN);
	run_until(&r.calls, 2);

	/* Freed before the fd is closed: the handle goes at once. */
	ASSERT_EQ(open_handles(), 1);
	api->watch_free(w);
	ASSERT_EQ(open_handles(), 0);
	close(p[0]);
	close(p[1]);
	teardown();
}

static void
on_writable(AvahiWatch *w, int fd, AvahiWatchEvent ev, void *arg)
{
	struct reader *r = arg;

	r->calls++;
	r->last = ev;
	/* Like libdbus: once the queue is written, stop asking for POLLOUT. */
	api->watch_update(w, 0);
}

TEST(two_watches_one_fd)
{
	struct reader rd = {0}, wr = {0};
	AvahiWatch *win, *wout;
	int sv[2];

	setup();
	ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	win = api->watch_new(api, sv[0], AVAHI_WATCH_IN, on_readable, &rd);
	wout = api->watch_new(api, sv[0], AVAHI_WATCH_OUT, on_writable, &wr);
	ASSERT(win && wout);
	ASSERT_EQ(open_handles(), 1); /* one uv_poll_t for both */

	run_until(&wr.calls, 1); /* a fresh socket is writable */
	ASSERT_EQ(wr.last, AVAHI_WATCH_OUT);
	ASSERT_EQ(rd.calls, 0);

	ASSERT_EQ(write(sv[1], "x", 1), 1);
	run_until(&rd.calls, 1);
	ASSERT_EQ(rd.last, AVAHI_WATCH_IN); /* the reader never sees OUT */
	ASSERT_EQ(wr.calls, 1);		    /* the writer is disabled */

	/* Both at once: readable and asking for writable again. */
	api->watch_update(wout, AVAHI_WATCH_OUT);
	ASSERT_EQ(write(sv[1], "y", 1), 1);
	run_until(&wr.calls, 2);
	run_until(&rd.calls, 2);

	api->watch_free(wout);
	ASSERT_EQ(open_handles(), 1); /* the read watch still polls */
	ASSERT_EQ(write(sv[1], "z", 1), 1);
	run_until(&rd.calls, 3);
	api->watch_free(win);
	ASSERT_EQ(open_handles(), 0);
	close(sv[0]);
	close(sv[1]);
	teardown();
}

TEST(free_in_callback)
{
	struct reader a = {0}, b = {0}, c = {0};
	AvahiWatch *wa, *wb;
	int sv[2], fd;

	setup();
	ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	fd = sv[0];
	/* Two read watches on one fd: whichever runs first frees the other, then itself. */
	wa = api->watch_new(api, fd, AVAHI_WATCH_IN, on_readable, &a);
	wb = api->watch_new(api, fd, AVAHI_WATCH_IN, on_readable, &b);
	ASSERT(wa && wb);
	a.free_self = b.free_self = 1;
	a.free_other = &wb;
	b.free_other = &wa;
	ASSERT_EQ(write(sv[1], "x", 1), 1);
	run_until(&b.calls, 1); /* wb is newer, so it runs first */
	ASSERT_EQ(a.calls, 0);	/* freed by b before its turn */
	ASSERT(wa == NULL);
	ASSERT_EQ(open_handles(), 0); /* the last watch closed the handle */

	/* Like libdbus: the socket is closed and a new one gets the same number. */
	close(sv[0]);
	close(sv[1]);
	ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	ASSERT_EQ(sv[0], fd);
	c.free_self = 1;
	ASSERT(api->watch_new(api, sv[0], AVAHI_WATCH_IN, on_readable, &c) != NULL);
	ASSERT_EQ(write(sv[1], "y", 1), 1);
	run_until(&c.calls, 1);
	ASSERT_EQ(open_handles(), 0);
	close(sv[0]);
	close(sv[1]);
	teardown();
}

/* ---- timeouts ---- */

struct timer_probe {
	int calls;
	int64_t due_us;	  /* when it should fire (wall clock) */
	int64_t fired_us; /* when it did */
	int rearm_ms;	  /* > 0: re-arm from the callback, once */
	int free_self;
};

static void
on_timeout(AvahiTimeout *t, void *arg)
{
	struct timer_probe *p = arg;

	p->calls++;
	p->fired_us = wall_us();
	if (p->fired_us < p->due_us)
		TEST_FAIL("timeout fired %lld us early", (long long)(p->due_us - p->fired_us));
	ASSERT(p->fired_us < p->due_us + 250000);
	if (p->rearm_ms > 0) {
		struct timeval tv = wall_in_ms(p->rearm_ms);
		p->due_us = tv_us(&tv);
		p->rearm_ms = 0;
		api->timeout_update(t, &tv);
		return;
	}
	if (p->free_self)
		api->timeout_free(t);
}

TEST(timeouts)
{
	struct timer_probe once = {.rearm_ms = 20, .free_self = 1}, never = {0}, moved = {0},
			   off = {0}, past = {0};
	AvahiTimeout *t_never, *t_moved, *t_off, *t_past;
	struct timeval tv;

	setup();
	/* The loop's clock goes stale while a D-Bus call blocks. */
	uv_run(&loop, UV_RUN_NOWAIT);
	usleep(100000);

	tv = wall_in_ms(50);
	once.due_us = tv_us(&tv);
	ASSERT(api->timeout_new(api, &tv, on_timeout, &once) != NULL);
	t_never = api->timeout_new(api, NULL, on_timeout, &never);
	tv = wall_in_ms(2000);
	t_moved = api->timeout_new(api, &tv, on_timeout, &moved);
	tv = wall_in_ms(10);
	t_off = api->timeout_new(api, &tv, on_timeout, &off);
	tv = wall_in_ms(-1000); /* already due: fires at once */
	past.due_us = wall_us();
	t_past = api->timeout_new(api, &tv, on_timeout, &past);
	ASSERT(t_never && t_moved && t_off && t_past);

	api->timeout_update(t_off, NULL); /* disabled before it fired */
	tv = wall_in_ms(30);		  /* brought forward */
	moved.due_us = tv_us(&tv);
	api->timeout_update(t_moved, &tv);

	run_until(&past.calls, 1);
	run_until(&moved.calls, 1);
	run_until(&once.calls, 2); /* 50 ms, then 20 ms more from its own callback */
	run_briefly();
	ASSERT_EQ(past.calls, 1); /* a timeout fires once */
	ASSERT_EQ(moved.calls, 1);
	ASSERT_EQ(never.calls, 0);
	ASSERT_EQ(off.calls, 0);

	/* Armed again after firing. */
	tv = wall_in_ms(5);
	past.due_us = tv_us(&tv);
	api->timeout_update(t_past, &tv);
	run_until(&past.calls, 2);

	api->timeout_free(t_never);
	api->timeout_free(t_moved);
	api->timeout_free(t_off);
	api->timeout_free(t_past);
	ASSERT_EQ(open_handles(), 0);
	teardown();
}

/* ---- the adapter going away with things still alive ---- */

static void
on_free_adapter(AvahiWatch *w, int fd, AvahiWatchEvent ev, void *arg)
{
	int *calls = arg;

	(*calls)++;
	avpoll_free(ap); /* from inside a dispatch, with another watch of this fd alive */
	ap = NULL;
}

TEST(free_leftovers)
{
	struct reader r = {0};
	struct timer_probe later = {0}, never = {0};
	int sv[2], calls = 0;
	struct timeval tv = wall_in_ms(10000);

	setup();
	ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	ASSERT(api->watch_new(api, sv[0], AVAHI_WATCH_IN, on_readable, &r));
	ASSERT(api->watch_new(api, sv[0], AVAHI_WATCH_IN, on_free_adapter, &calls));
	ASSERT(api->timeout_new(api, &tv, on_timeout, &later));
	ASSERT(api->timeout_new(api, NULL, on_timeout, &never));
	ASSERT_EQ(open_handles(), 3);
	ASSERT_EQ(write(sv[1], "x", 1), 1);
	run_until(&calls, 1);
	ASSERT(ap == NULL);
	ASSERT_EQ(r.calls, 0); /* the older watch never ran: the adapter was gone */
	ASSERT_EQ(open_handles(), 0);
	close(sv[0]);
	close(sv[1]);
	teardown();
}

/* ---- discovery without a bus ---- */

static int found;

static void
on_found(void *arg, const char *id, const char *addr)
{
	found++;
}

static void
on_stop_timer(uv_timer_t *t)
{
	uv_stop(t->loop);
	uv_close((uv_handle_t *)t, NULL);
}

TEST(discovery_no_bus)
{
	static const char id[] = "AAAAAAA-BBBBBBB-CCCCCCC-DDDDDDD-EEEEEEE-FFFFFFF-GGGGGGG-HHHHHHH";
	struct discovery *d = NULL;
	uv_timer_t t;

	/* Never the machine's bus: a unit test must not publish on a real network. */
	ASSERT_EQ(setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/shoal-test-bus", 1), 0);
	ASSERT_EQ(uv_loop_init(&loop), 0);
	ASSERT_EQ(discovery_start(&loop, id, "test", 0, on_found, NULL, &d), -EINVAL);
	ASSERT(d == NULL);
	ASSERT_EQ(discovery_start(&loop, id, "test", 22000, on_found, NULL, &d), 0);
	ASSERT(d != NULL);
	ASSERT_EQ(discovery_running(d), 0);
	uv_timer_init(&loop, &t);
	uv_timer_start(&t, on_stop_timer, 100, 0);
	uv_run(&loop, UV_RUN_DEFAULT); /* 100 ms: the retry timer keeps the loop alive */
	ASSERT_EQ(discovery_running(d), 0);
	ASSERT_EQ(found, 0);
	discovery_stop(d);
	discovery_stop(NULL);
	ASSERT_EQ(discovery_running(NULL), 0);
	ASSERT_EQ(uv_run(&loop, UV_RUN_DEFAULT), 0);
	ASSERT_EQ(uv_loop_close(&loop), 0);
}

TEST_LIST_BEGIN
TEST_ENTRY(watch_pipe)
TEST_ENTRY(two_watches_one_fd)
TEST_ENTRY(free_in_callback)
TEST_ENTRY(timeouts)
TEST_ENTRY(free_leftovers)
TEST_ENTRY(discovery_no_bus)
TEST_LIST_END
