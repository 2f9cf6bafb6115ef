/*
 * tests/fuzz/make_corpus.c - writes the seed corpus of the fuzz targets.
 *
 * Usage: fuzz_make_corpus DIR    (normally tests/fuzz/corpus)
 * Writes DIR/<target>/<name> for frame, msg, path, devid, handshake and invite:
 * valid inputs made with the library's own encoders and handshake (so that
 * the fuzzer starts past the first checks), and hostile ones, each named for
 * what it tries. Output is deterministic; files are overwritten, none are
 * removed (regression inputs, named regress-*, are kept by hand).
 * Re-run it after changing a target's input format or fuzz_noise.h.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "crypto/identity.h"
#include "crypto/noise.h"
#include "crypto/sec.h"
#include "proto/invite.h"
#include "proto/msg.h"
#include "proto/proto.h"
#include "tests/fuzz/fuzz_noise.h"

static const char *outdir;
static int nwritten;

static void
die(const char *what)
{
	fprintf(stderr, "fuzz_make_corpus: %s\n", what);
	exit(1);
}

static void
put(const char *target, const char *name, const void *p, size_t len)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", outdir, target);
	if (mkdir(path, 0777) != 0 && errno != EEXIST)
		die(path);
	snprintf(path, sizeof(path), "%s/%s/%s", outdir, target, name);
	f = fopen(path, "wb");
	if (f == NULL || (len > 0 && fwrite(p, 1, len, f) != len) || fclose(f) != 0)
		die(path);
	nwritten++;
}

static void
put_str(const char *target, const char *name, const char *s)
{
	put(target, name, s, strlen(s));
}

static void
put_buf(const char *target, const char *name, struct proto_buf *b)
{
	put(target, name, b->p, b->len);
	proto_buf_reset(b);
}

static void
check(int rc)
{
	if (rc != 0) {
		fprintf(stderr, "fuzz_make_corpus: error %d\n", rc);
		exit(1);
	}
}

/* ---- frame: byte 0 selects the cutting (see fuzz_frame.c), then the data ---- */

static void
frames(void)
{
	/* Pieces of 4 bytes: three fragments of one 9-byte message. */
	static const uint8_t three[] = {0x03, 0, 'a', 'b', 'c', 0, 'd', 'e', 'f', 1, 'g', 'h', 'i'};
	/* Pieces of 5 bytes: two single-fragment messages. */
	static const uint8_t single[] = {0x04, 1, 0x91, 0x06, 0x00, 0x00, 1, 0x92, 0x07, 0xa1, 'x'};
	/* max = 1 (bits 5-7 = 1): a 3-byte fragment is too big. */
	static const uint8_t toobig[] = {0x23, 0, 'a', 'b', 'c', 1, 'd', 'e', 'f'};
	/* max = 7: 3 + 3 fit, the third fragment does not; then a new message. */
	static const uint8_t max7[] = {0x63, 0, 1, 2, 3, 0, 4, 5, 6, 1, 7, 8, 9, 1, 'o', 'k', '!'};
	/* A flag that is neither 0 nor 1, then a fragment of only a flag. */
	static const uint8_t badflag[] = {0x03, 2, 'a', 'b', 'c', 0x00};
	/* Pieces of 1 byte: every fragment is too short. */
	static const uint8_t tiny[] = {0x00, 0, 1, 0, 1};
	/* Pieces of 3: frames split across reads. */
	static const uint8_t stream[] = {0x02, 0x00, 0x01, 0xaa, 0x00, 0x02, 0xbb,
					 0xcc, 0x00, 0x03, 0x01, 0x91, 0x06};
	/* A zero-length frame after a good one. */
	static const uint8_t zero[] = {0x0f, 0x00, 0x01, 0x42, 0x00, 0x00, 0x00, 0x01, 0x43};
	/* A header announcing the largest frame, with few bytes behind it. */
	static const uint8_t bigframe[] = {0x0f, 0xff, 0xff, 0x01, 0x02, 0x03};
	static const uint8_t hostile[] = {0xdd, 0xff, 0x00, 0x00, 0x00};
	uint8_t buf[1 + 3 * (2 + 40)], big[1 + 2 + 256];
	size_t off = 1;

	put("frame", "empty", "", 0);
	put("frame", "one-byte", "\x00", 1);
	put("frame", "assemble-three-fragments", three, sizeof(three));
	put("frame", "assemble-single-fragments", single, sizeof(single));
	put("frame", "assemble-too-big", toobig, sizeof(toobig));
	put("frame", "assemble-max7", max7, sizeof(max7));
	put("frame", "assemble-bad-flag", badflag, sizeof(badflag));
	put("frame", "assemble-tiny-pieces", tiny, sizeof(tiny));
	put("frame", "stream-split-frames", stream, sizeof(stream));
	put("frame", "stream-zero-length", zero, sizeof(zero));
	put("frame", "stream-big-header", bigframe, sizeof(bigframe));
	put("frame", "hostile-dd-ff", hostile, sizeof(hostile));

	/* Three frames as on the wire: [len][flag, PING][16-byte tag], random cuts. */
	buf[0] = 0x17;
	for (int i = 0; i < 3; i++) {
		proto_frame_header(buf + off, 3 + 16 + i);
		off += 2;
		buf[off++] = 1;
		buf[off++] = 0x91;
		buf[off++] = 0x06;
		for (int k = 0; k < 16 + i; k++)
			buf[off++] = (uint8_t)(0x10 * i + k);
	}
	put("frame", "stream-wire-frames", buf, off);

	big[0] = 0x1f;
	proto_frame_header(big + 1, 256);
	for (int k = 0; k < 256; k++)
		big[3 + k] = (uint8_t)k;
	put("frame", "stream-256-byte-frame", big, sizeof(big));
}

/* ---- msg ---- */

static struct proto_bytes
B(const char *s) {
	return (struct proto_bytes){(const uint8_t *)s, strlen(s)};
}

static void
msgs(void)
{
	static const uint8_t deep[] = {0x92, 0x06, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91,
				       0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x90};
	/* PING with three later elements: a map, true, and an ext 8 (fixext8). */
	static const uint8_t fwd[] =
	    "\x94\x06\x81\x01\x02\xc3\xd7\x01\x01\x02\x03\x04\x05\x06\x07\x08";
	struct proto_folder folders[2] = {
	    {B("default"), B("Default Folder"), PROTO_FOLDER_SEND | PROTO_FOLDER_RECEIVE,
	     0x1122334455667788u, 42, 0, 0},
	    {B("photos"), B(""), PROTO_FOLDER_RECEIVE, 7, 0, 0x99, UINT64_MAX},
	};
	struct proto_hello hello = {B("laptop"), B("shoal"), B("0.1.0"), 2, folders};
	struct proto_counter vv[2] = {{0x0102030405060708u, 3}, {0xfffffffffffffff0u, 1}};
	struct proto_block blocks[2] = {{{0xaa, 0xbb}, 4096}, {{0xcc}, 100}};
	struct proto_file files[6] = {
	    {B("docs/report.txt"), PROTO_FILE, 0, 0644, 4196, 1700000000, 123456789, 5, 4096, B(""),
	     2, vv, 2, blocks},
	    {B("empty"), PROTO_FILE, 0, 0600, 0, -1, 0, 1, 0, B(""), 1, vv, 0, NULL},
	    {B("docs"), PROTO_DIR, 0, 0755, 0, 0, 0, 2, 0, B(""), 1, vv, 0, NULL},
	    {B("link"), PROTO_SYMLINK, 0, 0777, 0, 0, 0, 3, 0, B("docs/report.txt"), 1, vv, 0,
	     NULL},
	    {B("gone.txt"), PROTO_FILE, PROTO_FLAG_DELETED, 0644, 0, 1, 1, 4, 0, B(""), 2, vv, 0,
	     NULL},
	    {B("caf\xc3\xa9/na\xc3\xafve \xe2\x82\xac.txt"), PROTO_FILE, PROTO_FLAG_INVALID, 0644,
	     100, 0, 0, INT64_MAX, 64, B(""), 0, NULL, 1, &blocks[1]},
	};
	struct proto_request req = {7, B("default"), B("docs/report.txt"), 4096, 100, {0xcc}};
	struct proto_response resp = {7, PROTO_R_OK, {(const uint8_t *)"block data", 10}};
	struct proto_join join = {
	    B("default"), {(const uint8_t *)"0123456789abcdef", 16}, B("new laptop")};
	struct proto_buf b;

	proto_buf_init(&b);

	check(proto_encode_hello(&b, &hello));
	put_buf("msg", "hello", &b);
	hello.nfolders = 0;
	check(proto_encode_hello(&b, &hello));
	put_buf("msg", "hello-no-folders", &b);

	check(proto_encode_index_begin(&b, PROTO_INDEX, (const uint8_t *)"default", 7, 99, 1, 6));
	for (int i = 0; i < 6; i++)
		check(proto_encode_file(&b, &files[i]));
	put_buf("msg", "index", &b);
	check(proto_encode_index_begin(&b, PROTO_INDEX_UPDATE, (const uint8_t *)"d", 1, 1, 0, 1));
	check(proto_encode_file(&b, &files[4]));
	put_buf("msg", "index-update", &b);
	check(proto_encode_index_begin(&b, PROTO_INDEX, (const uint8_t *)"d", 1, 1, 1, 0));
	put_buf("msg", "index-empty", &b);

	check(proto_encode_request(&b, &req));
	put_buf("msg", "request", &b);
	check(proto_encode_response(&b, &resp));
	put_buf("msg", "response", &b);
	resp.code = PROTO_R_NOTFOUND;
	resp.data.len = 0;
	check(proto_encode_response(&b, &resp));
	put_buf("msg", "response-notfound", &b);
	check(proto_encode_ping(&b));
	put_buf("msg", "ping", &b);
	check(proto_encode_close(&b, "bye: shutting down"));
	put_buf("msg", "close", &b);
	check(proto_encode_join(&b, &join));
	put_buf("msg", "join", &b);
	check(proto_encode_join_result(&b, PROTO_J_EXPIRED, "the invite has expired"));
	put_buf("msg", "join-result", &b);

	/* Hostile: counts and lengths larger than the input, bad types, nesting. */
	put("msg", "hostile-array32-count", "\xdd\xff\x00\x00\x00", 5);
	put("msg", "hostile-array16-count", "\xdc\xff\xff", 3);
	put("msg", "hostile-reserved-c1", "\xc1", 1);
	put("msg", "hostile-empty-array", "\x90", 1);
	put("msg", "hostile-unknown-type", "\x91\x0a", 2);
	put("msg", "hostile-join-no-fields", "\x91\x08", 2);
	put("msg", "hostile-negative-type", "\x91\xff", 2);
	put("msg", "hostile-trailing-byte", "\x91\x06\xc0", 3);
	put("msg", "hostile-str32-length", "\x92\x07\xdb\xff\xff\xff\xff", 7);
	put("msg", "hostile-bin32-response", "\x94\x05\x01\x00\xc6\x7f\xff\xff\xff", 9);
	put("msg", "hostile-float-type", "\x91\xcb\x3f\xf0\x00\x00\x00\x00\x00\x00", 10);
	put("msg", "hostile-deep-nesting", deep, sizeof(deep));
	put("msg", "forward-compat-trailing", fwd, sizeof(fwd) - 1);

	/* Encoders do not validate: messages the decoder must refuse. */
	files[0].name = B("../etc/passwd");
	check(proto_encode_index_begin(&b, PROTO_INDEX, (const uint8_t *)"d", 1, 1, 1, 1));
	check(proto_encode_file(&b, &files[0]));
	put_buf("msg", "bad-path-dotdot", &b);
	files[0].name = B("docs/report.txt");
	files[0].size = 4197;
	check(proto_encode_index_begin(&b, PROTO_INDEX, (const uint8_t *)"d", 1, 1, 1, 1));
	check(proto_encode_file(&b, &files[0]));
	put_buf("msg", "bad-blocks-sum", &b);
	req.name = B(".shoal/db");
	check(proto_encode_request(&b, &req));
	put_buf("msg", "bad-request-reserved", &b);
	req.name = B("x");
	req.offset = INT64_MAX;
	check(proto_encode_request(&b, &req));
	put_buf("msg", "bad-request-offset", &b);
	proto_buf_release(&b);
}

/* ---- path ---- */

static void
paths(void)
{
	char buf[4200];

	put_str("path", "simple", "a");
	put_str("path", "nested", "docs/2024/report.txt");
	put_str("path", "utf8", "caf\xc3\xa9/\xe2\x82\xac/\xf0\x9f\x90\x9f.txt");
	put_str("path", "utf8-max", "\xf4\x8f\xbf\xbf");
	put_str("path", "dotfile", ".bashrc");
	put_str("path", "shoal-lookalike", "x/.shoa/y.shoal");
	put_str("path", "reserved", ".shoal");
	put_str("path", "reserved-prefix", "a/.shoal-tmp-123");
	put_str("path", "dot", "a/./b");
	put_str("path", "dotdot", "a/../b");
	put_str("path", "double-slash", "a//b");
	put_str("path", "absolute", "/etc/passwd");
	put_str("path", "trailing-slash", "a/");
	put_str("path", "backslash", "a\\..\\b");
	put_str("path", "overlong-slash", "a\xc0\xaf..");
	put_str("path", "overlong-3", "\xe0\x80\xaf");
	put_str("path", "surrogate", "\xed\xa0\x80");
	put_str("path", "above-10ffff", "\xf4\x90\x80\x80");
	put_str("path", "truncated-utf8", "ab\xe2\x82");
	put("path", "control", "a\001b", 3);
	put_str("path", "del", "a\x7f");
	put("path", "nul", "a\0b", 3);

	memset(buf, 'n', 255);
	put("path", "component-255", buf, 255);
	put("path", "component-256", buf, 256);
	for (int i = 0; i < 4096; i++)
		buf[i] = i % 128 == 127 ? '/' : 'p';
	put("path", "total-4095", buf, 4095);
	put("path", "total-4096", buf, 4096);
}

/* ---- devid ---- */

static void
devids(const struct sec_identity *id)
{
	unsigned char raw[SEC_DEVID_BYTES];
	char s[SEC_DEVID_STRLEN + 1], t[128];
	size_t j = 0;

	sec_devid_format(id->id, s);
	put_str("devid", "identity", s);
	for (size_t i = 0; s[i]; i++)
		t[i] = s[i] >= 'A' && s[i] <= 'Z' ? (char)(s[i] - 'A' + 'a') : s[i];
	t[SEC_DEVID_STRLEN] = '\0';
	put_str("devid", "lowercase", t);
	for (size_t i = 0; s[i]; i++)
		if (s[i] != '-')
			t[j++] = s[i];
	t[j] = '\0';
	put_str("devid", "no-dashes", t);
	j = 0;
	for (size_t i = 0; s[i]; i++) {
		t[j++] = s[i] == '-' ? ' ' : s[i];
		if (i % 3 == 0)
			t[j++] = '-';
	}
	t[j] = '\0';
	put_str("devid", "spaces-and-dashes", t);

	strcpy(t, s);
	t[3] = t[3] == 'A' ? 'B' : 'A';
	put_str("devid", "typo", t);
	strcpy(t, s);
	t[SEC_DEVID_STRLEN - 1] = '\0';
	put_str("devid", "short", t);
	snprintf(t, sizeof(t), "%sA", s);
	put_str("devid", "long", t);
	strcpy(t, s);
	t[0] = '1';
	put_str("devid", "bad-char", t);

	/*
	 * Padding bits set: the 52nd data character (position 61 with dashes)
	 * carries one bit and four zero bits; set one of those, then find the
	 * check character that makes the group valid.
	 */
	memset(raw, 0, sizeof(raw));
	sec_devid_format(raw, s);
	strcpy(t, s);
	t[SEC_DEVID_STRLEN - 2] = 'B';
	for (int c = 0; c < 32; c++) {
		t[SEC_DEVID_STRLEN - 1] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"[c];
		if (sec_devid_parse(t, raw) != SEC_EDEVIDCHECK)
			break;
	}
	put_str("devid", "padding-bits", t);

	memset(raw, 0xff, sizeof(raw));
	sec_devid_format(raw, s);
	put_str("devid", "all-ones", s);
	put_str("devid", "empty", "");
	put_str("devid", "dashes-only", "-------");
}

/* ---- handshake ---- */

static void
handshakes(const struct sec_identity id[2])
{
	static const unsigned char *const none[3] = {NULL, NULL, NULL};
	static const size_t none_len[3] = {0, 0, 0};
	static const unsigned char *const with2[3] = {NULL, (const unsigned char *)"welcome", NULL};
	static const size_t with2_len[3] = {0, 7, 0};
	static const unsigned char *const with3[3] = {NULL, NULL, (const unsigned char *)"thanks"};
	static const size_t with3_len[3] = {0, 0, 6};
	static const char *const suite_names[FUZZ_NSUITES] = {"chachapoly-blake2b",
							      "chachapoly-sha512", "aesgcm-sha512"};
	unsigned char buf[128];
	struct fuzz_genuine g;
	char name[64];
	int rc;

	check(fuzz_genuine_run(&g, SEC_SUITE_CHACHAPOLY_BLAKE2B, id, none, none_len));
	put("handshake", "msg1", g.msg[0], g.len[0]);
	put("handshake", "msg2", g.msg[1], g.len[1]);
	put("handshake", "msg3", g.msg[2], g.len[2]);
	memcpy(buf, g.msg[0], g.len[0]);
	memcpy(buf + g.len[0], "payload", 7);
	put("handshake", "msg1-payload", buf, g.len[0] + 7);
	for (int side = 0; side < 2; side++) {
		sec_cipher_free(g.send[side]);
		sec_cipher_free(g.recv[side]);
	}
	check(fuzz_genuine_run(&g, SEC_SUITE_CHACHAPOLY_BLAKE2B, id, with2, with2_len));
	put("handshake", "msg2-payload", g.msg[1], g.len[1]);
	for (int side = 0; side < 2; side++) {
		sec_cipher_free(g.send[side]);
		sec_cipher_free(g.recv[side]);
	}
	check(fuzz_genuine_run(&g, SEC_SUITE_CHACHAPOLY_BLAKE2B, id, with3, with3_len));
	put("handshake", "msg3-payload", g.msg[2], g.len[2]);
	for (int side = 0; side < 2; side++) {
		sec_cipher_free(g.send[side]);
		sec_cipher_free(g.recv[side]);
	}

	for (int s = 0; s < FUZZ_NSUITES; s++) {
		rc = fuzz_genuine_run(&g, (enum sec_suite)s, id, none, none_len);
		if (rc == SEC_EUNAVAIL)
			continue;
		check(rc);
		check(
		    sec_cipher_seal(g.send[0], fuzz_transport_pt, sizeof(fuzz_transport_pt), buf));
		snprintf(name, sizeof(name), "transport-%s", suite_names[s]);
		put("handshake", name, buf, sizeof(fuzz_transport_pt) + SEC_TAG_BYTES);
		for (int side = 0; side < 2; side++) {
			sec_cipher_free(g.send[side]);
			sec_cipher_free(g.recv[side]);
		}
	}

	/* Hostile: low-order and non-canonical keys, short and odd lengths. */
	memset(buf, 0, sizeof(buf));
	put("handshake", "e-zero", buf, 32);
	put("handshake", "zeros-96", buf, 96);
	buf[0] = 1;
	put("handshake", "e-one", buf, 32);
	memset(buf, 0xff, 32);
	buf[0] = 0xed;
	buf[31] = 0x7f;
	put("handshake", "e-p", buf, 32);
	buf[0] = 0xee;
	put("handshake", "e-p-plus-1", buf, 32);
	memset(buf, 0xff, 96);
	put("handshake", "e-high-bit", buf, 96);
	memcpy(buf, g.msg[0], 32);
	put("handshake", "short-31", buf, 31);
	put("handshake", "empty", "", 0);
}

/* ---- invite ---- */

static void
invites(const struct sec_identity *id)
{
	struct proto_invite iv;
	char code[PROTO_INVITE_CODE_MAX], t[2 * PROTO_INVITE_CODE_MAX];
	size_t j = 0;

	memset(&iv, 0, sizeof(iv));
	memcpy(iv.owner, id->id, 32);
	for (int i = 0; i < 16; i++)
		iv.secret[i] = (uint8_t)(0xa0 + i);
	iv.expires = 1800000000;
	strcpy(iv.folder, "default");
	strcpy(iv.label, "Default Folder");
	iv.naddrs = 2;
	strcpy(iv.addrs[0], "192.168.1.10:22000");
	strcpy(iv.addrs[1], "[fe80::1%eth0]:22000");
	check(proto_invite_encode(&iv, code, sizeof(code)));
	put_str("invite", "code", code);

	/* As a mail program may deliver it: indented, lower case, wrapped, dashed. */
	t[j++] = ' ';
	for (size_t i = 0; code[i]; i++) {
		t[j++] = code[i] >= 'A' && code[i] <= 'Z' ? (char)(code[i] - 'A' + 'a') : code[i];
		if (i > 7 && i % 8 == 0)
			t[j++] = i % 40 == 0 ? '\n' : '-';
	}
	t[j++] = '\r';
	t[j++] = '\n';
	t[j] = '\0';
	put_str("invite", "code-pasted", t);

	strcpy(t, code);
	t[20] = t[20] == 'A' ? 'B' : 'A';
	put_str("invite", "code-typo", t);
	strcpy(t, code);
	t[strlen(t) - 3] = '\0';
	put_str("invite", "code-truncated", t);
	strcpy(t, code);
	t[30] = '1';
	put_str("invite", "code-bad-char", t);

	iv.naddrs = 0;
	iv.expires = 0;
	iv.label[0] = '\0';
	strcpy(iv.folder, "a");
	check(proto_invite_encode(&iv, code, sizeof(code)));
	put_str("invite", "code-minimal", code);

	memset(iv.folder, 'f', PROTO_INVITE_FIELD_MAX);
	iv.folder[PROTO_INVITE_FIELD_MAX] = '\0';
	memset(iv.label, 'l', PROTO_INVITE_FIELD_MAX);
	iv.label[PROTO_INVITE_FIELD_MAX] = '\0';
	iv.naddrs = PROTO_INVITE_ADDRS;
	for (int i = 0; i < PROTO_INVITE_ADDRS; i++) {
		memset(iv.addrs[i], '0' + i, PROTO_INVITE_ADDR_MAX);
		iv.addrs[i][PROTO_INVITE_ADDR_MAX] = '\0';
	}
	iv.expires = UINT64_MAX;
	check(proto_invite_encode(&iv, code, sizeof(code)));
	put_str("invite", "code-largest", code);

	put_str("invite", "prefix-only", "SHOAL1-");
	put_str("invite", "other-version", "SHOAL2-AEAQCAIBAEAQCAIB");
	put_str("invite", "empty", "");
}

int
main(int argc, char **argv)
{
	struct sec_identity id[2];

	if (argc != 2) {
		fprintf(stderr, "usage: %s DIR\n", argv[0]);
		return 2;
	}
	outdir = argv[1];
	if (mkdir(outdir, 0777) != 0 && errno != EEXIST)
		die(outdir);
	check(sec_init());
	for (int side = 0; side < 2; side++)
		check(sec_identity_from_seed(&id[side], fuzz_seed[side]));

	frames();
	msgs();
	paths();
	devids(&id[0]);
	handshakes(id);
	invites(&id[0]);

	sec_identity_release(&id[0]);
	sec_identity_release(&id[1]);
	printf("wrote %d files under %s\n", nwritten, outdir);
	return 0;
}
