/*
 * agent/json.c - JSON writer.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/json.h"

void
json_init(struct json *j)
{
	memset(j, 0, sizeof(*j));
}

void
json_release(struct json *j)
{
	free(j->buf);
	memset(j, 0, sizeof(*j));
}

static void
put(struct json *j, const char *s, size_t n)
{
	if (j->oom)
		return;
	if (j->len + n + 1 > j->cap) {
		size_t cap = j->cap ? j->cap : 256;
		while (cap < j->len + n + 1)
			cap *= 2;
		char *nb = realloc(j->buf, cap);
		if (!nb) {
			j->oom = 1;
			return;
		}
		j->buf = nb;
		j->cap = cap;
	}
	memcpy(j->buf + j->len, s, n);
	j->len += n;
	j->buf[j->len] = '\0';
}

static void
sep(struct json *j)
{
	if (j->need_comma)
		put(j, ",", 1);
	j->need_comma = 1;
}

void
json_obj_open(struct json *j)
{
	sep(j);
	put(j, "{", 1);
	j->need_comma = 0;
}

void
json_obj_close(struct json *j)
{
	put(j, "}", 1);
	j->need_comma = 1;
}

void
json_arr_open(struct json *j)
{
	sep(j);
	put(j, "[", 1);
	j->need_comma = 0;
}

void
json_arr_close(struct json *j)
{
	put(j, "]", 1);
	j->need_comma = 1;
}

void
json_key(struct json *j, const char *key)
{
	json_str(j, key);
	put(j, ":", 1);
	j->need_comma = 0;
}

void
json_strn(struct json *j, const char *s, size_t n)
{
	char esc[8];

	sep(j);
	put(j, "\"", 1);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '"' || c == '\\') {
			esc[0] = '\\';
			esc[1] = (char)c;
			put(j, esc, 2);
		} else if (c == '\n' || c == '\t' || c == '\r') {
			esc[0] = '\\';
			esc[1] = c == '\n' ? 'n' : c == '\t' ? 't' : 'r';
			put(j, esc, 2);
		} else if (c < 0x20 || c == 0x7f) {
			snprintf(esc, sizeof(esc), "\\u%04x", c);
			put(j, esc, 6);
		} else {
			put(j, (const char *)&s[i], 1);
		}
	}
	put(j, "\"", 1);
}

void
json_str(struct json *j, const char *s)
{
	json_strn(j, s, strlen(s));
}

void
json_u64(struct json *j, uint64_t v)
{
	char b[32];
	int n = snprintf(b, sizeof(b), "%" PRIu64, v);
	sep(j);
	put(j, b, (size_t)n);
}

void
json_i64(struct json *j, int64_t v)
{
	char b[32];
	int n = snprintf(b, sizeof(b), "%" PRId64, v);
	sep(j);
	put(j, b, (size_t)n);
}

void
json_dbl(struct json *j, double v)
{
	char b[48];
	int n = snprintf(b, sizeof(b), "%.3f", v);
	sep(j);
	put(j, b, (size_t)n);
}

void
json_bool(struct json *j, int v)
{
	sep(j);
	put(j, v ? "true" : "false", v ? 4 : 5);
}

void
json_null(struct json *j)
{
	sep(j);
	put(j, "null", 4);
}

const char *
json_finish(struct json *j)
{
	if (j->oom)
		return NULL;
	if (!j->buf)
		put(j, "", 0);
	return j->oom ? NULL : j->buf;
}

/* ---- reader ---- */

struct jp {
	const char *p;
	int depth;
};

static void
ws(struct jp *jp)
{
	while (*jp->p == ' ' || *jp->p == '\n' || *jp->p == '\t' || *jp->p == '\r')
		jp->p++;
}

static struct jv *parse_value(struct jp *jp);

static char *
parse_string(struct jp *jp)
{
	struct json tmp; /* reuse the growable buffer */
	if (*jp->p != '"')
		return NULL;
	jp->p++;
	json_init(&tmp);
	while (*jp->p && *jp->p != '"') {
		char c = *jp->p++;
		if (c == '\\') {
			char e = *jp->p++;
			if (e == 'u') {
				unsigned v = 0;
				for (int i = 0; i < 4; i++) {
					char h = *jp->p++;
					v = v * 16 + (unsigned)(h >= 'a' ? h - 'a' + 10 : h >= 'A' ? h - 'A' + 10 : h - '0');
				}
				c = v < 0x80 ? (char)v : '?';
			} else {
				c = e == 'n' ? '\n' : e == 't' ? '\t' : e == 'r' ? '\r' : e;
			}
		}
		put(&tmp, &c, 1);
	}
	if (*jp->p != '"') {
		json_release(&tmp);
		return NULL;
	}
	jp->p++;
	if (!tmp.buf)
		put(&tmp, "", 0);
	if (tmp.oom) {
		json_release(&tmp);
		return NULL;
	}
	return tmp.buf;
}

static int
push_item(struct jv *v, char *key, struct jv *item)
{
	struct jv **ni = realloc(v->items, (v->n + 1) * sizeof(*ni));
	if (!ni)
		return -1;
	v->items = ni;
	if (v->type == JV_OBJ) {
		char **nk = realloc(v->keys, (v->n + 1) * sizeof(*nk));
		if (!nk)
			return -1;
		v->keys = nk;
		nk[v->n] = key;
	}
	ni[v->n++] = item;
	return 0;
}

static struct jv *
parse_value(struct jp *jp)
{
	struct jv *v;

	ws(jp);
	if (++jp->depth > 64)
		return NULL;
	v = calloc(1, sizeof(*v));
	if (!v)
		return NULL;
	if (*jp->p == '{' || *jp->p == '[') {
		int obj = *jp->p == '{';
		char close = obj ? '}' : ']';
		v->type = obj ? JV_OBJ : JV_ARR;
		jp->p++;
		ws(jp);
		if (*jp->p == close) {
			jp->p++;
			goto done;
		}
		for (;;) {
			char *key = NULL;
			ws(jp);
			if (obj) {
				if (!(key = parse_string(jp)))
					goto fail;
				ws(jp);
				if (*jp->p++ != ':') {
					free(key);
					goto fail;
				}
			}
			struct jv *item = parse_value(jp);
			if (!item || push_item(v, key, item) != 0) {
				free(key);
				jv_free(item);
				goto fail;
			}
			ws(jp);
			if (*jp->p == ',') {
				jp->p++;
				continue;
			}
			if (*jp->p++ != close)
				goto fail;
			break;
		}
	} else if (*jp->p == '"') {
		v->type = JV_STR;
		if (!(v->str = parse_string(jp)))
			goto fail;
	} else if (strncmp(jp->p, "true", 4) == 0 || strncmp(jp->p, "false", 5) == 0) {
		v->type = JV_BOOL;
		v->b = *jp->p == 't';
		jp->p += v->b ? 4 : 5;
	} else if (strncmp(jp->p, "null", 4) == 0) {
		v->type = JV_NULL;
		jp->p += 4;
	} else {
		char *end;
		v->type = JV_NUM;
		v->num = strtod(jp->p, &end);
		if (end == jp->p)
			goto fail;
		jp->p = end;
	}
done:
	jp->depth--;
	return v;
fail:
	jv_free(v);
	return NULL;
}

struct jv *
jv_parse(const char *text)
{
	struct jp jp = {text, 0};
	struct jv *v = parse_value(&jp);
	if (v) {
		ws(&jp);
		if (*jp.p != '\0') {
			jv_free(v);
			return NULL;
		}
	}
	return v;
}

void
jv_free(struct jv *v)
{
	if (!v)
		return;
	for (size_t i = 0; i < v->n; i++) {
		jv_free(v->items[i]);
		if (v->keys)
			free(v->keys[i]);
	}
	free(v->items);
	free(v->keys);
	free(v->str);
	free(v);
}

const struct jv *
jv_get(const struct jv *obj, const char *key)
{
	if (!obj || obj->type != JV_OBJ)
		return NULL;
	for (size_t i = 0; i < obj->n; i++)
		if (strcmp(obj->keys[i], key) == 0)
			return obj->items[i];
	return NULL;
}

const char *
jv_str(const struct jv *v, const char *dflt)
{
	return v && v->type == JV_STR ? v->str : dflt;
}

double
jv_num(const struct jv *v)
{
	return v && v->type == JV_NUM ? v->num : 0;
}
