/*
 * proto/proto.h - the wire protocol: framing, fragments, messages.
 *
 * Invariants:
 * - No I/O, no logging, no event loop: functions take bytes and give bytes.
 * - Every count and length read from a peer is checked against the bytes
 *   actually present before anything is allocated; nesting is capped; every
 *   field's msgpack type is checked. Bad input is PROTO_EMALFORMED (or a more
 *   precise code), never a crash and never an allocation a peer can inflate.
 * - Decoded messages are zero-copy: their byte fields point into the buffer
 *   that was decoded, which must outlive the message.
 * - Paths from peers pass proto_path_check() before a message decodes.
 *
 * The format is specified in docs/protocol.md.
 */
#ifndef SHOAL_PROTO_PROTO_H
#define SHOAL_PROTO_PROTO_H

#include <stddef.h>
#include <stdint.h>

enum {
	PROTO_EMALFORMED = -1000, /* not valid msgpack, or not the expected shape */
	PROTO_ETOOBIG = -1001,    /* a length or count over its limit */
	PROTO_ETYPE = -1002,      /* a field of the wrong msgpack type */
	PROTO_EDEPTH = -1003,     /* nesting deeper than PROTO_MAX_DEPTH */
	PROTO_EPATH = -1004,      /* a path that is not a clean relative path */
	PROTO_ENOMEM = -1005,
	PROTO_EUNKNOWN = -1006,   /* unknown message type */
};

/* Returns a static English description of a PROTO_E* code or a -errno. */
const char *proto_strerror(int rc);

/* ---- limits ---- */
#define PROTO_FRAME_HDR 2
#define PROTO_FRAME_MAX 65535                       /* bytes after the header (Noise's cap) */
#define PROTO_TAG 16                                /* AEAD tag inside every frame */
#define PROTO_FRAGMENT_MAX (PROTO_FRAME_MAX - PROTO_TAG) /* plaintext per frame, flag included */
#define PROTO_MSG_MAX (32u * 1024 * 1024)           /* a reassembled message */
#define PROTO_MAX_DEPTH 8
#define PROTO_PATH_MAX 4095
#define PROTO_NAME_MAX 255                          /* one path component */
#define PROTO_STR_MAX 1024                          /* ids, labels, names, reasons */
#define PROTO_MAX_VERSION 256                       /* version vector entries */
#define PROTO_MAX_BLOCKS (1u << 22)
#define PROTO_MAX_FILES 100000                      /* files in one index message */
#define PROTO_MAX_FOLDERS 1024
#define PROTO_BLOCK_MAX (4u * 1024 * 1024)          /* largest block a request may ask */

/* ---- frames: [u16 big-endian length][length bytes] ---- */

/*
 * Looks for one whole frame at the start of buf. Returns the bytes the frame
 * occupies (header and body) when it is all there, 0 when more bytes are
 * needed, or PROTO_EMALFORMED for a zero-length frame. On success *body and
 * *body_len describe the body inside buf.
 */
int proto_frame_parse(const uint8_t *buf, size_t len, const uint8_t **body, size_t *body_len);

/* Writes the 2-byte header for a body of body_len (1..PROTO_FRAME_MAX) bytes. */
void proto_frame_header(uint8_t hdr[PROTO_FRAME_HDR], size_t body_len);

/*
 * ---- fragments: one message spans one or more frames ----
 * The plaintext of a frame is [flag][data]; flag 1 marks the last fragment
 * of a message, flag 0 one that continues in the next frame.
 */
#define PROTO_FRAG_MORE 0
#define PROTO_FRAG_LAST 1

struct proto_assembler {
	uint8_t *buf;
	size_t len, cap, max;
};

/* max is the largest message accepted (PROTO_MSG_MAX normally). */
void proto_assembler_init(struct proto_assembler *a, size_t max);
void proto_assembler_release(struct proto_assembler *a);

/*
 * Feeds one decrypted frame. Returns 1 when a message is complete (*msg and
 * *msg_len then describe it until the next call; a single-fragment message
 * points into pt without a copy), 0 when more fragments are needed,
 * PROTO_EMALFORMED (empty or bad flag), PROTO_ETOOBIG or PROTO_ENOMEM. Memory
 * grows only with bytes actually received.
 *
 * A fragment is the flag byte and at least one byte of data: a plaintext of
 * fewer than 2 bytes is PROTO_EMALFORMED. After any error the partial message
 * is dropped (the connection is expected to close). The buffer doubles as it
 * grows but holds at most max bytes and at most twice the bytes received for
 * the current message; a buffer over 256 KiB is freed on the call after its
 * message was handed out.
 */
int proto_assembler_push(struct proto_assembler *a, const uint8_t *pt, size_t len,
			 const uint8_t **msg, size_t *msg_len);

/* ---- path validation ---- */

/*
 * Returns 0 when p[0..len) is a clean relative path: non-empty, at most
 * PROTO_PATH_MAX bytes, '/'-separated components of 1..PROTO_NAME_MAX bytes,
 * none "." or "..", no leading or trailing '/', no empty component, no NUL,
 * no control character (0x01-0x1f, 0x7f), valid UTF-8, and no component
 * starting with ".shoal" (reserved for shoal's own files). Else PROTO_EPATH.
 */
int proto_path_check(const uint8_t *p, size_t len);

/* ---- growable output buffer ---- */
struct proto_buf {
	uint8_t *p;
	size_t len, cap;
};
void proto_buf_init(struct proto_buf *b);
void proto_buf_release(struct proto_buf *b);
void proto_buf_reset(struct proto_buf *b);
/* Makes room for n more bytes. Returns 0 or PROTO_ENOMEM. */
int proto_buf_reserve(struct proto_buf *b, size_t n);
int proto_buf_append(struct proto_buf *b, const void *p, size_t n);

#endif
