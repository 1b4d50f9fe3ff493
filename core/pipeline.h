/* Private: YAML pipelines — parsing and validation up front (nothing is
 * written before the whole file is known to be valid), then the run. */
#ifndef UL_PIPELINE_H
#define UL_PIPELINE_H

#include <stdio.h>

#include "unlearn/dataset.h"
#include "unlearn/train.h"
#include "yaml_doc.h"

#define UL_MAX_WIDTHS 64
#define UL_MAX_SEEDS 64
#define UL_MAX_METHODS 32
#define UL_MAX_GOALS 16
#define UL_MAX_LAMBDAS 32
#define UL_MAX_METRICS 32
#define UL_MAX_GRID 4096
#define UL_MAX_FORGET_CLASSES 64

typedef enum ul_forget_selection {
    UL_FORGET_RANDOM = 1,
    UL_FORGET_CLASSES,
    UL_FORGET_MISLABELED
} ul_forget_selection;

typedef struct ul_forget_spec {
    bool enabled;               /* the pipeline has a `forget` section */
    int64_t size;
    ul_forget_selection selection;
    int32_t classes[UL_MAX_FORGET_CLASSES];
    int n_classes;
    int32_t target;             /* mislabeled: the planted label */
    uint64_t seed;
    char indices_file[4096];    /* reuse an exact set (indices into the training data) */
    bool retrain;               /* train the gold standard on R */
} ul_forget_spec;

typedef struct ul_method_spec {
    char name[128];             /* plugin */
    char label[128];            /* name in results (default: the plugin name) */
    ul_params **points;         /* every grid point, fully resolved */
    size_t n_points;
} ul_method_spec;

typedef struct ul_goal_spec {
    char name[128];
    double lambdas[UL_MAX_LAMBDAS];
    size_t n_lambdas;
} ul_goal_spec;

typedef struct ul_metric_spec {
    char name[128];
    ul_params *params;
} ul_metric_spec;

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
    /* unlearning */
    uint64_t seeds[UL_MAX_SEEDS];
    size_t n_seeds;
    ul_forget_spec forget;
    ul_method_spec methods[UL_MAX_METHODS];
    size_t n_methods;
    ul_goal_spec goals[UL_MAX_GOALS];
    size_t n_goals;
    ul_metric_spec metrics[UL_MAX_METRICS];
    size_t n_metrics;
    char keep_checkpoints[16];  /* selected | all | none */
} ul_pipeline;

int ul_pipeline_load(const char *path, ul_pipeline **out, ul_error *err);
void ul_pipeline_free(ul_pipeline *p);
/* Runs the pipeline into run_dir (NULL: the config's `output`). Progress
 * and a summary go to `log` (may be NULL). */
int ul_pipeline_run(ul_pipeline *p, const char *run_dir, FILE *log, ul_error *err);

/* Writes config.resolved.yaml: the pipeline with every default filled in,
 * itself a valid pipeline. */
int ul_pipeline_write_resolved(const ul_pipeline *p, const char *path, ul_error *err);

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
