/*
 * agent/conn.c - one TCP connection to a peer: handshake, encrypted frames,
 * message dispatch, index sending and block serving.
 *
 * States move forward in one place each: CONNECTING (outgoing TCP connect),
 * HANDSHAKE (Noise XX messages in plain 2-byte frames), ACTIVE (encrypted
 * frames; the peer's HELLO must come first), CLOSING (handle closing; the
 * struct is freed once libuv closed it and no thread-pool job refers to it).
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "agent/agent.h"
#include "agent/events.h"
#include "agent/fsops.h"
#include "agent/invites.h"
#include "agent/log.h"
#include "agent/util.h"
#include "crypto/sec.h"
#include "proto/msg.h"

#define HANDSHAKE_TIMEOUT_MS 10000
#define IDLE_TIMEOUT_DEFAULT_MS 60000

/* A connection that received nothing this long is dead; pings go at a third of it. */
static uint64_t
idle_timeout_ms(void)
{
	static uint64_t v;
	if (!v) {
		const char *e = getenv("SHOAL_IDLE_TIMEOUT_S"); /* for tests */
		v = e && atoi(e) >= 3 ? (uint64_t)atoi(e) * 1000 : IDLE_TIMEOUT_DEFAULT_MS;
	}
	return v;
}
#define WQUEUE_HIGH (4u << 20)   /* stop producing index batches above this */
#define SERVE_HIGH (16u << 20)   /* bytes being read from disk for one peer at most */
#define SERVE_WAIT_MAX 256       /* requests waiting for their turn before reading stops */
#define INDEX_BATCH_FILES 1000
#define INDEX_BATCH_BYTES (1u << 20)
#define RESP_HDR_ROOM 32

static const char prologue[] = "shoal/1";

enum conn_state { CONN_CONNECTING, CONN_NEGOTIATE, CONN_HANDSHAKE, CONN_ACTIVE, CONN_CLOSING };

/*
 * Before Noise starts, the initiator offers the cipher suites it can run and
 * the responder picks one (AES-256-GCM where both CPUs have AES-NI: several
 * times faster than ChaCha20-Poly1305 here). Offer and choice are part of the
 * handshake's prologue, so an attacker who alters either makes the handshake
 * fail: no downgrade.
 */
#define NEGO_MAGIC 0x53 /* 'S' */
#define NEGO_VERSION 1
#define SUITE_BIT_CHACHA 0x1u
#define SUITE_BIT_AESGCM 0x2u

struct conn_folder {
	struct folder *f;
	uint64_t sent_seq;
	int pending;
	int initial; /* the first index is still being sent */
	int full;    /* ... and it is the full index, from sequence 0 */
};

struct conn {
	uv_tcp_t tcp;
	uv_connect_t connect_req;
	struct conn *next;
	struct agent *ag;
	enum conn_state state;
	int initiator;
	int hs_step;
	struct device *dev;
	int got_hello;
	int guest;             /* an unknown device that may claim an invite (dev is ours to free) */
	int joining;           /* we sent JOIN and wait for the owner's answer */
	int close_after_write; /* close once everything queued is written */
	int answering_join;    /* a known device's JOIN: the answer must go out before we close */
	uint8_t offer;         /* the suites we offered (initiator) */
	int guest_done;
	struct sec_handshake *hs;
	struct sec_cipher *tx, *rx;
	uint8_t *rbuf;
	size_t rlen, rcap;
	uint8_t *ptbuf;
	struct proto_assembler as;
	struct proto_buf out;
	struct proto_buf files;
	size_t wqueued;
	int reading;
	int handle_open;
	uint64_t started_ms, last_rx_ms, last_tx_ms;
	struct conn_folder *cf;
	size_t ncf;
	size_t serving, serving_bytes;
	struct serve_job *wait_head, *wait_tail; /* requests not started yet */
	size_t nwait;
	char addr[80];
	uint64_t in_bytes, out_bytes;
};

struct write_req {
	uv_write_t req;
	struct conn *c;
	size_t len;
	uint8_t data[];
};

struct serve_job {
	uv_work_t work;
	struct serve_job *next; /* waiting list */
	struct folder *f;
	struct conn *c;
	int rootfd;
	char *name;
	uint64_t offset;
	uint32_t size, id;
	uint32_t code;
	uint8_t *buf; /* RESP_HDR_ROOM + size */
};

static void conn_pump(struct conn *c);
static int conn_send_join(struct conn *c);
static void conn_on_negotiate(struct conn *c, const uint8_t *p, size_t len);
static void conn_on_join(struct conn *c, const struct proto_join *j);
static void conn_on_join_result(struct conn *c, const struct proto_join_result *r);
static void conn_update_reading(struct conn *c);

struct device *
conn_device(const struct conn *c)
{
	return c->dev;
}

int
conn_active(const struct conn *c)
{
	return c->state == CONN_ACTIVE && c->got_hello;
}

int
conn_answering_join(const struct conn *c)
{
	return c->answering_join;
}

const char *
conn_address(const struct conn *c)
{
	return c->addr;
}

uint64_t
conn_in_bytes(const struct conn *c)
{
	return c->in_bytes;
}

uint64_t
conn_out_bytes(const struct conn *c)
{
	return c->out_bytes;
}

static struct conn *
conn_new(struct agent *ag, int initiator)
{
	struct conn *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->ag = ag;
	c->initiator = initiator;
	c->rcap = 2 * (PROTO_FRAME_HDR + PROTO_FRAME_MAX);
	c->rbuf = malloc(c->rcap);
	c->ptbuf = malloc(PROTO_FRAME_MAX);
	if (!c->rbuf || !c->ptbuf) {
		free(c->rbuf);
		free(c->ptbuf);
		free(c);
		return NULL;
	}
	proto_assembler_init(&c->as, PROTO_MSG_MAX);
	proto_buf_init(&c->out);
	proto_buf_init(&c->files);
	c->started_ms = c->last_rx_ms = c->last_tx_ms = now_ms();
	if (uv_tcp_init(ag->loop, &c->tcp) != 0) {
		proto_assembler_release(&c->as);
		free(c->rbuf);
		free(c->ptbuf);
		free(c);
		return NULL;
	}
	c->handle_open = 1;
	c->tcp.data = c;
	c->next = ag->conns;
	ag->conns = c;
	return c;
}

static void
serve_drop_waiting(struct conn *c)
{
	while (c->wait_head) {
		struct serve_job *j = c->wait_head;
		c->wait_head = j->next;
		free(j->name);
		free(j);
	}
	c->wait_tail = NULL;
	c->nwait = 0;
}

static void
conn_free_if_done(struct conn *c)
{
	if (c->handle_open || c->serving > 0)
		return;
	struct conn **pp = &c->ag->conns;
	while (*pp && *pp != c)
		pp = &(*pp)->next;
	if (*pp)
		*pp = c->next;
	serve_drop_waiting(c);
	if (c->guest && c->dev) {
		free(c->dev->name);
		free(c->dev);
	}
	sec_handshake_free(c->hs);
	sec_cipher_free(c->tx);
	sec_cipher_free(c->rx);
	proto_assembler_release(&c->as);
	proto_buf_release(&c->out);
	proto_buf_release(&c->files);
	free(c->cf);
	free(c->rbuf);
	free(c->ptbuf);
	free(c);
}

static void
on_close(uv_handle_t *h)
{
	struct conn *c = h->data;
	c->handle_open = 0;
	conn_free_if_done(c);
}

/*
 * Tells the peer why we close, if the socket takes it right now: a CLOSE
 * frame written with uv_try_write, never queued behind other data.
 */
static void
conn_send_close(struct conn *c, const char *reason)
{
	uint8_t frame[PROTO_FRAME_HDR + 1 + 160 + PROTO_TAG];
	struct proto_buf b;
	char r[128];

	snprintf(r, sizeof(r), "%s", reason);
	proto_buf_init(&b);
	if (proto_encode_close(&b, r) == 0 && b.len <= 160) {
		uint8_t *body = frame + PROTO_FRAME_HDR;
		proto_frame_header(frame, 1 + b.len + PROTO_TAG);
		body[0] = PROTO_FRAG_LAST;
		memcpy(body + 1, b.p, b.len);
		if (sec_cipher_seal(c->tx, body, 1 + b.len, body) == 0) {
			uv_buf_t buf = uv_buf_init((char *)frame,
						   (unsigned)(PROTO_FRAME_HDR + 1 + b.len + PROTO_TAG));
			uv_try_write((uv_stream_t *)&c->tcp, &buf, 1);
		}
	}
	proto_buf_release(&b);
}

void
conn_close(struct conn *c, const char *reason)
{
	struct device *d = c->dev;

	if (c->state == CONN_CLOSING)
		return;
	if (d) {
		if (d->conn == c && !c->got_hello && strcmp(reason, "joined") == 0) {
			d->conn = NULL;
		} else if (d->conn == c && !c->got_hello) {
			log_warn("%s (%s) closed the connection before it was set up (%s): does it "
				 "know this device, and share a folder with it?",
				 d->name ? d->name : d->idstr, c->addr, reason);
			d->conn = NULL; /* the next dial waits for the backoff set when dialling */
		} else if (d->conn == c) {
			log_info("disconnected from %s (%s): %s", d->name ? d->name : d->idstr, c->addr,
				 reason);
			if (c->ag->events && !c->ag->stopping) {
				struct json *j = events_begin(c->ag, "device_disconnected");
				json_key(j, "device");
				json_str(j, d->idstr);
				json_key(j, "reason");
				json_str(j, reason);
				events_end(c->ag, j, 0);
			}
			d->conn = NULL;
			d->backoff_ms = 0;
			d->next_dial_ms = now_ms() + 500 + randombytes_uniform(1000);
		} else {
			log_debug("connection %s closed: %s", c->addr, reason);
		}
		if (d->dialing == c)
			d->dialing = NULL;
	} else {
		log_debug("connection %s closed: %s", c->addr, reason);
	}
	if (c->state == CONN_ACTIVE && c->tx && reason)
		conn_send_close(c, reason);
	c->state = CONN_CLOSING;
	serve_drop_waiting(c);
	pull_on_conn_closed(c->ag, c);
	uv_close((uv_handle_t *)&c->tcp, on_close);
}

/* ---- writing ---- */

static void
on_write(uv_write_t *req, int status)
{
	struct write_req *w = (struct write_req *)req;
	struct conn *c = w->c;

	c->wqueued -= w->len;
	if (status >= 0) {
		/* Counted once the kernel has taken the bytes, not when they were queued. */
		c->out_bytes += w->len;
		if (c->dev && c->state != CONN_CLOSING)
			c->dev->out_bytes += w->len;
	}
	free(w);
	if (status < 0) {
		if (status != UV_ECANCELED)
			conn_close(c, uv_strerror(status));
		return;
	}
	if (c->close_after_write && c->wqueued == 0) {
		conn_close(c, "done");
		return;
	}
	if (c->state == CONN_ACTIVE) {
		conn_update_reading(c);
		conn_pump(c);
	}
}

static int
conn_write(struct conn *c, struct write_req *w)
{
	uv_buf_t buf = uv_buf_init((char *)w->data, (unsigned)w->len);
	int rc;

	w->c = c;
	rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &buf, 1, on_write);
	if (rc < 0) {
		free(w);
		conn_close(c, uv_strerror(rc));
		return rc;
	}
	c->wqueued += w->len;
	c->last_tx_ms = now_ms();
	return 0;
}

/* Sends one handshake message in a plain frame. */
static int
conn_send_raw(struct conn *c, const uint8_t *p, size_t len)
{
	struct write_req *w = malloc(sizeof(*w) + PROTO_FRAME_HDR + len);
	if (!w)
		return -ENOMEM;
	w->len = PROTO_FRAME_HDR + len;
	proto_frame_header(w->data, len);
	memcpy(w->data + PROTO_FRAME_HDR, p, len);
	return conn_write(c, w);
}

/* Encrypts one whole message into as many frames as it needs and queues them. */
static int
conn_send_msg(struct conn *c, const uint8_t *msg, size_t len)
{
	const size_t chunk = PROTO_FRAGMENT_MAX - 1;
	size_t nframes = len == 0 ? 1 : (len + chunk - 1) / chunk;
	size_t total = nframes * (PROTO_FRAME_HDR + 1 + PROTO_TAG) + len;
	struct write_req *w;
	uint8_t *o;
	size_t off = 0;
	int rc;

	if (c->state != CONN_ACTIVE)
		return -ENOTCONN;
	w = malloc(sizeof(*w) + total);
	if (!w)
		return -ENOMEM;
	w->len = total;
	o = w->data;
	for (size_t i = 0; i < nframes; i++) {
		size_t n = len - off < chunk ? len - off : chunk;
		uint8_t *body = o + PROTO_FRAME_HDR;
		proto_frame_header(o, 1 + n + PROTO_TAG);
		body[0] = off + n == len ? PROTO_FRAG_LAST : PROTO_FRAG_MORE;
		memcpy(body + 1, msg + off, n);
		rc = sec_cipher_seal(c->tx, body, 1 + n, body);
		if (rc != 0) {
			free(w);
			conn_close(c, sec_strerror(rc));
			return rc;
		}
		o += PROTO_FRAME_HDR + 1 + n + PROTO_TAG;
		off += n;
	}
	return conn_write(c, w);
}

static int
conn_send_buf(struct conn *c)
{
	int rc = conn_send_msg(c, c->out.p, c->out.len);
	proto_buf_reset(&c->out);
	return rc;
}

/* ---- index sending ---- */

static void
file_to_proto(const struct store_file *sf, struct proto_file *pf, struct proto_counter *ver,
	      struct proto_block *blocks)
{
	memset(pf, 0, sizeof(*pf));
	pf->name.p = (const uint8_t *)sf->name;
	pf->name.len = sf->name_len;
	pf->type = sf->type;
	pf->flags = sf->flags & (STORE_FLAG_DELETED | STORE_FLAG_INVALID);
	pf->mode = sf->mode;
	pf->size = sf->size;
	pf->mtime_s = sf->mtime_s;
	pf->mtime_ns = sf->mtime_ns;
	pf->sequence = sf->sequence;
	pf->block_size = sf->block_size;
	pf->target.p = (const uint8_t *)sf->target;
	pf->target.len = sf->target_len;
	for (size_t i = 0; i < sf->nversion; i++) {
		ver[i].id = sf->version[i].id;
		ver[i].value = sf->version[i].value;
	}
	pf->nversion = sf->nversion;
	pf->version = ver;
	for (size_t i = 0; i < sf->nblocks; i++) {
		memcpy(blocks[i].hash, sf->blocks[i].hash, 32);
		blocks[i].size = sf->blocks[i].size;
	}
	pf->nblocks = sf->nblocks;
	pf->blocks = blocks;
}

struct batch_ctx {
	struct conn *c;
	struct conn_folder *cf;
	uint32_t n;
	uint64_t last_seq;
	int full;
	int err;
	struct proto_counter *ver;
	size_t vcap;
	struct proto_block *blocks;
	size_t bcap;
};

static int
batch_add(const struct store_file *sf, void *arg)
{
	struct batch_ctx *b = arg;
	struct proto_file pf;

	if (b->n >= INDEX_BATCH_FILES || b->c->files.len >= INDEX_BATCH_BYTES) {
		b->full = 1;
		return 1;
	}
	b->last_seq = sf->sequence;
	/* A receive-only folder keeps its own changes out of the cluster. */
	if (sf->flags & STORE_FLAG_LOCALCHANGE)
		return 0;
	if (sf->nversion > b->vcap) {
		free(b->ver);
		b->vcap = sf->nversion;
		if (!(b->ver = malloc(b->vcap * sizeof(*b->ver))))
			return -ENOMEM;
	}
	if (sf->nblocks > b->bcap) {
		free(b->blocks);
		b->bcap = sf->nblocks;
		if (!(b->blocks = malloc(b->bcap * sizeof(*b->blocks))))
			return -ENOMEM;
	}
	file_to_proto(sf, &pf, b->ver, b->blocks);
	if (proto_encode_file(&b->c->files, &pf) != 0)
		return -ENOMEM;
	b->n++;
	return 0;
}

/* Sends the next index batch of cf. Returns 1 if one was sent, 0 if nothing pending. */
static int
conn_send_index_batch(struct conn *c, struct conn_folder *cf)
{
	struct batch_ctx b;
	struct store_txn *txn;
	int rc;

	memset(&b, 0, sizeof(b));
	b.c = c;
	b.cf = cf;
	b.last_seq = cf->sent_seq;
	proto_buf_reset(&c->files);
	rc = store_read_begin(c->ag->store, &txn);
	if (rc != 0) {
		conn_close(c, store_strerror(rc));
		return 0;
	}
	rc = store_seq_each(txn, cf->f->num, STORE_LOCAL, cf->sent_seq, 1, batch_add, &b);
	store_read_end(txn);
	free(b.ver);
	free(b.blocks);
	if (rc < 0) {
		conn_close(c, "cannot read the local index");
		return 0;
	}
	if (!b.full)
		cf->pending = 0;
	if (b.n == 0 && !(cf->initial && !b.full)) {
		cf->sent_seq = b.last_seq;
		return b.full;
	}
	/* A full index goes as INDEX; catching up from a checkpoint and later changes as updates. */
	rc = proto_encode_index_begin(&c->out, cf->full ? PROTO_INDEX : PROTO_INDEX_UPDATE,
				      (const uint8_t *)cf->f->id, strlen(cf->f->id),
				      cf->f->index_id, cf->initial && !b.full, b.n);
	if (rc == 0)
		rc = proto_buf_append(&c->out, c->files.p, c->files.len);
	if (rc != 0) {
		conn_close(c, "out of memory");
		return 0;
	}
	log_debug("sending %u index entries of %s to %s (seq %llu..%llu)", b.n, cf->f->id,
		  c->dev->idstr, (unsigned long long)cf->sent_seq, (unsigned long long)b.last_seq);
	if (!b.full)
		cf->initial = cf->full = 0;
	cf->sent_seq = b.last_seq;
	conn_send_buf(c);
	return 1;
}

static void
conn_pump(struct conn *c)
{
	int progress = 1;

	while (progress && c->state == CONN_ACTIVE && c->got_hello && c->wqueued < WQUEUE_HIGH) {
		progress = 0;
		for (size_t i = 0; i < c->ncf && c->state == CONN_ACTIVE; i++) {
			if (c->cf[i].pending && conn_send_index_batch(c, &c->cf[i]))
				progress = 1;
		}
	}
}

void
conn_index_changed(struct conn *c, struct folder *f)
{
	for (size_t i = 0; i < c->ncf; i++) {
		if (c->cf[i].f == f) {
			c->cf[i].pending = 1;
			conn_pump(c);
			return;
		}
	}
}

/* ---- hello ---- */

static int
conn_send_hello(struct conn *c)
{
	struct agent *ag = c->ag;
	struct proto_folder *pf = NULL;
	struct proto_hello h;
	struct store_txn *txn = NULL;
	size_t n = 0, cap = 0;
	const char *name = ag->cfg.name ? ag->cfg.name : "";
	int rc;

	for (struct folder *f = ag->folders; f; f = f->next)
		cap++;
	pf = calloc(cap ? cap : 1, sizeof(*pf));
	if (!pf)
		return -ENOMEM;
	rc = store_read_begin(ag->store, &txn);
	if (rc != 0)
		goto out;
	for (struct folder *f = ag->folders; f; f = f->next) {
		struct store_checkpoint mine, theirs;
		if (!folder_shared_with(f, c->dev) || f->rootfd < 0)
			continue;
		store_checkpoint_get(txn, f->num, STORE_LOCAL, &mine);
		store_checkpoint_get(txn, f->num, c->dev->num, &theirs);
		pf[n].id.p = (const uint8_t *)f->id;
		pf[n].id.len = strlen(f->id);
		pf[n].label.p = (const uint8_t *)(f->label ? f->label : f->id);
		pf[n].label.len = strlen(f->label ? f->label : f->id);
		pf[n].flags = (f->mode != MODE_RECEIVE ? PROTO_FOLDER_SEND : 0) |
			      (f->mode != MODE_SEND ? PROTO_FOLDER_RECEIVE : 0);
		pf[n].index_id = f->index_id;
		pf[n].max_seq = mine.max_seq;
		pf[n].peer_index_id = theirs.index_id;
		pf[n].peer_max_seq = theirs.max_seq;
		n++;
	}
	store_read_end(txn);
	memset(&h, 0, sizeof(h));
	h.device_name.p = (const uint8_t *)name;
	h.device_name.len = strlen(name);
	h.client_name.p = (const uint8_t *)"shoal";
	h.client_name.len = 5;
	h.client_version.p = (const uint8_t *)SHOAL_VERSION;
	h.client_version.len = strlen(SHOAL_VERSION);
	h.nfolders = n;
	h.folders = pf;
	rc = proto_encode_hello(&c->out, &h);
	if (rc == 0)
		rc = conn_send_buf(c);
out:
	free(pf);
	return rc;
}

struct index_reset {
	uint32_t folder, dev;
	uint64_t index_id;
};

static int
txn_index_reset(struct store_txn *txn, void *arg)
{
	struct index_reset *r = arg;
	struct store_checkpoint cp;
	int rc = store_index_drop(txn, r->folder, r->dev);
	if (rc != 0)
		return rc;
	memset(&cp, 0, sizeof(cp));
	cp.index_id = r->index_id;
	return store_checkpoint_put(txn, r->folder, r->dev, &cp);
}

static void
conn_on_hello(struct conn *c, const struct proto_hello *h)
{
	struct agent *ag = c->ag;
	struct device *d = c->dev;
	struct conn_folder *cf;
	size_t n = 0;

	cf = calloc(h->nfolders ? h->nfolders : 1, sizeof(*cf));
	if (!cf) {
		conn_close(c, "out of memory");
		return;
	}
	for (size_t i = 0; i < h->nfolders; i++) {
		const struct proto_folder *pf = &h->folders[i];
		struct folder *f = agent_folder(ag, (const char *)pf->id.p, pf->id.len);
		int dup = 0;
		if (!f || !folder_shared_with(f, d) || f->rootfd < 0) {
			log_debug("%s offers folder %.*s, which is not shared with it here", d->idstr,
				  (int)pf->id.len, (const char *)pf->id.p);
			continue;
		}
		for (size_t j = 0; j < n; j++)
			dup |= cf[j].f == f;
		if (dup)
			continue;
		/* Do we hold the index the peer has now? If not, drop ours of it. */
		if (f->mode != MODE_SEND) {
			struct store_txn *txn;
			struct store_checkpoint theirs;
			if (store_read_begin(ag->store, &txn) == 0) {
				store_checkpoint_get(txn, f->num, d->num, &theirs);
				store_read_end(txn);
				if (theirs.index_id != pf->index_id) {
					struct index_reset r = {f->num, d->num, pf->index_id};
					int rc = store_write(ag->store, txn_index_reset, &r);
					if (rc != 0) {
						folder_set_error(f, "database: %s", store_strerror(rc));
						continue;
					}
				}
			}
		}
		cf[n].f = f;
		folder_dirty_all(f); /* what this device offers was left out while it was away */
		cf[n].pending = 1;
		cf[n].initial = 1;
		cf[n].sent_seq = 0;
		cf[n].full = 1;
		if (pf->peer_index_id == f->index_id) {
			struct store_txn *txn;
			struct store_checkpoint mine;
			if (store_read_begin(ag->store, &txn) == 0) {
				store_checkpoint_get(txn, f->num, STORE_LOCAL, &mine);
				store_read_end(txn);
				if (pf->peer_max_seq <= mine.max_seq) {
					cf[n].sent_seq = pf->peer_max_seq;
					cf[n].full = 0;
				}
			}
		}
		n++;
	}
	free(c->cf);
	c->cf = cf;
	c->ncf = n;
	c->got_hello = 1;
	d->backoff_ms = 0;
	log_info("connected to %s (%s) at %s, %zu shared folder%s", d->name ? d->name : "?",
		 d->idstr, c->addr, n, n == 1 ? "" : "s");
	struct json *j = events_begin(ag, "device_connected");
	json_key(j, "device");
	json_str(j, d->idstr);
	json_key(j, "address");
	json_str(j, c->addr);
	events_end(ag, j, 0);
	conn_pump(c);
	agent_kick(ag);
}

/* ---- receiving an index ---- */

struct index_store_ctx {
	struct folder *f;
	struct device *d;
	const struct proto_index *ix;
	uint64_t index_id;
	uint64_t self_id, self_max;
	uint64_t bad_seq, prev_seq;
	size_t refused;
	const struct proto_file *refused_name;
};

static int
txn_store_index(struct store_txn *txn, void *arg)
{
	struct index_store_ctx *x = arg;
	struct store_checkpoint cp;
	struct store_counter *ver = NULL;
	struct store_block *blocks = NULL;
	size_t vcap = 0, bcap = 0;
	int rc = 0;

	rc = store_checkpoint_get(txn, x->f->num, x->d->num, &cp);
	if (rc != 0)
		return rc;
	if (cp.index_id != x->index_id)
		return -ESTALE;
	/* Sequence numbers only go up: a peer that rewinds is broken or lying. */
	uint64_t prev = cp.max_seq;
	for (size_t i = 0; i < x->ix->nfiles; i++) {
		if (x->ix->files[i].sequence <= prev) {
			x->bad_seq = x->ix->files[i].sequence;
			x->prev_seq = prev;
			return -ERANGE;
		}
		prev = x->ix->files[i].sequence;
	}
	for (size_t i = 0; i < x->ix->nfiles; i++) {
		const struct proto_file *pf = &x->ix->files[i];
		struct store_file sf;
		/*
		 * A version that gives this device a counter above any it ever used
		 * claims an edit we never made: refused, so that it cannot outrank
		 * our real edits.
		 */
		int inflated = 0;
		for (size_t k = 0; k < pf->nversion; k++)
			inflated |= pf->version[k].id == x->self_id && pf->version[k].value > x->self_max;
		if (inflated) {
			x->refused++;
			if (!x->refused_name)
				x->refused_name = pf;
			continue;
		}
		if (pf->nversion > vcap) {
			free(ver);
			vcap = pf->nversion;
			if (!(ver = malloc(vcap * sizeof(*ver)))) {
				rc = -ENOMEM;
				goto out;
			}
		}
		if (pf->nblocks > bcap) {
			free(blocks);
			bcap = pf->nblocks;
			if (!(blocks = malloc(bcap * sizeof(*blocks)))) {
				rc = -ENOMEM;
				goto out;
			}
		}
		memset(&sf, 0, sizeof(sf));
		sf.name = (const char *)pf->name.p;
		sf.name_len = pf->name.len;
		sf.type = pf->type;
		sf.flags = pf->flags;
		sf.mode = pf->mode;
		sf.size = pf->size;
		sf.mtime_s = pf->mtime_s;
		sf.mtime_ns = pf->mtime_ns;
		sf.sequence = pf->sequence;
		sf.block_size = pf->block_size;
		sf.target = (const char *)pf->target.p;
		sf.target_len = pf->target.len;
		for (size_t k = 0; k < pf->nversion; k++) {
			ver[k].id = pf->version[k].id;
			ver[k].value = pf->version[k].value;
		}
		sf.nversion = pf->nversion;
		sf.version = ver;
		for (size_t k = 0; k < pf->nblocks; k++) {
			memcpy(blocks[k].hash, pf->blocks[k].hash, 32);
			blocks[k].size = pf->blocks[k].size;
		}
		sf.nblocks = pf->nblocks;
		sf.blocks = blocks;
		rc = store_file_put(txn, x->f->num, x->d->num, &sf);
		if (rc != 0)
			goto out;
	}
out:
	free(ver);
	free(blocks);
	return rc;
}

static void
conn_on_index(struct conn *c, const struct proto_msg *m)
{
	const struct proto_index *ix = &m->u.index;
	struct folder *f = NULL;
	int rc;

	for (size_t i = 0; i < c->ncf; i++) {
		if (strlen(c->cf[i].f->id) == ix->folder.len &&
		    memcmp(c->cf[i].f->id, ix->folder.p, ix->folder.len) == 0)
			f = c->cf[i].f;
	}
	if (!f) {
		log_peer(LOG_WARN, "%s sent an index for folder %.*s, which is not shared with it",
			 c->dev->idstr, (int)(ix->folder.len > 64 ? 64 : ix->folder.len),
			 (const char *)ix->folder.p);
		conn_close(c, "index for a folder not shared");
		return;
	}
	if (f->mode == MODE_SEND) {
		/* A send-only folder takes no changes from anyone. */
		return;
	}
	/* Our counters are at most the clock (or the highest we used): an hour of skew is allowed. */
	uint64_t now_s = (uint64_t)time(NULL);
	struct index_store_ctx x;
	memset(&x, 0, sizeof(x));
	x.f = f;
	x.d = c->dev;
	x.ix = ix;
	x.index_id = ix->index_id;
	x.self_id = c->ag->short_id;
	x.self_max = (f->self_max > now_s ? f->self_max : now_s) + 3600;
	rc = store_write(c->ag->store, txn_store_index, &x);
	if (rc == -ESTALE) {
		conn_close(c, "index for an index id it did not announce");
		return;
	}
	if (rc == -ERANGE) {
		log_peer(LOG_WARN, "%s sent sequence numbers that go backwards in folder %s (%llu after %llu); "
			 "closing",
			 c->dev->idstr, f->id, (unsigned long long)x.bad_seq,
			 (unsigned long long)x.prev_seq);
		conn_close(c, "sequence numbers went backwards");
		return;
	}
	if (x.refused)
		log_peer(LOG_WARN, "%s announced %zu entr%s in %s (first: %.*s) with a version that inflates "
			 "this device's counter; refused",
			 c->dev->idstr, x.refused, x.refused == 1 ? "y" : "ies", f->id,
			 (int)(x.refused_name->name.len > 200 ? 200 : x.refused_name->name.len),
			 (const char *)x.refused_name->name.p);
	if (rc != 0) {
		/* Closing makes the peer send these entries again from our last checkpoint. */
		folder_set_error(f, "cannot record %s's index: %s", c->dev->idstr,
				 store_strerror(rc));
		conn_close(c, "cannot record the index");
		return;
	}
	log_debug("stored %zu index entries of %s from %s", ix->nfiles, f->id, c->dev->idstr);
	for (size_t i = 0; i < ix->nfiles; i++)
		folder_dirty_name(f, (const char *)ix->files[i].name.p, ix->files[i].name.len);
	struct json *j = events_begin(c->ag, "remote_index_updated");
	json_key(j, "folder");
	json_str(j, f->id);
	json_key(j, "device");
	json_str(j, c->dev->idstr);
	json_key(j, "items");
	json_u64(j, ix->nfiles);
	events_end(c->ag, j, 0);
	f->pull_wanted = 1;
	if (m->type == PROTO_INDEX && !ix->last)
		f->pull_at_ms = now_ms() + 2000; /* wait for the rest of the first index */
	else
		f->pull_at_ms = now_ms() + 10;
	agent_kick(c->ag);
}

/* ---- serving blocks ---- */

static void
serve_work(uv_work_t *w)
{
	struct serve_job *j = w->data;
	ssize_t got = 0;
	int fd = fs_open_beneath(j->rootfd, j->name, O_RDONLY, 0);

	if (fd < 0) {
		j->code = PROTO_R_NOTFOUND;
		return;
	}
	while ((size_t)got < j->size) {
		ssize_t r = pread(fd, j->buf + RESP_HDR_ROOM + got, j->size - (size_t)got,
				  (off_t)(j->offset + (uint64_t)got));
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		got += r;
	}
	close(fd);
	j->code = (size_t)got == j->size ? PROTO_R_OK : PROTO_R_NOTFOUND;
}

static void serve_pump(struct conn *c);

static void
serve_done(uv_work_t *w, int status)
{
	struct serve_job *j = w->data;
	struct conn *c = j->c;
	struct proto_buf hb;

	c->serving--;
	c->serving_bytes -= j->size;
	if (c->state == CONN_ACTIVE && status == 0) {
		uint32_t len = j->code == PROTO_R_OK ? j->size : 0;
		proto_buf_init(&hb);
		if (proto_encode_response_header(&hb, j->id, j->code, len) == 0 &&
		    hb.len <= RESP_HDR_ROOM) {
			uint8_t *start = j->buf + RESP_HDR_ROOM - hb.len;
			memcpy(start, hb.p, hb.len);
			conn_send_msg(c, start, hb.len + len);
		}
		proto_buf_release(&hb);
	}
	close(j->rootfd);
	free(j->name);
	free(j->buf);
	free(j);
	if (c->state == CONN_CLOSING) {
		conn_free_if_done(c);
		return;
	}
	serve_pump(c);
	conn_update_reading(c);
}

static void
conn_respond(struct conn *c, uint32_t id, uint32_t code)
{
	if (proto_encode_response_header(&c->out, id, code, 0) == 0)
		conn_send_buf(c);
}

/*
 * Starts waiting requests while less than SERVE_HIGH bytes are being read:
 * the buffer for a block is allocated only when its read starts, so a peer
 * that sends a flood of requests costs a small record each, and reading from
 * it stops once SERVE_WAIT_MAX records wait.
 */
static void
serve_pump(struct conn *c)
{
	while (c->wait_head && c->state == CONN_ACTIVE && c->serving_bytes < SERVE_HIGH) {
		struct serve_job *j = c->wait_head;
		c->wait_head = j->next;
		if (!c->wait_head)
			c->wait_tail = NULL;
		c->nwait--;
		if (j->f->rootfd < 0 || !(j->buf = malloc(RESP_HDR_ROOM + j->size)) ||
		    (j->rootfd = fcntl(j->f->rootfd, F_DUPFD_CLOEXEC, 3)) < 0) {
			conn_respond(c, j->id, PROTO_R_ERROR);
			free(j->buf);
			free(j->name);
			free(j);
			continue;
		}
		j->work.data = j;
		c->serving++;
		c->serving_bytes += j->size;
		if (uv_queue_work(c->ag->loop, &j->work, serve_work, serve_done) != 0) {
			c->serving--;
			c->serving_bytes -= j->size;
			conn_respond(c, j->id, PROTO_R_ERROR);
			close(j->rootfd);
			free(j->buf);
			free(j->name);
			free(j);
		}
	}
}

static void
conn_on_request(struct conn *c, const struct proto_request *r)
{
	struct folder *f = NULL;
	struct serve_job *j;

	for (size_t i = 0; i < c->ncf; i++) {
		if (strlen(c->cf[i].f->id) == r->folder.len &&
		    memcmp(c->cf[i].f->id, r->folder.p, r->folder.len) == 0)
			f = c->cf[i].f;
	}
	if (!f || !folder_shared_with(f, c->dev) || f->rootfd < 0) {
		log_peer(LOG_WARN, "%s asked for a block of folder %.*s, which is not shared with it",
			 c->dev->idstr, (int)(r->folder.len > 64 ? 64 : r->folder.len),
			 (const char *)r->folder.p);
		conn_respond(c, r->id, PROTO_R_DENIED);
		return;
	}
	j = calloc(1, sizeof(*j));
	if (!j || !(j->name = strndup((const char *)r->name.p, r->name.len))) {
		free(j);
		conn_respond(c, r->id, PROTO_R_ERROR);
		return;
	}
	j->c = c;
	j->f = f;
	j->id = r->id;
	j->offset = r->offset;
	j->size = r->size;
	j->rootfd = -1;
	if (c->wait_tail)
		c->wait_tail->next = j;
	else
		c->wait_head = j;
	c->wait_tail = j;
	c->nwait++;
	serve_pump(c);
	conn_update_reading(c);
}

/* ---- invites: the owner's side ---- */

static void
conn_on_join(struct conn *c, const struct proto_join *j)
{
	struct agent *ag = c->ag;
	char folder[PROTO_INVITE_FIELD_MAX + 1], name[65], msg[200];
	struct folder *f;
	int code;

	if (j->folder.len > PROTO_INVITE_FIELD_MAX) {
		conn_close(c, "bad join");
		return;
	}
	/* The reload that shares the folder must not cut this connection before the answer. */
	c->answering_join = 1;
	memcpy(folder, j->folder.p, j->folder.len);
	folder[j->folder.len] = '\0';
	f = agent_folder(ag, folder, j->folder.len);
	if (!f) {
		code = PROTO_J_WRONG;
		snprintf(msg, sizeof(msg), "no folder %s here", folder);
	} else if (!c->guest && folder_shared_with(f, c->dev)) {
		/*
		 * Already a member: it asks again when our answer was lost (the
		 * connection dropped). Say yes without spending another use.
		 */
		code = PROTO_J_OK;
		snprintf(msg, sizeof(msg), "already a member of %s", folder);
	} else {
		code = invite_claim(ag->home, folder, j->secret.p, j->secret.len, msg, sizeof(msg));
	}
	/* A name for people: printable characters only. */
	size_t nl = 0;
	for (size_t i = 0; i < j->device_name.len && nl < sizeof(name) - 1; i++) {
		unsigned char ch = j->device_name.p[i];
		if (ch >= 0x20 && ch != 0x7f)
			name[nl++] = (char)ch;
	}
	name[nl] = '\0';
	if (code == PROTO_J_OK && agent_add_member(ag, c->dev->id, name, folder) != 0) {
		code = PROTO_J_ERROR;
		snprintf(msg, sizeof(msg), "the owner could not update its configuration");
	}
	if (code == PROTO_J_OK)
		log_info("device %s (%s) joined folder %s with an invite", c->dev->idstr,
			 name[0] ? name : "?", folder);
	else
		log_peer(LOG_WARN, "device %s at %s presented an invite for %s that was refused: %s",
			 c->dev->idstr, c->addr, folder, msg);
	if (proto_encode_join_result(&c->out, (uint32_t)code, msg) == 0 && conn_send_buf(c) == 0)
		c->close_after_write = 1;
	else
		conn_close(c, "cannot answer the join");
	c->guest_done = 1;
}

/* ---- invites: the member's side ---- */

/* Sends JOIN when an invite from this device is pending. Returns 1 if it did. */
static int
conn_send_join(struct conn *c)
{
	struct join *v = NULL;
	size_t n = 0;
	int sent = 0;

	if (joins_load(c->ag->home, &v, &n) != 0)
		return 0;
	for (size_t i = 0; i < n && !sent; i++) {
		if (memcmp(v[i].owner, c->dev->id, 32) != 0 || strcmp(v[i].state, "pending") != 0)
			continue;
		struct proto_join j;
		const char *name = c->ag->cfg.name ? c->ag->cfg.name : "";
		j.folder.p = (const uint8_t *)v[i].folder;
		j.folder.len = strlen(v[i].folder);
		j.secret.p = v[i].secret;
		j.secret.len = PROTO_INVITE_SECRET;
		j.device_name.p = (const uint8_t *)name;
		j.device_name.len = strlen(name);
		if (proto_encode_join(&c->out, &j) == 0 && conn_send_buf(c) == 0) {
			c->joining = 1;
			sent = 1;
			log_info("presenting the invite for folder %s to %s", v[i].folder, c->dev->idstr);
		}
	}
	sodium_memzero(v, n * sizeof(*v));
	free(v);
	return sent;
}

static void
conn_on_join_result(struct conn *c, const struct proto_join_result *r)
{
	struct device *d = c->dev;
	struct join *v = NULL;
	size_t n = 0;
	char msg[200];
	int lock = invites_lock(c->ag->home);

	snprintf(msg, sizeof(msg), "%.*s", (int)(r->message.len > 190 ? 190 : r->message.len),
		 (const char *)r->message.p);
	for (char *p = msg; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = ' ';
	if (lock >= 0 && joins_load(c->ag->home, &v, &n) == 0) {
		for (size_t i = 0; i < n; i++) {
			if (memcmp(v[i].owner, d->id, 32) != 0 || strcmp(v[i].state, "pending") != 0)
				continue;
			snprintf(v[i].state, sizeof(v[i].state), "%s",
				 r->code == PROTO_J_OK ? "accepted" : "refused");
			snprintf(v[i].message, sizeof(v[i].message), "%s", msg);
		}
		joins_save(c->ag->home, v, n);
	}
	free(v);
	invites_unlock(lock);
	c->joining = 0;
	if (r->code == PROTO_J_OK) {
		log_info("%s accepted the invite: %s", d->idstr, msg);
		d->backoff_ms = 0;
		d->next_dial_ms = 0; /* reconnect at once, now as a known device */
		conn_close(c, "joined");
	} else {
		log_error("%s refused the invite: %s", d->idstr, msg);
		d->join_refused = 1;
		conn_close(c, "invite refused");
	}
}

/* ---- message dispatch ---- */

static void
conn_on_message(struct conn *c, const uint8_t *p, size_t len)
{
	struct proto_msg m;
	int rc = proto_msg_decode(p, len, &m);

	if (rc != 0) {
		log_peer(LOG_WARN, "malformed message from %s at %s: %s", c->dev->idstr, c->addr,
			 proto_strerror(rc));
		conn_close(c, "malformed message");
		return;
	}
	if (c->guest) {
		if (m.type == PROTO_JOIN && !c->guest_done) {
			conn_on_join(c, &m.u.join);
		} else {
			log_peer(LOG_WARN, "refused unknown device %s at %s: it presented no invite",
				 c->dev->idstr, c->addr);
			conn_close(c, "an unknown device must present an invite first");
		}
		goto out;
	}
	if (c->joining) {
		if (m.type == PROTO_JOIN_RESULT)
			conn_on_join_result(c, &m.u.join_result);
		else if (m.type != PROTO_HELLO && m.type != PROTO_PING)
			conn_close(c, "expected the answer to our invite");
		/* An owner that already knew us greets us first: its answer follows. */
		goto out;
	}
	if (c->answering_join)
		goto out; /* it closes once the answer is written; nothing else counts */
	if (!c->got_hello && m.type == PROTO_JOIN && !c->guest_done) {
		/* A device we know may claim an invite too, instead of its HELLO. */
		conn_on_join(c, &m.u.join);
		goto out;
	}
	if (!c->got_hello && m.type != PROTO_HELLO) {
		conn_close(c, "message before hello");
		goto out;
	}
	switch (m.type) {
	case PROTO_HELLO:
		if (c->got_hello) {
			conn_close(c, "second hello");
			break;
		}
		if (m.u.hello.device_name.len && !c->dev->name)
			c->dev->name = strndup((const char *)m.u.hello.device_name.p,
					       m.u.hello.device_name.len);
		conn_on_hello(c, &m.u.hello);
		break;
	case PROTO_INDEX:
	case PROTO_INDEX_UPDATE:
		conn_on_index(c, &m);
		break;
	case PROTO_REQUEST:
		conn_on_request(c, &m.u.request);
		break;
	case PROTO_RESPONSE:
		pull_on_response(c->ag, c, &m.u.response);
		break;
	case PROTO_PING:
		break;
	case PROTO_JOIN:
	case PROTO_JOIN_RESULT:
		conn_close(c, "join message on an established connection");
		break;
	case PROTO_CLOSE:
		log_info("%s closes the connection: %.*s", c->dev->idstr,
			 (int)(m.u.close.reason.len > 200 ? 200 : m.u.close.reason.len),
			 (const char *)m.u.close.reason.p);
		conn_close(c, "closed by peer");
		break;
	}
out:
	proto_msg_release(&m);
}

/* ---- handshake ---- */

static void
conn_authenticated(struct conn *c)
{
	struct device *d = c->dev;
	int rc;

	rc = sec_handshake_split(c->hs, &c->tx, &c->rx);
	sec_handshake_free(c->hs);
	c->hs = NULL;
	if (rc != 0) {
		conn_close(c, sec_strerror(rc));
		return;
	}
	c->state = CONN_ACTIVE;
	if (c->guest)
		return; /* it must claim an invite with JOIN first */
	if (d->dialing == c)
		d->dialing = NULL;
	if (d->conn) {
		/* Two connections to one device: keep the one whose initiator has the lower ID. */
		struct conn *old = d->conn;
		const unsigned char *ini_new = c->initiator ? c->ag->ident.id : d->id;
		const unsigned char *ini_old = old->initiator ? c->ag->ident.id : d->id;
		/*
		 * Same initiator: the peer redialled (it restarted, or the old
		 * connection is half-open): the new one wins.
		 */
		if (memcmp(ini_new, ini_old, 32) <= 0) {
			d->conn = NULL;
			conn_close(old, "replaced by a newer connection");
		} else {
			conn_close(c, "duplicate connection");
			return;
		}
	}
	d->conn = c;
	if (conn_send_join(c))
		return;
	if (conn_send_hello(c) != 0)
		conn_close(c, "cannot send hello");
}

static int
conn_check_peer(struct conn *c, unsigned char devid[32])
{
	unsigned char rs[32];
	if (sec_handshake_remote_static(c->hs, rs) != 0)
		return -1;
	sec_devid_from_x25519(rs, devid);
	if (memcmp(devid, c->ag->ident.id, 32) == 0)
		return -2;
	return 0;
}

static void
conn_on_handshake(struct conn *c, const uint8_t *p, size_t len)
{
	uint8_t out[256];
	size_t outlen, plen;
	uint8_t payload[256];
	unsigned char devid[32];
	char idstr[SEC_DEVID_STRLEN + 1];
	int rc;

	if (c->initiator && c->hs_step == 1) {
		/* <- e, ee, s, es */
		rc = sec_handshake_read(c->hs, p, len, payload, sizeof(payload), &plen);
		if (rc != 0)
			goto fail;
		rc = conn_check_peer(c, devid);
		if (rc == -2) {
			conn_close(c, "connected to myself");
			return;
		}
		if (rc != 0 || memcmp(devid, c->dev->id, 32) != 0) {
			sec_devid_format(devid, idstr);
			log_peer(LOG_WARN, "%s answered as %s, not as the expected %s; not revealing our key",
				 c->addr, idstr, c->dev->idstr);
			conn_close(c, "unexpected device");
			return;
		}
		/* -> s, se */
		rc = sec_handshake_write(c->hs, NULL, 0, out, sizeof(out), &outlen);
		if (rc != 0)
			goto fail;
		if (conn_send_raw(c, out, outlen) != 0)
			return;
		c->hs_step = 3;
		conn_authenticated(c);
		return;
	}
	if (!c->initiator && c->hs_step == 0) {
		/* -> e */
		rc = sec_handshake_read(c->hs, p, len, payload, sizeof(payload), &plen);
		if (rc != 0)
			goto fail;
		/* <- e, ee, s, es */
		rc = sec_handshake_write(c->hs, NULL, 0, out, sizeof(out), &outlen);
		if (rc != 0)
			goto fail;
		c->hs_step = 2;
		conn_send_raw(c, out, outlen);
		return;
	}
	if (!c->initiator && c->hs_step == 2) {
		/* -> s, se */
		rc = sec_handshake_read(c->hs, p, len, payload, sizeof(payload), &plen);
		if (rc != 0)
			goto fail;
		rc = conn_check_peer(c, devid);
		if (rc == -2) {
			conn_close(c, "connected to myself");
			return;
		}
		struct device *d = rc == 0 ? agent_device(c->ag, devid) : NULL;
		if (!d && rc == 0 && invites_any(c->ag->home)) {
			/* Maybe an invited device: it gets nothing until a JOIN checks out. */
			d = calloc(1, sizeof(*d));
			if (!d) {
				conn_close(c, "out of memory");
				return;
			}
			d->ag = c->ag;
			memcpy(d->id, devid, 32);
			sec_devid_format(d->id, d->idstr);
			d->short_id = sec_devid_short(d->id);
			c->guest = 1;
			log_info("unknown device %s at %s: waiting for it to present an invite",
				 d->idstr, c->addr);
		}
		if (!d) {
			sec_devid_format(devid, idstr);
			log_peer(LOG_WARN, "refused connection from unknown device %s at %s", idstr, c->addr);
			conn_close(c, "unknown device");
			return;
		}
		c->dev = d;
		c->hs_step = 3;
		conn_authenticated(c);
		return;
	}
	conn_close(c, "unexpected handshake message");
	return;
fail:
	log_peer(LOG_WARN, "handshake with %s failed: %s", c->addr, sec_strerror(rc));
	conn_close(c, "handshake failed");
}

/* ---- reading ---- */

static void
on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct conn *c = h->data;
	(void)suggested;
	*buf = uv_buf_init((char *)c->rbuf + c->rlen, (unsigned)(c->rcap - c->rlen));
}

static void
conn_process(struct conn *c)
{
	size_t off = 0;

	while (c->state == CONN_NEGOTIATE || c->state == CONN_HANDSHAKE || c->state == CONN_ACTIVE) {
		const uint8_t *body;
		size_t blen;
		int n = proto_frame_parse(c->rbuf + off, c->rlen - off, &body, &blen);
		if (n == 0)
			break;
		if (n < 0) {
			conn_close(c, "malformed frame");
			return;
		}
		off += (size_t)n;
		if (c->state == CONN_NEGOTIATE) {
			conn_on_negotiate(c, body, blen);
			continue;
		}
		if (c->state == CONN_HANDSHAKE) {
			conn_on_handshake(c, body, blen);
			continue;
		}
		if (blen < PROTO_TAG + 1) {
			conn_close(c, "short frame");
			return;
		}
		int rc = sec_cipher_open(c->rx, body, blen, c->ptbuf);
		if (rc != 0) {
			log_peer(LOG_WARN, "decryption failed on the connection with %s at %s: %s",
				 c->dev ? c->dev->idstr : "?", c->addr,
				 sec_strerror(rc));
			conn_close(c, "decryption failed");
			return;
		}
		const uint8_t *msg;
		size_t mlen;
		rc = proto_assembler_push(&c->as, c->ptbuf, blen - PROTO_TAG, &msg, &mlen);
		if (rc < 0) {
			conn_close(c, proto_strerror(rc));
			return;
		}
		if (rc == 1)
			conn_on_message(c, msg, mlen);
	}
	if (c->state == CONN_CLOSING)
		return;
	memmove(c->rbuf, c->rbuf + off, c->rlen - off);
	c->rlen -= off;
}

static void
on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	struct conn *c = s->data;
	(void)buf;

	if (nread < 0) {
		conn_close(c, nread == UV_EOF ? "connection closed" : uv_strerror((int)nread));
		return;
	}
	if (nread == 0)
		return;
	c->rlen += (size_t)nread;
	c->in_bytes += (uint64_t)nread;
	if (c->dev)
		c->dev->in_bytes += (uint64_t)nread;
	c->last_rx_ms = now_ms();
	conn_process(c);
	if (c->state != CONN_CLOSING)
		conn_update_reading(c);
}

static void
conn_update_reading(struct conn *c)
{
	int want = c->state != CONN_CLOSING && c->nwait < SERVE_WAIT_MAX &&
		   c->wqueued < 4 * WQUEUE_HIGH;
	if (want && !c->reading) {
		if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
			c->reading = 1;
	} else if (!want && c->reading) {
		uv_read_stop((uv_stream_t *)&c->tcp);
		c->reading = 0;
	}
}

/* The suites this machine offers: SHOAL_CIPHER=chacha or aesgcm limits them (tests, benchmarks). */
static uint8_t
suites_offered(void)
{
	const char *e = getenv("SHOAL_CIPHER");
	uint8_t m = SUITE_BIT_CHACHA;
	if (sodium_init() >= 0 && crypto_aead_aes256gcm_is_available())
		m |= SUITE_BIT_AESGCM;
	if (e && strcmp(e, "chacha") == 0)
		m = SUITE_BIT_CHACHA;
	else if (e && strcmp(e, "aesgcm") == 0 && (m & SUITE_BIT_AESGCM))
		m = SUITE_BIT_AESGCM;
	return m;
}

/* Starts Noise with the negotiated suite; the prologue binds the negotiation. */
static int
conn_begin_noise(struct conn *c, uint8_t offer, uint8_t choice)
{
	unsigned char pro[sizeof(prologue) - 1 + 2];
	enum sec_suite suite =
		choice == SUITE_BIT_AESGCM ? SEC_SUITE_AESGCM_SHA512 : SEC_SUITE_CHACHAPOLY_BLAKE2B;
	int rc;

	memcpy(pro, prologue, sizeof(prologue) - 1);
	pro[sizeof(prologue) - 1] = offer;
	pro[sizeof(prologue)] = choice;
	rc = sec_handshake_new(&c->hs, suite, c->initiator, c->ag->ident.x_sk, pro, sizeof(pro));
	if (rc != 0)
		return rc;
	c->state = CONN_HANDSHAKE;
	if (c->initiator) {
		uint8_t out[128];
		size_t outlen;
		/* -> e */
		rc = sec_handshake_write(c->hs, NULL, 0, out, sizeof(out), &outlen);
		if (rc != 0)
			return rc;
		c->hs_step = 1;
		return conn_send_raw(c, out, outlen);
	}
	return 0;
}

static int
conn_start_handshake(struct conn *c)
{
	c->state = CONN_NEGOTIATE;
	uv_tcp_nodelay(&c->tcp, 1);
	conn_update_reading(c);
	if (c->initiator) {
		uint8_t offer[3] = {NEGO_MAGIC, NEGO_VERSION, suites_offered()};
		c->offer = offer[2];
		return conn_send_raw(c, offer, sizeof(offer));
	}
	return 0;
}

/* The plain suite negotiation: [magic, version, offer] and [magic, version, choice]. */
static void
conn_on_negotiate(struct conn *c, const uint8_t *p, size_t len)
{
	if (len != 3 || p[0] != NEGO_MAGIC || p[1] != NEGO_VERSION) {
		log_peer(LOG_WARN, "%s does not speak this protocol version; closing", c->addr);
		conn_close(c, "bad negotiation");
		return;
	}
	if (c->initiator) {
		uint8_t choice = p[2];
		if ((choice != SUITE_BIT_CHACHA && choice != SUITE_BIT_AESGCM) ||
		    !(choice & c->offer)) {
			conn_close(c, "the peer chose a cipher suite we did not offer");
			return;
		}
		if (conn_begin_noise(c, c->offer, choice) != 0)
			conn_close(c, "cannot start handshake");
		return;
	}
	uint8_t offer = p[2], mine = suites_offered(), common = offer & mine;
	uint8_t choice = (common & SUITE_BIT_AESGCM) ? SUITE_BIT_AESGCM
			 : (common & SUITE_BIT_CHACHA) ? SUITE_BIT_CHACHA
						       : 0;
	if (!choice) {
		conn_close(c, "no cipher suite in common");
		return;
	}
	uint8_t reply[3] = {NEGO_MAGIC, NEGO_VERSION, choice};
	if (conn_send_raw(c, reply, sizeof(reply)) != 0)
		return;
	if (conn_begin_noise(c, offer, choice) != 0)
		conn_close(c, "cannot start handshake");
}

static void
peer_name(struct conn *c)
{
	struct sockaddr_storage ss;
	int len = sizeof(ss);
	char host[64] = "?";
	int port = 0;

	if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) != 0)
		return;
	if (ss.ss_family == AF_INET) {
		uv_ip4_name((struct sockaddr_in *)&ss, host, sizeof(host));
		port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
		snprintf(c->addr, sizeof(c->addr), "%s:%d", host, port);
	} else if (ss.ss_family == AF_INET6) {
		uv_ip6_name((struct sockaddr_in6 *)&ss, host, sizeof(host));
		port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
		snprintf(c->addr, sizeof(c->addr), "[%s]:%d", host, port);
	}
}

void
conn_accept(struct agent *ag, uv_stream_t *server)
{
	struct conn *c = conn_new(ag, 0);
	size_t pending = 0;

	if (!c)
		return;
	for (struct conn *o = ag->conns; o; o = o->next)
		pending += (o->state == CONN_HANDSHAKE || o->state == CONN_NEGOTIATE) && !o->initiator;
	if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
		conn_close(c, "accept failed");
		return;
	}
	peer_name(c);
	if (pending >= 64) {
		log_peer(LOG_WARN, "too many connections in handshake; refusing %s", c->addr);
		conn_close(c, "too many unauthenticated connections");
		return;
	}
	if (conn_start_handshake(c) != 0)
		conn_close(c, "cannot start handshake");
}

static void
on_connect(uv_connect_t *req, int status)
{
	struct conn *c = req->data;

	if (c->state == CONN_CLOSING)
		return;
	if (status < 0) {
		log_debug("cannot connect to %s at %s: %s", c->dev->idstr, c->addr,
			  uv_strerror(status));
		conn_close(c, uv_strerror(status));
		return;
	}
	if (conn_start_handshake(c) != 0)
		conn_close(c, "cannot start handshake");
}

static int
parse_addr(const char *addr, struct sockaddr_storage *ss)
{
	char host[256];
	const char *colon;
	const char *h = addr;
	size_t hl;
	int port;

	if (addr[0] == '[') {
		const char *end = strchr(addr, ']');
		if (!end || end[1] != ':')
			return -EINVAL;
		h = addr + 1;
		hl = (size_t)(end - h);
		colon = end + 1;
	} else {
		colon = strrchr(addr, ':');
		if (!colon)
			return -EINVAL;
		hl = (size_t)(colon - addr);
	}
	if (hl == 0 || hl >= sizeof(host))
		return -EINVAL;
	memcpy(host, h, hl);
	host[hl] = '\0';
	port = atoi(colon + 1);
	if (port <= 0 || port > 65535)
		return -EINVAL;
	memset(ss, 0, sizeof(*ss));
	if (uv_ip4_addr(host, port, (struct sockaddr_in *)ss) == 0)
		return 0;
	if (uv_ip6_addr(host, port, (struct sockaddr_in6 *)ss) == 0)
		return 0;
	struct addrinfo hints, *res = NULL;
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	if (getaddrinfo(host, NULL, &hints, &res) != 0 || !res)
		return -EHOSTUNREACH;
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	if (ss->ss_family == AF_INET)
		((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
	else
		((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
	freeaddrinfo(res);
	return 0;
}

int
conn_dial(struct agent *ag, struct device *d, const char *addr)
{
	struct sockaddr_storage ss;
	struct conn *c;
	int rc = parse_addr(addr, &ss);

	if (rc != 0) {
		log_warn("cannot use address %s of %s: %s", addr, d->idstr, strerror(-rc));
		return rc;
	}
	c = conn_new(ag, 1);
	if (!c)
		return -ENOMEM;
	c->dev = d;
	c->state = CONN_CONNECTING;
	snprintf(c->addr, sizeof(c->addr), "%s", addr);
	c->connect_req.data = c;
	rc = uv_tcp_connect(&c->connect_req, &c->tcp, (struct sockaddr *)&ss, on_connect);
	if (rc != 0) {
		conn_close(c, uv_strerror(rc));
		return rc;
	}
	d->dialing = c;
	return 0;
}

void
conn_tick(struct conn *c, uint64_t now)
{
	if (c->state == CONN_CLOSING)
		return;
	if (c->state != CONN_ACTIVE) {
		if (now - c->started_ms > HANDSHAKE_TIMEOUT_MS)
			conn_close(c, "handshake timed out");
		return;
	}
	if (now - c->last_rx_ms > idle_timeout_ms()) {
		log_info("%s at %s sent nothing for %llu s: closing", c->dev ? c->dev->idstr : "?",
			 c->addr, (unsigned long long)idle_timeout_ms() / 1000);
		conn_close(c, "idle timeout");
		return;
	}
	if (now - c->last_tx_ms > idle_timeout_ms() / 3 && proto_encode_ping(&c->out) == 0)
		conn_send_buf(c);
}

int
conn_request(struct conn *c, const struct proto_request *r)
{
	if (!conn_active(c))
		return -ENOTCONN;
	if (proto_encode_request(&c->out, r) != 0)
		return -ENOMEM;
	return conn_send_buf(c);
}

struct conn *
conn_next(const struct conn *c)
{
	return c->next;
}
