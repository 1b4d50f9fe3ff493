/* unlearn — the plugin ABI. This header is all a plugin author needs.
 *
 * A plugin is a shared object named after the plugin (mlp.so) that exports
 * exactly one symbol: the constant descriptor `ul_plugin` (UL_PLUGIN_SYMBOL).
 * The host reads abi_major/abi_minor/struct_size from it BEFORE touching any
 * other field or calling any plugin code, and refuses a plugin whose major
 * differs from its own or whose minor is newer than its own.
 *
 * Growth rule: descriptors and vtables only ever grow by appending fields.
 * A host reads a field only when struct_size shows the plugin has it.
 *
 * Ownership: everything the descriptor points to is static data of the
 * plugin and must stay valid while the plugin is loaded. Objects the host
 * passes to a plugin call (nets, params, datasets, errors) are owned by the
 * host and valid only during that call unless stated otherwise. */
#ifndef UNLEARN_PLUGIN_H
#define UNLEARN_PLUGIN_H

#include "common.h"
#include "dataset.h"
#include "net.h"
#include "ops.h"
#include "params.h"
#include "rng.h"
#include "train.h"

#ifdef __cplusplus
extern "C" {
#endif

#define UL_ABI_MAJOR 1u
#define UL_ABI_MINOR 0u
#define UL_PLUGIN_SYMBOL "ul_plugin"

typedef enum ul_plugin_kind {
    UL_KIND_MODEL = 1,
    UL_KIND_DATASET = 2,
    UL_KIND_METHOD = 3,
    UL_KIND_METRIC = 4,
    UL_KIND_GOAL = 5
} ul_plugin_kind;

typedef struct ul_plugin_desc {
    /* ---- ABI 1.0: these three first, never moved ---- */
    uint32_t abi_major;
    uint32_t abi_minor;
    uint32_t struct_size;   /* sizeof(ul_plugin_desc) the plugin was built with */
    /* ---- ABI 1.0 ---- */
    uint32_t kind;          /* ul_plugin_kind */
    const char *name;       /* equals the file stem */
    const char *version;    /* the plugin's own version, e.g. "1.0.0" */
    const char *description;/* one line */
    const ul_param_def *params;
    uint32_t n_params;
    const void *vtable;     /* the kind's vtable, below */
} ul_plugin_desc;

/* ---- model ---------------------------------------------------------------
 * build() describes the architecture with the ul_net_* builder calls. The
 * input shape and class count are in the net (ul_net_input_shape,
 * ul_net_classes). width > 0 is the width multiplier. */
typedef struct ul_model_vtable {
    uint32_t struct_size;
    int (*build)(ul_net *net, double width, const ul_params *params, ul_error *err);
} ul_model_vtable;

/* ---- dataset -------------------------------------------------------------
 * load() fills *out (zeroed by the host) or returns an error naming the
 * file and the problem; on error it leaves nothing allocated in *out. */
typedef struct ul_dataset_vtable {
    uint32_t struct_size;
    int (*load)(const ul_params *params, ul_dataset *out, ul_error *err);
} ul_dataset_vtable;

/* ---- method ----------------------------------------------------------------
 * unlearn() turns ctx->model (on entry: a copy of the original model θ₀)
 * into the unlearned model, in place. It may read the retain set R, the
 * forget set F and the validation set V; it never sees the test set.
 * ctx->original is θ₀ itself: read-only (clone it for a frozen teacher).
 * A loss that becomes NaN or Inf must end the call with UL_EDIVERGED. */
typedef struct ul_method_ctx {
    uint32_t struct_size;
    ul_net *model;
    const ul_net *original;
    ul_data_view retain, forget, val;
    const ul_train_cfg *recipe; /* how θ₀ was trained (retrain reuses it) */
    uint64_t seed;              /* for shuffling and any randomness */
    ul_train_progress_fn progress; /* may be NULL; report epochs/steps */
    void *progress_user;
} ul_method_ctx;

typedef struct ul_method_vtable {
    uint32_t struct_size;
    int (*unlearn)(const ul_method_ctx *ctx, const ul_params *params, ul_error *err);
} ul_method_vtable;

/* ---- metric ----------------------------------------------------------------
 * compute() evaluates ctx->model (and, where useful, the original and the
 * retrained model) and writes named values into out[0..cap-1], setting
 * *n_out. Names are snake_case and unique across metric plugins
 * (e.g. "forget_error", "mia_loss_test"); std is the spread over repeats
 * (NAN when not applicable). */
typedef struct ul_metric_value {
    char name[48];
    double value;
    double std;
} ul_metric_value;

typedef struct ul_metric_ctx {
    uint32_t struct_size;
    ul_net *model;               /* the model under evaluation */
    ul_net *original;            /* θ₀ (may equal model) */
    ul_net *retrained;           /* the gold standard; NULL while it is itself evaluated */
    ul_data_view retain, forget, val, test;
    /* When the forget set is a set of whole classes: those classes (else n = 0). */
    const int32_t *forget_classes;
    int n_forget_classes;
    double unlearn_seconds;      /* wall time of the method (NAN for the original) */
    double retrain_seconds;      /* wall time of retraining */
    uint64_t seed;
} ul_metric_ctx;

typedef struct ul_metric_vtable {
    uint32_t struct_size;
    int (*compute)(const ul_metric_ctx *ctx, const ul_params *params, ul_metric_value *out,
                   size_t cap, size_t *n_out, ul_error *err);
} ul_metric_vtable;

/* ---- goal ------------------------------------------------------------------
 * The validation objective a grid search minimises. `requires` lists the
 * metric values it reads (NULL-terminated); objective() gets them in the
 * same order, computed on validation-side data. */
typedef struct ul_goal_vtable {
    uint32_t struct_size;
    const char *const *requires;
    double (*objective)(const double *values, double lambda);
} ul_goal_vtable;

#if defined(__GNUC__)
#define UL_PLUGIN_EXPORT __attribute__((visibility("default")))
#else
#define UL_PLUGIN_EXPORT
#endif

/* Defines the exported descriptor. Example:
 *   UL_PLUGIN(UL_KIND_MODEL, "mlp", "1.0.0", "multilayer perceptron",
 *             mlp_params, &mlp_vtable);                                  */
#define UL_PLUGIN(kind_, name_, version_, desc_, params_, vtable_)                   \
    UL_PLUGIN_EXPORT extern const ul_plugin_desc ul_plugin;                          \
    const ul_plugin_desc ul_plugin = {UL_ABI_MAJOR,                                  \
                                      UL_ABI_MINOR,                                  \
                                      (uint32_t)sizeof(ul_plugin_desc),              \
                                      (uint32_t)(kind_),                             \
                                      (name_),                                       \
                                      (version_),                                    \
                                      (desc_),                                       \
                                      (params_),                                     \
                                      (uint32_t)(sizeof(params_) / sizeof((params_)[0])), \
                                      (vtable_)}

#ifdef __cplusplus
}
#endif
#endif
