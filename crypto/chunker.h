/*
 * crypto/chunker.h - content-defined chunking and block hashing.
 *
 * Invariants:
 * - Cut points depend only on the bytes and the average block size: FastCDC
 *   with normalized chunking (level 2) over a fixed gear table, so every device
 *   cuts a file the same way and an insertion moves only nearby blocks.
 * - Block sizes: min = avg/4, max = avg*4; avg is a power of two between
 *   SEC_CHUNK_AVG_MIN and SEC_CHUNK_AVG_MAX and grows with the file size so a
 *   huge file stays at a few thousand blocks.
 * - A block's hash is BLAKE2b-256 of its bytes, unkeyed.
 */
#ifndef SHOAL_CRYPTO_CHUNKER_H
#define SHOAL_CRYPTO_CHUNKER_H

#include <stddef.h>
#include <stdint.h>

#define SEC_CHUNK_AVG_MIN (64u * 1024)
#define SEC_CHUNK_AVG_MAX (1024u * 1024)
#define SEC_CHUNK_MAX_BLOCK (4u * SEC_CHUNK_AVG_MAX) /* largest block any file can have */
#define SEC_BLOCK_HASH_BYTES 32

struct sec_chunker {
	uint32_t min_size, avg_size, max_size;
	uint64_t mask_s, mask_l;
};

/*
 * Chooses the average block size for a file of file_size bytes: the power of
 * two nearest file_size/2048, clamped to [SEC_CHUNK_AVG_MIN, SEC_CHUNK_AVG_MAX].
 * When prev_avg (the size the file was chunked with before, 0 if none) is
 * still within a factor of two of that choice it is kept, so a file keeps its
 * parameters across small size changes.
 */
uint32_t sec_chunker_avg_for_size(uint64_t file_size, uint32_t prev_avg);

/* Sets up c for avg_size. Returns 0 or SEC_EINVAL (not a valid power of two). */
int sec_chunker_init(struct sec_chunker *c, uint32_t avg_size);

/*
 * Returns the length of the block that starts at buf. The caller passes at
 * least c->max_size bytes unless the file ends within them (then len is what
 * is left). The result is in [1, min(len, max_size)] for len > 0, 0 for len 0.
 */
size_t sec_chunker_cut(const struct sec_chunker *c, const unsigned char *buf, size_t len);

/*
 * Returns the 256-entry gear table (static storage, never changes). For tests
 * and for other implementations of the same chunking; see chunker.c for how
 * it is generated.
 */
const uint64_t *sec_chunker_gear_table(void);

/* BLAKE2b-256 of a block. */
void sec_block_hash(const void *data, size_t len, unsigned char out[SEC_BLOCK_HASH_BYTES]);

#endif
