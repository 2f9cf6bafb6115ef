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

void
log_msg(enum log_level level, const char *fmt, ...)
{
	static const char *tags[] = {"ERROR", "WARN", "INFO", "DEBUG"};
	char line[2048];
	size_t n = 0;
	va_list ap;

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
	va_start(ap, fmt);
	if (n < sizeof(line))
		n += (size_t)vsnprintf(line + n, sizeof(line) - n, fmt, ap);
	va_end(ap);
	if (n >= sizeof(line) - 1)
		n = sizeof(line) - 2;
	/* A peer-supplied string must not forge a second log line. */
	for (size_t i = 0; i < n; i++)
		if (line[i] == '\n' || line[i] == '\r')
			line[i] = ' ';
	line[n++] = '\n';
	(void)!write(STDERR_FILENO, line, n);
}
