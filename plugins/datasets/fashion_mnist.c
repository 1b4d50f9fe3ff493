/* Fashion-MNIST (Xiao et al. 2017): 60,000 training and 10,000 test 28×28
 * grey images of clothing in 10 classes, in the MNIST IDX layout. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "unlearn/plugin.h"

/* Mean and std of the training pixels scaled to [0, 1]. */
#define FMNIST_MEAN 0.2860
#define FMNIST_STD 0.3530

static const ul_param_def fmnist_params[] = {
    UL_PARAM_STRING("path", "/usr/share/datasets/fashion-mnist",
                    "directory holding {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]"),
};

static int fmnist_load(const ul_params *params, ul_dataset *out, ul_error *err)
{
    const char *dir = ul_params_string(params, "path");
    if (!dir || !*dir)
        return ul_errorf(err, UL_EINVAL, "fashion_mnist: parameter 'path' is empty");
    /* The default comes from a Debian package: say how to get it. */
    struct stat st;
    const char *why = NULL;
    if (stat(dir, &st) != 0)
        why = strerror(errno);
    else if (!S_ISDIR(st.st_mode))
        why = "not a directory";
    if (why)
        return ul_errorf(err, UL_EIO,
                         "fashion_mnist: %s: %s; install the Debian package "
                         "dataset-fashion-mnist or set 'path' to a directory with the IDX files",
                         dir, why);
    int rc = ul_idx_load_dir(dir, FMNIST_MEAN, FMNIST_STD, 10, out, err);
    if (rc)
        return rc;
    snprintf(out->source, sizeof out->source, "fashion_mnist:%s", dir);
    return UL_OK;
}

static const ul_dataset_vtable fmnist_vtable = {sizeof(ul_dataset_vtable), fmnist_load};

UL_PLUGIN(UL_KIND_DATASET, "fashion_mnist", "1.0.0",
          "Fashion-MNIST: 28x28 grey clothing images, 10 classes, 60000 train / 10000 test",
          fmnist_params, &fmnist_vtable);
