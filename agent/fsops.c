/*
 * agent/fsops.c - confined file operations on openat2().
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/fs.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
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

/* Clones are worth it from this size on; smaller ranges are copied (fewer tiny extents). */
#define FS_CLONE_MIN (64u * 1024)

static int
copy_kernel(int in, uint64_t in_off, int out, uint64_t out_off, uint64_t len,
	    struct fs_copy_stats *st)
{
	loff_t i = (loff_t)in_off, o = (loff_t)out_off;

	while (len > 0) {
		size_t n = len > (1u << 30) ? (size_t)1 << 30 : (size_t)len;
		ssize_t r = copy_file_range(in, &i, out, &o, n, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			return -ENODATA;
		len -= (uint64_t)r;
		if (st)
			st->copied += (uint64_t)r;
	}
	return 0;
}

int
fs_copy_range(int in, uint64_t in_off, int out, uint64_t out_off, uint64_t len,
	      struct fs_copy_stats *st)
{
	struct stat ost;
	uint64_t bs = 4096, head, mid;
	int rc;

	if (fstat(out, &ost) == 0 && ost.st_blksize >= 512 &&
	    ((uint64_t)ost.st_blksize & ((uint64_t)ost.st_blksize - 1)) == 0)
		bs = (uint64_t)ost.st_blksize;
	if (in_off % bs != out_off % bs)
		return copy_kernel(in, in_off, out, out_off, len, st);
	head = (bs - in_off % bs) % bs;
	if (head > len)
		head = len;
	mid = (len - head) / bs * bs;
	if (mid < FS_CLONE_MIN)
		return copy_kernel(in, in_off, out, out_off, len, st);
	if (head && (rc = copy_kernel(in, in_off, out, out_off, head, st)) != 0)
		return rc;
	struct file_clone_range fcr = {
		.src_fd = in,
		.src_offset = in_off + head,
		.src_length = mid,
		.dest_offset = out_off + head,
	};
	if (ioctl(out, FICLONERANGE, &fcr) == 0) {
		if (st)
			st->cloned += mid;
	} else if (errno == ENOSPC) {
		return -ENOSPC;
	} else if ((rc = copy_kernel(in, in_off + head, out, out_off + head, mid, st)) != 0) {
		/* No reflink here (EOPNOTSUPP, EXDEV, EINVAL...): copied instead. */
		return rc;
	}
	head += mid;
	return len > head ? copy_kernel(in, in_off + head, out, out_off + head, len - head, st) : 0;
}
