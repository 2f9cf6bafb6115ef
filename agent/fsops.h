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

#endif
