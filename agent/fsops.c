/*
 * agent/fsops.c - confined file operations on openat2().
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <sodium.h>

#include "agent/fsops.h"

int
fs_open_beneath(int rootfd, const char *path, int flags, mode_t mode)
{
	struct open_how how;
	long fd;

	memset(&how, 0, sizeof(how));
	how.flags = (uint64_t)(flags | O_CLOEXEC | O_NOFOLLOW);
	if (flags & (O_CREAT | O_TMPFILE))
		how.mode = mode;
	how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
	do {
		fd = syscall(SYS_openat2, rootfd, path[0] ? path : ".", &how, sizeof(how));
	} while (fd < 0 && errno == EINTR);
	return fd < 0 ? -errno : (int)fd;
}

int
fs_open_parent(int rootfd, const char *path, const char **base)
{
	char dir[PATH_MAX];
	const char *slash = strrchr(path, '/');

	if (!slash) {
		*base = path;
		return fs_open_beneath(rootfd, ".", O_RDONLY | O_DIRECTORY, 0);
	}
	size_t n = (size_t)(slash - path);
	if (n >= sizeof(dir))
		return -ENAMETOOLONG;
	memcpy(dir, path, n);
	dir[n] = '\0';
	*base = slash + 1;
	return fs_open_beneath(rootfd, dir, O_RDONLY | O_DIRECTORY, 0);
}

void
fs_temp_name(const char *path, char out[64])
{
	unsigned char h[8];
	static const char d[] = "0123456789abcdef";

	crypto_generichash(h, sizeof(h), (const unsigned char *)path, strlen(path), NULL, 0);
	memcpy(out, ".shoal-tmp-", 11);
	for (int i = 0; i < 8; i++) {
		out[11 + 2 * i] = d[h[i] >> 4];
		out[12 + 2 * i] = d[h[i] & 15];
	}
	out[27] = '\0';
}
