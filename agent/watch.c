/*
 * agent/watch.c - the watcher: inotify on every directory of every folder.
 *
 * Events name paths; each path waits until it has been quiet for
 * WATCH_SETTLE_MS (a file still being written keeps waiting, up to
 * WATCH_MAX_WAIT_MS) and is then scanned on its own (a scoped scan). A queue
 * overflow asks for a full scan. Watches are (re)added for every directory a
 * scan finds, through /proc/self/fd of a descriptor opened beneath the folder
 * root, so a watch never follows a symlink out of the folder. When the
 * kernel's watch limit is reached the agent says so once, with the sysctl
 * that raises it, and relies on periodic rescans.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

#include "agent/agent.h"
#include "agent/fsops.h"
#include "agent/log.h"
#include "agent/util.h"

#define WATCH_MASK                                                                         \
	(IN_CREATE | IN_CLOSE_WRITE | IN_MODIFY | IN_ATTRIB | IN_DELETE | IN_MOVED_FROM |   \
	 IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR | IN_EXCL_UNLINK)
#define WATCH_SETTLE_MS 100
#define WATCH_MAX_WAIT_MS 10000
#define WATCH_MAX_PENDING 10000 /* more changed paths than this: scan the whole folder */
#define WATCH_EXPECT_MS 5000    /* how long an expected event of the puller's is waited for */

struct wdir {
	struct folder *f;
	char *path; /* "" for the folder root */
};

struct wpend {
	struct wpend *next;
	char *path;
	uint64_t first_ms, last_ms;
};

struct watcher {
	struct agent *ag;
	int fd;
	uv_poll_t poll;
	uv_timer_t timer;
	struct wdir *dirs; /* indexed by watch descriptor */
	size_t ndirs;
	int limit_warned;
	int failed;
	int closed; /* handles closed so far, when stopping */
};

int
watch_available(const struct agent *ag)
{
	return ag->watch && !ag->watch->failed;
}

static void
wdir_clear(struct watcher *w, int wd)
{
	if (wd >= 0 && (size_t)wd < w->ndirs) {
		free(w->dirs[wd].path);
		w->dirs[wd].path = NULL;
		w->dirs[wd].f = NULL;
	}
}

static void
pend_add(struct folder *f, const char *path, size_t len, uint64_t now)
{
	struct wpend *p;
	uint64_t found;

	if (f->full_scan_pending)
		return;
	if (strmap_get(&f->wpend_map, path, len, &found)) {
		((struct wpend *)(uintptr_t)found)->last_ms = now;
		return;
	}
	if (f->nwpend >= WATCH_MAX_PENDING) {
		f->full_scan_pending = 1;
		f->full_scan_at_ms = now + WATCH_SETTLE_MS;
		return;
	}
	p = calloc(1, sizeof(*p));
	if (!p || !(p->path = strndup(path, len)) ||
	    strmap_put(&f->wpend_map, path, len, (uintptr_t)p) != 0) {
		if (p)
			free(p->path);
		free(p);
		f->full_scan_pending = 1;
		f->full_scan_at_ms = now + WATCH_SETTLE_MS;
		return;
	}
	p->first_ms = p->last_ms = now;
	p->next = f->wpend;
	f->wpend = p;
	f->nwpend++;
}

void
watch_folder_clear(struct folder *f)
{
	struct watcher *w = f->ag->watch;

	watch_folder_clear_pending(f);
	strmap_clear(&f->own_changes);
	if (!w)
		return;
	for (size_t i = 0; i < w->ndirs; i++) {
		if (w->dirs[i].f == f) {
			inotify_rm_watch(w->fd, (int)i);
			wdir_clear(w, (int)i);
		}
	}
}

/* Moves settled paths into the folders' scan scopes; re-arms for the rest. */
static void
on_settle(uv_timer_t *t)
{
	struct watcher *w = t->data;
	struct agent *ag = w->ag;
	uint64_t now = now_ms(), next = UINT64_MAX;
	int kicked = 0;

	for (struct folder *f = ag->folders; f; f = f->next) {
		if (f->full_scan_pending) {
			if (now >= f->full_scan_at_ms) {
				f->full_scan_pending = 0;
				f->scan_full = 1;
				f->scan_wanted = 1;
				kicked = 1;
				watch_folder_clear_pending(f);
			} else if (f->full_scan_at_ms < next) {
				next = f->full_scan_at_ms;
			}
			continue;
		}
		for (struct wpend **pp = &f->wpend; *pp;) {
			struct wpend *p = *pp;
			uint64_t due = p->last_ms + WATCH_SETTLE_MS;
			if (p->first_ms + WATCH_MAX_WAIT_MS < due)
				due = p->first_ms + WATCH_MAX_WAIT_MS;
			if (now < due) {
				if (due < next)
					next = due;
				pp = &p->next;
				continue;
			}
			*pp = p->next;
			f->nwpend--;
			strmap_del(&f->wpend_map, p->path, strlen(p->path));
			if (folder_add_scope(f, p->path) != 0)
				f->scan_full = 1;
			p->path = NULL;
			free(p);
			f->scan_wanted = 1;
			kicked = 1;
		}
	}
	if (next != UINT64_MAX)
		uv_timer_start(&w->timer, on_settle, next - now, 0);
	if (kicked)
		agent_kick(ag);
}

void
watch_folder_clear_pending(struct folder *f)
{
	while (f->wpend) {
		struct wpend *p = f->wpend;
		f->wpend = p->next;
		free(p->path);
		free(p);
	}
	f->nwpend = 0;
	strmap_clear(&f->wpend_map);
}

void
watch_expect(struct folder *f, const char *name, size_t len)
{
	if (watch_available(f->ag))
		strmap_put(&f->own_changes, name, len, now_ms() + WATCH_EXPECT_MS);
}

void
watch_unexpect(struct folder *f, const char *name, size_t len)
{
	strmap_del(&f->own_changes, name, len);
}

#define EXPECT_RENAMED (1ull << 63)

static int
expect_expired(uint64_t until, void *arg)
{
	return (until & ~EXPECT_RENAMED) <= *(uint64_t *)arg;
}

/*
 * Whether an event is the puller's own (watch_expect): the creation of a
 * directory or a delete; or a file's rename into place, then the close of
 * the descriptor it was written through (which names the file by its new
 * name).
 */
static int
own_change(struct folder *f, const char *path, size_t len, uint32_t mask)
{
	uint64_t v;

	if (!(mask & (IN_MOVED_TO | IN_CLOSE_WRITE | IN_CREATE | IN_DELETE)) ||
	    !strmap_get(&f->own_changes, path, len, &v))
		return 0;
	if ((mask & (IN_MOVED_TO | IN_ISDIR)) == IN_MOVED_TO && !(v & EXPECT_RENAMED))
		return strmap_put(&f->own_changes, path, len, v | EXPECT_RENAMED) == 0;
	if ((mask & IN_CLOSE_WRITE) && !(v & EXPECT_RENAMED))
		return 0;
	strmap_del(&f->own_changes, path, len);
	return 1;
}

void
watch_tick(struct agent *ag, uint64_t now)
{
	for (struct folder *f = ag->folders; f; f = f->next)
		if (f->own_changes.n)
			strmap_prune(&f->own_changes, expect_expired, &now);
}

static void
on_inotify(uv_poll_t *h, int status, int events)
{
	struct watcher *w = h->data;
	struct agent *ag = w->ag;
	char buf[16384] __attribute__((aligned(__alignof__(struct inotify_event))));
	char path[4096 + 256];
	uint64_t now = now_ms();
	int any = 0;

	if (status < 0 || !(events & UV_READABLE))
		return;
	for (;;) {
		ssize_t n = read(w->fd, buf, sizeof(buf));
		if (n <= 0)
			break;
		for (char *p = buf; p < buf + n;) {
			struct inotify_event *ev = (struct inotify_event *)p;
			p += sizeof(*ev) + ev->len;
			if (ev->mask & IN_Q_OVERFLOW) {
				log_warn("the file watcher's queue overflowed; rescanning every folder");
				for (struct folder *f = ag->folders; f; f = f->next) {
					f->full_scan_pending = 1;
					f->full_scan_at_ms = now + WATCH_SETTLE_MS;
				}
				any = 1;
				continue;
			}
			if (ev->wd < 0 || (size_t)ev->wd >= w->ndirs || !w->dirs[ev->wd].f)
				continue;
			struct wdir *d = &w->dirs[ev->wd];
			if (ev->mask & IN_IGNORED) {
				wdir_clear(w, ev->wd);
				continue;
			}
			if (ev->len == 0 || ev->name[0] == '\0') {
				/* The directory itself went: its parent's event covers it; the
				 * root going is a full scan, which then finds the marker gone. */
				if ((ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF)) && d->path[0] == '\0') {
					d->f->full_scan_pending = 1;
					d->f->full_scan_at_ms = now + WATCH_SETTLE_MS;
					any = 1;
				}
				continue;
			}
			if (strncmp(ev->name, ".shoal", 6) == 0)
				continue; /* our own temporary files and marker */
			size_t dl = strlen(d->path), nl = strlen(ev->name);
			if (dl + 1 + nl >= sizeof(path))
				continue;
			size_t len = 0;
			if (dl) {
				memcpy(path, d->path, dl);
				path[dl] = '/';
				len = dl + 1;
			}
			memcpy(path + len, ev->name, nl);
			len += nl;
			/*
			 * The puller's own rename of a file into place, creation of a
			 * directory (which it watches itself) or delete: it records what
			 * it did, so neither the entry nor its parent's mtime is scanned.
			 */
			if (own_change(d->f, path, len, ev->mask))
				continue;
			if ((ev->mask & (IN_ISDIR | IN_ATTRIB)) == (IN_ISDIR | IN_ATTRIB) &&
			    !(ev->mask & (IN_CREATE | IN_MOVED_TO))) {
				/* A directory's mode or times: its own entry, not what is in it. */
				char dir[4096 + 256 + 8];
				dir[0] = SCOPE_SHALLOW;
				memcpy(dir + 1, path, len);
				pend_add(d->f, dir, len + 1, now);
				any = 1;
				continue;
			}
			pend_add(d->f, path, len, now);
			/* An entry added or removed changes the directory's own mtime. */
			if (dl && (ev->mask & (IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO))) {
				char dir[4096 + 8];
				dir[0] = SCOPE_SHALLOW;
				memcpy(dir + 1, d->path, dl);
				pend_add(d->f, dir, dl + 1, now);
			}
			any = 1;
		}
	}
	if (any && !uv_is_active((uv_handle_t *)&w->timer))
		uv_timer_start(&w->timer, on_settle, WATCH_SETTLE_MS, 0);
}

void
watch_dir(struct folder *f, const char *path)
{
	struct watcher *w = f->ag->watch;
	char proc[64];
	int fd, wd;

	if (!w || w->failed)
		return;
	fd = fs_open_beneath(f->rootfd, path[0] ? path : ".", O_PATH | O_DIRECTORY, 0);
	if (fd < 0)
		return;
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	wd = inotify_add_watch(w->fd, proc, WATCH_MASK);
	close(fd);
	if (wd < 0) {
		if (errno == ENOSPC && !w->limit_warned) {
			w->limit_warned = 1;
			log_warn("the kernel's limit on inotify watches is reached: changes in some "
				 "directories are found only by the periodic rescan. Raise it with "
				 "`sysctl fs.inotify.max_user_watches=1048576` (and in "
				 "/etc/sysctl.d/ to keep it)");
			f->ag->rescan_interval_ms = f->ag->rescan_fallback_ms;
		}
		return;
	}
	if ((size_t)wd >= w->ndirs) {
		size_t n = w->ndirs ? w->ndirs : 256;
		while (n <= (size_t)wd)
			n *= 2;
		struct wdir *nd = realloc(w->dirs, n * sizeof(*nd));
		if (!nd)
			return;
		memset(nd + w->ndirs, 0, (n - w->ndirs) * sizeof(*nd));
		w->dirs = nd;
		w->ndirs = n;
	}
	if (w->dirs[wd].path && w->dirs[wd].f == f && strcmp(w->dirs[wd].path, path) == 0)
		return;
	wdir_clear(w, wd);
	w->dirs[wd].f = f;
	w->dirs[wd].path = strdup(path);
}

int
watch_start(struct agent *ag)
{
	struct watcher *w = calloc(1, sizeof(*w));

	if (!w)
		return -ENOMEM;
	w->ag = ag;
	w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (w->fd < 0) {
		int rc = -errno;
		log_warn("no file watcher (%s): changes are found by the periodic rescan",
			 strerror(-rc));
		free(w);
		return rc;
	}
	uv_poll_init(ag->loop, &w->poll, w->fd);
	uv_timer_init(ag->loop, &w->timer);
	w->poll.data = w->timer.data = w;
	uv_poll_start(&w->poll, UV_READABLE, on_inotify);
	ag->watch = w;
	return 0;
}

static void
on_watch_closed(uv_handle_t *h)
{
	struct watcher *w = h->data;
	if (++w->closed < 2)
		return;
	close(w->fd);
	for (size_t i = 0; i < w->ndirs; i++)
		free(w->dirs[i].path);
	free(w->dirs);
	free(w);
}

void
watch_stop(struct agent *ag)
{
	struct watcher *w = ag->watch;
	if (!w)
		return;
	ag->watch = NULL;
	w->failed = 1;
	uv_close((uv_handle_t *)&w->poll, on_watch_closed);
	uv_close((uv_handle_t *)&w->timer, on_watch_closed);
}
