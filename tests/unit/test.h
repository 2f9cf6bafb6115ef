/*
 * tests/unit/test.h - a small test harness.
 *
 * A test file defines cases with TEST(name) and lists them between
 * TEST_LIST_BEGIN and TEST_LIST_END. The executable runs the case named by
 * argv[1] (so ctest registers each case on its own), or every case without an
 * argument. A failed assertion prints both operands and exits 1.
 */
#ifndef SHOAL_TEST_H
#define SHOAL_TEST_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct test_case {
	const char *name;
	void (*fn)(void);
};

#define TEST(name) static void test_##name(void)
#define TEST_LIST_BEGIN static const struct test_case test_cases[] = {
#define TEST_ENTRY(name) {#name, test_##name},
#define TEST_LIST_END                                                                      \
	{NULL, NULL}                                                                       \
	}                                                                                  \
	;                                                                                  \
	int main(int argc, char **argv)                                                    \
	{                                                                                  \
		return test_main(argc, argv, test_cases);                                 \
	}

static inline int test_main(int argc, char **argv, const struct test_case *cases)
{
	int ran = 0;
	for (const struct test_case *c = cases; c->name; c++) {
		if (argc > 1 && strcmp(argv[1], c->name) != 0)
			continue;
		c->fn();
		printf("ok %s\n", c->name);
		ran++;
	}
	if (ran == 0) {
		fprintf(stderr, "no test case named %s\n", argc > 1 ? argv[1] : "(any)");
		return 1;
	}
	return 0;
}

#define TEST_FAIL(...)                                                                     \
	do {                                                                               \
		fprintf(stderr, "%s:%d: ", __FILE__, __LINE__);                            \
		fprintf(stderr, __VA_ARGS__);                                              \
		fprintf(stderr, "\n");                                                     \
		exit(1);                                                                   \
	} while (0)

#define ASSERT(cond)                                                                       \
	do {                                                                               \
		if (!(cond))                                                               \
			TEST_FAIL("assertion failed: %s", #cond);                          \
	} while (0)

#define ASSERT_EQ(a, b)                                                                    \
	do {                                                                               \
		long long a_ = (long long)(a), b_ = (long long)(b);                        \
		if (a_ != b_)                                                              \
			TEST_FAIL("%s == %s: %lld != %lld", #a, #b, a_, b_);               \
	} while (0)

#define ASSERT_NE(a, b)                                                                    \
	do {                                                                               \
		long long a_ = (long long)(a), b_ = (long long)(b);                        \
		if (a_ == b_)                                                              \
			TEST_FAIL("%s != %s: both %lld", #a, #b, a_);                      \
	} while (0)

#define ASSERT_UEQ(a, b)                                                                   \
	do {                                                                               \
		unsigned long long a_ = (unsigned long long)(a), b_ = (unsigned long long)(b); \
		if (a_ != b_)                                                              \
			TEST_FAIL("%s == %s: %llu != %llu", #a, #b, a_, b_);               \
	} while (0)

#define ASSERT_STREQ(a, b)                                                                 \
	do {                                                                               \
		const char *a_ = (a), *b_ = (b);                                           \
		if (strcmp(a_, b_) != 0)                                                   \
			TEST_FAIL("%s == %s: \"%s\" != \"%s\"", #a, #b, a_, b_);           \
	} while (0)

static inline void test_hexdump(const char *label, const void *p, size_t n)
{
	const unsigned char *b = p;
	fprintf(stderr, "  %s: ", label);
	for (size_t i = 0; i < n && i < 96; i++)
		fprintf(stderr, "%02x", b[i]);
	fprintf(stderr, n > 96 ? "...\n" : "\n");
}

#define ASSERT_MEMEQ(a, b, n)                                                              \
	do {                                                                               \
		size_t n_ = (n);                                                           \
		if (memcmp((a), (b), n_) != 0) {                                           \
			fprintf(stderr, "%s:%d: %s == %s (%zu bytes) differ\n", __FILE__,  \
				__LINE__, #a, #b, n_);                                     \
			test_hexdump(#a, (a), n_);                                         \
			test_hexdump(#b, (b), n_);                                         \
			exit(1);                                                           \
		}                                                                          \
	} while (0)

#endif
