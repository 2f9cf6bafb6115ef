/*
 * agent/doctor.c - `shoal doctor`: each check looks at one thing the agent
 * needs, and says in plain words what it found and how to fix a problem.
 *
 * Checks are collected first and printed at the end, so that the human and
 * the JSON report are the same list. A check never changes anything.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "agent/config.h"
#include "agent/doctor.h"
#include "agent/home.h"
#include "agent/json.h"
#include "agent/util.h"

#define AVAHI_SOCKET "/run/avahi-daemon/socket"
#define WATCHES_PATH "/proc/sys/fs/inotify/max_user_watches"
#define SERVICE_HOME "/var/lib/shoal" /* StateDirectory=shoal of shoal.service */
#define DISK_MIN_FREE (1ull << 30)
#define DISK_MIN_PCT 5
#define CLOCK_MIN_YEAR 2024
#define CLOCK_SLACK_S 86400
#define CONNECT_TIMEOUT_MS 1000

enum doc_status { DOC_OK, DOC_WARN, DOC_FAIL };

static const char *const status_names[] = {"ok", "warn", "fail"};

struct doc_check {
	enum doc_status status;
	char *name, *message, *fix; /* fix is NULL for an ok check */
};

struct doctor {
	const char *home;
	char user[64];
	struct config cfg;
	int cfg_loaded;
	struct doc_check *checks;
	size_t n, cap;
	int oom;
};

/* Returns a malloc'd formatted string, or NULL when out of memory. */
static char *xfmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static char *
xfmt(const char *fmt, ...)
{
	va_list ap;
	char *s;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&s, fmt, ap);
	va_end(ap);
	return n < 0 ? NULL : s;
}

/* Records a check; takes ownership of message and fix (either may be NULL on OOM). */
static void
doc_add(struct doctor *d, enum doc_status st, const char *name, char *message, char *fix)
{
	char *nm = strdup(name);

	if (!nm || !message || (st != DOC_OK && !fix)) {
		d->oom = 1;
		goto fail;
	}
	if (d->n == d->cap) {
		size_t cap = d->cap ? d->cap * 2 : 16;
		struct doc_check *v = realloc(d->checks, cap * sizeof(*v));
		if (!v) {
			d->oom = 1;
			goto fail;
		}
		d->checks = v;
		d->cap = cap;
	}
	d->checks[d->n].status = st;
	d->checks[d->n].name = nm;
	d->checks[d->n].message = message;
	d->checks[d->n].fix = st == DOC_OK ? (free(fix), NULL) : fix;
	d->n++;
	return;
fail:
	free(nm);
	free(message);
	free(fix);
}

static void
user_name(uid_t uid, char *out, size_t len)
{
	struct passwd *pw = getpwuid(uid);
	if (pw && pw->pw_name)
		snprintf(out, len, "%s", pw->pw_name);
	else
		snprintf(out, len, "uid %u", (unsigned)uid);
}

/* Is path equal to dir or below it? Both absolute, without trailing '/'. */
static int
path_under(const char *path, const char *dir)
{
	size_t n = strlen(dir);
	if (n == 1 && dir[0] == '/')
		return 1;
	return strncmp(path, dir, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

/* ---- state directory, device key, configuration ---- */

static void
check_state_dir(struct doctor *d)
{
	struct stat st;
	char owner[64];
	unsigned mode;

	if (stat(d->home, &st) != 0) {
		int e = errno;
		doc_add(
		    d, DOC_FAIL, "state-dir",
		    xfmt("the state directory %s %s", d->home,
			 e == ENOENT ? "does not exist yet" : strerror(e)),
		    xfmt("run `shoal --home %s init` as the user that runs the agent", d->home));
		return;
	}
	if (!S_ISDIR(st.st_mode)) {
		doc_add(d, DOC_FAIL, "state-dir", xfmt("%s is not a directory", d->home),
			xfmt("move it away and run `shoal --home %s init`", d->home));
		return;
	}
	user_name(st.st_uid, owner, sizeof(owner));
	if (st.st_uid != geteuid()) {
		doc_add(
		    d, DOC_FAIL, "state-dir",
		    xfmt("%s belongs to %s, not to %s who runs this check: the agent must run "
			 "as the owner of its state directory, and the other checks judge "
			 "permissions for the wrong user",
			 d->home, owner, d->user),
		    xfmt("run the doctor as the agent's user: sudo -u %s shoal --home %s doctor "
			 "(or, if the agent should run as %s: sudo chown -R %s: %s)",
			 owner, d->home, d->user, d->user, d->home));
		return;
	}
	mode = st.st_mode & 07777;
	if (mode & 022) {
		doc_add(d, DOC_FAIL, "state-dir",
			xfmt("%s has mode %04o: other users can replace the files in it, "
			     "including the configuration that says which devices to trust",
			     d->home, mode),
			xfmt("chmod 700 %s", d->home));
	} else if (mode & 077) {
		doc_add(d, DOC_WARN, "state-dir",
			xfmt("%s has mode %04o: other users can read the configuration and the "
			     "index of every synced file",
			     d->home, mode),
			xfmt("chmod 700 %s", d->home));
	} else {
		doc_add(d, DOC_OK, "state-dir",
			xfmt("%s belongs to %s and only %s can open it (%04o)", d->home, owner,
			     owner, mode),
			NULL);
	}
}

static void
check_device_key(struct doctor *d)
{
	char *path = home_file(d->home, "device.key");
	struct stat st;
	unsigned mode;

	if (!path) {
		d->oom = 1;
		return;
	}
	if (lstat(path, &st) != 0) {
		int e = errno;
		doc_add(d, DOC_FAIL, "device-key",
			e == ENOENT ? xfmt("there is no device identity (%s) yet", path)
				    : xfmt("cannot read %s: %s", path, strerror(e)),
			e == ENOENT ? xfmt("run `shoal --home %s init`", d->home)
				    : xfmt("check the permissions of %s", d->home));
		goto out;
	}
	mode = st.st_mode & 07777;
	if (!S_ISREG(st.st_mode)) {
		doc_add(d, DOC_FAIL, "device-key", xfmt("%s is not a regular file", path),
			xfmt("move it away; `shoal --home %s init` then makes a new identity, "
			     "which the other devices must add again",
			     d->home));
	} else if (st.st_uid != geteuid()) {
		char owner[64];
		user_name(st.st_uid, owner, sizeof(owner));
		doc_add(d, DOC_FAIL, "device-key",
			xfmt("%s belongs to %s, not to %s: the agent could not read its own key",
			     path, owner, d->user),
			xfmt("sudo chown %s: %s", d->user, path));
	} else if (mode & 077) {
		doc_add(d, DOC_FAIL, "device-key",
			xfmt("%s has mode %04o: whoever can read it can pose as this device", path,
			     mode),
			xfmt("chmod 600 %s; if someone may have copied it, move it away, run "
			     "`shoal --home %s init` for a new identity and add the new ID on the "
			     "other devices",
			     path, d->home));
	} else {
		doc_add(d, DOC_OK, "device-key",
			xfmt("%s is readable by its owner only (%04o)", path, mode), NULL);
	}
out:
	free(path);
}

static void
check_config(struct doctor *d)
{
	char *path = home_file(d->home, "config");
	char err[256] = "";
	int rc;

	if (!path) {
		d->oom = 1;
		return;
	}
	rc = config_load(&d->cfg, path, err, sizeof(err));
	if (rc != 0) {
		memset(&d->cfg, 0, sizeof(d->cfg));
		doc_add(d, DOC_FAIL, "config",
			xfmt("cannot read %s: %s", path, err[0] ? err : strerror(-rc)),
			xfmt("correct that line of %s with an editor", path));
		goto out;
	}
	d->cfg_loaded = 1;
	if (d->cfg.nfolders == 0) {
		doc_add(d, DOC_WARN, "config",
			xfmt("%s names no folder: the agent has nothing to sync", path),
			xfmt("shoal --home %s folder add ID PATH, then shoal --home %s folder "
			     "share ID DEVICE_ID",
			     d->home, d->home));
	} else if (d->cfg.npeers == 0) {
		doc_add(d, DOC_WARN, "config",
			xfmt("%s names %zu folder%s but no other device to sync with", path,
			     d->cfg.nfolders, d->cfg.nfolders == 1 ? "" : "s"),
			xfmt("shoal --home %s device add DEVICE_ID --addr HOST:PORT", d->home));
	} else {
		doc_add(d, DOC_OK, "config",
			xfmt("%s: %zu folder%s, %zu device%s", path, d->cfg.nfolders,
			     d->cfg.nfolders == 1 ? "" : "s", d->cfg.npeers,
			     d->cfg.npeers == 1 ? "" : "s"),
			NULL);
	}
out:
	free(path);
}

/* ---- clock ---- */

/* Raises *newest to the latest mtime at or below dirfd, down to depth levels. */
static void
newest_mtime(int dirfd, int depth, time_t *newest)
{
	DIR *dir = fdopendir(dirfd);
	struct dirent *de;

	if (!dir) {
		close(dirfd);
		return;
	}
	while ((de = readdir(dir))) {
		struct stat st;
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (fstatat(dirfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0)
			continue;
		if (st.st_mtime > *newest)
			*newest = st.st_mtime;
		if (S_ISDIR(st.st_mode) && depth > 0) {
			int fd = openat(dirfd, de->d_name,
					O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (fd >= 0)
				newest_mtime(fd, depth - 1, newest);
		}
	}
	closedir(dir);
}

static void
fmt_time(time_t t, char *out, size_t len)
{
	struct tm tm;
	if (!gmtime_r(&t, &tm) || strftime(out, len, "%Y-%m-%d %H:%M UTC", &tm) == 0)
		snprintf(out, len, "%lld", (long long)t);
}

static void
check_clock(struct doctor *d)
{
	static const char fix[] = "set the time and keep it synchronised: sudo timedatectl "
				  "set-ntp true (needs systemd-timesyncd, or install chrony)";
	time_t now = time(NULL), newest = 0;
	struct tm tm;
	char snow[64], snewest[64];
	int fd;

	fmt_time(now, snow, sizeof(snow));
	if (!gmtime_r(&now, &tm) || tm.tm_year + 1900 < CLOCK_MIN_YEAR) {
		doc_add(d, DOC_FAIL, "clock",
			xfmt("the clock says %s, before %d: it was never set (modification times "
			     "and the order of events would be wrong)",
			     snow, CLOCK_MIN_YEAR),
			xfmt("%s", fix));
		return;
	}
	fd = open(d->home, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0)
		newest_mtime(fd, 2, &newest);
	if (newest > now + CLOCK_SLACK_S) {
		fmt_time(newest, snewest, sizeof(snewest));
		doc_add(d, DOC_FAIL, "clock",
			xfmt("the clock says %s, but a file in %s was written at %s, %.1f days "
			     "later: the clock went back",
			     snow, d->home, snewest, (double)(newest - now) / 86400.0),
			xfmt("%s", fix));
		return;
	}
	doc_add(
	    d, DOC_OK, "clock",
	    xfmt("the clock says %s, and no file in the state directory is from the future", snow),
	    NULL);
}

/* ---- listen port ---- */

/* Parses HOST:PORT or [V6]:PORT as the agent does. Returns 0 or -EINVAL. */
static int
parse_listen(const char *addr, struct sockaddr_storage *ss, socklen_t *sslen, int *port)
{
	char host[64];
	const char *colon = strrchr(addr, ':');
	char *end;
	long p;

	if (!colon || (size_t)(colon - addr) >= sizeof(host))
		return -EINVAL;
	p = strtol(colon + 1, &end, 10);
	if (colon[1] == '\0' || *end != '\0' || p < 0 || p > 65535)
		return -EINVAL;
	if (addr[0] == '[') {
		if (colon - addr < 3 || colon[-1] != ']')
			return -EINVAL;
		memcpy(host, addr + 1, (size_t)(colon - addr) - 2);
		host[colon - addr - 2] = '\0';
	} else {
		memcpy(host, addr, (size_t)(colon - addr));
		host[colon - addr] = '\0';
	}
	memset(ss, 0, sizeof(*ss));
	struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
	if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		s4->sin_port = htons((uint16_t)p);
		*sslen = sizeof(*s4);
	} else if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)p);
		*sslen = sizeof(*s6);
	} else {
		return -EINVAL;
	}
	*port = (int)p;
	return 0;
}

/*
 * Connects to the listening address ss from this host (the wildcard address
 * becomes loopback) within CONNECT_TIMEOUT_MS. Returns 0 or -errno.
 */
static int
try_connect(const struct sockaddr_storage *ss, socklen_t len)
{
	struct sockaddr_storage to = *ss;
	struct pollfd pfd;
	int fd, rc = 0, err = 0;
	socklen_t elen = sizeof(err);

	if (to.ss_family == AF_INET) {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&to;
		if (s4->sin_addr.s_addr == htonl(INADDR_ANY))
			s4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	} else {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&to;
		if (IN6_IS_ADDR_UNSPECIFIED(&s6->sin6_addr))
			s6->sin6_addr = in6addr_loopback;
	}
	fd = socket(to.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&to, len) != 0) {
		if (errno != EINPROGRESS) {
			rc = -errno;
			goto out;
		}
		pfd.fd = fd;
		pfd.events = POLLOUT;
		if (poll(&pfd, 1, CONNECT_TIMEOUT_MS) <= 0) {
			rc = -ETIMEDOUT;
			goto out;
		}
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) != 0)
			rc = -errno;
		else if (err)
			rc = -err;
	}
out:
	close(fd);
	return rc;
}

/*
 * Asks the agent of this state directory for its status. Returns the parsed
 * reply (free with jv_free) or NULL when no agent answers within 2 s.
 */
static struct jv *
agent_status(const char *home)
{
	struct sockaddr_un sa;
	char *path = home_file(home, "control.sock");
	struct strbuf sb;
	struct jv *v = NULL;
	char buf[4096];
	int fd;

	if (!path)
		return NULL;
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sa.sun_path)) {
		free(path);
		return NULL;
	}
	memcpy(sa.sun_path, path, strlen(path) + 1);
	free(path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return NULL;
	strbuf_init(&sb);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
	    send(fd, "status\n", 7, MSG_NOSIGNAL) != 7)
		goto out;
	/* The reply is one line; stop at its end or when the agent closes. */
	while (!sb.len || sb.buf[sb.len - 1] != '\n') {
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		if (poll(&pfd, 1, 2000) <= 0)
			break;
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		strbuf_add(&sb, buf, (size_t)n);
	}
	if (sb.len && !sb.oom)
		v = jv_parse(sb.buf);
out:
	strbuf_release(&sb);
	close(fd);
	return v;
}

static void
check_listen(struct doctor *d)
{
	const char *addr = d->cfg.listen ? d->cfg.listen : CFG_DEFAULT_LISTEN;
	struct sockaddr_storage ss;
	socklen_t len = 0;
	int port, fd, one = 1, e = 0, rc;

	if (parse_listen(addr, &ss, &len, &port) != 0) {
		doc_add(d, DOC_FAIL, "listen",
			xfmt("the listen address \"%s\" is not HOST:PORT with a numeric IPv4 "
			     "address or [IPv6] address",
			     addr),
			xfmt("set `listen = %s` in the [device] section of %s/config",
			     CFG_DEFAULT_LISTEN, d->home));
		return;
	}
	if (port == 0) {
		doc_add(d, DOC_WARN, "listen",
			xfmt("the listen address %s has port 0: the agent picks another free "
			     "port at every start, so other devices cannot be told where to dial",
			     addr),
			xfmt("set a fixed port, e.g. `listen = %s` in the [device] section of "
			     "%s/config",
			     CFG_DEFAULT_LISTEN, d->home));
		return;
	}
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		e = errno;
		doc_add(d, DOC_FAIL, "listen",
			xfmt("cannot open a TCP socket for %s: %s", addr, strerror(e)),
			xfmt("%s", ss.ss_family == AF_INET6
				       ? "IPv6 may be disabled on this host; "
					 "listen on an IPv4 address"
				       : "check that networking is available"));
		return;
	}
	/* The agent (libuv) binds with SO_REUSEADDR too: TIME_WAIT is no conflict. */
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&ss, len) != 0 || listen(fd, 1) != 0)
		e = errno;
	if (e == 0) {
		rc = try_connect(&ss, len);
		close(fd);
		if (rc != 0)
			doc_add(d, DOC_WARN, "listen",
				xfmt("%s is free, but a connection to it from this host failed "
				     "(%s): a local firewall may drop it",
				     addr, strerror(-rc)),
				xfmt("allow incoming TCP on port %d in the firewall (for nftables, "
				     "ufw or firewalld alike)",
				     port));
		else
			doc_add(d, DOC_OK, "listen",
				xfmt("%s is free and accepts connections from this host (no agent "
				     "runs now); other devices must reach TCP port %d, so allow it "
				     "in any firewall between them",
				     addr, port),
				NULL);
		return;
	}
	close(fd);
	if (e == EADDRINUSE) {
		struct jv *v = agent_status(d->home);
		const char *theirs = v ? jv_str(jv_get(jv_get(v, "device"), "listen"), NULL) : NULL;
		const char *colon = theirs ? strrchr(theirs, ':') : NULL;
		if (colon && atoi(colon + 1) == port) {
			struct sockaddr_storage ts;
			socklen_t tlen;
			int tport;
			rc = parse_listen(theirs, &ts, &tlen, &tport) == 0 ? try_connect(&ts, tlen)
									   : try_connect(&ss, len);
			if (rc == 0)
				doc_add(
				    d, DOC_OK, "listen",
				    xfmt("the agent of this state directory is running and "
					 "listening on %s; it accepts connections from this host",
					 theirs),
				    NULL);
			else
				doc_add(
				    d, DOC_WARN, "listen",
				    xfmt("the agent of this state directory listens on %s, but a "
					 "connection to it from this host failed (%s)",
					 theirs, strerror(-rc)),
				    xfmt("check the firewall for TCP port %d; restart the agent if "
					 "it does not answer (sudo systemctl restart shoal)",
					 port));
		} else {
			doc_add(
			    d, DOC_FAIL, "listen",
			    xfmt("port %d (%s) is taken by another program%s", port, addr,
				 v ? " (this state directory's agent runs but listens elsewhere)"
				   : ", perhaps a shoal agent with another state directory"),
			    xfmt("see who holds it: sudo ss -ltnp 'sport = :%d'; stop that "
				 "program, or choose another port with `listen = 0.0.0.0:PORT` "
				 "in the [device] section of %s/config (and tell the other "
				 "devices the new address)",
				 port, d->home));
		}
		jv_free(v);
	} else if (e == EACCES) {
		doc_add(d, DOC_FAIL, "listen",
			xfmt("port %d is below 1024, which only privileged programs may use", port),
			xfmt("use a port above 1023, e.g. `listen = %s` in %s/config",
			     CFG_DEFAULT_LISTEN, d->home));
	} else if (e == EADDRNOTAVAIL) {
		doc_add(d, DOC_FAIL, "listen", xfmt("%s is not an address of this machine", addr),
			xfmt("use one of the addresses `ip -brief address` shows, or 0.0.0.0 for "
			     "all, in the listen line of %s/config",
			     d->home));
	} else {
		doc_add(d, DOC_FAIL, "listen", xfmt("cannot listen on %s: %s", addr, strerror(e)),
			xfmt("choose another listen address in %s/config", d->home));
	}
}

/* ---- avahi ---- */

static void
check_avahi(struct doctor *d)
{
	static const char later[] = "devices on the LAN are not found by mDNS until it runs "
				    "(devices with a configured address, and invite codes that "
				    "carry addresses, still work)";
	static const char fix[] = "sudo apt-get install avahi-daemon && sudo systemctl enable "
				  "--now avahi-daemon";
	struct sockaddr_un sa;
	int fd, e = 0;

	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	memcpy(sa.sun_path, AVAHI_SOCKET, sizeof(AVAHI_SOCKET));
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
		e = errno;
	if (fd >= 0)
		close(fd);
	if (e == 0)
		doc_add(d, DOC_OK, "avahi",
			xfmt("avahi-daemon answers on %s: devices on the LAN find each other "
			     "by mDNS",
			     AVAHI_SOCKET),
			NULL);
	else if (e == ENOENT)
		doc_add(d, DOC_WARN, "avahi",
			xfmt("avahi-daemon is not running (no %s); %s", AVAHI_SOCKET, later),
			xfmt("%s", fix));
	else
		doc_add(d, DOC_WARN, "avahi",
			xfmt("avahi-daemon does not answer on %s: %s; %s", AVAHI_SOCKET,
			     strerror(e), later),
			xfmt("sudo systemctl restart avahi-daemon"));
}

/* ---- folders, and the system service's view of them ---- */

/*
 * What shoal.service may touch, from its unit file and drop-ins: the paths
 * made writable or bound in, and the ProtectSystem=/ProtectHome= levels.
 */
struct svc_view {
	int found;
	int protect_system; /* 0 no, 1 yes, 2 full, 3 strict */
	int protect_home;   /* 0 no, 1 read-only, 2 yes or tmpfs (hidden) */
	int private_tmp;    /* its own /tmp and /var/tmp */
	char **rw;
	size_t nrw;
};

static void
svc_rw_clear(struct svc_view *sv)
{
	for (size_t i = 0; i < sv->nrw; i++)
		free(sv->rw[i]);
	free(sv->rw);
	sv->rw = NULL;
	sv->nrw = 0;
}

static void
svc_view_release(struct svc_view *sv)
{
	svc_rw_clear(sv);
	memset(sv, 0, sizeof(*sv));
}

static void
svc_add_rw(struct svc_view *sv, const char *p, size_t n)
{
	char **v;

	while (n && (*p == '-' || *p == '+')) { /* "ignore if missing", "outside the sandbox" */
		p++;
		n--;
	}
	if (n == 0 || *p != '/')
		return;
	while (n > 1 && p[n - 1] == '/')
		n--;
	v = realloc(sv->rw, (sv->nrw + 1) * sizeof(*v));
	if (!v)
		return;
	sv->rw = v;
	if ((sv->rw[sv->nrw] = strndup(p, n)))
		sv->nrw++;
}

static int
svc_bool(const char *v)
{
	return strcmp(v, "yes") == 0 || strcmp(v, "true") == 0 || strcmp(v, "on") == 0 ||
	       strcmp(v, "1") == 0;
}

/* Applies one unit file or drop-in to sv, in systemd's order of reading. */
static void
svc_read(struct svc_view *sv, const char *path)
{
	FILE *fp = fopen(path, "re");
	char line[4096];
	int in_service = 0;

	if (!fp)
		return;
	sv->found = 1;
	while (fgets(line, sizeof(line), fp)) {
		char *s = line, *eq, *v, *e;
		while (*s == ' ' || *s == '\t')
			s++;
		s[strcspn(s, "\r\n")] = '\0';
		if (*s == '[') {
			in_service = strncmp(s, "[Service]", 9) == 0;
			continue;
		}
		if (!in_service || *s == '#' || *s == ';' || !(eq = strchr(s, '=')))
			continue;
		for (e = eq; e > s && (e[-1] == ' ' || e[-1] == '\t'); e--)
			;
		*e = '\0';
		for (v = eq + 1; *v == ' ' || *v == '\t'; v++)
			;
		if (strcmp(s, "ReadWritePaths") == 0 || strcmp(s, "BindPaths") == 0) {
			if (*v == '\0') { /* an empty assignment resets the list */
				svc_rw_clear(sv);
				continue;
			}
			while (*v) {
				size_t n = strcspn(v, " \t");
				size_t c = strcspn(v, ":");
				/* BindPaths=SRC:DEST[:OPTS]: what the service sees is DEST. */
				if (strcmp(s, "BindPaths") == 0 && c < n) {
					size_t c2 = strcspn(v + c + 1, ": \t");
					svc_add_rw(sv, v + c + 1, c2);
				} else {
					svc_add_rw(sv, v, n);
				}
				v += n;
				while (*v == ' ' || *v == '\t')
					v++;
			}
		} else if (strcmp(s, "ProtectSystem") == 0) {
			sv->protect_system = strcmp(v, "strict") == 0 ? 3
					     : strcmp(v, "full") == 0 ? 2
					     : svc_bool(v)	      ? 1
								      : 0;
		} else if (strcmp(s, "PrivateTmp") == 0) {
			sv->private_tmp = svc_bool(v);
		} else if (strcmp(s, "ProtectHome") == 0) {
			sv->protect_home = strcmp(v, "read-only") == 0		    ? 1
					   : strcmp(v, "tmpfs") == 0 || svc_bool(v) ? 2
										    : 0;
		}
	}
	fclose(fp);
}

/*
 * Reads shoal.service as systemd would: the first unit file found in /etc,
 * /run, /usr/local/lib, /usr/lib, /lib, then the drop-ins of every
 * shoal.service.d/ in name order (a name in an earlier directory hides the
 * same name in a later one).
 */
static void
svc_load(struct svc_view *sv)
{
	static const char *const dirs[] = {"/etc/systemd/system", "/run/systemd/system",
					   "/usr/local/lib/systemd/system",
					   "/usr/lib/systemd/system", "/lib/systemd/system"};
	const size_t ndirs = sizeof(dirs) / sizeof(dirs[0]);
	char path[PATH_MAX];
	char **names = NULL;
	size_t nnames = 0;

	memset(sv, 0, sizeof(*sv));
	for (size_t i = 0; i < ndirs && !sv->found; i++) {
		snprintf(path, sizeof(path), "%s/shoal.service", dirs[i]);
		svc_read(sv, path);
	}
	if (!sv->found)
		return;
	for (size_t i = 0; i < ndirs; i++) {
		snprintf(path, sizeof(path), "%s/shoal.service.d", dirs[i]);
		DIR *dir = opendir(path);
		struct dirent *de;
		while (dir && (de = readdir(dir))) {
			size_t l = strlen(de->d_name), k;
			if (l < 6 || strcmp(de->d_name + l - 5, ".conf") != 0)
				continue;
			for (k = 0; k < nnames; k++)
				if (strcmp(strrchr(names[k], '/') + 1, de->d_name) == 0)
					break;
			if (k < nnames)
				continue;
			char **v = realloc(names, (nnames + 1) * sizeof(*v));
			if (!v)
				break;
			names = v;
			if ((names[nnames] = xfmt("%s/%s", path, de->d_name)))
				nnames++;
		}
		if (dir)
			closedir(dir);
	}
	/* Drop-ins apply in the order of their file names, whatever their directory. */
	for (size_t i = 0; i < nnames; i++) {
		char *tmp = names[i];
		size_t j = i;
		while (j > 0 && strcmp(strrchr(names[j - 1], '/'), strrchr(tmp, '/')) > 0) {
			names[j] = names[j - 1];
			j--;
		}
		names[j] = tmp;
	}
	for (size_t i = 0; i < nnames; i++) {
		svc_read(sv, names[i]);
		free(names[i]);
	}
	free(names);
}

/*
 * Says whether the system service could use path: returns 0 when it can, or
 * a malloc'd reason when it cannot. write asks for write access too.
 */
static char *
svc_blocks(const struct svc_view *sv, const char *path, int write)
{
	static const char *const homes[] = {"/home", "/root", "/run/user"};
	static const char *const sys_full[] = {"/usr", "/boot", "/efi", "/etc"};
	int listed = path_under(path, SERVICE_HOME);

	for (size_t i = 0; i < sv->nrw && !listed; i++)
		listed = path_under(path, sv->rw[i]);
	if (sv->private_tmp && (path_under(path, "/tmp") || path_under(path, "/var/tmp")))
		return xfmt("PrivateTmp=yes gives the service its own empty /tmp and /var/tmp");
	for (size_t i = 0; i < 3; i++) {
		if (!path_under(path, homes[i]))
			continue;
		/* Paths listed below a hidden /home are dropped by systemd. */
		if (sv->protect_home == 2)
			return xfmt("ProtectHome=yes hides %s from the service", homes[i]);
		if (sv->protect_home == 1 && write && !listed)
			return xfmt("ProtectHome=read-only makes %s read-only and %s is not in "
				    "ReadWritePaths=",
				    homes[i], path);
	}
	if (!write || listed)
		return NULL;
	if (sv->protect_system == 3)
		return xfmt("ProtectSystem=strict makes everything read-only except "
			    "ReadWritePaths= and %s, and %s is in neither",
			    SERVICE_HOME, path);
	for (size_t i = 0; i < (sv->protect_system == 2 ? 4u : sv->protect_system ? 3u : 0u); i++)
		if (path_under(path, sys_full[i]))
			return xfmt("ProtectSystem= makes %s read-only", sys_full[i]);
	return NULL;
}

static void
check_folder(struct doctor *d, const struct cfg_folder *f, const struct svc_view *sv)
{
	char *name = xfmt("folder %s", f->id);
	char *marker = path_join(f->path, ".shoal-folder");
	int want_write = f->mode != MODE_SEND;
	struct stat st;
	char *why;

	if (!name || !marker) {
		d->oom = 1;
		goto out;
	}
	if (stat(f->path, &st) != 0) {
		int e = errno;
		doc_add(d, DOC_FAIL, name,
			e == ENOENT ? xfmt("%s does not exist (a disk not mounted?)", f->path)
				    : xfmt("cannot reach %s: %s", f->path, strerror(e)),
			e == ENOENT ? xfmt("mount the disk that holds it; if the folder moved: "
					   "shoal --home %s folder remove %s, then folder add "
					   "it at its new path",
					   d->home, f->id)
				    : xfmt("give %s access to %s and each directory above it",
					   d->user, f->path));
		goto out;
	}
	if (!S_ISDIR(st.st_mode)) {
		doc_add(d, DOC_FAIL, name, xfmt("%s is not a directory", f->path),
			xfmt("shoal --home %s folder remove %s, and add a directory instead",
			     d->home, f->id));
		goto out;
	}
	if (access(f->path, R_OK | X_OK) != 0 || (want_write && access(f->path, W_OK) != 0)) {
		int e = errno;
		doc_add(
		    d, DOC_FAIL, name,
		    xfmt("%s is not %s by %s (%s)%s", f->path,
			 want_write ? "readable and writable" : "readable", d->user, strerror(e),
			 want_write ? "; a receive or send-receive folder must be writable" : ""),
		    e == EROFS
			? xfmt("remount %s read-write, or make the folder send-only", f->path)
			: xfmt("sudo chown -R %s: %s (or grant access: sudo setfacl -R -m "
			       "u:%s:rwX -m d:u:%s:rwX %s)",
			       d->user, f->path, d->user, d->user, f->path));
		goto out;
	}
	if (lstat(marker, &st) != 0) {
		doc_add(d, DOC_FAIL, name,
			xfmt("the folder marker %s is missing: the agent does not touch a folder "
			     "without it, so that an unmounted disk never looks like deleted files",
			     marker),
			xfmt("if %s is the right, mounted disk: touch %s (as %s)", f->path, marker,
			     d->user));
		goto out;
	}
	if (sv && (why = svc_blocks(sv, f->path, want_write))) {
		int in_tmp = path_under(f->path, "/tmp") || path_under(f->path, "/var/tmp");
		int in_home = path_under(f->path, "/home") || path_under(f->path, "/root");
		doc_add(d, DOC_FAIL, name,
			xfmt("the system service shoal.service cannot %s %s: %s",
			     want_write ? "write to" : "read", f->path, why),
			in_tmp
			    ? xfmt("keep the folder elsewhere, e.g. below /srv/shoal: shoal --home "
				   "%s folder remove %s, move the directory, and add it again",
				   d->home, f->id)
			    : xfmt("let it in with a drop-in: sudo systemctl edit shoal, add the "
				   "lines [Service] and ReadWritePaths=%s%s, then sudo systemctl "
				   "restart shoal (example: "
				   "/usr/share/doc/shoal/folders.conf.example)",
				   f->path, in_home ? " and ProtectHome=read-only" : ""));
		free(why);
		goto out;
	}
	if (f->nshares == 0) {
		doc_add(d, DOC_WARN, name,
			xfmt("%s (%s) is shared with no device, so it does not sync", f->path,
			     mode_name(f->mode)),
			xfmt("shoal --home %s folder share %s DEVICE_ID", d->home, f->id));
		goto out;
	}
	doc_add(d, DOC_OK, name,
		xfmt("%s (%s) exists, is %s by %s, has its marker, and is shared with %zu "
		     "device%s",
		     f->path, mode_name(f->mode), want_write ? "writable" : "readable", d->user,
		     f->nshares, f->nshares == 1 ? "" : "s"),
		NULL);
out:
	free(name);
	free(marker);
}

/* Is home the system service's state directory (so that its sandbox applies)? */
static int
is_service_home(const char *home)
{
	char real[PATH_MAX];
	return realpath(home, real) && strcmp(real, SERVICE_HOME) == 0;
}

/* ---- inotify ---- */

/*
 * Counts the directories at and below dirfd, as the watcher will watch them:
 * not following symlinks, skipping .shoal* names. Stops once *count exceeds
 * stop. Holds one descriptor per level, so a tree deeper than the descriptor
 * limit is undercounted. Closes dirfd.
 */
static void
count_dirs(int dirfd, uint64_t *count, uint64_t stop)
{
	DIR *dir = fdopendir(dirfd);
	struct dirent *de;

	if (!dir) {
		close(dirfd);
		return;
	}
	(*count)++;
	while (*count <= stop && (de = readdir(dir))) {
		const char *n = de->d_name;
		if (strcmp(n, ".") == 0 || strcmp(n, "..") == 0 || strncmp(n, ".shoal", 6) == 0)
			continue;
		if (de->d_type != DT_DIR && de->d_type != DT_UNKNOWN)
			continue;
		int fd = openat(dirfd, n, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd >= 0)
			count_dirs(fd, count, stop);
	}
	closedir(dir);
}

static void
check_inotify(struct doctor *d)
{
	static const char fix_fmt[] =
	    "raise the limit: echo fs.inotify.max_user_watches=%llu | sudo tee "
	    "/etc/sysctl.d/90-shoal.conf && sudo sysctl --system";
	FILE *fp = fopen(WATCHES_PATH, "re");
	unsigned long long limit = 0;
	uint64_t dirs = 0;

	if (!fp || fscanf(fp, "%llu", &limit) != 1) {
		if (fp)
			fclose(fp);
		doc_add(d, DOC_WARN, "inotify",
			xfmt("cannot read %s: changes on disk are found by periodic rescans only",
			     WATCHES_PATH),
			xfmt("run the doctor on the host itself, with /proc mounted"));
		return;
	}
	fclose(fp);
	for (size_t i = 0; i < d->cfg.nfolders; i++) {
		int fd = open(d->cfg.folders[i].path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fd >= 0)
			count_dirs(fd, &dirs, limit);
	}
	unsigned long long want = (unsigned long long)dirs * 2 + 8192;
	if (want < 524288)
		want = 524288;
	if (dirs > limit) {
		doc_add(d, DOC_FAIL, "inotify",
			xfmt("the folders hold more than %llu directories, the limit of inotify "
			     "watches per user (%s): the agent cannot watch them all, and changes "
			     "in the others are found only by the periodic rescan",
			     limit, WATCHES_PATH),
			xfmt(fix_fmt, want));
	} else if (dirs > limit / 4 * 3) {
		doc_add(
		    d, DOC_WARN, "inotify",
		    xfmt("the folders hold %llu directories and the limit of inotify watches "
			 "per user is %llu: little is left for other programs of the same user, "
			 "and the folders cannot grow much",
			 (unsigned long long)dirs, limit),
		    xfmt(fix_fmt, want));
	} else {
		doc_add(d, DOC_OK, "inotify",
			d->cfg.nfolders == 0
			    ? xfmt("no folder to watch; the limit of inotify watches per user "
				   "is %llu",
				   limit)
			    : xfmt("the folders hold %llu director%s; the limit of inotify "
				   "watches per user is %llu",
				   (unsigned long long)dirs, dirs == 1 ? "y" : "ies", limit),
			NULL);
	}
}

/* ---- disk space ---- */

static void
check_disk(struct doctor *d, const char *path, dev_t *seen, size_t *nseen)
{
	struct statvfs vfs;
	struct stat st;
	char *name, free_s[32], total_s[32];
	uint64_t avail, total;
	unsigned pct;

	if (stat(path, &st) != 0)
		return; /* the folder or state-dir check already said why */
	for (size_t i = 0; i < *nseen; i++)
		if (seen[i] == st.st_dev)
			return;
	seen[(*nseen)++] = st.st_dev;
	if (!(name = xfmt("disk %s", path))) {
		d->oom = 1;
		return;
	}
	if (statvfs(path, &vfs) != 0) {
		int e = errno;
		doc_add(d, DOC_WARN, name,
			xfmt("cannot learn the free space of %s: %s", path, strerror(e)),
			xfmt("check that the file system of %s is mounted and healthy", path));
		goto out;
	}
	avail = (uint64_t)vfs.f_bavail * vfs.f_frsize;
	total = (uint64_t)vfs.f_blocks * vfs.f_frsize;
	pct = total ? (unsigned)(avail * 100 / total) : 100;
	fmt_bytes(avail, free_s, sizeof(free_s));
	fmt_bytes(total, total_s, sizeof(total_s));
	if (avail < DISK_MIN_FREE || (total && avail * 100 < total * DISK_MIN_PCT)) {
		doc_add(d, DOC_WARN, name,
			xfmt("only %s free of %s (%u%%) on the disk of %s: files being pulled need "
			     "room for a temporary copy, and the database grows with the folders",
			     free_s, total_s, pct, path),
			xfmt("free space on that disk (df -h %s shows it), or move the folder to a "
			     "larger one",
			     path));
	} else if (vfs.f_files > 0 && vfs.f_favail * 100 < vfs.f_files) {
		doc_add(
		    d, DOC_WARN, name,
		    xfmt("the disk of %s has space (%s free) but less than 1%% of its inodes "
			 "left (%llu): new files will fail",
			 path, free_s, (unsigned long long)vfs.f_favail),
		    xfmt("delete unneeded small files on that disk (df -i %s shows inodes)", path));
	} else {
		doc_add(d, DOC_OK, name, xfmt("%s free of %s (%u%%)", free_s, total_s, pct), NULL);
	}
out:
	free(name);
}

/* ---- the report ---- */

static void
report_text(const struct doctor *d)
{
	for (size_t i = 0; i < d->n; i++) {
		const struct doc_check *c = &d->checks[i];
		printf("%-4s  %s: %s\n", status_names[c->status], c->name, c->message);
		if (c->fix)
			printf("  fix: %s\n", c->fix);
	}
}

static int
report_json(const struct doctor *d, int ok)
{
	struct json j;
	const char *text;
	int rc = 0;

	json_init(&j);
	json_obj_open(&j);
	json_key(&j, "checks");
	json_arr_open(&j);
	for (size_t i = 0; i < d->n; i++) {
		const struct doc_check *c = &d->checks[i];
		json_obj_open(&j);
		json_key(&j, "name");
		json_str(&j, c->name);
		json_key(&j, "status");
		json_str(&j, status_names[c->status]);
		json_key(&j, "message");
		json_str(&j, c->message);
		json_key(&j, "fix");
		if (c->fix)
			json_str(&j, c->fix);
		else
			json_null(&j);
		json_obj_close(&j);
	}
	json_arr_close(&j);
	json_key(&j, "ok");
	json_bool(&j, ok);
	json_obj_close(&j);
	if ((text = json_finish(&j)))
		printf("%s\n", text);
	else
		rc = -ENOMEM;
	json_release(&j);
	return rc;
}

int
doctor_run(const char *home, int json)
{
	struct doctor d;
	struct svc_view sv;
	int service, ok = 1, code;
	dev_t *seen = NULL;
	size_t nseen = 0;

	memset(&d, 0, sizeof(d));
	memset(&sv, 0, sizeof(sv));
	d.home = home;
	user_name(geteuid(), d.user, sizeof(d.user));

	check_state_dir(&d);
	check_device_key(&d);
	check_config(&d);
	check_clock(&d);
	check_listen(&d);
	check_avahi(&d);
	service = is_service_home(home);
	if (service)
		svc_load(&sv);
	for (size_t i = 0; i < d.cfg.nfolders; i++)
		check_folder(&d, &d.cfg.folders[i], service && sv.found ? &sv : NULL);
	check_inotify(&d);
	seen = calloc(d.cfg.nfolders + 1, sizeof(*seen));
	if (seen) {
		check_disk(&d, home, seen, &nseen);
		for (size_t i = 0; i < d.cfg.nfolders; i++)
			check_disk(&d, d.cfg.folders[i].path, seen, &nseen);
	} else {
		d.oom = 1;
	}

	for (size_t i = 0; i < d.n; i++)
		if (d.checks[i].status == DOC_FAIL)
			ok = 0;
	if (json) {
		if (report_json(&d, ok && !d.oom) != 0)
			d.oom = 1;
	} else {
		report_text(&d);
	}
	if (d.oom)
		fprintf(stderr, "shoal: out of memory: some checks are missing\n");
	code = ok && !d.oom ? 0 : 1;

	free(seen);
	svc_view_release(&sv);
	for (size_t i = 0; i < d.n; i++) {
		free(d.checks[i].name);
		free(d.checks[i].message);
		free(d.checks[i].fix);
	}
	free(d.checks);
	config_release(&d.cfg);
	return code;
}
