/*
 * tests/fuzz/fuzz_noise.h - the fixed keys and the genuine handshake that
 * fuzz_handshake.c and make_corpus.c share, so that the seed corpus holds the
 * exact messages the target's handshakes expect.
 *
 * Invariants: everything here is deterministic. Static keys come from fixed
 * Ed25519 seeds as an agent's do (sec_identity_from_seed, X25519 form);
 * ephemeral keys are fixed with sec_handshake_set_ephemeral(); the prologue is
 * the agent's. Side 0 is the initiator, side 1 the responder. sec_init() must
 * have been called first.
 */
#ifndef SHOAL_TESTS_FUZZ_NOISE_H
#define SHOAL_TESTS_FUZZ_NOISE_H

#include <string.h>

#include "crypto/identity.h"
#include "crypto/noise.h"
#include "crypto/sec.h"

#define FUZZ_NSUITES 3

static const unsigned char fuzz_seed[2][32] = {
    {0x49, 0x6e, 0x69, 0x74, 0x69, 0x61, 0x74, 0x6f, 0x72, 0x20, 0x73,
     0x65, 0x65, 0x64, 0x20, 0x31, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11,
     0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11},
    {0x52, 0x65, 0x73, 0x70, 0x6f, 0x6e, 0x64, 0x65, 0x72, 0x20, 0x73,
     0x65, 0x65, 0x64, 0x20, 0x32, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22,
     0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22},
};

static const unsigned char fuzz_ephemeral[2][32] = {
    {0x45, 0x70, 0x68, 0x65, 0x6d, 0x65, 0x72, 0x61, 0x6c, 0x20, 0x69,
     0x6e, 0x69, 0x74, 0x20, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33,
     0x33, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33},
    {0x45, 0x70, 0x68, 0x65, 0x6d, 0x65, 0x72, 0x61, 0x6c, 0x20, 0x72,
     0x65, 0x73, 0x70, 0x20, 0x34, 0x44, 0x44, 0x44, 0x44, 0x44, 0x44,
     0x44, 0x44, 0x44, 0x44, 0x44, 0x44, 0x44, 0x44, 0x44, 0x44},
};

static const char fuzz_prologue[] = "shoal/1"; /* as agent/conn.c */

/* The plaintext of the genuine transport message: a last fragment holding [6] (PING). */
static const unsigned char fuzz_transport_pt[] = {0x01, 0x91, 0x06};

/* Creates the handshake of side (0 initiator, 1 responder) with its fixed keys. */
static inline int
fuzz_hs_new(struct sec_handshake **hs, enum sec_suite suite, int side,
	    const struct sec_identity *id)
{
	int rc;

	rc = sec_handshake_new(hs, suite, side == 0, id->x_sk, (const unsigned char *)fuzz_prologue,
			       sizeof(fuzz_prologue) - 1);
	if (rc < 0)
		return rc;
	rc = sec_handshake_set_ephemeral(*hs, fuzz_ephemeral[side]);
	if (rc < 0) {
		sec_handshake_free(*hs);
		*hs = NULL;
	}
	return rc;
}

/* One genuine handshake: its three messages and the four transport ciphers. */
struct fuzz_genuine {
	unsigned char msg[3][512];
	size_t len[3];
	struct sec_cipher *send[2], *recv[2]; /* by side */
};

/*
 * Runs the handshake between ids[0] and ids[1] with the given payloads
 * (message m carries payload[m] of plen[m] bytes, at most 300). Returns 0 or
 * the first error; on success the caller frees the four ciphers.
 */
static inline int
fuzz_genuine_run(struct fuzz_genuine *g, enum sec_suite suite, const struct sec_identity ids[2],
		 const unsigned char *const payload[3], const size_t plen[3])
{
	struct sec_handshake *hs[2] = {NULL, NULL};
	unsigned char pt[512];
	size_t n;
	int rc, m, side;

	memset(g, 0, sizeof(*g));
	for (side = 0; side < 2; side++) {
		rc = fuzz_hs_new(&hs[side], suite, side, &ids[side]);
		if (rc < 0)
			goto out;
	}
	for (m = 0; m < 3; m++) {
		side = m % 2;
		rc = sec_handshake_write(hs[side], payload[m], plen[m], g->msg[m],
					 sizeof(g->msg[m]), &g->len[m]);
		if (rc < 0)
			goto out;
		rc = sec_handshake_read(hs[!side], g->msg[m], g->len[m], pt, sizeof(pt), &n);
		if (rc < 0)
			goto out;
	}
	for (side = 0; side < 2; side++) {
		rc = sec_handshake_split(hs[side], &g->send[side], &g->recv[side]);
		if (rc < 0)
			goto out;
	}
out:
	sec_handshake_free(hs[0]);
	sec_handshake_free(hs[1]);
	if (rc < 0) {
		for (side = 0; side < 2; side++) {
			sec_cipher_free(g->send[side]);
			sec_cipher_free(g->recv[side]);
			g->send[side] = g->recv[side] = NULL;
		}
	}
	return rc;
}

#endif
