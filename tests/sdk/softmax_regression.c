/* An out-of-tree model plugin, built by tests/sdk/run.sh against the
 * installed SDK only (pkg-config unlearn): multinomial logistic regression.
 * Equivalent PyTorch module: nn.Sequential(nn.Flatten(), nn.Linear(d, K))
 * with the linear layer named "fc". */
#include <unlearn/plugin.h>

static const ul_param_def params[] = {
    UL_PARAM_BOOL("bias", "true", "learn a bias per class"),
};

static int build(ul_net *net, double width, const ul_params *p, ul_error *err)
{
    (void)width, (void)err;
    ul_node x = ul_net_flatten(net, ul_net_input(net));
    ul_net_linear(net, "fc", x, ul_net_classes(net), ul_params_bool(p, "bias"));
    return UL_OK;
}

static const ul_model_vtable vtable = {sizeof(ul_model_vtable), build};

UL_PLUGIN(UL_KIND_MODEL, "softmax_regression", "1.0.0",
          "multinomial logistic regression (out-of-tree SDK example)", params, &vtable);
