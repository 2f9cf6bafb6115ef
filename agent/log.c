/*
 * agent/log.c - stderr logging with levels.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <errno.h>
#include <time.h>
#include <unistd.h>

#include "agent/log.h"

static enum log_level threshold = LOG_INFO;
static int tty = -1;

void
log_set_level(enum log_level level)
{
	threshold = level;
}

enum log_level
log_get_level(void)
{
	return threshold;
}

int
log_parse_level(const char *s, enum log_level *level)
{
	static const char *names[] = {"error", "warn", "info", "debug"};
	for (int i = 0; i < 4; i++) {
		if (strcmp(s, names[i]) == 0) {
			*level = (enum log_level)i;
			return 0;
		}
	}
	if (strcmp(s, "warning") == 0) {
		*level = LOG_WARN;
		return 0;
	}
	return -EINVAL;
}

static void log_vmsg(enum log_level level, const char *fmt, va_list ap);

#define PEER_WINDOW_S 60
#define PEER_BURST 20
#define PEER_SLOTS 32

/* Per message text (by its format string): lines let through and dropped this window. */
static struct {
	const char *fmt;
	time_t window;
	unsigned sent, dropped;
} peer_slots[PEER_SLOTS];

void
log_peer(enum log_level level, const char *fmt, ...)
{
	time_t now = time(NULL);
	unsigned i, victim = 0;
	va_list ap;

	if (level > threshold)
		return;
	for (i = 0; i < PEER_SLOTS; i++) {
		if (peer_slots[i].fmt == fmt)
			break;
		if (peer_slots[i].window < peer_slots[victim].window)
			victim = i;
	}
	if (i == PEER_SLOTS) {
		i = victim;
		peer_slots[i].fmt = fmt;
		peer_slots[i].window = 0;
	}
	if (now - peer_slots[i].window >= PEER_WINDOW_S) {
		if (peer_slots[i].dropped)
			log_msg(level, "(%u more like the next line in the last minute were not logged)",
				peer_slots[i].dropped);
		peer_slots[i].window = now;
		peer_slots[i].sent = 0;
		peer_slots[i].dropped = 0;
	}
	if (peer_slots[i].sent >= PEER_BURST) {
		peer_slots[i].dropped++;
		return;
	}
	peer_slots[i].sent++;
	va_start(ap, fmt);
	log_vmsg(level, fmt, ap);
	va_end(ap);
}

void
log_msg(enum log_level level, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_vmsg(level, fmt, ap);
	va_end(ap);
}

static void
log_vmsg(enum log_level level, const char *fmt, va_list ap)
{
	static const char *tags[] = {"ERROR", "WARN", "INFO", "DEBUG"};
	char line[2048];
	size_t n = 0;

	if (level > threshold)
		return;
	if (tty < 0)
		tty = isatty(STDERR_FILENO);
	if (tty) {
		struct timespec ts;
		struct tm tm;
		clock_gettime(CLOCK_REALTIME, &ts);
		localtime_r(&ts.tv_sec, &tm);
		n = strftime(line, sizeof(line), "%H:%M:%S ", &tm);
	}
	n += (size_t)snprintf(line + n, sizeof(line) - n, "%s: ", tags[level]);
	if (n < sizeof(line))
		n += (size_t)vsnprintf(line + n, sizeof(line) - n, fmt, ap);
	if (n >= sizeof(line) - 1)
		n = sizeof(line) - 2;
	/* A peer-supplied string must not forge a second log line. */
	for (size_t i = 0; i < n; i++)
		if (line[i] == '\n' || line[i] == '\r')
			line[i] = ' ';
	line[n++] = '\n';
	(void)!write(STDERR_FILENO, line, n);
}
