/* Seeded Gaussian mixtures: a dataset that needs no files, for tests,
 * quick starts and sanity checks of the unlearning pipeline.
 *
 * Class k has a mean vector m_k drawn once from N(0, separation² I) in
 * dim = channels·height·width dimensions; an example of class k is
 * m_k + N(0, noise² I). Example i of each split has class i mod classes
 * (balanced), then the split is shuffled. Means, training and test data use
 * separate RNG streams of the seed, so changing n_train leaves the class
 * means and the test set unchanged. */
#include <stdio.h>
#include <stdlib.h>

#include "unlearn/plugin.h"

/* Refuse sizes whose float arrays would exceed 8 GB. */
#define SYN_MAX_FLOATS (INT64_C(1) << 31)

enum { SYN_STREAM_MEANS = 1, SYN_STREAM_TRAIN = 2, SYN_STREAM_TEST = 3 };

static const ul_param_def syn_params[] = {
    UL_PARAM_INT("seed", "0", 0, 9007199254740991.0, "seed of the class means and examples"),
    UL_PARAM_INT("n_train", "1000", 1, 100000000, "training examples"),
    UL_PARAM_INT("n_test", "500", 1, 100000000, "test examples"),
    UL_PARAM_INT("classes", "4", 2, 100000, "number of classes (mixture components)"),
    UL_PARAM_INT("channels", "1", 1, 4096, "image channels C"),
    UL_PARAM_INT("height", "1", 1, 4096, "image height H"),
    UL_PARAM_INT("width", "2", 1, 4096, "image width W; examples have C*H*W dimensions"),
    UL_PARAM_DOUBLE("separation", "3.0", 0, 1e6,
                    "std of the class means: each mean is drawn from N(0, separation^2 I)"),
    UL_PARAM_DOUBLE("noise", "1.0", 0, 1e6,
                    "std of the examples around their class mean: N(0, noise^2 I)"),
};

/* One split: balanced labels, shuffled, examples around the class means. */
static void syn_split(uint64_t seed, uint64_t stream, int64_t n, int64_t dim, int classes,
                      const float *means, double noise, int64_t *order, float *x, int32_t *y)
{
    ul_rng rng;
    ul_rng_seed(&rng, seed, stream);
    for (int64_t i = 0; i < n; i++)
        order[i] = i % classes;
    ul_rng_shuffle_i64(&rng, order, n);
    for (int64_t i = 0; i < n; i++) {
        y[i] = (int32_t)order[i];
        const float *m = means + order[i] * dim;
        for (int64_t j = 0; j < dim; j++)
            x[i * dim + j] = (float)(m[j] + noise * ul_rng_normal(&rng));
    }
}

static int syn_load(const ul_params *params, ul_dataset *out, ul_error *err)
{
    const uint64_t seed = (uint64_t)ul_params_int(params, "seed");
    const int64_t n_train = ul_params_int(params, "n_train");
    const int64_t n_test = ul_params_int(params, "n_test");
    const int64_t classes = ul_params_int(params, "classes");
    const int64_t c = ul_params_int(params, "channels");
    const int64_t h = ul_params_int(params, "height");
    const int64_t w = ul_params_int(params, "width");
    const double separation = ul_params_double(params, "separation");
    const double noise = ul_params_double(params, "noise");

    if (n_train < 1 || n_test < 1 || classes < 2 || c < 1 || h < 1 || w < 1)
        return ul_errorf(err, UL_EINVAL,
                         "synthetic: n_train, n_test, channels, height and width must be >= 1 "
                         "and classes >= 2");
    const int64_t dim = c * h * w;
    if (dim > SYN_MAX_FLOATS / (n_train + n_test + classes))
        return ul_errorf(err, UL_EINVAL,
                         "synthetic: %lld examples of %lld dimensions exceed the %lld-value "
                         "limit; reduce n_train, n_test or the image size",
                         (long long)(n_train + n_test), (long long)dim,
                         (long long)SYN_MAX_FLOATS);

    ul_dataset d = {0};
    int rc = UL_OK;
    float *means = malloc((size_t)(classes * dim) * sizeof *means);
    int64_t *order = malloc((size_t)(n_train > n_test ? n_train : n_test) * sizeof *order);
    d.train_x = malloc((size_t)(n_train * dim) * sizeof(float));
    d.train_y = malloc((size_t)n_train * sizeof(int32_t));
    d.test_x = malloc((size_t)(n_test * dim) * sizeof(float));
    d.test_y = malloc((size_t)n_test * sizeof(int32_t));
    if (!means || !order || !d.train_x || !d.train_y || !d.test_x || !d.test_y) {
        rc = ul_errorf(err, UL_ENOMEM, "synthetic: out of memory for %lld examples",
                       (long long)(n_train + n_test));
        goto cleanup;
    }

    ul_rng rng;
    ul_rng_seed(&rng, seed, SYN_STREAM_MEANS);
    for (int64_t i = 0; i < classes * dim; i++)
        means[i] = (float)(separation * ul_rng_normal(&rng));
    syn_split(seed, SYN_STREAM_TRAIN, n_train, dim, (int)classes, means, noise, order,
              d.train_x, d.train_y);
    syn_split(seed, SYN_STREAM_TEST, n_test, dim, (int)classes, means, noise, order, d.test_x,
              d.test_y);

    d.c = (int)c;
    d.h = (int)h;
    d.w = (int)w;
    d.n_classes = (int)classes;
    d.n_train = n_train;
    d.n_test = n_test;
    snprintf(d.source, sizeof d.source,
             "synthetic:seed=%llu,classes=%lld,dim=%lldx%lldx%lld,separation=%g,noise=%g",
             (unsigned long long)seed, (long long)classes, (long long)c, (long long)h,
             (long long)w, separation, noise);
    *out = d;

cleanup:
    free(means);
    free(order);
    if (rc)
        ul_dataset_clear(&d);
    return rc;
}

static const ul_dataset_vtable syn_vtable = {sizeof(ul_dataset_vtable), syn_load};

UL_PLUGIN(UL_KIND_DATASET, "synthetic", "1.0.0",
          "seeded Gaussian mixture with balanced classes (no files needed)", syn_params,
          &syn_vtable);
