/*
 * agent/invites.h - invites an owner has given (HOME/invites) and invites
 * this device has accepted (HOME/joins).
 *
 * HOME/invites holds one invite per line: its short ID, the folder, the
 * BLAKE2b-256 of the secret (the secret itself is only in the code), the
 * expiry (seconds since the epoch, 0 = never), the uses left and the creation
 * time. HOME/joins holds one line per invite this device accepted: the
 * owner's device ID, the folder, the secret, the state (pending, accepted,
 * refused) and the owner's message. Both files are 0600, rewritten atomically
 * under HOME/config.lock, by the CLI and by the agent.
 */
#ifndef SHOAL_AGENT_INVITES_H
#define SHOAL_AGENT_INVITES_H

#include <stddef.h>
#include <stdint.h>

#include "proto/invite.h"
#include "proto/msg.h"

struct invite {
	char id[9];
	char folder[PROTO_INVITE_FIELD_MAX + 1];
	unsigned char hash[32];
	uint64_t expires, created;
	unsigned uses;
};

struct join {
	unsigned char owner[32];
	char folder[PROTO_INVITE_FIELD_MAX + 1];
	unsigned char secret[PROTO_INVITE_SECRET];
	char state[16];  /* "pending", "accepted", "refused" */
	char message[200];
};

/* Reads HOME/invites (missing file: none). Returns 0 or -errno; *out is malloc'd. */
int invites_load(const char *home, struct invite **out, size_t *n);
int invites_save(const char *home, const struct invite *v, size_t n);
int joins_load(const char *home, struct join **out, size_t *n);
int joins_save(const char *home, const struct join *v, size_t n);

/* Holds HOME/config.lock (exclusive) until invites_unlock(). Returns an fd or -errno. */
int invites_lock(const char *home);
void invites_unlock(int fd);

/*
 * The owner's side of a JOIN: looks for an invite of folder whose secret
 * hashes to the stored hash; checks expiry and uses, takes one use. Returns a
 * proto_jcode and a message for the member in msg.
 */
int invite_claim(const char *home, const char *folder, const unsigned char *secret,
		 size_t secret_len, char *msg, size_t msglen);

/*
 * 1 when HOME/invites lists any invite, even an expired or used-up one (kept
 * for INVITE_KEEP_DAYS so that a late member hears which, not silence).
 */
#define INVITE_KEEP_DAYS 30
int invites_any(const char *home);

#endif
