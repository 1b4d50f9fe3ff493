/* Private: YAML pipelines — parsing and validation up front (nothing is
 * written before the whole file is known to be valid), then the run. */
#ifndef UL_PIPELINE_H
#define UL_PIPELINE_H

#include <stdio.h>

#include "unlearn/dataset.h"
#include "unlearn/train.h"
#include "yaml_doc.h"

#define UL_MAX_WIDTHS 64

typedef struct ul_pipeline {
    ul_yaml_doc *doc;
    char config_path[4096];
    uint64_t seed;
    /* dataset */
    char dataset[128];
    ul_params *dataset_params;
    ul_params *split;       /* val_fraction, subset, test_subset */
    /* model */
    char model[128];
    ul_params *model_params;
    double widths[UL_MAX_WIDTHS];
    size_t n_widths;
    /* train */
    ul_params *train;
    ul_params *augment;
    char output[4096];
} ul_pipeline;

int ul_pipeline_load(const char *path, ul_pipeline **out, ul_error *err);
void ul_pipeline_free(ul_pipeline *p);
/* Runs the pipeline into run_dir (NULL: the config's `output`). Progress
 * and a summary go to `log` (may be NULL). */
int ul_pipeline_run(ul_pipeline *p, const char *run_dir, FILE *log, ul_error *err);

/* ---- pieces shared with `unlearn eval` ----------------------------------- */
typedef struct ul_splits {
    int64_t *train, *val, *test;  /* indices into the dataset's train/test arrays */
    int64_t n_train, n_val, n_test;
} ul_splits;

/* Loads a dataset through its plugin. */
int ul_dataset_load_plugin(const char *name, const ul_params *params, ul_dataset *out,
                           ul_error *err);
/* Stratified subset and validation split of the training data, stratified
 * subset of the test data (0 = all), all from `seed`. */
int ul_splits_make(const ul_dataset *d, double val_fraction, int64_t subset, int64_t test_subset,
                   uint64_t seed, ul_splits *out, ul_error *err);
void ul_splits_free(ul_splits *s);
/* Per channel, the normalised value of a raw 0 pixel: the minimum of the
 * channel over the training images (every image set has black pixels). */
void ul_dataset_pad_values(const ul_dataset *d, float pad[3]);
/* The training recipe from a pipeline's `train` and `train.augment` blocks. */
void ul_train_cfg_from_params(const ul_params *train, const ul_params *augment, uint64_t seed,
                              ul_train_cfg *cfg);

#endif
