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
