/*
 * agent/config.h - the configuration file (HOME/config).
 *
 * A small INI-style text file that people may edit by hand and that the
 * `shoal` subcommands rewrite atomically (temporary file, fsync, rename),
 * holding HOME/config.lock while they read-modify-write it. A running agent
 * re-reads it when it changes. Roles are taken from this file only, never
 * from what a peer says about itself.
 *
 *   [device]              this device: name, listen address, forget_deleted
 *   [peer DEVICE-ID]      a known device: name, addr (repeatable)
 *   [folder ID]           a folder: path, label, mode, share (repeatable device IDs)
 */
#ifndef SHOAL_AGENT_CONFIG_H
#define SHOAL_AGENT_CONFIG_H

#include <stddef.h>
#include <stdint.h>

enum folder_mode { MODE_SEND = 0, MODE_RECEIVE = 1, MODE_SENDRECEIVE = 2 };

#define CFG_DEFAULT_PORT 22100
#define CFG_DEFAULT_LISTEN "0.0.0.0:22100"

struct cfg_peer {
	unsigned char id[32];
	char *name;
	char **addrs;
	size_t naddrs;
};

struct cfg_folder {
	char *id;
	char *label;
	char *path;
	enum folder_mode mode;
	unsigned char (*shares)[32];
	size_t nshares;
};

/* How long a deletion is remembered by default (forget_deleted = 30d). */
#define CFG_DEFAULT_FORGET_DELETED_S (30ull * 86400)
/* The shortest retention accepted (for tests and soaks: two minutes). */
#define CFG_MIN_FORGET_DELETED_S 60ull

struct config {
	char *name;
	char *listen;
	uint64_t forget_deleted_s; /* 0: CFG_DEFAULT_FORGET_DELETED_S */
	struct cfg_peer *peers;
	size_t npeers;
	struct cfg_folder *folders;
	size_t nfolders;
};

/*
 * Reads path into a zeroed c. A missing file gives an empty configuration.
 * Returns 0, -errno, or -EINVAL with a line number and reason in err.
 */
int config_load(struct config *c, const char *path, char *err, size_t errlen);
/* Writes c to path atomically. Returns 0 or -errno. */
int config_save(const struct config *c, const char *path);
void config_release(struct config *c);

struct cfg_folder *config_folder(const struct config *c, const char *id);
struct cfg_peer *config_peer(const struct config *c, const unsigned char id[32]);
int config_folder_shared(const struct cfg_folder *f, const unsigned char id[32]);

/* Adders: copy their arguments. Return the new entry or NULL (ENOMEM). */
struct cfg_folder *config_add_folder(struct config *c, const char *id, const char *path,
				     enum folder_mode mode);
struct cfg_peer *config_add_peer(struct config *c, const unsigned char id[32]);
int config_peer_add_addr(struct cfg_peer *p, const char *addr);
int config_folder_share(struct cfg_folder *f, const unsigned char id[32]);
int config_set_str(char **field, const char *value);

const char *mode_name(enum folder_mode m);
int mode_parse(const char *s, enum folder_mode *m);
/* Folder IDs: 1-64 characters of [A-Za-z0-9._-], not starting with '.'. */
int folder_id_valid(const char *id);

#endif
