/*
 * tests/tools/evilpeer.c - a scripted hostile peer for the end-to-end tests.
 *
 * It speaks the real protocol (docs/protocol.md): Noise XX as the initiator
 * with the prologue "shoal/1", encrypted frames of [flag][fragment], msgpack
 * messages. After the handshake it sends a HELLO that lists the folder, reads
 * the agent's HELLO and the end of its index for that folder, then runs one
 * named scenario that sends what a hostile or broken device might, and
 * reports what the agent did:
 *
 *   result: closed [reason="..."]   the agent ended the connection (with the
 *                                   reason of its CLOSE, when one came)
 *   result: alive                   after a PING the agent kept the
 *                                   connection for 2 s
 *   result: error WHAT              the tool itself could not run the scenario
 *
 * Before that line it prints what it saw, one event a line: "offer:" (a file
 * it announces, with the BLAKE2b-256 of its content), "request:" (a REQUEST
 * from the agent and how it was answered), "response:" (the agent's answer
 * to one of our requests), "index:", "hello:", "close:" and "note:".
 *
 * Usage:
 *   shoal_evilpeer id SEED
 *   shoal_evilpeer list
 *   shoal_evilpeer run [options] SEED HOST:PORT SCENARIO
 * SEED is 64 hex digits (an Ed25519 seed) or any other string, which is
 * hashed into one. Options:
 *   --expect ID       the responder's device ID; anything else ends the
 *                     handshake before our key is revealed
 *   --folder ID       the shared folder (default h)
 *   --other ID        a folder of the agent not shared with us (default other)
 *   --req-name NAME   the file the request scenarios ask for
 *   --req-size N      the size they ask for (default 1)
 *   --timeout-ms N    the longest any single wait lasts (default 10000)
 *
 * It is a test tool: one socket, and every wait is a poll() with a deadline
 * (--timeout-ms at most), so it never hangs. Exit status: 0 when a result line was printed
 * for a scenario that ran (whatever the agent did), 1 on the tool's own
 * failure, 2 on a usage error.
 */
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "crypto/chunker.h"
#include "crypto/identity.h"
#include "crypto/noise.h"
#include "crypto/sec.h"
#include "proto/msg.h"
#include "proto/proto.h"

#define PROLOGUE "shoal/1"
#define ALIVE_MS 2000  /* how long the connection must survive a PING */
#define SETTLE_MS 3000 /* how long a malformed message may take to close */
#define BLOCK 65536    /* the block size of the files we offer */
#define MAX_OFFERS 4
#define MAX_EFILE_BLOCKS 8
#define MTIME 1700000000

/* A file we announce, served from memory. */
struct offer {
	char name[64];
	uint8_t *data;
	size_t len;
	int corrupt;   /* answer with bytes that do not match the announced hash */
	size_t served; /* bytes answered with code OK */
	size_t requests;
};

/* One connection to the agent: the channel, and what the agent did on it. */
struct peer {
	int fd;
	int timeout_ms;
	const char *folder, *other;
	struct sec_identity ident;
	unsigned char remote_id[SEC_DEVID_BYTES];
	uint64_t my_short, remote_short;
	uint64_t index_id;
	struct sec_cipher *tx, *rx;
	uint8_t *rbuf; /* received bytes not yet parsed into frames */
	size_t rlen, rcap;
	uint8_t *pt; /* one decrypted frame */
	struct proto_assembler as;
	struct proto_buf out;
	/* events */
	int got_hello;
	int got_index_last; /* the agent's catch-up for our folder is complete */
	int closed;	    /* the connection ended */
	int got_close;	    /* ... with a CLOSE message */
	char close_reason[256];
	char close_how[64]; /* how the socket ended: "eof", a strerror */
	const char *watch;  /* a name to look for in the agent's index */
	int watch_seen;
	int have_resp;
	uint32_t resp_id, resp_code;
	size_t resp_len;
	struct offer offers[MAX_OFFERS];
	size_t noffers;
};

/* A file record we announce; f's pointers point into the struct itself. */
struct efile {
	struct proto_file f;
	struct proto_counter ver[2];
	struct proto_block blocks[MAX_EFILE_BLOCKS];
};

/*
 * A msgpack writer for what the encoders would not write: the sticky err
 * makes a sequence of puts one check.
 */
struct raw {
	struct proto_buf b;
	int err;
};

static struct {
	const char *req_name;
	uint32_t req_size;
} opt = {NULL, 1};

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void
say(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
}

/* Writes bytes from the agent (or our hostile names) with anything unprintable escaped. */
static void
put_escaped(const uint8_t *p, size_t len)
{
	for (size_t i = 0; i < len && i < 300; i++) {
		if (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '\\' && p[i] != '"')
			putchar(p[i]);
		else
			printf("\\x%02x", p[i]);
	}
	if (len > 300)
		printf("...(%zu bytes)", len);
}

static int64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int
ms_left(int64_t deadline)
{
	int64_t left = deadline - now_ms();

	return left < 0 ? 0 : (int)left;
}

/* ---- the raw msgpack writer ---- */

static void
raw_put(struct raw *w, const void *p, size_t n)
{
	if (!w->err && proto_buf_append(&w->b, p, n) != 0)
		w->err = PROTO_ENOMEM;
}

static void
raw_be(struct raw *w, uint8_t type, uint64_t v, unsigned n)
{
	uint8_t h[9];

	h[0] = type;
	for (unsigned i = 0; i < n; i++)
		h[1 + i] = (uint8_t)(v >> (8 * (n - 1 - i)));
	raw_put(w, h, 1 + n);
}

/* An array header; counts of 2^16 and more take the array32 form. */
static void
raw_array(struct raw *w, uint32_t n)
{
	uint8_t h = (uint8_t)(0x90 | n);

	if (n < 16)
		raw_put(w, &h, 1);
	else if (n < 65536)
		raw_be(w, 0xdc, n, 2);
	else
		raw_be(w, 0xdd, n, 4);
}

static void
raw_uint(struct raw *w, uint64_t v)
{
	uint8_t h = (uint8_t)v;

	if (v < 128)
		raw_put(w, &h, 1);
	else
		raw_be(w, 0xcf, v, 8);
}

/* Always the int64 form, so a negative value is never shortened away. */
static void
raw_int64(struct raw *w, int64_t v)
{
	raw_be(w, 0xd3, (uint64_t)v, 8);
}

static void
raw_str(struct raw *w, const void *p, size_t n)
{
	uint8_t h = (uint8_t)(0xa0 | n);

	if (n < 32)
		raw_put(w, &h, 1);
	else if (n < 256)
		raw_be(w, 0xd9, n, 1);
	else
		raw_be(w, 0xda, n, 2);
	raw_put(w, p, n);
}

/* ---- socket I/O with deadlines ---- */

static int
send_all(int fd, const uint8_t *p, size_t len, int64_t deadline)
{
	while (len > 0) {
		struct pollfd pfd = {fd, POLLOUT, 0};
		int n = poll(&pfd, 1, ms_left(deadline));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -ETIMEDOUT;
		ssize_t w = send(fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (w < 0)
			return -errno;
		p += w;
		len -= (size_t)w;
	}
	return 0;
}

/* Reads what the socket has into rbuf. Returns 0, -ETIMEDOUT, -EPIPE (EOF) or -errno. */
static int
peer_fill(struct peer *p, int64_t deadline)
{
	for (;;) {
		struct pollfd pfd = {p->fd, POLLIN, 0};
		int n = poll(&pfd, 1, ms_left(deadline));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -ETIMEDOUT;
		ssize_t r = recv(p->fd, p->rbuf + p->rlen, p->rcap - p->rlen, MSG_DONTWAIT);
		if (r < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			return -EPIPE;
		p->rlen += (size_t)r;
		return 0;
	}
}

/*
 * Waits for one whole frame at the start of rbuf. Returns its total length
 * (header included; drop it with peer_consume() once body is used), or a
 * negative code as peer_fill(), or -EPROTO for a zero-length frame.
 */
static int
peer_frame(struct peer *p, int64_t deadline, const uint8_t **body, size_t *blen)
{
	for (;;) {
		int n = proto_frame_parse(p->rbuf, p->rlen, body, blen);
		if (n > 0)
			return n;
		if (n < 0)
			return -EPROTO;
		int rc = peer_fill(p, deadline);
		if (rc < 0)
			return rc;
	}
}

static void
peer_consume(struct peer *p, size_t n)
{
	memmove(p->rbuf, p->rbuf + n, p->rlen - n);
	p->rlen -= n;
}

/* Records that the connection ended (how, unless known) and returns -EPIPE. */
static int
peer_ended(struct peer *p, const char *how)
{
	p->closed = 1;
	if (!p->close_how[0])
		snprintf(p->close_how, sizeof(p->close_how), "%s", how);
	return -EPIPE;
}

/*
 * Sends one plain frame. Returns 0, -EPIPE when the socket refuses it (the
 * agent closed; p->closed is set), or -ETIMEDOUT when the agent stopped
 * reading for the whole timeout (a tool error: the agent is stuck).
 */
static int
peer_send_frame(struct peer *p, const uint8_t *body, size_t len)
{
	uint8_t hdr[PROTO_FRAME_HDR];
	int rc;

	proto_frame_header(hdr, len);
	rc = send_all(p->fd, hdr, sizeof(hdr), now_ms() + p->timeout_ms);
	if (rc == 0)
		rc = send_all(p->fd, body, len, now_ms() + p->timeout_ms);
	if (rc == -ETIMEDOUT)
		return rc;
	if (rc < 0) {
		char how[64];
		snprintf(how, sizeof(how), "send: %s", strerror(-rc));
		return peer_ended(p, how);
	}
	return 0;
}

/*
 * Encrypts one fragment (flag and data) into one frame and sends it. Returns
 * 0, -EPIPE (the agent closed), -ENOMEM or a SEC_E* code.
 */
static int
peer_send_fragment(struct peer *p, uint8_t flag, const uint8_t *data, size_t n)
{
	uint8_t *body = malloc(1 + n + PROTO_TAG);
	int rc;

	if (!body)
		return -ENOMEM;
	body[0] = flag;
	memcpy(body + 1, data, n);
	rc = sec_cipher_seal(p->tx, body, 1 + n, body);
	if (rc == 0)
		rc = peer_send_frame(p, body, 1 + n + PROTO_TAG);
	free(body);
	return rc;
}

/* Sends one message in as few frames as it takes, as agent/conn.c conn_send_msg does. */
static int
peer_send_msg(struct peer *p, const uint8_t *msg, size_t len)
{
	const size_t chunk = PROTO_FRAGMENT_MAX - 1;
	size_t off = 0;
	int rc = 0;

	do {
		size_t n = len - off < chunk ? len - off : chunk;
		rc = peer_send_fragment(p, off + n == len ? PROTO_FRAG_LAST : PROTO_FRAG_MORE,
					msg + off, n);
		off += n;
	} while (rc == 0 && off < len);
	return rc;
}

/* Sends p->out as one message and empties it. Returns as peer_send_fragment(). */
static int
peer_send_out(struct peer *p)
{
	int rc = peer_send_msg(p, p->out.p, p->out.len);

	proto_buf_reset(&p->out);
	return rc;
}

/* ---- what the agent sends ---- */

static struct offer *
offer_find(struct peer *p, const uint8_t *name, size_t len)
{
	for (size_t i = 0; i < p->noffers; i++)
		if (strlen(p->offers[i].name) == len && memcmp(p->offers[i].name, name, len) == 0)
			return &p->offers[i];
	return NULL;
}

static int
bytes_eq(const struct proto_bytes *b, const char *s)
{
	return b->len == strlen(s) && (b->len == 0 || memcmp(b->p, s, b->len) == 0);
}

/* Answers a REQUEST from the files we offer, from memory. */
static int
peer_serve(struct peer *p, const struct proto_request *r)
{
	struct offer *o =
	    bytes_eq(&r->folder, p->folder) ? offer_find(p, r->name.p, r->name.len) : NULL;
	const char *answer = "notfound";
	int rc;

	if (o && r->offset <= o->len && r->size <= o->len - r->offset) {
		rc = proto_encode_response_header(&p->out, r->id, PROTO_R_OK, r->size);
		if (rc == 0)
			rc = proto_buf_append(&p->out, o->data + r->offset, r->size);
		if (rc == 0 && o->corrupt)
			for (size_t i = p->out.len - r->size; i < p->out.len; i++)
				p->out.p[i] ^= 0x5a;
		o->served += r->size;
		o->requests++;
		answer = o->corrupt ? "corrupt" : "ok";
	} else {
		rc = proto_encode_response_header(&p->out, r->id, PROTO_R_NOTFOUND, 0);
	}
	printf("request: id=%" PRIu32 " folder=\"", r->id);
	put_escaped(r->folder.p, r->folder.len);
	printf("\" name=\"");
	put_escaped(r->name.p, r->name.len);
	say("\" offset=%" PRIu64 " size=%" PRIu32 " answer=%s", r->offset, r->size, answer);
	return rc != 0 ? rc : peer_send_out(p);
}

static void
peer_on_index(struct peer *p, const struct proto_msg *m)
{
	const struct proto_index *ix = &m->u.index;

	printf("index: type=%s folder=\"", m->type == PROTO_INDEX ? "INDEX" : "INDEX_UPDATE");
	put_escaped(ix->folder.p, ix->folder.len);
	say("\" files=%zu last=%" PRIu32, ix->nfiles, ix->last);
	if (!bytes_eq(&ix->folder, p->folder))
		return;
	if (ix->last)
		p->got_index_last = 1;
	for (size_t i = 0; i < ix->nfiles && p->watch; i++) {
		const struct proto_file *f = &ix->files[i];
		if (bytes_eq(&f->name, p->watch) && !(f->flags & PROTO_FLAG_DELETED)) {
			p->watch_seen = 1;
			say("note: the agent announced %s (type %" PRIu32 ")", p->watch, f->type);
		}
	}
}

/*
 * Handles one message from the agent. Returns 0, -EPIPE after its CLOSE, or
 * -EPROTO when the agent sent something it should not (a tool error).
 */
static int
peer_handle(struct peer *p, const uint8_t *msg, size_t len)
{
	struct proto_msg m;
	int rc = proto_msg_decode(msg, len, &m);

	if (rc != 0) {
		say("note: the agent sent a message that does not decode: %s", proto_strerror(rc));
		return -EPROTO;
	}
	switch (m.type) {
	case PROTO_HELLO:
		if (p->got_hello)
			say("note: the agent sent a second HELLO");
		p->got_hello = 1;
		printf("hello: device_name=\"");
		put_escaped(m.u.hello.device_name.p, m.u.hello.device_name.len);
		say("\" folders=%zu", m.u.hello.nfolders);
		for (size_t i = 0; i < m.u.hello.nfolders; i++)
			if (!bytes_eq(&m.u.hello.folders[i].id, p->folder))
				say("note: the agent's HELLO lists a folder other than %s",
				    p->folder);
		break;
	case PROTO_INDEX:
	case PROTO_INDEX_UPDATE:
		peer_on_index(p, &m);
		break;
	case PROTO_REQUEST:
		rc = peer_serve(p, &m.u.request);
		break;
	case PROTO_RESPONSE:
		p->have_resp = 1;
		p->resp_id = m.u.response.id;
		p->resp_code = m.u.response.code;
		p->resp_len = m.u.response.data.len;
		say("response: id=%" PRIu32 " code=%" PRIu32 " len=%zu", p->resp_id, p->resp_code,
		    p->resp_len);
		break;
	case PROTO_PING:
		break;
	case PROTO_CLOSE: {
		size_t n = m.u.close.reason.len;
		if (n >= sizeof(p->close_reason))
			n = sizeof(p->close_reason) - 1;
		for (size_t i = 0; i < n; i++) {
			uint8_t ch = m.u.close.reason.p[i];
			p->close_reason[i] = ch >= 0x20 && ch < 0x7f && ch != '"' ? (char)ch : '?';
		}
		p->close_reason[n] = '\0';
		p->got_close = p->closed = 1;
		say("close: reason=\"%s\"", p->close_reason);
		rc = -EPIPE;
		break;
	}
	default:
		say("note: the agent sent message type %d", (int)m.type);
		break;
	}
	proto_msg_release(&m);
	return rc;
}

/* Waits for the next whole message. Returns 0 with *msg valid until the next call. */
static int
peer_recv_msg(struct peer *p, int64_t deadline, const uint8_t **msg, size_t *len)
{
	for (;;) {
		const uint8_t *body;
		size_t blen;
		int n = peer_frame(p, deadline, &body, &blen);
		if (n < 0)
			return n;
		if (blen < PROTO_TAG + 1)
			return -EPROTO;
		int rc = sec_cipher_open(p->rx, body, blen, p->pt);
		peer_consume(p, (size_t)n);
		if (rc != 0) {
			say("note: a frame from the agent does not decrypt: %s", sec_strerror(rc));
			return -EPROTO;
		}
		rc = proto_assembler_push(&p->as, p->pt, blen - PROTO_TAG, msg, len);
		if (rc < 0) {
			say("note: bad fragment from the agent: %s", proto_strerror(rc));
			return -EPROTO;
		}
		if (rc == 1)
			return 0;
	}
}

typedef int (*peer_cond)(const struct peer *p);

/*
 * Handles the agent's messages (answering its requests) until cond holds
 * (returns 1), ms pass (returns 0) or the connection ends (returns -EPIPE,
 * p->closed set). -EPROTO is the tool's error.
 */
static int
peer_pump(struct peer *p, int ms, peer_cond cond)
{
	int64_t deadline = now_ms() + ms;

	if (p->closed)
		return -EPIPE;
	for (;;) {
		const uint8_t *msg;
		size_t len;
		int rc;

		if (cond && cond(p))
			return 1;
		rc = peer_recv_msg(p, deadline, &msg, &len);
		if (rc == -ETIMEDOUT)
			return 0;
		if (rc == -EPROTO)
			return rc;
		if (rc < 0)
			return peer_ended(p, rc == -EPIPE ? "eof" : strerror(-rc));
		rc = peer_handle(p, msg, len);
		if (rc < 0)
			return rc;
	}
}

/* ---- handshake and HELLO ---- */

static int
peer_handshake(struct peer *p, const unsigned char *expect)
{
	struct sec_handshake *hs = NULL;
	uint8_t out[256], payload[256];
	size_t outlen, plen, blen;
	const uint8_t *body;
	char idstr[SEC_DEVID_STRLEN + 1];
	unsigned char rs[32];
	int n, rc;

	/* Suite negotiation (agent/conn.c): offer ChaChaPoly only; the choice must be it. */
	{
		const uint8_t offer[3] = {0x53, 1, 0x1};
		unsigned char pro[sizeof(PROLOGUE) + 1];
		rc = peer_send_frame(p, offer, sizeof(offer));
		if (rc != 0)
			goto out;
		n = peer_frame(p, now_ms() + p->timeout_ms, &body, &blen);
		if (n < 0) {
			rc = n;
			goto out;
		}
		if (blen != 3 || body[0] != 0x53 || body[1] != 1 || body[2] != 0x1) {
			peer_consume(p, (size_t)n);
			rc = -EPROTO;
			goto out;
		}
		peer_consume(p, (size_t)n);
		memcpy(pro, PROLOGUE, sizeof(PROLOGUE) - 1);
		pro[sizeof(PROLOGUE) - 1] = offer[2];
		pro[sizeof(PROLOGUE)] = 0x1;
		rc = sec_handshake_new(&hs, SEC_SUITE_CHACHAPOLY_BLAKE2B, 1, p->ident.x_sk, pro,
				       sizeof(pro));
	}
	if (rc != 0)
		goto out;
	/* -> e */
	rc = sec_handshake_write(hs, NULL, 0, out, sizeof(out), &outlen);
	if (rc == 0)
		rc = peer_send_frame(p, out, outlen);
	if (rc != 0)
		goto out;
	/* <- e, ee, s, es */
	n = peer_frame(p, now_ms() + p->timeout_ms, &body, &blen);
	if (n < 0) {
		rc = n;
		goto out;
	}
	rc = sec_handshake_read(hs, body, blen, payload, sizeof(payload), &plen);
	peer_consume(p, (size_t)n);
	if (rc == 0)
		rc = sec_handshake_remote_static(hs, rs);
	if (rc != 0)
		goto out;
	sec_devid_from_x25519(rs, p->remote_id);
	p->remote_short = sec_devid_short(p->remote_id);
	sec_devid_format(p->remote_id, idstr);
	if (expect && memcmp(expect, p->remote_id, 32) != 0) {
		say("note: the responder is %s, not the expected device; not revealing our key",
		    idstr);
		rc = -EPERM;
		goto out;
	}
	say("connected: responder %s", idstr);
	/* -> s, se */
	rc = sec_handshake_write(hs, NULL, 0, out, sizeof(out), &outlen);
	if (rc == 0)
		rc = peer_send_frame(p, out, outlen);
	if (rc == 0)
		rc = sec_handshake_split(hs, &p->tx, &p->rx);
out:
	sec_handshake_free(hs);
	sodium_memzero(rs, sizeof(rs));
	return rc;
}

static int
peer_send_hello(struct peer *p, uint64_t max_seq, int with_other)
{
	struct proto_folder f[2];
	struct proto_hello h;
	int rc;

	memset(f, 0, sizeof(f));
	memset(&h, 0, sizeof(h));
	f[0].id.p = (const uint8_t *)p->folder;
	f[0].id.len = strlen(p->folder);
	f[0].label = f[0].id;
	f[0].flags = PROTO_FOLDER_SEND | PROTO_FOLDER_RECEIVE;
	f[0].index_id = p->index_id;
	f[0].max_seq = max_seq;
	f[1] = f[0];
	f[1].id.p = (const uint8_t *)p->other;
	f[1].id.len = strlen(p->other);
	f[1].label = f[1].id;
	h.device_name.p = (const uint8_t *)"evilpeer";
	h.device_name.len = 8;
	h.client_name.p = (const uint8_t *)"shoal";
	h.client_name.len = 5;
	h.client_version.p = (const uint8_t *)SHOAL_VERSION;
	h.client_version.len = strlen(SHOAL_VERSION);
	h.nfolders = with_other ? 2 : 1;
	h.folders = f;
	rc = proto_encode_hello(&p->out, &h);
	return rc == 0 ? peer_send_out(p) : rc;
}

static int
cond_set_up(const struct peer *p)
{
	return p->got_hello && p->got_index_last;
}

/* ---- files we announce ---- */

/* Deterministic content: xorshift64 seeded from the name. */
static int
peer_offer(struct peer *p, const char *name, size_t len, int corrupt)
{
	struct offer *o;
	unsigned char h[32];
	char hex[65];
	uint64_t x = 0x9e3779b97f4a7c15ull;

	if (p->noffers == MAX_OFFERS || strlen(name) >= sizeof(o->name) ||
	    len > (size_t)MAX_EFILE_BLOCKS * BLOCK)
		return -EINVAL;
	o = &p->offers[p->noffers];
	memset(o, 0, sizeof(*o));
	if (!(o->data = malloc(len ? len : 1)))
		return -ENOMEM;
	for (const char *c = name; *c; c++)
		x = (x ^ (uint8_t)*c) * 0x100000001b3ull;
	for (size_t i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		o->data[i] = (uint8_t)(x >> 24);
	}
	snprintf(o->name, sizeof(o->name), "%s", name);
	o->len = len;
	o->corrupt = corrupt;
	p->noffers++;
	crypto_generichash(h, sizeof(h), o->data, len, NULL, 0);
	sodium_bin2hex(hex, sizeof(hex), h, sizeof(h));
	say("offer: %s size=%zu blake2b=%s%s", name, len, hex, corrupt ? " corrupt" : "");
	return 0;
}

/* An entry of the given type, version {our short ID: seq}, no content. */
static void
efile_init(struct efile *e, const struct peer *p, const void *name, size_t name_len, uint32_t type,
	   uint64_t seq)
{
	memset(e, 0, sizeof(*e));
	e->f.name.p = name;
	e->f.name.len = name_len;
	e->f.type = type;
	e->f.mode = type == PROTO_DIR ? 0755 : 0644;
	e->f.mtime_s = MTIME;
	e->f.sequence = seq;
	e->f.block_size = BLOCK;
	e->ver[0].id = p->my_short;
	e->ver[0].value = seq;
	e->f.nversion = 1;
	e->f.version = e->ver;
	e->f.blocks = e->blocks;
}

/* Makes e a regular file with o's content, in BLOCK-sized blocks. */
static void
efile_content(struct efile *e, const struct offer *o)
{
	size_t off = 0;

	e->f.name.p = (const uint8_t *)o->name;
	e->f.name.len = strlen(o->name);
	e->f.type = PROTO_FILE;
	e->f.size = o->len;
	e->f.nblocks = 0;
	while (off < o->len) {
		size_t n = o->len - off < BLOCK ? o->len - off : BLOCK;
		sec_block_hash(o->data + off, n, e->blocks[e->f.nblocks].hash);
		e->blocks[e->f.nblocks].size = (uint32_t)n;
		e->f.nblocks++;
		off += n;
	}
}

static int
peer_send_index(struct peer *p, enum proto_type type, const char *folder, uint32_t last,
		const struct efile *files, size_t n)
{
	int rc = proto_encode_index_begin(&p->out, type, (const uint8_t *)folder, strlen(folder),
					  p->index_id, last, (uint32_t)n);

	for (size_t i = 0; i < n && rc == 0; i++)
		rc = proto_encode_file(&p->out, &files[i].f);
	return rc == 0 ? peer_send_out(p) : rc;
}

static int
peer_send_request(struct peer *p, const char *folder, const char *name, uint64_t offset,
		  uint32_t size)
{
	struct proto_request r;
	int rc;

	memset(&r, 0, sizeof(r));
	r.id = 1;
	r.folder.p = (const uint8_t *)folder;
	r.folder.len = strlen(folder);
	r.name.p = (const uint8_t *)name;
	r.name.len = strlen(name);
	r.offset = offset;
	r.size = size;
	rc = proto_encode_request(&p->out, &r);
	printf("note: sending REQUEST folder=%s name=\"", folder);
	put_escaped(r.name.p, r.name.len);
	say("\" offset=%" PRIu64 " size=%" PRIu32, offset, size);
	return rc == 0 ? peer_send_out(p) : rc;
}

/* Sends a message built with the raw writer, and frees it. */
static int
peer_send_raw(struct peer *p, struct raw *w)
{
	int rc = w->err;

	if (rc == 0)
		rc = peer_send_msg(p, w->b.p, w->b.len);
	proto_buf_release(&w->b);
	return rc;
}

/* ---- ending a scenario ---- */

/*
 * Lets the agent react for settle_ms (a malformed message should close at
 * once), then, if the connection still stands, sends a PING and watches it
 * for ALIVE_MS more. Requests keep being answered meanwhile.
 */
static int
peer_finish(struct peer *p, int rc, int settle_ms)
{
	if (rc < 0 && rc != -EPIPE)
		return rc; /* the tool's own failure */
	if (!p->closed && settle_ms > 0 && (rc = peer_pump(p, settle_ms, NULL)) == -EPROTO)
		return rc;
	if (p->closed)
		return 0;
	if (proto_encode_ping(&p->out) != 0)
		return -ENOMEM;
	rc = peer_send_out(p);
	if (rc == 0)
		rc = peer_pump(p, ALIVE_MS, NULL);
	return rc == -EPIPE || rc >= 0 ? 0 : rc;
}

static int
cond_served_all(const struct peer *p)
{
	for (size_t i = 0; i < p->noffers; i++)
		if (p->offers[i].served < p->offers[i].len)
			return 0;
	return 1;
}

static int
cond_served_any(const struct peer *p)
{
	for (size_t i = 0; i < p->noffers; i++)
		if (p->offers[i].requests > 0)
			return 1;
	return 0;
}

static int
cond_watch(const struct peer *p)
{
	return p->watch_seen;
}

static int
cond_response(const struct peer *p)
{
	return p->have_resp;
}

/* ---- scenarios ----
 *
 * Each returns 0 when it ran (the connection may have ended: p->closed), or
 * the tool's own negative error. Sends and waits return -EPIPE when the agent
 * closed, which peer_finish() takes as a result, not as an error.
 */

/* A well-behaved peer: the agent must pull the file. Checks the tool itself. */
static int
sc_control(struct peer *p)
{
	struct efile e;
	int rc = peer_offer(p, "ctl.txt", 150000, 0);

	if (rc != 0)
		return rc;
	efile_init(&e, p, NULL, 0, PROTO_FILE, 1);
	efile_content(&e, &p->offers[0]);
	rc = peer_send_index(p, PROTO_INDEX, p->folder, 1, &e, 1);
	if (rc == 0 && (rc = peer_pump(p, p->timeout_ms, cond_served_all)) == 0)
		say("note: the agent did not fetch all of ctl.txt");
	return peer_finish(p, rc, 500);
}

/* An INDEX whose second entry has a bad name; the first one must not be kept either. */
static int
send_bad_name(struct peer *p, const void *name, size_t len)
{
	struct efile e[2];

	efile_init(&e[0], p, "pre.txt", 7, PROTO_FILE, 1);
	efile_init(&e[1], p, name, len, PROTO_FILE, 2);
	printf("note: announcing \"");
	put_escaped(name, len);
	say("\"");
	return peer_finish(p, peer_send_index(p, PROTO_INDEX, p->folder, 1, e, 2), SETTLE_MS);
}

static int
sc_path_dotdot(struct peer *p)
{
	return send_bad_name(p, "..", 2);
}

static int
sc_path_escape(struct peer *p)
{
	return send_bad_name(p, "a/../../b", 9);
}

static int
sc_path_absolute(struct peer *p)
{
	return send_bad_name(p, "/etc/x", 6);
}

static int
sc_path_nul(struct peer *p)
{
	return send_bad_name(p, "a\0b", 3);
}

static int
sc_path_control(struct peer *p)
{
	return send_bad_name(p, "a\001b", 3);
}

static int
sc_path_newline(struct peer *p)
{
	return send_bad_name(p, "a\nb", 3);
}

static int
sc_name_too_long(struct peer *p)
{
	char name[PROTO_NAME_MAX + 1];

	memset(name, 'n', sizeof(name));
	return send_bad_name(p, name, sizeof(name));
}

/*
 * A symlink "link" -> ".." that the agent may create (shoal never follows
 * links), then, once the agent announces it, a file "link/x" that would land
 * outside the folder if the link were followed.
 */
static int
sc_symlink_escape(struct peer *p)
{
	struct efile e;
	int rc;

	efile_init(&e, p, "link", 4, PROTO_SYMLINK, 1);
	e.f.target.p = (const uint8_t *)"..";
	e.f.target.len = 2;
	rc = peer_send_index(p, PROTO_INDEX, p->folder, 1, &e, 1);
	p->watch = "link";
	if (rc == 0 && (rc = peer_pump(p, p->timeout_ms, cond_watch)) == 0)
		say("note: the agent did not announce link within %d ms", p->timeout_ms);
	if (rc < 0)
		return peer_finish(p, rc, 0);
	rc = peer_offer(p, "link/x", 1000, 0);
	if (rc != 0)
		return rc;
	efile_init(&e, p, NULL, 0, PROTO_FILE, 2);
	efile_content(&e, &p->offers[0]);
	rc = peer_send_index(p, PROTO_INDEX_UPDATE, p->folder, 0, &e, 1);
	return peer_finish(p, rc, SETTLE_MS);
}

/* A file whose blocks we answer with other bytes than the hash announced. */
static int
sc_bad_block(struct peer *p)
{
	struct efile e;
	int rc = peer_offer(p, "bad.bin", 100000, 1);

	if (rc != 0)
		return rc;
	efile_init(&e, p, NULL, 0, PROTO_FILE, 1);
	efile_content(&e, &p->offers[0]);
	rc = peer_send_index(p, PROTO_INDEX, p->folder, 1, &e, 1);
	if (rc == 0 && (rc = peer_pump(p, p->timeout_ms, cond_served_any)) == 0)
		say("note: the agent did not request bad.bin");
	return peer_finish(p, rc, 1000);
}

/* A file of 1000 bytes made of one block of 4096. */
static int
sc_size_mismatch(struct peer *p)
{
	struct efile e;

	efile_init(&e, p, "sz.bin", 6, PROTO_FILE, 1);
	e.f.size = 1000;
	e.f.nblocks = 1;
	e.blocks[0].size = 4096;
	return peer_finish(p, peer_send_index(p, PROTO_INDEX, p->folder, 1, &e, 1), SETTLE_MS);
}

static const char *
req_name(const char *dflt)
{
	return opt.req_name ? opt.req_name : dflt;
}

/* A REQUEST at offset 2^63, past what any offset may be. */
static int
sc_huge_offset(struct peer *p)
{
	int rc = peer_send_request(p, p->folder, req_name("hello.txt"), 1ull << 63, 1);

	return peer_finish(p, rc, SETTLE_MS);
}

/* A valid REQUEST far beyond the end of a real file: NOTFOUND, nothing else. */
static int
sc_far_offset(struct peer *p)
{
	int rc = peer_send_request(p, p->folder, req_name("hello.txt"), (uint64_t)INT64_MAX - 4096,
				   4096);

	if (rc == 0)
		rc = peer_pump(p, p->timeout_ms, cond_response);
	return peer_finish(p, rc, 0);
}

/* An INDEX whose file list claims 2^32-1 entries, with no bytes behind it. */
static int
sc_huge_count(struct peer *p)
{
	struct raw w = {{NULL, 0, 0}, 0};

	raw_array(&w, 5);
	raw_uint(&w, PROTO_INDEX);
	raw_str(&w, p->folder, strlen(p->folder));
	raw_uint(&w, p->index_id);
	raw_uint(&w, 1);
	raw_array(&w, UINT32_MAX);
	return peer_finish(p, peer_send_raw(p, &w), SETTLE_MS);
}

enum raw_fault { FAULT_NEG_SIZE, FAULT_STR_SEQ };

/* An INDEX with one file written by hand, one field broken. */
static int
send_raw_file(struct peer *p, enum raw_fault fault)
{
	struct raw w = {{NULL, 0, 0}, 0};

	raw_array(&w, 5);
	raw_uint(&w, PROTO_INDEX);
	raw_str(&w, p->folder, strlen(p->folder));
	raw_uint(&w, p->index_id);
	raw_uint(&w, 1);
	raw_array(&w, 1);
	raw_array(&w, 12);
	raw_str(&w, "typed.bin", 9);
	raw_uint(&w, PROTO_FILE);
	raw_uint(&w, 0);
	raw_uint(&w, 0644);
	if (fault == FAULT_NEG_SIZE)
		raw_int64(&w, -1); /* size */
	else
		raw_uint(&w, 0);
	raw_int64(&w, MTIME);
	raw_uint(&w, 0);
	if (fault == FAULT_STR_SEQ)
		raw_str(&w, "1", 1); /* sequence */
	else
		raw_uint(&w, 1);
	raw_uint(&w, BLOCK);
	raw_str(&w, "", 0);
	raw_array(&w, 1);
	raw_array(&w, 2);
	raw_uint(&w, p->my_short);
	raw_uint(&w, 1);
	raw_array(&w, 0);
	return peer_finish(p, peer_send_raw(p, &w), SETTLE_MS);
}

static int
sc_negative_int(struct peer *p)
{
	return send_raw_file(p, FAULT_NEG_SIZE);
}

static int
sc_wrong_types(struct peer *p)
{
	return send_raw_file(p, FAULT_STR_SEQ);
}

/* A PING with a trailing element nested 200 arrays deep. */
static int
sc_deep_nesting(struct peer *p)
{
	struct raw w = {{NULL, 0, 0}, 0};

	raw_array(&w, 2);
	raw_uint(&w, PROTO_PING);
	for (int i = 0; i < 200; i++)
		raw_array(&w, 1);
	raw_array(&w, 0);
	return peer_finish(p, peer_send_raw(p, &w), SETTLE_MS);
}

/* An INDEX for the agent's folder that is not shared with us (our HELLO offered it). */
static int
sc_foreign_folder_index(struct peer *p)
{
	struct efile e;

	efile_init(&e, p, "steal.txt", 9, PROTO_FILE, 1);
	return peer_finish(p, peer_send_index(p, PROTO_INDEX, p->other, 1, &e, 1), SETTLE_MS);
}

/* A REQUEST for a file of the folder that is not shared with us: DENIED. */
static int
sc_foreign_folder_request(struct peer *p)
{
	int rc = peer_send_request(p, p->other, req_name("secret.txt"), 0, opt.req_size);

	if (rc == 0)
		rc = peer_pump(p, p->timeout_ms, cond_response);
	return peer_finish(p, rc, 0);
}

/* A REQUEST whose name climbs out of the folder: malformed. */
static int
sc_request_escape(struct peer *p)
{
	char name[PROTO_PATH_MAX];

	snprintf(name, sizeof(name), "../%s/%s", p->other, req_name("secret.txt"));
	return peer_finish(p, peer_send_request(p, p->folder, name, 0, opt.req_size), SETTLE_MS);
}

/* A REQUEST through a symlink in the folder (--req-name, e.g. up/other/secret.txt). */
static int
sc_request_via_link(struct peer *p)
{
	int rc = peer_send_request(p, p->folder, req_name("up/other/secret.txt"), 0, opt.req_size);

	if (rc == 0)
		rc = peer_pump(p, p->timeout_ms, cond_response);
	return peer_finish(p, rc, 0);
}

/*
 * A file whose version vector gives the agent's own short ID the counter
 * 2^40: a claim that the agent itself made a trillion changes. The agent must
 * refuse the entry and pull nothing.
 */
static int
sc_vv_inflate(struct peer *p)
{
	struct efile e;
	int rc = peer_offer(p, "vv.txt", 5000, 0);

	if (rc != 0)
		return rc;
	efile_init(&e, p, NULL, 0, PROTO_FILE, 1);
	efile_content(&e, &p->offers[0]);
	e.ver[0].id = p->remote_short;
	e.ver[0].value = 1ull << 40;
	e.ver[1].id = p->my_short;
	e.ver[1].value = 1;
	e.f.nversion = 2;
	say("note: vv.txt has the version {%016" PRIx64 ": 2^40, %016" PRIx64 ": 1}",
	    p->remote_short, p->my_short);
	rc = peer_send_index(p, PROTO_INDEX, p->folder, 1, &e, 1);
	if (rc == 0)
		rc = peer_pump(p, 4000, NULL);
	return peer_finish(p, rc, 0);
}

/* Two batches; the second one's sequence numbers are below the first one's. */
static int
send_seq_backwards(struct peer *p, enum proto_type type)
{
	struct efile e[3];
	int rc;

	efile_init(&e[0], p, "seqa", 4, PROTO_FILE, 10);
	efile_init(&e[1], p, "seqb", 4, PROTO_FILE, 11);
	efile_init(&e[2], p, "seqc", 4, PROTO_FILE, 5);
	rc = peer_send_index(p, type, p->folder, 0, e, 2);
	if (rc == 0)
		rc = peer_send_index(p, type, p->folder, 1, &e[2], 1);
	return peer_finish(p, rc, SETTLE_MS);
}

static int
sc_seq_backwards(struct peer *p)
{
	return send_seq_backwards(p, PROTO_INDEX_UPDATE);
}

static int
sc_seq_backwards_index(struct peer *p)
{
	return send_seq_backwards(p, PROTO_INDEX);
}

/* A frame of random bytes where an encrypted frame belongs. */
static int
sc_garbage_frame(struct peer *p)
{
	uint8_t junk[64];

	randombytes_buf(junk, sizeof(junk));
	return peer_finish(p, peer_send_frame(p, junk, sizeof(junk)), SETTLE_MS);
}

/* MORE fragments adding up to more than PROTO_MSG_MAX, then a LAST one. */
static int
sc_oversize_message(struct peer *p)
{
	const size_t chunk = PROTO_FRAGMENT_MAX - 1;
	uint8_t *zero = calloc(1, chunk);
	size_t sent = 0;
	int rc = 0;

	if (!zero)
		return -ENOMEM;
	while (rc == 0 && sent <= PROTO_MSG_MAX) {
		rc = peer_send_fragment(p, PROTO_FRAG_MORE, zero, chunk);
		if (rc == 0)
			sent += chunk;
	}
	if (rc == 0)
		rc = peer_send_fragment(p, PROTO_FRAG_LAST, zero, 1);
	free(zero);
	say("note: %zu bytes of fragments went out (the limit is %u)", sent, PROTO_MSG_MAX);
	if (rc == -EPIPE) {
		/* The socket refused more; a CLOSE may still be waiting to be read. */
		p->closed = 0;
		rc = peer_pump(p, SETTLE_MS, NULL);
		p->closed = 1;
	}
	return peer_finish(p, rc, SETTLE_MS);
}

struct scenario {
	const char *name;
	int (*run)(struct peer *p);
	int with_other;	  /* our HELLO offers the agent's unshared folder too */
	uint64_t max_seq; /* what our HELLO claims */
};

static const struct scenario scenarios[] = {
    {"control", sc_control, 0, 1},
    {"path-dotdot", sc_path_dotdot, 0, 2},
    {"path-escape", sc_path_escape, 0, 2},
    {"path-absolute", sc_path_absolute, 0, 2},
    {"path-nul", sc_path_nul, 0, 2},
    {"path-control", sc_path_control, 0, 2},
    {"path-newline", sc_path_newline, 0, 2},
    {"name-too-long", sc_name_too_long, 0, 2},
    {"symlink-escape", sc_symlink_escape, 0, 2},
    {"bad-block", sc_bad_block, 0, 1},
    {"size-mismatch", sc_size_mismatch, 0, 1},
    {"huge-offset", sc_huge_offset, 0, 0},
    {"far-offset", sc_far_offset, 0, 0},
    {"huge-count", sc_huge_count, 0, 1},
    {"negative-int", sc_negative_int, 0, 1},
    {"wrong-types", sc_wrong_types, 0, 1},
    {"deep-nesting", sc_deep_nesting, 0, 0},
    {"foreign-folder-index", sc_foreign_folder_index, 1, 1},
    {"foreign-folder-request", sc_foreign_folder_request, 1, 0},
    {"request-escape", sc_request_escape, 0, 0},
    {"request-via-link", sc_request_via_link, 0, 0},
    {"vv-inflate", sc_vv_inflate, 0, 1},
    {"seq-backwards", sc_seq_backwards, 0, 11},
    {"seq-backwards-index", sc_seq_backwards_index, 0, 11},
    {"garbage-frame", sc_garbage_frame, 0, 0},
    {"oversize-message", sc_oversize_message, 0, 0},
};

/* ---- set-up ---- */

static int
identity_from_arg(struct sec_identity *id, const char *arg)
{
	unsigned char seed[32];
	size_t n = 0;
	int rc;

	if (strlen(arg) != 64 || sodium_hex2bin(seed, sizeof(seed), arg, 64, NULL, &n, NULL) != 0 ||
	    n != 32)
		crypto_generichash(seed, sizeof(seed), (const unsigned char *)arg, strlen(arg),
				   NULL, 0);
	rc = sec_identity_from_seed(id, seed);
	sodium_memzero(seed, sizeof(seed));
	return rc;
}

/* Connects to HOST:PORT within timeout_ms. Returns a blocking socket or -errno. */
static int
dial(const char *addr, int timeout_ms)
{
	char host[256];
	const char *colon = strrchr(addr, ':');
	struct addrinfo hints, *res = NULL;
	size_t hl;
	int fd = -1, rc, one = 1;

	if (!colon || (hl = (size_t)(colon - addr)) == 0 || hl >= sizeof(host))
		return -EINVAL;
	memcpy(host, addr, hl);
	host[hl] = '\0';
	if (host[0] == '[' && hl > 2 && host[hl - 1] == ']') {
		memmove(host, host + 1, hl - 2);
		host[hl - 2] = '\0';
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	if (getaddrinfo(host, colon + 1, &hints, &res) != 0 || !res)
		return -EHOSTUNREACH;
	fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		rc = -errno;
		goto out;
	}
	if (connect(fd, res->ai_addr, res->ai_addrlen) != 0 && errno != EINPROGRESS) {
		rc = -errno;
		goto out;
	}
	struct pollfd pfd = {fd, POLLOUT, 0};
	int err = 0;
	socklen_t elen = sizeof(err);
	rc = poll(&pfd, 1, timeout_ms);
	if (rc == 0) {
		rc = -ETIMEDOUT;
		goto out;
	}
	if (rc < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) != 0) {
		rc = -errno;
		goto out;
	}
	if (err != 0) {
		rc = -err;
		goto out;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	rc = fd;
	fd = -1;
out:
	if (fd >= 0)
		close(fd);
	freeaddrinfo(res);
	return rc;
}

static const char *
strerror_any(int rc)
{
	if (rc <= -1100 && rc > -1200)
		return sec_strerror(rc);
	if (rc <= -1000 && rc > -1100)
		return proto_strerror(rc);
	return strerror(-rc);
}

static int
usage(void)
{
	fprintf(stderr, "usage: shoal_evilpeer id SEED\n"
			"       shoal_evilpeer list\n"
			"       shoal_evilpeer run [--expect ID] [--folder ID] [--other ID]\n"
			"                      [--req-name NAME] [--req-size N] [--timeout-ms N]\n"
			"                      SEED HOST:PORT SCENARIO\n");
	return 2;
}

static int
cmd_id(const char *seed)
{
	struct sec_identity id;
	char s[SEC_DEVID_STRLEN + 1];
	int rc;

	memset(&id, 0, sizeof(id));
	rc = identity_from_arg(&id, seed);
	if (rc == 0) {
		sec_devid_format(id.id, s);
		say("%s", s);
	}
	sec_identity_release(&id);
	return rc == 0 ? 0 : 1;
}

static int
cmd_run(int argc, char **argv)
{
	const char *folder = "h", *other = "other";
	const struct scenario *sc = NULL;
	unsigned char expect[SEC_DEVID_BYTES];
	struct peer p;
	int have_expect = 0, timeout_ms = 10000, ran = 0, i, rc;

	for (i = 0; i < argc && strncmp(argv[i], "--", 2) == 0; i += 2) {
		if (i + 1 >= argc)
			return usage();
		if (strcmp(argv[i], "--expect") == 0) {
			if (sec_devid_parse(argv[i + 1], expect) != 0) {
				fprintf(stderr, "shoal_evilpeer: bad device ID %s\n", argv[i + 1]);
				return 2;
			}
			have_expect = 1;
		} else if (strcmp(argv[i], "--folder") == 0) {
			folder = argv[i + 1];
		} else if (strcmp(argv[i], "--other") == 0) {
			other = argv[i + 1];
		} else if (strcmp(argv[i], "--req-name") == 0) {
			opt.req_name = argv[i + 1];
		} else if (strcmp(argv[i], "--req-size") == 0) {
			opt.req_size = (uint32_t)strtoul(argv[i + 1], NULL, 10);
		} else if (strcmp(argv[i], "--timeout-ms") == 0) {
			timeout_ms = atoi(argv[i + 1]);
		} else {
			return usage();
		}
	}
	if (argc - i != 3 || timeout_ms <= 0 || opt.req_size == 0)
		return usage();
	for (size_t k = 0; k < sizeof(scenarios) / sizeof(scenarios[0]); k++)
		if (strcmp(scenarios[k].name, argv[i + 2]) == 0)
			sc = &scenarios[k];
	if (!sc) {
		fprintf(stderr, "shoal_evilpeer: no scenario %s (see 'shoal_evilpeer list')\n",
			argv[i + 2]);
		return 2;
	}

	memset(&p, 0, sizeof(p));
	p.fd = -1;
	p.timeout_ms = timeout_ms;
	p.folder = folder;
	p.other = other;
	p.rcap = 2 * (PROTO_FRAME_HDR + PROTO_FRAME_MAX);
	proto_assembler_init(&p.as, PROTO_MSG_MAX);
	proto_buf_init(&p.out);
	p.rbuf = malloc(p.rcap);
	p.pt = malloc(PROTO_FRAME_MAX);
	if (!p.rbuf || !p.pt) {
		rc = -ENOMEM;
		goto out;
	}
	rc = identity_from_arg(&p.ident, argv[i]);
	if (rc != 0)
		goto out;
	p.my_short = sec_devid_short(p.ident.id);
	do
		randombytes_buf(&p.index_id, sizeof(p.index_id));
	while (p.index_id == 0);
	rc = dial(argv[i + 1], timeout_ms);
	if (rc < 0)
		goto out;
	p.fd = rc;
	rc = peer_handshake(&p, have_expect ? expect : NULL);
	if (rc != 0)
		goto out;
	rc = peer_send_hello(&p, sc->max_seq, sc->with_other);
	if (rc != 0)
		goto out;
	rc = peer_pump(&p, timeout_ms, cond_set_up);
	if (rc == -EPIPE)
		say("note: the agent closed the connection during set-up (%s)",
		    p.got_close ? p.close_reason : p.close_how);
	if (rc != 1) {
		say("note: no HELLO and end of index for %s from the agent within %d ms", folder,
		    timeout_ms);
		rc = rc < 0 ? rc : -ETIMEDOUT;
		goto out;
	}
	say("scenario: %s", sc->name);
	rc = sc->run(&p);
	ran = 1;
out:
	if (ran && rc == 0 && p.closed) {
		printf("result: closed");
		if (p.got_close)
			printf(" reason=\"%s\"", p.close_reason);
		else
			printf(" (no CLOSE: %s)", p.close_how);
		say("%s", "");
	} else if (ran && rc == 0) {
		say("result: alive");
	} else {
		say("result: error %s", strerror_any(rc));
	}
	if (p.fd >= 0)
		close(p.fd);
	for (size_t k = 0; k < p.noffers; k++)
		free(p.offers[k].data);
	sec_cipher_free(p.tx);
	sec_cipher_free(p.rx);
	sec_identity_release(&p.ident);
	proto_assembler_release(&p.as);
	proto_buf_release(&p.out);
	free(p.rbuf);
	free(p.pt);
	return rc == 0 ? 0 : 1;
}

int
main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (sec_init() != 0) {
		fprintf(stderr, "shoal_evilpeer: cannot initialise libsodium\n");
		return 1;
	}
	if (argc == 3 && strcmp(argv[1], "id") == 0)
		return cmd_id(argv[2]);
	if (argc == 2 && strcmp(argv[1], "list") == 0) {
		for (size_t k = 0; k < sizeof(scenarios) / sizeof(scenarios[0]); k++)
			say("%s", scenarios[k].name);
		return 0;
	}
	if (argc >= 2 && strcmp(argv[1], "run") == 0)
		return cmd_run(argc - 2, argv + 2);
	return usage();
}
