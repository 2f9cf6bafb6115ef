/*
 * proto/reader.c - a bounded msgpack reader for untrusted bytes.
 *
 * Only the msgpack forms shoal's messages use are read as values (arrays,
 * integers, str, bin); proto__rd_skip() walks over any valid object so that
 * later versions can append fields. Lengths are checked against the bytes
 * left before anything looks past them.
 */
#include "proto/internal.h"

/* Reads an n-byte big-endian unsigned integer; the caller checked the bytes. */
static uint64_t
be(const uint8_t *p, unsigned n)
{
	uint64_t v = 0;

	for (unsigned i = 0; i < n; i++)
		v = v << 8 | p[i];
	return v;
}

/*
 * Reads a length that follows the type byte in n (1, 2 or 4) bytes, after
 * the type byte already consumed.
 */
static int
rd_len(struct proto_reader *r, unsigned n, uint32_t *len)
{
	if (proto__rd_left(r) < n)
		return PROTO_EMALFORMED;
	*len = (uint32_t)be(r->p, n);
	r->p += n;
	return 0;
}

int
proto__rd_array(struct proto_reader *r, uint32_t *n, uint32_t max)
{
	uint8_t t;
	int rc;

	if (r->p == r->end)
		return PROTO_EMALFORMED;
	t = *r->p;
	if (t >= 0x90 && t <= 0x9f) {
		r->p++;
		*n = t & 0x0f;
	} else if (t == 0xdc || t == 0xdd) {
		r->p++;
		rc = rd_len(r, t == 0xdc ? 2 : 4, n);
		if (rc < 0)
			return rc;
	} else {
		return PROTO_ETYPE;
	}
	if (*n > max)
		return PROTO_ETOOBIG;
	if (*n > proto__rd_left(r))
		return PROTO_EMALFORMED;
	return 0;
}

/*
 * Reads any integer as a sign flag and magnitude-free 64-bit pattern:
 * *neg is set when the value is negative, *v holds it as uint64_t (two's
 * complement for negative values).
 */
static int
rd_integer(struct proto_reader *r, uint64_t *v, int *neg)
{
	static const uint8_t width[8] = {1, 2, 4, 8, 1, 2, 4, 8};
	uint8_t t;
	unsigned n;

	if (r->p == r->end)
		return PROTO_EMALFORMED;
	t = *r->p;
	if (t <= 0x7f) {
		r->p++;
		*v = t;
		*neg = 0;
		return 0;
	}
	if (t >= 0xe0) {
		r->p++;
		*v = (uint64_t)(int64_t)(int8_t)t;
		*neg = 1;
		return 0;
	}
	if (t < 0xcc || t > 0xd3)
		return PROTO_ETYPE;
	n = width[t - 0xcc];
	if (proto__rd_left(r) < 1 + n)
		return PROTO_EMALFORMED;
	*v = be(r->p + 1, n);
	r->p += 1 + n;
	*neg = 0;
	if (t >= 0xd0 && n < 8 && (*v >> (8 * n - 1)) != 0) {
		/* A negative intN: sign-extend to 64 bits. */
		*v |= ~(uint64_t)0 << (8 * n);
		*neg = 1;
	} else if (t == 0xd3 && (*v >> 63) != 0) {
		*neg = 1;
	}
	return 0;
}

int
proto__rd_uint(struct proto_reader *r, uint64_t *v)
{
	int neg, rc;

	rc = rd_integer(r, v, &neg);
	if (rc < 0)
		return rc;
	return neg ? PROTO_EMALFORMED : 0;
}

int
proto__rd_int(struct proto_reader *r, int64_t *v)
{
	uint64_t u;
	int neg, rc;

	rc = rd_integer(r, &u, &neg);
	if (rc < 0)
		return rc;
	if (!neg && u > INT64_MAX)
		return PROTO_EMALFORMED;
	*v = (int64_t)u;
	return 0;
}

/* Reads a str (want_str) or bin header and its body. */
static int
rd_bytes(struct proto_reader *r, struct proto_bytes *s, size_t max, int want_str)
{
	uint32_t len;
	uint8_t t;
	int rc;

	if (r->p == r->end)
		return PROTO_EMALFORMED;
	t = *r->p;
	if (want_str && t >= 0xa0 && t <= 0xbf) {
		r->p++;
		len = t & 0x1f;
	} else if (want_str && t >= 0xd9 && t <= 0xdb) {
		r->p++;
		rc = rd_len(r, 1u << (t - 0xd9), &len);
		if (rc < 0)
			return rc;
	} else if (!want_str && t >= 0xc4 && t <= 0xc6) {
		r->p++;
		rc = rd_len(r, 1u << (t - 0xc4), &len);
		if (rc < 0)
			return rc;
	} else {
		return PROTO_ETYPE;
	}
	if (len > max)
		return PROTO_ETOOBIG;
	if (len > proto__rd_left(r))
		return PROTO_EMALFORMED;
	s->p = r->p;
	s->len = len;
	r->p += len;
	return 0;
}

int
proto__rd_str(struct proto_reader *r, struct proto_bytes *s, size_t max)
{
	return rd_bytes(r, s, max, 1);
}

int
proto__rd_bin(struct proto_reader *r, struct proto_bytes *s, size_t max)
{
	return rd_bytes(r, s, max, 0);
}

/* Advances over n body bytes that must all be present. */
static int
rd_advance(struct proto_reader *r, uint64_t n)
{
	if (n > proto__rd_left(r))
		return PROTO_EMALFORMED;
	r->p += n;
	return 0;
}

int
proto__rd_skip(struct proto_reader *r, unsigned depth)
{
	uint64_t nobj;
	uint32_t len;
	uint8_t t;
	int rc;

	if (r->p == r->end)
		return PROTO_EMALFORMED;
	t = *r->p++;
	if (t <= 0x7f || t >= 0xe0 || t == 0xc0 || t == 0xc2 || t == 0xc3)
		return 0;
	if (t >= 0xa0 && t <= 0xbf)
		return rd_advance(r, t & 0x1f);
	switch (t) {
	case 0xc1:
		return PROTO_EMALFORMED;
	case 0xcc:
	case 0xd0:
		return rd_advance(r, 1);
	case 0xcd:
	case 0xd1:
		return rd_advance(r, 2);
	case 0xce:
	case 0xd2:
	case 0xca:
		return rd_advance(r, 4);
	case 0xcf:
	case 0xd3:
	case 0xcb:
		return rd_advance(r, 8);
	case 0xd4:
		return rd_advance(r, 1 + 1);
	case 0xd5:
		return rd_advance(r, 1 + 2);
	case 0xd6:
		return rd_advance(r, 1 + 4);
	case 0xd7:
		return rd_advance(r, 1 + 8);
	case 0xd8:
		return rd_advance(r, 1 + 16);
	case 0xc4:
	case 0xd9:
		rc = rd_len(r, 1, &len);
		return rc < 0 ? rc : rd_advance(r, len);
	case 0xc5:
	case 0xda:
		rc = rd_len(r, 2, &len);
		return rc < 0 ? rc : rd_advance(r, len);
	case 0xc6:
	case 0xdb:
		rc = rd_len(r, 4, &len);
		return rc < 0 ? rc : rd_advance(r, len);
	case 0xc7:
	case 0xc8:
	case 0xc9:
		/* ext: length, one type byte, then the data */
		rc = rd_len(r, 1u << (t - 0xc7), &len);
		return rc < 0 ? rc : rd_advance(r, (uint64_t)len + 1);
	default:
		break;
	}

	/* What is left is a container: fixarray, fixmap, array16/32, map16/32. */
	if (depth > PROTO_MAX_DEPTH)
		return PROTO_EDEPTH;
	if (t >= 0x90 && t <= 0x9f) {
		nobj = t & 0x0f;
	} else if (t >= 0x80 && t <= 0x8f) {
		nobj = 2u * (t & 0x0f);
	} else {
		rc = rd_len(r, (t == 0xdc || t == 0xde) ? 2 : 4, &len);
		if (rc < 0)
			return rc;
		nobj = (t == 0xde || t == 0xdf) ? 2 * (uint64_t)len : len;
	}
	/* Every object takes at least one byte: refuse a count the bytes cannot hold. */
	if (nobj > proto__rd_left(r))
		return PROTO_EMALFORMED;
	for (uint64_t i = 0; i < nobj; i++) {
		rc = proto__rd_skip(r, depth + 1);
		if (rc < 0)
			return rc;
	}
	return 0;
}
