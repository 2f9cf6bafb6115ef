/*
 * crypto/chunker.c - FastCDC content-defined chunking with normalized
 * chunking (level 2), and block hashing.
 *
 * The gear table is part of the on-disk and on-wire format: two devices cut a
 * file the same way only if they share it, so it must never change. It is the
 * first 256 outputs of splitmix64 (Steele, Lea and Flood, "Fast splittable
 * pseudorandom number generators", 2014) seeded with 0x73686f616c676561
 * (the ASCII bytes "shoalgea", big-endian):
 *
 *	state += 0x9e3779b97f4a7c15;
 *	z = state;
 *	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9;
 *	z = (z ^ (z >> 27)) * 0x94d049bb133111eb;
 *	gear[i] = z ^ (z >> 31);
 *
 * The table is written out below rather than computed at first use, so that
 * threads of the pool can chunk without any set-up; tests/unit/crypto_test.c
 * regenerates it and compares.
 *
 * The rolling fingerprint is fp = (fp << 1) + gear[byte], so bit k of fp
 * depends on the last k + 1 bytes. The masks put their one-bits evenly over
 * bits 16..63 (bit 63 - floor(i * 48 / nbits) for i = 0 .. nbits-1), which
 * makes every cut depend on a window of at least 48 bytes.
 */
#include <sodium.h>

#include "crypto/chunker.h"
#include "crypto/sec.h"

static const uint64_t gear[256] = {
    0xbb7a4f06fe70d32aULL, 0xf2912ec038ae2388ULL, 0xc8c00a96b471bd42ULL, 0x2f40186cdc80e7dfULL,
    0x42b20c4c94ffc120ULL, 0xaf9949321bd0f4f3ULL, 0x03c157dfe6b78bdeULL, 0x79db7c09347652f1ULL,
    0xccc9c56e787c8676ULL, 0x613b20186c5ba581ULL, 0xd7e5b64240fbb8e7ULL, 0xb91a5b0ebf6d3b60ULL,
    0x3aa6beffeff38d06ULL, 0x04c5a8959618cfaaULL, 0x315fe19240e7552eULL, 0x636379c280314f0eULL,
    0xcf1bc9289a793343ULL, 0x4f6f3f9b11d78f03ULL, 0xde840f5bfd924747ULL, 0x5861ace73f304c4fULL,
    0x4beae9a4052f1ed3ULL, 0x94e77754dd86e2a2ULL, 0xdc828a620d3fe16dULL, 0xf1c675c16bfdf2efULL,
    0xc9c40610a8bf78c2ULL, 0x1007ad11de1575ffULL, 0x4f5bb9fa2f6b056fULL, 0x797fd615093e1592ULL,
    0x857f8636e8d95ba2ULL, 0xe6622b3143b4823eULL, 0x3e1f787ca8c9fbaaULL, 0xc43480d3108940f5ULL,
    0x20685c485dadfd9bULL, 0x507a8006a5ba7429ULL, 0xf7192f859bb472a3ULL, 0x3e2f06eea981e041ULL,
    0xdf0affeea70873fdULL, 0xab36d708aa039347ULL, 0x64a84c4c235e1ab6ULL, 0x569d01111a9d1fcfULL,
    0xc0097f7d97afb3a9ULL, 0xc63acfe7d26f3c5cULL, 0x0638f8c82b59219bULL, 0xf5eb9807f04954d1ULL,
    0xcfa792a76c71efe6ULL, 0x036043fa3e965f95ULL, 0x691c14fd9d3276a2ULL, 0x8206e456e94351dcULL,
    0x105cfdead70100b5ULL, 0x9b011ccef9031e71ULL, 0x2d180e3fde65b948ULL, 0xd46d2d19cec0dfedULL,
    0x617bf174dffb8418ULL, 0x783ff3011f8f08bcULL, 0xea36f521b1b5f853ULL, 0xa9065a3b315c603cULL,
    0x71f222c32eab4578ULL, 0x3520f961a26ad948ULL, 0xfcb3a0cf732368a5ULL, 0x4701ecabd2d19722ULL,
    0x7984adaba189cb49ULL, 0xf3da4bbcb8e1f4ccULL, 0x0f62a65b7c043841ULL, 0x8634374d5dbb6ffeULL,
    0xf6097806a9a731bdULL, 0xea94b020b6986ba8ULL, 0x575089bd8922d737ULL, 0x16a64c96aa0955d0ULL,
    0x54750a0a3167dbc8ULL, 0xf0985122a0782fd9ULL, 0xf46f72bb8ce3d3c0ULL, 0xd58ab1b483c442cbULL,
    0x620a81b75445df40ULL, 0xffcbb61112199c0aULL, 0x80852208f7e78a8dULL, 0xe841ff0bf8909377ULL,
    0x907e918f9fdd2dfeULL, 0x368b3726c3f34a39ULL, 0x7f7e882b7b948525ULL, 0xd650f3552eb0cd69ULL,
    0x2b44c751bc374ddeULL, 0xf6cd181b3abb2648ULL, 0x1322e4c2fe6b6826ULL, 0xe7877305e029a19eULL,
    0x159faa494b9c60a7ULL, 0x0261b4257db123b0ULL, 0x6e8fd61890796cb8ULL, 0xe83fcad8375932c8ULL,
    0xdf83b0ffedb8561dULL, 0x32a6dd98867b3abcULL, 0x025787b971d921dfULL, 0xb10e14953bcbc9c8ULL,
    0xc4b7181b2b6d1926ULL, 0x71da9b42d5e15480ULL, 0x2636d24848c2726bULL, 0xbebc30b3be87ff2cULL,
    0xe9d27e113d61b5ffULL, 0xc24b0bf12972a38dULL, 0xc8b53c27d6f5c172ULL, 0x2d63bf88f6ab0088ULL,
    0x39f687449ea02fadULL, 0x8026406e905d0b3bULL, 0xa12fd98609dfb034ULL, 0xbcb9028c6de4147fULL,
    0x2019cf23a5846d68ULL, 0xc5049f325db87265ULL, 0x5778e82b955546a1ULL, 0xdc094602649f2ea1ULL,
    0x62c11ea52ef30b96ULL, 0xaeb4f811e0747c8aULL, 0xaa58e04147b06f7cULL, 0x3fe27b094ca8fd22ULL,
    0xdafa4f57c2897e09ULL, 0xb5fe419110976249ULL, 0x96136c7112614de3ULL, 0xcd8a8a84ce42cec9ULL,
    0x258eca4b39309c35ULL, 0xc4ca1b332c72e730ULL, 0xcefac9db42d338f3ULL, 0xf4157ae18e1d8d7dULL,
    0x98a04c1049be4783ULL, 0x9c3eed9c00f2da4cULL, 0x3588d05a578d080eULL, 0x908a36233c1a152eULL,
    0x6c9031711c05971cULL, 0xa106b80f4b3dfcadULL, 0x858e6c0896c9396dULL, 0xf5de751f4ba1b31dULL,
    0x2712b5b19a968a5bULL, 0x1c65d715976b3da8ULL, 0x4ae4882927ccd847ULL, 0x76beb32152f9c7e4ULL,
    0xb86fb1178a9de29bULL, 0x88a9885f9156c7bfULL, 0x05f3ce8bb32efde4ULL, 0x0dfc2cc0278a4c07ULL,
    0xde47d84b7d2f9fcaULL, 0xa9275b60c4a64d06ULL, 0x548c10b27968b8c3ULL, 0x054b8d9e4dd168f2ULL,
    0x6991b59682cf8d36ULL, 0x1135cf19db7739c1ULL, 0xd92fb9b72f4f7539ULL, 0xb6392a63aed6b8d0ULL,
    0x66fe1dd4e138934aULL, 0xad98302a6a92abcbULL, 0xf1dcf7a2c12ac2eeULL, 0xc591827610933a95ULL,
    0x2c4ab2f017dd02cbULL, 0x1f09d6a58f6f4e45ULL, 0x945d2ac5326e4706ULL, 0x4adb48ec54e7b84cULL,
    0x03cfb06c53b1419eULL, 0x5baf08ad6baf60bdULL, 0xee43c7bf4e02ee01ULL, 0x7f69f07417fe1799ULL,
    0x81c1f1fef68a33b7ULL, 0x4ed49c1d3440a7b4ULL, 0x8840b80a1f19e6c6ULL, 0x2cfc23d97082ec17ULL,
    0x53e017530206bdf1ULL, 0xb3ac957cd2969a3bULL, 0x191b91445013ffa6ULL, 0x83d656ec41c7ab55ULL,
    0xb0e732b7981617d9ULL, 0xbfdfc11437a1a058ULL, 0xb0c2f0817c5daa41ULL, 0xc23a529dd45cc133ULL,
    0x36f2f6ec96a6c0daULL, 0x3acbdbc62be544bdULL, 0xbda664b9551830d3ULL, 0xb4fbe94a5c323592ULL,
    0xf88f833d7bae44acULL, 0xf529a890b61397f3ULL, 0xac72f2172f931aedULL, 0x7cad6fee6e43ab2cULL,
    0x8fd51b73b0a0f641ULL, 0xa95bef3ad86785a8ULL, 0x83c786333658fe47ULL, 0xa1c6d33fb901c33bULL,
    0xef49b0e28332cad6ULL, 0x53e56c8e02d7ebf1ULL, 0xa7db36dc9c436682ULL, 0xbb956c4312cc32d2ULL,
    0x594a5fdbcb205e04ULL, 0x812fbd5053b014caULL, 0xda6434cef076b04aULL, 0x77554218118807beULL,
    0x532fc7829f7d1e2eULL, 0xce5aee1c6fb5464dULL, 0x13695781e5be9f12ULL, 0x68e56bafdb5aef81ULL,
    0xf43e93e15a0507f2ULL, 0xa79ca9fb5a0c34f7ULL, 0x25033267dcd61a2bULL, 0xbd8e265a4aa87441ULL,
    0xa3ae5e284c574c68ULL, 0xf37c266424bd8809ULL, 0x2c215ada26029b1dULL, 0x11c20ed3ec4271a8ULL,
    0x57535f027b705821ULL, 0x2377f940a081d4dbULL, 0x2a62798e1c196424ULL, 0xab3ee24fd7b79447ULL,
    0xc7816ba183d7e99aULL, 0x141d79e7e1f4bb40ULL, 0x990f5e90b0ff78a7ULL, 0x815078ce402fc155ULL,
    0xbca50f7f72837a0eULL, 0xe0d2d2c8be11741aULL, 0xd44be98a0119ae63ULL, 0x8e3f66814ab1afdfULL,
    0xbb6d306ace67ce2dULL, 0x86538a33d3fceadeULL, 0x7d30827d9fe70e09ULL, 0xb4482fda4c6fe401ULL,
    0x273026adb27b6d4aULL, 0xfd16dd59388c7d51ULL, 0xf5a40dd8efc397e1ULL, 0xd68964badd75b225ULL,
    0x86b10f85894faf5aULL, 0xc9742920115bb0b4ULL, 0x12c4f9f0657d920fULL, 0x94ca6aa76f0d42a0ULL,
    0x05a77183cd9f7152ULL, 0xab523fa77f246432ULL, 0x29cac1264c1d0d8cULL, 0x5a64988ad5893c98ULL,
    0x0e3becacf7c551e2ULL, 0xfa9858f2a727c524ULL, 0x6c71b9961aa698d0ULL, 0xeb69485a77fc3c43ULL,
    0x9ac8eec6e2822855ULL, 0x5206bbcb2fd342e9ULL, 0x25c75fef0b36512dULL, 0x676de3bd2f3fe1bbULL,
    0x4778e8f89036d97bULL, 0xe3017e24bb4ec520ULL, 0x5f2d964a5c297f71ULL, 0x96ef9f5880020e93ULL,
    0x3c4d76a8649a3429ULL, 0x2ab1dbdbc81eec4fULL, 0x2a3af220842bc936ULL, 0x982757d109eccc66ULL,
    0x8f3e7ec4a34b4840ULL, 0x1834c4591e332cd6ULL, 0xe22e012dac443e8bULL, 0xcf32613922f7a80bULL,
    0xcbc08c37857580a9ULL, 0xf752afada2877cbaULL, 0x8783cc0e0f01a7deULL, 0x994a78184e8d04d8ULL,
    0xe0d7d3b164d9e32cULL, 0x5d195628ec8833caULL, 0x52373e86dbfab4c9ULL, 0x30cd9fea9fd7531dULL,
};

/* A mask with nbits one-bits spread evenly over bits 16..63. */
static uint64_t
spread_mask(unsigned nbits)
{
	uint64_t m = 0;
	unsigned i;

	for (i = 0; i < nbits; i++)
		m |= UINT64_C(1) << (63 - (i * 48) / nbits);
	return m;
}

static int
is_valid_avg(uint32_t avg)
{
	return avg >= SEC_CHUNK_AVG_MIN && avg <= SEC_CHUNK_AVG_MAX && (avg & (avg - 1)) == 0;
}

uint32_t
sec_chunker_avg_for_size(uint64_t file_size, uint32_t prev_avg)
{
	uint64_t target = file_size / 2048, lo;
	uint32_t choice;

	if (target <= SEC_CHUNK_AVG_MIN) {
		choice = SEC_CHUNK_AVG_MIN;
	} else if (target >= SEC_CHUNK_AVG_MAX) {
		choice = SEC_CHUNK_AVG_MAX;
	} else {
		/* lo <= target < 2 lo; the nearer of the two, ties going down. */
		lo = SEC_CHUNK_AVG_MIN;
		while (lo * 2 <= target)
			lo *= 2;
		choice = (uint32_t)(2 * target > 3 * lo ? 2 * lo : lo);
	}
	/* Hysteresis: keep the previous size while within a factor of two. */
	if (is_valid_avg(prev_avg) && prev_avg >= choice / 2 &&
	    (uint64_t)prev_avg <= 2 * (uint64_t)choice)
		return prev_avg;
	return choice;
}

int
sec_chunker_init(struct sec_chunker *c, uint32_t avg_size)
{
	unsigned bits = 0;

	if (!is_valid_avg(avg_size))
		return SEC_EINVAL;
	while ((UINT32_C(1) << bits) < avg_size)
		bits++;
	c->avg_size = avg_size;
	c->min_size = avg_size / 4;
	c->max_size = avg_size * 4;
	/* Normalized chunking, level 2: harder before avg, easier after it. */
	c->mask_s = spread_mask(bits + 2);
	c->mask_l = spread_mask(bits - 2);
	return 0;
}

size_t
sec_chunker_cut(const struct sec_chunker *c, const unsigned char *buf, size_t len)
{
	/* Locals, so the compiler need not reload them after each byte read. */
	const uint64_t mask_s = c->mask_s, mask_l = c->mask_l;
	size_t i = c->min_size, end = c->max_size, normal = c->avg_size;
	uint64_t fp = 0;

	if (len <= i)
		return len;
	if (end > len)
		end = len;
	if (normal > end)
		normal = end;
	/*
	 * Two bytes per step: fp after both is (fp << 2) + (g0 << 1) + g1, so
	 * the chain that carries fp from step to step is one shift and one add
	 * per two bytes; the check after the first byte hangs off it. The cut
	 * points are exactly those of the byte-at-a-time loop.
	 */
	for (; i + 1 < normal; i += 2) {
		uint64_t g0 = gear[buf[i]], g1 = gear[buf[i + 1]];
		uint64_t fp1 = (fp << 1) + g0;
		fp = (fp << 2) + ((g0 << 1) + g1);
		if (!(fp1 & mask_s))
			return i + 1;
		if (!(fp & mask_s))
			return i + 2;
	}
	for (; i < normal; i++) {
		fp = (fp << 1) + gear[buf[i]];
		if (!(fp & mask_s))
			return i + 1;
	}
	for (; i + 1 < end; i += 2) {
		uint64_t g0 = gear[buf[i]], g1 = gear[buf[i + 1]];
		uint64_t fp1 = (fp << 1) + g0;
		fp = (fp << 2) + ((g0 << 1) + g1);
		if (!(fp1 & mask_l))
			return i + 1;
		if (!(fp & mask_l))
			return i + 2;
	}
	for (; i < end; i++) {
		fp = (fp << 1) + gear[buf[i]];
		if (!(fp & mask_l))
			return i + 1;
	}
	return end;
}

const uint64_t *
sec_chunker_gear_table(void)
{
	return gear;
}

void
sec_block_hash(const void *data, size_t len, unsigned char out[SEC_BLOCK_HASH_BYTES])
{
	crypto_generichash(out, SEC_BLOCK_HASH_BYTES, data, len, NULL, 0);
}
