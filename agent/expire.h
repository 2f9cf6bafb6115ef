/*
 * agent/expire.h - forgetting old deletions.
 *
 * A deleted file stays in every index as a tombstone, so that a device that
 * has not yet heard of the deletion learns it and does not bring the file
 * back. Kept forever, tombstones make the store grow with every name ever
 * deleted. A tombstone is forgotten (removed from the index that holds it,
 * without a new sequence number) when both hold:
 *
 * - it is old: the highest counter of its version, which is at least the
 *   clock of the device that deleted the file when it did (see bump_version
 *   in scan.c), lies more than the retention (forget_deleted, 30 days by
 *   default) in the past;
 * - nobody still has the old file: no other index of the folder this device
 *   holds (its own, and each sharing peer's last word) has the name live with
 *   a version the tombstone supersedes. A peer that was offline when the file
 *   was deleted keeps the tombstone alive until it comes back and deletes
 *   the file too, however long that takes.
 *
 * Every device applies the same rule to its own copy of every index, so the
 * devices forget the same deletions at about the same time without telling
 * each other. docs/storage.md explains what this protects against and what
 * it does not (a device whose index this device never saw).
 */
#ifndef SHOAL_AGENT_EXPIRE_H
#define SHOAL_AGENT_EXPIRE_H

#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

struct agent;

/* Where a pass over one index stands: the last name looked at. */
struct expire_cursor {
	char *name; /* malloc'd; NULL at the start */
	size_t len;
};

void expire_cursor_reset(struct expire_cursor *c);

/*
 * Looks at up to max entries of index (folder, dev) after the cursor and
 * forgets its tombstones whose deletion time is before cutoff_s (seconds
 * since the epoch) and that no index in others[] still holds live with an
 * older version. Advances the cursor; sets *done when the index has no more
 * entries (the cursor is then reset) and adds the number forgotten to
 * *removed. Returns 0 or a negative store code (the cursor is kept, so the
 * step can be retried).
 */
int expire_step(struct store *s, uint32_t folder, uint32_t dev, const uint32_t *others,
		size_t nothers, uint64_t cutoff_s, size_t max, struct expire_cursor *cur,
		int *done, uint64_t *removed);

/*
 * Called from the agent's one-second tick: starts a pass over every folder
 * when one is due, and runs a bounded step of it while the folder is idle.
 */
void expire_tick(struct agent *ag, uint64_t now_ms);
/* Frees what the passes hold (at exit). */
void expire_release(struct agent *ag);

#endif
