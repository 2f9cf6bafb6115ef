/*
 * proto/msg.h - the messages peers exchange, and their msgpack encoding.
 *
 * Every message is one msgpack array whose first element is the message type
 * (a positive integer). Decoders accept trailing elements they do not know
 * (for later versions) but nothing missing. docs/protocol.md lists the fields.
 *
 * Ownership: proto_msg_decode() makes the byte fields (struct proto_bytes)
 * point into the decoded buffer and allocates the arrays (folders, files,
 * blocks, version); proto_msg_release() frees the arrays. The buffer must
 * stay valid and unchanged until the message is released.
 */
#ifndef SHOAL_PROTO_MSG_H
#define SHOAL_PROTO_MSG_H

#include <stddef.h>
#include <stdint.h>

#include "proto/proto.h"

enum proto_type {
	PROTO_HELLO = 1,
	PROTO_INDEX = 2,        /* a batch of the full index */
	PROTO_INDEX_UPDATE = 3, /* a batch of changes after the last index */
	PROTO_REQUEST = 4,
	PROTO_RESPONSE = 5,
	PROTO_PING = 6,
	PROTO_CLOSE = 7,
	PROTO_JOIN = 8,         /* an invited device claims its invite (instead of HELLO) */
	PROTO_JOIN_RESULT = 9,  /* the owner's answer; the connection then closes */
};

struct proto_bytes {
	const uint8_t *p;
	size_t len;
};

struct proto_counter { /* one version vector entry */
	uint64_t id;    /* device short ID (sec_devid_short) */
	uint64_t value;
};

struct proto_block { /* blocks follow each other: offset = sum of earlier sizes */
	uint8_t hash[32];
	uint32_t size;
};

enum proto_ftype { PROTO_FILE = 0, PROTO_DIR = 1, PROTO_SYMLINK = 2 };

#define PROTO_FLAG_DELETED 0x1u /* a tombstone: the entry was removed */
#define PROTO_FLAG_INVALID 0x2u /* the owner cannot serve this version */

struct proto_file {
	struct proto_bytes name; /* checked with proto_path_check() */
	uint32_t type;           /* enum proto_ftype */
	uint32_t flags;          /* PROTO_FLAG_* */
	uint32_t mode;           /* permission bits, at most 07777 */
	uint64_t size;           /* bytes; equals the sum of block sizes for a file */
	int64_t mtime_s;
	uint32_t mtime_ns;       /* below 1e9 */
	uint64_t sequence;       /* the announcing device's sequence number, >= 1 */
	uint32_t block_size;     /* the average block size the file was cut with */
	struct proto_bytes target; /* symlink target, empty otherwise */
	size_t nversion;
	struct proto_counter *version;
	size_t nblocks;
	struct proto_block *blocks;
};

#define PROTO_FOLDER_SEND 0x1u    /* the sender announces its changes for this folder */
#define PROTO_FOLDER_RECEIVE 0x2u /* the sender accepts changes for this folder */

struct proto_folder {
	struct proto_bytes id, label;
	uint32_t flags;          /* PROTO_FOLDER_*: informative, roles come from config */
	uint64_t index_id;       /* the sender's own index of this folder */
	uint64_t max_seq;        /* the sender's highest sequence in that index */
	uint64_t peer_index_id;  /* the receiver's index id the sender holds, 0 if none */
	uint64_t peer_max_seq;   /* highest sequence of the receiver's index it holds */
};

struct proto_hello {
	struct proto_bytes device_name, client_name, client_version;
	size_t nfolders;
	struct proto_folder *folders;
};

struct proto_index { /* PROTO_INDEX and PROTO_INDEX_UPDATE */
	struct proto_bytes folder;
	uint64_t index_id;
	uint32_t last;           /* 1 on the final batch of a full index */
	size_t nfiles;
	struct proto_file *files;
};

struct proto_request {
	uint32_t id;
	struct proto_bytes folder, name;
	uint64_t offset;
	uint32_t size;           /* 1..PROTO_BLOCK_MAX */
	uint8_t hash[32];
};

enum proto_rcode {
	PROTO_R_OK = 0,
	PROTO_R_NOTFOUND = 1,    /* no such file or block at that offset */
	PROTO_R_CHANGED = 2,     /* the data no longer matches the hash */
	PROTO_R_DENIED = 3,      /* folder not shared with the requester */
	PROTO_R_ERROR = 4,
};

struct proto_response {
	uint32_t id;
	uint32_t code;           /* enum proto_rcode */
	struct proto_bytes data;
};

struct proto_close {
	struct proto_bytes reason;
};

#define PROTO_INVITE_SECRET 16

struct proto_join {
	struct proto_bytes folder;      /* the folder the invite is for */
	struct proto_bytes secret;      /* PROTO_INVITE_SECRET bytes from the invite code */
	struct proto_bytes device_name; /* what the owner calls the new member */
};

enum proto_jcode {
	PROTO_J_OK = 0,      /* accepted: the member is added and the folder shared */
	PROTO_J_WRONG = 1,   /* no such invite (wrong secret, revoked, other folder) */
	PROTO_J_EXPIRED = 2,
	PROTO_J_USED = 3,    /* no uses left */
	PROTO_J_ERROR = 4,   /* the owner could not record it */
};

struct proto_join_result {
	uint32_t code;       /* enum proto_jcode */
	struct proto_bytes message;
};

struct proto_msg {
	enum proto_type type;
	union {
		struct proto_hello hello;
		struct proto_index index;
		struct proto_request request;
		struct proto_response response;
		struct proto_close close;
		struct proto_join join;
		struct proto_join_result join_result;
	} u;
	void *alloc; /* private: the arrays to free */
};

/*
 * Decodes one message: buf[0..len) must hold exactly one msgpack array.
 * msg need not be initialised. Returns 0, or
 * - PROTO_ETYPE: a field of the wrong msgpack type;
 * - PROTO_ETOOBIG: a str, bin or array longer than its field's limit;
 * - PROTO_EPATH: a file or request name that fails proto_path_check();
 * - PROTO_EDEPTH: an unknown trailing element nested too deep;
 * - PROTO_EUNKNOWN: a message type that is not an enum proto_type;
 * - PROTO_EMALFORMED: anything else: truncated input, bytes after the
 *   array, a missing field, a value out of range, a file whose blocks do not
 *   add up to its size, a length or count larger than the bytes present;
 * - PROTO_ENOMEM.
 * On success the arrays stay valid until proto_msg_release(). On failure msg
 * is zeroed and nothing needs releasing (releasing anyway is harmless).
 * Decoded memory is at most about 9 bytes per input byte (16-byte version
 * counters can take 3 bytes on the wire) plus small per-message overhead.
 */
int proto_msg_decode(const uint8_t *buf, size_t len, struct proto_msg *msg);
void proto_msg_release(struct proto_msg *msg);

/*
 * Encoders append one whole message to b. They return 0 or PROTO_ENOMEM, and
 * leave b as it was on failure. They do not validate: a message with values
 * the decoder refuses (a name that fails proto_path_check(), blocks that do
 * not add up, ...) encodes, and the peer then closes the connection.
 */
int proto_encode_hello(struct proto_buf *b, const struct proto_hello *h);
/*
 * An index message is written in two steps: the header with the number of
 * files that follow, then exactly that many proto_encode_file() calls.
 */
int proto_encode_index_begin(struct proto_buf *b, enum proto_type type, const uint8_t *folder,
			     size_t folder_len, uint64_t index_id, uint32_t last, uint32_t nfiles);
int proto_encode_file(struct proto_buf *b, const struct proto_file *f);
int proto_encode_request(struct proto_buf *b, const struct proto_request *r);
/*
 * A response whose data the caller appends right after (exactly data_len
 * bytes, at most PROTO_BLOCK_MAX), so that a block is copied only once.
 */
int proto_encode_response_header(struct proto_buf *b, uint32_t id, uint32_t code, uint32_t data_len);
int proto_encode_response(struct proto_buf *b, const struct proto_response *r);
int proto_encode_ping(struct proto_buf *b);
int proto_encode_close(struct proto_buf *b, const char *reason);
int proto_encode_join(struct proto_buf *b, const struct proto_join *j);
int proto_encode_join_result(struct proto_buf *b, uint32_t code, const char *message);

#endif
