/*
 * proto/internal.h - the bounded msgpack reader shared by proto's decoders.
 * Nothing outside proto/ includes this file.
 *
 * Invariants:
 * - A reader is a cursor over bytes it does not own: r->p <= r->end always,
 *   and no function reads at or past r->end.
 * - Every read can fail and returns 0 or a negative PROTO_E* code. After a
 *   failure the cursor position is unspecified; the caller gives up.
 * - A header's length or count is checked against the bytes left before it
 *   is returned: a str or bin never claims more bytes than remain, and an
 *   array of n elements never claims more than one byte per element. Callers
 *   that know a larger minimum per element check n against that themselves.
 * - Nothing here allocates.
 */
#ifndef SHOAL_PROTO_INTERNAL_H
#define SHOAL_PROTO_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "proto/msg.h"

struct proto_reader {
	const uint8_t *p;   /* the next byte to read */
	const uint8_t *end; /* one past the last byte */
};

static inline void
proto__rd_init(struct proto_reader *r, const uint8_t *buf, size_t len)
{
	r->p = buf;
	r->end = buf + len;
}

static inline size_t
proto__rd_left(const struct proto_reader *r)
{
	return (size_t)(r->end - r->p);
}

/*
 * Reads an array header. Returns 0 and the element count, PROTO_ETYPE when
 * the next object is not an array, PROTO_ETOOBIG when the count exceeds max,
 * or PROTO_EMALFORMED when the input ends or the count exceeds the bytes left.
 */
int proto__rd_array(struct proto_reader *r, uint32_t *n, uint32_t max);

/*
 * Reads an integer that must not be negative. Returns 0, PROTO_ETYPE when
 * the next object is not an integer, or PROTO_EMALFORMED when the input ends
 * or the value is negative.
 */
int proto__rd_uint(struct proto_reader *r, uint64_t *v);

/* Reads a signed integer that fits int64_t; errors as proto__rd_uint(). */
int proto__rd_int(struct proto_reader *r, int64_t *v);

/*
 * Reads a str (proto__rd_str) or a bin (proto__rd_bin) of at most max bytes.
 * On success s points into the reader's buffer. Returns 0, PROTO_ETYPE,
 * PROTO_ETOOBIG when the length exceeds max, or PROTO_EMALFORMED when fewer
 * bytes remain than the length claims.
 */
int proto__rd_str(struct proto_reader *r, struct proto_bytes *s, size_t max);
int proto__rd_bin(struct proto_reader *r, struct proto_bytes *s, size_t max);

/*
 * Skips one object of any type. depth is the nesting level the object sits
 * at (the top-level object is at 1); containers deeper than PROTO_MAX_DEPTH
 * give PROTO_EDEPTH. Returns 0, PROTO_EDEPTH or PROTO_EMALFORMED (input ends,
 * or the reserved byte 0xc1).
 */
int proto__rd_skip(struct proto_reader *r, unsigned depth);

#endif
