/*
 * tests/fuzz/fuzz.h - what every fuzz target shares: the libFuzzer entry
 * point's prototype and assertions that print both operands.
 *
 * Invariants:
 * - A target is one file, tests/fuzz/fuzz_<name>.c, that defines
 *   LLVMFuzzerTestOneInput() and nothing else with external linkage. It is
 *   linked either with libFuzzer (clang, SHOAL_FUZZ=ON) or with
 *   replay_main.c, which runs it on the files of a corpus; both pass the
 *   input in a heap buffer of exactly its size, so ASan sees an overread.
 * - A failed assertion prints what differed and calls abort(), which both
 *   libFuzzer (a crash, saved as an artifact) and ctest (a failed test) see.
 * - Targets are deterministic: no clock, no randomness, no files.
 */
#ifndef SHOAL_TESTS_FUZZ_H
#define SHOAL_TESTS_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Runs one input; returns 0 (libFuzzer reserves other values). */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_FAIL(...)                                                                             \
	do {                                                                                       \
		fprintf(stderr, "%s:%d: ", __FILE__, __LINE__);                                    \
		fprintf(stderr, __VA_ARGS__);                                                      \
		fprintf(stderr, "\n");                                                             \
		abort();                                                                           \
	} while (0)

#define FUZZ_ASSERT(cond)                                                                          \
	do {                                                                                       \
		if (!(cond))                                                                       \
			FUZZ_FAIL("assertion failed: %s", #cond);                                  \
	} while (0)

#define FUZZ_ASSERT_EQ(a, b)                                                                       \
	do {                                                                                       \
		long long a_ = (long long)(a), b_ = (long long)(b);                                \
		if (a_ != b_)                                                                      \
			FUZZ_FAIL("%s == %s: %lld != %lld", #a, #b, a_, b_);                       \
	} while (0)

#define FUZZ_ASSERT_UEQ(a, b)                                                                      \
	do {                                                                                       \
		unsigned long long a_ = (unsigned long long)(a), b_ = (unsigned long long)(b);     \
		if (a_ != b_)                                                                      \
			FUZZ_FAIL("%s == %s: %llu != %llu", #a, #b, a_, b_);                       \
	} while (0)

/* a <= b, unsigned. */
#define FUZZ_ASSERT_ULE(a, b)                                                                      \
	do {                                                                                       \
		unsigned long long a_ = (unsigned long long)(a), b_ = (unsigned long long)(b);     \
		if (a_ > b_)                                                                       \
			FUZZ_FAIL("%s <= %s: %llu > %llu", #a, #b, a_, b_);                        \
	} while (0)

static inline void
fuzz_hexdump(const char *label, const void *p, size_t n)
{
	const unsigned char *b = p;

	fprintf(stderr, "  %s (%zu bytes): ", label, n);
	for (size_t i = 0; i < n && i < 128; i++)
		fprintf(stderr, "%02x", b[i]);
	fprintf(stderr, n > 128 ? "...\n" : "\n");
}

/* Compares n bytes; n == 0 is equal whatever the pointers (NULL included). */
#define FUZZ_ASSERT_MEMEQ(a, b, n)                                                                 \
	do {                                                                                       \
		size_t n_ = (n);                                                                   \
		if (n_ > 0 && memcmp((a), (b), n_) != 0) {                                         \
			fprintf(stderr, "%s:%d: %s == %s (%zu bytes) differ\n", __FILE__,          \
				__LINE__, #a, #b, n_);                                             \
			fuzz_hexdump(#a, (a), n_);                                                 \
			fuzz_hexdump(#b, (b), n_);                                                 \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

/*
 * Returns a heap copy of exactly n bytes (one byte allocated for n == 0, so
 * that the pointer is never NULL), so that ASan catches a read past the end.
 * Aborts when out of memory.
 */
static inline uint8_t *
fuzz_dup(const uint8_t *p, size_t n)
{
	uint8_t *q = malloc(n ? n : 1);

	if (q == NULL)
		FUZZ_FAIL("out of memory copying %zu bytes", n);
	if (n > 0)
		memcpy(q, p, n);
	return q;
}

#endif
