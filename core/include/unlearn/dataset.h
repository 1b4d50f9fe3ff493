/* unlearn — in-memory datasets as dataset plugins return them. */
#ifndef UNLEARN_DATASET_H
#define UNLEARN_DATASET_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Images are float32 NCHW, already normalised ((x/255 − mean)/std per
 * channel). All arrays are allocated by the dataset plugin with malloc()
 * and released by the host with ul_dataset_clear(). */
typedef struct ul_dataset {
    int c, h, w;
    int n_classes;
    int64_t n_train, n_test;
    float *train_x;
    int32_t *train_y;
    float *test_x;
    int32_t *test_y;
    char source[512]; /* where the data came from, for logs and results */
} ul_dataset;

UL_API void ul_dataset_clear(ul_dataset *d);
static inline int64_t ul_dataset_example_size(const ul_dataset *d)
{
    return (int64_t)d->c * d->h * d->w;
}

/* IDX (MNIST-style, optionally gzip-compressed) reader shared by dataset
 * plugins. Validates magic, dimensions and the file size before allocating.
 * On success *data (malloc) holds the u8 payload and dims[0..ndim-1] the
 * dimensions. expected_ndim is 1 (labels) or 3 (images). */
UL_API int ul_idx_read(const char *path, int expected_ndim, uint8_t **data, int64_t dims[3],
                       ul_error *err);
/* The MNIST directory layout, shared by MNIST-like dataset plugins:
 * dir/{train,t10k}-{images-idx3,labels-idx1}-ubyte, each optionally .gz.
 * Fills out with 1×H×W images normalised as (x/255 − mean)/std and labels
 * that must be below n_classes; on error nothing stays allocated. */
UL_API int ul_idx_load_dir(const char *dir, double mean, double std, int n_classes,
                           ul_dataset *out, ul_error *err);

#ifdef __cplusplus
}
#endif
#endif
