/*
 * agent/json.h - a small JSON writer for --json output and the control socket.
 *
 * The writer appends to a growable string and inserts commas itself: a
 * caller opens objects and arrays, writes keys and values, and closes them.
 * Out of memory is sticky: json_finish() then returns NULL.
 */
#ifndef SHOAL_AGENT_JSON_H
#define SHOAL_AGENT_JSON_H

#include <stddef.h>
#include <stdint.h>

struct json {
	char *buf;
	size_t len, cap;
	int need_comma;
	int oom;
};

void json_init(struct json *j);
void json_release(struct json *j);
void json_obj_open(struct json *j);
void json_obj_close(struct json *j);
void json_arr_open(struct json *j);
void json_arr_close(struct json *j);
void json_key(struct json *j, const char *key);
void json_str(struct json *j, const char *s);
void json_strn(struct json *j, const char *s, size_t n);
void json_u64(struct json *j, uint64_t v);
void json_i64(struct json *j, int64_t v);
void json_dbl(struct json *j, double v);
void json_bool(struct json *j, int v);
void json_null(struct json *j);
/* Returns the NUL-terminated text (owned by j), or NULL after an allocation failure. */
const char *json_finish(struct json *j);

/*
 * A minimal reader for JSON this program wrote itself (the CLI renders the
 * agent's status for people). Values form a tree; jv_free() frees it.
 */
enum jv_type { JV_NULL, JV_BOOL, JV_NUM, JV_STR, JV_ARR, JV_OBJ };
struct jv {
	enum jv_type type;
	double num;
	int b;
	char *str;           /* JV_STR */
	char **keys;         /* JV_OBJ */
	struct jv **items;   /* JV_ARR and JV_OBJ values */
	size_t n;
};
/* Returns the parsed tree or NULL for malformed input (or no memory). */
struct jv *jv_parse(const char *text);
void jv_free(struct jv *v);
/* Member of an object, or NULL. */
const struct jv *jv_get(const struct jv *obj, const char *key);
const char *jv_str(const struct jv *v, const char *dflt);
double jv_num(const struct jv *v);

#endif
