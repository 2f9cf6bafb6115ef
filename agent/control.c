/*
 * agent/control.c - the local control socket (HOME/control.sock).
 *
 * A client connects, writes one command line and reads the answer until the
 * agent closes the connection. Commands:
 *   status                  one JSON object
 *   reload                  re-read the configuration now
 *   scan FOLDER [PATH]      scan now (PATH and what is under it, or everything)
 *   scanwait FOLDER [PATH]  the same, answering once that scan has finished
 *   events SINCE            the events after SINCE, then every new one, one
 *                           JSON object per line, until the client leaves
 *   revert FOLDER           a receive-only folder drops its local changes The socket is created under
 * umask 077 (srwx------) in the 0700 state directory: only the agent's own
 * user reaches it.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/agent.h"
#include "agent/events.h"
#include "agent/json.h"
#include "agent/log.h"
#include "proto/proto.h"

#define CTL_LINE_MAX 1024

struct ctl_client {
	uv_pipe_t pipe;
	struct ctl_client *next;
	struct agent *ag;
	int closing;
	int events;          /* subscribed to the event stream */
	char *wait_folder;   /* scanwait: the folder... */
	uint64_t wait_gen;   /* ...and the request generation to see finished */
	char line[CTL_LINE_MAX];
	size_t len;
	int done;
};

struct ctl_write {
	uv_write_t req;
	struct ctl_client *cl;
	char *text;
	int keep; /* an event line: the connection stays open */
};

static void
on_client_closed(uv_handle_t *h)
{
	struct ctl_client *cl = h->data;
	struct ctl_client **pp = &cl->ag->ctl_clients;
	if (cl->events)
		events_unsubscribe(cl->ag, cl);
	free(cl->wait_folder);
	while (*pp && *pp != cl)
		pp = &(*pp)->next;
	if (*pp)
		*pp = cl->next;
	free(cl);
}

static void
ctl_client_close(struct ctl_client *cl)
{
	if (cl->closing)
		return;
	cl->closing = 1;
	uv_close((uv_handle_t *)&cl->pipe, on_client_closed);
}

static void
on_reply_written(uv_write_t *req, int status)
{
	struct ctl_write *w = (struct ctl_write *)req;
	if (!w->keep || status < 0)
		ctl_client_close(w->cl);
	free(w->text);
	free(w);
}

static void
ctl_reply(struct ctl_client *cl, const char *text)
{
	struct ctl_write *w = calloc(1, sizeof(*w));
	size_t n = strlen(text);

	if (!w || !(w->text = malloc(n + 1))) {
		free(w);
		ctl_client_close(cl);
		return;
	}
	memcpy(w->text, text, n);
	w->text[n] = '\n';
	w->cl = cl;
	uv_buf_t buf = uv_buf_init(w->text, (unsigned)n + 1);
	if (uv_write(&w->req, (uv_stream_t *)&cl->pipe, &buf, 1, on_reply_written) != 0) {
		free(w->text);
		free(w);
		ctl_client_close(cl);
	}
}

static void
counts_json(struct json *j, const char *key, const struct counts *c)
{
	json_key(j, key);
	json_obj_open(j);
	json_key(j, "files");
	json_u64(j, c->files);
	json_key(j, "bytes");
	json_u64(j, c->bytes);
	json_obj_close(j);
}

void
status_json_running(struct agent *ag, struct json *j)
{
	json_obj_open(j);
	json_key(j, "device");
	json_obj_open(j);
	json_key(j, "id");
	json_str(j, ag->idstr);
	json_key(j, "name");
	json_str(j, ag->cfg.name ? ag->cfg.name : "");
	json_key(j, "listen");
	json_str(j, ag->listen_addr);
	json_obj_close(j);
	json_key(j, "running");
	json_bool(j, 1);
	json_key(j, "folders");
	json_arr_open(j);
	for (size_t i = 0; i < ag->cfg.nfolders; i++) {
		struct folder *f = agent_folder(ag, ag->cfg.folders[i].id,
						strlen(ag->cfg.folders[i].id));
		if (!f)
			continue;
		json_obj_open(j);
		json_key(j, "id");
		json_str(j, f->id);
		json_key(j, "label");
		json_str(j, f->label ? f->label : f->id);
		json_key(j, "path");
		json_str(j, f->path);
		json_key(j, "mode");
		json_str(j, mode_name(f->mode));
		json_key(j, "state");
		json_str(j, folder_state_name(f->state));
		json_key(j, "error");
		if (f->state == FOLDER_ERROR)
			json_str(j, f->error);
		else
			json_null(j);
		counts_json(j, "local", &f->local);
		counts_json(j, "global", &f->global);
		counts_json(j, "need", &f->need);
		{
			/* Deletions our index still remembers (expire.c forgets old ones). */
			struct store_txn *txn;
			struct store_checkpoint cp = { 0 };
			if (store_read_begin(ag->store, &txn) == 0) {
				store_checkpoint_get(txn, f->num, STORE_LOCAL, &cp);
				store_read_end(txn);
			}
			json_key(j, "tombstones");
			json_u64(j, cp.deleted);
		}
		json_key(j, "progress");
		if (f->pull) {
			json_obj_open(j);
			json_key(j, "bytes_done");
			json_u64(j, f->pull_done_bytes);
			json_key(j, "bytes_total");
			json_u64(j, f->pull_total_bytes);
			json_key(j, "bytes_per_s");
			json_u64(j, f->pull_rate);
			json_key(j, "eta_s");
			if (f->pull_rate && f->pull_total_bytes >= f->pull_done_bytes)
				json_u64(j, (f->pull_total_bytes - f->pull_done_bytes) / f->pull_rate);
			else
				json_null(j);
			json_obj_close(j);
		} else {
			json_null(j);
		}
		json_key(j, "shared_with");
		json_arr_open(j);
		for (size_t k = 0; k < f->nshares; k++) {
			char idstr[SEC_DEVID_STRLEN + 1];
			sec_devid_format(f->shares[k], idstr);
			json_str(j, idstr);
		}
		json_arr_close(j);
		json_obj_close(j);
	}
	json_arr_close(j);
	json_key(j, "devices");
	json_arr_open(j);
	for (size_t i = 0; i < ag->cfg.npeers; i++) {
		struct device *d = agent_device(ag, ag->cfg.peers[i].id);
		if (!d)
			continue;
		int up = d->conn && conn_active(d->conn);
		json_obj_open(j);
		json_key(j, "id");
		json_str(j, d->idstr);
		json_key(j, "name");
		json_str(j, d->name ? d->name : "");
		json_key(j, "connected");
		json_bool(j, up);
		json_key(j, "address");
		if (up)
			json_str(j, conn_address(d->conn));
		else
			json_null(j);
		json_key(j, "in_bytes");
		json_u64(j, d->in_bytes);
		json_key(j, "out_bytes");
		json_u64(j, d->out_bytes);
		json_obj_close(j);
	}
	json_arr_close(j);
	json_obj_close(j);
}

/* Sends one event line; drops a subscriber that does not keep up. */
static int
ctl_event_line(struct ctl_client *cl, const char *line, size_t len)
{
	struct ctl_write *w;

	if (cl->closing)
		return 1;
	if (uv_stream_get_write_queue_size((uv_stream_t *)&cl->pipe) > (4u << 20)) {
		ctl_client_close(cl);
		return 1;
	}
	w = calloc(1, sizeof(*w));
	if (!w || !(w->text = malloc(len + 1))) {
		free(w);
		return 0;
	}
	memcpy(w->text, line, len);
	w->text[len] = '\n';
	w->cl = cl;
	w->keep = 1;
	uv_buf_t buf = uv_buf_init(w->text, (unsigned)len + 1);
	if (uv_write(&w->req, (uv_stream_t *)&cl->pipe, &buf, 1, on_reply_written) != 0) {
		free(w->text);
		free(w);
		ctl_client_close(cl);
		return 1;
	}
	return 0;
}

void
control_scan_finished(struct agent *ag, struct folder *f)
{
	for (struct ctl_client *cl = ag->ctl_clients; cl; cl = cl->next) {
		if (cl->closing || !cl->wait_folder || strcmp(cl->wait_folder, f->id) != 0 ||
		    f->scan_done_gen < cl->wait_gen)
			continue;
		free(cl->wait_folder);
		cl->wait_folder = NULL;
		ctl_reply(cl, f->state == FOLDER_ERROR ? "error: the scan failed; see status" : "ok");
	}
}

static void
ctl_command(struct ctl_client *cl)
{
	struct agent *ag = cl->ag;
	char *cmd = cl->line;

	cl->done = 1;
	if (strcmp(cmd, "status") == 0) {
		struct json j;
		json_init(&j);
		status_json_running(ag, &j);
		const char *t = json_finish(&j);
		ctl_reply(cl, t ? t : "{\"error\":\"out of memory\"}");
		json_release(&j);
	} else if (strncmp(cmd, "scan ", 5) == 0 || strncmp(cmd, "scanwait ", 9) == 0) {
		int wait = cmd[4] == 'w';
		char *fid = cmd + (wait ? 9 : 5);
		char *path = strchr(fid, ' ');
		if (path)
			*path++ = '\0';
		struct folder *f = agent_folder(ag, fid, strlen(fid));
		if (!f) {
			ctl_reply(cl, "error: no such folder");
			return;
		}
		if (path && *path) {
			while (*path == '/')
				path++;
			size_t n = strlen(path);
			while (n > 0 && path[n - 1] == '/')
				path[--n] = '\0';
		}
		if (path && *path && proto_path_check((const uint8_t *)path, strlen(path)) != 0) {
			ctl_reply(cl, "error: not a path inside the folder");
			return;
		}
		if (path && *path)
			folder_add_scope(f, strdup(path));
		else
			f->scan_full = 1;
		f->scan_wanted = 1;
		f->next_scan_ms = 0;
		f->scan_req_gen++;
		agent_kick(ag);
		if (!wait) {
			ctl_reply(cl, "ok");
			return;
		}
		cl->wait_folder = strdup(f->id);
		cl->wait_gen = f->scan_req_gen;
		if (!cl->wait_folder)
			ctl_reply(cl, "error: out of memory");
	} else if (strncmp(cmd, "events", 6) == 0) {
		uint64_t since = strtoull(cmd + 6, NULL, 10);
		cl->events = 1;
		events_subscribe(ag, cl, since, ctl_event_line);
	} else if (strncmp(cmd, "revert ", 7) == 0) {
		struct folder *f = agent_folder(ag, cmd + 7, strlen(cmd + 7));
		int rc = f ? folder_revert(f) : -ENOENT;
		ctl_reply(cl, rc == 0 ? "ok" : rc == -ENOENT ? "error: no such folder"
				  : rc == -EINVAL ? "error: only a receive-only folder can be reverted"
						  : "error: cannot revert; see the log");
	} else if (strcmp(cmd, "reload") == 0) {
		int rc = agent_reload(ag);
		ctl_reply(cl, rc == 0 ? "ok" : "error: the configuration has an error; see the log");
	} else {
		ctl_reply(cl, "error: unknown command");
	}
}

static void
on_ctl_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct ctl_client *cl = h->data;
	(void)suggested;
	*buf = uv_buf_init(cl->line + cl->len, (unsigned)(sizeof(cl->line) - 1 - cl->len));
}

static void
on_ctl_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	struct ctl_client *cl = s->data;
	(void)buf;

	if (cl->done)
		return;
	if (nread < 0) {
		ctl_client_close(cl);
		return;
	}
	cl->len += (size_t)nread;
	cl->line[cl->len] = '\0';
	char *nl = strchr(cl->line, '\n');
	if (nl) {
		*nl = '\0';
		uv_read_stop(s);
		ctl_command(cl);
	} else if (cl->len >= sizeof(cl->line) - 1) {
		cl->done = 1;
		uv_read_stop(s);
		ctl_reply(cl, "error: command too long");
	}
}

static void
on_ctl_connection(uv_stream_t *server, int status)
{
	struct agent *ag = server->data;
	struct ctl_client *cl;

	if (status < 0)
		return;
	cl = calloc(1, sizeof(*cl));
	if (!cl)
		return;
	cl->ag = ag;
	uv_pipe_init(ag->loop, &cl->pipe, 0);
	cl->pipe.data = cl;
	cl->next = ag->ctl_clients;
	ag->ctl_clients = cl;
	if (uv_accept(server, (uv_stream_t *)&cl->pipe) != 0 ||
	    uv_read_start((uv_stream_t *)&cl->pipe, on_ctl_alloc, on_ctl_read) != 0)
		ctl_client_close(cl);
}

int
control_listen(struct agent *ag)
{
	int rc;
	mode_t old;

	unlink(ag->sock_path); /* stale: the agent lock says no other agent runs */
	uv_pipe_init(ag->loop, &ag->control, 0);
	ag->control.data = ag;
	ag->control_open = 1;
	old = umask(0077);
	rc = uv_pipe_bind(&ag->control, ag->sock_path);
	umask(old);
	if (rc == 0)
		rc = uv_listen((uv_stream_t *)&ag->control, 16, on_ctl_connection);
	return rc;
}

static void
on_control_closed(uv_handle_t *h)
{
	(void)h;
}

void
control_close(struct agent *ag)
{
	/* A client that connected and went quiet must not keep the agent alive. */
	for (struct ctl_client *cl = ag->ctl_clients; cl; cl = cl->next)
		ctl_client_close(cl);
	if (ag->control_open) {
		uv_close((uv_handle_t *)&ag->control, on_control_closed);
		ag->control_open = 0;
		unlink(ag->sock_path);
	}
}
