#include "model.h"
#include "plugin_loader.h"

int ul_model_create(const char *name, double width, const ul_params *params, int C, int H,
                    int W, int n_classes, ul_rng *rng, ul_net **out, ul_error *err)
{
    *out = NULL;
    const ul_plugin *p;
    int rc = ul_plugin_find(UL_KIND_MODEL, name, &p, err);
    if (rc)
        return rc;
    if (!(width > 0))
        return ul_errorf(err, UL_EINVAL, "model '%s': width must be positive, got %g", name,
                         width);
    ul_net *net = ul_net_new(C, H, W, n_classes);
    if (!net)
        return ul_errorf(err, UL_ENOMEM, "model '%s': out of memory", name);
    const ul_model_vtable *vt = p->desc->vtable;
    rc = vt->build(net, width, params, err);
    if (rc == UL_OK)
        rc = ul_net_finalize(net, rng, err);
    if (rc) {
        ul_error_prefix(err, "model '%s' at width %g", name, width);
        ul_net_free(net);
        return rc;
    }
    *out = net;
    return UL_OK;
}
