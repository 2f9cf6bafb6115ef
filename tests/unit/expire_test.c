/*
 * tests/unit/expire_test.c - forgetting old deletions (agent/expire.c): which
 * tombstones go, which stay, batching, and the forget_deleted setting.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agent/config.h"
#include "agent/expire.h"
#include "agent/util.h"
#include "store/store.h"
#include "test.h"

#define DAY 86400ull
#define ME 0xA1u   /* short IDs in the version vectors */
#define PEER 0xB2u

static char tmpdir[64];
static uint64_t now_s;

static void
mktmp(void)
{
	strcpy(tmpdir, "/tmp/shoal-expire-test.XXXXXX");
	ASSERT(mkdtemp(tmpdir) != NULL);
	now_s = (uint64_t)time(NULL);
}

static void
rmtmp(void)
{
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
	ASSERT_EQ(system(cmd), 0);
}

/* One entry to write: name, device, deleted or live, extra flags, and up to two counters. */
struct ent {
	const char *name;
	uint32_t dev;
	int deleted;
	uint32_t flags;
	struct store_counter v[2];
	size_t nv;
};

struct puts {
	const struct ent *e;
	size_t n;
	uint32_t folder;
	uint64_t next_peer_seq;
};

static int
txn_puts(struct store_txn *txn, void *arg)
{
	struct puts *p = arg;
	int rc = store_folder_num(txn, "docs", 1, &p->folder);
	uint32_t dev;
	uint8_t peer_id[32] = { 7 };

	if (rc == 0)
		rc = store_device_num(txn, peer_id, 1, &dev);
	for (size_t i = 0; rc == 0 && i < p->n; i++) {
		const struct ent *e = &p->e[i];
		struct store_file f = { 0 };
		struct store_counter v[2];
		memcpy(v, e->v, sizeof(v));
		f.name = e->name;
		f.name_len = strlen(e->name);
		f.type = STORE_FILE;
		f.flags = (e->deleted ? STORE_FLAG_DELETED : 0) | e->flags;
		f.mode = 0644;
		f.mtime_s = (int64_t)now_s;
		f.version = v;
		f.nversion = e->nv;
		f.sequence = e->dev == STORE_LOCAL ? 0 : ++p->next_peer_seq;
		rc = store_file_put(txn, p->folder, e->dev == STORE_LOCAL ? STORE_LOCAL : dev, &f);
	}
	return rc;
}

static int
present(struct store *s, uint32_t folder, uint32_t dev, const char *name)
{
	struct store_txn *txn;
	struct store_file f = { 0 };
	ASSERT_EQ(store_read_begin(s, &txn), 0);
	int rc = store_file_get(txn, folder, dev, name, strlen(name), 0, &f);
	store_file_release(&f);
	store_read_end(txn);
	ASSERT(rc == 0 || rc == STORE_ENOTFOUND);
	return rc == 0;
}

static struct store_checkpoint
checkpoint(struct store *s, uint32_t folder, uint32_t dev)
{
	struct store_txn *txn;
	struct store_checkpoint cp;
	ASSERT_EQ(store_read_begin(s, &txn), 0);
	ASSERT_EQ(store_checkpoint_get(txn, folder, dev, &cp), 0);
	store_read_end(txn);
	return cp;
}

/* Walks one whole index in steps of max; returns how many steps it took. */
static int
walk_all(struct store *s, uint32_t folder, uint32_t dev, uint32_t other, uint64_t cutoff,
	 size_t max, uint64_t *removed)
{
	struct expire_cursor cur = { 0 };
	int done = 0, steps = 0;
	while (!done) {
		ASSERT_EQ(expire_step(s, folder, dev, &other, 1, cutoff, max, &cur, &done, removed),
			  0);
		ASSERT(++steps < 1000);
	}
	ASSERT(cur.name == NULL);
	return steps;
}

TEST(which_tombstones_go)
{
	struct store *s;
	mktmp();
	ASSERT_EQ(store_open(&s, tmpdir), 0);
	uint64_t old = now_s - 100 * DAY, older = now_s - 200 * DAY, young = now_s - DAY;
	const uint32_t P = 1; /* the peer's device number (the first one given) */
	const struct ent ents[] = {
		/* ours */
		{ "old-gone", 0, 1, 0, { { ME, old } }, 1 },
		{ "young-gone", 0, 1, 0, { { ME, young } }, 1 },
		{ "peer-behind", 0, 1, 0, { { ME, old } }, 1 },
		{ "peer-newer", 0, 1, 0, { { ME, old } }, 1 },
		{ "both-deleted", 0, 1, 0, { { ME, old } }, 1 },
		{ "local-change", 0, 1, STORE_FLAG_LOCALCHANGE, { { ME, old } }, 1 },
		{ "live", 0, 0, 0, { { ME, older } }, 1 },
		/* the peer's last word */
		{ "peer-behind", P, 0, 0, { { ME, older } }, 1 },		/* never saw the delete */
		{ "peer-newer", P, 0, 0, { { ME, old }, { PEER, young } }, 2 }, /* made it again */
		{ "both-deleted", P, 1, 0, { { ME, old } }, 1 },
		{ "peer-only-old", P, 1, 0, { { PEER, old } }, 1 },
		{ "live", P, 1, 0, { { ME, old } }, 1 }, /* its delete of our older live file */
	};
	struct puts p = { ents, sizeof(ents) / sizeof(ents[0]), 0, 0 };
	ASSERT_EQ(store_write(s, txn_puts, &p), 0);
	struct store_checkpoint before = checkpoint(s, p.folder, STORE_LOCAL);
	ASSERT_EQ(before.deleted, 6);

	uint64_t removed = 0, cutoff = now_s - 30 * DAY;
	walk_all(s, p.folder, STORE_LOCAL, P, cutoff, 100, &removed);
	ASSERT_EQ(removed, 3);
	ASSERT(!present(s, p.folder, STORE_LOCAL, "old-gone"));
	ASSERT(present(s, p.folder, STORE_LOCAL, "young-gone"));	 /* not old enough */
	ASSERT(present(s, p.folder, STORE_LOCAL, "peer-behind"));	 /* the peer still has it */
	ASSERT(!present(s, p.folder, STORE_LOCAL, "peer-newer"));	 /* its file is newer */
	ASSERT(!present(s, p.folder, STORE_LOCAL, "both-deleted"));
	ASSERT(present(s, p.folder, STORE_LOCAL, "local-change"));	 /* revert needs it */
	ASSERT(present(s, p.folder, STORE_LOCAL, "live"));
	struct store_checkpoint after = checkpoint(s, p.folder, STORE_LOCAL);
	ASSERT_EQ(after.deleted, 3);
	ASSERT_EQ(after.max_seq, before.max_seq); /* peers are not sent anything */
	ASSERT_EQ(after.files, before.files);

	/* The peer's copy: its tombstones go unless our live file is older. */
	removed = 0;
	walk_all(s, p.folder, P, STORE_LOCAL, cutoff, 100, &removed);
	ASSERT_EQ(removed, 2);
	ASSERT(!present(s, p.folder, P, "both-deleted"));
	ASSERT(!present(s, p.folder, P, "peer-only-old"));
	ASSERT(present(s, p.folder, P, "live"));	/* we have not deleted ours yet */
	ASSERT(present(s, p.folder, P, "peer-behind")); /* live entries stay */

	/* A second pass finds nothing more; a later cutoff takes the young one too. */
	removed = 0;
	walk_all(s, p.folder, STORE_LOCAL, P, cutoff, 100, &removed);
	ASSERT_EQ(removed, 0);
	walk_all(s, p.folder, STORE_LOCAL, P, now_s, 100, &removed);
	ASSERT_EQ(removed, 1);
	ASSERT(!present(s, p.folder, STORE_LOCAL, "young-gone"));
	store_close(s);
	rmtmp();
}

TEST(steps_resume)
{
	struct store *s;
	char names[23][16];
	struct ent ents[23];
	mktmp();
	ASSERT_EQ(store_open(&s, tmpdir), 0);
	for (int i = 0; i < 23; i++) {
		snprintf(names[i], sizeof(names[i]), "f%02d", i);
		/* every third one is live */
		ents[i] = (struct ent){ names[i], 0, i % 3 != 0, 0, { { ME, now_s - 90 * DAY } }, 1 };
	}
	struct puts p = { ents, 23, 0, 0 };
	ASSERT_EQ(store_write(s, txn_puts, &p), 0);
	uint64_t removed = 0;
	/* 23 entries in steps of 5: five steps, the last one short. */
	ASSERT_EQ(walk_all(s, p.folder, STORE_LOCAL, 1, now_s - DAY, 5, &removed), 5);
	ASSERT_EQ(removed, 15);
	for (int i = 0; i < 23; i++)
		ASSERT_EQ(present(s, p.folder, STORE_LOCAL, names[i]), i % 3 == 0);
	ASSERT_EQ(checkpoint(s, p.folder, STORE_LOCAL).deleted, 0);
	store_close(s);
	rmtmp();
}

TEST(forget_deleted_setting)
{
	char path[128], err[160];
	struct config c;
	uint64_t secs;
	mktmp();
	snprintf(path, sizeof(path), "%s/config", tmpdir);

	const char *good = "[device]\nname = nas\nforget_deleted = 12h\n";
	ASSERT_EQ(write_file_atomic(path, good, strlen(good), 0600), 0);
	ASSERT_EQ(config_load(&c, path, err, sizeof(err)), 0);
	ASSERT_EQ(c.forget_deleted_s, 12 * 3600);
	ASSERT_EQ(config_save(&c, path), 0); /* written back in the unit it fits */
	config_release(&c);
	ASSERT_EQ(config_load(&c, path, err, sizeof(err)), 0);
	ASSERT_EQ(c.forget_deleted_s, 12 * 3600);
	config_release(&c);

	const char *bad[] = { "[device]\nforget_deleted = 30s\n", "[device]\nforget_deleted = x\n",
			      "[device]\nforget_deleted = 5w\n" };
	for (size_t i = 0; i < 3; i++) {
		ASSERT_EQ(write_file_atomic(path, bad[i], strlen(bad[i]), 0600), 0);
		ASSERT_EQ(config_load(&c, path, err, sizeof(err)), -22);
		ASSERT(strstr(err, "forget_deleted") != NULL);
	}
	ASSERT_EQ(parse_duration("90", &secs), 0);
	ASSERT_EQ(secs, 90);
	ASSERT_EQ(parse_duration("2d", &secs), 0);
	ASSERT_EQ(secs, 2 * DAY);
	ASSERT_EQ(parse_duration("99999999999999999999d", &secs), -1);
	ASSERT_EQ(parse_duration("-1d", &secs), -1);
	ASSERT_EQ(parse_duration("1dd", &secs), -1);
	rmtmp();
}

TEST_LIST_BEGIN
TEST_ENTRY(which_tombstones_go)
TEST_ENTRY(steps_resume)
TEST_ENTRY(forget_deleted_setting)
TEST_LIST_END
