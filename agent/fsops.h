/*
 * agent/fsops.h - file operations confined to a folder.
 *
 * Every operation on a synced path goes through these: openat2() with
 * RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS relative to
 * the folder's root descriptor, so that no path, whatever a peer sent and
 * whatever symlinks exist on disk, is ever resolved outside the folder or
 * through a link. The last component is handled with *at() calls on the
 * parent's descriptor and AT_SYMLINK_NOFOLLOW / O_NOFOLLOW.
 *
 * Paths are relative, already checked with proto_path_check(), and
 * NUL-terminated.
 */
#ifndef SHOAL_AGENT_FSOPS_H
#define SHOAL_AGENT_FSOPS_H

#include <stdint.h>
#include <sys/types.h>

/* Opens path beneath rootfd. Returns a descriptor or -errno (-EXDEV, -ELOOP on escape). */
int fs_open_beneath(int rootfd, const char *path, int flags, mode_t mode);

/*
 * Opens the directory that holds path's last component; *base is set to that
 * component inside path. Returns a descriptor or -errno.
 */
int fs_open_parent(int rootfd, const char *path, const char **base);

/* Temporary name for path's final component: ".shoal-tmp-<16 hex>" in out (64 bytes). */
void fs_temp_name(const char *path, char out[64]);

/* What fs_copy_range() did, in bytes; the caller zeroes it, each call adds to it. */
struct fs_copy_stats {
	uint64_t cloned; /* shared with the source (reflink): nothing copied or written back */
	uint64_t copied; /* copied by the kernel (copy_file_range) */
};

/*
 * Copies len bytes of in at in_off to out at out_off without passing them
 * through user space. Where in_off and out_off sit at the same place within a
 * filesystem block (out's st_blksize), the block-aligned middle of the range
 * is cloned with FICLONERANGE, so on a filesystem with reflink (XFS with
 * reflink=1, btrfs) the two files share those extents and nothing is copied
 * or written back; the unaligned edges, and the whole range where cloning is
 * not possible (ext4, tmpfs: EOPNOTSUPP; offsets not co-aligned), go through
 * copy_file_range(). Adds what it did to *st (may be NULL).
 *
 * Returns 0 when all len bytes are in place; -ENODATA when in ends before
 * in_off + len; -ENOSPC; -EXDEV, -EOPNOTSUPP, -EINVAL or -ENOSYS when the
 * kernel cannot copy between these two files (read and write instead);
 * another -errno. After a failure part of the range may have been written.
 * Safe to call from any thread; in and out stay open and their offsets are
 * not used.
 */
int fs_copy_range(int in, uint64_t in_off, int out, uint64_t out_off, uint64_t len,
		  struct fs_copy_stats *st);

#endif
