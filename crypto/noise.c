/*
 * crypto/noise.c - Noise XX (revision 34) over X25519, with ChaChaPoly or
 * AESGCM and BLAKE2b or SHA512, and the transport CipherStates it splits into.
 *
 * The functions below follow the specification's objects: a CipherState
 * (k, n), a SymmetricState (ck, h and a CipherState) and a HandshakeState
 * (s, e, rs, re). HMAC is RFC 2104 over the suite's hash (BLOCKLEN 128,
 * HASHLEN 64 for both BLAKE2b and SHA512), and HKDF is that of section 4.3.
 * Everything secret lives in sodium_malloc() memory and is wiped on free;
 * stack temporaries holding key material are wiped before returning.
 */
#include <string.h>

#include <sodium.h>

#include "crypto/noise.h"
#include "crypto/sec.h"

#define HASHLEN 64
#define BLOCKLEN 128
#define DHLEN 32

enum hs_step {
	HS_MSG1 = 0, /* -> e */
	HS_MSG2,     /* <- e, ee, s, es */
	HS_MSG3,     /* -> s, se */
	HS_DONE,     /* all three processed; Split() may be called */
	HS_SPLIT,    /* Split() done; ck and k are wiped */
	HS_FAILED,   /* an error happened; the handshake is unusable */
};

struct cipher_state {
	unsigned char k[SEC_KEY_BYTES];
	uint64_t n;
	int has_k;
};

struct sec_cipher {
	enum sec_suite suite;
	struct cipher_state cs;
};

struct sec_handshake {
	enum sec_suite suite;
	int initiator;
	enum hs_step step;
	int e_set; /* e has been fixed by set_ephemeral() or generated */
	int rs_known;
	unsigned char ck[HASHLEN], h[HASHLEN];
	struct cipher_state cs;
	unsigned char s_priv[DHLEN], s_pub[DHLEN];
	unsigned char e_priv[DHLEN], e_pub[DHLEN];
	unsigned char rs[DHLEN], re[DHLEN];
};

struct hash_state {
	enum sec_suite suite;
	union {
		crypto_generichash_blake2b_state b2;
		crypto_hash_sha512_state sha;
	} u;
};

/*
 * Canonical encodings of the X25519 points of small order (after the
 * non-canonical ones are refused): 0, 1, two points of order 8, and p - 1.
 * Any scalar multiplied with one of them yields the all-zero secret.
 */
static const unsigned char small_order[][DHLEN] = {
    {0},
    {1},
    {0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3,
     0xfa, 0xf1, 0x9f, 0xc4, 0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32,
     0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49, 0xb8, 0x00},
    {0x5f, 0x9c, 0x95, 0xbc, 0xa3, 0x50, 0x8c, 0x24, 0xb1, 0xd0, 0xb1,
     0x55, 0x9c, 0x83, 0xef, 0x5b, 0x04, 0x44, 0x5c, 0xc4, 0x58, 0x1c,
     0x8e, 0x86, 0xd8, 0x22, 0x4e, 0xdd, 0xd0, 0x9f, 0x11, 0x57},
    {0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
     0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
     0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f},
};

static const char *const protocol_names[] = {
    [SEC_SUITE_CHACHAPOLY_BLAKE2B] = "Noise_XX_25519_ChaChaPoly_BLAKE2b",
    [SEC_SUITE_CHACHAPOLY_SHA512] = "Noise_XX_25519_ChaChaPoly_SHA512",
    [SEC_SUITE_AESGCM_SHA512] = "Noise_XX_25519_AESGCM_SHA512",
};

/* Hash functions: HASH() and the incremental form HMAC needs. */

static void
hash_init(struct hash_state *st, enum sec_suite suite)
{
	st->suite = suite;
	if (suite == SEC_SUITE_CHACHAPOLY_BLAKE2B)
		crypto_generichash_blake2b_init(&st->u.b2, NULL, 0, HASHLEN);
	else
		crypto_hash_sha512_init(&st->u.sha);
}

static void
hash_update(struct hash_state *st, const unsigned char *p, size_t len)
{
	if (st->suite == SEC_SUITE_CHACHAPOLY_BLAKE2B)
		crypto_generichash_blake2b_update(&st->u.b2, p, len);
	else
		crypto_hash_sha512_update(&st->u.sha, p, len);
}

static void
hash_final(struct hash_state *st, unsigned char out[HASHLEN])
{
	if (st->suite == SEC_SUITE_CHACHAPOLY_BLAKE2B)
		crypto_generichash_blake2b_final(&st->u.b2, out, HASHLEN);
	else
		crypto_hash_sha512_final(&st->u.sha, out);
	sodium_memzero(st, sizeof(*st));
}

/*
 * HMAC-HASH(key, a || b) after RFC 2104: H((K ^ opad) || H((K ^ ipad) || data))
 * with K padded with zeros to BLOCKLEN (or first hashed if longer).
 */
static void
hmac(enum sec_suite suite, const unsigned char *key, size_t key_len, const unsigned char *a,
     size_t a_len, const unsigned char *b, size_t b_len, unsigned char out[HASHLEN])
{
	unsigned char k[BLOCKLEN], pad[BLOCKLEN], inner[HASHLEN];
	struct hash_state st;
	size_t i;

	memset(k, 0, sizeof(k));
	if (key_len > BLOCKLEN) {
		hash_init(&st, suite);
		hash_update(&st, key, key_len);
		hash_final(&st, k);
	} else {
		memcpy(k, key, key_len);
	}

	for (i = 0; i < BLOCKLEN; i++)
		pad[i] = k[i] ^ 0x36;
	hash_init(&st, suite);
	hash_update(&st, pad, BLOCKLEN);
	hash_update(&st, a, a_len);
	hash_update(&st, b, b_len);
	hash_final(&st, inner);

	for (i = 0; i < BLOCKLEN; i++)
		pad[i] = k[i] ^ 0x5c;
	hash_init(&st, suite);
	hash_update(&st, pad, BLOCKLEN);
	hash_update(&st, inner, HASHLEN);
	hash_final(&st, out);

	sodium_memzero(k, sizeof(k));
	sodium_memzero(pad, sizeof(pad));
	sodium_memzero(inner, sizeof(inner));
}

/*
 * HKDF(chaining_key, input_key_material, num_outputs) of section 4.3, with
 * two outputs (XX never needs a third).
 */
static void
hkdf2(enum sec_suite suite, const unsigned char ck[HASHLEN], const unsigned char *ikm,
      size_t ikm_len, unsigned char out1[HASHLEN], unsigned char out2[HASHLEN])
{
	static const unsigned char one = 0x01, two = 0x02;
	unsigned char temp_key[HASHLEN];

	hmac(suite, ck, HASHLEN, ikm, ikm_len, NULL, 0, temp_key);
	hmac(suite, temp_key, HASHLEN, &one, 1, NULL, 0, out1);
	hmac(suite, temp_key, HASHLEN, out1, HASHLEN, &two, 1, out2);
	sodium_memzero(temp_key, sizeof(temp_key));
}

/* CipherState */

static void
nonce_bytes(enum sec_suite suite, uint64_t n, unsigned char nonce[12])
{
	int i;

	memset(nonce, 0, 12);
	if (suite == SEC_SUITE_AESGCM_SHA512) {
		/* AESGCM: 32 zero bits, then the counter big-endian. */
		for (i = 0; i < 8; i++)
			nonce[4 + i] = (unsigned char)(n >> (56 - 8 * i));
	} else {
		/* ChaChaPoly: 32 zero bits, then the counter little-endian. */
		for (i = 0; i < 8; i++)
			nonce[4 + i] = (unsigned char)(n >> (8 * i));
	}
}

/* EncryptWithAd(ad, plaintext); out holds len + SEC_TAG_BYTES bytes. */
static int
cs_encrypt(enum sec_suite suite, struct cipher_state *cs, const unsigned char *ad, size_t ad_len,
	   const unsigned char *pt, size_t len, unsigned char *out)
{
	unsigned char nonce[12];

	/* The nonce 2^64-1 is reserved; refuse to wrap. */
	if (cs->n == UINT64_MAX)
		return SEC_ENONCE;
	nonce_bytes(suite, cs->n, nonce);
	if (suite == SEC_SUITE_AESGCM_SHA512)
		crypto_aead_aes256gcm_encrypt(out, NULL, pt, len, ad, ad_len, NULL, nonce, cs->k);
	else
		crypto_aead_chacha20poly1305_ietf_encrypt(out, NULL, pt, len, ad, ad_len, NULL,
							  nonce, cs->k);
	cs->n++;
	return 0;
}

/* DecryptWithAd(ad, ciphertext); out holds len - SEC_TAG_BYTES bytes. */
static int
cs_decrypt(enum sec_suite suite, struct cipher_state *cs, const unsigned char *ad, size_t ad_len,
	   const unsigned char *ct, size_t len, unsigned char *out)
{
	unsigned char nonce[12];
	int r;

	if (len < SEC_TAG_BYTES)
		return SEC_EINVAL;
	if (cs->n == UINT64_MAX)
		return SEC_ENONCE;
	nonce_bytes(suite, cs->n, nonce);
	if (suite == SEC_SUITE_AESGCM_SHA512)
		r = crypto_aead_aes256gcm_decrypt(out, NULL, NULL, ct, len, ad, ad_len, nonce,
						  cs->k);
	else
		r = crypto_aead_chacha20poly1305_ietf_decrypt(out, NULL, NULL, ct, len, ad, ad_len,
							      nonce, cs->k);
	if (r != 0)
		return SEC_EDECRYPT;
	cs->n++;
	return 0;
}

/* SymmetricState */

/* MixHash(data): h = HASH(h || data). */
static void
mix_hash(struct sec_handshake *hs, const unsigned char *data, size_t len)
{
	struct hash_state st;

	hash_init(&st, hs->suite);
	hash_update(&st, hs->h, HASHLEN);
	hash_update(&st, data, len);
	hash_final(&st, hs->h);
}

/* MixKey(ikm): ck, temp_k = HKDF(ck, ikm, 2); InitializeKey(temp_k[:32]). */
static void
mix_key(struct sec_handshake *hs, const unsigned char *ikm, size_t len)
{
	unsigned char temp_k[HASHLEN];

	hkdf2(hs->suite, hs->ck, ikm, len, hs->ck, temp_k);
	memcpy(hs->cs.k, temp_k, SEC_KEY_BYTES);
	hs->cs.n = 0;
	hs->cs.has_k = 1;
	sodium_memzero(temp_k, sizeof(temp_k));
}

/* EncryptAndHash(plaintext): out gets len (+ SEC_TAG_BYTES once a key is set). */
static int
encrypt_and_hash(struct sec_handshake *hs, const unsigned char *pt, size_t len, unsigned char *out,
		 size_t *out_len)
{
	int rc;

	if (!hs->cs.has_k) {
		if (len > 0)
			memmove(out, pt, len);
		*out_len = len;
	} else {
		rc = cs_encrypt(hs->suite, &hs->cs, hs->h, HASHLEN, pt, len, out);
		if (rc < 0)
			return rc;
		*out_len = len + SEC_TAG_BYTES;
	}
	mix_hash(hs, out, *out_len);
	return 0;
}

/* DecryptAndHash(ciphertext): h is mixed with the ciphertext, not the output. */
static int
decrypt_and_hash(struct sec_handshake *hs, const unsigned char *ct, size_t len, unsigned char *out,
		 size_t *out_len)
{
	int rc;

	if (!hs->cs.has_k) {
		if (len > 0)
			memmove(out, ct, len);
		*out_len = len;
	} else {
		rc = cs_decrypt(hs->suite, &hs->cs, hs->h, HASHLEN, ct, len, out);
		if (rc < 0)
			return rc;
		*out_len = len - SEC_TAG_BYTES;
	}
	mix_hash(hs, ct, len);
	return 0;
}

/* X25519 */

/*
 * Refuses a received public key that is non-canonical (bit 255 set, or a
 * value at or above p = 2^255 - 19) or of small order.
 */
static int
check_public(const unsigned char pk[DHLEN])
{
	size_t i;
	int below_p = 0;

	if (pk[31] & 0x80)
		return SEC_EKEY;
	/* The value is at least p iff bytes 31..1 are 7f ff .. ff and byte 0 >= 0xed. */
	if (pk[31] != 0x7f || pk[0] < 0xed)
		below_p = 1;
	for (i = 1; i < 31 && !below_p; i++)
		if (pk[i] != 0xff)
			below_p = 1;
	if (!below_p)
		return SEC_EKEY;
	for (i = 0; i < sizeof(small_order) / sizeof(small_order[0]); i++)
		if (memcmp(pk, small_order[i], DHLEN) == 0)
			return SEC_EKEY;
	return 0;
}

/* DH(priv, pub) mixed into the key: MixKey(DH(priv, pub)). */
static int
mix_dh(struct sec_handshake *hs, const unsigned char priv[DHLEN], const unsigned char pub[DHLEN])
{
	unsigned char shared[DHLEN];
	int rc;

	/* crypto_scalarmult() fails on low-order points (all-zero output). */
	if (crypto_scalarmult(shared, priv, pub) != 0) {
		rc = SEC_EKEY;
		goto out;
	}
	mix_key(hs, shared, DHLEN);
	rc = 0;
out:
	sodium_memzero(shared, sizeof(shared));
	return rc;
}

/* HandshakeState */

int
sec_handshake_new(struct sec_handshake **out, enum sec_suite suite, int initiator,
		  const unsigned char s_priv[32], const unsigned char *prologue,
		  size_t prologue_len)
{
	struct sec_handshake *hs = NULL;
	const char *name;
	size_t name_len;
	int rc;

	*out = NULL;
	if (suite != SEC_SUITE_CHACHAPOLY_BLAKE2B && suite != SEC_SUITE_CHACHAPOLY_SHA512 &&
	    suite != SEC_SUITE_AESGCM_SHA512) {
		rc = SEC_EINVAL;
		goto out;
	}
	if (!s_priv || (prologue_len > 0 && !prologue)) {
		rc = SEC_EINVAL;
		goto out;
	}
	if (suite == SEC_SUITE_AESGCM_SHA512 && !crypto_aead_aes256gcm_is_available()) {
		rc = SEC_EUNAVAIL;
		goto out;
	}
	hs = sodium_malloc(sizeof(*hs));
	if (!hs) {
		rc = SEC_ENOMEM;
		goto out;
	}
	memset(hs, 0, sizeof(*hs));
	hs->suite = suite;
	hs->initiator = initiator ? 1 : 0;
	hs->step = HS_MSG1;
	memcpy(hs->s_priv, s_priv, DHLEN);
	if (crypto_scalarmult_base(hs->s_pub, hs->s_priv) != 0) {
		rc = SEC_EKEY;
		goto out;
	}

	/* InitializeSymmetric(protocol_name) */
	name = protocol_names[suite];
	name_len = strlen(name);
	if (name_len <= HASHLEN) {
		memcpy(hs->h, name, name_len); /* padded with zeros by the memset */
	} else {
		struct hash_state st;
		hash_init(&st, suite);
		hash_update(&st, (const unsigned char *)name, name_len);
		hash_final(&st, hs->h);
	}
	memcpy(hs->ck, hs->h, HASHLEN);

	/* MixHash(prologue); XX has no pre-messages. */
	mix_hash(hs, prologue, prologue_len);

	*out = hs;
	hs = NULL;
	rc = 0;
out:
	sec_handshake_free(hs);
	return rc;
}

int
sec_handshake_set_ephemeral(struct sec_handshake *hs, const unsigned char e_priv[32])
{
	if (hs->step >= HS_DONE || hs->e_set)
		return SEC_ESTATE;
	memcpy(hs->e_priv, e_priv, DHLEN);
	if (crypto_scalarmult_base(hs->e_pub, hs->e_priv) != 0)
		return SEC_EKEY;
	hs->e_set = 1;
	return 0;
}

/* Whether this side writes the message the handshake is at. */
static int
my_turn_to_write(const struct sec_handshake *hs)
{
	int initiator_writes = hs->step == HS_MSG1 || hs->step == HS_MSG3;

	return hs->step < HS_DONE && initiator_writes == hs->initiator;
}

static int
write_e(struct sec_handshake *hs, unsigned char *out, size_t *off)
{
	if (!hs->e_set) {
		randombytes_buf(hs->e_priv, DHLEN);
		if (crypto_scalarmult_base(hs->e_pub, hs->e_priv) != 0)
			return SEC_EKEY;
		hs->e_set = 1;
	}
	memcpy(out + *off, hs->e_pub, DHLEN);
	*off += DHLEN;
	mix_hash(hs, hs->e_pub, DHLEN);
	return 0;
}

int
sec_handshake_write(struct sec_handshake *hs, const unsigned char *payload, size_t payload_len,
		    unsigned char *out, size_t out_cap, size_t *out_len)
{
	size_t need = 0, off = 0, n;
	int rc;

	*out_len = 0;
	if (!my_turn_to_write(hs)) {
		rc = SEC_ESTATE;
		goto out;
	}
	if (payload_len > 0 && !payload) {
		rc = SEC_EINVAL;
		goto out;
	}

	/* Every message length is known before anything is mixed in. */
	switch (hs->step) {
	case HS_MSG1:
		need = DHLEN + payload_len;
		break;
	case HS_MSG2:
		need = DHLEN + DHLEN + SEC_TAG_BYTES + payload_len + SEC_TAG_BYTES;
		break;
	default:
		need = DHLEN + SEC_TAG_BYTES + payload_len + SEC_TAG_BYTES;
		break;
	}
	if (payload_len > SEC_NOISE_MAX_MSG || need > SEC_NOISE_MAX_MSG || need > out_cap) {
		rc = SEC_ETOOBIG;
		goto out;
	}

	switch (hs->step) {
	case HS_MSG1:
		/* e */
		rc = write_e(hs, out, &off);
		if (rc < 0)
			goto out;
		break;
	case HS_MSG2:
		/* e */
		rc = write_e(hs, out, &off);
		if (rc < 0)
			goto out;
		/* ee */
		rc = mix_dh(hs, hs->e_priv, hs->re);
		if (rc < 0)
			goto out;
		/* s */
		rc = encrypt_and_hash(hs, hs->s_pub, DHLEN, out + off, &n);
		if (rc < 0)
			goto out;
		off += n;
		/* es */
		rc = mix_dh(hs, hs->s_priv, hs->re);
		if (rc < 0)
			goto out;
		break;
	default:
		/* s */
		rc = encrypt_and_hash(hs, hs->s_pub, DHLEN, out + off, &n);
		if (rc < 0)
			goto out;
		off += n;
		/* se */
		rc = mix_dh(hs, hs->s_priv, hs->re);
		if (rc < 0)
			goto out;
		break;
	}

	/* payload */
	rc = encrypt_and_hash(hs, payload, payload_len, out + off, &n);
	if (rc < 0)
		goto out;
	off += n;
	*out_len = off;
	hs->step++;
out:
	if (rc < 0 && hs->step < HS_DONE)
		hs->step = HS_FAILED;
	if (rc < 0) {
		if (out_cap > 0)
			sodium_memzero(out, out_cap < need ? out_cap : need);
	}
	return rc;
}

static int
read_re(struct sec_handshake *hs, const unsigned char *msg, size_t *off)
{
	int rc;

	memcpy(hs->re, msg + *off, DHLEN);
	*off += DHLEN;
	rc = check_public(hs->re);
	if (rc < 0)
		return rc;
	mix_hash(hs, hs->re, DHLEN);
	return 0;
}

static int
read_rs(struct sec_handshake *hs, const unsigned char *msg, size_t *off)
{
	size_t n;
	int rc;

	rc = decrypt_and_hash(hs, msg + *off, DHLEN + SEC_TAG_BYTES, hs->rs, &n);
	if (rc < 0)
		return rc;
	*off += DHLEN + SEC_TAG_BYTES;
	return check_public(hs->rs);
}

int
sec_handshake_read(struct sec_handshake *hs, const unsigned char *msg, size_t msg_len,
		   unsigned char *payload, size_t payload_cap, size_t *payload_len)
{
	size_t min_len, off = 0, rest = 0, n;
	int rc;

	*payload_len = 0;
	if (hs->step >= HS_DONE || my_turn_to_write(hs)) {
		rc = SEC_ESTATE;
		goto out;
	}

	switch (hs->step) {
	case HS_MSG1:
		min_len = DHLEN;
		break;
	case HS_MSG2:
		min_len = DHLEN + DHLEN + SEC_TAG_BYTES + SEC_TAG_BYTES;
		break;
	default:
		min_len = DHLEN + SEC_TAG_BYTES + SEC_TAG_BYTES;
		break;
	}
	if (msg_len > SEC_NOISE_MAX_MSG) {
		rc = SEC_ETOOBIG;
		goto out;
	}
	if (msg_len < min_len || !msg) {
		rc = SEC_EINVAL;
		goto out;
	}
	/* min_len counts the payload's tag, if any: rest is the plaintext. */
	rest = msg_len - min_len;
	if (rest > payload_cap || (rest > 0 && !payload)) {
		rc = SEC_ETOOBIG;
		goto out;
	}

	switch (hs->step) {
	case HS_MSG1:
		/* e */
		rc = read_re(hs, msg, &off);
		if (rc < 0)
			goto out;
		break;
	case HS_MSG2:
		/* e */
		rc = read_re(hs, msg, &off);
		if (rc < 0)
			goto out;
		/* ee */
		rc = mix_dh(hs, hs->e_priv, hs->re);
		if (rc < 0)
			goto out;
		/* s */
		rc = read_rs(hs, msg, &off);
		if (rc < 0)
			goto out;
		/* es */
		rc = mix_dh(hs, hs->e_priv, hs->rs);
		if (rc < 0)
			goto out;
		break;
	default:
		/* s */
		rc = read_rs(hs, msg, &off);
		if (rc < 0)
			goto out;
		/* se */
		rc = mix_dh(hs, hs->e_priv, hs->rs);
		if (rc < 0)
			goto out;
		break;
	}

	/* payload */
	rc = decrypt_and_hash(hs, msg + off, msg_len - off, payload, &n);
	if (rc < 0)
		goto out;
	*payload_len = n;
	if (hs->step != HS_MSG1)
		hs->rs_known = 1;
	hs->step++;
out:
	if (rc < 0 && hs->step < HS_DONE)
		hs->step = HS_FAILED;
	if (rc < 0) {
		if (payload_cap > 0 && payload)
			sodium_memzero(payload, payload_cap < rest ? payload_cap : rest);
	}
	return rc;
}

int
sec_handshake_remote_static(const struct sec_handshake *hs, unsigned char rs[32])
{
	if (!hs->rs_known || hs->step == HS_FAILED)
		return SEC_ESTATE;
	memcpy(rs, hs->rs, DHLEN);
	return 0;
}

int
sec_handshake_done(const struct sec_handshake *hs)
{
	return hs->step == HS_DONE || hs->step == HS_SPLIT;
}

int
sec_handshake_hash(const struct sec_handshake *hs, unsigned char h_out[SEC_HASH_MAX], size_t *len)
{
	if (!sec_handshake_done(hs))
		return SEC_ESTATE;
	memcpy(h_out, hs->h, HASHLEN);
	*len = HASHLEN;
	return 0;
}

static struct sec_cipher *
cipher_new(enum sec_suite suite, const unsigned char k[SEC_KEY_BYTES])
{
	struct sec_cipher *c = sodium_malloc(sizeof(*c));

	if (!c)
		return NULL;
	memset(c, 0, sizeof(*c));
	c->suite = suite;
	memcpy(c->cs.k, k, SEC_KEY_BYTES);
	c->cs.has_k = 1;
	return c;
}

int
sec_handshake_split(struct sec_handshake *hs, struct sec_cipher **send, struct sec_cipher **recv)
{
	unsigned char temp_k1[HASHLEN], temp_k2[HASHLEN];
	struct sec_cipher *c1 = NULL, *c2 = NULL;
	int rc;

	*send = NULL;
	*recv = NULL;
	if (hs->step != HS_DONE)
		return SEC_ESTATE;

	/* temp_k1, temp_k2 = HKDF(ck, zerolen, 2), each truncated to 32 bytes. */
	hkdf2(hs->suite, hs->ck, NULL, 0, temp_k1, temp_k2);
	c1 = cipher_new(hs->suite, temp_k1);
	c2 = cipher_new(hs->suite, temp_k2);
	if (!c1 || !c2) {
		rc = SEC_ENOMEM;
		goto out;
	}
	/* The initiator sends with the first CipherState, the responder with the second. */
	*send = hs->initiator ? c1 : c2;
	*recv = hs->initiator ? c2 : c1;
	c1 = c2 = NULL;
	/* Split() happens once: the keys it came from are no longer needed. */
	sodium_memzero(hs->ck, sizeof(hs->ck));
	sodium_memzero(&hs->cs, sizeof(hs->cs));
	sodium_memzero(hs->e_priv, sizeof(hs->e_priv));
	hs->step = HS_SPLIT;
	rc = 0;
out:
	sec_cipher_free(c1);
	sec_cipher_free(c2);
	sodium_memzero(temp_k1, sizeof(temp_k1));
	sodium_memzero(temp_k2, sizeof(temp_k2));
	return rc;
}

void
sec_handshake_free(struct sec_handshake *hs)
{
	if (!hs)
		return;
	sodium_memzero(hs, sizeof(*hs));
	sodium_free(hs);
}

/* Transport */

int
sec_cipher_seal(struct sec_cipher *c, const unsigned char *pt, size_t len, unsigned char *out)
{
	if (len > SEC_NOISE_MAX_MSG - SEC_TAG_BYTES)
		return SEC_ETOOBIG;
	/* Transport messages use empty associated data. */
	return cs_encrypt(c->suite, &c->cs, NULL, 0, pt, len, out);
}

int
sec_cipher_open(struct sec_cipher *c, const unsigned char *ct, size_t len, unsigned char *out)
{
	if (len > SEC_NOISE_MAX_MSG)
		return SEC_ETOOBIG;
	return cs_decrypt(c->suite, &c->cs, NULL, 0, ct, len, out);
}

uint64_t
sec_cipher_nonce(const struct sec_cipher *c)
{
	return c->cs.n;
}

void
sec_cipher_set_nonce(struct sec_cipher *c, uint64_t n)
{
	c->cs.n = n;
}

void
sec_cipher_free(struct sec_cipher *c)
{
	if (!c)
		return;
	sodium_memzero(c, sizeof(*c));
	sodium_free(c);
}
