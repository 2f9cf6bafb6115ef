/*
 * proto/invite.c - encoding and decoding invite codes.
 */
#include <string.h>

#include "proto/invite.h"

static const char b32[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

uint32_t
proto_crc32(const void *p, size_t n)
{
	const uint8_t *b = p;
	uint32_t c = 0xffffffffu;
	for (size_t i = 0; i < n; i++) {
		c ^= b[i];
		for (int k = 0; k < 8; k++)
			c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
	}
	return c ^ 0xffffffffu;
}

static int
field_ok(const char *s, size_t n, int folder_id)
{
	if (n > PROTO_INVITE_FIELD_MAX)
		return 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c < 0x20 || c == 0x7f)
			return 0;
		if (folder_id && !((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
				   (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
			return 0;
	}
	return !folder_id || (n > 0 && s[0] != '.');
}

int
proto_invite_encode(const struct proto_invite *iv, char *out, size_t cap)
{
	uint8_t raw[1 + 32 + 16 + 8 + 2 * (1 + PROTO_INVITE_FIELD_MAX) + 1 +
		    PROTO_INVITE_ADDRS * (1 + PROTO_INVITE_ADDR_MAX) + 4];
	size_t n = 0, fl = strlen(iv->folder), ll = strlen(iv->label);
	uint32_t crc;

	if (!field_ok(iv->folder, fl, 1) || !field_ok(iv->label, ll, 0) ||
	    iv->naddrs > PROTO_INVITE_ADDRS)
		return PROTO_EMALFORMED;
	raw[n++] = 1;
	memcpy(raw + n, iv->owner, 32);
	n += 32;
	memcpy(raw + n, iv->secret, 16);
	n += 16;
	for (int i = 7; i >= 0; i--)
		raw[n++] = (uint8_t)(iv->expires >> (8 * i));
	raw[n++] = (uint8_t)fl;
	memcpy(raw + n, iv->folder, fl);
	n += fl;
	raw[n++] = (uint8_t)ll;
	memcpy(raw + n, iv->label, ll);
	n += ll;
	raw[n++] = (uint8_t)iv->naddrs;
	for (size_t i = 0; i < iv->naddrs; i++) {
		size_t al = strlen(iv->addrs[i]);
		if (al == 0 || al > PROTO_INVITE_ADDR_MAX || !field_ok(iv->addrs[i], al, 0))
			return PROTO_EMALFORMED;
		raw[n++] = (uint8_t)al;
		memcpy(raw + n, iv->addrs[i], al);
		n += al;
	}
	crc = proto_crc32(raw, n);
	for (int i = 3; i >= 0; i--)
		raw[n++] = (uint8_t)(crc >> (8 * i));

	size_t plen = strlen(PROTO_INVITE_PREFIX), olen = (n * 8 + 4) / 5;
	if (plen + olen + 1 > cap)
		return PROTO_ETOOBIG;
	memcpy(out, PROTO_INVITE_PREFIX, plen);
	uint32_t acc = 0;
	int bits = 0;
	size_t o = plen;
	for (size_t i = 0; i < n; i++) {
		acc = (acc << 8) | raw[i];
		bits += 8;
		while (bits >= 5) {
			out[o++] = b32[(acc >> (bits - 5)) & 31];
			bits -= 5;
		}
	}
	if (bits > 0)
		out[o++] = b32[(acc << (5 - bits)) & 31];
	out[o] = '\0';
	return 0;
}

int
proto_invite_decode(const char *code, struct proto_invite *iv)
{
	uint8_t raw[PROTO_INVITE_CODE_MAX];
	size_t n = 0, plen = strlen(PROTO_INVITE_PREFIX), p;
	uint32_t acc = 0;
	int bits = 0;
	const char *s = code;

	memset(iv, 0, sizeof(*iv));
	while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')
		s++;
	for (p = 0; p < plen; p++) {
		char c = s[p];
		if (c >= 'a' && c <= 'z')
			c = (char)(c - 'a' + 'A');
		if (c != PROTO_INVITE_PREFIX[p])
			return PROTO_EPREFIX;
	}
	for (s += plen; *s; s++) {
		char c = *s;
		const char *d;
		if (c == '-' || c == ' ' || c == '\t' || c == '\n' || c == '\r')
			continue;
		if (c >= 'a' && c <= 'z')
			c = (char)(c - 'a' + 'A');
		d = c ? strchr(b32, c) : NULL;
		if (!d)
			return PROTO_ECHECKSUM; /* a stray character: the code was damaged */
		acc = (acc << 5) | (uint32_t)(d - b32);
		bits += 5;
		if (bits >= 8) {
			if (n == sizeof(raw))
				return PROTO_ETOOBIG;
			raw[n++] = (uint8_t)(acc >> (bits - 8));
			bits -= 8;
		}
	}
	/* One encoding per code: the padding bits of the last character are zero, and no
	 * character is left over. */
	if (bits >= 5 || (acc & ((1u << bits) - 1)) != 0)
		return PROTO_ECHECKSUM;
	if (n < 1 + 32 + 16 + 8 + 1 + 1 + 1 + 4)
		return PROTO_ECHECKSUM;
	uint32_t want = (uint32_t)raw[n - 4] << 24 | (uint32_t)raw[n - 3] << 16 |
			(uint32_t)raw[n - 2] << 8 | raw[n - 1];
	n -= 4;
	if (proto_crc32(raw, n) != want)
		return PROTO_ECHECKSUM;
	if (raw[0] != 1)
		return PROTO_EMALFORMED;

	size_t o = 1;
	memcpy(iv->owner, raw + o, 32);
	o += 32;
	memcpy(iv->secret, raw + o, 16);
	o += 16;
	for (int i = 0; i < 8; i++)
		iv->expires = iv->expires << 8 | raw[o++];
	for (int f = 0; f < 2; f++) {
		char *dst = f == 0 ? iv->folder : iv->label;
		if (o >= n)
			return PROTO_EMALFORMED;
		size_t l = raw[o++];
		if (l > PROTO_INVITE_FIELD_MAX || o + l > n || !field_ok((const char *)raw + o, l, f == 0))
			return PROTO_EMALFORMED;
		memcpy(dst, raw + o, l);
		dst[l] = '\0';
		o += l;
	}
	if (o >= n)
		return PROTO_EMALFORMED;
	iv->naddrs = raw[o++];
	if (iv->naddrs > PROTO_INVITE_ADDRS)
		return PROTO_EMALFORMED;
	for (size_t i = 0; i < iv->naddrs; i++) {
		if (o >= n)
			return PROTO_EMALFORMED;
		size_t l = raw[o++];
		if (l == 0 || l > PROTO_INVITE_ADDR_MAX || o + l > n ||
		    !field_ok((const char *)raw + o, l, 0))
			return PROTO_EMALFORMED;
		memcpy(iv->addrs[i], raw + o, l);
		iv->addrs[i][l] = '\0';
		o += l;
	}
	return o == n ? 0 : PROTO_EMALFORMED;
}
