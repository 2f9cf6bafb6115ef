/*
 * agent/util.h - small helpers the agent's files share: a string builder,
 * atomic file writes, directory creation, time.
 */
#ifndef SHOAL_AGENT_UTIL_H
#define SHOAL_AGENT_UTIL_H

#include <stddef.h>
#include <stdint.h>

struct strbuf {
	char *buf; /* always NUL-terminated once anything was added */
	size_t len, cap;
	int oom;
};

void strbuf_init(struct strbuf *sb);
void strbuf_release(struct strbuf *sb);
void strbuf_add(struct strbuf *sb, const void *p, size_t n);
void strbuf_addf(struct strbuf *sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Writes data to path via a temporary file, fsync and rename. Returns 0 or -errno. */
int write_file_atomic(const char *path, const void *data, size_t len, unsigned mode);
/* Creates path and its parents with mode. Returns 0 or -errno. */
int mkdir_p(const char *path, unsigned mode);
/* Joins a and b with one '/'. Returns malloc'd string or NULL. */
char *path_join(const char *a, const char *b);

/* Monotonic milliseconds and wall-clock nanoseconds. */
uint64_t now_ms(void);
uint64_t wall_ns(void);

void hex_encode(const unsigned char *in, size_t n, char *out);

/*
 * Parses a duration: a number of seconds, or a number with s, m, h or d
 * ("90s", "15m", "24h", "30d"). Returns 0 or -1 (malformed, or too large).
 */
int parse_duration(const char *s, uint64_t *secs);

/*
 * A hash map from byte strings to a uint64_t, chained. Zero-initialised is
 * empty. strmap_put() adds or replaces (0, or -ENOMEM); strmap_get() finds
 * (1 and *val, or 0); strmap_del() removes (1 if it was there);
 * strmap_prune() removes the entries for which drop(val, arg) is true;
 * strmap_each() calls fn on every entry, in no order, until fn returns
 * non-zero (returned); fn must not change the map.
 */
struct strmap_ent;
struct strmap {
	struct strmap_ent **b;
	size_t n, nb;
};
int strmap_put(struct strmap *m, const char *k, size_t len, uint64_t val);
int strmap_get(const struct strmap *m, const char *k, size_t len, uint64_t *val);
int strmap_del(struct strmap *m, const char *k, size_t len);
void strmap_prune(struct strmap *m, int (*drop)(uint64_t val, void *arg), void *arg);
int strmap_each(const struct strmap *m,
		int (*fn)(const char *k, size_t len, uint64_t val, void *arg), void *arg);
void strmap_clear(struct strmap *m);

/* Replaces *dst with a malloc'd copy of p[0..len) (not terminated). Returns 0 or -ENOMEM. */
int bytes_replace(char **dst, size_t *dst_len, const void *p, size_t len);

/* Formats a byte count like "1.5 MiB" into out. */
void fmt_bytes(uint64_t n, char *out, size_t len);

#endif
