/*
 * agent/main.c - the shoal command line: one binary, subcommands.
 *
 * Every subcommand except `run` works whether or not an agent runs: it edits
 * HOME/config under HOME/config.lock and then asks a running agent (through
 * the control socket) to reload, so the change takes effect at once.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <sodium.h>
#include <time.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "agent/agent.h"
#include "agent/config.h"
#include "agent/doctor.h"
#include "agent/invites.h"
#include "agent/home.h"
#include "agent/json.h"
#include "agent/listing.h"
#include "agent/log.h"
#include "agent/util.h"
#include "proto/invite.h"
#include "crypto/sec.h"

static const char *opt_home;

static const char usage_main[] =
	"usage: shoal [--home DIR] [--log-level LEVEL] COMMAND [ARGS]\n"
	"\n"
	"shoal keeps folders in sync between devices on a LAN, peer to peer, over an\n"
	"authenticated, encrypted connection.\n"
	"\n"
	"Commands:\n"
	"  init [--name NAME]                 create this device's identity; print its ID\n"
	"  id                                 print this device's ID\n"
	"  run [--listen HOST:PORT] [--no-mdns]\n"
	"                                     run the agent in the foreground\n"
	"  status [--json]                    folders, devices and sync progress\n"
	"  events [--since N] [--json]        stream the agent's events as they happen\n"
	"  ls FOLDER [PATH] [--cursor C] [--limit N] [--json]\n"
	"                                     page through the cluster's view of a folder\n"
	"  scan FOLDER [PATH] [--wait]        rescan now (a path, or the whole folder)\n"
	"  conflicts [FOLDER] [--json]        list conflict copies\n"
	"  invite FOLDER_ID [--expires 24h] [--uses 1] [--addr HOST:PORT]...\n"
	"                                     print a one-line invite code for a new member\n"
	"  invite --list [--json] | --revoke ID\n"
	"  join CODE PATH                     accept an invite: PATH becomes a receive-only copy\n"
	"  doctor [--json]                    check this machine and explain what to fix\n"
	"  folder add ID PATH [--mode send|receive|send-receive] [--label LABEL]\n"
	"  folder share ID DEVICE_ID          share a folder with a device\n"
	"  folder unshare ID DEVICE_ID        stop sharing it\n"
	"  folder remove ID                   forget a folder (its files stay on disk)\n"
	"  folder revert ID                   receive-only: drop local changes, get the cluster's\n"
	"  folder list [--json]\n"
	"  device add DEVICE_ID [--name NAME] [--addr HOST:PORT]...\n"
	"  device remove DEVICE_ID\n"
	"  device list [--json]\n"
	"\n"
	"Options:\n"
	"  --home DIR         state directory (default $SHOAL_HOME, else\n"
	"                     $XDG_STATE_HOME/shoal, else ~/.local/state/shoal)\n"
	"  --log-level LEVEL  error, warn, info (default) or debug; also $SHOAL_LOG_LEVEL\n"
	"  -h, --help         this help; `shoal COMMAND --help` for a command's own\n"
	"  --version          print the version\n";

static const char usage_init[] =
	"usage: shoal [--home DIR] init [--name NAME]\n"
	"\n"
	"Creates this device's key pair in the state directory (mode 0600) unless it\n"
	"exists, sets the device name, and prints the device ID on the last line.\n"
	"Give the ID to the people whose devices should sync with this one.\n";

static const char usage_id[] = "usage: shoal [--home DIR] id\n\nPrints this device's ID.\n";

static const char usage_run[] =
	"usage: shoal [--home DIR] run [--listen HOST:PORT] [--no-mdns]\n"
	"\n"
	"Runs the agent in the foreground, logging to stderr, until SIGTERM or SIGINT.\n"
	"SIGHUP reloads the configuration (changes made with shoal commands are\n"
	"picked up at once anyway). A first run creates the identity and, when no\n"
	"folder is configured, a send-receive folder \"default\" at ~/Shoal.\n"
	"\n"
	"  --listen HOST:PORT  listen address (default from the config, else 0.0.0.0:22100;\n"
	"                      port 0 picks a free port)\n"
	"  --no-mdns           do not use mDNS discovery; reach devices at their\n"
	"                      configured addresses only\n";

static const char usage_status[] =
	"usage: shoal [--home DIR] status [--json]\n"
	"\n"
	"Shows each folder's state (idle, scanning, syncing, error), what this device\n"
	"has (local), what the cluster has (global) and what is still needed, and each\n"
	"device's connection. With --json, one JSON object for programs. Works when\n"
	"the agent is stopped too (folders then show \"stopped\").\n";

static const char usage_folder[] =
	"usage: shoal [--home DIR] folder add ID PATH [--mode MODE] [--label LABEL]\n"
	"       shoal [--home DIR] folder share ID DEVICE_ID\n"
	"       shoal [--home DIR] folder unshare ID DEVICE_ID\n"
	"       shoal [--home DIR] folder remove ID\n"
	"       shoal [--home DIR] folder revert ID\n"
	"       shoal [--home DIR] folder list [--json]\n"
	"\n"
	"ID is 1-64 characters of letters, digits, '.', '_' and '-'; every device uses the\n"
	"same ID for the same folder. PATH is created if missing. MODE is one of:\n"
	"  send          send-only: local changes go out, remote changes are ignored\n"
	"  receive       receive-only: remote changes come in, local edits stay local\n"
	"  send-receive  both ways (the default)\n"
	"A folder syncs only with the devices it is shared with. `folder revert` makes a\n"
	"receive-only folder match the cluster again: local edits are replaced by the\n"
	"cluster's version and files only this device has are removed (needs the agent).\n";

static const char usage_events[] =
	"usage: shoal [--home DIR] events [--since N] [--json]\n"
	"\n"
	"Streams the running agent's events as they happen, until interrupted: folder\n"
	"state changes, index updates, items started and finished, devices connecting,\n"
	"conflicts, errors, and transfer progress about once a second. Each event has a\n"
	"sequence number; --since N starts after event N (durable events, such as\n"
	"transfers, conflicts and errors, are kept for 7 days and survive restarts).\n"
	"--json prints one JSON object per line.\n";

static const char usage_ls[] =
	"usage: shoal [--home DIR] ls FOLDER [PATH] [--cursor C] [--limit N] [--json]\n"
	"\n"
	"Lists the cluster's view of FOLDER (or of PATH inside it), in name order, a page\n"
	"at a time (500 entries by default): each entry's state (synced, needed,\n"
	"local-change, conflict), type, size, modification time and name. The last line\n"
	"gives the cursor for the next page: pass it with --cursor.\n";

static const char usage_scan[] =
	"usage: shoal [--home DIR] scan FOLDER [PATH] [--wait]\n"
	"\n"
	"Asks the running agent to rescan FOLDER now, or only PATH in it (a file or a\n"
	"directory with everything under it): for mounts the watcher cannot see, and for\n"
	"scripts. With --wait, returns when that scan has finished.\n";

static const char usage_doctor[] =
	"usage: shoal [--home DIR] doctor [--json]\n"
	"\n"
	"Checks what the agent needs and says how to fix what is wrong: the state\n"
	"directory's owner and permissions and the device key's, the configuration,\n"
	"the clock, whether the listen port is free (or held by this agent), whether\n"
	"avahi-daemon answers, that each folder exists, is writable and has its\n"
	".shoal-folder marker (and, for the system service, lies in its\n"
	"ReadWritePaths), the inotify watch limit against the folders' directories,\n"
	"and free disk space. Run it as the user the agent runs as, e.g.\n"
	"  sudo -u shoal shoal --home /var/lib/shoal doctor\n"
	"Each check prints \"ok\", \"warn\" or \"fail\", its name and an explanation,\n"
	"and for a problem a \"fix:\" line. With --json, one object:\n"
	"{\"checks\":[{\"name\",\"status\",\"message\",\"fix\"}],\"ok\":BOOL}.\n"
	"Exits 0 when no check failed, 1 otherwise.\n";

static const char usage_invite[] =
	"usage: shoal [--home DIR] invite FOLDER_ID [--expires DURATION] [--uses N] [--addr HOST:PORT]...\n"
	"       shoal [--home DIR] invite --list [--json]\n"
	"       shoal [--home DIR] invite --revoke ID\n"
	"\n"
	"Prints a one-line invite code (last line) for FOLDER_ID. Whoever runs\n"
	"`shoal join CODE PATH` with it becomes a member: a receive-only copy of the\n"
	"folder that gets every later change. The code holds this device's ID (the\n"
	"member pins that key), the folder, a secret (kept here only as a hash) and\n"
	"where to reach this device: the --addr given, else the listen address (its\n"
	"host interfaces when listening on all of them); devices on the LAN also find\n"
	"each other by mDNS. DURATION is like 30m, 24h (the default) or 7d; N uses\n"
	"(default 1). --list shows the invites with their uses left; --revoke ends one.\n";

static const char usage_join[] =
	"usage: shoal [--home DIR] join CODE PATH\n"
	"\n"
	"Accepts an invite: adds the owner (pinning its key), makes PATH a receive-only\n"
	"copy of the folder and, when the agent runs, waits for the owner's answer and\n"
	"says whether the invite was accepted, wrong, expired or used up. When the\n"
	"agent does not run, the join completes when it starts.\n";

static const char usage_conflicts[] =
	"usage: shoal [--home DIR] conflicts [FOLDER] [--json]\n"
	"\n"
	"Lists conflict copies. When two devices change a file at the same time, both\n"
	"versions are kept: the newer one under the file's name, the other as\n"
	"NAME.sync-conflict-YYYYMMDD-HHMMSS-DEVICE.EXT, which syncs like any file.\n"
	"Resolve by keeping the right content and deleting the copy.\n";

static const char usage_device[] =
	"usage: shoal [--home DIR] device add DEVICE_ID [--name NAME] [--addr HOST:PORT]...\n"
	"       shoal [--home DIR] device remove DEVICE_ID\n"
	"       shoal [--home DIR] device list [--json]\n"
	"\n"
	"Only devices added here may connect; a device proves its ID with its key\n"
	"during the handshake. --addr gives an address to dial (repeatable).\n";

static void
die_usage(const char *u)
{
	fputs(u, stderr);
	exit(2);
}

static int
wants_help(int argc, char **argv)
{
	for (int i = 0; i < argc; i++)
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
			return 1;
	return 0;
}

/* ---- control socket client ---- */

/* Sends cmd to a running agent; *out gets the malloc'd reply. Returns 0, or -errno if none runs. */
static int
ctl_request(const char *home, const char *cmd, char **out)
{
	struct sockaddr_un sa;
	char *path = home_file(home, "control.sock");
	struct strbuf sb;
	char buf[4096];
	int fd, rc = 0;

	*out = NULL;
	if (!path)
		return -ENOMEM;
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sa.sun_path)) {
		free(path);
		return -ENAMETOOLONG;
	}
	strcpy(sa.sun_path, path);
	free(path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		rc = -errno;
		close(fd);
		return rc;
	}
	strbuf_init(&sb);
	if (write(fd, cmd, strlen(cmd)) < 0 || write(fd, "\n", 1) < 0) {
		rc = -errno;
		goto out;
	}
	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		strbuf_add(&sb, buf, (size_t)n);
	}
	if (sb.len == 0 || sb.oom) {
		rc = -EPROTO;
		goto out;
	}
	while (sb.len && sb.buf[sb.len - 1] == '\n')
		sb.buf[--sb.len] = '\0';
	*out = sb.buf;
	sb.buf = NULL;
out:
	strbuf_release(&sb);
	close(fd);
	return rc;
}

/* ---- configuration edits ---- */

struct cfg_edit {
	char *home, *path;
	int lockfd;
	struct config cfg;
};

static void
cfg_begin(struct cfg_edit *e)
{
	char err[256];
	char *lock;
	int rc;

	e->home = home_resolve(opt_home);
	if (!e->home || home_ensure(e->home) != 0) {
		fprintf(stderr, "shoal: cannot create the state directory %s\n",
			e->home ? e->home : "?");
		exit(1);
	}
	e->path = home_file(e->home, "config");
	lock = home_file(e->home, "config.lock");
	e->lockfd = lock ? open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600) : -1;
	free(lock);
	if (e->lockfd < 0 || flock(e->lockfd, LOCK_EX) != 0) {
		fprintf(stderr, "shoal: cannot lock the configuration in %s\n", e->home);
		exit(1);
	}
	rc = config_load(&e->cfg, e->path, err, sizeof(err));
	if (rc != 0) {
		fprintf(stderr, "shoal: %s: %s\n", e->path, err[0] ? err : strerror(-rc));
		exit(1);
	}
}

static void
cfg_end(struct cfg_edit *e, int save)
{
	char *reply = NULL;
	if (save) {
		int rc = config_save(&e->cfg, e->path);
		if (rc != 0) {
			fprintf(stderr, "shoal: cannot write %s: %s\n", e->path, strerror(-rc));
			exit(1);
		}
		if (ctl_request(e->home, "reload", &reply) == 0 && strcmp(reply, "ok") != 0)
			fprintf(stderr, "shoal: the running agent says: %s\n", reply);
		free(reply);
	}
	close(e->lockfd);
	config_release(&e->cfg);
	free(e->home);
	free(e->path);
}

static void
parse_devid_or_die(const char *s, unsigned char id[32])
{
	int rc = sec_devid_parse(s, id);
	if (rc == SEC_EDEVIDCHECK) {
		fprintf(stderr, "shoal: %s is not a valid device ID: a check character does not "
				"match (a typo?)\n", s);
		exit(2);
	}
	if (rc != 0) {
		fprintf(stderr, "shoal: %s is not a device ID (expected 56 letters A-Z and digits "
				"2-7 in groups of 7)\n", s);
		exit(2);
	}
}

static void
load_identity_or_die(const char *home, struct sec_identity *id)
{
	int rc = home_identity(home, id, 0, NULL);
	if (rc == -ENOENT) {
		fprintf(stderr, "shoal: no identity in %s yet; run `shoal init` first\n", home);
		exit(1);
	}
	if (rc != 0) {
		fprintf(stderr, "shoal: cannot read the device key in %s: %s\n", home,
			sec_strerror(rc));
		exit(1);
	}
}

/* ---- commands ---- */

static int
cmd_init(int argc, char **argv)
{
	static const struct option opts[] = {{"name", required_argument, NULL, 'n'}, {0}};
	const char *name = NULL;
	struct sec_identity id;
	struct cfg_edit e = {0};
	char idstr[SEC_DEVID_STRLEN + 1];
	int c, created, rc;

	if (wants_help(argc, argv)) {
		fputs(usage_init, stdout);
		return 0;
	}
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c == 'n')
			name = optarg;
		else
			die_usage(usage_init);
	}
	if (optind != argc)
		die_usage(usage_init);
	cfg_begin(&e);
	memset(&id, 0, sizeof(id));
	rc = home_identity(e.home, &id, 1, &created);
	if (rc != 0) {
		fprintf(stderr, "shoal: cannot create the device key in %s: %s\n", e.home,
			sec_strerror(rc));
		return 1;
	}
	if (name)
		config_set_str(&e.cfg.name, name);
	else if (!e.cfg.name) {
		char host[256] = "shoal";
		gethostname(host, sizeof(host) - 1);
		config_set_str(&e.cfg.name, host);
	}
	sec_devid_format(id.id, idstr);
	printf("%s identity in %s (device name \"%s\")\n", created ? "Created a new" : "Existing",
	       e.home, e.cfg.name);
	printf("%s\n", idstr);
	cfg_end(&e, 1);
	sec_identity_release(&id);
	return 0;
}

static int
cmd_id(int argc, char **argv)
{
	struct sec_identity id;
	char idstr[SEC_DEVID_STRLEN + 1];
	char *home;

	if (wants_help(argc, argv)) {
		fputs(usage_id, stdout);
		return 0;
	}
	if (argc > 1)
		die_usage(usage_id);
	home = home_resolve(opt_home);
	memset(&id, 0, sizeof(id));
	load_identity_or_die(home, &id);
	sec_devid_format(id.id, idstr);
	printf("%s\n", idstr);
	sec_identity_release(&id);
	free(home);
	return 0;
}

static int
folder_add(int argc, char **argv)
{
	static const struct option opts[] = {{"mode", required_argument, NULL, 'm'},
					     {"label", required_argument, NULL, 'l'},
					     {0}};
	enum folder_mode mode = MODE_SENDRECEIVE;
	const char *label = NULL;
	char real[PATH_MAX];
	struct cfg_edit e = {0};
	struct cfg_folder *f;
	int c, rc;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c == 'm') {
			if (mode_parse(optarg, &mode) != 0) {
				fprintf(stderr, "shoal: unknown mode %s (send, receive or "
						"send-receive)\n", optarg);
				return 2;
			}
		} else if (c == 'l') {
			label = optarg;
		} else {
			die_usage(usage_folder);
		}
	}
	if (argc - optind != 2)
		die_usage(usage_folder);
	const char *fid = argv[optind], *path = argv[optind + 1];
	if (!folder_id_valid(fid)) {
		fprintf(stderr, "shoal: bad folder ID \"%s\": use 1-64 letters, digits, '.', '_' or "
				"'-', not starting with '.'\n", fid);
		return 2;
	}
	rc = mkdir_p(path, 0755);
	if (rc != 0 || !realpath(path, real)) {
		fprintf(stderr, "shoal: cannot create or open %s: %s\n", path,
			strerror(rc ? -rc : errno));
		return 1;
	}
	cfg_begin(&e);
	if ((f = config_folder(&e.cfg, fid))) {
		if (strcmp(f->path, real) != 0) {
			fprintf(stderr, "shoal: folder %s already exists at %s\n", fid, f->path);
			cfg_end(&e, 0);
			return 1;
		}
		f->mode = mode;
	} else if (!(f = config_add_folder(&e.cfg, fid, real, mode))) {
		fprintf(stderr, "shoal: out of memory\n");
		return 1;
	}
	if (label)
		config_set_str(&f->label, label);
	/* The marker tells a later scan that the folder's disk is really there. */
	char *marker = path_join(real, ".shoal-folder");
	int fd = marker ? open(marker, O_WRONLY | O_CREAT | O_CLOEXEC, 0644) : -1;
	if (fd >= 0)
		close(fd);
	free(marker);
	printf("folder %s at %s (%s)\n", fid, real, mode_name(mode));
	cfg_end(&e, 1);
	return 0;
}

static int
folder_share(int argc, char **argv, int share)
{
	unsigned char id[32];
	struct cfg_edit e = {0};
	struct cfg_folder *f;

	if (argc != 3)
		die_usage(usage_folder);
	optind = 1;
	parse_devid_or_die(argv[optind + 1], id);
	cfg_begin(&e);
	f = config_folder(&e.cfg, argv[optind]);
	if (!f) {
		fprintf(stderr, "shoal: no folder %s; add it with `shoal folder add`\n",
			argv[optind]);
		cfg_end(&e, 0);
		return 1;
	}
	if (share) {
		if (!config_peer(&e.cfg, id)) {
			/* Sharing with a device makes it known; its address may come later. */
			config_add_peer(&e.cfg, id);
			fprintf(stderr, "shoal: note: %s was not a known device; added it (give its "
					"address with `shoal device add ID --addr HOST:PORT`)\n",
				argv[optind + 1]);
		}
		config_folder_share(f, id);
		printf("folder %s shared with %s\n", f->id, argv[optind + 1]);
	} else {
		size_t w = 0;
		for (size_t i = 0; i < f->nshares; i++)
			if (memcmp(f->shares[i], id, 32) != 0)
				memcpy(f->shares[w++], f->shares[i], 32);
		f->nshares = w;
		printf("folder %s no longer shared with %s\n", f->id, argv[optind + 1]);
	}
	cfg_end(&e, 1);
	return 0;
}

static int
folder_remove(int argc, char **argv)
{
	struct cfg_edit e = {0};
	size_t w = 0;
	int found = 0;

	if (argc != 2)
		die_usage(usage_folder);
	optind = 1;
	cfg_begin(&e);
	for (size_t i = 0; i < e.cfg.nfolders; i++) {
		struct cfg_folder *f = &e.cfg.folders[i];
		if (strcmp(f->id, argv[optind]) == 0) {
			found = 1;
			free(f->id);
			free(f->label);
			free(f->path);
			free(f->shares);
			continue;
		}
		e.cfg.folders[w++] = *f;
	}
	e.cfg.nfolders = w;
	if (!found) {
		fprintf(stderr, "shoal: no folder %s\n", argv[optind]);
		cfg_end(&e, 0);
		return 1;
	}
	printf("folder %s removed (its files stay on disk)\n", argv[optind]);
	cfg_end(&e, 1);
	return 0;
}

static int
folder_list(int json)
{
	struct cfg_edit e = {0};
	char idstr[SEC_DEVID_STRLEN + 1];
	struct json j;

	cfg_begin(&e);
	json_init(&j);
	json_arr_open(&j);
	for (size_t i = 0; i < e.cfg.nfolders; i++) {
		struct cfg_folder *f = &e.cfg.folders[i];
		if (!json) {
			printf("%s\t%s\t%s\t%zu device%s\n", f->id, mode_name(f->mode), f->path,
			       f->nshares, f->nshares == 1 ? "" : "s");
			continue;
		}
		json_obj_open(&j);
		json_key(&j, "id");
		json_str(&j, f->id);
		json_key(&j, "path");
		json_str(&j, f->path);
		json_key(&j, "mode");
		json_str(&j, mode_name(f->mode));
		json_key(&j, "shared_with");
		json_arr_open(&j);
		for (size_t k = 0; k < f->nshares; k++) {
			sec_devid_format(f->shares[k], idstr);
			json_str(&j, idstr);
		}
		json_arr_close(&j);
		json_obj_close(&j);
	}
	json_arr_close(&j);
	if (json)
		printf("%s\n", json_finish(&j));
	json_release(&j);
	cfg_end(&e, 0);
	return 0;
}

static int
cmd_folder(int argc, char **argv)
{
	const char *sub = argc > 1 ? argv[1] : "";

	if (wants_help(argc, argv) || argc < 2) {
		fputs(usage_folder, argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	argc--;
	argv++;
	optind = 0;
	if (strcmp(sub, "add") == 0)
		return folder_add(argc, argv);
	if (strcmp(sub, "share") == 0)
		return folder_share(argc, argv, 1);
	if (strcmp(sub, "unshare") == 0)
		return folder_share(argc, argv, 0);
	if (strcmp(sub, "remove") == 0)
		return folder_remove(argc, argv);
	if (strcmp(sub, "list") == 0)
		return folder_list(argc > 1 && strcmp(argv[1], "--json") == 0);
	if (strcmp(sub, "revert") == 0) {
		char cmd[128], *reply = NULL, *home = home_resolve(opt_home);
		if (argc != 2 || strlen(argv[1]) > 64)
			die_usage(usage_folder);
		snprintf(cmd, sizeof(cmd), "revert %s", argv[1]);
		int rc = ctl_request(home, cmd, &reply);
		free(home);
		if (rc != 0) {
			fprintf(stderr, "shoal: the agent is not running; start it to revert\n");
			return 1;
		}
		int ok = strcmp(reply, "ok") == 0;
		if (ok)
			printf("folder %s: local changes reverted; the cluster's versions are being "
			       "pulled\n", argv[1]);
		else
			fprintf(stderr, "shoal: %s\n", reply);
		free(reply);
		return ok ? 0 : 1;
	}
	die_usage(usage_folder);
	return 2;
}

static int
device_add(int argc, char **argv)
{
	static const struct option opts[] = {{"name", required_argument, NULL, 'n'},
					     {"addr", required_argument, NULL, 'a'},
					     {0}};
	const char *name = NULL;
	const char *addrs[16];
	size_t naddrs = 0;
	unsigned char id[32];
	struct sec_identity me;
	struct cfg_edit e = {0};
	struct cfg_peer *p;
	int c;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c == 'n')
			name = optarg;
		else if (c == 'a' && naddrs < 16)
			addrs[naddrs++] = optarg;
		else
			die_usage(usage_device);
	}
	if (argc - optind != 1)
		die_usage(usage_device);
	parse_devid_or_die(argv[optind], id);
	for (size_t i = 0; i < naddrs; i++) {
		const char *colon = strrchr(addrs[i], ':');
		if (!colon || atoi(colon + 1) <= 0 || atoi(colon + 1) > 65535) {
			fprintf(stderr, "shoal: bad address %s: expected HOST:PORT\n", addrs[i]);
			return 2;
		}
	}
	cfg_begin(&e);
	memset(&me, 0, sizeof(me));
	if (home_identity(e.home, &me, 0, NULL) == 0 && memcmp(me.id, id, 32) == 0) {
		fprintf(stderr, "shoal: %s is this device's own ID\n", argv[optind]);
		sec_identity_release(&me);
		cfg_end(&e, 0);
		return 1;
	}
	sec_identity_release(&me);
	p = config_peer(&e.cfg, id);
	if (!p && !(p = config_add_peer(&e.cfg, id))) {
		fprintf(stderr, "shoal: out of memory\n");
		return 1;
	}
	if (name)
		config_set_str(&p->name, name);
	for (size_t i = 0; i < naddrs; i++)
		config_peer_add_addr(p, addrs[i]);
	printf("device %s added\n", argv[optind]);
	cfg_end(&e, 1);
	return 0;
}

static int
device_remove(int argc, char **argv)
{
	unsigned char id[32];
	struct cfg_edit e = {0};
	size_t w = 0;
	int found = 0;

	if (argc != 2)
		die_usage(usage_device);
	optind = 1;
	parse_devid_or_die(argv[optind], id);
	cfg_begin(&e);
	for (size_t i = 0; i < e.cfg.npeers; i++) {
		struct cfg_peer *p = &e.cfg.peers[i];
		if (memcmp(p->id, id, 32) == 0) {
			found = 1;
			free(p->name);
			for (size_t k = 0; k < p->naddrs; k++)
				free(p->addrs[k]);
			free(p->addrs);
			continue;
		}
		e.cfg.peers[w++] = *p;
	}
	e.cfg.npeers = w;
	for (size_t i = 0; i < e.cfg.nfolders; i++) {
		struct cfg_folder *f = &e.cfg.folders[i];
		size_t k2 = 0;
		for (size_t k = 0; k < f->nshares; k++)
			if (memcmp(f->shares[k], id, 32) != 0)
				memcpy(f->shares[k2++], f->shares[k], 32);
		f->nshares = k2;
	}
	if (!found) {
		fprintf(stderr, "shoal: no device %s\n", argv[optind]);
		cfg_end(&e, 0);
		return 1;
	}
	printf("device %s removed\n", argv[optind]);
	cfg_end(&e, 1);
	return 0;
}

static int
device_list(int json)
{
	struct cfg_edit e = {0};
	char idstr[SEC_DEVID_STRLEN + 1];
	struct json j;

	cfg_begin(&e);
	json_init(&j);
	json_arr_open(&j);
	for (size_t i = 0; i < e.cfg.npeers; i++) {
		struct cfg_peer *p = &e.cfg.peers[i];
		sec_devid_format(p->id, idstr);
		if (!json) {
			printf("%s\t%s", idstr, p->name ? p->name : "-");
			for (size_t k = 0; k < p->naddrs; k++)
				printf("\t%s", p->addrs[k]);
			printf("\n");
			continue;
		}
		json_obj_open(&j);
		json_key(&j, "id");
		json_str(&j, idstr);
		json_key(&j, "name");
		json_str(&j, p->name ? p->name : "");
		json_key(&j, "addresses");
		json_arr_open(&j);
		for (size_t k = 0; k < p->naddrs; k++)
			json_str(&j, p->addrs[k]);
		json_arr_close(&j);
		json_obj_close(&j);
	}
	json_arr_close(&j);
	if (json)
		printf("%s\n", json_finish(&j));
	json_release(&j);
	cfg_end(&e, 0);
	return 0;
}

static int
cmd_device(int argc, char **argv)
{
	const char *sub = argc > 1 ? argv[1] : "";

	if (wants_help(argc, argv) || argc < 2) {
		fputs(usage_device, argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	argc--;
	argv++;
	optind = 0;
	if (strcmp(sub, "add") == 0)
		return device_add(argc, argv);
	if (strcmp(sub, "remove") == 0)
		return device_remove(argc, argv);
	if (strcmp(sub, "list") == 0)
		return device_list(argc > 1 && strcmp(argv[1], "--json") == 0);
	die_usage(usage_device);
	return 2;
}

static int
cmd_run(int argc, char **argv)
{
	static const struct option opts[] = {{"listen", required_argument, NULL, 'l'},
					     {"no-mdns", no_argument, NULL, 'M'},
					     {0}};
	const char *listen = NULL;
	int no_mdns = 0, c;

	if (wants_help(argc, argv)) {
		fputs(usage_run, stdout);
		return 0;
	}
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c == 'l')
			listen = optarg;
		else if (c == 'M')
			no_mdns = 1;
		else
			die_usage(usage_run);
	}
	if (optind != argc)
		die_usage(usage_run);
	return agent_run(opt_home, listen, no_mdns);
}

static int
cmd_events(int argc, char **argv)
{
	static const struct option opts[] = {{"since", required_argument, NULL, 's'},
					     {"json", no_argument, NULL, 'j'},
					     {0}};
	unsigned long long since = 0;
	int json = 0, c, fd;
	char *home, *path, buf[65536], cmd[64];
	struct sockaddr_un sa;
	struct strbuf line;

	if (wants_help(argc, argv)) {
		fputs(usage_events, stdout);
		return 0;
	}
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c == 's')
			since = strtoull(optarg, NULL, 10);
		else if (c == 'j')
			json = 1;
		else
			die_usage(usage_events);
	}
	if (optind != argc)
		die_usage(usage_events);
	home = home_resolve(opt_home);
	path = home_file(home, "control.sock");
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	free(path);
	free(home);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		fprintf(stderr, "shoal: the agent is not running\n");
		return 1;
	}
	snprintf(cmd, sizeof(cmd), "events %llu\n", since);
	if (write(fd, cmd, strlen(cmd)) < 0) {
		close(fd);
		return 1;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	strbuf_init(&line);
	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		if (json) {
			fwrite(buf, 1, (size_t)n, stdout);
			continue;
		}
		/* People get "time type key=value ..." per event. */
		for (ssize_t i = 0; i < n; i++) {
			if (buf[i] != '\n') {
				strbuf_add(&line, &buf[i], 1);
				continue;
			}
			struct jv *v = line.buf ? jv_parse(line.buf) : NULL;
			if (v) {
				printf("%s %6.0f %-20s", jv_str(jv_get(v, "time"), "?"),
				       jv_num(jv_get(v, "seq")), jv_str(jv_get(v, "type"), "?"));
				for (size_t k = 0; k < v->n; k++) {
					const char *key = v->keys[k];
					const struct jv *x = v->items[k];
					if (!strcmp(key, "seq") || !strcmp(key, "time") || !strcmp(key, "type"))
						continue;
					if (x->type == JV_STR)
						printf(" %s=%s", key, x->str);
					else if (x->type == JV_NUM)
						printf(" %s=%.0f", key, x->num);
					else if (x->type == JV_BOOL)
						printf(" %s=%s", key, x->b ? "true" : "false");
				}
				printf("\n");
				jv_free(v);
			}
			line.len = 0;
			if (line.buf)
				line.buf[0] = '\0';
		}
	}
	strbuf_release(&line);
	close(fd);
	return 0;
}

static int
cmd_scan(int argc, char **argv)
{
	int wait = 0;
	const char *pos[2] = {NULL, NULL};
	int npos = 0;
	char cmd[8192], *reply = NULL, *home;

	if (wants_help(argc, argv)) {
		fputs(usage_scan, stdout);
		return 0;
	}
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--wait") == 0)
			wait = 1;
		else if (npos < 2 && argv[i][0] != '-')
			pos[npos++] = argv[i];
		else
			die_usage(usage_scan);
	}
	if (npos < 1)
		die_usage(usage_scan);
	if (snprintf(cmd, sizeof(cmd), "%s %s%s%s", wait ? "scanwait" : "scan", pos[0],
		     pos[1] ? " " : "", pos[1] ? pos[1] : "") >= (int)sizeof(cmd))
		die_usage(usage_scan);
	home = home_resolve(opt_home);
	int rc = ctl_request(home, cmd, &reply);
	free(home);
	if (rc != 0) {
		fprintf(stderr, "shoal: the agent is not running (a scan happens when it starts)\n");
		return 1;
	}
	int ok = strcmp(reply, "ok") == 0;
	if (!ok)
		fprintf(stderr, "shoal: %s\n", reply);
	else if (wait)
		printf("scan of %s%s%s done\n", pos[0], pos[1] ? " " : "", pos[1] ? pos[1] : "");
	free(reply);
	return ok ? 0 : 1;
}

static int
cmd_ls(int argc, char **argv)
{
	static const struct option opts[] = {{"cursor", required_argument, NULL, 'c'},
					     {"limit", required_argument, NULL, 'l'},
					     {"json", no_argument, NULL, 'j'},
					     {0}};
	const char *cursor = NULL;
	long limit = 500;
	int json = 0, c;

	if (wants_help(argc, argv)) {
		fputs(usage_ls, stdout);
		return 0;
	}
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c == 'c')
			cursor = optarg;
		else if (c == 'l')
			limit = atol(optarg);
		else if (c == 'j')
			json = 1;
		else
			die_usage(usage_ls);
	}
	if (argc - optind < 1 || argc - optind > 2 || limit <= 0 || limit > 100000)
		die_usage(usage_ls);
	char *path = argc - optind == 2 ? strdup(argv[optind + 1]) : NULL;
	if (path) {
		size_t n = strlen(path);
		while (n > 0 && path[n - 1] == '/')
			path[--n] = '\0';
	}
	char *home = home_resolve(opt_home);
	int rc = ls_run(home, argv[optind], path, cursor, (size_t)limit, json);
	free(home);
	free(path);
	return rc;
}

static int
cmd_conflicts(int argc, char **argv)
{
	int json = 0;
	const char *folder = NULL;

	if (wants_help(argc, argv)) {
		fputs(usage_conflicts, stdout);
		return 0;
	}
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0)
			json = 1;
		else if (!folder && argv[i][0] != '-')
			folder = argv[i];
		else
			die_usage(usage_conflicts);
	}
	char *home = home_resolve(opt_home);
	int rc = conflicts_run(home, folder, json);
	free(home);
	return rc;
}

/* The addresses an invite offers: the listen address, or the host's when it listens on all. */
static size_t
invite_addrs(const char *home, const struct config *cfg, char addrs[][PROTO_INVITE_ADDR_MAX + 1],
	     size_t max)
{
	char listen[96], *reply = NULL;
	size_t n = 0;
	snprintf(listen, sizeof(listen), "%s", cfg->listen ? cfg->listen : CFG_DEFAULT_LISTEN);
	/* A running agent knows the port it really listens on. */
	if (ctl_request(home, "status", &reply) == 0) {
		struct jv *v = jv_parse(reply);
		const char *l = jv_str(jv_get(jv_get(v, "device"), "listen"), NULL);
		if (l && *l)
			snprintf(listen, sizeof(listen), "%s", l);
		jv_free(v);
	}
	free(reply);
	const char *colon = strrchr(listen, ':');
	if (!colon)
		return 0;
	const char *port = colon + 1;
	if (strncmp(listen, "0.0.0.0:", 8) != 0 && strncmp(listen, "[::]:", 5) != 0) {
		if (strlen(listen) <= PROTO_INVITE_ADDR_MAX)
			memcpy(addrs[n++], listen, strlen(listen) + 1);
		return n;
	}
	struct ifaddrs *ifs = NULL;
	if (getifaddrs(&ifs) != 0)
		return 0;
	for (struct ifaddrs *i = ifs; i && n < max; i = i->ifa_next) {
		char host[INET_ADDRSTRLEN];
		if (!i->ifa_addr || (i->ifa_flags & IFF_LOOPBACK) || !(i->ifa_flags & IFF_UP))
			continue;
		if (i->ifa_addr->sa_family == AF_INET) {
			inet_ntop(AF_INET, &((struct sockaddr_in *)i->ifa_addr)->sin_addr, host, sizeof(host));
			if (strlen(host) + 1 + strlen(port) <= PROTO_INVITE_ADDR_MAX)
				snprintf(addrs[n++], PROTO_INVITE_ADDR_MAX + 1, "%s:%.8s", host, port);
		}
	}
	freeifaddrs(ifs);
	return n;
}

static int
cmd_invite(int argc, char **argv)
{
	static const struct option opts[] = {{"expires", required_argument, NULL, 'e'},
					     {"uses", required_argument, NULL, 'u'},
					     {"addr", required_argument, NULL, 'a'},
					     {"list", no_argument, NULL, 'l'},
					     {"revoke", required_argument, NULL, 'r'},
					     {"json", no_argument, NULL, 'j'},
					     {0}};
	uint64_t expires = 24 * 3600;
	long uses = 1;
	int list = 0, json = 0, c;
	const char *revoke = NULL, *addrs[PROTO_INVITE_ADDRS];
	size_t naddrs = 0;

	if (wants_help(argc, argv)) {
		fputs(usage_invite, stdout);
		return 0;
	}
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c == 'e' && parse_duration(optarg, &expires) == 0)
			continue;
		if (c == 'u' && (uses = atol(optarg)) > 0 && uses < 1000000)
			continue;
		if (c == 'a' && naddrs < PROTO_INVITE_ADDRS && strlen(optarg) <= PROTO_INVITE_ADDR_MAX) {
			addrs[naddrs++] = optarg;
			continue;
		}
		if (c == 'l') {
			list = 1;
			continue;
		}
		if (c == 'j') {
			json = 1;
			continue;
		}
		if (c == 'r') {
			revoke = optarg;
			continue;
		}
		die_usage(usage_invite);
	}
	char *home = home_resolve(opt_home);
	struct invite *v = NULL;
	size_t n = 0;
	int lock = invites_lock(home), rc = 0;
	if (lock < 0 || invites_load(home, &v, &n) != 0) {
		fprintf(stderr, "shoal: cannot read the invites in %s\n", home);
		invites_unlock(lock);
		free(home);
		return 1;
	}
	if (list) {
		uint64_t now = (uint64_t)time(NULL);
		struct json j;
		json_init(&j);
		json_arr_open(&j);
		for (size_t i = 0; i < n; i++) {
			const char *st = v[i].uses == 0 ? "used up"
					 : v[i].expires && now > v[i].expires ? "expired"
									      : "active";
			if (json) {
				json_obj_open(&j);
				json_key(&j, "id");
				json_str(&j, v[i].id);
				json_key(&j, "folder");
				json_str(&j, v[i].folder);
				json_key(&j, "uses_left");
				json_u64(&j, v[i].uses);
				json_key(&j, "expires");
				json_u64(&j, v[i].expires);
				json_key(&j, "state");
				json_str(&j, st);
				json_obj_close(&j);
			} else {
				char ts[32] = "never";
				if (v[i].expires) {
					time_t t = (time_t)v[i].expires;
					struct tm tm;
					localtime_r(&t, &tm);
					strftime(ts, sizeof(ts), "%Y-%m-%d %H:%M", &tm);
				}
				printf("%s\t%s\t%u use%s left\texpires %s\t%s\n", v[i].id, v[i].folder,
				       v[i].uses, v[i].uses == 1 ? "" : "s", ts, st);
			}
		}
		json_arr_close(&j);
		if (json)
			printf("%s\n", json_finish(&j));
		else if (n == 0)
			printf("no invites\n");
		json_release(&j);
	} else if (revoke) {
		size_t w = 0;
		for (size_t i = 0; i < n; i++)
			if (strcmp(v[i].id, revoke) != 0)
				v[w++] = v[i];
		if (w == n) {
			fprintf(stderr, "shoal: no invite %s (see shoal invite --list)\n", revoke);
			rc = 1;
		} else if (invites_save(home, v, w) != 0) {
			fprintf(stderr, "shoal: cannot write the invites\n");
			rc = 1;
		} else {
			printf("invite %s revoked\n", revoke);
		}
	} else {
		struct config cfg;
		struct sec_identity me;
		struct proto_invite iv;
		struct invite ni;
		char err[256], code[PROTO_INVITE_CODE_MAX], *cpath = home_file(home, "config");
		if (argc - optind != 1)
			die_usage(usage_invite);
		const char *fid = argv[optind];
		memset(&me, 0, sizeof(me));
		memset(&iv, 0, sizeof(iv));
		memset(&ni, 0, sizeof(ni));
		if (config_load(&cfg, cpath, err, sizeof(err)) != 0) {
			fprintf(stderr, "shoal: %s: %s\n", cpath, err);
			rc = 1;
		} else if (!config_folder(&cfg, fid)) {
			fprintf(stderr, "shoal: no folder %s here; add it with `shoal folder add`\n", fid);
			rc = 1;
		} else if (config_folder(&cfg, fid)->mode == MODE_RECEIVE) {
			fprintf(stderr, "shoal: folder %s is receive-only here: invite from the owner's "
					"device\n", fid);
			rc = 1;
		} else if (home_identity(home, &me, 0, NULL) != 0) {
			fprintf(stderr, "shoal: no identity yet; run `shoal init` first\n");
			rc = 1;
		} else {
			struct cfg_folder *f = config_folder(&cfg, fid);
			memcpy(iv.owner, me.id, 32);
			randombytes_buf(iv.secret, sizeof(iv.secret));
			iv.expires = expires ? (uint64_t)time(NULL) + expires : 0;
			snprintf(iv.folder, sizeof(iv.folder), "%s", fid);
			snprintf(iv.label, sizeof(iv.label), "%.64s", f->label ? f->label : fid);
			for (size_t i = 0; i < naddrs; i++)
				snprintf(iv.addrs[i], sizeof(iv.addrs[i]), "%s", addrs[i]);
			iv.naddrs = naddrs ? naddrs : invite_addrs(home, &cfg, iv.addrs, 4);
			unsigned char rid[4];
			randombytes_buf(rid, sizeof(rid));
			hex_encode(rid, 4, ni.id);
			snprintf(ni.folder, sizeof(ni.folder), "%s", fid);
			crypto_generichash(ni.hash, 32, iv.secret, sizeof(iv.secret), NULL, 0);
			ni.expires = iv.expires;
			ni.uses = (unsigned)uses;
			ni.created = (uint64_t)time(NULL);
			struct invite *nv = realloc(v, (n + 1) * sizeof(*nv));
			if (!nv || proto_invite_encode(&iv, code, sizeof(code)) != 0) {
				fprintf(stderr, "shoal: cannot make the invite\n");
				rc = 1;
			} else {
				v = nv;
				v[n++] = ni;
				if (invites_save(home, v, n) != 0) {
					fprintf(stderr, "shoal: cannot write the invites\n");
					rc = 1;
				} else {
					fprintf(stderr, "invite %s for folder %s: %ld use%s, %s\n", ni.id,
						fid, uses, uses == 1 ? "" : "s",
						expires ? "expires in the time given" : "never expires");
					printf("%s\n", code);
				}
			}
			sodium_memzero(&iv, sizeof(iv));
			config_release(&cfg);
		}
		sec_identity_release(&me);
		free(cpath);
	}
	free(v);
	invites_unlock(lock);
	free(home);
	return rc;
}

static int
cmd_join(int argc, char **argv)
{
	struct proto_invite iv;
	struct cfg_edit e = {0};
	struct sec_identity me;
	char real[PATH_MAX], owner[SEC_DEVID_STRLEN + 1];
	int rc, added_peer = 0;

	if (wants_help(argc, argv)) {
		fputs(usage_join, stdout);
		return 0;
	}
	if (argc != 3)
		die_usage(usage_join);
	rc = proto_invite_decode(argv[1], &iv);
	if (rc != 0) {
		fprintf(stderr, "shoal: %s\n", proto_strerror(rc));
		return 2;
	}
	sec_devid_format(iv.owner, owner);
	rc = mkdir_p(argv[2], 0755);
	if (rc != 0 || !realpath(argv[2], real)) {
		fprintf(stderr, "shoal: cannot create or open %s: %s\n", argv[2], strerror(rc ? -rc : errno));
		return 1;
	}
	cfg_begin(&e);
	memset(&me, 0, sizeof(me));
	if (home_identity(e.home, &me, 1, NULL) != 0) {
		fprintf(stderr, "shoal: cannot create this device's identity in %s\n", e.home);
		cfg_end(&e, 0);
		return 1;
	}
	if (memcmp(me.id, iv.owner, 32) == 0) {
		fprintf(stderr, "shoal: this invite was made on this device\n");
		sec_identity_release(&me);
		cfg_end(&e, 0);
		return 1;
	}
	sec_identity_release(&me);
	if (!e.cfg.name) {
		char host[256] = "shoal";
		gethostname(host, sizeof(host) - 1);
		config_set_str(&e.cfg.name, host);
	}
	struct cfg_folder *f = config_folder(&e.cfg, iv.folder);
	if (f && strcmp(f->path, real) != 0) {
		fprintf(stderr, "shoal: folder %s already exists here at %s\n", iv.folder, f->path);
		cfg_end(&e, 0);
		return 1;
	}
	struct cfg_peer *p = config_peer(&e.cfg, iv.owner);
	if (!p) {
		p = config_add_peer(&e.cfg, iv.owner);
		added_peer = 1;
	}
	if (!p) {
		cfg_end(&e, 0);
		return 1;
	}
	if (!p->name)
		config_set_str(&p->name, iv.label[0] ? iv.label : "owner");
	for (size_t i = 0; i < iv.naddrs; i++)
		config_peer_add_addr(p, iv.addrs[i]);
	if (!f)
		f = config_add_folder(&e.cfg, iv.folder, real, MODE_RECEIVE);
	if (!f) {
		cfg_end(&e, 0);
		return 1;
	}
	f->mode = MODE_RECEIVE;
	if (iv.label[0])
		config_set_str(&f->label, iv.label);
	config_folder_share(f, iv.owner);
	char *marker = path_join(real, ".shoal-folder");
	int fd = marker ? open(marker, O_WRONLY | O_CREAT | O_CLOEXEC, 0644) : -1;
	if (fd >= 0)
		close(fd);
	free(marker);
	/* The pending join: the agent presents the secret when it reaches the owner. */
	struct join *jv = NULL;
	size_t jn = 0;
	joins_load(e.home, &jv, &jn);
	size_t w = 0;
	for (size_t i = 0; i < jn; i++)
		if (!(memcmp(jv[i].owner, iv.owner, 32) == 0 && strcmp(jv[i].folder, iv.folder) == 0))
			jv[w++] = jv[i];
	struct join *nj = realloc(jv, (w + 1) * sizeof(*nj));
	if (!nj) {
		free(jv);
		cfg_end(&e, 0);
		return 1;
	}
	jv = nj;
	memset(&jv[w], 0, sizeof(jv[w]));
	memcpy(jv[w].owner, iv.owner, 32);
	snprintf(jv[w].folder, sizeof(jv[w].folder), "%s", iv.folder);
	memcpy(jv[w].secret, iv.secret, 16);
	snprintf(jv[w].state, sizeof(jv[w].state), "pending");
	rc = joins_save(e.home, jv, w + 1);
	sodium_memzero(jv, (w + 1) * sizeof(*jv));
	free(jv);
	sodium_memzero(&iv, sizeof(iv));
	if (rc != 0) {
		fprintf(stderr, "shoal: cannot record the invite in %s\n", e.home);
		cfg_end(&e, 0);
		return 1;
	}
	char *home = strdup(e.home);
	char *reply = NULL;
	cfg_end(&e, 1); /* saves, and a running agent reloads and contacts the owner */
	int running = ctl_request(home, "status", &reply) == 0;
	free(reply);
	if (!running) {
		printf("Joined at %s. Start the agent (`shoal run`): it contacts the owner %s, "
		       "presents the invite, and then receives the folder.\n",
		       real, owner);
		free(home);
		return 0;
	}
	/* Wait for the owner's answer, which the agent records in HOME/joins. */
	printf("contacting the owner %s ...\n", owner);
	fflush(stdout);
	for (int t = 0; t < 300; t++) {
		struct join *v = NULL;
		size_t n = 0;
		int done = 0, ok = 0;
		char msg[200] = "";
		usleep(100000);
		if (joins_load(home, &v, &n) != 0)
			continue;
		for (size_t i = 0; i < n; i++) {
			if (strcmp(v[i].state, "pending") == 0)
				continue;
			char o2[SEC_DEVID_STRLEN + 1];
			sec_devid_format(v[i].owner, o2);
			if (strcmp(o2, owner) != 0)
				continue;
			done = 1;
			ok = strcmp(v[i].state, "accepted") == 0;
			snprintf(msg, sizeof(msg), "%s", v[i].message);
		}
		free(v);
		if (!done)
			continue;
		if (ok) {
			printf("accepted: %s\nThe folder arrives in %s; `shoal status` shows progress.\n",
			       msg, real);
			free(home);
			return 0;
		}
		fprintf(stderr, "shoal: the owner refused the invite: %s\n", msg);
		/* Undo what join added, so a new code can be tried cleanly. */
		struct cfg_edit u = {0};
		const char *saved = opt_home;
		opt_home = home;
		cfg_begin(&u);
		opt_home = saved;
		size_t wf = 0;
		for (size_t i = 0; i < u.cfg.nfolders; i++) {
			struct cfg_folder *x = &u.cfg.folders[i];
			if (strcmp(x->path, real) == 0 && x->mode == MODE_RECEIVE) {
				free(x->id);
				free(x->label);
				free(x->path);
				free(x->shares);
				continue;
			}
			u.cfg.folders[wf++] = *x;
		}
		u.cfg.nfolders = wf;
		if (added_peer) {
			unsigned char oid[32];
			int used = 0;
			sec_devid_parse(owner, oid);
			for (size_t i = 0; i < u.cfg.nfolders; i++)
				used |= config_folder_shared(&u.cfg.folders[i], oid);
			size_t wp = 0;
			for (size_t i = 0; i < u.cfg.npeers; i++) {
				struct cfg_peer *pp = &u.cfg.peers[i];
				if (!used && memcmp(pp->id, oid, 32) == 0) {
					free(pp->name);
					for (size_t k = 0; k < pp->naddrs; k++)
						free(pp->addrs[k]);
					free(pp->addrs);
					continue;
				}
				u.cfg.peers[wp++] = *pp;
			}
			u.cfg.npeers = wp;
		}
		cfg_end(&u, 1);
		free(home);
		return 1;
	}
	printf("no answer from the owner yet; the agent keeps trying (see `shoal status`)\n");
	free(home);
	return 0;
}

/* Status when no agent runs: the configuration and what the database knows. */
static void
status_offline(const char *home, struct json *j)
{
	struct config cfg;
	struct sec_identity id;
	struct store *st = NULL;
	char err[256], idstr[SEC_DEVID_STRLEN + 1] = "";
	char *cpath = home_file(home, "config");

	memset(&id, 0, sizeof(id));
	if (home_identity(home, &id, 0, NULL) == 0)
		sec_devid_format(id.id, idstr);
	sec_identity_release(&id);
	int crc = config_load(&cfg, cpath, err, sizeof(err));
	if (crc != 0) {
		fprintf(stderr, "shoal: %s: %s\n", cpath, err[0] ? err : strerror(-crc));
		memset(&cfg, 0, sizeof(cfg));
	}
	free(cpath);
	if (store_open_readonly(&st, home) != 0)
		st = NULL;
	json_obj_open(j);
	json_key(j, "device");
	json_obj_open(j);
	json_key(j, "id");
	json_str(j, idstr);
	json_key(j, "name");
	json_str(j, cfg.name ? cfg.name : "");
	json_obj_close(j);
	json_key(j, "running");
	json_bool(j, 0);
	json_key(j, "folders");
	json_arr_open(j);
	for (size_t i = 0; i < cfg.nfolders; i++) {
		struct cfg_folder *f = &cfg.folders[i];
		struct counts local = {0, 0}, global = {0, 0}, need = {0, 0};
		if (st) {
			struct store_txn *txn;
			uint32_t fnum, devs[64];
			size_t n = 0;
			if (store_read_begin(st, &txn) == 0) {
				int ok = store_folder_num(txn, f->id, 0, &fnum) == 0;
				for (size_t k = 0; ok && k < f->nshares && n < 64; k++)
					if (store_device_num(txn, f->shares[k], 0, &devs[n]) == 0)
						n++;
				store_read_end(txn);
				if (ok)
					plan_counts(st, fnum, devs, n, f->mode, &local, &global,
						    &need);
			}
		}
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
		json_str(j, "stopped");
		json_key(j, "error");
		json_null(j);
		const struct counts *cs[3] = {&local, &global, &need};
		const char *names[3] = {"local", "global", "need"};
		for (int k = 0; k < 3; k++) {
			json_key(j, names[k]);
			json_obj_open(j);
			json_key(j, "files");
			json_u64(j, cs[k]->files);
			json_key(j, "bytes");
			json_u64(j, cs[k]->bytes);
			json_obj_close(j);
		}
		json_obj_close(j);
	}
	json_arr_close(j);
	json_key(j, "devices");
	json_arr_open(j);
	for (size_t i = 0; i < cfg.npeers; i++) {
		sec_devid_format(cfg.peers[i].id, idstr);
		json_obj_open(j);
		json_key(j, "id");
		json_str(j, idstr);
		json_key(j, "name");
		json_str(j, cfg.peers[i].name ? cfg.peers[i].name : "");
		json_key(j, "connected");
		json_bool(j, 0);
		json_key(j, "address");
		json_null(j);
		json_key(j, "in_bytes");
		json_u64(j, 0);
		json_key(j, "out_bytes");
		json_u64(j, 0);
		json_obj_close(j);
	}
	json_arr_close(j);
	json_obj_close(j);
	if (st)
		store_close(st);
	config_release(&cfg);
}

/* Renders the status JSON (the agent's or the offline one) for people. */
static int
status_human(const char *text)
{
	struct jv *v = jv_parse(text);
	const struct jv *dev, *folders, *devices;
	char b1[32], b2[32], b3[32];

	if (!v) {
		fprintf(stderr, "shoal: the agent's answer is not valid JSON\n");
		return 1;
	}
	dev = jv_get(v, "device");
	const struct jv *running = jv_get(v, "running");
	printf("This device  %s  %s\n", jv_str(jv_get(dev, "name"), ""),
	       jv_str(jv_get(dev, "id"), "(no identity yet: run shoal init)"));
	if (running && running->b)
		printf("Agent        running, listening on %s\n", jv_str(jv_get(dev, "listen"), "?"));
	else
		printf("Agent        not running (start it with `shoal run`)\n");
	folders = jv_get(v, "folders");
	printf("\nFolders\n");
	for (size_t i = 0; folders && i < folders->n; i++) {
		const struct jv *f = folders->items[i];
		const struct jv *loc = jv_get(f, "local"), *glob = jv_get(f, "global"),
				*need = jv_get(f, "need");
		double gb = jv_num(jv_get(glob, "bytes")), nb = jv_num(jv_get(need, "bytes"));
		fmt_bytes((uint64_t)jv_num(jv_get(loc, "bytes")), b1, sizeof(b1));
		fmt_bytes((uint64_t)gb, b2, sizeof(b2));
		fmt_bytes((uint64_t)nb, b3, sizeof(b3));
		printf("  %-12s %-13s %-9s %s\n", jv_str(jv_get(f, "id"), "?"),
		       jv_str(jv_get(f, "mode"), "?"), jv_str(jv_get(f, "state"), "?"),
		       jv_str(jv_get(f, "path"), "?"));
		printf("               local %.0f items, %s; cluster %.0f items, %s; needs %.0f "
		       "items, %s\n",
		       jv_num(jv_get(loc, "files")), b1, jv_num(jv_get(glob, "files")), b2,
		       jv_num(jv_get(need, "files")), b3);
		const struct jv *pr = jv_get(f, "progress");
		if (pr && pr->type == JV_OBJ) {
			double done = jv_num(jv_get(pr, "bytes_done")), tot = jv_num(jv_get(pr, "bytes_total"));
			double rate = jv_num(jv_get(pr, "bytes_per_s"));
			const struct jv *eta = jv_get(pr, "eta_s");
			int pct = tot > 0 ? (int)(100.0 * done / tot) : 0;
			char bar[33], rb[32];
			int fill = pct * 32 / 100;
			if (pct > 100)
				pct = 100;
			for (int k = 0; k < 32; k++)
				bar[k] = k < fill ? '#' : '.';
			bar[32] = '\0';
			fmt_bytes((uint64_t)rate, rb, sizeof(rb));
			printf("               [%s] %3d%%  %s/s", bar, pct, rb);
			if (eta && eta->type == JV_NUM)
				printf("  ETA %dm%02ds", (int)eta->num / 60, (int)eta->num % 60);
			printf("\n");
		}
		const char *err = jv_str(jv_get(f, "error"), NULL);
		if (err)
			printf("               error: %s\n", err);
	}
	if (!folders || folders->n == 0)
		printf("  (none: add one with `shoal folder add ID PATH`)\n");
	devices = jv_get(v, "devices");
	printf("\nDevices\n");
	for (size_t i = 0; devices && i < devices->n; i++) {
		const struct jv *d = devices->items[i];
		const struct jv *conn = jv_get(d, "connected");
		fmt_bytes((uint64_t)jv_num(jv_get(d, "in_bytes")), b1, sizeof(b1));
		fmt_bytes((uint64_t)jv_num(jv_get(d, "out_bytes")), b2, sizeof(b2));
		printf("  %-12s %s\n", jv_str(jv_get(d, "name"), ""), jv_str(jv_get(d, "id"), "?"));
		if (conn && conn->b)
			printf("               connected at %s, in %s, out %s\n",
			       jv_str(jv_get(d, "address"), "?"), b1, b2);
		else
			printf("               not connected\n");
	}
	if (!devices || devices->n == 0)
		printf("  (none: add one with `shoal device add DEVICE_ID --addr HOST:PORT`)\n");
	jv_free(v);
	return 0;
}

static int
cmd_status(int argc, char **argv)
{
	int json = 0;
	char *home, *reply = NULL;

	if (wants_help(argc, argv)) {
		fputs(usage_status, stdout);
		return 0;
	}
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0)
			json = 1;
		else
			die_usage(usage_status);
	}
	home = home_resolve(opt_home);
	if (ctl_request(home, "status", &reply) != 0) {
		struct json j;
		json_init(&j);
		status_offline(home, &j);
		reply = strdup(json_finish(&j) ? json_finish(&j) : "{}");
		json_release(&j);
	}
	free(home);
	if (json)
		printf("%s\n", reply);
	else
		status_human(reply);
	free(reply);
	return 0;
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {{"home", required_argument, NULL, 'H'},
					     {"log-level", required_argument, NULL, 'L'},
					     {"help", no_argument, NULL, 'h'},
					     {"version", no_argument, NULL, 'V'},
					     {0}};
	enum log_level lvl;
	const char *env;
	int c;

	if ((env = getenv("SHOAL_LOG_LEVEL")) && log_parse_level(env, &lvl) == 0)
		log_set_level(lvl);
	/* Global options stop at the first non-option: the command. */
	while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
		switch (c) {
		case 'H':
			opt_home = optarg;
			break;
		case 'L':
			if (log_parse_level(optarg, &lvl) != 0) {
				fprintf(stderr, "shoal: unknown log level %s\n", optarg);
				return 2;
			}
			log_set_level(lvl);
			break;
		case 'h':
			fputs(usage_main, stdout);
			return 0;
		case 'V':
			printf("shoal %s\n", SHOAL_VERSION);
			return 0;
		default:
			fputs(usage_main, stderr);
			return 2;
		}
	}
	if (optind >= argc) {
		fputs(usage_main, stderr);
		return 2;
	}
	if (sec_init() != 0) {
		fprintf(stderr, "shoal: cannot initialise libsodium\n");
		return 1;
	}
	argc -= optind;
	argv += optind;
	optind = 0;
	const char *cmd = argv[0];
	if (strcmp(cmd, "init") == 0)
		return cmd_init(argc, argv);
	if (strcmp(cmd, "id") == 0)
		return cmd_id(argc, argv);
	if (strcmp(cmd, "run") == 0)
		return cmd_run(argc, argv);
	if (strcmp(cmd, "status") == 0)
		return cmd_status(argc, argv);
	if (strcmp(cmd, "folder") == 0)
		return cmd_folder(argc, argv);
	if (strcmp(cmd, "device") == 0)
		return cmd_device(argc, argv);
	if (strcmp(cmd, "events") == 0)
		return cmd_events(argc, argv);
	if (strcmp(cmd, "scan") == 0)
		return cmd_scan(argc, argv);
	if (strcmp(cmd, "ls") == 0)
		return cmd_ls(argc, argv);
	if (strcmp(cmd, "conflicts") == 0)
		return cmd_conflicts(argc, argv);
	if (strcmp(cmd, "doctor") == 0) {
		int json = 0;
		if (wants_help(argc, argv)) {
			fputs(usage_doctor, stdout);
			return 0;
		}
		for (int i = 1; i < argc; i++) {
			if (strcmp(argv[i], "--json") == 0)
				json = 1;
			else
				die_usage(usage_doctor);
		}
		char *home = home_resolve(opt_home);
		int rc = doctor_run(home, json);
		free(home);
		return rc;
	}
	if (strcmp(cmd, "invite") == 0)
		return cmd_invite(argc, argv);
	if (strcmp(cmd, "join") == 0)
		return cmd_join(argc, argv);
	if (strcmp(cmd, "help") == 0) {
		fputs(usage_main, stdout);
		return 0;
	}
	fprintf(stderr, "shoal: unknown command %s\n\n%s", cmd, usage_main);
	return 2;
}
