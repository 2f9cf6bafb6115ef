/*
 * agent/invites.c - the invites and joins files.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "agent/home.h"
#include "agent/invites.h"
#include "agent/util.h"
#include "crypto/identity.h"

static int
hex_decode(const char *s, unsigned char *out, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned v = 0;
		for (int k = 0; k < 2; k++) {
			char c = s[2 * i + k];
			v <<= 4;
			if (c >= '0' && c <= '9')
				v |= (unsigned)(c - '0');
			else if (c >= 'a' && c <= 'f')
				v |= (unsigned)(c - 'a' + 10);
			else
				return -EINVAL;
		}
		out[i] = (unsigned char)v;
	}
	return s[2 * n] == '\0' || s[2 * n] == ' ' || s[2 * n] == '\n' ? 0 : -EINVAL;
}

int
invites_lock(const char *home)
{
	char *p = home_file(home, "config.lock");
	int fd = p ? open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0600) : -ENOMEM;
	free(p);
	if (fd < 0)
		return fd == -ENOMEM ? fd : -errno;
	if (flock(fd, LOCK_EX) != 0) {
		int rc = -errno;
		close(fd);
		return rc;
	}
	return fd;
}

void
invites_unlock(int fd)
{
	if (fd >= 0)
		close(fd);
}

int
invites_load(const char *home, struct invite **out, size_t *n)
{
	char *p = home_file(home, "invites");
	char line[512], hash[80];
	struct invite *v = NULL;
	size_t cap = 0;
	FILE *fp;

	*out = NULL;
	*n = 0;
	if (!p)
		return -ENOMEM;
	fp = fopen(p, "re");
	free(p);
	if (!fp)
		return errno == ENOENT ? 0 : -errno;
	while (fgets(line, sizeof(line), fp)) {
		struct invite iv;
		unsigned long long exp, created;
		memset(&iv, 0, sizeof(iv));
		if (line[0] == '#' || line[0] == '\n')
			continue;
		if (sscanf(line, "%8s %64s %79s %llu %u %llu", iv.id, iv.folder, hash, &exp, &iv.uses,
			   &created) != 6 ||
		    strlen(hash) != 64 || hex_decode(hash, iv.hash, 32) != 0)
			continue; /* a damaged line is dropped, not fatal */
		iv.expires = exp;
		iv.created = created;
		if (*n == cap) {
			cap = cap ? 2 * cap : 8;
			struct invite *nv = realloc(v, cap * sizeof(*nv));
			if (!nv) {
				free(v);
				fclose(fp);
				return -ENOMEM;
			}
			v = nv;
		}
		v[(*n)++] = iv;
	}
	fclose(fp);
	*out = v;
	return 0;
}

int
invites_save(const char *home, const struct invite *v, size_t n)
{
	char *p = home_file(home, "invites");
	char hash[65];
	struct strbuf sb;
	int rc;

	if (!p)
		return -ENOMEM;
	strbuf_init(&sb);
	strbuf_addf(&sb, "# id folder blake2b(secret) expires uses-left created (written by shoal)\n");
	for (size_t i = 0; i < n; i++) {
		hex_encode(v[i].hash, 32, hash);
		strbuf_addf(&sb, "%s %s %s %" PRIu64 " %u %" PRIu64 "\n", v[i].id, v[i].folder, hash,
			    v[i].expires, v[i].uses, v[i].created);
	}
	rc = sb.oom ? -ENOMEM : write_file_atomic(p, sb.buf, sb.len, 0600);
	strbuf_release(&sb);
	free(p);
	return rc;
}

int
joins_load(const char *home, struct join **out, size_t *n)
{
	char *p = home_file(home, "joins");
	char line[512], owner[80], secret[80];
	struct join *v = NULL;
	size_t cap = 0;
	FILE *fp;

	*out = NULL;
	*n = 0;
	if (!p)
		return -ENOMEM;
	fp = fopen(p, "re");
	free(p);
	if (!fp)
		return errno == ENOENT ? 0 : -errno;
	while (fgets(line, sizeof(line), fp)) {
		struct join j;
		int used = 0;
		memset(&j, 0, sizeof(j));
		if (line[0] == '#' || line[0] == '\n')
			continue;
		if (sscanf(line, "%79s %64s %79s %15s %n", owner, j.folder, secret, j.state, &used) < 4 ||
		    sec_devid_parse(owner, j.owner) != 0 || strlen(secret) != 32 ||
		    hex_decode(secret, j.secret, 16) != 0)
			continue;
		if (used > 0) {
			snprintf(j.message, sizeof(j.message), "%s", line + used);
			j.message[strcspn(j.message, "\n")] = '\0';
		}
		if (*n == cap) {
			cap = cap ? 2 * cap : 4;
			struct join *nv = realloc(v, cap * sizeof(*nv));
			if (!nv) {
				free(v);
				fclose(fp);
				return -ENOMEM;
			}
			v = nv;
		}
		v[(*n)++] = j;
	}
	fclose(fp);
	*out = v;
	return 0;
}

int
joins_save(const char *home, const struct join *v, size_t n)
{
	char *p = home_file(home, "joins");
	char owner[SEC_DEVID_STRLEN + 1], secret[33];
	struct strbuf sb;
	int rc;

	if (!p)
		return -ENOMEM;
	strbuf_init(&sb);
	strbuf_addf(&sb, "# owner folder secret state message (written by shoal)\n");
	for (size_t i = 0; i < n; i++) {
		sec_devid_format(v[i].owner, owner);
		hex_encode(v[i].secret, 16, secret);
		strbuf_addf(&sb, "%s %s %s %s %s\n", owner, v[i].folder, secret, v[i].state,
			    v[i].message);
	}
	rc = sb.oom ? -ENOMEM : write_file_atomic(p, sb.buf, sb.len, 0600);
	strbuf_release(&sb);
	free(p);
	return rc;
}

int
invite_claim(const char *home, const char *folder, const unsigned char *secret,
	     size_t secret_len, char *msg, size_t msglen)
{
	unsigned char h[32];
	struct invite *v = NULL;
	size_t n = 0;
	int lock, code = PROTO_J_WRONG;
	uint64_t now = (uint64_t)time(NULL);

	snprintf(msg, msglen, "no such invite: the code is wrong, was revoked, or is for another "
			      "folder");
	if (secret_len != PROTO_INVITE_SECRET)
		return PROTO_J_WRONG;
	crypto_generichash(h, sizeof(h), secret, secret_len, NULL, 0);
	lock = invites_lock(home);
	if (lock < 0 || invites_load(home, &v, &n) != 0) {
		snprintf(msg, msglen, "the owner cannot read its invites");
		invites_unlock(lock);
		return PROTO_J_ERROR;
	}
	for (size_t i = 0; i < n; i++) {
		if (sodium_memcmp(v[i].hash, h, 32) != 0 || strcmp(v[i].folder, folder) != 0)
			continue;
		if (v[i].expires && now > v[i].expires) {
			snprintf(msg, msglen, "this invite expired; ask the owner for a new one");
			code = PROTO_J_EXPIRED;
		} else if (v[i].uses == 0) {
			snprintf(msg, msglen, "this invite has been used up; ask the owner for a new one");
			code = PROTO_J_USED;
		} else {
			v[i].uses--;
			if (invites_save(home, v, n) != 0) {
				snprintf(msg, msglen, "the owner cannot record the invite's use");
				code = PROTO_J_ERROR;
			} else {
				snprintf(msg, msglen, "welcome: folder %s is shared with you", folder);
				code = PROTO_J_OK;
			}
		}
		break;
	}
	free(v);
	invites_unlock(lock);
	return code;
}

int
invites_any(const char *home)
{
	struct invite *v = NULL;
	size_t n = 0;
	int any = 0;
	uint64_t now = (uint64_t)time(NULL), keep = (uint64_t)INVITE_KEEP_DAYS * 86400;

	if (invites_load(home, &v, &n) != 0)
		return 0;
	for (size_t i = 0; i < n; i++)
		any |= now < v[i].created + keep;
	free(v);
	return any;
}
