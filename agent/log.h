/*
 * agent/log.h - the agent's log: one line per event on stderr.
 *
 * Lines read "LEVEL: message". Colour is never used; journald adds the time
 * when run as a service, and a terminal gets a short time stamp in front.
 * Only agent/ logs: proto/, crypto/ and store/ return codes instead.
 */
#ifndef SHOAL_AGENT_LOG_H
#define SHOAL_AGENT_LOG_H

enum log_level { LOG_ERROR = 0, LOG_WARN = 1, LOG_INFO = 2, LOG_DEBUG = 3 };

/* Sets the threshold; messages above it are dropped. */
void log_set_level(enum log_level level);
/* Parses "error", "warn", "info", "debug". Returns 0 or -EINVAL. */
int log_parse_level(const char *s, enum log_level *level);
enum log_level log_get_level(void);

void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * For what a remote peer can trigger (refusals, malformed input): at most 20
 * lines per message per minute; the rest are counted and the count is
 * reported with the next line that gets through.
 */
void log_peer(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...)                                                                     \
	do {                                                                               \
		if (log_get_level() >= LOG_DEBUG)                                          \
			log_msg(LOG_DEBUG, __VA_ARGS__);                                   \
	} while (0)

#endif
