/* mlp — a multilayer perceptron: flatten, `depth` hidden Linear+ReLU layers
 * of equal size, a linear head.
 *
 * Tensor names follow this PyTorch module (hidden units
 * h = max(1, round(base · width)), Python's round: half to even):
 *
 *     class MLP(nn.Module):
 *         def __init__(self, in_features, n_classes, depth=2, base=256, width=1.0):
 *             super().__init__()
 *             h = max(1, round(base * width))
 *             dims = [in_features] + [h] * depth
 *             self.hidden = nn.ModuleList(
 *                 nn.Linear(dims[i], dims[i + 1]) for i in range(depth))
 *             self.fc = nn.Linear(h, n_classes)
 *
 *         def forward(self, x):
 *             x = torch.flatten(x, 1)
 *             for layer in self.hidden:
 *                 x = torch.relu(layer(x))
 *             return self.fc(x)
 *
 * state_dict: hidden.0.weight, hidden.0.bias, …, hidden.{depth-1}.bias,
 * fc.weight, fc.bias. */
#include <math.h>
#include <stdio.h>

#include "unlearn/plugin.h"

static const ul_param_def mlp_params[] = {
    UL_PARAM_INT("depth", "2", 1, 64, "number of hidden layers"),
    UL_PARAM_INT("base", "256", 1, 1 << 20, "hidden units at width 1"),
};

static int mlp_build(ul_net *net, double width, const ul_params *params, ul_error *err)
{
    int depth = (int)ul_params_int(params, "depth");
    double base = (double)ul_params_int(params, "base");
    /* nearbyint rounds half to even, as Python's round() does. */
    int hidden = (int)fmax(1.0, nearbyint(base * width));

    ul_node x = ul_net_flatten(net, ul_net_input(net));
    for (int i = 0; i < depth; i++) {
        char name[32];
        snprintf(name, sizeof name, "hidden.%d", i);
        x = ul_net_relu(net, ul_net_linear(net, name, x, hidden, true));
    }
    ul_net_linear(net, "fc", x, ul_net_classes(net), true);
    return UL_OK;
}

static const ul_model_vtable mlp_vtable = {sizeof(ul_model_vtable), mlp_build};

UL_PLUGIN(UL_KIND_MODEL, "mlp", "1.0.0",
          "multilayer perceptron: flatten, depth x (linear, relu), linear head", mlp_params,
          &mlp_vtable);
