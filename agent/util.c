/*
 * agent/util.c - small shared helpers.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "agent/util.h"

void
strbuf_init(struct strbuf *sb)
{
	memset(sb, 0, sizeof(*sb));
}

void
strbuf_release(struct strbuf *sb)
{
	free(sb->buf);
	memset(sb, 0, sizeof(*sb));
}

static int
strbuf_grow(struct strbuf *sb, size_t n)
{
	if (sb->oom)
		return -1;
	if (sb->len + n + 1 <= sb->cap)
		return 0;
	size_t cap = sb->cap ? sb->cap : 256;
	while (cap < sb->len + n + 1)
		cap *= 2;
	char *nb = realloc(sb->buf, cap);
	if (!nb) {
		sb->oom = 1;
		return -1;
	}
	sb->buf = nb;
	sb->cap = cap;
	return 0;
}

void
strbuf_add(struct strbuf *sb, const void *p, size_t n)
{
	if (strbuf_grow(sb, n) != 0)
		return;
	memcpy(sb->buf + sb->len, p, n);
	sb->len += n;
	sb->buf[sb->len] = '\0';
}

void
strbuf_addf(struct strbuf *sb, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0 || strbuf_grow(sb, (size_t)n) != 0)
		return;
	va_start(ap, fmt);
	vsnprintf(sb->buf + sb->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	sb->len += (size_t)n;
}

int
write_file_atomic(const char *path, const void *data, size_t len, unsigned mode)
{
	char tmp[PATH_MAX];
	const char *p = data;
	int fd, rc = 0;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp-%ld", path, (long)getpid()) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
	if (fd < 0)
		return -errno;
	while (len > 0) {
		ssize_t w = write(fd, p, len);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			rc = -errno;
			goto fail;
		}
		p += w;
		len -= (size_t)w;
	}
	if (fchmod(fd, mode) != 0 || fsync(fd) != 0) {
		rc = -errno;
		goto fail;
	}
	if (close(fd) != 0) {
		fd = -1;
		rc = -errno;
		goto fail;
	}
	fd = -1;
	if (rename(tmp, path) != 0) {
		rc = -errno;
		goto fail;
	}
	return 0;
fail:
	if (fd >= 0)
		close(fd);
	unlink(tmp);
	return rc;
}

int
mkdir_p(const char *path, unsigned mode)
{
	char buf[PATH_MAX];
	size_t n = strlen(path);

	if (n == 0 || n >= sizeof(buf))
		return -ENAMETOOLONG;
	memcpy(buf, path, n + 1);
	for (size_t i = 1; i <= n; i++) {
		if (buf[i] == '/' || buf[i] == '\0') {
			char c = buf[i];
			buf[i] = '\0';
			if (mkdir(buf, mode) != 0 && errno != EEXIST)
				return -errno;
			buf[i] = c;
		}
	}
	struct stat st;
	if (stat(path, &st) != 0)
		return -errno;
	return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}

char *
path_join(const char *a, const char *b)
{
	size_t na = strlen(a), nb = strlen(b);
	char *r = malloc(na + nb + 2);
	if (!r)
		return NULL;
	memcpy(r, a, na);
	size_t o = na;
	if (o == 0 || r[o - 1] != '/')
		r[o++] = '/';
	memcpy(r + o, b, nb + 1);
	return r;
}

uint64_t
now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t
wall_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void
hex_encode(const unsigned char *in, size_t n, char *out)
{
	static const char d[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = d[in[i] >> 4];
		out[2 * i + 1] = d[in[i] & 15];
	}
	out[2 * n] = '\0';
}

void
fmt_bytes(uint64_t n, char *out, size_t len)
{
	static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
	double v = (double)n;
	int u = 0;
	while (v >= 1024 && u < 4) {
		v /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(out, len, "%llu B", (unsigned long long)n);
	else
		snprintf(out, len, "%.1f %s", v, units[u]);
}

int
parse_duration(const char *s, uint64_t *secs)
{
	char *end;
	unsigned long long v, mul = 1;

	if (!s || *s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0)
		return -1;
	switch (*end) {
	case 's': case '\0': break;
	case 'm': mul = 60; break;
	case 'h': mul = 3600; break;
	case 'd': mul = 86400; break;
	default: return -1;
	}
	if (*end && end[1])
		return -1;
	if (v > UINT64_MAX / mul)
		return -1;
	*secs = v * mul;
	return 0;
}

int
bytes_replace(char **dst, size_t *dst_len, const void *p, size_t len)
{
	char *a = malloc(len ? len : 1);

	if (!a)
		return -ENOMEM;
	memcpy(a, p, len);
	free(*dst);
	*dst = a;
	*dst_len = len;
	return 0;
}

/* ---- strmap ---- */

struct strmap_ent {
	struct strmap_ent *next;
	uint64_t hash, val;
	size_t len;
	char key[];
};

static uint64_t
strmap_hash(const char *k, size_t len)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a */
	for (size_t i = 0; i < len; i++)
		h = (h ^ (unsigned char)k[i]) * 1099511628211ull;
	return h ^ (h >> 29);
}

static struct strmap_ent **
strmap_slot(const struct strmap *m, const char *k, size_t len, uint64_t h)
{
	struct strmap_ent **pp = &m->b[h & (m->nb - 1)];
	while (*pp && !((*pp)->hash == h && (*pp)->len == len && memcmp((*pp)->key, k, len) == 0))
		pp = &(*pp)->next;
	return pp;
}

int
strmap_put(struct strmap *m, const char *k, size_t len, uint64_t val)
{
	uint64_t h = strmap_hash(k, len);
	struct strmap_ent **pp, *e;

	if (m->n >= m->nb) {
		size_t nb = m->nb ? 2 * m->nb : 64;
		struct strmap_ent **b = calloc(nb, sizeof(*b));
		if (!b)
			return -ENOMEM;
		for (size_t i = 0; i < m->nb; i++) {
			while ((e = m->b[i])) {
				m->b[i] = e->next;
				e->next = b[e->hash & (nb - 1)];
				b[e->hash & (nb - 1)] = e;
			}
		}
		free(m->b);
		m->b = b;
		m->nb = nb;
	}
	pp = strmap_slot(m, k, len, h);
	if (*pp) {
		(*pp)->val = val;
		return 0;
	}
	e = malloc(sizeof(*e) + len);
	if (!e)
		return -ENOMEM;
	e->next = NULL;
	e->hash = h;
	e->val = val;
	e->len = len;
	memcpy(e->key, k, len);
	*pp = e;
	m->n++;
	return 0;
}

int
strmap_get(const struct strmap *m, const char *k, size_t len, uint64_t *val)
{
	struct strmap_ent *e;

	if (!m->n)
		return 0;
	e = *strmap_slot(m, k, len, strmap_hash(k, len));
	if (!e)
		return 0;
	if (val)
		*val = e->val;
	return 1;
}

int
strmap_del(struct strmap *m, const char *k, size_t len)
{
	struct strmap_ent **pp, *e;

	if (!m->n)
		return 0;
	pp = strmap_slot(m, k, len, strmap_hash(k, len));
	if (!(e = *pp))
		return 0;
	*pp = e->next;
	free(e);
	m->n--;
	return 1;
}

void
strmap_prune(struct strmap *m, int (*drop)(uint64_t val, void *arg), void *arg)
{
	for (size_t i = 0; i < m->nb && m->n; i++) {
		for (struct strmap_ent **pp = &m->b[i]; *pp;) {
			struct strmap_ent *e = *pp;
			if (drop(e->val, arg)) {
				*pp = e->next;
				free(e);
				m->n--;
			} else {
				pp = &e->next;
			}
		}
	}
}

int
strmap_each(const struct strmap *m, int (*fn)(const char *k, size_t len, uint64_t val, void *arg),
	    void *arg)
{
	for (size_t i = 0; i < m->nb && m->n; i++)
		for (const struct strmap_ent *e = m->b[i]; e; e = e->next) {
			int rc = fn(e->key, e->len, e->val, arg);
			if (rc != 0)
				return rc;
		}
	return 0;
}

void
strmap_clear(struct strmap *m)
{
	for (size_t i = 0; i < m->nb; i++) {
		struct strmap_ent *e;
		while ((e = m->b[i])) {
			m->b[i] = e->next;
			free(e);
		}
	}
	free(m->b);
	m->b = NULL;
	m->n = m->nb = 0;
}
