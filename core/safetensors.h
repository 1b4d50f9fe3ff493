/* Private: checkpoints as safetensors files.
 *
 * Layout: u64 little-endian header length N, N bytes of JSON
 *   {"name": {"dtype": "F32"|"I64", "shape": [...], "data_offsets": [b, e]},
 *    ..., "__metadata__": {"k": "v", ...}}
 * then the raw little-endian data. Tensor names and shapes are those of the
 * net (PyTorch state_dict names). Writes are atomic (temp file + rename). */
#ifndef UL_SAFETENSORS_H
#define UL_SAFETENSORS_H

#include "unlearn/net.h"

typedef struct ul_kv {
    char *key;
    char *value;
} ul_kv;

void ul_kv_free(ul_kv *kv, size_t n);

/* Writes every tensor of net plus the metadata pairs. */
int ul_checkpoint_save(const char *path, const ul_net *net, const ul_kv *meta, size_t n_meta,
                       ul_error *err);
/* Reads only the header's __metadata__ (validating the header as a whole:
 * size, JSON, offsets within the file). *meta is malloc'ed, free with
 * ul_kv_free. */
int ul_checkpoint_read_metadata(const char *path, ul_kv **meta, size_t *n_meta, ul_error *err);
/* Loads weights into a net of the same architecture: names, dtypes and
 * shapes must match exactly, both ways (strict). */
int ul_checkpoint_load(const char *path, ul_net *net, ul_error *err);
/* Value of key in meta, or NULL. */
const char *ul_kv_get(const ul_kv *meta, size_t n, const char *key);

#endif
