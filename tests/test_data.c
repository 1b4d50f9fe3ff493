/* Datasets: the IDX reader, the MNIST directory layout, and every dataset
 * plugin loaded through the real plugin loader. */
#include <check.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "plugin_loader.h"
#include "unlearn/dataset.h"

#include "tmpdir.h"

#define FMNIST_DIR "/usr/share/datasets/fashion-mnist"

/* Writes raw bytes to tmpdir/name, gzip-compressed when gz. */
static void write_bytes(const char *name, const void *data, size_t len, bool gz)
{
    char path[512];
    tmp_path(path, sizeof path, name);
    if (gz) {
        gzFile f = gzopen(path, "wb");
        ck_assert_ptr_nonnull(f);
        if (len)
            ck_assert_int_eq(gzwrite(f, data, (unsigned)len), (int)len);
        ck_assert_int_eq(gzclose(f), Z_OK);
    } else {
        FILE *f = fopen(path, "wb");
        ck_assert_ptr_nonnull(f);
        ck_assert_uint_eq(fwrite(data, 1, len, f), len);
        ck_assert_int_eq(fclose(f), 0);
    }
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* An IDX file: magic, ndim big-endian dims, then `payload` bytes of data
 * (which may deliberately disagree with the dims) produced by pixel(i). */
static void write_idx(const char *name, uint32_t magic, const uint32_t *dims, int ndim,
                      size_t payload, bool gz)
{
    size_t len = 4 + 4 * (size_t)ndim + payload;
    uint8_t *buf = malloc(len);
    ck_assert_ptr_nonnull(buf);
    put_be32(buf, magic);
    for (int i = 0; i < ndim; i++)
        put_be32(buf + 4 + 4 * i, dims[i]);
    for (size_t i = 0; i < payload; i++)
        buf[4 + 4 * ndim + i] = (uint8_t)(i * 7 + 3);
    write_bytes(name, buf, len, gz);
    free(buf);
}

static int read_idx(const char *name, int ndim, uint8_t **data, int64_t dims[3], ul_error *err)
{
    char path[512];
    tmp_path(path, sizeof path, name);
    return ul_idx_read(path, ndim, data, dims, err);
}

/* ---- ul_idx_read ---------------------------------------------------------- */

static void check_read_images(bool gz)
{
    const uint32_t dims[3] = {5, 4, 3};
    write_idx("img", 0x803, dims, 3, 60, gz);
    uint8_t *data = NULL;
    int64_t d[3] = {0};
    ul_error err = {0};
    int rc = read_idx("img", 3, &data, d, &err);
    ck_assert_msg(rc == UL_OK, "read failed: %s", err.msg);
    ck_assert_int_eq(d[0], 5);
    ck_assert_int_eq(d[1], 4);
    ck_assert_int_eq(d[2], 3);
    for (int i = 0; i < 60; i++)
        ck_assert_uint_eq(data[i], (uint8_t)(i * 7 + 3));
    free(data);
}

START_TEST(idx_reads_plain_images)
{
    check_read_images(false);
}
END_TEST

START_TEST(idx_reads_gzipped_images)
{
    check_read_images(true);
}
END_TEST

START_TEST(idx_reads_labels)
{
    const uint32_t dims[1] = {9};
    write_idx("lab.gz", 0x801, dims, 1, 9, true);
    uint8_t *data = NULL;
    int64_t d[3] = {0};
    ul_error err = {0};
    ck_assert_int_eq(read_idx("lab.gz", 1, &data, d, &err), UL_OK);
    ck_assert_int_eq(d[0], 9);
    ck_assert_uint_eq(data[8], (uint8_t)(8 * 7 + 3));
    free(data);
}
END_TEST

START_TEST(idx_rejects_bad_magic)
{
    const uint32_t dims[3] = {1, 2, 2};
    write_idx("img", 0x00000c03, dims, 3, 4, false); /* element type 0x0c = float */
    uint8_t *data = NULL;
    int64_t d[3];
    ul_error err = {0};
    ck_assert_int_eq(read_idx("img", 3, &data, d, &err), UL_EINVAL);
    ck_assert_ptr_null(data);
    ck_assert_msg(strstr(err.msg, "not an IDX file") && strstr(err.msg, "0x00000c03") &&
                      strstr(err.msg, "0x00000803") && strstr(err.msg, tmpdir),
                  "got: %s", err.msg);
}
END_TEST

/* A file compressed twice: one gunzip leaves a gzip header, the classic
 * mistake the message must make recognisable. */
START_TEST(idx_rejects_double_gzip)
{
    const uint32_t dims[3] = {2, 3, 3};
    write_idx("inner.gz", 0x803, dims, 3, 18, true);
    char path[512];
    tmp_path(path, sizeof path, "inner.gz");
    FILE *f = fopen(path, "rb");
    uint8_t buf[4096];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    write_bytes("outer.gz", buf, n, true);
    uint8_t *data = NULL;
    int64_t d[3];
    ul_error err = {0};
    ck_assert_int_eq(read_idx("outer.gz", 3, &data, d, &err), UL_EINVAL);
    ck_assert_msg(strstr(err.msg, "not an IDX file") && strstr(err.msg, "magic 0x1f8b08") &&
                      strstr(err.msg, "compressed twice"),
                  "got: %s", err.msg);
}
END_TEST

START_TEST(idx_rejects_wrong_ndim)
{
    const uint32_t dims[1] = {10};
    write_idx("labels", 0x801, dims, 1, 10, false);
    uint8_t *data = NULL;
    int64_t d[3];
    ul_error err = {0};
    ck_assert_int_eq(read_idx("labels", 3, &data, d, &err), UL_EINVAL);
    ck_assert_ptr_null(data);
    ck_assert_msg(strstr(err.msg, "1 dimension") && strstr(err.msg, "need 3") &&
                      strstr(err.msg, "swapped"),
                  "got: %s", err.msg);
}
END_TEST

static void check_truncated(bool gz)
{
    const uint32_t dims[3] = {5, 4, 3};
    write_idx("img", 0x803, dims, 3, 50, gz);
    uint8_t *data = NULL;
    int64_t d[3];
    ul_error err = {0};
    ck_assert_int_eq(read_idx("img", 3, &data, d, &err), UL_EINVAL);
    ck_assert_ptr_null(data);
    ck_assert_msg(strstr(err.msg, "truncated: expected 60 bytes of image data, found 50"),
                  "got: %s", err.msg);
}

START_TEST(idx_rejects_truncated_plain)
{
    check_truncated(false);
}
END_TEST

START_TEST(idx_rejects_truncated_gz)
{
    check_truncated(true);
}
END_TEST

/* A gzip stream cut inside its deflate data: zlib reports the early end. */
START_TEST(idx_rejects_cut_gzip_stream)
{
    const uint32_t dims[3] = {50, 20, 20};
    size_t len = 16 + 20000;
    uint8_t *raw = malloc(len);
    put_be32(raw, 0x803);
    for (int i = 0; i < 3; i++)
        put_be32(raw + 4 + 4 * i, dims[i]);
    uint32_t x = 12345;
    for (size_t i = 16; i < len; i++) { /* incompressible, so the stream is long */
        x = x * 1103515245u + 12345u;
        raw[i] = (uint8_t)(x >> 24);
    }
    write_bytes("full.gz", raw, len, true);
    free(raw);
    char path[512];
    tmp_path(path, sizeof path, "full.gz");
    FILE *f = fopen(path, "rb");
    uint8_t *gzbuf = malloc(len + 1024);
    size_t n = fread(gzbuf, 1, len + 1024, f);
    fclose(f);
    write_bytes("cut.gz", gzbuf, n / 2, false);
    free(gzbuf);
    uint8_t *data = NULL;
    int64_t d[3];
    ul_error err = {0};
    ck_assert_int_lt(read_idx("cut.gz", 3, &data, d, &err), 0);
    ck_assert_ptr_null(data);
    ck_assert_msg(strstr(err.msg, "cut.gz") && strstr(err.msg, "truncated"), "got: %s",
                  err.msg);
}
END_TEST

static void check_trailing(bool gz)
{
    const uint32_t dims[3] = {5, 4, 3};
    write_idx("img", 0x803, dims, 3, 61, gz);
    uint8_t *data = NULL;
    int64_t d[3];
    ul_error err = {0};
    ck_assert_int_eq(read_idx("img", 3, &data, d, &err), UL_EINVAL);
    ck_assert_ptr_null(data);
    ck_assert_msg(strstr(err.msg, "trailing data"), "got: %s", err.msg);
}

START_TEST(idx_rejects_trailing_plain)
{
    check_trailing(false);
}
END_TEST

START_TEST(idx_rejects_trailing_gz)
{
    check_trailing(true);
}
END_TEST

START_TEST(idx_rejects_zero_dim)
{
    const uint32_t dims[3] = {5, 0, 3};
    write_idx("img", 0x803, dims, 3, 0, false);
    uint8_t *data = NULL;
    int64_t d[3];
    ul_error err = {0};
    ck_assert_int_eq(read_idx("img", 3, &data, d, &err), UL_EINVAL);
    ck_assert_msg(strstr(err.msg, "dimension 1 is 0"), "got: %s", err.msg);
}
END_TEST

/* 70000·1000·1000 bytes would be 70 GB: refused from the header alone. */
START_TEST(idx_rejects_absurd_dims)
{
    const uint32_t dims[3] = {70000, 1000, 1000};
    write_idx("img", 0x803, dims, 3, 10, false);
    uint8_t *data = NULL;
    int64_t d[3];
    ul_error err = {0};
    ck_assert_int_eq(read_idx("img", 3, &data, d, &err), UL_EINVAL);
    ck_assert_msg(strstr(err.msg, "corrupt"), "got: %s", err.msg);
}
END_TEST

/* 1 GB declared, a few dozen compressed bytes present: deflate cannot
 * expand that far, so the reader refuses before allocating. */
START_TEST(idx_rejects_impossible_gz_ratio)
{
    const uint32_t dims[3] = {10000, 100, 1000};
    write_idx("img.gz", 0x803, dims, 3, 10, true);
    uint8_t *data = NULL;
    int64_t d[3];
    ul_error err = {0};
    ck_assert_int_eq(read_idx("img.gz", 3, &data, d, &err), UL_EINVAL);
    ck_assert_msg(strstr(err.msg, "truncated") && strstr(err.msg, "1000000000"), "got: %s",
                  err.msg);
}
END_TEST

START_TEST(idx_reports_missing_file)
{
    uint8_t *data = NULL;
    int64_t d[3];
    ul_error err = {0};
    ck_assert_int_eq(read_idx("nope.gz", 1, &data, d, &err), UL_EIO);
    ck_assert_msg(strstr(err.msg, "nope.gz") && strstr(err.msg, "cannot open"), "got: %s",
                  err.msg);
}
END_TEST

START_TEST(idx_rejects_short_header)
{
    const uint8_t two[2] = {0, 0};
    write_bytes("short", two, 2, false);
    uint8_t *data = NULL;
    int64_t d[3];
    ul_error err = {0};
    ck_assert_int_eq(read_idx("short", 1, &data, d, &err), UL_EINVAL);
    ck_assert_msg(strstr(err.msg, "too short"), "got: %s", err.msg);
}
END_TEST

/* ---- fake MNIST directories ------------------------------------------------ */

/* 20 training and 7 test images of 28×28: pixel p of image i is
 * (i + p) mod 256, label i mod 10. Train files gzipped, test files plain,
 * so both spellings of the layout are exercised. */
#define FAKE_TRAIN 20
#define FAKE_TEST 7

static uint8_t fake_pixel(int i, int p)
{
    return (uint8_t)((i + p) % 256);
}

static void write_split(const char *split, int n, int n_labels, int bad_label, bool gz)
{
    const int px = 28 * 28;
    size_t ilen = 16 + (size_t)n * px, llen = 8 + (size_t)n_labels;
    uint8_t *img = malloc(ilen), *lab = malloc(llen);
    put_be32(img, 0x803);
    put_be32(img + 4, (uint32_t)n);
    put_be32(img + 8, 28);
    put_be32(img + 12, 28);
    for (int i = 0; i < n; i++)
        for (int p = 0; p < px; p++)
            img[16 + (size_t)i * px + p] = fake_pixel(i, p);
    put_be32(lab, 0x801);
    put_be32(lab + 4, (uint32_t)n_labels);
    for (int i = 0; i < n_labels; i++)
        lab[8 + i] = (uint8_t)(i == bad_label ? 10 : i % 10);
    char name[128];
    snprintf(name, sizeof name, "%s-images-idx3-ubyte%s", split, gz ? ".gz" : "");
    write_bytes(name, img, ilen, gz);
    snprintf(name, sizeof name, "%s-labels-idx1-ubyte%s", split, gz ? ".gz" : "");
    write_bytes(name, lab, llen, gz);
    free(img);
    free(lab);
}

static void write_fake_mnist(void)
{
    write_split("train", FAKE_TRAIN, FAKE_TRAIN, -1, true);
    write_split("t10k", FAKE_TEST, FAKE_TEST, -1, false);
}

START_TEST(mnist_dir_counts_must_agree)
{
    write_split("train", FAKE_TRAIN, FAKE_TRAIN - 1, -1, true);
    write_split("t10k", FAKE_TEST, FAKE_TEST, -1, false);
    ul_dataset ds = {0};
    ul_error err = {0};
    ck_assert_int_eq(ul_idx_load_dir(tmpdir, 0.5, 0.5, 10, &ds, &err), UL_EINVAL);
    ck_assert_msg(strstr(err.msg, "20 images") && strstr(err.msg, "19 labels"), "got: %s",
                  err.msg);
    ck_assert_ptr_null(ds.train_x);
    ck_assert_ptr_null(ds.test_x);
}
END_TEST

START_TEST(mnist_dir_rejects_label_out_of_range)
{
    write_split("train", FAKE_TRAIN, FAKE_TRAIN, -1, true);
    write_split("t10k", FAKE_TEST, FAKE_TEST, 3, false);
    ul_dataset ds = {0};
    ul_error err = {0};
    ck_assert_int_eq(ul_idx_load_dir(tmpdir, 0.5, 0.5, 10, &ds, &err), UL_EINVAL);
    ck_assert_msg(strstr(err.msg, "t10k-labels-idx1-ubyte") && strstr(err.msg, "label 10") &&
                      strstr(err.msg, "example 3"),
                  "got: %s", err.msg);
    /* The training split had loaded; it must have been released. */
    ck_assert_ptr_null(ds.train_x);
    ck_assert_int_eq(ds.n_train, 0);
}
END_TEST

START_TEST(mnist_dir_reports_missing_files)
{
    write_split("train", FAKE_TRAIN, FAKE_TRAIN, -1, true);
    ul_dataset ds = {0};
    ul_error err = {0};
    ck_assert_int_eq(ul_idx_load_dir(tmpdir, 0.5, 0.5, 10, &ds, &err), UL_EIO);
    ck_assert_msg(strstr(err.msg, "t10k-images-idx3-ubyte.gz") && strstr(err.msg, tmpdir),
                  "got: %s", err.msg);
}
END_TEST

/* ---- plugins through the real loader ---------------------------------------- */

/* Loads dataset plugin `name` with the given key/value pairs (NULL-ended). */
static int load_dataset(const char *name, const char *const *kv, ul_dataset *ds, ul_error *err)
{
    const ul_plugin *p = NULL;
    int rc = ul_plugin_find(UL_KIND_DATASET, name, &p, err);
    if (rc)
        return rc;
    ul_params *params = ul_params_new(p->desc->params, p->desc->n_params, err);
    if (!params)
        return err->code ? err->code : UL_EINVAL;
    for (; kv && kv[0]; kv += 2) {
        if ((rc = ul_params_set(params, kv[0], kv[1], err))) {
            ul_params_free(params);
            return rc;
        }
    }
    memset(ds, 0, sizeof *ds);
    rc = ((const ul_dataset_vtable *)p->desc->vtable)->load(params, ds, err);
    ul_params_free(params);
    return rc;
}

START_TEST(mnist_plugin_loads_fake_dir)
{
    write_fake_mnist();
    const char *kv[] = {"path", tmpdir, NULL};
    ul_dataset ds;
    ul_error err = {0};
    int rc = load_dataset("mnist", kv, &ds, &err);
    ck_assert_msg(rc == UL_OK, "load failed: %s", err.msg);
    ck_assert_int_eq(ds.c, 1);
    ck_assert_int_eq(ds.h, 28);
    ck_assert_int_eq(ds.w, 28);
    ck_assert_int_eq(ds.n_classes, 10);
    ck_assert_int_eq(ds.n_train, FAKE_TRAIN);
    ck_assert_int_eq(ds.n_test, FAKE_TEST);
    ck_assert_msg(strstr(ds.source, tmpdir), "source: %s", ds.source);
    for (int i = 0; i < FAKE_TRAIN; i++)
        ck_assert_int_eq(ds.train_y[i], i % 10);
    for (int i = 0; i < FAKE_TEST; i++)
        ck_assert_int_eq(ds.test_y[i], i % 10);
    /* (v/255 − 0.1307)/0.3081, evaluated by hand for three pixel values:
     * v=0 → −0.42421292, v=100 → 0.84861040, v=255 → 2.82148653. Image 0
     * pixel 0 is 0; image 0 pixel 100 is 100; image 19 pixel 236 is 255. */
    const float tol = 1e-6f;
    ck_assert_float_eq_tol(ds.train_x[0], -0.424212917883804f, tol);
    ck_assert_float_eq_tol(ds.train_x[100], 0.8486103951479976f, tol);
    ck_assert_float_eq_tol(ds.train_x[19 * 784 + 236], 2.82148653034729f, tol);
    /* Every pixel, of both splits, against the formula. */
    for (int i = 0; i < FAKE_TRAIN; i++)
        for (int p = 0; p < 784; p++)
            ck_assert_float_eq_tol(ds.train_x[i * 784 + p],
                                   (fake_pixel(i, p) / 255.0 - 0.1307) / 0.3081, tol);
    for (int i = 0; i < FAKE_TEST; i++)
        for (int p = 0; p < 784; p++)
            ck_assert_float_eq_tol(ds.test_x[i * 784 + p],
                                   (fake_pixel(i, p) / 255.0 - 0.1307) / 0.3081, tol);
    ul_dataset_clear(&ds);
    ck_assert_ptr_null(ds.train_x);
}
END_TEST

START_TEST(mnist_plugin_requires_path)
{
    const ul_plugin *p = NULL;
    ul_error err = {0};
    ck_assert_msg(ul_plugin_find(UL_KIND_DATASET, "mnist", &p, &err) == UL_OK, "%s", err.msg);
    ul_params *params = ul_params_new(p->desc->params, p->desc->n_params, &err);
    ck_assert_ptr_nonnull(params);
    ck_assert_str_eq(ul_params_missing(params), "path");
    ul_params_free(params);
}
END_TEST

START_TEST(mnist_plugin_reports_bad_file)
{
    write_fake_mnist();
    /* Replace the training labels by an images file: wrong ndim. */
    const uint32_t dims[3] = {FAKE_TRAIN, 1, 1};
    write_idx("train-labels-idx1-ubyte.gz", 0x803, dims, 3, FAKE_TRAIN, true);
    const char *kv[] = {"path", tmpdir, NULL};
    ul_dataset ds;
    ul_error err = {0};
    ck_assert_int_eq(load_dataset("mnist", kv, &ds, &err), UL_EINVAL);
    ck_assert_msg(strstr(err.msg, "train-labels-idx1-ubyte.gz") && strstr(err.msg, "swapped"),
                  "got: %s", err.msg);
    ck_assert_ptr_null(ds.train_x);
    ck_assert_ptr_null(ds.test_x);
}
END_TEST

START_TEST(fashion_mnist_plugin_explains_missing_dir)
{
    char missing[512];
    tmp_path(missing, sizeof missing, "not-here");
    const char *kv[] = {"path", missing, NULL};
    ul_dataset ds;
    ul_error err = {0};
    ck_assert_int_eq(load_dataset("fashion_mnist", kv, &ds, &err), UL_EIO);
    ck_assert_msg(strstr(err.msg, missing) && strstr(err.msg, "dataset-fashion-mnist"),
                  "got: %s", err.msg);
}
END_TEST

/* The installed Fashion-MNIST: sizes from its README (60,000/10,000,
 * 6,000/1,000 per class), and normalised training pixels with mean ≈ 0 and
 * std ≈ 1 — which holds only if mean 0.2860 / std 0.3530 are applied. */
START_TEST(fashion_mnist_real_data)
{
    if (access(FMNIST_DIR "/train-images-idx3-ubyte.gz", R_OK) != 0) {
        fprintf(stderr, "skipped: %s not installed (apt-get install dataset-fashion-mnist)\n",
                FMNIST_DIR);
        return;
    }
    ul_dataset ds;
    ul_error err = {0};
    int rc = load_dataset("fashion_mnist", NULL, &ds, &err);
    ck_assert_msg(rc == UL_OK, "load failed: %s", err.msg);
    ck_assert_int_eq(ds.n_train, 60000);
    ck_assert_int_eq(ds.n_test, 10000);
    ck_assert_int_eq(ds.c, 1);
    ck_assert_int_eq(ds.h, 28);
    ck_assert_int_eq(ds.w, 28);
    int64_t train_counts[10] = {0}, test_counts[10] = {0};
    for (int64_t i = 0; i < ds.n_train; i++)
        train_counts[ds.train_y[i]]++;
    for (int64_t i = 0; i < ds.n_test; i++)
        test_counts[ds.test_y[i]]++;
    for (int k = 0; k < 10; k++) {
        ck_assert_int_eq(train_counts[k], 6000);
        ck_assert_int_eq(test_counts[k], 1000);
    }
    double sum = 0, sq = 0;
    const int64_t n = ds.n_train * 784;
    for (int64_t i = 0; i < n; i++) {
        sum += ds.train_x[i];
        sq += (double)ds.train_x[i] * ds.train_x[i];
    }
    double mean = sum / n, sd = sqrt(sq / n - mean * mean);
    ck_assert_msg(fabs(mean) < 0.01 && fabs(sd - 1) < 0.01, "mean %g std %g", mean, sd);
    ul_dataset_clear(&ds);
}
END_TEST

/* ---- CIFAR-10 ---------------------------------------------------------------- */

#define CIFAR_FILE_BYTES 30730000

/* Sparse files of the right size (all-zero records: label 0, black). */
static void write_fake_cifar(long bad_size_for_batch3)
{
    const char *names[] = {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin",
                           "data_batch_4.bin", "data_batch_5.bin", "test_batch.bin"};
    for (int i = 0; i < 6; i++) {
        char path[512];
        tmp_path(path, sizeof path, names[i]);
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        ck_assert_int_ge(fd, 0);
        long size = i == 2 && bad_size_for_batch3 >= 0 ? bad_size_for_batch3 : CIFAR_FILE_BYTES;
        ck_assert_int_eq(ftruncate(fd, size), 0);
        close(fd);
    }
}

static void patch(const char *name, long offset, const uint8_t *bytes, size_t n)
{
    char path[512];
    tmp_path(path, sizeof path, name);
    int fd = open(path, O_WRONLY);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(pwrite(fd, bytes, n, offset), (ssize_t)n);
    close(fd);
}

START_TEST(cifar_rejects_wrong_size)
{
    write_fake_cifar(CIFAR_FILE_BYTES - 3073);
    const char *kv[] = {"path", tmpdir, NULL};
    ul_dataset ds;
    ul_error err = {0};
    ck_assert_int_eq(load_dataset("cifar10", kv, &ds, &err), UL_EINVAL);
    ck_assert_msg(strstr(err.msg, "data_batch_3.bin") && strstr(err.msg, "30726927") &&
                      strstr(err.msg, "30730000"),
                  "got: %s", err.msg);
    ck_assert_ptr_null(ds.train_x);
}
END_TEST

START_TEST(cifar_reports_missing_file)
{
    write_fake_cifar(-1);
    char path[512];
    tmp_path(path, sizeof path, "test_batch.bin");
    remove(path);
    const char *kv[] = {"path", tmpdir, NULL};
    ul_dataset ds;
    ul_error err = {0};
    ck_assert_int_eq(load_dataset("cifar10", kv, &ds, &err), UL_EIO);
    ck_assert_msg(strstr(err.msg, "test_batch.bin"), "got: %s", err.msg);
}
END_TEST

START_TEST(cifar_rejects_bad_label)
{
    write_fake_cifar(-1);
    const uint8_t label = 11;
    patch("data_batch_2.bin", 5L * 3073, &label, 1);
    const char *kv[] = {"path", tmpdir, NULL};
    ul_dataset ds;
    ul_error err = {0};
    ck_assert_int_eq(load_dataset("cifar10", kv, &ds, &err), UL_EINVAL);
    ck_assert_msg(strstr(err.msg, "data_batch_2.bin") && strstr(err.msg, "record 5") &&
                      strstr(err.msg, "label 11"),
                  "got: %s", err.msg);
    ck_assert_ptr_null(ds.train_x);
}
END_TEST

/* Decoding: record layout (label, then R, G, B planes) and per-channel
 * normalisation, evaluated by hand: R 255 → (1 − 0.4914)/0.2470 = 2.05910931,
 * G 0 → −0.4822/0.2435 = −1.98028747, B 128 → (128/255 − 0.4465)/0.2616 =
 * 0.21200606, R 0 → −1.98947368. */
START_TEST(cifar_decodes_records)
{
    write_fake_cifar(-1);
    uint8_t rec[3073] = {0};
    rec[0] = 7;
    rec[1 + 0 * 1024 + 33] = 255; /* R, row 1, col 1 */
    rec[1 + 2 * 1024 + 33] = 128; /* B, row 1, col 1 */
    patch("data_batch_2.bin", 3L * 3073, rec, sizeof rec); /* train example 10003 */
    rec[0] = 9;
    patch("test_batch.bin", 9999L * 3073, rec, sizeof rec); /* last test example */
    const char *kv[] = {"path", tmpdir, NULL};
    ul_dataset ds;
    ul_error err = {0};
    int rc = load_dataset("cifar10", kv, &ds, &err);
    ck_assert_msg(rc == UL_OK, "load failed: %s", err.msg);
    ck_assert_int_eq(ds.n_train, 50000);
    ck_assert_int_eq(ds.n_test, 10000);
    ck_assert_int_eq(ds.c, 3);
    ck_assert_int_eq(ds.h, 32);
    ck_assert_int_eq(ds.w, 32);
    ck_assert_int_eq(ds.n_classes, 10);
    ck_assert_int_eq(ds.train_y[10003], 7);
    ck_assert_int_eq(ds.train_y[10002], 0);
    ck_assert_int_eq(ds.test_y[9999], 9);
    const float tol = 1e-6f;
    const float *x = ds.train_x + (size_t)10003 * 3072;
    ck_assert_float_eq_tol(x[0 * 1024 + 33], 2.0591093117408903f, tol);
    ck_assert_float_eq_tol(x[1 * 1024 + 33], -1.980287474332649f, tol);
    ck_assert_float_eq_tol(x[2 * 1024 + 33], 0.21200605624512797f, tol);
    ck_assert_float_eq_tol(x[0 * 1024 + 34], -1.9894736842105263f, tol);
    const float *t = ds.test_x + (size_t)9999 * 3072;
    ck_assert_float_eq_tol(t[2 * 1024 + 33], 0.21200605624512797f, tol);
    ul_dataset_clear(&ds);
}
END_TEST

/* ---- synthetic ------------------------------------------------------------------ */

START_TEST(synthetic_defaults_and_balance)
{
    ul_dataset ds;
    ul_error err = {0};
    int rc = load_dataset("synthetic", NULL, &ds, &err);
    ck_assert_msg(rc == UL_OK, "load failed: %s", err.msg);
    ck_assert_int_eq(ds.n_train, 1000);
    ck_assert_int_eq(ds.n_test, 500);
    ck_assert_int_eq(ds.n_classes, 4);
    ck_assert_int_eq(ds.c, 1);
    ck_assert_int_eq(ds.h, 1);
    ck_assert_int_eq(ds.w, 2);
    int train_counts[4] = {0}, test_counts[4] = {0};
    bool in_order = true;
    for (int i = 0; i < 1000; i++) {
        ck_assert(ds.train_y[i] >= 0 && ds.train_y[i] < 4);
        train_counts[ds.train_y[i]]++;
        in_order = in_order && ds.train_y[i] == i % 4;
    }
    for (int i = 0; i < 500; i++)
        test_counts[ds.test_y[i]]++;
    for (int k = 0; k < 4; k++) {
        ck_assert_int_eq(train_counts[k], 250);
        ck_assert_int_eq(test_counts[k], 125);
    }
    ck_assert_msg(!in_order, "labels were not shuffled");
    ul_dataset_clear(&ds);
}
END_TEST

/* Both splits share the class means, and examples scatter around them with
 * std = noise. With 250 (125) examples per class and noise 1, the class
 * means' standard error is 0.063 (0.089): tolerances are about 5 sigma. */
START_TEST(synthetic_mixture_statistics)
{
    ul_dataset ds;
    ul_error err = {0};
    int rc = load_dataset("synthetic", NULL, &ds, &err);
    ck_assert_msg(rc == UL_OK, "load failed: %s", err.msg);
    double mtr[4][2] = {{0}}, mte[4][2] = {{0}}, var = 0;
    for (int i = 0; i < 1000; i++)
        for (int j = 0; j < 2; j++)
            mtr[ds.train_y[i]][j] += ds.train_x[i * 2 + j] / 250.0;
    for (int i = 0; i < 500; i++)
        for (int j = 0; j < 2; j++)
            mte[ds.test_y[i]][j] += ds.test_x[i * 2 + j] / 125.0;
    for (int i = 0; i < 1000; i++)
        for (int j = 0; j < 2; j++) {
            double d = ds.train_x[i * 2 + j] - mtr[ds.train_y[i]][j];
            var += d * d / 2000.0;
        }
    for (int k = 0; k < 4; k++)
        for (int j = 0; j < 2; j++)
            ck_assert_msg(fabs(mtr[k][j] - mte[k][j]) < 0.55, "class %d dim %d: %g vs %g", k,
                          j, mtr[k][j], mte[k][j]);
    ck_assert_msg(fabs(sqrt(var) - 1.0) < 0.1, "within-class std %g", sqrt(var));
    ul_dataset_clear(&ds);
}
END_TEST

static bool same_data(const ul_dataset *a, const ul_dataset *b)
{
    int64_t d = ul_dataset_example_size(a);
    return a->n_train == b->n_train && a->n_test == b->n_test &&
           memcmp(a->train_x, b->train_x, (size_t)(a->n_train * d) * sizeof(float)) == 0 &&
           memcmp(a->train_y, b->train_y, (size_t)a->n_train * sizeof(int32_t)) == 0 &&
           memcmp(a->test_x, b->test_x, (size_t)(a->n_test * d) * sizeof(float)) == 0 &&
           memcmp(a->test_y, b->test_y, (size_t)a->n_test * sizeof(int32_t)) == 0;
}

START_TEST(synthetic_is_deterministic)
{
    const char *seed7[] = {"seed", "7", "channels", "2", "height", "3", "width", "3", NULL};
    const char *seed8[] = {"seed", "8", "channels", "2", "height", "3", "width", "3", NULL};
    ul_dataset a, b, c;
    ul_error err = {0};
    ck_assert_msg(load_dataset("synthetic", seed7, &a, &err) == UL_OK, "%s", err.msg);
    ck_assert_msg(load_dataset("synthetic", seed7, &b, &err) == UL_OK, "%s", err.msg);
    ck_assert_msg(load_dataset("synthetic", seed8, &c, &err) == UL_OK, "%s", err.msg);
    ck_assert_int_eq(a.c, 2);
    ck_assert_int_eq(a.h, 3);
    ck_assert_int_eq(a.w, 3);
    ck_assert(same_data(&a, &b));
    ck_assert(!same_data(&a, &c));
    ck_assert(memcmp(a.train_x, c.train_x, 18 * sizeof(float)) != 0);
    ul_dataset_clear(&a);
    ul_dataset_clear(&b);
    ul_dataset_clear(&c);
}
END_TEST

/* Documented: the test set depends only on the seed and the mixture, so a
 * smaller training set leaves it unchanged. */
START_TEST(synthetic_test_set_independent_of_n_train)
{
    const char *big[] = {"n_train", "1000", NULL};
    const char *small[] = {"n_train", "40", NULL};
    ul_dataset a, b;
    ul_error err = {0};
    ck_assert_msg(load_dataset("synthetic", big, &a, &err) == UL_OK, "%s", err.msg);
    ck_assert_msg(load_dataset("synthetic", small, &b, &err) == UL_OK, "%s", err.msg);
    ck_assert_int_eq(b.n_train, 40);
    ck_assert(memcmp(a.test_x, b.test_x, 500 * 2 * sizeof(float)) == 0);
    ck_assert(memcmp(a.test_y, b.test_y, 500 * sizeof(int32_t)) == 0);
    ul_dataset_clear(&a);
    ul_dataset_clear(&b);
}
END_TEST

START_TEST(synthetic_rejects_out_of_range_params)
{
    const ul_plugin *p = NULL;
    ul_error err = {0};
    ck_assert_msg(ul_plugin_find(UL_KIND_DATASET, "synthetic", &p, &err) == UL_OK, "%s",
                  err.msg);
    ul_params *params = ul_params_new(p->desc->params, p->desc->n_params, &err);
    ck_assert_ptr_nonnull(params);
    ck_assert_int_eq(ul_params_set(params, "classes", "1", &err), UL_EINVAL);
    ck_assert_int_eq(ul_params_set(params, "n_train", "0", &err), UL_EINVAL);
    ul_params_free(params);
}
END_TEST

static Suite *data_suite(void)
{
    Suite *s = suite_create("data");
    TCase *tc = tcase_create("idx");
    tcase_add_checked_fixture(tc, tmp_setup, tmp_teardown);
    tcase_add_test(tc, idx_reads_plain_images);
    tcase_add_test(tc, idx_reads_gzipped_images);
    tcase_add_test(tc, idx_reads_labels);
    tcase_add_test(tc, idx_rejects_bad_magic);
    tcase_add_test(tc, idx_rejects_double_gzip);
    tcase_add_test(tc, idx_rejects_wrong_ndim);
    tcase_add_test(tc, idx_rejects_truncated_plain);
    tcase_add_test(tc, idx_rejects_truncated_gz);
    tcase_add_test(tc, idx_rejects_cut_gzip_stream);
    tcase_add_test(tc, idx_rejects_trailing_plain);
    tcase_add_test(tc, idx_rejects_trailing_gz);
    tcase_add_test(tc, idx_rejects_zero_dim);
    tcase_add_test(tc, idx_rejects_absurd_dims);
    tcase_add_test(tc, idx_rejects_impossible_gz_ratio);
    tcase_add_test(tc, idx_reports_missing_file);
    tcase_add_test(tc, idx_rejects_short_header);
    suite_add_tcase(s, tc);

    tc = tcase_create("mnist_layout");
    tcase_add_checked_fixture(tc, tmp_setup, tmp_teardown);
    tcase_add_test(tc, mnist_dir_counts_must_agree);
    tcase_add_test(tc, mnist_dir_rejects_label_out_of_range);
    tcase_add_test(tc, mnist_dir_reports_missing_files);
    suite_add_tcase(s, tc);

    tc = tcase_create("plugins");
    tcase_add_checked_fixture(tc, tmp_setup, tmp_teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, mnist_plugin_loads_fake_dir);
    tcase_add_test(tc, mnist_plugin_requires_path);
    tcase_add_test(tc, mnist_plugin_reports_bad_file);
    tcase_add_test(tc, fashion_mnist_plugin_explains_missing_dir);
    tcase_add_test(tc, fashion_mnist_real_data);
    tcase_add_test(tc, cifar_rejects_wrong_size);
    tcase_add_test(tc, cifar_reports_missing_file);
    tcase_add_test(tc, cifar_rejects_bad_label);
    tcase_add_test(tc, cifar_decodes_records);
    tcase_add_test(tc, synthetic_defaults_and_balance);
    tcase_add_test(tc, synthetic_mixture_statistics);
    tcase_add_test(tc, synthetic_is_deterministic);
    tcase_add_test(tc, synthetic_test_set_independent_of_n_train);
    tcase_add_test(tc, synthetic_rejects_out_of_range_params);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(data_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
