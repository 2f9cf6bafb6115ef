/*
 * tests/unit/agent_test.c - the agent's self-contained pieces: configuration
 * file, JSON writer and reader, confined file operations (and the kernel-side
 * range copy the puller uses for local blocks), version vectors.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/agent.h"
#include "agent/config.h"
#include "agent/fsops.h"
#include "agent/json.h"
#include "agent/listing.h"
#include "agent/log.h"
#include "agent/util.h"
#include "agent/version.h"
#include "crypto/identity.h"
#include "crypto/sec.h"
#include "store/store.h"
#include "test.h"

static char tmpdir[64];

static void
mktmp(void)
{
	strcpy(tmpdir, "/tmp/shoal-agent-test.XXXXXX");
	ASSERT(mkdtemp(tmpdir) != NULL);
}

static void
rmtmp(void)
{
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
	ASSERT_EQ(system(cmd), 0);
}

TEST(config_roundtrip)
{
	struct config c, d;
	struct sec_identity a;
	char err[128], path[128];
	unsigned char seed[32] = {1};

	ASSERT_EQ(sec_init(), 0);
	mktmp();
	snprintf(path, sizeof(path), "%s/config", tmpdir);
	memset(&c, 0, sizeof(c));
	memset(&a, 0, sizeof(a));
	ASSERT_EQ(sec_identity_from_seed(&a, seed), 0);
	ASSERT_EQ(config_set_str(&c.name, "nas"), 0);
	ASSERT_EQ(config_set_str(&c.listen, "0.0.0.0:22100"), 0);
	struct cfg_peer *p = config_add_peer(&c, a.id);
	ASSERT(p);
	ASSERT_EQ(config_set_str(&p->name, "laptop"), 0);
	ASSERT_EQ(config_peer_add_addr(p, "10.0.0.2:22100"), 0);
	ASSERT_EQ(config_peer_add_addr(p, "[fe80::1]:22100"), 0);
	ASSERT_EQ(config_peer_add_addr(p, "10.0.0.2:22100"), 0); /* no duplicates */
	struct cfg_folder *f = config_add_folder(&c, "photos", "/srv/photos with space", MODE_SEND);
	ASSERT(f);
	ASSERT_EQ(config_folder_share(f, a.id), 0);
	ASSERT_EQ(config_save(&c, path), 0);

	struct stat st;
	ASSERT_EQ(stat(path, &st), 0);
	ASSERT_EQ(st.st_mode & 0777, 0600);
	ASSERT_EQ(config_load(&d, path, err, sizeof(err)), 0);
	ASSERT_STREQ(d.name, "nas");
	ASSERT_STREQ(d.listen, "0.0.0.0:22100");
	ASSERT_EQ(d.npeers, 1);
	ASSERT_MEMEQ(d.peers[0].id, a.id, 32);
	ASSERT_STREQ(d.peers[0].name, "laptop");
	ASSERT_EQ(d.peers[0].naddrs, 2);
	ASSERT_STREQ(d.peers[0].addrs[1], "[fe80::1]:22100");
	ASSERT_EQ(d.nfolders, 1);
	ASSERT_STREQ(d.folders[0].path, "/srv/photos with space");
	ASSERT_EQ(d.folders[0].mode, MODE_SEND);
	ASSERT(config_folder_shared(&d.folders[0], a.id));
	config_release(&c);
	config_release(&d);
	sec_identity_release(&a);
	rmtmp();
}

static int
load_text(const char *text, char *err, size_t errlen)
{
	char path[128];
	struct config c;
	snprintf(path, sizeof(path), "%s/config", tmpdir);
	ASSERT_EQ(write_file_atomic(path, text, strlen(text), 0600), 0);
	int rc = config_load(&c, path, err, errlen);
	config_release(&c);
	return rc;
}

TEST(config_errors)
{
	char err[128];
	mktmp();
	ASSERT_EQ(load_text("[device]\nname = x\n", err, sizeof(err)), 0);
	ASSERT_EQ(load_text("[device\n", err, sizeof(err)), -EINVAL);
	ASSERT(strstr(err, "line 1") != NULL);
	ASSERT_EQ(load_text("[device]\nbogus = 1\n", err, sizeof(err)), -EINVAL);
	ASSERT(strstr(err, "line 2") != NULL);
	ASSERT_EQ(load_text("[peer AAAA]\n", err, sizeof(err)), -EINVAL);
	ASSERT(strstr(err, "bad device ID") != NULL);
	ASSERT_EQ(load_text("[folder x]\nmode = sideways\npath = /x\n", err, sizeof(err)), -EINVAL);
	ASSERT_EQ(load_text("[folder x]\nmode = send\n", err, sizeof(err)), -EINVAL);
	ASSERT(strstr(err, "no path") != NULL);
	ASSERT_EQ(load_text("[folder ../x]\npath = /x\n", err, sizeof(err)), -EINVAL);
	/* A missing file is an empty configuration. */
	struct config c;
	ASSERT_EQ(config_load(&c, "/nonexistent/shoal/config", err, sizeof(err)), 0);
	ASSERT_EQ(c.nfolders, 0);
	rmtmp();
}

TEST(folder_ids)
{
	ASSERT(folder_id_valid("default"));
	ASSERT(folder_id_valid("a.b_c-1"));
	ASSERT(!folder_id_valid(""));
	ASSERT(!folder_id_valid(".hidden"));
	ASSERT(!folder_id_valid("a/b"));
	ASSERT(!folder_id_valid("a b"));
	ASSERT(!folder_id_valid("0123456789012345678901234567890123456789012345678901234567890123456789"));
}

TEST(json_roundtrip)
{
	struct json j;
	json_init(&j);
	json_obj_open(&j);
	json_key(&j, "s");
	json_str(&j, "quote\" back\\ nl\n tab\t ctl\x01 é");
	json_key(&j, "n");
	json_u64(&j, 18446744073709551615ull);
	json_key(&j, "neg");
	json_i64(&j, -5);
	json_key(&j, "a");
	json_arr_open(&j);
	json_bool(&j, 1);
	json_null(&j);
	json_obj_open(&j);
	json_obj_close(&j);
	json_arr_close(&j);
	json_obj_close(&j);
	const char *t = json_finish(&j);
	ASSERT(t);
	ASSERT(strstr(t, "\\\"") && strstr(t, "\\n") && strstr(t, "\\u0001"));
	struct jv *v = jv_parse(t);
	ASSERT(v);
	ASSERT_STREQ(jv_str(jv_get(v, "s"), ""), "quote\" back\\ nl\n tab\t ctl\x01 é");
	ASSERT_EQ((long long)jv_num(jv_get(v, "neg")), -5);
	const struct jv *a = jv_get(v, "a");
	ASSERT(a && a->type == JV_ARR);
	ASSERT_EQ(a->n, 3);
	ASSERT(a->items[0]->type == JV_BOOL && a->items[0]->b);
	ASSERT(a->items[1]->type == JV_NULL);
	jv_free(v);
	json_release(&j);
	ASSERT(jv_parse("{\"a\":") == NULL);
	ASSERT(jv_parse("[1,2") == NULL);
	ASSERT(jv_parse("{} x") == NULL);
}

TEST(fsops_confined)
{
	char path[256];
	int root, fd;
	const char *base;

	mktmp();
	snprintf(path, sizeof(path), "%s/root/a/b", tmpdir);
	ASSERT_EQ(mkdir_p(path, 0755), 0);
	snprintf(path, sizeof(path), "%s/root/a/b/file", tmpdir);
	ASSERT_EQ(write_file_atomic(path, "x", 1, 0644), 0);
	snprintf(path, sizeof(path), "%s/outside", tmpdir);
	ASSERT_EQ(write_file_atomic(path, "secret", 6, 0644), 0);
	snprintf(path, sizeof(path), "%s/root/up", tmpdir);
	ASSERT_EQ(symlink("..", path), 0);
	snprintf(path, sizeof(path), "%s/root/a/abs", tmpdir);
	ASSERT_EQ(symlink("/etc", path), 0);
	snprintf(path, sizeof(path), "%s/root/a/inside", tmpdir);
	ASSERT_EQ(symlink("b", path), 0);
	snprintf(path, sizeof(path), "%s/root", tmpdir);
	root = open(path, O_RDONLY | O_DIRECTORY);
	ASSERT(root >= 0);

	fd = fs_open_beneath(root, "a/b/file", O_RDONLY, 0);
	ASSERT(fd >= 0);
	close(fd);
	/* Escapes and symlinks in any component are refused. */
	ASSERT(fs_open_beneath(root, "../outside", O_RDONLY, 0) < 0);
	ASSERT(fs_open_beneath(root, "/etc/passwd", O_RDONLY, 0) < 0);
	ASSERT_EQ(fs_open_beneath(root, "up/outside", O_RDONLY, 0), -ELOOP);
	ASSERT_EQ(fs_open_beneath(root, "a/abs/passwd", O_RDONLY, 0), -ELOOP);
	ASSERT_EQ(fs_open_beneath(root, "a/inside/file", O_RDONLY, 0), -ELOOP);
	/* The final component is never followed either. */
	ASSERT(fs_open_beneath(root, "up", O_RDONLY, 0) < 0);
	/* Creating through a link is refused; nothing appears outside. */
	ASSERT(fs_open_beneath(root, "up/created", O_WRONLY | O_CREAT, 0644) < 0);
	snprintf(path, sizeof(path), "%s/created", tmpdir);
	ASSERT_EQ(access(path, F_OK), -1);

	fd = fs_open_parent(root, "a/b/file", &base);
	ASSERT(fd >= 0);
	ASSERT_STREQ(base, "file");
	close(fd);
	fd = fs_open_parent(root, "top", &base);
	ASSERT(fd >= 0);
	ASSERT_STREQ(base, "top");
	close(fd);
	ASSERT(fs_open_parent(root, "up/x", &base) < 0);

	char t1[64], t2[64];
	fs_temp_name("a/b/file", t1);
	fs_temp_name("a/b/file2", t2);
	ASSERT(strncmp(t1, ".shoal-tmp-", 11) == 0);
	ASSERT(strcmp(t1, t2) != 0);
	close(root);
	rmtmp();
}

/* ---- fs_copy_range ---- */

#define CR_SRC_SIZE ((3u << 20) + 123)

static void
fill_pattern(uint8_t *buf, size_t len, uint32_t seed)
{
	uint32_t x = seed * 2654435761u + 1;
	for (size_t i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		buf[i] = (uint8_t)x;
	}
}

static void
write_all(int fd, const uint8_t *buf, size_t len, uint64_t off)
{
	while (len > 0) {
		ssize_t r = pwrite(fd, buf, len, (off_t)off);
		ASSERT(r > 0);
		buf += r;
		len -= (size_t)r;
		off += (uint64_t)r;
	}
}

static void
read_all(int fd, uint8_t *buf, size_t len, uint64_t off)
{
	while (len > 0) {
		ssize_t r = pread(fd, buf, len, (off_t)off);
		ASSERT(r > 0);
		buf += r;
		len -= (size_t)r;
		off += (uint64_t)r;
	}
}

/* Does fd have an extent shared with another file (a reflink)? */
static int
has_shared_extent(int fd)
{
	struct {
		struct fiemap fm;
		struct fiemap_extent ext[64];
	} m;
	memset(&m, 0, sizeof(m));
	m.fm.fm_length = ~0ull;
	m.fm.fm_flags = FIEMAP_FLAG_SYNC;
	m.fm.fm_extent_count = 64;
	if (ioctl(fd, FS_IOC_FIEMAP, &m.fm) != 0)
		return 0;
	for (unsigned i = 0; i < m.fm.fm_mapped_extents; i++)
		if (m.ext[i].fe_flags & FIEMAP_EXTENT_SHARED)
			return 1;
	return 0;
}

/*
 * Copies ranges of a 3 MiB source into destinations prefilled with 0xAA (as
 * the puller's preallocated temp files): co-aligned, shifted, tiny, to the
 * source's end, past it. Every destination must hold exactly the source's
 * bytes in the range and its own bytes elsewhere. Returns what was cloned.
 */
static uint64_t
copy_range_cases(const char *dir)
{
	static const struct {
		uint64_t in, out, len;
	} c[] = {
		{0, 0, 2u << 20},             /* aligned on both sides: clonable whole */
		{100, 100, (1u << 20) + 5000}, /* same offset in the block: edges copied */
		{0, 100, 2u << 20},           /* shifted (an insert): copied */
		{4096, 8192, 1u << 20},       /* shifted by whole blocks: clonable */
		{7, 7, 10},                   /* tiny */
		{4000, 4000, 50},             /* within one block */
		{4096, 4096, CR_SRC_SIZE - 4096}, /* up to the source's end */
		{5, 9, 0},                    /* nothing */
	};
	char path[512];
	uint8_t *src = malloc(CR_SRC_SIZE), *got = malloc(CR_SRC_SIZE + 16384);
	uint64_t want = 0;
	struct fs_copy_stats st = {0, 0};
	int in;

	ASSERT(src && got);
	fill_pattern(src, CR_SRC_SIZE, 42);
	snprintf(path, sizeof(path), "%s/src", dir);
	in = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	ASSERT(in >= 0);
	write_all(in, src, CR_SRC_SIZE, 0);
	for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		uint64_t dsize = c[i].out + c[i].len + 4096;
		int out;
		snprintf(path, sizeof(path), "%s/dst%zu", dir, i);
		out = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
		ASSERT(out >= 0);
		memset(got, 0xAA, dsize);
		write_all(out, got, dsize, 0);
		ASSERT_EQ(fs_copy_range(in, c[i].in, out, c[i].out, c[i].len, &st), 0);
		want += c[i].len;
		ASSERT_UEQ(st.cloned + st.copied, want);
		read_all(out, got, dsize, 0);
		for (uint64_t k = 0; k < dsize; k++) {
			int inside = k >= c[i].out && k < c[i].out + c[i].len;
			uint8_t e = inside ? src[c[i].in + k - c[i].out] : 0xAA;
			if (got[k] != e)
				TEST_FAIL("case %zu (in %llu, out %llu, len %llu): byte %llu is %u, want %u",
					  i, (unsigned long long)c[i].in, (unsigned long long)c[i].out,
					  (unsigned long long)c[i].len, (unsigned long long)k, got[k], e);
		}
		close(out);
	}
	/* A source shorter than the range. */
	snprintf(path, sizeof(path), "%s/short", dir);
	int out = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	ASSERT(out >= 0);
	ASSERT_EQ(fs_copy_range(in, CR_SRC_SIZE - 100, out, 0, 200, NULL), -ENODATA);
	close(out);
	close(in);
	free(src);
	free(got);
	return st.cloned;
}

TEST(fs_copy_range)
{
	mktmp();
	copy_range_cases(tmpdir);
	rmtmp();
}

static void
skip_case(const char *why)
{
	printf("SKIP fs_copy_range_reflink: %s\n", why);
	fflush(stdout);
	exit(77);
}

/*
 * The same cases on an XFS image with reflink (mounted in a private mount
 * namespace, so it goes away with the process): the co-aligned middles must
 * be clones (shared extents), and a later write to the source must not show
 * through in the copy. Skipped (77) without root, mkfs.xfs or loop devices.
 */
TEST(fs_copy_range_reflink)
{
	char cmd[1024], mnt[256], path[512];

	if (geteuid() != 0)
		skip_case("needs root to mount an XFS image");
	if (system("command -v mkfs.xfs >/dev/null 2>&1") != 0)
		skip_case("no mkfs.xfs (apt-get install xfsprogs)");
	if (unshare(CLONE_NEWNS) != 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0)
		skip_case("cannot make a private mount namespace");
	mktmp();
	snprintf(mnt, sizeof(mnt), "%s/mnt", tmpdir);
	ASSERT_EQ(mkdir(mnt, 0700), 0);
	snprintf(cmd, sizeof(cmd),
		 "truncate -s 512M %s/xfs.img && mkfs.xfs -q -f -m reflink=1 %s/xfs.img && "
		 "mount -o loop %s/xfs.img %s",
		 tmpdir, tmpdir, tmpdir, mnt);
	if (system(cmd) != 0) {
		rmtmp();
		skip_case("cannot create or loop-mount an XFS image");
	}
	uint64_t cloned = copy_range_cases(mnt);
	/* Cases 0 (2 MiB), 1 (middle 1 MiB), 3 (1 MiB) and 6 (the aligned 3 MiB) are clones. */
	if (cloned < (6u << 20))
		TEST_FAIL("only %llu bytes cloned on XFS with reflink", (unsigned long long)cloned);
	snprintf(path, sizeof(path), "%s/dst0", mnt);
	int d0 = open(path, O_RDWR);
	ASSERT(d0 >= 0);
	ASSERT(has_shared_extent(d0));
	/* Copy on write: the source changes, the clone keeps its bytes. */
	uint8_t before[4096], after[4096], junk[4096];
	read_all(d0, before, sizeof(before), 8192);
	snprintf(path, sizeof(path), "%s/src", mnt);
	int s = open(path, O_RDWR);
	ASSERT(s >= 0);
	memset(junk, 0x55, sizeof(junk));
	write_all(s, junk, sizeof(junk), 8192);
	ASSERT_EQ(fsync(s), 0);
	read_all(d0, after, sizeof(after), 8192);
	ASSERT(memcmp(before, after, sizeof(before)) == 0);
	close(s);
	close(d0);
	snprintf(cmd, sizeof(cmd), "umount %s", mnt);
	ASSERT_EQ(system(cmd), 0);
	rmtmp();
}

TEST(version_vectors)
{
	struct store_counter a[] = {{1, 3}, {2, 1}};
	struct store_counter b[] = {{1, 3}};
	struct store_counter c[] = {{1, 2}, {2, 5}};
	struct store_counter d[] = {{2, 1}, {1, 3}};

	ASSERT_EQ(vv_compare(a, 2, b, 1), VV_GREATER);
	ASSERT_EQ(vv_compare(b, 1, a, 2), VV_LESSER);
	ASSERT_EQ(vv_compare(a, 2, d, 2), VV_EQUAL); /* order does not matter */
	ASSERT_EQ(vv_compare(a, 2, c, 2), VV_CONCURRENT);
	ASSERT_EQ(vv_compare(NULL, 0, NULL, 0), VV_EQUAL);
	ASSERT_EQ(vv_compare(b, 1, NULL, 0), VV_GREATER);
}

TEST(parallel_chunking)
{
	char path[128];
	struct store_block *a = NULL, *b = NULL;
	size_t na = 0, nb = 0;
	uint64_t x = 88172645463325252ull;

	mktmp();
	snprintf(path, sizeof(path), "%s/data", tmpdir);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	ASSERT(fd >= 0);
	/* 24 MiB of xorshift bytes, then a run of zeros (no cut points inside) and more. */
	uint64_t *buf = malloc(1 << 20);
	ASSERT(buf != NULL);
	for (int m = 0; m < 24; m++) {
		for (size_t i = 0; i < (1u << 20) / 8; i++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			buf[i] = m == 12 ? 0 : x;
		}
		ASSERT_EQ(write(fd, buf, 1 << 20), 1 << 20);
	}
	free(buf);
	uint64_t size = 24u << 20;
	for (uint32_t avg = 64 * 1024; avg <= 1024 * 1024; avg *= 4) {
		ASSERT_EQ(scan_chunk_fd(fd, size, avg, 0, &a, &na), 0);
		ASSERT_EQ(scan_chunk_fd(fd, size, avg, 1, &b, &nb), 0);
		ASSERT_EQ(na, nb);
		uint64_t total = 0;
		for (size_t i = 0; i < na; i++) {
			ASSERT_UEQ(a[i].size, b[i].size);
			ASSERT_MEMEQ(a[i].hash, b[i].hash, 32);
			total += a[i].size;
		}
		ASSERT_UEQ(total, size);
		free(a);
		free(b);
	}
	close(fd);
	rmtmp();
}

TEST(peer_log_rate_limit)
{
	char path[128], buf[65536];
	int saved = dup(2), fd;
	size_t lines = 0;

	mktmp();
	snprintf(path, sizeof(path), "%s/log", tmpdir);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	ASSERT(fd >= 0);
	ASSERT(dup2(fd, 2) == 2);
	for (int i = 0; i < 100; i++)
		log_peer(LOG_WARN, "refused connection from unknown device %d", i);
	log_peer(LOG_WARN, "another message %d", 1);
	dup2(saved, 2);
	close(saved);
	ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
	ASSERT(n > 0);
	buf[n] = '\0';
	for (char *p = buf; (p = strstr(p, "refused connection")); p++)
		lines++;
	ASSERT_EQ(lines, 20); /* a flood from peers is cut to 20 lines a minute */
	ASSERT(strstr(buf, "another message 1") != NULL); /* other messages are not held back */
	close(fd);
	rmtmp();
}

/* Entries for ls_pages_past_tombstones: local tombstones a000..a009, live b000..b004;
 * the peer has b002 in a newer version. */
struct ls_fill {
	uint8_t peer[32];
};

static int
ls_put(struct store_txn *txn, uint32_t fnum, uint32_t dev, const char *name, int deleted,
       struct store_counter *ver, size_t nver, uint64_t seq)
{
	struct store_file f;
	memset(&f, 0, sizeof(f));
	f.name = name;
	f.name_len = strlen(name);
	f.type = STORE_FILE;
	f.flags = deleted ? STORE_FLAG_DELETED : 0;
	f.mode = 0644;
	f.size = deleted ? 0 : 7;
	f.mtime_s = 1700000000;
	f.sequence = seq;
	f.version = ver;
	f.nversion = nver;
	return store_file_put(txn, fnum, dev, &f);
}

static int
ls_fill_txn(struct store_txn *txn, void *arg)
{
	struct ls_fill *x = arg;
	struct store_counter v1[1] = {{1, 1}}, v2[2] = {{1, 1}, {2, 1}};
	uint32_t fnum, dnum;
	char name[8];
	int rc;

	if ((rc = store_folder_num(txn, "f", 1, &fnum)) != 0 ||
	    (rc = store_device_num(txn, x->peer, 1, &dnum)) != 0)
		return rc;
	for (int i = 0; i < 10; i++) {
		snprintf(name, sizeof(name), "a%03d", i);
		if ((rc = ls_put(txn, fnum, STORE_LOCAL, name, 1, v1, 1, 0)) != 0)
			return rc;
	}
	for (int i = 0; i < 5; i++) {
		snprintf(name, sizeof(name), "b%03d", i);
		if ((rc = ls_put(txn, fnum, STORE_LOCAL, name, 0, v1, 1, 0)) != 0)
			return rc;
	}
	return ls_put(txn, fnum, dnum, "b002", 0, v2, 2, 1);
}

/* Runs ls_run with JSON output into buf. */
static void
ls_capture(const char *cursor, size_t limit, char *buf, size_t size)
{
	char path[128];
	int saved, fd;

	snprintf(path, sizeof(path), "%s/ls.out", tmpdir);
	fflush(stdout);
	saved = dup(1);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	ASSERT(fd >= 0 && saved >= 0);
	ASSERT(dup2(fd, 1) == 1);
	int rc = ls_run(tmpdir, "f", NULL, cursor, limit, 1);
	fflush(stdout);
	dup2(saved, 1);
	close(saved);
	ASSERT_EQ(rc, 0);
	ssize_t n = pread(fd, buf, size - 1, 0);
	ASSERT(n > 0);
	buf[n] = '\0';
	close(fd);
}

/*
 * A page that starts with more tombstones than the page size is still a full
 * page with a next cursor (it used to come out empty, as the end of the
 * listing), and a name is shown with every index's version of it.
 */
TEST(ls_pages_past_tombstones)
{
	struct config c;
	struct sec_identity peer;
	struct store *st;
	struct ls_fill x;
	char path[128], buf[8192];
	unsigned char seed[32] = {7};

	ASSERT_EQ(sec_init(), 0);
	mktmp();
	memset(&c, 0, sizeof(c));
	memset(&peer, 0, sizeof(peer));
	ASSERT_EQ(sec_identity_from_seed(&peer, seed), 0);
	snprintf(path, sizeof(path), "%s/f", tmpdir);
	struct cfg_folder *cf = config_add_folder(&c, "f", path, MODE_SENDRECEIVE);
	ASSERT(cf);
	ASSERT(config_add_peer(&c, peer.id));
	ASSERT_EQ(config_folder_share(cf, peer.id), 0);
	snprintf(path, sizeof(path), "%s/config", tmpdir);
	ASSERT_EQ(config_save(&c, path), 0);
	config_release(&c);
	memcpy(x.peer, peer.id, 32);
	ASSERT_EQ(store_open(&st, tmpdir), 0);
	ASSERT_EQ(store_write(st, ls_fill_txn, &x), 0);
	store_close(st);

	ls_capture(NULL, 4, buf, sizeof(buf));
	ASSERT(strstr(buf, "\"a00") == NULL);
	ASSERT(strstr(buf, "\"name\":\"b000\"") != NULL);
	ASSERT(strstr(buf, "\"name\":\"b003\"") != NULL);
	ASSERT(strstr(buf, "\"name\":\"b004\"") == NULL);
	ASSERT(strstr(buf, "\"next_cursor\":\"b003\"") != NULL);
	/* b002 is newer on the peer, although the peer's index was not the one read furthest. */
	char *b2 = strstr(buf, "\"name\":\"b002\"");
	ASSERT(b2 != NULL);
	char *end = strchr(b2, '}');
	ASSERT(end != NULL);
	*end = '\0';
	ASSERT(strstr(b2, "\"state\":\"needed\"") != NULL);

	ls_capture("b003", 4, buf, sizeof(buf));
	ASSERT(strstr(buf, "\"name\":\"b004\"") != NULL);
	ASSERT(strstr(buf, "\"next_cursor\":null") != NULL);
	sec_identity_release(&peer);
	rmtmp();
}

/* ---- pull windows ---- */

struct win_fill {
	uint8_t peer1[32], peer2[32];
	uint32_t fnum, d1, d2;
	char **want;   /* names the creation sweep must plan, each once */
	size_t nwant;
	char **gone;   /* names the deletion sweep must plan */
	size_t ngone;
};

static int
win_put(struct store_txn *txn, uint32_t fnum, uint32_t dev, const char *name, uint32_t type,
	int deleted, struct store_counter *ver, size_t nver)
{
	static uint64_t seq;
	struct store_file f;
	memset(&f, 0, sizeof(f));
	f.name = name;
	f.name_len = strlen(name);
	f.sequence = dev == STORE_LOCAL ? 0 : ++seq;
	f.type = type;
	f.flags = deleted ? STORE_FLAG_DELETED : 0;
	f.mode = type == STORE_DIR ? 0755 : 0644;
	f.size = deleted || type == STORE_DIR ? 0 : 5;
	f.mtime_s = 1700000000;
	f.version = ver;
	f.nversion = nver;
	return store_file_put(txn, fnum, dev, &f);
}

static void
win_want(char ***list, size_t *n, const char *name)
{
	*list = realloc(*list, (*n + 1) * sizeof(**list));
	ASSERT(*list != NULL);
	(*list)[(*n)++] = strdup(name);
}

static int
win_fill_txn(struct store_txn *txn, void *arg)
{
	struct win_fill *x = arg;
	struct store_counter v1[1] = {{1, 1}}, v2[2] = {{1, 1}, {7, 1}};
	char name[1024], longdir[512], sub[600];
	int rc;

	if ((rc = store_folder_num(txn, "f", 1, &x->fnum)) != 0 ||
	    (rc = store_device_num(txn, x->peer1, 1, &x->d1)) != 0 ||
	    (rc = store_device_num(txn, x->peer2, 1, &x->d2)) != 0)
		return rc;
	/* Directories with files, on both peers (the same versions) or on one. */
	for (int d = 0; d < 4; d++) {
		snprintf(name, sizeof(name), "d%d", d);
		rc = win_put(txn, x->fnum, x->d1, name, STORE_DIR, 0, v1, 1);
		rc = rc ? rc : win_put(txn, x->fnum, x->d2, name, STORE_DIR, 0, v1, 1);
		win_want(&x->want, &x->nwant, name);
		for (int i = 0; i < 9 && rc == 0; i++) {
			snprintf(name, sizeof(name), "d%d/f%d", d, i);
			if (i % 3 != 2)
				rc = win_put(txn, x->fnum, x->d1, name, STORE_FILE, 0, v1, 1);
			if (rc == 0 && i % 3 != 0)
				rc = win_put(txn, x->fnum, x->d2, name, STORE_FILE, 0, v1, 1);
			win_want(&x->want, &x->nwant, name);
		}
		if (rc)
			return rc;
	}
	/*
	 * A directory of 395 bytes, one of 399 in it, and files in both whose
	 * paths are longer than 400 bytes: in key order the files come before
	 * their directories.
	 */
	memset(longdir, 'x', sizeof(longdir));
	memcpy(longdir, "long/", 5);
	longdir[195] = '\0'; /* components are at most 255 bytes */
	if ((rc = win_put(txn, x->fnum, x->d1, "long", STORE_DIR, 0, v1, 1)) != 0 ||
	    (rc = win_put(txn, x->fnum, x->d2, longdir, STORE_DIR, 0, v1, 1)) != 0)
		return rc;
	win_want(&x->want, &x->nwant, "long");
	win_want(&x->want, &x->nwant, longdir);
	longdir[195] = '/';
	memset(longdir + 196, 'y', 199);
	longdir[395] = '\0';
	snprintf(sub, sizeof(sub), "%s/sub", longdir);
	if ((rc = win_put(txn, x->fnum, x->d1, longdir, STORE_DIR, 0, v1, 1)) != 0 ||
	    (rc = win_put(txn, x->fnum, x->d2, sub, STORE_DIR, 0, v1, 1)) != 0)
		return rc;
	win_want(&x->want, &x->nwant, longdir);
	win_want(&x->want, &x->nwant, sub);
	for (int i = 0; i < 7; i++) {
		snprintf(name, sizeof(name), "%s/file-with-a-longer-name-%d", longdir, i);
		if ((rc = win_put(txn, x->fnum, i % 2 ? x->d1 : x->d2, name, STORE_FILE, 0, v1, 1)))
			return rc;
		win_want(&x->want, &x->nwant, name);
		snprintf(name, sizeof(name), "%s/g%d", sub, i);
		if ((rc = win_put(txn, x->fnum, x->d1, name, STORE_FILE, 0, v1, 1)) != 0)
			return rc;
		win_want(&x->want, &x->nwant, name);
	}
	/* A tree here that the peers deleted, and an entry the peers have as we do. */
	static const char *const old[] = {"old", "old/a", "old/b", "old/sub", "old/sub/c",
					  "old/sub/d", "old/sub/e", "old/z"};
	for (size_t i = 0; i < sizeof(old) / sizeof(old[0]); i++) {
		uint32_t type = strchr(old[i], '/') == NULL || strcmp(old[i], "old/sub") == 0
					? STORE_DIR
					: STORE_FILE;
		if ((rc = win_put(txn, x->fnum, STORE_LOCAL, old[i], type, 0, v1, 1)) != 0 ||
		    (rc = win_put(txn, x->fnum, i % 2 ? x->d1 : x->d2, old[i], type, 1, v2, 2)) != 0)
			return rc;
		win_want(&x->gone, &x->ngone, old[i]);
	}
	if ((rc = win_put(txn, x->fnum, STORE_LOCAL, "same", STORE_FILE, 0, v1, 1)) != 0 ||
	    (rc = win_put(txn, x->fnum, x->d1, "same", STORE_FILE, 0, v1, 1)) != 0)
		return rc;
	return 0;
}

/* A store in a fresh temporary directory, filled by win_fill_txn(). */
static struct store *
win_setup(struct win_fill *x)
{
	struct sec_identity p1, p2;
	struct store *st;
	unsigned char seed1[32] = {1}, seed2[32] = {2};

	ASSERT_EQ(sec_init(), 0);
	mktmp();
	memset(x, 0, sizeof(*x));
	ASSERT_EQ(sec_identity_from_seed(&p1, seed1), 0);
	ASSERT_EQ(sec_identity_from_seed(&p2, seed2), 0);
	memcpy(x->peer1, p1.id, 32);
	memcpy(x->peer2, p2.id, 32);
	sec_identity_release(&p1);
	sec_identity_release(&p2);
	ASSERT_EQ(store_open(&st, tmpdir), 0);
	ASSERT_EQ(store_write(st, win_fill_txn, x), 0);
	return st;
}

static void
win_teardown(struct win_fill *x, struct store *st)
{
	for (size_t i = 0; i < x->nwant; i++)
		free(x->want[i]);
	for (size_t i = 0; i < x->ngone; i++)
		free(x->gone[i]);
	free(x->want);
	free(x->gone);
	store_close(st);
	rmtmp();
}

/* Where name is in the list, or -1. */
static long
win_find(char **list, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (list[i] && strcmp(list[i], name) == 0)
			return (long)i;
	return -1;
}

/* Where name is in order, which must hold it exactly once. */
static long
win_once(char **order, size_t n, const char *name)
{
	long at = win_find(order, n, name);
	ASSERT(at >= 0);
	ASSERT(win_find(order + at + 1, n - (size_t)at - 1, name) < 0);
	return at;
}

static void
win_free(char **order, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(order[i]);
	free(order);
}

/* Runs one sweep of windows; returns the names in planning order (*n of them). */
static char **
win_sweep(struct store *st, struct win_fill *x, int deleting, size_t *n, size_t *nwindows)
{
	uint32_t devs[2] = {x->d1, x->d2};
	char **all = NULL, *after = NULL;
	size_t after_len = 0;

	*n = *nwindows = 0;
	for (;;) {
		char **names, *end;
		size_t k, end_len;
		ASSERT_EQ(plan_window_names(st, x->fnum, devs, 2, MODE_RECEIVE, after, after_len,
					    deleting, &names, &k, &end, &end_len),
			  0);
		(*nwindows)++;
		ASSERT(*nwindows < 1000);
		all = realloc(all, (*n + k + 1) * sizeof(*all));
		ASSERT(all != NULL);
		memcpy(all + *n, names, k * sizeof(*names));
		*n += k;
		free(names);
		free(after);
		after = end;
		after_len = end_len;
		if (!end)
			break;
	}
	return all;
}

/*
 * A pull plans windows of SHOAL_PULL_WINDOW (3 here) items per device. Over
 * all windows each needed name is planned exactly once, whichever of the two
 * devices offers it; every directory comes before what is in it, also when
 * their paths are longer than 400 bytes and so out of byte order in the
 * index; and deletions are their own sweep.
 */
TEST(pull_windows)
{
	struct win_fill x;
	struct store *st;
	char **order;
	size_t n, windows;

	ASSERT_EQ(setenv("SHOAL_PULL_WINDOW", "3", 1), 0);
	st = win_setup(&x);

	order = win_sweep(st, &x, 0, &n, &windows);
	ASSERT(windows >= 10);
	ASSERT_UEQ(n, x.nwant);
	for (size_t i = 0; i < x.nwant; i++) {
		long at = win_once(order, n, x.want[i]);
		/* Its directory was planned before it. */
		const char *slash = strrchr(x.want[i], '/');
		if (slash) {
			char *parent = strndup(x.want[i], (size_t)(slash - x.want[i]));
			long pat = win_find(order, n, parent);
			ASSERT(pat >= 0);
			ASSERT(pat < at);
			free(parent);
		}
	}
	win_free(order, n);

	order = win_sweep(st, &x, 1, &n, &windows);
	ASSERT(windows >= 2);
	ASSERT_UEQ(n, x.ngone);
	for (size_t i = 0; i < x.ngone; i++)
		win_once(order, n, x.gone[i]);
	win_free(order, n);

	win_teardown(&x, st);
	unsetenv("SHOAL_PULL_WINDOW");
}

/*
 * A pull that plans only the changed names (f->dirty) plans exactly what a
 * full sweep of windows plans among those names: the same items, each once,
 * whichever device offers them, directories before what is in them, and
 * deletions apart. Names nobody needs or has plan nothing. And the figures
 * counted in slices are those of one count.
 */
TEST(pull_targeted)
{
	struct win_fill x;
	struct store *st = win_setup(&x);
	uint32_t devs[2];
	struct strmap dirty = {0};
	struct counts need;
	char **order;
	size_t n, nwant = 0, ngone = 0;

	devs[0] = x.d1;
	devs[1] = x.d2;

	/* Every other needed name changed, and two that need nothing. */
	for (size_t i = 0; i < x.nwant; i += 2, nwant++)
		ASSERT_EQ(strmap_put(&dirty, x.want[i], strlen(x.want[i]), 0), 0);
	for (size_t i = 0; i < x.ngone; i += 2, ngone++)
		ASSERT_EQ(strmap_put(&dirty, x.gone[i], strlen(x.gone[i]), 0), 0);
	ASSERT_EQ(strmap_put(&dirty, "same", 4, 0), 0);
	ASSERT_EQ(strmap_put(&dirty, "nowhere", 7, 0), 0);

	ASSERT_EQ(plan_names_list(st, x.fnum, devs, 2, MODE_RECEIVE, &dirty, 0, &order, &n, &need),
		  0);
	ASSERT_UEQ(n, nwant);
	ASSERT(need.files >= nwant + ngone); /* a name two devices offer counts twice */
	for (size_t i = 0; i < x.nwant; i++) {
		if (i % 2) {
			ASSERT(win_find(order, n, x.want[i]) < 0);
			continue;
		}
		long at = win_once(order, n, x.want[i]);
		const char *slash = strrchr(x.want[i], '/');
		if (slash) {
			char *parent = strndup(x.want[i], (size_t)(slash - x.want[i]));
			long pat = win_find(order, n, parent);
			ASSERT(pat < at); /* not planned (-1), or before what is in it */
			free(parent);
		}
	}
	win_free(order, n);

	ASSERT_EQ(plan_names_list(st, x.fnum, devs, 2, MODE_RECEIVE, &dirty, 1, &order, &n, &need),
		  0);
	ASSERT_UEQ(n, ngone);
	for (size_t i = 0; i < x.ngone; i += 2)
		win_once(order, n, x.gone[i]);
	win_free(order, n);

	/* Counted in slices of 1, 2, 3 and 5 entries: the figures of a count in one go. */
	struct counts local, global, need1;
	ASSERT_EQ(plan_counts(st, x.fnum, devs, 2, MODE_RECEIVE, &local, &global, &need1), 0);
	ASSERT(need1.files >= x.nwant + x.ngone);
	for (size_t max = 1; max <= 5; max += max < 3 ? 1 : 2) {
		struct plan_count *c;
		struct counts g, nd;
		int done = 0;
		size_t steps = 0;
		ASSERT_EQ(plan_count_begin(x.fnum, devs, 2, MODE_RECEIVE, &c), 0);
		while (!done) {
			ASSERT_EQ(plan_count_step(c, st, max, &done), 0);
			ASSERT(++steps < 10000);
		}
		plan_count_result(c, &local, &g, &nd);
		plan_count_free(c);
		ASSERT(steps > (x.nwant + x.ngone) / max);
		ASSERT_UEQ(nd.files, need1.files);
		ASSERT_UEQ(nd.bytes, need1.bytes);
		ASSERT_UEQ(g.files, global.files);
		ASSERT_UEQ(g.bytes, global.bytes);
	}

	/* Only names nobody needs: nothing at all. */
	strmap_clear(&dirty);
	ASSERT_EQ(strmap_put(&dirty, "same", 4, 0), 0);
	ASSERT_EQ(plan_names_list(st, x.fnum, devs, 2, MODE_RECEIVE, &dirty, 0, &order, &n, &need),
		  0);
	ASSERT_UEQ(n, 0);
	ASSERT_UEQ(need.files, 0);
	win_free(order, n);

	strmap_clear(&dirty);
	win_teardown(&x, st);
}

static int
sum_vals(const char *k, size_t len, uint64_t val, void *arg)
{
	uint64_t *sum = arg;
	(void)k;
	(void)len;
	if (*sum == UINT64_MAX)
		return 7;
	*sum += val;
	return 0;
}

static int
drop_odd(uint64_t val, void *arg)
{
	(void)arg;
	return val % 2 == 1;
}

/* strmap: add, replace, find, remove and prune across growth; keys are bytes, not strings. */
TEST(strmap)
{
	struct strmap m = {0};
	char key[32];
	uint64_t v;

	ASSERT_EQ(strmap_get(&m, "x", 1, &v), 0);
	ASSERT_EQ(strmap_del(&m, "x", 1), 0);
	for (int i = 0; i < 10000; i++) {
		int n = snprintf(key, sizeof(key), "dir/%d", i);
		ASSERT_EQ(strmap_put(&m, key, (size_t)n, (uint64_t)i), 0);
	}
	ASSERT_UEQ(m.n, 10000);
	ASSERT_EQ(strmap_put(&m, "dir/7", 5, 70), 0); /* replaces */
	ASSERT_UEQ(m.n, 10000);
	ASSERT_EQ(strmap_get(&m, "dir/7", 5, &v), 1);
	ASSERT_UEQ(v, 70);
	ASSERT_EQ(strmap_get(&m, "dir/9999", 8, &v), 1);
	ASSERT_UEQ(v, 9999);
	ASSERT_EQ(strmap_get(&m, "dir/999", 7, &v), 1);
	ASSERT_UEQ(v, 999);
	ASSERT_EQ(strmap_get(&m, "dir/99999", 9, &v), 0);
	ASSERT_EQ(strmap_get(&m, "dir/1\0", 6, &v), 0); /* a key with a NUL is its own key */
	ASSERT_EQ(strmap_put(&m, "dir/1\0", 6, 5), 0);
	ASSERT_EQ(strmap_get(&m, "dir/1", 5, &v), 1);
	ASSERT_UEQ(v, 1);
	ASSERT_EQ(strmap_del(&m, "dir/1\0", 6), 1);
	ASSERT_EQ(strmap_del(&m, "dir/5", 5), 1);
	ASSERT_EQ(strmap_del(&m, "dir/5", 5), 0);
	ASSERT_UEQ(m.n, 9999);
	uint64_t sum = 0;
	ASSERT_EQ(strmap_each(&m, sum_vals, &sum), 0);
	ASSERT_UEQ(sum, 9999ull * 10000 / 2 + 70 - 7 - 5); /* 0..9999, dir/7 = 70, no dir/5 */
	sum = UINT64_MAX; /* sum_vals stops at once */
	ASSERT_EQ(strmap_each(&m, sum_vals, &sum), 7);
	strmap_prune(&m, drop_odd, NULL);
	ASSERT_UEQ(m.n, 5001); /* 0, 2, ..., 9998 (5,000) and dir/7 = 70 */
	ASSERT_EQ(strmap_get(&m, "dir/3", 5, &v), 0);
	ASSERT_EQ(strmap_get(&m, "dir/4", 5, &v), 1);
	ASSERT_EQ(strmap_get(&m, "dir/7", 5, &v), 1);
	strmap_clear(&m);
	ASSERT_UEQ(m.n, 0);
	ASSERT_EQ(strmap_get(&m, "dir/4", 5, &v), 0);
	ASSERT_EQ(strmap_put(&m, "again", 5, 1), 0);
	strmap_clear(&m);
}

TEST_LIST_BEGIN
TEST_ENTRY(config_roundtrip)
TEST_ENTRY(config_errors)
TEST_ENTRY(folder_ids)
TEST_ENTRY(json_roundtrip)
TEST_ENTRY(fsops_confined)
TEST_ENTRY(fs_copy_range)
TEST_ENTRY(fs_copy_range_reflink)
TEST_ENTRY(version_vectors)
TEST_ENTRY(parallel_chunking)
TEST_ENTRY(peer_log_rate_limit)
TEST_ENTRY(ls_pages_past_tombstones)
TEST_ENTRY(pull_windows)
TEST_ENTRY(pull_targeted)
TEST_ENTRY(strmap)
TEST_LIST_END
