/*
 * tests/bench/compare_crypto.c - one-core throughput of the primitives shoal
 * spends its CPU on, measured with the same library (libsodium) on the same
 * machine as the comparison run (tests/bench/compare.sh):
 *
 *   blake2b-256     crypto_generichash, 64 KiB and 1 MiB messages (shoal's
 *                   block hash; blocks average 64 KiB to 1 MiB)
 *   chacha20-poly1305  crypto_aead_chacha20poly1305_ietf_encrypt, 65,519-byte
 *                   messages (one full Noise transport frame)
 *   aes-256-gcm     crypto_aead_aes256gcm_encrypt, same size, if the CPU has
 *                   AES-NI (libsodium only offers it then)
 *
 * Build: cc -O2 -o compare_crypto compare_crypto.c $(pkg-config --cflags --libs libsodium)
 * Run:   compare_crypto [MiB per pass, default 256]
 * Output: one line per primitive: NAME MESSAGE_BYTES TOTAL_BYTES SECONDS
 * (best of 3 passes over a buffer of random bytes; single thread).
 */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

enum prim { P_BLAKE2B, P_CHACHA, P_AESGCM };

static volatile unsigned char sink;

/* Processes total bytes of buf in msg-byte messages once; returns seconds. */
static double
pass(enum prim p, const unsigned char *buf, size_t total, size_t msg, unsigned char *out)
{
	unsigned char h[32], nonce[12] = {0}, key[32] = {1};
	double t0 = now_s();
	size_t off;

	for (off = 0; off + msg <= total; off += msg) {
		switch (p) {
		case P_BLAKE2B:
			crypto_generichash(h, sizeof h, buf + off, msg, NULL, 0);
			sink ^= h[0];
			break;
		case P_CHACHA:
			nonce[0]++;
			crypto_aead_chacha20poly1305_ietf_encrypt(out, NULL, buf + off, msg, NULL, 0,
								  NULL, nonce, key);
			sink ^= out[0];
			break;
		case P_AESGCM:
			nonce[0]++;
			crypto_aead_aes256gcm_encrypt(out, NULL, buf + off, msg, NULL, 0, NULL, nonce,
						      key);
			sink ^= out[0];
			break;
		}
	}
	return now_s() - t0;
}

static void
bench(const char *name, enum prim p, const unsigned char *buf, size_t total, size_t msg,
      unsigned char *out)
{
	double best = 0;
	size_t done = (total / msg) * msg;
	int i;

	for (i = 0; i < 3; i++) {
		double dt = pass(p, buf, total, msg, out);

		if (i == 0 || dt < best)
			best = dt;
	}
	printf("%s %zu %zu %.6f\n", name, msg, done, best);
	fflush(stdout);
}

int
main(int argc, char **argv)
{
	size_t mib = argc > 1 ? (size_t)strtoul(argv[1], NULL, 10) : 256;
	size_t total = mib << 20, frame = 65535 - 16;
	unsigned char *buf, *out;

	if (mib == 0 || sodium_init() < 0) {
		fprintf(stderr, "compare_crypto: bad size or sodium_init failed\n");
		return 1;
	}
	buf = malloc(total);
	out = malloc((1u << 20) + 64);
	if (!buf || !out) {
		fprintf(stderr, "compare_crypto: out of memory\n");
		return 1;
	}
	randombytes_buf(buf, total);
	bench("blake2b-256", P_BLAKE2B, buf, total, 64u << 10, out);
	bench("blake2b-256", P_BLAKE2B, buf, total, 1u << 20, out);
	bench("chacha20-poly1305", P_CHACHA, buf, total, frame, out);
	if (crypto_aead_aes256gcm_is_available())
		bench("aes-256-gcm", P_AESGCM, buf, total, frame, out);
	else
		printf("aes-256-gcm %zu 0 0 (no AES-NI: unavailable in libsodium)\n", frame);
	free(buf);
	free(out);
	return 0;
}
