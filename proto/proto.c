/*
 * proto/proto.c - error strings, frames, fragment reassembly, path checks
 * and the growable output buffer.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* strerrordesc_np */
#endif
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "proto/proto.h"

const char *
proto_strerror(int rc)
{
	switch (rc) {
	case 0:
		return "success";
	case PROTO_EMALFORMED:
		return "malformed message";
	case PROTO_ETOOBIG:
		return "length or count over its limit";
	case PROTO_ETYPE:
		return "field of the wrong type";
	case PROTO_EDEPTH:
		return "nesting too deep";
	case PROTO_EPATH:
		return "invalid path";
	case PROTO_ENOMEM:
		return "out of memory";
	case PROTO_EUNKNOWN:
		return "unknown message type";
	case -1007: /* PROTO_ECHECKSUM (proto/invite.h) */
		return "the invite code is damaged (its checksum does not match): copy it again";
	case -1008: /* PROTO_EPREFIX */
		return "not an invite code (it should start with SHOAL1-)";
	}
	if (rc < 0 && rc > -4096) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 32)
		/* Unlike strerror(), a static string, or NULL for an unknown errno. */
		const char *s = strerrordesc_np(-rc);

		return s ? s : "unknown system error";
#else
		return strerror(-rc);
#endif
	}
	return "unknown error";
}

/* ---- frames ---- */

int
proto_frame_parse(const uint8_t *buf, size_t len, const uint8_t **body, size_t *body_len)
{
	size_t n;

	if (len < PROTO_FRAME_HDR)
		return 0;
	n = (size_t)buf[0] << 8 | buf[1];
	if (n == 0)
		return PROTO_EMALFORMED;
	if (len - PROTO_FRAME_HDR < n)
		return 0;
	*body = buf + PROTO_FRAME_HDR;
	*body_len = n;
	return (int)(PROTO_FRAME_HDR + n);
}

void
proto_frame_header(uint8_t hdr[PROTO_FRAME_HDR], size_t body_len)
{
	assert(body_len >= 1 && body_len <= PROTO_FRAME_MAX);
	hdr[0] = (uint8_t)(body_len >> 8);
	hdr[1] = (uint8_t)body_len;
}

/* ---- fragments ---- */

/*
 * A buffer larger than this is freed once its message has been handed out,
 * so that an idle connection does not keep a large message's memory.
 */
#define ASSEMBLER_KEEP (256u * 1024)

void
proto_assembler_init(struct proto_assembler *a, size_t max)
{
	a->buf = NULL;
	a->len = 0;
	a->cap = 0;
	a->max = max;
}

void
proto_assembler_release(struct proto_assembler *a)
{
	free(a->buf);
	a->buf = NULL;
	a->len = 0;
	a->cap = 0;
}

int
proto_assembler_push(struct proto_assembler *a, const uint8_t *pt, size_t len, const uint8_t **msg,
		     size_t *msg_len)
{
	const uint8_t *data;
	size_t n, need, cap;
	uint8_t flag;
	uint8_t *p;

	/* The previous message, if any, has been consumed: drop a large buffer. */
	if (a->len == 0 && a->cap > ASSEMBLER_KEEP) {
		free(a->buf);
		a->buf = NULL;
		a->cap = 0;
	}
	/* A fragment is a flag byte and at least one byte of data. */
	if (len < 2)
		goto malformed;
	flag = pt[0];
	if (flag != PROTO_FRAG_MORE && flag != PROTO_FRAG_LAST)
		goto malformed;
	data = pt + 1;
	n = len - 1;

	if (n > a->max || a->len > a->max - n) {
		a->len = 0;
		return PROTO_ETOOBIG;
	}
	if (a->len == 0 && flag == PROTO_FRAG_LAST) {
		/* A single-fragment message: hand out the caller's bytes. */
		*msg = data;
		*msg_len = n;
		return 1;
	}

	need = a->len + n;
	if (need > a->cap) {
		/* Double, but never past max nor past twice the bytes received. */
		cap = a->cap * 2;
		if (cap < need)
			cap = need;
		if (cap > a->max)
			cap = a->max;
		p = realloc(a->buf, cap);
		if (p == NULL) {
			a->len = 0;
			return PROTO_ENOMEM;
		}
		a->buf = p;
		a->cap = cap;
	}
	memcpy(a->buf + a->len, data, n);
	a->len = need;
	if (flag == PROTO_FRAG_MORE)
		return 0;
	/* The bytes stay in a->buf until the next call. */
	*msg = a->buf;
	*msg_len = a->len;
	a->len = 0;
	return 1;

malformed:
	a->len = 0;
	return PROTO_EMALFORMED;
}

/* ---- paths ---- */

/*
 * Returns the length of the valid UTF-8 sequence starting at p (at most n
 * bytes available), or 0 when it is not one: truncated, a bad continuation
 * byte, an overlong form, a surrogate or a code point past U+10FFFF.
 */
static size_t
utf8_seq(const uint8_t *p, size_t n)
{
	uint32_t cp;
	size_t len;

	if (p[0] < 0x80)
		return 1;
	if (p[0] >= 0xc2 && p[0] <= 0xdf) {
		len = 2;
		cp = p[0] & 0x1f;
	} else if (p[0] >= 0xe0 && p[0] <= 0xef) {
		len = 3;
		cp = p[0] & 0x0f;
	} else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
		len = 4;
		cp = p[0] & 0x07;
	} else {
		return 0; /* a continuation byte, 0xc0/0xc1 (overlong) or 0xf5+ */
	}
	if (n < len)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (p[i] & 0x3f);
	}
	if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000))
		return 0; /* overlong */
	if (cp >= 0xd800 && cp <= 0xdfff)
		return 0; /* a UTF-16 surrogate */
	if (cp > 0x10ffff)
		return 0;
	return len;
}

/* Checks one component p[0..len). */
static int
component_check(const uint8_t *p, size_t len)
{
	static const char reserved[] = ".shoal";
	size_t i, k;

	if (len == 0 || len > PROTO_NAME_MAX)
		return PROTO_EPATH;
	if ((len == 1 && p[0] == '.') || (len == 2 && p[0] == '.' && p[1] == '.'))
		return PROTO_EPATH;
	if (len >= sizeof(reserved) - 1 && memcmp(p, reserved, sizeof(reserved) - 1) == 0)
		return PROTO_EPATH;
	for (i = 0; i < len; i += k) {
		if (p[i] < 0x20 || p[i] == 0x7f)
			return PROTO_EPATH; /* NUL and control characters */
		k = utf8_seq(p + i, len - i);
		if (k == 0)
			return PROTO_EPATH;
	}
	return 0;
}

int
proto_path_check(const uint8_t *p, size_t len)
{
	size_t start, i;
	int rc;

	if (len == 0 || len > PROTO_PATH_MAX)
		return PROTO_EPATH;
	start = 0;
	for (i = 0; i <= len; i++) {
		if (i < len && p[i] != '/')
			continue;
		rc = component_check(p + start, i - start);
		if (rc < 0)
			return rc;
		start = i + 1;
	}
	return 0;
}

/* ---- output buffer ---- */

void
proto_buf_init(struct proto_buf *b)
{
	b->p = NULL;
	b->len = 0;
	b->cap = 0;
}

void
proto_buf_release(struct proto_buf *b)
{
	free(b->p);
	proto_buf_init(b);
}

void
proto_buf_reset(struct proto_buf *b)
{
	b->len = 0;
}

int
proto_buf_reserve(struct proto_buf *b, size_t n)
{
	size_t cap;
	uint8_t *p;

	if (n <= b->cap - b->len)
		return 0;
	if (n > SIZE_MAX / 2 - b->len)
		return PROTO_ENOMEM;
	cap = b->cap ? b->cap * 2 : 256;
	while (cap < b->len + n)
		cap *= 2;
	p = realloc(b->p, cap);
	if (p == NULL)
		return PROTO_ENOMEM;
	b->p = p;
	b->cap = cap;
	return 0;
}

int
proto_buf_append(struct proto_buf *b, const void *p, size_t n)
{
	int rc;

	if (n == 0)
		return 0;
	rc = proto_buf_reserve(b, n);
	if (rc < 0)
		return rc;
	memcpy(b->p + b->len, p, n);
	b->len += n;
	return 0;
}
