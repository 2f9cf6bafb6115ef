/*
 * agent/version.c - version vector comparison.
 */
#include <stdint.h>

#include "agent/version.h"

static uint64_t
vv_get(const struct store_counter *v, size_t n, uint64_t id)
{
	for (size_t i = 0; i < n; i++)
		if (v[i].id == id)
			return v[i].value;
	return 0;
}

enum vv_order
vv_compare(const struct store_counter *a, size_t na, const struct store_counter *b, size_t nb)
{
	int greater = 0, lesser = 0;
	for (size_t i = 0; i < na; i++) {
		uint64_t bv = vv_get(b, nb, a[i].id);
		greater |= a[i].value > bv;
		lesser |= a[i].value < bv;
	}
	for (size_t i = 0; i < nb; i++) {
		uint64_t av = vv_get(a, na, b[i].id);
		greater |= av > b[i].value;
		lesser |= av < b[i].value;
	}
	if (greater && lesser)
		return VV_CONCURRENT;
	return greater ? VV_GREATER : lesser ? VV_LESSER : VV_EQUAL;
}
