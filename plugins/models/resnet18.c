/* resnet18 — ResNet-18, CIFAR variant (Nakkiran et al.'s deep double descent
 * and dbViz; SCRUB): a 3x3 stride-1 stem without max-pool, four stages of two
 * BasicBlocks with strides 1, 2, 2, 2, global average pool, linear head.
 * Stage channels are max(1, round(width · [64, 128, 256, 512])) (Python's
 * round: half to even). The stem scales with the width too, unless
 * keep_stem is set, in which case it keeps 64 channels (SCRUB's convention).
 *
 * Tensor names are torchvision's resnet18 state_dict names: conv1.weight,
 * bn1.*, layer1.0.conv1.weight, layer1.0.bn1.*, layer1.0.conv2.weight,
 * layer1.0.bn2.*, layer2.0.downsample.0.weight (1x1 conv),
 * layer2.0.downsample.1.* (BN), …, fc.weight, fc.bias — where BN.* is
 * weight, bias, running_mean, running_var, num_batches_tracked. At width 1
 * that is 122 entries (62 trainable) and, for 3x32x32 inputs and 10
 * classes, 11,173,962 trainable parameters. */
#include <math.h>
#include <stdio.h>

#include "unlearn/plugin.h"

static const ul_param_def resnet18_params[] = {
    UL_PARAM_BOOL("keep_stem", "false",
                  "keep the stem (conv1/bn1) at 64 channels at every width, as SCRUB does"),
};

static int resnet_channels(int base, double width)
{
    /* nearbyint rounds half to even, as Python's round() does. */
    return (int)fmax(1.0, nearbyint(base * width));
}

/* torchvision's BasicBlock: conv3x3(stride) → bn1 → relu → conv3x3 → bn2,
 * plus a 1x1-conv+BN shortcut when the shape changes; add; relu. */
static ul_node basic_block(ul_net *net, const char *prefix, ul_node x, int out_ch, int stride)
{
    int in_ch, h, w;
    ul_net_node_shape(net, x, &in_ch, &h, &w);
    char name[64];

    snprintf(name, sizeof name, "%s.conv1", prefix);
    ul_node y = ul_net_conv2d(net, name, x, out_ch, 3, stride, 1, false);
    snprintf(name, sizeof name, "%s.bn1", prefix);
    y = ul_net_relu(net, ul_net_batchnorm(net, name, y));
    snprintf(name, sizeof name, "%s.conv2", prefix);
    y = ul_net_conv2d(net, name, y, out_ch, 3, 1, 1, false);
    snprintf(name, sizeof name, "%s.bn2", prefix);
    y = ul_net_batchnorm(net, name, y);

    ul_node shortcut = x;
    if (stride != 1 || in_ch != out_ch) {
        snprintf(name, sizeof name, "%s.downsample.0", prefix);
        shortcut = ul_net_conv2d(net, name, x, out_ch, 1, stride, 0, false);
        snprintf(name, sizeof name, "%s.downsample.1", prefix);
        shortcut = ul_net_batchnorm(net, name, shortcut);
    }
    return ul_net_relu(net, ul_net_add(net, y, shortcut));
}

static int resnet18_build(ul_net *net, double width, const ul_params *params, ul_error *err)
{
    static const int stage_channels[4] = {64, 128, 256, 512};
    static const int stage_strides[4] = {1, 2, 2, 2};
    bool keep_stem = ul_params_bool(params, "keep_stem");

    int stem = keep_stem ? 64 : resnet_channels(64, width);
    ul_node x = ul_net_conv2d(net, "conv1", ul_net_input(net), stem, 3, 1, 1, false);
    x = ul_net_relu(net, ul_net_batchnorm(net, "bn1", x));
    for (int s = 0; s < 4; s++) {
        int c = resnet_channels(stage_channels[s], width);
        for (int b = 0; b < 2; b++) {
            char prefix[32];
            snprintf(prefix, sizeof prefix, "layer%d.%d", s + 1, b);
            x = basic_block(net, prefix, x, c, b == 0 ? stage_strides[s] : 1);
        }
    }
    x = ul_net_global_avgpool(net, x);
    ul_net_linear(net, "fc", x, ul_net_classes(net), true);
    return UL_OK;
}

static const ul_model_vtable resnet18_vtable = {sizeof(ul_model_vtable), resnet18_build};

UL_PLUGIN(UL_KIND_MODEL, "resnet18", "1.0.0",
          "ResNet-18, CIFAR variant (3x3 stem, no max-pool), torchvision tensor names",
          resnet18_params, &resnet18_vtable);
