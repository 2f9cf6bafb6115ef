/*
 * agent/listing.h - `shoal ls` and `shoal conflicts`: read-only views of the
 * cluster's index, straight from LMDB (they work while the agent runs, from
 * another process, and when it does not).
 */
#ifndef SHOAL_AGENT_LISTING_H
#define SHOAL_AGENT_LISTING_H

#include <stddef.h>

/*
 * Prints one page of the cluster's view of folder: names after cursor (NULL
 * for the start), under path (NULL or "" for the whole folder), at most limit
 * of them, each with its state, size and mtime, then the next cursor.
 * Returns a process exit code.
 */
int ls_run(const char *home, const char *folder, const char *path, const char *cursor,
	   size_t limit, int json);

/* Lists conflict copies (names with ".sync-conflict-") of one or every folder. */
int conflicts_run(const char *home, const char *folder, int json);

#endif
