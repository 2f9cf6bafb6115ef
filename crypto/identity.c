/*
 * crypto/identity.c - a device's Ed25519 key pair, its X25519 form, its
 * device ID, and the key file that keeps the seed.
 *
 * Key file format (text, mode 0600):
 *   shoal-ed25519-seed-v1\n
 *   <64 lowercase hex digits of the 32-byte Ed25519 seed>\n
 * Nothing else is accepted.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "crypto/identity.h"
#include "crypto/sec.h"

#define KEYFILE_MAGIC "shoal-ed25519-seed-v1\n"
#define KEYFILE_MAGIC_LEN (sizeof(KEYFILE_MAGIC) - 1)
#define KEYFILE_LEN (KEYFILE_MAGIC_LEN + 64 + 1)

#define DEVID_DOMAIN "shoal-device-id"
/* 256 bits make 52 base32 characters; the last carries 1 bit and 4 zero bits. */
#define DEVID_CHARS 56 /* with one check character per group of 13 */
#define DEVID_GROUP 13

static const char b32_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

int
sec_identity_from_seed(struct sec_identity *id, const unsigned char seed[32])
{
	unsigned char check_pk[32];
	int rc;

	id->ed_sk = NULL;
	id->x_sk = NULL;
	id->ed_sk = sodium_malloc(crypto_sign_SECRETKEYBYTES);
	id->x_sk = sodium_malloc(crypto_scalarmult_SCALARBYTES);
	if (!id->ed_sk || !id->x_sk) {
		rc = SEC_ENOMEM;
		goto out;
	}
	if (crypto_sign_seed_keypair(id->ed_pk, id->ed_sk, seed) != 0 ||
	    crypto_sign_ed25519_sk_to_curve25519(id->x_sk, id->ed_sk) != 0 ||
	    crypto_scalarmult_base(id->x_pk, id->x_sk) != 0) {
		rc = SEC_EINVAL;
		goto out;
	}
	/*
	 * The X25519 public key derived from the secret scalar must be the
	 * birational image of the Ed25519 public key; both routes must agree.
	 */
	if (crypto_sign_ed25519_pk_to_curve25519(check_pk, id->ed_pk) != 0 ||
	    sodium_memcmp(check_pk, id->x_pk, sizeof(check_pk)) != 0) {
		rc = SEC_EINVAL;
		goto out;
	}
	sec_devid_from_x25519(id->x_pk, id->id);
	rc = 0;
out:
	if (rc < 0)
		sec_identity_release(id);
	return rc;
}

int
sec_identity_generate(struct sec_identity *id)
{
	unsigned char *seed;
	int rc;

	id->ed_sk = NULL;
	id->x_sk = NULL;
	seed = sodium_malloc(32);
	if (!seed) {
		rc = SEC_ENOMEM;
		goto out;
	}
	randombytes_buf(seed, 32);
	rc = sec_identity_from_seed(id, seed);
out:
	sodium_free(seed); /* sodium_free() wipes before freeing */
	return rc;
}

void
sec_identity_release(struct sec_identity *id)
{
	if (!id)
		return;
	sodium_free(id->ed_sk); /* NULL-safe, and wipes the memory */
	sodium_free(id->x_sk);
	id->ed_sk = NULL;
	id->x_sk = NULL;
}

/* Reads at most cap bytes; returns the count or -errno. */
static ssize_t
read_all(int fd, unsigned char *buf, size_t cap)
{
	size_t got = 0;

	while (got < cap) {
		ssize_t n = read(fd, buf + got, cap - got);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	return (ssize_t)got;
}

static int
write_all(int fd, const unsigned char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

int
sec_identity_load(struct sec_identity *id, const char *path)
{
	unsigned char *text = NULL, *seed = NULL;
	ssize_t n;
	size_t i;
	int fd = -1, rc;

	id->ed_sk = NULL;
	id->x_sk = NULL;
	text = sodium_malloc(KEYFILE_LEN + 1);
	seed = sodium_malloc(32);
	if (!text || !seed) {
		rc = SEC_ENOMEM;
		goto out;
	}
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		rc = -errno;
		goto out;
	}
	/* Read one byte more than a valid file has, to refuse longer files. */
	n = read_all(fd, text, KEYFILE_LEN + 1);
	if (n < 0) {
		rc = (int)n;
		goto out;
	}
	if ((size_t)n != KEYFILE_LEN || memcmp(text, KEYFILE_MAGIC, KEYFILE_MAGIC_LEN) != 0 ||
	    text[KEYFILE_LEN - 1] != '\n') {
		rc = SEC_EKEYFILE;
		goto out;
	}
	for (i = KEYFILE_MAGIC_LEN; i < KEYFILE_LEN - 1; i++) {
		unsigned char ch = text[i];
		if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f'))) {
			rc = SEC_EKEYFILE;
			goto out;
		}
	}
	if (sodium_hex2bin(seed, 32, (const char *)text + KEYFILE_MAGIC_LEN, 64, NULL, NULL,
			   NULL) != 0) {
		rc = SEC_EKEYFILE;
		goto out;
	}
	rc = sec_identity_from_seed(id, seed);
out:
	if (fd >= 0)
		close(fd);
	sodium_free(text);
	sodium_free(seed);
	return rc;
}

/* Opens the directory that holds path, for fsync after a rename. */
static int
open_parent_dir(const char *path)
{
	char dir[4096];
	const char *slash = strrchr(path, '/');
	size_t len;

	if (!slash)
		return open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	len = slash == path ? 1 : (size_t)(slash - path);
	if (len >= sizeof(dir)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(dir, path, len);
	dir[len] = '\0';
	return open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

int
sec_identity_save(const struct sec_identity *id, const char *path)
{
	unsigned char *text = NULL;
	unsigned char tag[8];
	char tmp[4096], tag_hex[sizeof(tag) * 2 + 1];
	int fd = -1, dfd = -1, created = 0, rc;

	if (!id->ed_sk) {
		rc = -EINVAL;
		goto out;
	}
	text = sodium_malloc(KEYFILE_LEN + 1);
	if (!text) {
		rc = -ENOMEM;
		goto out;
	}
	/* The first 32 bytes of libsodium's Ed25519 secret key are the seed. */
	memcpy(text, KEYFILE_MAGIC, KEYFILE_MAGIC_LEN);
	sodium_bin2hex((char *)text + KEYFILE_MAGIC_LEN, 64 + 1, id->ed_sk, 32);
	text[KEYFILE_LEN - 1] = '\n';

	/* A fresh name in the same directory, so rename() is atomic. */
	randombytes_buf(tag, sizeof(tag));
	sodium_bin2hex(tag_hex, sizeof(tag_hex), tag, sizeof(tag));
	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp-%s", path, tag_hex) >= sizeof(tmp)) {
		rc = -ENAMETOOLONG;
		goto out;
	}
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		rc = -errno;
		goto out;
	}
	created = 1;
	/* The umask may have removed bits; the mode must be exactly 0600. */
	if (fchmod(fd, 0600) != 0 || fsync(fd) != 0) {
		rc = -errno;
		goto out;
	}
	rc = write_all(fd, text, KEYFILE_LEN);
	if (rc < 0)
		goto out;
	if (fsync(fd) != 0) {
		rc = -errno;
		goto out;
	}
	if (close(fd) != 0) {
		fd = -1;
		rc = -errno;
		goto out;
	}
	fd = -1;
	if (rename(tmp, path) != 0) {
		rc = -errno;
		goto out;
	}
	created = 0;
	dfd = open_parent_dir(path);
	if (dfd < 0 || fsync(dfd) != 0) {
		rc = -errno;
		goto out;
	}
	rc = 0;
out:
	if (fd >= 0)
		close(fd);
	if (dfd >= 0)
		close(dfd);
	if (created)
		unlink(tmp);
	sodium_free(text);
	return rc;
}

void
sec_devid_from_x25519(const unsigned char x_pk[32], unsigned char id[SEC_DEVID_BYTES])
{
	crypto_generichash_state st;

	crypto_generichash_init(&st, NULL, 0, SEC_DEVID_BYTES);
	crypto_generichash_update(&st, (const unsigned char *)DEVID_DOMAIN,
				  sizeof(DEVID_DOMAIN) - 1);
	crypto_generichash_update(&st, x_pk, 32);
	crypto_generichash_final(&st, id, SEC_DEVID_BYTES);
}

/*
 * Luhn mod N (N = 32) over the code points of one group: from the rightmost
 * character leftwards, every other code point (starting with the rightmost)
 * is doubled and its base-32 digits summed; the check character makes the
 * total a multiple of 32. It catches every single-character substitution.
 */
static unsigned
luhn32(const unsigned char *cp, size_t len)
{
	unsigned factor = 2, sum = 0;
	size_t i;

	for (i = len; i-- > 0;) {
		unsigned addend = factor * cp[i];
		factor = factor == 2 ? 1 : 2;
		sum += addend / 32 + addend % 32;
	}
	return (32 - sum % 32) % 32;
}

void
sec_devid_format(const unsigned char id[SEC_DEVID_BYTES], char out[SEC_DEVID_STRLEN + 1])
{
	unsigned char cp[DEVID_CHARS];
	unsigned acc = 0, bits = 0;
	size_t i, j = 0, k = 0;

	/* Base32 (RFC 4648) code points, 52 of them, into 4 groups of 13 + 1. */
	for (i = 0; i < SEC_DEVID_BYTES; i++) {
		acc = (acc << 8) | id[i];
		bits += 8;
		while (bits >= 5) {
			bits -= 5;
			cp[j++] = (acc >> bits) & 31;
			if (j % (DEVID_GROUP + 1) == DEVID_GROUP) {
				cp[j] = (unsigned char)luhn32(cp + j - DEVID_GROUP, DEVID_GROUP);
				j++;
			}
		}
	}
	cp[j++] = (acc << (5 - bits)) & 31; /* the last bit, padded with zeros */
	cp[j] = (unsigned char)luhn32(cp + j - DEVID_GROUP, DEVID_GROUP);
	j++;

	for (i = 0; i < DEVID_CHARS; i++) {
		if (i > 0 && i % 7 == 0)
			out[k++] = '-';
		out[k++] = b32_alphabet[cp[i]];
	}
	out[k] = '\0';
}

int
sec_devid_parse(const char *s, unsigned char id[SEC_DEVID_BYTES])
{
	unsigned char cp[DEVID_CHARS], raw[SEC_DEVID_BYTES];
	unsigned acc = 0, bits = 0;
	size_t n = 0, i, j = 0;

	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch == '-' || ch == ' ')
			continue;
		if (n == DEVID_CHARS)
			return SEC_EDEVID;
		if (ch >= 'a' && ch <= 'z')
			cp[n] = ch - 'a';
		else if (ch >= 'A' && ch <= 'Z')
			cp[n] = ch - 'A';
		else if (ch >= '2' && ch <= '7')
			cp[n] = ch - '2' + 26;
		else
			return SEC_EDEVID;
		n++;
	}
	if (n != DEVID_CHARS)
		return SEC_EDEVID;
	for (i = 0; i < DEVID_CHARS; i += DEVID_GROUP + 1) {
		if (luhn32(cp + i, DEVID_GROUP) != cp[i + DEVID_GROUP])
			return SEC_EDEVIDCHECK;
	}
	for (i = 0; i < DEVID_CHARS; i++) {
		if (i % (DEVID_GROUP + 1) == DEVID_GROUP)
			continue;
		acc = (acc << 5) | cp[i];
		bits += 5;
		if (bits >= 8) {
			bits -= 8;
			raw[j++] = (unsigned char)(acc >> bits);
		}
	}
	/* Four padding bits are left; a canonical rendering has them clear. */
	if (j != SEC_DEVID_BYTES || bits != 4 || (acc & 15) != 0)
		return SEC_EDEVID;
	memcpy(id, raw, SEC_DEVID_BYTES);
	return 0;
}

uint64_t
sec_devid_short(const unsigned char id[SEC_DEVID_BYTES])
{
	uint64_t v = 0;
	int i;

	for (i = 0; i < 8; i++)
		v = (v << 8) | id[i];
	return v;
}
