/*
 * agent/home.h - the state directory ("home") and what lives in it.
 *
 * HOME is --home DIR, else $SHOAL_HOME, else $XDG_STATE_HOME/shoal, else
 * ~/.local/state/shoal. It holds device.key (0600), config, config.lock,
 * agent.lock, control.sock and the LMDB environment index.lmdb/.
 */
#ifndef SHOAL_AGENT_HOME_H
#define SHOAL_AGENT_HOME_H

#include "crypto/identity.h"

/* Returns the malloc'd home path for the --home option value (may be NULL). */
char *home_resolve(const char *opt);
/* Creates HOME with mode 0700 if missing. Returns 0 or -errno. */
int home_ensure(const char *home);
/* Returns malloc'd HOME/name. */
char *home_file(const char *home, const char *name);

/*
 * Loads HOME/device.key, or with create set makes a new identity when there
 * is none (*created set). Returns 0, -ENOENT (none and not creating) or
 * another negative code.
 */
int home_identity(const char *home, struct sec_identity *id, int create, int *created);

/* The default folder for a first run: ~/Shoal. malloc'd. */
char *home_default_folder(void);

#endif
