/* Checkpoints: the JSON reader, and safetensors files written from and
 * loaded into nets built with the real builder. */
#include <check.h>
#include <dirent.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "json.h"
#include "safetensors.h"
#include "unlearn/net.h"
#include "unlearn/rng.h"

#include "tmpdir.h"

/* ---- JSON ------------------------------------------------------------------ */

static ul_json *parse_ok(const char *text)
{
    ul_json *j = NULL;
    ul_error err = {0};
    int rc = ul_json_parse(text, strlen(text), &j, &err);
    ck_assert_msg(rc == UL_OK, "parse of <%s> failed: %s", text, err.msg);
    return j;
}

/* Expects a parse error whose message contains `needle`. */
static void parse_fails(const char *text, const char *needle)
{
    ul_json *j = NULL;
    ul_error err = {0};
    int rc = ul_json_parse(text, strlen(text), &j, &err);
    ck_assert_msg(rc == UL_EINVAL, "<%s> parsed but should fail", text);
    ck_assert_ptr_null(j);
    ck_assert_msg(strstr(err.msg, needle), "<%s>: expected \"%s\" in: %s", text, needle,
                  err.msg);
}

START_TEST(json_scalars)
{
    ul_json *j = parse_ok("  -12.5e2 ");
    ck_assert_int_eq(j->type, UL_JSON_NUMBER);
    ck_assert_double_eq(j->number, -1250.0);
    ul_json_free(j);
    j = parse_ok("true");
    ck_assert(j->type == UL_JSON_BOOL && j->boolean);
    ul_json_free(j);
    j = parse_ok("false");
    ck_assert(j->type == UL_JSON_BOOL && !j->boolean);
    ul_json_free(j);
    j = parse_ok("null");
    ck_assert_int_eq(j->type, UL_JSON_NULL);
    ul_json_free(j);
    j = parse_ok("0");
    ck_assert_double_eq(j->number, 0.0);
    ul_json_free(j);
    /* 2^53: checkpoint offsets must come back exact. */
    j = parse_ok("9007199254740992");
    ck_assert(j->number == 9007199254740992.0);
    ul_json_free(j);
}
END_TEST

START_TEST(json_nested)
{
    const char *text = "{\"a\": [1, 2, {\"b\": null}], \"c\": {\"d\": \"e\", \"f\": []}, \"g\": {}}";
    ul_json *j = parse_ok(text);
    ck_assert_int_eq(j->type, UL_JSON_OBJECT);
    ck_assert_uint_eq(j->n, 3);
    const ul_json *a = ul_json_get(j, "a");
    ck_assert_ptr_nonnull(a);
    ck_assert_int_eq(a->type, UL_JSON_ARRAY);
    ck_assert_uint_eq(a->n, 3);
    ck_assert_double_eq(a->items[1]->number, 2.0);
    ck_assert_int_eq(ul_json_get(a->items[2], "b")->type, UL_JSON_NULL);
    const ul_json *c = ul_json_get(j, "c");
    ck_assert_str_eq(ul_json_get(c, "d")->string, "e");
    ck_assert_uint_eq(ul_json_get(c, "f")->n, 0);
    ck_assert_uint_eq(ul_json_get(j, "g")->n, 0);
    ck_assert_ptr_null(ul_json_get(j, "missing"));
    ck_assert_ptr_null(ul_json_get(a, "a")); /* not an object */
    /* Keys keep their order. */
    ck_assert_str_eq(j->keys[0], "a");
    ck_assert_str_eq(j->keys[2], "g");
    ul_json_free(j);
}
END_TEST

START_TEST(json_escapes)
{
    ul_json *j = parse_ok("\"q\\\" b\\\\ s\\/ \\b\\f\\n\\r\\t\"");
    ck_assert_str_eq(j->string, "q\" b\\ s/ \b\f\n\r\t");
    ul_json_free(j);
    /* U+00E9 é, U+20AC €, U+1F600 😀 (surrogate pair) in UTF-8. */
    j = parse_ok("\"\\u00e9\\u20AC\\ud83d\\ude00\"");
    ck_assert_str_eq(j->string, "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
    ul_json_free(j);
    /* Raw UTF-8 passes through. */
    j = parse_ok("\"caf\xc3\xa9\"");
    ck_assert_str_eq(j->string, "caf\xc3\xa9");
    ul_json_free(j);
}
END_TEST

START_TEST(json_errors_name_offsets)
{
    parse_fails("{\"a\":1,}", "at byte 7: expected a string key, found '}'");
    parse_fails("[1 2]", "at byte 3: expected ',' or ']'");
    parse_fails("{\"a\" 1}", "at byte 5: expected ':'");
    parse_fails("\"abc", "unterminated string");
    parse_fails("", "at byte 0: expected a value, found end of input");
    parse_fails("{} x", "at byte 3: expected end of input");
    parse_fails("[tru]", "at byte 1: expected a value");
    parse_fails("\"a\nb\"", "at byte 2: control characters");
    parse_fails("\"\\x\"", "at byte 2: invalid escape");
    parse_fails("\"\\u12g4\"", "at byte 5: expected 4 hex digits");
    parse_fails("\"\\ud800x\"", "low surrogate");
    parse_fails("\"\\udc00\"", "at byte 1: low surrogate without");
    parse_fails("\"\\u0000\"", "\\u0000");
    parse_fails("{\"k\": 1, \"k\": 2}", "duplicate key \"k\"");
}
END_TEST

/* strtod alone would accept all of these. */
START_TEST(json_numbers_strict)
{
    parse_fails("01", "at byte 1: expected end of input");
    parse_fails("1.", "at byte 2: expected a digit after the decimal point");
    parse_fails(".5", "at byte 0: expected a value");
    parse_fails("+1", "at byte 0");
    parse_fails("-", "at byte 1: expected a digit");
    parse_fails("1e", "at byte 2: expected a digit in the exponent");
    parse_fails("NaN", "at byte 0");
    parse_fails("Infinity", "at byte 0");
    parse_fails("0x10", "at byte 1");
    ul_json *j = parse_ok("[-0, 1E+2, 2.5e-1]");
    ck_assert_double_eq(j->items[1]->number, 100.0);
    ck_assert_double_eq(j->items[2]->number, 0.25);
    ul_json_free(j);
}
END_TEST

/* The limit is 64 levels: 64 nested arrays parse, 65 do not. */
START_TEST(json_depth_limit)
{
    char text[200];
    memset(text, '[', 64);
    memset(text + 64, ']', 64);
    text[128] = '\0';
    ul_json *j = parse_ok(text);
    ul_json_free(j);
    memset(text, '[', 65);
    memset(text + 65, ']', 65);
    text[130] = '\0';
    parse_fails(text, "at byte 64: nesting deeper than 64 levels");
}
END_TEST

/* Not NUL-terminated: only len bytes are read. */
START_TEST(json_respects_length)
{
    const char text[] = {'[', '1', '2', ']', 'x'};
    ul_json *j = NULL;
    ul_error err = {0};
    ck_assert_int_eq(ul_json_parse(text, 4, &j, &err), UL_OK);
    ck_assert_double_eq(j->items[0]->number, 12.0);
    ul_json_free(j);
    ck_assert_int_eq(ul_json_parse(text, 2, &j, &err), UL_EINVAL);
}
END_TEST

START_TEST(json_escape_round_trip)
{
    const char *s = "a\"b\\c\nd\x01 \xc3\xa9";
    char buf[64];
    size_t pos = 0;
    ck_assert_int_eq(ul_json_escape(buf, sizeof buf, &pos, s), 0);
    ck_assert_str_eq(buf, "\"a\\\"b\\\\c\\nd\\u0001 \xc3\xa9\"");
    ck_assert_uint_eq(pos, strlen(buf));
    ul_json *j = parse_ok(buf);
    ck_assert_str_eq(j->string, s);
    ul_json_free(j);
    /* Overflow: -1, and the buffer keeps what it had. */
    char small[8] = "xy";
    pos = 2;
    ck_assert_int_eq(ul_json_escape(small, sizeof small, &pos, "long string"), -1);
    ck_assert_uint_eq(pos, 2);
    ck_assert_str_eq(small, "xy");
    /* Exactly fitting: 4 chars + NUL. */
    char exact[5];
    pos = 0;
    ck_assert_int_eq(ul_json_escape(exact, sizeof exact, &pos, "ab"), 0);
    ck_assert_str_eq(exact, "\"ab\"");
}
END_TEST

/* ---- nets and files ----------------------------------------------------------- */

enum { NET_BASE = 0, NET_NO_BN = 1, NET_EXTRA_CONV = 2 };

/* conv1(3→ch, 3×3) → bn1 → relu → [conv2] → global pool → fc(→5) on
 * 3×8×8 inputs. */
static ul_net *make_net(int ch, int variant, uint64_t seed)
{
    ul_net *net = ul_net_new(3, 8, 8, 5);
    ck_assert_ptr_nonnull(net);
    ul_node x = ul_net_input(net);
    x = ul_net_conv2d(net, "conv1", x, ch, 3, 1, 1, false);
    if (variant != NET_NO_BN)
        x = ul_net_batchnorm(net, "bn1", x);
    x = ul_net_relu(net, x);
    if (variant == NET_EXTRA_CONV)
        x = ul_net_conv2d(net, "conv2", x, ch, 1, 1, 0, true);
    x = ul_net_global_avgpool(net, x);
    x = ul_net_linear(net, "fc", x, 5, true);
    ul_rng rng;
    ul_rng_seed(&rng, seed, 0);
    ul_error err = {0};
    int rc = ul_net_finalize(net, &rng, &err);
    ck_assert_msg(rc == UL_OK, "finalize failed: %s", err.msg);
    return net;
}

static size_t tensor_bytes(const ul_tensor_info *t)
{
    return (size_t)t->numel * (t->dtype == UL_I64 ? 8 : 4);
}

/* Arbitrary bit patterns in every tensor (NaN payloads, −0, denormals
 * included), so only a bit-exact copy reproduces them. */
static void scramble(ul_net *net, uint64_t seed)
{
    ul_rng rng;
    ul_rng_seed(&rng, seed, 99);
    for (size_t i = 0; i < ul_net_tensor_count(net); i++) {
        const ul_tensor_info *t = ul_net_tensor(net, i);
        uint32_t *w = t->data;
        for (size_t k = 0; k < tensor_bytes(t) / 4; k++)
            w[k] = ul_rng_u32(&rng);
    }
}

/* Every tensor of a and b is byte-for-byte equal. */
static void assert_same_weights(const ul_net *a, const ul_net *b)
{
    ck_assert_uint_eq(ul_net_tensor_count(a), ul_net_tensor_count(b));
    for (size_t i = 0; i < ul_net_tensor_count(a); i++) {
        const ul_tensor_info *ta = ul_net_tensor(a, i), *tb = ul_net_tensor(b, i);
        ck_assert_str_eq(ta->name, tb->name);
        ck_assert_int_eq(ta->dtype, tb->dtype);
        ck_assert_int_eq(ta->numel, tb->numel);
        ck_assert_msg(memcmp(ta->data, tb->data, tensor_bytes(ta)) == 0,
                      "tensor '%s' differs", ta->name);
    }
}

static unsigned char *snapshot(const ul_net *net, size_t *len)
{
    size_t total = 0;
    for (size_t i = 0; i < ul_net_tensor_count(net); i++)
        total += tensor_bytes(ul_net_tensor(net, i));
    unsigned char *buf = malloc(total), *p = buf;
    for (size_t i = 0; i < ul_net_tensor_count(net); i++) {
        const ul_tensor_info *t = ul_net_tensor(net, i);
        memcpy(p, t->data, tensor_bytes(t));
        p += tensor_bytes(t);
    }
    *len = total;
    return buf;
}

static unsigned char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc((size_t)n + 1);
    ck_assert_uint_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static void spit(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(data, 1, len, f), len);
    fclose(f);
}

static void save_ok(const char *path, const ul_net *net, const ul_kv *meta, size_t n)
{
    ul_error err = {0};
    int rc = ul_checkpoint_save(path, net, meta, n, &err);
    ck_assert_msg(rc == UL_OK, "save failed: %s", err.msg);
}

static void load_fails(const char *path, ul_net *net, const char *n1, const char *n2,
                       const char *n3)
{
    size_t before_len, after_len;
    unsigned char *before = snapshot(net, &before_len);
    ul_error err = {0};
    int rc = ul_checkpoint_load(path, net, &err);
    ck_assert_msg(rc == UL_EINVAL, "load should fail (rc %d): %s", rc, err.msg);
    const char *need[] = {n1, n2, n3};
    for (int i = 0; i < 3; i++)
        ck_assert_msg(!need[i] || strstr(err.msg, need[i]), "expected \"%s\" in: %s", need[i],
                      err.msg);
    unsigned char *after = snapshot(net, &after_len);
    ck_assert_msg(before_len == after_len && memcmp(before, after, before_len) == 0,
                  "a refused checkpoint modified the net");
    free(before);
    free(after);
}

START_TEST(checkpoint_round_trip_bit_exact)
{
    ul_net *a = make_net(4, NET_BASE, 1), *b = make_net(4, NET_BASE, 2);
    scramble(a, 7);
    /* An int64 that does not survive a trip through float or int32. */
    const ul_tensor_info *nbt = ul_net_find_tensor(a, "bn1.num_batches_tracked");
    ck_assert_ptr_nonnull(nbt);
    ck_assert_int_eq(nbt->dtype, UL_I64);
    *(int64_t *)nbt->data = INT64_C(0x0123456789abcdef);

    char path[512];
    tmp_path(path, sizeof path, "a.safetensors");
    ul_kv meta[] = {{"width", "0.5"}, {"note", "quote \" slash \\ newline \n caf\xc3\xa9"}};
    save_ok(path, a, meta, 2);
    ul_error err = {0};
    int rc = ul_checkpoint_load(path, b, &err);
    ck_assert_msg(rc == UL_OK, "load failed: %s", err.msg);
    assert_same_weights(a, b);
    ck_assert(*(int64_t *)ul_net_find_tensor(b, "bn1.num_batches_tracked")->data ==
              INT64_C(0x0123456789abcdef));

    ul_kv *kv = NULL;
    size_t n = 0;
    rc = ul_checkpoint_read_metadata(path, &kv, &n, &err);
    ck_assert_msg(rc == UL_OK, "read_metadata failed: %s", err.msg);
    ck_assert_uint_eq(n, 2);
    ck_assert_str_eq(kv[0].key, "width");
    ck_assert_str_eq(ul_kv_get(kv, n, "width"), "0.5");
    ck_assert_str_eq(ul_kv_get(kv, n, "note"), meta[1].value);
    ck_assert_ptr_null(ul_kv_get(kv, n, "absent"));
    ul_kv_free(kv, n);
    ul_net_free(a);
    ul_net_free(b);
}
END_TEST

static uint64_t le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* The file as another tool would see it: u64 LE header length, JSON
 * header padded with spaces to a multiple of 8, tensors in state_dict
 * order, contiguous, each holding the net's bytes. */
START_TEST(checkpoint_header_layout)
{
    ul_net *net = make_net(4, NET_BASE, 3);
    char path[512];
    tmp_path(path, sizeof path, "net.safetensors");
    save_ok(path, net, NULL, 0);
    size_t len;
    unsigned char *file = slurp(path, &len);
    ck_assert_uint_ge(len, 8);
    uint64_t n = le64(file);
    ck_assert_uint_eq(n % 8, 0);
    ck_assert_uint_le(8 + n, len);
    ck_assert_int_eq(file[8], '{');
    ul_json *h = NULL;
    ul_error err = {0};
    ck_assert_msg(ul_json_parse((const char *)file + 8, n, &h, &err) == UL_OK, "%s", err.msg);
    ck_assert_int_eq(h->type, UL_JSON_OBJECT);
    ck_assert_ptr_null(ul_json_get(h, "__metadata__"));
    ck_assert_uint_eq(h->n, ul_net_tensor_count(net));

    /* conv1.weight: (out 4, in 3, 3, 3) floats = 432 bytes, first. */
    const ul_json *w = ul_json_get(h, "conv1.weight");
    ck_assert_ptr_nonnull(w);
    ck_assert_str_eq(ul_json_get(w, "dtype")->string, "F32");
    const ul_json *shape = ul_json_get(w, "shape");
    ck_assert_uint_eq(shape->n, 4);
    const double want[4] = {4, 3, 3, 3};
    for (int i = 0; i < 4; i++)
        ck_assert_double_eq(shape->items[i]->number, want[i]);
    const ul_json *off = ul_json_get(w, "data_offsets");
    ck_assert_double_eq(off->items[0]->number, 0);
    ck_assert_double_eq(off->items[1]->number, 432);

    const ul_json *nbt = ul_json_get(h, "bn1.num_batches_tracked");
    ck_assert_ptr_nonnull(nbt);
    ck_assert_str_eq(ul_json_get(nbt, "dtype")->string, "I64");

    uint64_t at = 0;
    for (size_t i = 0; i < ul_net_tensor_count(net); i++) {
        const ul_tensor_info *t = ul_net_tensor(net, i);
        ck_assert_str_eq(h->keys[i], t->name); /* state_dict order */
        const ul_json *e = h->items[i];
        ck_assert_str_eq(ul_json_get(e, "dtype")->string, t->dtype == UL_I64 ? "I64" : "F32");
        const ul_json *s = ul_json_get(e, "shape");
        ck_assert_int_eq((int)s->n, t->ndim);
        for (int d = 0; d < t->ndim; d++)
            ck_assert_double_eq(s->items[d]->number, (double)t->shape[d]);
        const ul_json *o = ul_json_get(e, "data_offsets");
        ck_assert_msg(o->items[0]->number == (double)at, "tensor '%s' not contiguous", t->name);
        at += tensor_bytes(t);
        ck_assert(o->items[1]->number == (double)at);
        ck_assert_msg(memcmp(file + 8 + n + (at - tensor_bytes(t)), t->data,
                             tensor_bytes(t)) == 0,
                      "tensor '%s' bytes differ in the file", t->name);
    }
    ck_assert_uint_eq(8 + n + at, len);
    ul_json_free(h);
    free(file);
    ul_net_free(net);
}
END_TEST

START_TEST(checkpoint_refuses_other_width)
{
    ul_net *a = make_net(4, NET_BASE, 1), *b = make_net(6, NET_BASE, 2);
    char path[512];
    tmp_path(path, sizeof path, "w4.safetensors");
    save_ok(path, a, NULL, 0);
    load_fails(path, b, "'conv1.weight'", "[4, 3, 3, 3]", "[6, 3, 3, 3]");
    ul_net_free(a);
    ul_net_free(b);
}
END_TEST

START_TEST(checkpoint_refuses_missing_tensor)
{
    ul_net *a = make_net(4, NET_BASE, 1), *b = make_net(4, NET_EXTRA_CONV, 2);
    char path[512];
    tmp_path(path, sizeof path, "base.safetensors");
    save_ok(path, a, NULL, 0);
    load_fails(path, b, "lacks tensor 'conv2.weight'", NULL, NULL);
    ul_net_free(a);
    ul_net_free(b);
}
END_TEST

START_TEST(checkpoint_refuses_unexpected_tensor)
{
    ul_net *a = make_net(4, NET_BASE, 1), *b = make_net(4, NET_NO_BN, 2);
    char path[512];
    tmp_path(path, sizeof path, "base.safetensors");
    save_ok(path, a, NULL, 0);
    load_fails(path, b, "has tensor 'bn1.", "that the model lacks", NULL);
    ul_net_free(a);
    ul_net_free(b);
}
END_TEST

START_TEST(checkpoint_refuses_truncated_file)
{
    ul_net *a = make_net(4, NET_BASE, 1), *b = make_net(4, NET_BASE, 2);
    char path[512], cut[512];
    tmp_path(path, sizeof path, "full.safetensors");
    tmp_path(cut, sizeof cut, "cut.safetensors");
    save_ok(path, a, NULL, 0);
    size_t len;
    unsigned char *file = slurp(path, &len);

    spit(cut, file, len - 10); /* inside the last tensor (fc.bias) */
    load_fails(cut, b, "truncated", "'fc.bias'", NULL);
    ul_kv *kv = NULL;
    size_t n = 0;
    ul_error err = {0};
    ck_assert_int_eq(ul_checkpoint_read_metadata(cut, &kv, &n, &err), UL_EINVAL);

    spit(cut, file, 8 + le64(file) / 2); /* inside the header */
    load_fails(cut, b, "truncated: header length", NULL, NULL);

    spit(cut, file, 5);
    load_fails(cut, b, "too short", NULL, NULL);
    free(file);
    ul_net_free(a);
    ul_net_free(b);
}
END_TEST

START_TEST(checkpoint_refuses_trailing_data)
{
    ul_net *a = make_net(4, NET_BASE, 1), *b = make_net(4, NET_BASE, 2);
    char path[512];
    tmp_path(path, sizeof path, "t.safetensors");
    save_ok(path, a, NULL, 0);
    size_t len;
    unsigned char *file = slurp(path, &len);
    unsigned char *longer = malloc(len + 4);
    memcpy(longer, file, len);
    memset(longer + len, 0xab, 4);
    spit(path, longer, len + 4);
    load_fails(path, b, "trailing data", NULL, NULL);
    free(file);
    free(longer);
    ul_net_free(a);
    ul_net_free(b);
}
END_TEST

/* Writes a safetensors file from a header text and `data_len` zero bytes. */
static void write_crafted(const char *path, const char *header, size_t data_len)
{
    size_t hn = strlen(header);
    unsigned char *buf = calloc(1, 8 + hn + data_len);
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)((uint64_t)hn >> (8 * i));
    memcpy(buf + 8, header, hn);
    spit(path, buf, 8 + hn + data_len);
    free(buf);
}

static void metadata_fails(const char *path, const char *needle)
{
    ul_kv *kv = NULL;
    size_t n = 0;
    ul_error err = {0};
    ck_assert_int_eq(ul_checkpoint_read_metadata(path, &kv, &n, &err), UL_EINVAL);
    ck_assert_ptr_null(kv);
    ck_assert_msg(strstr(err.msg, needle) && strstr(err.msg, path), "expected \"%s\" in: %s",
                  needle, err.msg);
}

START_TEST(checkpoint_header_validation)
{
    char path[512];
    tmp_path(path, sizeof path, "x.safetensors");

    write_crafted(path, "{\"t\": {\"dtype\": \"F32\", \"shape\": [2], ", 8);
    metadata_fails(path, "header: invalid JSON at byte");

    write_crafted(path, "[1, 2]", 0);
    metadata_fails(path, "not a JSON object");

    write_crafted(path, "{\"t\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", 20);
    metadata_fails(path, "does not match its dtype and shape");

    write_crafted(path, "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4);
    metadata_fails(path, "truncated");

    write_crafted(path,
                  "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                  "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
                  12);
    metadata_fails(path, "holes or overlaps");

    write_crafted(path, "{\"t\":{\"dtype\":\"Q7\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1);
    metadata_fails(path, "unknown dtype");

    write_crafted(path, "{\"t\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4);
    metadata_fails(path, "non-negative integers");

    write_crafted(path, "{\"__metadata__\":{\"k\":1}}", 0);
    metadata_fails(path, "not a string");

    /* A length field claiming 1 GB of header. */
    unsigned char huge[16] = {0, 0, 0, 0x40, 0, 0, 0, 0, '{', '}'};
    spit(path, huge, sizeof huge);
    metadata_fails(path, "100 MB");

    /* Valid: no tensors, and tensors of dtypes a net never has. */
    write_crafted(path,
                  "{\"__metadata__\":{\"k\":\"v\"},"
                  "\"h\":{\"dtype\":\"F16\",\"shape\":[3],\"data_offsets\":[0,6]},"
                  "\"e\":{\"dtype\":\"F32\",\"shape\":[0, 5],\"data_offsets\":[6,6]}}",
                  6);
    ul_kv *kv = NULL;
    size_t n = 0;
    ul_error err = {0};
    ck_assert_msg(ul_checkpoint_read_metadata(path, &kv, &n, &err) == UL_OK, "%s", err.msg);
    ck_assert_uint_eq(n, 1);
    ck_assert_str_eq(ul_kv_get(kv, n, "k"), "v");
    ul_kv_free(kv, n);
}
END_TEST

/* A file whose names and shapes match but with one dtype changed (I32 has
 * F32's size, so the file is otherwise valid). */
START_TEST(checkpoint_refuses_dtype_mismatch)
{
    ul_net *net = make_net(4, NET_BASE, 1);
    char header[8192];
    size_t pos = 0;
    uint64_t at = 0;
    pos += (size_t)snprintf(header + pos, sizeof header - pos, "{");
    for (size_t i = 0; i < ul_net_tensor_count(net); i++) {
        const ul_tensor_info *t = ul_net_tensor(net, i);
        const char *dt = strcmp(t->name, "fc.bias") == 0 ? "I32"
                         : t->dtype == UL_I64           ? "I64"
                                                        : "F32";
        pos += (size_t)snprintf(header + pos, sizeof header - pos,
                                "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[", i ? "," : "", t->name,
                                dt);
        for (int d = 0; d < t->ndim; d++)
            pos += (size_t)snprintf(header + pos, sizeof header - pos, "%s%" PRId64,
                                    d ? "," : "", t->shape[d]);
        pos += (size_t)snprintf(header + pos, sizeof header - pos,
                                "],\"data_offsets\":[%" PRIu64 ",%" PRIu64 "]}", at,
                                at + tensor_bytes(t));
        at += tensor_bytes(t);
    }
    snprintf(header + pos, sizeof header - pos, "}");
    char path[512];
    tmp_path(path, sizeof path, "dtype.safetensors");
    write_crafted(path, header, at);
    load_fails(path, net, "'fc.bias'", "dtype I32 in the checkpoint but F32", NULL);
    ul_net_free(net);
}
END_TEST

static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            n++;
    closedir(d);
    return n;
}

START_TEST(checkpoint_save_is_atomic)
{
    ul_net *a = make_net(4, NET_BASE, 1), *b = make_net(6, NET_BASE, 2);
    ul_net *c = make_net(6, NET_BASE, 3);
    char path[512];
    tmp_path(path, sizeof path, "m.safetensors");
    save_ok(path, a, NULL, 0);
    ck_assert_int_eq(count_entries(tmpdir), 1); /* no temp file left behind */
    /* Overwriting replaces the file as a whole. */
    save_ok(path, b, NULL, 0);
    ck_assert_int_eq(count_entries(tmpdir), 1);
    ul_error err = {0};
    ck_assert_msg(ul_checkpoint_load(path, c, &err) == UL_OK, "%s", err.msg);
    assert_same_weights(b, c);
    /* A save that cannot happen creates nothing and says where. */
    char bad[512];
    tmp_path(bad, sizeof bad, "no-such-dir/m.safetensors");
    ck_assert_int_eq(ul_checkpoint_save(bad, a, NULL, 0, &err), UL_EIO);
    ck_assert_msg(strstr(err.msg, "no-such-dir"), "got: %s", err.msg);
    ck_assert_int_eq(count_entries(tmpdir), 1);
    ul_net_free(a);
    ul_net_free(b);
    ul_net_free(c);
}
END_TEST

static Suite *checkpoint_suite(void)
{
    Suite *s = suite_create("checkpoint");
    TCase *tc = tcase_create("json");
    tcase_add_test(tc, json_scalars);
    tcase_add_test(tc, json_nested);
    tcase_add_test(tc, json_escapes);
    tcase_add_test(tc, json_errors_name_offsets);
    tcase_add_test(tc, json_numbers_strict);
    tcase_add_test(tc, json_depth_limit);
    tcase_add_test(tc, json_respects_length);
    tcase_add_test(tc, json_escape_round_trip);
    suite_add_tcase(s, tc);

    tc = tcase_create("safetensors");
    tcase_add_checked_fixture(tc, tmp_setup, tmp_teardown);
    tcase_add_test(tc, checkpoint_round_trip_bit_exact);
    tcase_add_test(tc, checkpoint_header_layout);
    tcase_add_test(tc, checkpoint_refuses_other_width);
    tcase_add_test(tc, checkpoint_refuses_missing_tensor);
    tcase_add_test(tc, checkpoint_refuses_unexpected_tensor);
    tcase_add_test(tc, checkpoint_refuses_truncated_file);
    tcase_add_test(tc, checkpoint_refuses_trailing_data);
    tcase_add_test(tc, checkpoint_header_validation);
    tcase_add_test(tc, checkpoint_refuses_dtype_mismatch);
    tcase_add_test(tc, checkpoint_save_is_atomic);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(checkpoint_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
