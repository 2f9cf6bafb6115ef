/*
 * tests/fuzz/replay_main.c - runs a fuzz target on saved inputs, without
 * libFuzzer: the gcc build links each target with this file so that ctest
 * replays the seed corpus and the regression inputs on every build.
 *
 * Usage: fuzz_<name>_replay PATH...
 * Each PATH is a file or a directory whose regular files (not those whose
 * name starts with '.') are run in name order. Each input is read into a heap
 * buffer of exactly its size. Exits 0 after running at least one input, 1 when
 * a path cannot be read or no input was found; a failed check in the target
 * aborts.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tests/fuzz/fuzz.h"

/* Reads the whole file into *out (exactly *len bytes). Returns 0 or -errno. */
static int
read_file(const char *path, uint8_t **out, size_t *len)
{
	uint8_t *buf = NULL, *p;
	size_t n = 0, cap = 0, got;
	FILE *f;
	int rc = 0;

	f = fopen(path, "rb");
	if (f == NULL)
		return -errno;
	for (;;) {
		if (n == cap) {
			cap = cap ? cap * 2 : 4096;
			p = realloc(buf, cap);
			if (p == NULL) {
				rc = -ENOMEM;
				goto out;
			}
			buf = p;
		}
		got = fread(buf + n, 1, cap - n, f);
		n += got;
		if (got == 0) {
			if (ferror(f))
				rc = -EIO;
			break;
		}
	}
	if (rc == 0) {
		/* An exactly-sized copy, so that ASan catches a read past the end. */
		*out = fuzz_dup(buf, n);
		*len = n;
	}
out:
	free(buf);
	fclose(f);
	return rc;
}

static int
run_file(const char *path)
{
	uint8_t *data = NULL;
	size_t len = 0;
	int rc;

	rc = read_file(path, &data, &len);
	if (rc < 0) {
		fprintf(stderr, "%s: %s\n", path, strerror(-rc));
		return rc;
	}
	/* Named first, so that the input that aborts is the last one listed. */
	printf("%s (%zu bytes)\n", path, len);
	fflush(stdout);
	LLVMFuzzerTestOneInput(data, len);
	free(data);
	return 0;
}

static int
skip_hidden(const struct dirent *d)
{
	return d->d_name[0] != '.';
}

/* Runs every regular file of dir; returns the count or -errno. */
static long
run_dir(const char *dir)
{
	struct dirent **names;
	struct stat st;
	char path[4096];
	long count = 0;
	int n, i, rc = 0;

	n = scandir(dir, &names, skip_hidden, alphasort);
	if (n < 0)
		return -errno;
	for (i = 0; i < n; i++) {
		if (rc == 0) {
			snprintf(path, sizeof(path), "%s/%s", dir, names[i]->d_name);
			if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
				rc = run_file(path);
				count++;
			}
		}
		free(names[i]);
	}
	free(names);
	return rc < 0 ? rc : count;
}

int
main(int argc, char **argv)
{
	struct stat st;
	long total = 0, n;

	for (int i = 1; i < argc; i++) {
		if (stat(argv[i], &st) != 0) {
			fprintf(stderr, "%s: %s\n", argv[i], strerror(errno));
			return 1;
		}
		if (S_ISDIR(st.st_mode)) {
			n = run_dir(argv[i]);
			if (n < 0) {
				fprintf(stderr, "%s: %s\n", argv[i], strerror((int)-n));
				return 1;
			}
		} else {
			n = run_file(argv[i]) < 0 ? -1 : 1;
			if (n < 0)
				return 1;
		}
		total += n;
	}
	if (total == 0) {
		fprintf(stderr, "usage: %s PATH...: no input found\n", argv[0]);
		return 1;
	}
	printf("ran %ld inputs\n", total);
	return 0;
}
