/* Checkpoints in the safetensors format (huggingface/safetensors), so that
 * PyTorch, NumPy and other tools read our weights and we read theirs.
 *
 * We write what the reference implementation writes: a header padded with
 * spaces to a multiple of 8 bytes, data contiguous from offset 0. We read
 * strictly: the header must describe exactly the bytes in the file, and a
 * net only accepts a checkpoint with exactly its tensors. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fsutil.h"
#include "json.h"
#include "safetensors.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data is little-endian; this code copies tensors as they lie in memory"
#endif

/* The reference implementation refuses larger headers too. */
#define ST_MAX_HEADER (100 * 1000 * 1000)
/* JSON numbers are doubles: integers above 2^53 are not exact. */
#define ST_MAX_INT 9007199254740992.0

/* ---- writing ------------------------------------------------------------ */

typedef struct st_buf {
    char *p;
    size_t n, cap;
} st_buf;

static bool buf_reserve(st_buf *b, size_t extra)
{
    if (b->n + extra + 1 <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->n + extra + 1)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p)
        return false;
    b->p = p;
    b->cap = cap;
    return true;
}

static bool buf_printf(st_buf *b, const char *fmt, ...) UL_PRINTF(2, 3);
static bool buf_printf(st_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !buf_reserve(b, (size_t)n))
        return false;
    va_start(ap, fmt);
    vsnprintf(b->p + b->n, b->cap - b->n, fmt, ap);
    va_end(ap);
    b->n += (size_t)n;
    return true;
}

/* A JSON string literal; escaping at most sextuples a byte. */
static bool buf_string(st_buf *b, const char *s)
{
    size_t need = 6 * strlen(s) + 3;
    return buf_reserve(b, need) && ul_json_escape(b->p, b->cap, &b->n, s) == 0;
}

static const char *dtype_name(ul_dtype t)
{
    return t == UL_I64 ? "I64" : "F32";
}

static size_t dtype_size(ul_dtype t)
{
    return t == UL_I64 ? 8 : 4;
}

static void shape_text(char *out, size_t cap, int ndim, const int64_t *shape)
{
    size_t pos = 0;
    pos += (size_t)snprintf(out, cap, "[");
    for (int i = 0; i < ndim && pos < cap; i++)
        pos += (size_t)snprintf(out + pos, cap - pos, "%s%" PRId64, i ? ", " : "", shape[i]);
    if (pos < cap)
        snprintf(out + pos, cap - pos, "]");
}

static int st_header(const ul_net *net, const ul_kv *meta, size_t n_meta, st_buf *b)
{
    bool ok = buf_printf(b, "{");
    if (n_meta) {
        ok = ok && buf_printf(b, "\"__metadata__\":{");
        for (size_t i = 0; ok && i < n_meta; i++) {
            ok = buf_printf(b, "%s", i ? "," : "") && buf_string(b, meta[i].key) &&
                 buf_printf(b, ":") && buf_string(b, meta[i].value);
        }
        ok = ok && buf_printf(b, "}");
    }
    uint64_t offset = 0;
    const size_t count = ul_net_tensor_count(net);
    for (size_t i = 0; ok && i < count; i++) {
        const ul_tensor_info *t = ul_net_tensor(net, i);
        uint64_t bytes = (uint64_t)t->numel * dtype_size(t->dtype);
        ok = buf_printf(b, "%s", i || n_meta ? "," : "") && buf_string(b, t->name) &&
             buf_printf(b, ":{\"dtype\":\"%s\",\"shape\":[", dtype_name(t->dtype));
        for (int d = 0; ok && d < t->ndim; d++)
            ok = buf_printf(b, "%s%" PRId64, d ? "," : "", t->shape[d]);
        ok = ok && buf_printf(b, "],\"data_offsets\":[%" PRIu64 ",%" PRIu64 "]}", offset,
                              offset + bytes);
        offset += bytes;
    }
    ok = ok && buf_printf(b, "}");
    /* Pad so the data starts 8-byte aligned, as the reference does. */
    while (ok && b->n % 8)
        ok = buf_printf(b, " ");
    return ok ? UL_OK : UL_ENOMEM;
}

int ul_checkpoint_save(const char *path, const ul_net *net, const ul_kv *meta, size_t n_meta,
                       ul_error *err)
{
    st_buf hdr = {0};
    ul_atomic_file f;
    int rc;

    if (st_header(net, meta, n_meta, &hdr)) {
        free(hdr.p);
        return ul_errorf(err, UL_ENOMEM, "%s: out of memory for the checkpoint header", path);
    }
    if ((rc = ul_atomic_open(&f, path, err))) {
        free(hdr.p);
        return rc;
    }
    FILE *fp = f.fp;
    unsigned char len[8];
    for (int i = 0; i < 8; i++)
        len[i] = (unsigned char)((uint64_t)hdr.n >> (8 * i));
    bool ok = fwrite(len, 1, 8, fp) == 8 && fwrite(hdr.p, 1, hdr.n, fp) == hdr.n;
    const size_t count = ul_net_tensor_count(net);
    for (size_t i = 0; ok && i < count; i++) {
        const ul_tensor_info *t = ul_net_tensor(net, i);
        size_t bytes = (size_t)t->numel * dtype_size(t->dtype);
        ok = fwrite(t->data, 1, bytes, fp) == bytes;
    }
    free(hdr.p);
    if (!ok) {
        int e = errno;
        ul_atomic_abort(&f);
        return ul_errorf(err, UL_EIO, "%s: write failed: %s", path, strerror(e));
    }
    return ul_atomic_commit(&f, err);
}

/* ---- reading ------------------------------------------------------------ */

/* One tensor entry of a header, validated. */
typedef struct st_entry {
    const char *name;
    const char *dtype;
    int ndim;
    int64_t shape[8];
    uint64_t begin, end;
} st_entry;

typedef struct st_file {
    FILE *fp;
    ul_json *root;
    const ul_json *meta; /* __metadata__ or NULL */
    st_entry *entries;   /* in header order */
    size_t n_entries;
    uint64_t data_start, data_size;
} st_file;

static void st_close(st_file *f)
{
    if (f->fp)
        fclose(f->fp);
    ul_json_free(f->root);
    free(f->entries);
    memset(f, 0, sizeof *f);
}

/* Element sizes of the safetensors dtypes, so that files we cannot load
 * into a net can still be validated and their metadata read. */
static int st_dtype_size(const char *dt)
{
    static const struct {
        const char *name;
        int size;
    } table[] = {{"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"I64", 8}, {"I32", 4},
                 {"I16", 2}, {"I8", 1},  {"U64", 8}, {"U32", 4},  {"U16", 2}, {"U8", 1},
                 {"BOOL", 1}, {"F8_E4M3", 1}, {"F8_E5M2", 1}};
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (strcmp(table[i].name, dt) == 0)
            return table[i].size;
    return 0;
}

static bool json_uint(const ul_json *j, uint64_t *out)
{
    if (!j || j->type != UL_JSON_NUMBER || !(j->number >= 0) || j->number > ST_MAX_INT ||
        j->number != (double)(uint64_t)j->number)
        return false;
    *out = (uint64_t)j->number;
    return true;
}

static int st_entry_parse(const char *path, const char *name, const ul_json *v, st_entry *e,
                          uint64_t data_size, ul_error *err)
{
    e->name = name;
    if (v->type != UL_JSON_OBJECT)
        return ul_errorf(err, UL_EINVAL, "%s: header entry '%s' is not an object", path, name);
    const ul_json *dt = ul_json_get(v, "dtype"), *sh = ul_json_get(v, "shape"),
                  *off = ul_json_get(v, "data_offsets");
    if (!dt || dt->type != UL_JSON_STRING || !st_dtype_size(dt->string))
        return ul_errorf(err, UL_EINVAL, "%s: tensor '%s' has a missing or unknown dtype", path,
                         name);
    e->dtype = dt->string;
    if (!sh || sh->type != UL_JSON_ARRAY || sh->n > sizeof e->shape / sizeof e->shape[0])
        return ul_errorf(err, UL_EINVAL,
                         "%s: tensor '%s' has a missing shape or more than 8 dimensions", path,
                         name);
    e->ndim = (int)sh->n;
    /* numel·size must equal the byte range, which is at most data_size:
     * bounding the running product by it also rules out overflow. */
    uint64_t bytes = (uint64_t)st_dtype_size(e->dtype);
    bool empty = false;
    for (size_t i = 0; i < sh->n; i++) {
        uint64_t d;
        if (!json_uint(sh->items[i], &d))
            return ul_errorf(err, UL_EINVAL,
                             "%s: tensor '%s': shape entries must be non-negative integers",
                             path, name);
        e->shape[i] = (int64_t)d;
        if (d == 0)
            empty = true;
        else if (!empty && bytes <= data_size)
            bytes = d > data_size / bytes + 1 ? data_size + 1 : bytes * d;
    }
    if (empty)
        bytes = 0;
    uint64_t b, en;
    if (!off || off->type != UL_JSON_ARRAY || off->n != 2 || !json_uint(off->items[0], &b) ||
        !json_uint(off->items[1], &en) || b > en)
        return ul_errorf(err, UL_EINVAL,
                         "%s: tensor '%s': data_offsets must be [begin, end] with begin <= end",
                         path, name);
    if (en > data_size)
        return ul_errorf(err, UL_EINVAL,
                         "%s: truncated: tensor '%s' needs bytes [%" PRIu64 ", %" PRIu64
                         ") of the data but the file holds only %" PRIu64,
                         path, name, b, en, data_size);
    if (en - b != bytes) {
        char s[128];
        shape_text(s, sizeof s, e->ndim, e->shape);
        return ul_errorf(err, UL_EINVAL,
                         "%s: tensor '%s' (%s, shape %s) spans %" PRIu64
                         " bytes, which does not match its dtype and shape",
                         path, name, e->dtype, s, en - b);
    }
    e->begin = b;
    e->end = en;
    return UL_OK;
}

static int entry_by_begin(const void *a, const void *b)
{
    const st_entry *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

/* Opens path and validates the header as a whole: length, JSON, every
 * entry, and that the entries tile the data section exactly. */
static int st_open(const char *path, st_file *f, ul_error *err)
{
    char *text = NULL;
    st_entry *sorted = NULL;
    int rc = UL_OK;
    memset(f, 0, sizeof *f);

    f->fp = fopen(path, "rb");
    if (!f->fp)
        return ul_errorf(err, UL_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f->fp), &st) != 0) {
        rc = ul_errorf(err, UL_EIO, "%s: cannot stat: %s", path, strerror(errno));
        goto fail;
    }
    const uint64_t size = (uint64_t)st.st_size;
    unsigned char len8[8];
    if (size < 8 || fread(len8, 1, 8, f->fp) != 8) {
        rc = ul_errorf(err, UL_EINVAL,
                       "%s: too short for a safetensors file (%" PRIu64 " bytes)", path, size);
        goto fail;
    }
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = n << 8 | len8[i];
    if (n > ST_MAX_HEADER) {
        rc = ul_errorf(err, UL_EINVAL,
                       "%s: header length %" PRIu64
                       " exceeds the 100 MB limit; not a safetensors file?",
                       path, n);
        goto fail;
    }
    if (n > size - 8) {
        rc = ul_errorf(err, UL_EINVAL,
                       "%s: truncated: header length %" PRIu64
                       " but only %" PRIu64 " bytes follow it",
                       path, n, size - 8);
        goto fail;
    }
    text = malloc(n ? n : 1);
    if (!text) {
        rc = ul_errorf(err, UL_ENOMEM, "%s: out of memory for the header", path);
        goto fail;
    }
    if (fread(text, 1, n, f->fp) != n) {
        rc = ul_errorf(err, UL_EIO, "%s: read error in the header", path);
        goto fail;
    }
    if ((rc = ul_json_parse(text, n, &f->root, err))) {
        ul_error_prefix(err, "%s: header", path);
        goto fail;
    }
    if (f->root->type != UL_JSON_OBJECT) {
        rc = ul_errorf(err, UL_EINVAL, "%s: header is not a JSON object", path);
        goto fail;
    }
    f->data_start = 8 + n;
    f->data_size = size - 8 - n;

    f->entries = calloc(f->root->n ? f->root->n : 1, sizeof *f->entries);
    if (!f->entries) {
        rc = ul_errorf(err, UL_ENOMEM, "%s: out of memory for the header", path);
        goto fail;
    }
    for (size_t i = 0; i < f->root->n; i++) {
        const char *key = f->root->keys[i];
        const ul_json *v = f->root->items[i];
        if (strcmp(key, "__metadata__") == 0) {
            if (v->type != UL_JSON_OBJECT) {
                rc = ul_errorf(err, UL_EINVAL, "%s: __metadata__ is not an object", path);
                goto fail;
            }
            for (size_t k = 0; k < v->n; k++) {
                if (v->items[k]->type != UL_JSON_STRING) {
                    rc = ul_errorf(err, UL_EINVAL,
                                   "%s: __metadata__ value of '%s' is not a string", path,
                                   v->keys[k]);
                    goto fail;
                }
            }
            f->meta = v;
            continue;
        }
        if ((rc = st_entry_parse(path, key, v, &f->entries[f->n_entries], f->data_size, err)))
            goto fail;
        f->n_entries++;
    }

    /* The data must be exactly the tensors' bytes, without holes or
     * overlaps: anything else is a corrupt or truncated file. */
    sorted = malloc((f->n_entries ? f->n_entries : 1) * sizeof *sorted);
    if (!sorted) {
        rc = ul_errorf(err, UL_ENOMEM, "%s: out of memory for the header", path);
        goto fail;
    }
    memcpy(sorted, f->entries, f->n_entries * sizeof *sorted);
    qsort(sorted, f->n_entries, sizeof *sorted, entry_by_begin);
    uint64_t at = 0;
    for (size_t i = 0; i < f->n_entries; i++) {
        if (sorted[i].begin != at) {
            rc = ul_errorf(err, UL_EINVAL,
                           "%s: tensor '%s' starts at data byte %" PRIu64
                           " but the previous tensor ends at %" PRIu64
                           "; the data section has holes or overlaps",
                           path, sorted[i].name, sorted[i].begin, at);
            goto fail;
        }
        at = sorted[i].end;
    }
    if (at != f->data_size) {
        rc = ul_errorf(err, UL_EINVAL,
                       "%s: the header describes %" PRIu64 " bytes of data but the file holds %"
                       PRIu64 "; trailing data or a corrupt header",
                       path, at, f->data_size);
        goto fail;
    }
    free(sorted);
    free(text);
    return UL_OK;

fail:
    free(sorted);
    free(text);
    st_close(f);
    return rc;
}

void ul_kv_free(ul_kv *kv, size_t n)
{
    if (!kv)
        return;
    for (size_t i = 0; i < n; i++) {
        free(kv[i].key);
        free(kv[i].value);
    }
    free(kv);
}

const char *ul_kv_get(const ul_kv *meta, size_t n, const char *key)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(meta[i].key, key) == 0)
            return meta[i].value;
    return NULL;
}

int ul_checkpoint_read_metadata(const char *path, ul_kv **meta, size_t *n_meta, ul_error *err)
{
    st_file f;
    *meta = NULL;
    *n_meta = 0;
    int rc = st_open(path, &f, err);
    if (rc)
        return rc;
    size_t n = f.meta ? f.meta->n : 0;
    ul_kv *kv = n ? calloc(n, sizeof *kv) : NULL;
    if (n && !kv) {
        rc = ul_errorf(err, UL_ENOMEM, "%s: out of memory for the metadata", path);
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        kv[i].key = strdup(f.meta->keys[i]);
        kv[i].value = strdup(f.meta->items[i]->string);
        if (!kv[i].key || !kv[i].value) {
            ul_kv_free(kv, n);
            rc = ul_errorf(err, UL_ENOMEM, "%s: out of memory for the metadata", path);
            goto done;
        }
    }
    *meta = kv;
    *n_meta = n;
done:
    st_close(&f);
    return rc;
}

static const st_entry *st_find(const st_file *f, const char *name)
{
    for (size_t i = 0; i < f->n_entries; i++)
        if (strcmp(f->entries[i].name, name) == 0)
            return &f->entries[i];
    return NULL;
}

/* Every check passes before the net is touched, so a refused checkpoint
 * leaves the net as it was. */
static int st_match(const char *path, const st_file *f, const ul_net *net, ul_error *err)
{
    const size_t count = ul_net_tensor_count(net);
    char want[128], have[128];
    for (size_t i = 0; i < count; i++) {
        const ul_tensor_info *t = ul_net_tensor(net, i);
        const st_entry *e = st_find(f, t->name);
        shape_text(want, sizeof want, t->ndim, t->shape);
        if (!e)
            return ul_errorf(err, UL_EINVAL,
                             "%s: checkpoint lacks tensor '%s' (model shape %s); was it saved "
                             "from a different model?",
                             path, t->name, want);
        if (strcmp(e->dtype, dtype_name(t->dtype)) != 0)
            return ul_errorf(err, UL_EINVAL,
                             "%s: tensor '%s' has dtype %s in the checkpoint but %s in the model",
                             path, t->name, e->dtype, dtype_name(t->dtype));
        shape_text(have, sizeof have, e->ndim, e->shape);
        bool same = e->ndim == t->ndim;
        for (int d = 0; same && d < t->ndim; d++)
            same = e->shape[d] == t->shape[d];
        if (!same)
            return ul_errorf(err, UL_EINVAL,
                             "%s: tensor '%s' has shape %s in the checkpoint but %s in the "
                             "model (different width or architecture?)",
                             path, t->name, have, want);
    }
    for (size_t i = 0; i < f->n_entries; i++) {
        if (!ul_net_find_tensor(net, f->entries[i].name)) {
            shape_text(have, sizeof have, f->entries[i].ndim, f->entries[i].shape);
            return ul_errorf(err, UL_EINVAL,
                             "%s: checkpoint has tensor '%s' (shape %s) that the model lacks; "
                             "was it saved from a different model?",
                             path, f->entries[i].name, have);
        }
    }
    return UL_OK;
}

int ul_checkpoint_load(const char *path, ul_net *net, ul_error *err)
{
    st_file f;
    unsigned char *data = NULL;
    int rc = st_open(path, &f, err);
    if (rc)
        return rc;
    if ((rc = st_match(path, &f, net, err)))
        goto done;
    /* Read all data first so that an I/O error cannot leave the net half
     * loaded. */
    data = malloc(f.data_size ? f.data_size : 1);
    if (!data) {
        rc = ul_errorf(err, UL_ENOMEM, "%s: out of memory for %" PRIu64 " bytes of weights",
                       path, f.data_size);
        goto done;
    }
    if (fseeko(f.fp, (off_t)f.data_start, SEEK_SET) != 0 ||
        fread(data, 1, f.data_size, f.fp) != f.data_size) {
        rc = ul_errorf(err, UL_EIO, "%s: read error in the tensor data", path);
        goto done;
    }
    const size_t count = ul_net_tensor_count(net);
    for (size_t i = 0; i < count; i++) {
        const ul_tensor_info *t = ul_net_tensor(net, i);
        const st_entry *e = st_find(&f, t->name);
        memcpy(t->data, data + e->begin, e->end - e->begin);
    }
done:
    free(data);
    st_close(&f);
    return rc;
}
