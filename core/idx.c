/* IDX files (the MNIST family's format), plain or gzip-compressed, and the
 * MNIST directory layout built on them. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "unlearn/dataset.h"

/* Payloads at or above this are refused before allocating: far beyond any
 * IDX dataset, and small enough that a corrupt header cannot make us ask
 * for an absurd allocation. */
#define UL_IDX_MAX_BYTES (INT64_C(1) << 31)

/* Deflate cannot compress better than about 1032:1, so a compressed file
 * of S bytes never expands to more than this many bytes. Lets us refuse a
 * tiny .gz whose header claims gigabytes before allocating anything. */
#define UL_DEFLATE_MAX_RATIO 1040

static const char *idx_what(int ndim)
{
    return ndim == 1 ? "label data" : "image data";
}

static uint32_t be32(const unsigned char *b)
{
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | (uint32_t)b[3];
}

/* Reads up to len bytes; returns the count read, or -1 on a stream error
 * (corrupt compressed data, I/O error). A compressed stream that ends
 * early reads short, as a short plain file does. */
static int64_t gz_read_all(gzFile gz, void *buf, int64_t len)
{
    int64_t done = 0;
    while (done < len) {
        int64_t want = len - done;
        if (want > (1 << 24))
            want = 1 << 24;
        int got = gzread(gz, (char *)buf + done, (unsigned)want);
        if (got < 0)
            return -1;
        if (got == 0)
            break;
        done += got;
    }
    return done;
}

static int gz_fail(gzFile gz, const char *path, ul_error *err)
{
    int zerr = Z_OK;
    const char *msg = gzerror(gz, &zerr);
    if (zerr == Z_ERRNO)
        return ul_errorf(err, UL_EIO, "%s: read error: %s", path, strerror(errno));
    return ul_errorf(err, UL_EINVAL, "%s: corrupt compressed data (%s)", path,
                     msg && *msg ? msg : "zlib error");
}

int ul_idx_read(const char *path, int expected_ndim, uint8_t **data, int64_t dims[3],
                ul_error *err)
{
    gzFile gz = NULL;
    uint8_t *payload = NULL;
    int rc = UL_OK;
    *data = NULL;

    if (expected_ndim < 1 || expected_ndim > 3)
        return ul_errorf(err, UL_EINVAL, "%s: cannot read IDX files with %d dimensions",
                         path, expected_ndim);
    const uint32_t want_magic = 0x00000800u | (uint32_t)expected_ndim;

    struct stat st;
    if (stat(path, &st) != 0)
        return ul_errorf(err, UL_EIO, "%s: cannot open: %s", path, strerror(errno));
    gz = gzopen(path, "rb");
    if (!gz)
        return ul_errorf(err, errno == ENOMEM ? UL_ENOMEM : UL_EIO, "%s: cannot open: %s",
                         path, errno ? strerror(errno) : "out of memory");

    unsigned char head[4 + 4 * 3];
    int64_t got = gz_read_all(gz, head, 4);
    if (got < 0) {
        rc = gz_fail(gz, path, err);
        goto cleanup;
    }
    if (got < 4) {
        rc = ul_errorf(err, UL_EINVAL, "%s: too short for an IDX file (%lld bytes)", path,
                       (long long)got);
        goto cleanup;
    }
    uint32_t magic = be32(head);
    /* Bytes 0-1 are zero and byte 2 is the element type (0x08 = u8) in
     * every IDX file; anything else is not IDX at all. */
    if ((magic & 0xffffff00u) != 0x00000800u) {
        rc = ul_errorf(err, UL_EINVAL,
                       "%s: not an IDX file of unsigned bytes (magic 0x%08x); expected "
                       "0x%08x for %s%s",
                       path, magic, want_magic, expected_ndim == 1 ? "labels" : "images",
                       (magic >> 16) == 0x1f8b ? " (the file was gzip-compressed twice?)" : "");
        goto cleanup;
    }
    int ndim = (int)(magic & 0xffu);
    if (ndim != expected_ndim) {
        rc = ul_errorf(err, UL_EINVAL,
                       "%s: IDX file has %d dimension(s) (magic 0x%08x) but %s need %d "
                       "(magic 0x%08x); are the images and labels files swapped?",
                       path, ndim, magic, expected_ndim == 1 ? "labels" : "images",
                       expected_ndim, want_magic);
        goto cleanup;
    }

    got = gz_read_all(gz, head + 4, 4 * (int64_t)ndim);
    if (got < 0) {
        rc = gz_fail(gz, path, err);
        goto cleanup;
    }
    if (got < 4 * ndim) {
        rc = ul_errorf(err, UL_EINVAL, "%s: truncated IDX header (%d dimension sizes expected)",
                       path, ndim);
        goto cleanup;
    }
    int64_t total = 1;
    for (int i = 0; i < ndim; i++) {
        uint32_t d = be32(head + 4 + 4 * i);
        if (d == 0) {
            rc = ul_errorf(err, UL_EINVAL, "%s: dimension %d is 0; the file holds no data",
                           path, i);
            goto cleanup;
        }
        if ((int64_t)d > UL_IDX_MAX_BYTES / total) {
            rc = ul_errorf(err, UL_EINVAL,
                           "%s: dimensions claim more than %lld bytes of %s; the header is "
                           "corrupt",
                           path, (long long)UL_IDX_MAX_BYTES, idx_what(ndim));
            goto cleanup;
        }
        total *= d;
        dims[i] = d;
    }
    const int64_t header_bytes = 4 + 4 * (int64_t)ndim;

    /* Check the dims against the file before allocating: exactly for a
     * plain file, by deflate's best possible ratio for a compressed one. */
    if (gzdirect(gz)) {
        int64_t have = (int64_t)st.st_size - header_bytes;
        if (have < total) {
            rc = ul_errorf(err, UL_EINVAL,
                           "%s: truncated: expected %lld bytes of %s, found %lld", path,
                           (long long)total, idx_what(ndim), (long long)have);
            goto cleanup;
        }
        if (have > total) {
            rc = ul_errorf(err, UL_EINVAL,
                           "%s: %lld bytes of trailing data after the %lld bytes of %s the "
                           "header declares; the file is corrupt",
                           path, (long long)(have - total), (long long)total, idx_what(ndim));
            goto cleanup;
        }
    } else if (total / UL_DEFLATE_MAX_RATIO > (int64_t)st.st_size) {
        rc = ul_errorf(err, UL_EINVAL,
                       "%s: truncated: the header declares %lld bytes of %s but the "
                       "compressed file has only %lld bytes",
                       path, (long long)total, idx_what(ndim), (long long)st.st_size);
        goto cleanup;
    }

    payload = malloc((size_t)total);
    if (!payload) {
        rc = ul_errorf(err, UL_ENOMEM, "%s: out of memory for %lld bytes of %s", path,
                       (long long)total, idx_what(ndim));
        goto cleanup;
    }
    got = gz_read_all(gz, payload, total);
    if (got < 0) {
        rc = gz_fail(gz, path, err);
        goto cleanup;
    }
    if (got < total) {
        rc = ul_errorf(err, UL_EINVAL, "%s: truncated: expected %lld bytes of %s, found %lld",
                       path, (long long)total, idx_what(ndim), (long long)got);
        goto cleanup;
    }
    unsigned char extra[64];
    int64_t more = gz_read_all(gz, extra, sizeof extra);
    if (more < 0) {
        rc = gz_fail(gz, path, err);
        goto cleanup;
    }
    if (more > 0) {
        rc = ul_errorf(err, UL_EINVAL,
                       "%s: trailing data after the %lld bytes of %s the header declares; the "
                       "file is corrupt",
                       path, (long long)total, idx_what(ndim));
        goto cleanup;
    }
    /* All the data arrived but the gzip trailer (CRC, size) did not. */
    int zerr = Z_OK;
    gzerror(gz, &zerr);
    if (zerr == Z_BUF_ERROR) {
        rc = ul_errorf(err, UL_EINVAL, "%s: truncated: the compressed stream ends early", path);
        goto cleanup;
    }

    *data = payload;
    payload = NULL;

cleanup:
    free(payload);
    if (gz)
        gzclose(gz);
    return rc;
}

/* ---- MNIST directory layout -------------------------------------------- */

/* Picks <dir>/<stem>.gz, else <dir>/<stem>. */
static int idx_find(const char *dir, const char *stem, char *path, size_t cap, ul_error *err)
{
    snprintf(path, cap, "%s/%s.gz", dir, stem);
    struct stat st;
    if (stat(path, &st) == 0)
        return UL_OK;
    snprintf(path, cap, "%s/%s", dir, stem);
    if (stat(path, &st) == 0)
        return UL_OK;
    return ul_errorf(err, UL_EIO, "%s: neither %s.gz nor %s exists in this directory", dir, stem,
                     stem);
}

/* One split: images (n, h, w) and labels (n), normalised and checked. */
static int idx_load_split(const char *dir, const char *split, const float lut[256],
                          int n_classes, float **x, int32_t **y, int64_t *n, int64_t hw[2],
                          ul_error *err)
{
    char ipath[4096], lpath[4096], stem[64];
    uint8_t *img = NULL, *lab = NULL;
    float *xs = NULL;
    int32_t *ys = NULL;
    int64_t idims[3], ldims[3];
    int rc;

    snprintf(stem, sizeof stem, "%s-images-idx3-ubyte", split);
    if ((rc = idx_find(dir, stem, ipath, sizeof ipath, err)))
        goto cleanup;
    snprintf(stem, sizeof stem, "%s-labels-idx1-ubyte", split);
    if ((rc = idx_find(dir, stem, lpath, sizeof lpath, err)))
        goto cleanup;
    if ((rc = ul_idx_read(ipath, 3, &img, idims, err)))
        goto cleanup;
    if ((rc = ul_idx_read(lpath, 1, &lab, ldims, err)))
        goto cleanup;
    if (idims[0] != ldims[0]) {
        rc = ul_errorf(err, UL_EINVAL, "%s holds %lld images but %s holds %lld labels", ipath,
                       (long long)idims[0], lpath, (long long)ldims[0]);
        goto cleanup;
    }
    const int64_t count = idims[0], size = idims[1] * idims[2];
    for (int64_t i = 0; i < count; i++) {
        if (lab[i] >= n_classes) {
            rc = ul_errorf(err, UL_EINVAL, "%s: label %d of example %lld is not below %d classes",
                           lpath, lab[i], (long long)i, n_classes);
            goto cleanup;
        }
    }
    xs = malloc((size_t)(count * size) * sizeof *xs);
    ys = malloc((size_t)count * sizeof *ys);
    if (!xs || !ys) {
        rc = ul_errorf(err, UL_ENOMEM, "%s: out of memory for %lld images", ipath,
                       (long long)count);
        goto cleanup;
    }
    for (int64_t i = 0; i < count * size; i++)
        xs[i] = lut[img[i]];
    for (int64_t i = 0; i < count; i++)
        ys[i] = lab[i];
    *x = xs;
    *y = ys;
    *n = count;
    hw[0] = idims[1];
    hw[1] = idims[2];
    xs = NULL;
    ys = NULL;

cleanup:
    free(img);
    free(lab);
    free(xs);
    free(ys);
    return rc;
}

int ul_idx_load_dir(const char *dir, double mean, double std, int n_classes, ul_dataset *out,
                    ul_error *err)
{
    ul_dataset d = {0};
    int64_t train_hw[2], test_hw[2];
    float lut[256];
    int rc;

    if (!(std > 0))
        return ul_errorf(err, UL_EINVAL, "%s: normalisation std must be positive", dir);
    /* Normalise in double, as (x/255 − mean)/std, then round once. */
    for (int v = 0; v < 256; v++)
        lut[v] = (float)((v / 255.0 - mean) / std);

    rc = idx_load_split(dir, "train", lut, n_classes, &d.train_x, &d.train_y, &d.n_train,
                        train_hw, err);
    if (rc)
        goto fail;
    rc = idx_load_split(dir, "t10k", lut, n_classes, &d.test_x, &d.test_y, &d.n_test, test_hw,
                        err);
    if (rc)
        goto fail;
    if (train_hw[0] != test_hw[0] || train_hw[1] != test_hw[1]) {
        rc = ul_errorf(err, UL_EINVAL,
                       "%s: training images are %lldx%lld but test images are %lldx%lld", dir,
                       (long long)train_hw[0], (long long)train_hw[1], (long long)test_hw[0],
                       (long long)test_hw[1]);
        goto fail;
    }
    if (train_hw[0] > INT_MAX || train_hw[1] > INT_MAX) {
        rc = ul_errorf(err, UL_EINVAL, "%s: images of %lldx%lld pixels are too large", dir,
                       (long long)train_hw[0], (long long)train_hw[1]);
        goto fail;
    }
    d.c = 1;
    d.h = (int)train_hw[0];
    d.w = (int)train_hw[1];
    d.n_classes = n_classes;
    snprintf(d.source, sizeof d.source, "%s", dir);
    *out = d;
    return UL_OK;

fail:
    ul_dataset_clear(&d);
    return rc;
}
