/* CIFAR-10 (Krizhevsky 2009), binary version: 50,000 training and 10,000
 * test 32×32 colour images in 10 classes. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "unlearn/plugin.h"

#define CIFAR_C 3
#define CIFAR_HW 32
#define CIFAR_PIXELS (CIFAR_C * CIFAR_HW * CIFAR_HW)
#define CIFAR_RECORD (1 + CIFAR_PIXELS) /* label byte, then R, G, B planes */
#define CIFAR_PER_FILE 10000
#define CIFAR_FILE_BYTES ((int64_t)CIFAR_RECORD * CIFAR_PER_FILE)
#define CIFAR_TRAIN_FILES 5

/* Per-channel mean and std of the training pixels scaled to [0, 1]. */
static const double cifar_mean[CIFAR_C] = {0.4914, 0.4822, 0.4465};
static const double cifar_std[CIFAR_C] = {0.2470, 0.2435, 0.2616};

static const ul_param_def cifar_params[] = {
    UL_PARAM_STRING("path", NULL,
                    "directory holding data_batch_1..5.bin and test_batch.bin (the "
                    "'CIFAR-10 binary version')"),
};

static void cifar_file(const char *dir, int i, char *path, size_t cap)
{
    if (i < CIFAR_TRAIN_FILES)
        snprintf(path, cap, "%s/data_batch_%d.bin", dir, i + 1);
    else
        snprintf(path, cap, "%s/test_batch.bin", dir);
}

/* Decodes one batch file into x (CIFAR_PER_FILE images) and y. */
static int cifar_read(const char *path, const float lut[CIFAR_C][256], uint8_t *buf, float *x,
                      int32_t *y, ul_error *err)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return ul_errorf(err, UL_EIO, "%s: cannot open: %s", path, strerror(errno));
    size_t got = fread(buf, 1, (size_t)CIFAR_FILE_BYTES, fp);
    int bad = ferror(fp);
    fclose(fp);
    if (bad)
        return ul_errorf(err, UL_EIO, "%s: read error", path);
    if ((int64_t)got != CIFAR_FILE_BYTES)
        return ul_errorf(err, UL_EINVAL, "%s: truncated: expected %lld bytes, read %zu", path,
                         (long long)CIFAR_FILE_BYTES, got);
    for (int r = 0; r < CIFAR_PER_FILE; r++) {
        const uint8_t *rec = buf + (size_t)r * CIFAR_RECORD;
        if (rec[0] >= 10)
            return ul_errorf(err, UL_EINVAL,
                             "%s: record %d has label %d, not below 10; is this the CIFAR-100 "
                             "file or a corrupt one?",
                             path, r, rec[0]);
        y[r] = rec[0];
        float *img = x + (size_t)r * CIFAR_PIXELS;
        for (int c = 0; c < CIFAR_C; c++)
            for (int p = 0; p < CIFAR_HW * CIFAR_HW; p++)
                img[c * CIFAR_HW * CIFAR_HW + p] = lut[c][rec[1 + c * CIFAR_HW * CIFAR_HW + p]];
    }
    return UL_OK;
}

static int cifar_load(const ul_params *params, ul_dataset *out, ul_error *err)
{
    const char *dir = ul_params_string(params, "path");
    if (!dir || !*dir)
        return ul_errorf(err, UL_EINVAL,
                         "cifar10: parameter 'path' is required: the directory with "
                         "data_batch_1..5.bin and test_batch.bin");

    char path[4096];
    /* Check every file's size before allocating ~700 MB. */
    for (int i = 0; i <= CIFAR_TRAIN_FILES; i++) {
        cifar_file(dir, i, path, sizeof path);
        struct stat st;
        if (stat(path, &st) != 0)
            return ul_errorf(err, UL_EIO, "%s: cannot open: %s", path, strerror(errno));
        if ((int64_t)st.st_size != CIFAR_FILE_BYTES)
            return ul_errorf(err, UL_EINVAL,
                             "%s: has %lld bytes, expected %lld (10000 records of 1 label + "
                             "3072 pixel bytes); use the CIFAR-10 binary version",
                             path, (long long)st.st_size, (long long)CIFAR_FILE_BYTES);
    }

    float lut[CIFAR_C][256];
    for (int c = 0; c < CIFAR_C; c++)
        for (int v = 0; v < 256; v++)
            lut[c][v] = (float)((v / 255.0 - cifar_mean[c]) / cifar_std[c]);

    ul_dataset d = {0};
    int rc = UL_OK;
    uint8_t *buf = malloc((size_t)CIFAR_FILE_BYTES);
    d.n_train = (int64_t)CIFAR_TRAIN_FILES * CIFAR_PER_FILE;
    d.n_test = CIFAR_PER_FILE;
    d.train_x = malloc((size_t)d.n_train * CIFAR_PIXELS * sizeof(float));
    d.train_y = malloc((size_t)d.n_train * sizeof(int32_t));
    d.test_x = malloc((size_t)d.n_test * CIFAR_PIXELS * sizeof(float));
    d.test_y = malloc((size_t)d.n_test * sizeof(int32_t));
    if (!buf || !d.train_x || !d.train_y || !d.test_x || !d.test_y) {
        rc = ul_errorf(err, UL_ENOMEM, "cifar10: out of memory for 60000 images");
        goto cleanup;
    }
    for (int i = 0; i <= CIFAR_TRAIN_FILES; i++) {
        cifar_file(dir, i, path, sizeof path);
        float *x = i < CIFAR_TRAIN_FILES ? d.train_x + (size_t)i * CIFAR_PER_FILE * CIFAR_PIXELS
                                         : d.test_x;
        int32_t *y = i < CIFAR_TRAIN_FILES ? d.train_y + (size_t)i * CIFAR_PER_FILE : d.test_y;
        if ((rc = cifar_read(path, (const float(*)[256])lut, buf, x, y, err)))
            goto cleanup;
    }
    d.c = CIFAR_C;
    d.h = d.w = CIFAR_HW;
    d.n_classes = 10;
    snprintf(d.source, sizeof d.source, "cifar10:%s", dir);
    *out = d;

cleanup:
    free(buf);
    if (rc)
        ul_dataset_clear(&d);
    return rc;
}

static const ul_dataset_vtable cifar_vtable = {sizeof(ul_dataset_vtable), cifar_load};

UL_PLUGIN(UL_KIND_DATASET, "cifar10", "1.0.0",
          "CIFAR-10 binary version: 32x32 colour images, 10 classes, 50000 train / 10000 test",
          cifar_params, &cifar_vtable);
