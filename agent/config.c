/*
 * agent/config.c - parse and write HOME/config.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/config.h"
#include "agent/util.h"
#include "crypto/identity.h"

const char *
mode_name(enum folder_mode m)
{
	switch (m) {
	case MODE_SEND:
		return "send";
	case MODE_RECEIVE:
		return "receive";
	case MODE_SENDRECEIVE:
		return "send-receive";
	}
	return "?";
}

int
mode_parse(const char *s, enum folder_mode *m)
{
	if (strcmp(s, "send") == 0 || strcmp(s, "send-only") == 0)
		*m = MODE_SEND;
	else if (strcmp(s, "receive") == 0 || strcmp(s, "receive-only") == 0)
		*m = MODE_RECEIVE;
	else if (strcmp(s, "send-receive") == 0 || strcmp(s, "sendreceive") == 0)
		*m = MODE_SENDRECEIVE;
	else
		return -EINVAL;
	return 0;
}

int
folder_id_valid(const char *id)
{
	size_t n = strlen(id);
	if (n == 0 || n > 64 || id[0] == '.')
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = id[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return 0;
	}
	return 1;
}

int
config_set_str(char **field, const char *value)
{
	char *d = strdup(value);
	if (!d)
		return -ENOMEM;
	free(*field);
	*field = d;
	return 0;
}

static void
peer_release(struct cfg_peer *p)
{
	free(p->name);
	for (size_t i = 0; i < p->naddrs; i++)
		free(p->addrs[i]);
	free(p->addrs);
}

static void
folder_release(struct cfg_folder *f)
{
	free(f->id);
	free(f->label);
	free(f->path);
	free(f->shares);
}

void
config_release(struct config *c)
{
	free(c->name);
	free(c->listen);
	for (size_t i = 0; i < c->npeers; i++)
		peer_release(&c->peers[i]);
	free(c->peers);
	for (size_t i = 0; i < c->nfolders; i++)
		folder_release(&c->folders[i]);
	free(c->folders);
	memset(c, 0, sizeof(*c));
}

struct cfg_folder *
config_folder(const struct config *c, const char *id)
{
	for (size_t i = 0; i < c->nfolders; i++)
		if (strcmp(c->folders[i].id, id) == 0)
			return &c->folders[i];
	return NULL;
}

struct cfg_peer *
config_peer(const struct config *c, const unsigned char id[32])
{
	for (size_t i = 0; i < c->npeers; i++)
		if (memcmp(c->peers[i].id, id, 32) == 0)
			return &c->peers[i];
	return NULL;
}

int
config_folder_shared(const struct cfg_folder *f, const unsigned char id[32])
{
	for (size_t i = 0; i < f->nshares; i++)
		if (memcmp(f->shares[i], id, 32) == 0)
			return 1;
	return 0;
}

struct cfg_folder *
config_add_folder(struct config *c, const char *id, const char *path, enum folder_mode mode)
{
	struct cfg_folder *nf = realloc(c->folders, (c->nfolders + 1) * sizeof(*nf));
	if (!nf)
		return NULL;
	c->folders = nf;
	struct cfg_folder *f = &nf[c->nfolders];
	memset(f, 0, sizeof(*f));
	f->id = strdup(id);
	f->path = strdup(path);
	f->mode = mode;
	if (!f->id || !f->path) {
		folder_release(f);
		return NULL;
	}
	c->nfolders++;
	return f;
}

struct cfg_peer *
config_add_peer(struct config *c, const unsigned char id[32])
{
	struct cfg_peer *np = realloc(c->peers, (c->npeers + 1) * sizeof(*np));
	if (!np)
		return NULL;
	c->peers = np;
	struct cfg_peer *p = &np[c->npeers++];
	memset(p, 0, sizeof(*p));
	memcpy(p->id, id, 32);
	return p;
}

int
config_peer_add_addr(struct cfg_peer *p, const char *addr)
{
	for (size_t i = 0; i < p->naddrs; i++)
		if (strcmp(p->addrs[i], addr) == 0)
			return 0;
	char **na = realloc(p->addrs, (p->naddrs + 1) * sizeof(*na));
	if (!na)
		return -ENOMEM;
	p->addrs = na;
	if (!(na[p->naddrs] = strdup(addr)))
		return -ENOMEM;
	p->naddrs++;
	return 0;
}

int
config_folder_share(struct cfg_folder *f, const unsigned char id[32])
{
	if (config_folder_shared(f, id))
		return 0;
	unsigned char(*ns)[32] = realloc(f->shares, (f->nshares + 1) * sizeof(*ns));
	if (!ns)
		return -ENOMEM;
	f->shares = ns;
	memcpy(ns[f->nshares++], id, 32);
	return 0;
}

static char *
trim(char *s)
{
	while (*s == ' ' || *s == '\t')
		s++;
	size_t n = strlen(s);
	while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
		s[--n] = '\0';
	return s;
}

int
config_load(struct config *c, const char *path, char *err, size_t errlen)
{
	enum { SEC_NONE, SEC_DEVICE, SEC_PEER, SEC_FOLDER } sec = SEC_NONE;
	struct cfg_peer *peer = NULL;
	size_t folder_ix = 0, peer_ix = 0;
	char line[8192];
	int lineno = 0, rc = 0;
	FILE *fp;

	memset(c, 0, sizeof(*c));
	if (err && errlen)
		err[0] = '\0';
	fp = fopen(path, "re");
	if (!fp)
		return errno == ENOENT ? 0 : -errno;
	while (fgets(line, sizeof(line), fp)) {
		char *s = trim(line);
		lineno++;
		if (*s == '\0' || *s == '#' || *s == ';')
			continue;
		if (*s == '[') {
			char *end = strchr(s, ']');
			if (!end) {
				snprintf(err, errlen, "line %d: missing ']'", lineno);
				rc = -EINVAL;
				goto out;
			}
			*end = '\0';
			char *name = trim(s + 1);
			char *arg = strchr(name, ' ');
			if (arg) {
				*arg++ = '\0';
				arg = trim(arg);
			}
			if (strcmp(name, "device") == 0) {
				sec = SEC_DEVICE;
			} else if (strcmp(name, "peer") == 0 && arg) {
				unsigned char id[32];
				if (sec_devid_parse(arg, id) != 0) {
					snprintf(err, errlen, "line %d: bad device ID %s", lineno, arg);
					rc = -EINVAL;
					goto out;
				}
				peer = config_peer(c, id);
				if (!peer && !(peer = config_add_peer(c, id))) {
					rc = -ENOMEM;
					goto out;
				}
				peer_ix = (size_t)(peer - c->peers);
				sec = SEC_PEER;
			} else if (strcmp(name, "folder") == 0 && arg) {
				if (!folder_id_valid(arg)) {
					snprintf(err, errlen, "line %d: bad folder ID %s", lineno, arg);
					rc = -EINVAL;
					goto out;
				}
				struct cfg_folder *f = config_folder(c, arg);
				if (!f && !(f = config_add_folder(c, arg, "", MODE_SENDRECEIVE))) {
					rc = -ENOMEM;
					goto out;
				}
				folder_ix = (size_t)(f - c->folders);
				sec = SEC_FOLDER;
			} else {
				snprintf(err, errlen, "line %d: unknown section [%s]", lineno, name);
				rc = -EINVAL;
				goto out;
			}
			continue;
		}
		char *eq = strchr(s, '=');
		if (!eq) {
			snprintf(err, errlen, "line %d: expected key = value", lineno);
			rc = -EINVAL;
			goto out;
		}
		*eq = '\0';
		char *key = trim(s), *val = trim(eq + 1);
		rc = 0;
		if (sec == SEC_DEVICE && strcmp(key, "name") == 0) {
			rc = config_set_str(&c->name, val);
		} else if (sec == SEC_DEVICE && strcmp(key, "listen") == 0) {
			rc = config_set_str(&c->listen, val);
		} else if (sec == SEC_DEVICE && strcmp(key, "forget_deleted") == 0) {
			if (parse_duration(val, &c->forget_deleted_s) != 0 ||
			    c->forget_deleted_s < CFG_MIN_FORGET_DELETED_S) {
				snprintf(err, errlen,
					 "line %d: forget_deleted must be a duration of at least 60s "
					 "(like 30d or 12h), not %s",
					 lineno, val);
				rc = -EINVAL;
			}
		} else if (sec == SEC_PEER && strcmp(key, "name") == 0) {
			rc = config_set_str(&c->peers[peer_ix].name, val);
		} else if (sec == SEC_PEER && strcmp(key, "addr") == 0) {
			rc = config_peer_add_addr(&c->peers[peer_ix], val);
		} else if (sec == SEC_FOLDER) {
			struct cfg_folder *f = &c->folders[folder_ix];
			if (strcmp(key, "path") == 0) {
				rc = config_set_str(&f->path, val);
			} else if (strcmp(key, "label") == 0) {
				rc = config_set_str(&f->label, val);
			} else if (strcmp(key, "mode") == 0) {
				if (mode_parse(val, &f->mode) != 0) {
					snprintf(err, errlen, "line %d: bad mode %s", lineno, val);
					rc = -EINVAL;
				}
			} else if (strcmp(key, "share") == 0) {
				unsigned char id[32];
				if (sec_devid_parse(val, id) != 0) {
					snprintf(err, errlen, "line %d: bad device ID %s", lineno, val);
					rc = -EINVAL;
				} else {
					rc = config_folder_share(f, id);
				}
			} else {
				snprintf(err, errlen, "line %d: unknown key %s", lineno, key);
				rc = -EINVAL;
			}
		} else {
			snprintf(err, errlen, "line %d: unknown key %s", lineno, key);
			rc = -EINVAL;
		}
		if (rc != 0)
			goto out;
	}
	for (size_t i = 0; i < c->nfolders; i++) {
		if (c->folders[i].path[0] == '\0') {
			snprintf(err, errlen, "folder %s has no path", c->folders[i].id);
			rc = -EINVAL;
			goto out;
		}
	}
	(void)peer;
out:
	fclose(fp);
	if (rc != 0)
		config_release(c);
	return rc;
}

int
config_save(const struct config *c, const char *path)
{
	char idstr[SEC_DEVID_STRLEN + 1];
	struct strbuf sb;
	int rc;

	strbuf_init(&sb);
	strbuf_addf(&sb, "# shoal configuration. The shoal commands rewrite this file; it may also be\n"
			 "# edited by hand: a running agent reloads it within a second.\n\n");
	strbuf_addf(&sb, "[device]\n");
	if (c->name)
		strbuf_addf(&sb, "name = %s\n", c->name);
	if (c->listen)
		strbuf_addf(&sb, "listen = %s\n", c->listen);
	if (c->forget_deleted_s) {
		static const struct { uint64_t secs; char unit; } units[] = {
			{ 86400, 'd' }, { 3600, 'h' }, { 60, 'm' }, { 1, 's' },
		};
		size_t u = 0;
		while (c->forget_deleted_s % units[u].secs != 0)
			u++;
		strbuf_addf(&sb, "forget_deleted = %llu%c\n",
			    (unsigned long long)(c->forget_deleted_s / units[u].secs), units[u].unit);
	}
	for (size_t i = 0; i < c->npeers; i++) {
		const struct cfg_peer *p = &c->peers[i];
		sec_devid_format(p->id, idstr);
		strbuf_addf(&sb, "\n[peer %s]\n", idstr);
		if (p->name)
			strbuf_addf(&sb, "name = %s\n", p->name);
		for (size_t j = 0; j < p->naddrs; j++)
			strbuf_addf(&sb, "addr = %s\n", p->addrs[j]);
	}
	for (size_t i = 0; i < c->nfolders; i++) {
		const struct cfg_folder *f = &c->folders[i];
		strbuf_addf(&sb, "\n[folder %s]\n", f->id);
		strbuf_addf(&sb, "path = %s\n", f->path);
		if (f->label)
			strbuf_addf(&sb, "label = %s\n", f->label);
		strbuf_addf(&sb, "mode = %s\n", mode_name(f->mode));
		for (size_t j = 0; j < f->nshares; j++) {
			sec_devid_format(f->shares[j], idstr);
			strbuf_addf(&sb, "share = %s\n", idstr);
		}
	}
	if (sb.oom) {
		rc = -ENOMEM;
		goto out;
	}
	rc = write_file_atomic(path, sb.buf, sb.len, 0600);
out:
	strbuf_release(&sb);
	return rc;
}
