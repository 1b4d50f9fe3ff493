/* cnn — a small VGG-style convolutional net: `stages` blocks of
 * conv3x3 (no bias) → BatchNorm → ReLU → 2x2 max-pool, doubling the channels
 * each stage, then a linear head on the flattened feature map. At width 1
 * on 1x28x28 that is 32/64/128 channels and a 128·3·3 → 10 head ("3 conv +
 * BN + pooling" of the Fashion-MNIST benchmark table, ~0.92 test accuracy).
 *
 * Tensor names follow this PyTorch module (stage i has
 * c_i = max(1, round(base_channels · 2^i · width)) channels, Python's round:
 * half to even):
 *
 *     class CNN(nn.Module):
 *         def __init__(self, in_channels, H, W, n_classes, stages=3,
 *                      base_channels=32, width=1.0):
 *             super().__init__()
 *             blocks, c_in = [], in_channels
 *             for i in range(stages):
 *                 c = max(1, round(base_channels * 2**i * width))
 *                 blocks.append(nn.Sequential(OrderedDict(
 *                     conv=nn.Conv2d(c_in, c, 3, padding=1, bias=False),
 *                     bn=nn.BatchNorm2d(c),
 *                     relu=nn.ReLU(inplace=True),
 *                     pool=nn.MaxPool2d(2))))
 *                 c_in, H, W = c, H // 2, W // 2
 *             self.features = nn.Sequential(*blocks)
 *             self.fc = nn.Linear(c_in * H * W, n_classes)
 *
 *         def forward(self, x):
 *             return self.fc(torch.flatten(self.features(x), 1))
 *
 * state_dict: features.0.conv.weight, features.0.bn.{weight, bias,
 * running_mean, running_var, num_batches_tracked}, features.1.conv.weight,
 * …, fc.weight, fc.bias. */
#include <math.h>
#include <stdio.h>

#include "unlearn/plugin.h"

static const ul_param_def cnn_params[] = {
    UL_PARAM_INT("stages", "3", 1, 16, "conv-BN-ReLU-maxpool blocks; each halves H and W"),
    UL_PARAM_INT("base_channels", "32", 1, 1 << 16,
                 "channels of the first stage at width 1 (doubled each stage)"),
};

static int cnn_build(ul_net *net, double width, const ul_params *params, ul_error *err)
{
    int stages = (int)ul_params_int(params, "stages");
    double base = (double)ul_params_int(params, "base_channels");
    int C, H, W;
    ul_net_input_shape(net, &C, &H, &W);
    if ((H >> stages) < 1 || (W >> stages) < 1)
        return ul_errorf(err, UL_EINVAL,
                         "cnn: %d stages halve a %dx%d input to nothing; use at most %d", stages,
                         H, W, (int)floor(log2(H < W ? H : W)));

    ul_node x = ul_net_input(net);
    for (int i = 0; i < stages; i++) {
        /* nearbyint rounds half to even, as Python's round() does. */
        int c = (int)fmax(1.0, nearbyint(base * ldexp(1.0, i) * width));
        char conv[32], bn[32];
        snprintf(conv, sizeof conv, "features.%d.conv", i);
        snprintf(bn, sizeof bn, "features.%d.bn", i);
        x = ul_net_conv2d(net, conv, x, c, 3, 1, 1, false);
        x = ul_net_relu(net, ul_net_batchnorm(net, bn, x));
        x = ul_net_maxpool(net, x, 2, 2, 0);
    }
    ul_net_linear(net, "fc", ul_net_flatten(net, x), ul_net_classes(net), true);
    return UL_OK;
}

static const ul_model_vtable cnn_vtable = {sizeof(ul_model_vtable), cnn_build};

UL_PLUGIN(UL_KIND_MODEL, "cnn", "1.0.0",
          "small conv net: stages x (conv3x3, BN, ReLU, maxpool 2), linear head", cnn_params,
          &cnn_vtable);
