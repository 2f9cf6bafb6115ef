/*
 * tests/unit/discovery_try.c - a hand-run tester for agent/discovery.c against
 * a real avahi-daemon (tests/e2e/mdns_lab.sh gives one per emulated host).
 * Not registered with ctest.
 *
 *   discovery_try [-v] [-S] [-e PEER_ID]... [-t SECONDS] [-l LINGER_MS] ID NAME PORT
 *
 * Publishes ID/NAME/PORT and prints one line per on_found call:
 *   FOUND <ms since start> <id> <addr>
 * and a line whenever discovery_running() changes:
 *   RUNNING <ms> 0|1
 * With -e it exits 0 once every PEER_ID was found (after lingering LINGER_MS,
 * default 2000, so the peers can find us too), 1 when -t SECONDS (default 30)
 * pass first. Without -e it runs for SECONDS and exits 0. -S stops at once,
 * from inside on_found, when the last expected peer is found (discovery_stop()
 * inside the callback). -v logs at debug level. Every handle is closed and
 * uv_loop_close() must return 0.
 *
 * Build (the library needs only log.c of the agent):
 *   cc -std=c11 -D_GNU_SOURCE -I. -Wall -Wextra -o /tmp/discovery_try \
 *      tests/unit/discovery_try.c agent/discovery.c agent/avahi_poll.c agent/log.c \
 *      $(pkg-config --cflags --libs avahi-client libuv)
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "agent/discovery.h"
#include "agent/log.h"

#define MAX_EXPECT 16

static uv_loop_t loop;
static struct discovery *disc;
static uv_timer_t deadline, linger, poll_state;
static uv_signal_t sig_int, sig_term;
static const char *expect[MAX_EXPECT];
static int found_expected[MAX_EXPECT];
static int nexpect, exit_code = 1, last_running = -1, stopping, stop_inside;
static unsigned linger_ms = 2000;
static uint64_t t0;

static unsigned long
ms_since_start(void)
{
	return (unsigned long)((uv_hrtime() - t0) / 1000000);
}

static void
stop_all(int code)
{
	if (stopping)
		return;
	stopping = 1;
	exit_code = code;
	discovery_stop(disc);
	uv_close((uv_handle_t *)&deadline, NULL);
	uv_close((uv_handle_t *)&linger, NULL);
	uv_close((uv_handle_t *)&poll_state, NULL);
	uv_close((uv_handle_t *)&sig_int, NULL);
	uv_close((uv_handle_t *)&sig_term, NULL);
}

static void
on_linger_done(uv_timer_t *t)
{
	stop_all(0);
}

static void
on_found(void *arg, const char *id, const char *addr)
{
	int all = nexpect > 0;

	printf("FOUND %lu %s %s\n", ms_since_start(), id, addr);
	fflush(stdout);
	for (int i = 0; i < nexpect; i++) {
		if (strcmp(expect[i], id) == 0)
			found_expected[i] = 1;
		all &= found_expected[i];
	}
	if (all && stop_inside)
		stop_all(0);
	else if (all && !uv_is_active((uv_handle_t *)&linger) && !stopping)
		uv_timer_start(&linger, on_linger_done, linger_ms, 0);
}

static void
on_deadline(uv_timer_t *t)
{
	if (nexpect > 0)
		fprintf(stderr, "discovery_try: timed out before every expected peer was found\n");
	stop_all(nexpect > 0 ? 1 : 0);
}

static void
on_poll_state(uv_timer_t *t)
{
	int r = discovery_running(disc);

	if (r != last_running) {
		printf("RUNNING %lu %d\n", ms_since_start(), r);
		fflush(stdout);
		last_running = r;
	}
}

static void
on_signal(uv_signal_t *s, int signum)
{
	stop_all(nexpect > 0 ? 1 : 0);
}

int
main(int argc, char **argv)
{
	double seconds = 30;
	int c, rc;

	while ((c = getopt(argc, argv, "vSe:t:l:")) != -1) {
		switch (c) {
		case 'v':
			log_set_level(LOG_DEBUG);
			break;
		case 'S':
			stop_inside = 1;
			break;
		case 'e':
			if (nexpect < MAX_EXPECT)
				expect[nexpect++] = optarg;
			break;
		case 't':
			seconds = atof(optarg);
			break;
		case 'l':
			linger_ms = (unsigned)atoi(optarg);
			break;
		default:
			goto usage;
		}
	}
	if (argc - optind != 3)
		goto usage;
	t0 = uv_hrtime();
	if (uv_loop_init(&loop) != 0)
		return 2;
	uv_timer_init(&loop, &deadline);
	uv_timer_init(&loop, &linger);
	uv_timer_init(&loop, &poll_state);
	uv_signal_init(&loop, &sig_int);
	uv_signal_init(&loop, &sig_term);
	uv_signal_start(&sig_int, on_signal, SIGINT);
	uv_signal_start(&sig_term, on_signal, SIGTERM);
	uv_timer_start(&deadline, on_deadline, (uint64_t)(seconds * 1000), 0);
	uv_timer_start(&poll_state, on_poll_state, 0, 50);
	rc = discovery_start(&loop, argv[optind], argv[optind + 1], atoi(argv[optind + 2]),
			     on_found, NULL, &disc);
	if (rc != 0) {
		fprintf(stderr, "discovery_try: discovery_start: %d\n", rc);
		stop_all(2);
	}
	uv_run(&loop, UV_RUN_DEFAULT);
	rc = uv_loop_close(&loop);
	if (rc != 0) {
		fprintf(stderr, "discovery_try: uv_loop_close: %s\n", uv_strerror(rc));
		return 3;
	}
	printf("EXIT %lu %d\n", ms_since_start(), exit_code);
	return exit_code;
usage:
	fprintf(stderr,
		"usage: discovery_try [-v] [-S] [-e PEER_ID]... [-t SECONDS] [-l LINGER_MS] "
		"ID NAME PORT\n");
	return 2;
}
