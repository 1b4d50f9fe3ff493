/* MNIST handwritten digits (LeCun et al.): 28×28 grey images, 10 classes,
 * in the IDX layout. No copy ships with Debian, so the path is required. */
#include <stdio.h>

#include "unlearn/plugin.h"

/* Mean and std of the training pixels scaled to [0, 1]. */
#define MNIST_MEAN 0.1307
#define MNIST_STD 0.3081

static const ul_param_def mnist_params[] = {
    UL_PARAM_STRING("path", NULL,
                    "directory holding {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]"),
};

static int mnist_load(const ul_params *params, ul_dataset *out, ul_error *err)
{
    const char *dir = ul_params_string(params, "path");
    if (!dir || !*dir)
        return ul_errorf(err, UL_EINVAL,
                         "mnist: parameter 'path' is required: the directory with the MNIST "
                         "IDX files");
    int rc = ul_idx_load_dir(dir, MNIST_MEAN, MNIST_STD, 10, out, err);
    if (rc)
        return rc;
    snprintf(out->source, sizeof out->source, "mnist:%s", dir);
    return UL_OK;
}

static const ul_dataset_vtable mnist_vtable = {sizeof(ul_dataset_vtable), mnist_load};

UL_PLUGIN(UL_KIND_DATASET, "mnist", "1.0.0",
          "MNIST handwritten digits from IDX files: 28x28 grey, 10 classes", mnist_params,
          &mnist_vtable);
