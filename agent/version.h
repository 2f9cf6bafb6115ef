/*
 * agent/version.h - version vectors: which of two versions of a file is newer.
 *
 * A version vector lists (device short ID, counter) pairs; a device that
 * changes a file sets its own counter above every counter in the vector.
 * Missing entries count as 0. A is newer than B when no counter of A is below
 * B's and one is above; when each has a counter above the other's the edits
 * were concurrent: a conflict.
 */
#ifndef SHOAL_AGENT_VERSION_H
#define SHOAL_AGENT_VERSION_H

#include <stddef.h>

#include "store/store.h"

enum vv_order { VV_EQUAL, VV_GREATER, VV_LESSER, VV_CONCURRENT };

enum vv_order vv_compare(const struct store_counter *a, size_t na, const struct store_counter *b,
			 size_t nb);

#endif
