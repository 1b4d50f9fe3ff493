/* Networks as small DAGs of ops (net.h).
 *
 * Model plugins append nodes in topological order with the builder calls;
 * every node only refers to nodes built before it, so running the nodes in
 * index order is a valid forward pass and reverse index order a valid
 * backward pass.
 *
 * Memory, and why it is laid out this way:
 *  - Parameters are one float block, gradients one mirror block: optimizers,
 *    the L1 penalty and checkpoints all see flat vectors. BatchNorm running
 *    stats live in a second float block and num_batches_tracked in an int64
 *    block, because they are state_dict entries but not trainable.
 *  - Every node that owns its output gets max_batch·C·H·W floats. Some nodes
 *    share their input's storage instead:
 *      flatten   is a view (same memory, same gradient);
 *      relu, add run in place over an input that has no other consumer and
 *                whose own backward does not read its output. BN → ReLU is
 *                the common case (BN's backward reads BN's input, not its
 *                output), as is the residual add → ReLU of a BasicBlock.
 *                This saves one buffer and one pass over memory per op, and
 *                is what PyTorch's ReLU(inplace=True) does.
 *  - An activation gradient is live only from the backward of its first
 *    writer (its last consumer) to the backward of its own node, so the
 *    gradients share a few slots assigned by interval colouring when the net
 *    is finalized: a ResNet-18 needs a handful of gradient buffers, not one
 *    per node.
 *  - One scratch, sized for the largest convolution (or linear layer's
 *    packed operands) and one part per processor.
 *  - For the batch-parallel passes (net_team.c, used unless the net is called
 *    from inside a parallel region): per-thread weight-gradient partials the size of the
 *    largest convolution, and BatchNorm partial sums.
 * All of it is allocated by ul_net_reserve; forward and backward never
 * allocate. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>

#include <omp.h>

#include "gemm.h"
#include "net_internal.h"
#include "ops_local.h"
#include "ops_wino.h"

static const char *const net_op_names[] = {
    "input", "conv2d", "batchnorm", "relu",    "maxpool",
    "avgpool", "global_avgpool", "add", "flatten", "linear",
};
_Static_assert(sizeof net_op_names / sizeof net_op_names[0] == NET_OP_COUNT,
               "net_op_names must name every net_op");

/* ---- profiling ------------------------------------------------------------------ */

static int prof_on = -1; /* 0 off, 1 per op kind, 2 also per node */

bool net_profiling(void)
{
    if (prof_on < 0) {
        const char *e = getenv("UNLEARN_PROFILE");
        prof_on = !e || !*e || strcmp(e, "0") == 0 ? 0 : strcmp(e, "2") == 0 ? 2 : 1;
    }
    return prof_on > 0;
}

int net_profile_thread(void)
{
    static int t = -1;
    if (t < 0) {
        const char *e = getenv("UNLEARN_PROFILE_THREAD");
        t = e && *e ? atoi(e) : 0;
        t = t < 0 ? 0 : t;
    }
    return t;
}

void net_prof_add(ul_net *net, int i, int dir, double dt)
{
    net_node *nd = &net->nodes[i];
    net->prof_s[nd->op][dir] += dt;
    net->prof_n[nd->op][dir]++;
    nd->prof[dir] += dt;
}

static double net_clock(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void net_profile_print(const ul_net *net)
{
    double total = 0.0;
    for (int op = 0; op < NET_OP_COUNT; op++)
        total += net->prof_s[op][0] + net->prof_s[op][1];
    if (total <= 0.0)
        return;
    fprintf(stderr,
            "unlearn profile (UNLEARN_PROFILE): %.3f s in %d-node net, %ld forward and %ld "
            "backward passes\n",
            total, net->n_nodes, net->prof_passes[0], net->prof_passes[1]);
    fprintf(stderr, "  %-15s %10s %7s %10s %7s\n", "op", "forward s", "%", "backward s", "%");
    for (int op = 0; op < NET_OP_COUNT; op++) {
        if (!net->prof_n[op][0] && !net->prof_n[op][1])
            continue;
        fprintf(stderr, "  %-15s %10.3f %6.1f%% %10.3f %6.1f%%\n", net_op_names[op],
                net->prof_s[op][0], 100.0 * net->prof_s[op][0] / total, net->prof_s[op][1],
                100.0 * net->prof_s[op][1] / total);
    }
    if (prof_on < 2)
        return;
    fprintf(stderr, "  %4s %-15s %-22s %-14s %10s %7s %10s %7s\n", "node", "op", "name",
            "output", "forward s", "%", "backward s", "%");
    for (int i = 0; i < net->n_nodes; i++) {
        const net_node *nd = &net->nodes[i];
        if (nd->prof[0] <= 0.0 && nd->prof[1] <= 0.0)
            continue;
        char shape[48];
        snprintf(shape, sizeof shape, "%dx%dx%d", nd->C, nd->H, nd->W);
        fprintf(stderr, "  %4d %-15s %-22s %-14s %10.3f %6.1f%% %10.3f %6.1f%%\n", i,
                net_op_names[nd->op], nd->name ? nd->name : "-", shape, nd->prof[0],
                100.0 * nd->prof[0] / total, nd->prof[1], 100.0 * nd->prof[1] / total);
    }
}

/* ---- building -------------------------------------------------------------- */

static bool op_has_params(net_op op)
{
    return op == NET_CONV || op == NET_BN || op == NET_LINEAR;
}

/* Records the first builder error (later calls are then refused quietly, as
 * their inputs are usually the failed node) and returns -1. */
UL_PRINTF(2, 3) static int net_fail(ul_net *net, const char *fmt, ...)
{
    if (!net->failed) {
        va_list ap;
        va_start(ap, fmt);
        ul_verrorf(&net->build_err, UL_EINVAL, fmt, ap);
        va_end(ap);
        net->failed = true;
    }
    return -1;
}

/* Checks that a builder call may add a node reading node x. After a failed
 * call (whose -1 is usually passed on as x) it refuses quietly: the first
 * error is the one worth reporting. */
static bool net_can_add(ul_net *net, const char *op, const char *name, int x, bool named)
{
    if (net->failed)
        return false;
    if (net->finalized) {
        net_fail(net, "%s: the net is already finalized; nodes must be added before "
                      "ul_net_finalize", op);
        return false;
    }
    if (named && (!name || !name[0])) {
        net_fail(net, "%s: a layer with parameters needs a name (its state_dict prefix)", op);
        return false;
    }
    if (x < 0 || x >= net->n_nodes) {
        net_fail(net, "%s%s%s%s: input node %d does not exist (the net has %d nodes)", op,
                 named ? " '" : "", named ? name : "", named ? "'" : "", x, net->n_nodes);
        return false;
    }
    return true;
}

static int net_push(ul_net *net, net_op op, const char *name, int a, int b, int C, int H, int W)
{
    if (net->n_nodes == net->cap_nodes) {
        int cap = net->cap_nodes ? 2 * net->cap_nodes : 32;
        net_node *nodes = realloc(net->nodes, (size_t)cap * sizeof *nodes);
        if (!nodes)
            return net_fail(net, "out of memory while building the net");
        net->nodes = nodes;
        net->cap_nodes = cap;
    }
    net_node *n = &net->nodes[net->n_nodes];
    memset(n, 0, sizeof *n);
    n->op = op;
    if (name) {
        n->name = strdup(name);
        if (!n->name)
            return net_fail(net, "out of memory while building the net");
    }
    n->in[0] = a;
    n->in[1] = b;
    n->C = C;
    n->H = H;
    n->W = W;
    n->inplace = -1;
    n->store = net->n_nodes;
    n->grad_first = n->grad_last = n->grad_slot = -1;
    n->fold_bn = n->fold_conv = -1;
    return net->n_nodes++;
}

ul_net *ul_net_new(int C, int H, int W, int n_classes)
{
    ul_net *net = calloc(1, sizeof *net);
    if (!net)
        return NULL;
    net->C = C;
    net->H = H;
    net->W = W;
    net->n_classes = n_classes;
    net->input = -1;
    if (C < 1 || H < 1 || W < 1 || n_classes < 1)
        net_fail(net, "the input shape %dx%dx%d and the class count %d must be positive", C, H,
                 W, n_classes);
    return net;
}

ul_node ul_net_input(ul_net *net)
{
    if (net->input >= 0)
        return net->input;
    if (net->failed)
        return -1;
    if (net->finalized)
        return net_fail(net, "input: the net is already finalized");
    net->input = net_push(net, NET_INPUT, NULL, -1, -1, net->C, net->H, net->W);
    return net->input;
}

void ul_net_input_shape(const ul_net *net, int *C, int *H, int *W)
{
    *C = net->C;
    *H = net->H;
    *W = net->W;
}

int ul_net_classes(const ul_net *net)
{
    return net->n_classes;
}

void ul_net_node_shape(const ul_net *net, ul_node x, int *C, int *H, int *W)
{
    const net_node *n = (x >= 0 && x < net->n_nodes) ? &net->nodes[x] : NULL;
    *C = n ? n->C : 0;
    *H = n ? n->H : 0;
    *W = n ? n->W : 0;
}

ul_node ul_net_conv2d(ul_net *net, const char *name, ul_node x, int out_channels, int kernel,
                      int stride, int pad, bool bias)
{
    if (!net_can_add(net, "conv2d", name, x, true))
        return -1;
    const net_node *in = &net->nodes[x];
    if (out_channels < 1 || kernel < 1 || stride < 1 || pad < 0)
        return net_fail(net, "conv2d '%s': out_channels %d, kernel %d and stride %d must be "
                             "positive and padding %d not negative",
                        name, out_channels, kernel, stride, pad);
    ul_conv_shape s;
    if (!ul_conv_shape_init(&s, 1, in->C, in->H, in->W, out_channels, kernel, kernel, stride,
                            pad))
        return net_fail(net, "conv2d '%s': a %dx%d kernel with stride %d and padding %d gives "
                             "an empty output for a %dx%d input",
                        name, kernel, kernel, stride, pad, in->H, in->W);
    int id = net_push(net, NET_CONV, name, x, -1, out_channels, s.P, s.Q);
    if (id >= 0) {
        net_node *n = &net->nodes[id];
        n->kernel = kernel;
        n->stride = stride;
        n->pad = pad;
        n->bias = bias;
        n->conv = s;
    }
    return id;
}

ul_node ul_net_batchnorm(ul_net *net, const char *name, ul_node x)
{
    if (!net_can_add(net, "batchnorm", name, x, true))
        return -1;
    const net_node *in = &net->nodes[x];
    return net_push(net, NET_BN, name, x, -1, in->C, in->H, in->W);
}

ul_node ul_net_relu(ul_net *net, ul_node x)
{
    if (!net_can_add(net, "relu", NULL, x, false))
        return -1;
    const net_node *in = &net->nodes[x];
    return net_push(net, NET_RELU, NULL, x, -1, in->C, in->H, in->W);
}

static ul_node net_pool(ul_net *net, net_op op, ul_node x, int kernel, int stride, int pad)
{
    const char *what = net_op_names[op];
    if (!net_can_add(net, what, NULL, x, false))
        return -1;
    const net_node *in = &net->nodes[x];
    /* PyTorch's rule: the padding may be at most half the window. */
    if (kernel < 1 || stride < 1 || pad < 0 || 2 * pad > kernel)
        return net_fail(net, "%s: kernel %d and stride %d must be positive and padding %d "
                             "between 0 and half the kernel",
                        what, kernel, stride, pad);
    int P, Q;
    if (!ul_pool_out_size(in->H, in->W, kernel, stride, pad, &P, &Q))
        return net_fail(net, "%s: a %dx%d window with stride %d and padding %d gives an empty "
                             "output for a %dx%d input",
                        what, kernel, kernel, stride, pad, in->H, in->W);
    int id = net_push(net, op, NULL, x, -1, in->C, P, Q);
    if (id >= 0) {
        net->nodes[id].kernel = kernel;
        net->nodes[id].stride = stride;
        net->nodes[id].pad = pad;
    }
    return id;
}

ul_node ul_net_maxpool(ul_net *net, ul_node x, int kernel, int stride, int pad)
{
    return net_pool(net, NET_MAXPOOL, x, kernel, stride, pad);
}

ul_node ul_net_avgpool(ul_net *net, ul_node x, int kernel, int stride, int pad)
{
    return net_pool(net, NET_AVGPOOL, x, kernel, stride, pad);
}

ul_node ul_net_global_avgpool(ul_net *net, ul_node x)
{
    if (!net_can_add(net, "global_avgpool", NULL, x, false))
        return -1;
    return net_push(net, NET_GAP, NULL, x, -1, net->nodes[x].C, 1, 1);
}

ul_node ul_net_add(ul_net *net, ul_node a, ul_node b)
{
    if (!net_can_add(net, "add", NULL, a, false) || !net_can_add(net, "add", NULL, b, false))
        return -1;
    const net_node *na = &net->nodes[a], *nb = &net->nodes[b];
    if (na->C != nb->C || na->H != nb->H || na->W != nb->W)
        return net_fail(net, "add: the shapes differ: %dx%dx%d (node %d) and %dx%dx%d (node %d)",
                        na->C, na->H, na->W, a, nb->C, nb->H, nb->W, b);
    return net_push(net, NET_ADD, NULL, a, b, na->C, na->H, na->W);
}

ul_node ul_net_flatten(ul_net *net, ul_node x)
{
    if (!net_can_add(net, "flatten", NULL, x, false))
        return -1;
    return net_push(net, NET_FLATTEN, NULL, x, -1, (int)node_numel(&net->nodes[x]), 1, 1);
}

ul_node ul_net_linear(ul_net *net, const char *name, ul_node x, int out_features, bool bias)
{
    if (!net_can_add(net, "linear", name, x, true))
        return -1;
    const net_node *in = &net->nodes[x];
    if (in->H != 1 || in->W != 1)
        return net_fail(net, "linear '%s': its input is %dx%dx%d; flatten it first "
                             "(ul_net_flatten), as nn.Linear expects (N, features)",
                        name, in->C, in->H, in->W);
    if (out_features < 1)
        return net_fail(net, "linear '%s': out_features %d must be positive", name,
                        out_features);
    int id = net_push(net, NET_LINEAR, name, x, -1, out_features, 1, 1);
    if (id >= 0)
        net->nodes[id].bias = bias;
    return id;
}

/* ---- compiling: storage sharing and gradient slots --------------------------- */

/* Whether node j's output may be overwritten by its consumer: that consumer
 * must be its only reader, and j's own backward must not read j's output
 * (relu's does: its mask; a flatten is a view of storage others may read). */
static bool net_overwritable(const ul_net *net, int j)
{
    const net_node *n = &net->nodes[j];
    return n->n_consumers == 1 && n->op != NET_RELU && n->op != NET_FLATTEN;
}

/* Best fit: the smallest free slot that is big enough, else the largest free
 * one (to be grown); -1 when every slot is busy. */
static int net_pick_slot(const size_t *slot_numel, const bool *busy, int n_slots, size_t need)
{
    int fit = -1, largest = -1;
    for (int k = 0; k < n_slots; k++) {
        if (busy[k])
            continue;
        if (slot_numel[k] >= need && (fit < 0 || slot_numel[k] < slot_numel[fit]))
            fit = k;
        if (largest < 0 || slot_numel[k] > slot_numel[largest])
            largest = k;
    }
    return fit >= 0 ? fit : largest;
}

/* Gives each store node that needs a gradient a slot. Time runs backwards
 * (backward visits node n_nodes-1 first); a gradient is live from step
 * grad_first down to step grad_last inclusive, and two gradients may share a
 * slot only when their live ranges are disjoint. */
static int net_assign_slots(ul_net *net, ul_error *err)
{
    int n = net->n_nodes;
    if (n < 1)
        return UL_OK;
    net->slot_numel = calloc((size_t)n, sizeof *net->slot_numel);
    bool *busy = calloc((size_t)n, sizeof *busy);
    net->grad_order = malloc((size_t)n * sizeof *net->grad_order);
    if (!net->slot_numel || !busy || !net->grad_order) {
        free(busy);
        return ul_errorf(err, UL_ENOMEM, "out of memory while compiling the net");
    }
    for (int t = n; t >= 0; t--) {
        for (int s = 0; s < n; s++) {
            net_node *st = &net->nodes[s];
            if (st->store != s || st->grad_last < 0 || st->grad_first != t)
                continue;
            size_t need = node_numel(st);
            int k = net_pick_slot(net->slot_numel, busy, net->n_slots, need);
            if (k < 0)
                k = net->n_slots++;
            if (net->slot_numel[k] < need)
                net->slot_numel[k] = need;
            busy[k] = true;
            st->grad_slot = k;
            net->grad_order[net->n_grad_order++] = s;
        }
        for (int s = 0; s < n; s++) {
            const net_node *st = &net->nodes[s];
            if (st->store == s && st->grad_last == t && st->grad_slot >= 0)
                busy[st->grad_slot] = false;
        }
    }
    free(busy);
    return UL_OK;
}

/* Validates the finished graph and decides storage sharing and gradient
 * liveness (see the comment at the top of the file). */
static int net_plan(ul_net *net, ul_error *err)
{
    if (net->failed) {
        if (err)
            *err = net->build_err;
        return net->build_err.code;
    }
    int n = net->n_nodes;
    if (n == 0 || net->input < 0)
        return ul_errorf(err, UL_EINVAL, "the model built no input node (ul_net_input)");
    const net_node *last = &net->nodes[n - 1];
    if (last->C != net->n_classes || last->H != 1 || last->W != 1)
        return ul_errorf(err, UL_EINVAL, "the last node (%s) has shape %dx%dx%d; a model must "
                                         "end in (%d) logits, one per class",
                         net_op_names[last->op], last->C, last->H, last->W, net->n_classes);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < i; j++)
            if (net->nodes[i].name && net->nodes[j].name &&
                !strcmp(net->nodes[i].name, net->nodes[j].name))
                return ul_errorf(err, UL_EINVAL, "two layers are named '%s'; state_dict names "
                                                 "must be unique", net->nodes[i].name);

    for (int i = 0; i < n; i++)
        for (int k = 0; k < 2; k++)
            if (net->nodes[i].in[k] >= 0)
                net->nodes[net->nodes[i].in[k]].n_consumers++;

    /* Convolutions that feed a BatchNorm alone, for ul_net_infer. */
    net->n_fold = 0;
    for (int i = 0; i < n; i++) {
        net_node *bn = &net->nodes[i];
        net_node *cv = bn->in[0] >= 0 ? &net->nodes[bn->in[0]] : NULL;
        if (bn->op != NET_BN || !cv || cv->op != NET_CONV || cv->n_consumers != 1)
            continue;
        bn->fold_conv = bn->in[0];
        cv->fold_bn = i;
        net->n_fold += (size_t)cv->conv.K * cv->conv.C * cv->conv.R * cv->conv.S + cv->conv.K;
    }

    for (int i = 0; i < n; i++) {
        net_node *nd = &net->nodes[i];
        if (nd->op == NET_RELU && net_overwritable(net, nd->in[0]))
            nd->inplace = 0;
        else if (nd->op == NET_ADD && net_overwritable(net, nd->in[0]))
            nd->inplace = 0;
        else if (nd->op == NET_ADD && net_overwritable(net, nd->in[1]))
            nd->inplace = 1;
        if (nd->op == NET_FLATTEN)
            nd->store = net->nodes[nd->in[0]].store;
        else if (nd->inplace >= 0)
            nd->store = net->nodes[nd->in[nd->inplace]].store;

        nd->needs_grad = op_has_params(nd->op);
        for (int k = 0; k < 2; k++)
            if (nd->in[k] >= 0 && net->nodes[nd->in[k]].needs_grad)
                nd->needs_grad = true;
    }

    /* Gradient liveness per store: read last by its lowest member that needs
     * a gradient, written first by the highest node writing into it through
     * a din (members sharing the storage do not write through a din). */
    for (int i = 0; i < n; i++) {
        net_node *nd = &net->nodes[i];
        if (!nd->needs_grad)
            continue;
        net_node *st = &net->nodes[nd->store];
        if (st->grad_last < 0)
            st->grad_last = i;
        for (int k = 0; k < 2; k++) {
            int j = nd->in[k];
            if (j < 0 || !net->nodes[j].needs_grad || k == nd->inplace || nd->op == NET_FLATTEN)
                continue;
            net_node *sj = &net->nodes[net->nodes[j].store];
            if (sj->grad_first < i)
                sj->grad_first = i;
        }
    }
    if (last->needs_grad)
        net->nodes[last->store].grad_first = n;
    /* A dead end (built but never consumed) gets a zero gradient. */
    for (int i = 0; i < n; i++) {
        net_node *st = &net->nodes[i];
        if (st->store == i && st->grad_last >= 0 && st->grad_first < st->grad_last)
            st->grad_first = st->grad_last;
    }
    return net_assign_slots(net, err);
}

static char *net_join(const char *prefix, const char *suffix)
{
    size_t a = strlen(prefix), b = strlen(suffix);
    char *s = malloc(a + b + 2);
    if (s) {
        memcpy(s, prefix, a);
        s[a] = '.';
        memcpy(s + a + 1, suffix, b + 1);
    }
    return s;
}

/* 64-byte aligned blocks. From 8 MiB on (the activations, the threads'
 * weight-gradient partials at larger widths) they are 2 MiB-aligned and
 * asked for transparent huge pages (Linux, where THP is "madvise" or
 * "always"): a pass streams through hundreds of MiB, and with 4 KiB pages
 * every 4 KiB costs a page walk. ResNet-18 width 0.25 on 3×32×32, two
 * threads, five alternated runs: 437–502 → 456–512 img/s (four runs of
 * five ahead); width 0.5 on 1×28×28 192–197 → 199–207. Peak RSS grows by
 * the untouched rest of partly used huge pages (5 MiB there, 26 MiB for
 * width 0.1's inference). */
static void *net_alloc_aligned(size_t n_bytes)
{
    const size_t huge = (size_t)2 << 20;
    if (n_bytes >= 4 * huge) {
        const size_t r = (n_bytes + huge - 1) / huge * huge;
        void *p = aligned_alloc(huge, r);
#ifdef MADV_HUGEPAGE
        if (p)
            (void)madvise(p, r, MADV_HUGEPAGE); /* a hint: without THP it fails harmlessly */
#endif
        return p;
    }
    size_t rounded = (n_bytes + 63) / 64 * 64;
    return aligned_alloc(64, rounded ? rounded : 64);
}

/* Adds one tensor to the table; data points into the blocks, which are
 * allocated before the table is filled. */
static int net_add_tensor(ul_net *net, const char *prefix, const char *suffix, ul_dtype dtype,
                          int ndim, const int64_t *shape, void *data, float *grad)
{
    ul_tensor_info *t = &net->tensors[net->n_tensors];
    t->name = net_join(prefix, suffix);
    if (!t->name)
        return UL_ENOMEM;
    t->dtype = dtype;
    t->ndim = ndim;
    t->numel = 1;
    for (int d = 0; d < ndim; d++) {
        t->shape[d] = shape[d];
        t->numel *= shape[d];
    }
    t->data = data;
    t->grad = grad;
    t->trainable = grad != NULL;
    net->n_tensors++;
    return UL_OK;
}

/* Allocates the parameter, gradient and buffer blocks and fills the tensor
 * table in state_dict order: node order, and within a node weight, bias,
 * (BN) running_mean, running_var, num_batches_tracked. */
static int net_alloc_params(ul_net *net, ul_error *err)
{
    size_t n_tensors = 0, n_params = 0, n_stats = 0, n_counts = 0;
    for (int i = 0; i < net->n_nodes; i++) {
        const net_node *nd = &net->nodes[i];
        const net_node *in = nd->in[0] >= 0 ? &net->nodes[nd->in[0]] : NULL;
        if (nd->op == NET_CONV) {
            n_tensors += 1 + nd->bias;
            n_params += (size_t)nd->C * in->C * nd->kernel * nd->kernel + (nd->bias ? nd->C : 0);
        } else if (nd->op == NET_LINEAR) {
            n_tensors += 1 + nd->bias;
            n_params += (size_t)nd->C * in->C + (nd->bias ? nd->C : 0);
        } else if (nd->op == NET_BN) {
            n_tensors += 5;
            n_params += 2 * (size_t)nd->C;
            n_stats += 2 * (size_t)nd->C;
            n_counts += 1;
        }
    }
    net->params = net_alloc_aligned(n_params * sizeof(float));
    net->grads = net_alloc_aligned(n_params * sizeof(float));
    net->stats = net_alloc_aligned(n_stats * sizeof(float));
    net->counts = net_alloc_aligned(n_counts * sizeof(int64_t));
    net->tensors = calloc(n_tensors ? n_tensors : 1, sizeof *net->tensors);
    if (!net->params || !net->grads || !net->stats || !net->counts || !net->tensors)
        goto oom;
    net->n_params = n_params;
    net->n_stats = n_stats;
    net->n_counts = n_counts;
    memset(net->grads, 0, n_params * sizeof(float));

    float *p = net->params, *g = net->grads, *st = net->stats;
    int64_t *cnt = net->counts;
    for (int i = 0; i < net->n_nodes; i++) {
        net_node *nd = &net->nodes[i];
        const net_node *in = nd->in[0] >= 0 ? &net->nodes[nd->in[0]] : NULL;
        if (!op_has_params(nd->op))
            continue;
        int rc = UL_OK;
        if (nd->op == NET_CONV || nd->op == NET_LINEAR) {
            int64_t conv_shape[4] = {nd->C, in->C, nd->kernel, nd->kernel};
            int64_t lin_shape[2] = {nd->C, in->C};
            bool conv = nd->op == NET_CONV;
            size_t wn = (size_t)nd->C * in->C * (conv ? nd->kernel * nd->kernel : 1);
            nd->w = p;
            nd->dw = g;
            rc = net_add_tensor(net, nd->name, "weight", UL_F32, conv ? 4 : 2,
                                conv ? conv_shape : lin_shape, p, g);
            p += wn;
            g += wn;
            if (rc == UL_OK && nd->bias) {
                int64_t bshape[1] = {nd->C};
                nd->b = p;
                nd->db = g;
                rc = net_add_tensor(net, nd->name, "bias", UL_F32, 1, bshape, p, g);
                p += nd->C;
                g += nd->C;
            }
        } else {
            int64_t cshape[1] = {nd->C};
            nd->w = p;
            nd->dw = g;
            nd->b = p + nd->C;
            nd->db = g + nd->C;
            nd->running_mean = st;
            nd->running_var = st + nd->C;
            nd->nbt = cnt;
            if (net_add_tensor(net, nd->name, "weight", UL_F32, 1, cshape, nd->w, nd->dw) ||
                net_add_tensor(net, nd->name, "bias", UL_F32, 1, cshape, nd->b, nd->db) ||
                net_add_tensor(net, nd->name, "running_mean", UL_F32, 1, cshape,
                               nd->running_mean, NULL) ||
                net_add_tensor(net, nd->name, "running_var", UL_F32, 1, cshape,
                               nd->running_var, NULL) ||
                /* A 0-dim tensor, as in PyTorch. */
                net_add_tensor(net, nd->name, "num_batches_tracked", UL_I64, 0, NULL, nd->nbt,
                               NULL))
                rc = UL_ENOMEM;
            p += 2 * (size_t)nd->C;
            g += 2 * (size_t)nd->C;
            st += 2 * (size_t)nd->C;
            cnt += 1;
        }
        if (rc != UL_OK)
            goto oom;
    }
    return UL_OK;
oom:
    return ul_errorf(err, UL_ENOMEM, "out of memory allocating %zu parameters", n_params);
}

/* PyTorch's default initialisation: Conv2d and Linear weights by
 * kaiming_uniform(a=√5) and biases alike, both U(−1/√fan_in, 1/√fan_in);
 * BatchNorm γ=1, β=0, running mean 0, var 1. Draws follow tensor order. */
static void net_init_params(ul_net *net, ul_rng *rng)
{
    for (int i = 0; i < net->n_nodes; i++) {
        net_node *nd = &net->nodes[i];
        if (nd->op == NET_CONV || nd->op == NET_LINEAR) {
            const net_node *in = &net->nodes[nd->in[0]];
            size_t fan_in = (size_t)in->C * (nd->op == NET_CONV ? nd->kernel * nd->kernel : 1);
            size_t wn = (size_t)nd->C * fan_in;
            double bound = 1.0 / sqrt((double)fan_in);
            for (size_t k = 0; k < wn; k++)
                nd->w[k] = (float)((2.0 * ul_rng_uniform(rng) - 1.0) * bound);
            for (int k = 0; nd->b && k < nd->C; k++)
                nd->b[k] = (float)((2.0 * ul_rng_uniform(rng) - 1.0) * bound);
        } else if (nd->op == NET_BN) {
            for (int k = 0; k < nd->C; k++) {
                nd->w[k] = 1.0f;
                nd->b[k] = 0.0f;
                nd->running_mean[k] = 0.0f;
                nd->running_var[k] = 1.0f;
            }
            *nd->nbt = 0;
        }
    }
}

static int net_compile(ul_net *net, ul_error *err)
{
    if (net->finalized)
        return ul_errorf(err, UL_EINVAL, "the net is already finalized");
    int rc = net_plan(net, err);
    if (rc == UL_OK)
        rc = net_alloc_params(net, err);
    if (rc == UL_OK)
        net->finalized = true;
    return rc;
}

int ul_net_finalize(ul_net *net, ul_rng *rng, ul_error *err)
{
    int rc = net_compile(net, err);
    if (rc == UL_OK)
        net_init_params(net, rng);
    return rc;
}

void ul_net_reinit(ul_net *net, ul_rng *rng)
{
    if (!net->finalized)
        return;
    net_init_params(net, rng);
    ul_net_zero_grad(net);
    /* Saved batch statistics belong to the old weights. */
    net->last_N = 0;
}

/* ---- activations --------------------------------------------------------------- */

static size_t align_floats(size_t n)
{
    return (n + NET_ALIGN_FLOATS - 1) / NET_ALIGN_FLOATS * NET_ALIGN_FLOATS;
}

/* Lays out (or, with base NULL, measures) the float activation block for
 * batches of B; returns its size in floats. */
static size_t net_layout_act(ul_net *net, int B, float *base, int32_t *base_i32,
                             size_t *n_i32)
{
    size_t off = 0, off_i32 = 0;
#define NET_TAKE(ptr, count)                                  \
    do {                                                      \
        if (base)                                             \
            (ptr) = base + off;                               \
        off += align_floats(count);                           \
    } while (0)
    size_t scratch = 0;
    if (base) {
        net->scratch = NULL;
        net->scratch_per = 0;
    }
    for (int i = 0; i < net->n_nodes; i++) {
        net_node *nd = &net->nodes[i];
        if (nd->op == NET_CONV) {
            ul_conv_shape s = nd->conv;
            s.N = B;
            size_t need = ul_conv2d_scratch(&s), per = ul_conv2d_local_scratch(&s);
            if (need > scratch)
                scratch = need;
            if (base && per > net->scratch_per)
                net->scratch_per = per;
        }
        if (nd->op == NET_LINEAR) {
            /* The batch-parallel passes' packed operands (net_team.c): the
             * forward product, the input gradient and the weight gradient
             * (a thread's share of the rows, at most all of them). */
            const int I = net->nodes[nd->in[0]].C, O = nd->C;
            size_t per = ul_sgemm_local_scratch(B, O, I);
            if (ul_sgemm_local_scratch(B, I, O) > per)
                per = ul_sgemm_local_scratch(B, I, O);
            if (ul_sgemm_local_scratch(O, I, B) > per)
                per = ul_sgemm_local_scratch(O, I, B);
            if (base && per > net->scratch_per)
                net->scratch_per = per;
            if (per * (size_t)omp_get_num_procs() + 16 > scratch)
                scratch = per * (size_t)omp_get_num_procs() + 16;
        }
        if (nd->store == i)
            NET_TAKE(nd->out, (size_t)B * node_numel(nd));
        if (nd->op == NET_BN) {
            NET_TAKE(nd->mean, (size_t)nd->C);
            NET_TAKE(nd->rstd, (size_t)nd->C);
            NET_TAKE(nd->bn_scale, (size_t)nd->C);
            NET_TAKE(nd->bn_shift, (size_t)nd->C);
        }
        if (nd->op == NET_MAXPOOL) {
            if (base_i32)
                nd->argmax = base_i32 + off_i32;
            off_i32 += align_floats((size_t)B * node_numel(nd));
        }
    }
    float *slot0 = base ? base + off : NULL;
    size_t slot_off = 0;
    for (int k = 0; k < net->n_slots; k++)
        slot_off += align_floats((size_t)B * net->slot_numel[k]);
    off += slot_off;
    if (base) {
        net->slots = slot0;
        net->slots_floats = slot_off;
    }
    if (scratch)
        NET_TAKE(net->scratch, scratch);
#undef NET_TAKE
    if (base) {
        /* Nodes sharing storage point into their store's buffers. */
        for (int i = 0; i < net->n_nodes; i++) {
            net_node *nd = &net->nodes[i];
            const net_node *st = &net->nodes[nd->store];
            nd->out = st->out;
            nd->out_ld = node_numel(nd);
            nd->dout = NULL;
            if (st->grad_slot >= 0) {
                size_t o = 0;
                for (int k = 0; k < st->grad_slot; k++)
                    o += align_floats((size_t)B * net->slot_numel[k]);
                nd->dout = slot0 + o;
                nd->dout_ld = net->slot_numel[st->grad_slot];
            }
        }
    }
    *n_i32 = off_i32;
    return off;
}

/* The largest (T − 1)·Σ(conv weights + biases), in bytes, for which every
 * convolution keeps its own partials (net_team.c). */
static size_t net_part_whole_max = (size_t)64 << 20;

void net_part_whole_limit(size_t bytes) { net_part_whole_max = bytes; }

/* The batch-parallel passes' buffers (net_team.c): per-thread weight
 * gradient partials (linear layers need none), the threads' shared
 * Winograd kernel transforms, and BatchNorm partial sums. They do not
 * depend on the batch size.
 *
 * The partials: where they fit in net_part_whole_max, every convolution
 * has its own place in the buffers of threads 1, 2, …, thread 0 adds into
 * the net's gradients directly, and the threads' sums are added once, at
 * the end of the backward pass (part_whole): one barrier a pass instead
 * of one or two per convolution (about 60 a ResNet-18 step, where the
 * faster thread waited each time; under perf the main thread is the
 * slower one throughout, so much of that wait moves to the next barrier
 * rather than going away). Else each thread has a buffer the size of the
 * largest convolution's, summed after each. */
static int net_team_alloc(ul_net *net, ul_error *err)
{
    if (net->team_cap)
        return UL_OK;
    int cap = omp_get_num_procs();
    size_t part = 0, whole = 0, wino = 0;
    int red_c = 0;
    for (int i = 0; i < net->n_nodes; i++) {
        net_node *nd = &net->nodes[i];
        size_t need = 0;
        if (nd->op == NET_CONV) {
            need = (size_t)nd->conv.K * nd->conv.C * nd->conv.R * nd->conv.S + (size_t)nd->C;
            const size_t w = ul_wino_shared_floats(&nd->conv);
            wino = w > wino ? w : wino;
            nd->part_off = whole;
            whole += align_floats(need);
        }
        if (need > part)
            part = need;
        if (nd->op == NET_BN && nd->C > red_c)
            red_c = nd->C;
    }
    if (cap < 1)
        cap = 1;
    net->part_whole = cap > 1 && (size_t)(cap - 1) * whole * sizeof(float) <= net_part_whole_max;
    size_t part_floats = (size_t)cap * align_floats(part);
    if (net->part_whole) {
        part = whole;
        part_floats = (size_t)(cap - 1) * whole;
    }
    /* One thread adds its weight gradients straight into the net's and
     * transforms its kernels alone; several share the transformed kernels,
     * two buffers used in turn (ul_wino_team). */
    if (cap > 1) {
        net->part = net_alloc_aligned((part_floats + 1) * sizeof(float));
        if (wino)
            net->wino_shared = net_alloc_aligned((2 * align_floats(wino) + 1) * sizeof(float));
    }
    net->red = malloc(((size_t)4 * cap * red_c + 1) * sizeof(double));
    net->team_speed = malloc(2 * (size_t)cap * sizeof(double));
    net->team_cut = malloc(((size_t)cap + 1) * sizeof(int));
    if ((cap > 1 && (!net->part || (wino && !net->wino_shared))) || !net->red ||
        !net->team_speed || !net->team_cut) {
        free(net->part);
        free(net->red);
        free(net->wino_shared);
        free(net->team_speed);
        free(net->team_cut);
        net->part = NULL;
        net->red = NULL;
        net->wino_shared = NULL;
        net->team_speed = NULL;
        net->team_cut = NULL;
        return ul_errorf(err, UL_ENOMEM, "out of memory: the threads' gradient and kernel "
                                         "buffers need %.1f MiB",
                         ((double)part_floats + 2.0 * wino) * 4 / (1024.0 * 1024.0));
    }
    net->team_busy = net->team_speed + cap;
    net->team_speed_T = 0;
    net->wino_per = net->wino_shared ? align_floats(wino) : 0;
    net->part_per = align_floats(part);
    net->red_c = red_c;
    net->team_cap = cap;
    return UL_OK;
}

/* The folded pass (ul_net_infer) keeps nothing for backward, so its
 * activations need not each have a buffer of their own: infer_plan places
 * them in the gradient slots' part of the arena (unused by that pass),
 * each in a place whose previous activation has had its last reader,
 * lowest place first. A pass then cycles through a few buffers instead of
 * writing every activation to memory not touched since the last pass
 * (with 128 images of ResNet-18 width 0.25 on 1×28×28, 3 places of 6 MiB
 * instead of 126 MiB of activations), and a process that only infers
 * never touches most of the arena. Every place holds B examples of the
 * largest activation's size (infer_ld floats each), and a thread's rows
 * of any activation start at its first example times infer_ld (rows() in
 * net_team.c): threads run the layers without waiting for each other, so
 * one thread may write a place while the other still reads the place's
 * previous activation, each in its own rows. The logits keep their own
 * buffer (the caller reads them contiguously). When the slots cannot
 * hold as many places as the pass needs at once (small nets with small
 * batches), the places get a buffer of their own (infer_act); only when
 * that allocation fails does out_infer stay NULL, and the pass uses the
 * usual layout. */
static bool input_read_only(const ul_net *net);

static void infer_plan(ul_net *net, int B)
{
    const int n = net->n_nodes;
    free(net->out_infer);
    net->out_infer = NULL;
    int *start = malloc(3 * (size_t)n * sizeof(int)), *end = start ? start + n : NULL,
        *place = start ? start + 2 * n : NULL;
    float **out = malloc((size_t)n * sizeof(float *));
    if (!start || !out) {
        free(start);
        free(out);
        return;
    }
    const bool alias = input_read_only(net);
    for (int i = 0; i < n; i++)
        start[i] = end[i] = place[i] = -1;
    size_t big = 0;
    for (int i = 0; i < n; i++) {
        const net_node *nd = &net->nodes[i];
        /* The store this node writes in a folded pass, if any: a folded
         * convolution writes its BatchNorm's, which then does nothing. */
        int w = nd->store == i ? i : -1;
        if (nd->op == NET_CONV && nd->fold_bn >= 0)
            w = net->nodes[nd->fold_bn].store;
        else if (nd->op == NET_BN && nd->fold_conv >= 0)
            w = -1;
        else if (nd->op == NET_INPUT && alias)
            w = -1; /* the caller's x, read in place */
        if (w == net->nodes[n - 1].store)
            w = -1; /* the logits */
        if (w >= 0 && start[w] < 0) {
            start[w] = i;
            const size_t per = node_numel(&net->nodes[w]);
            big = per > big ? per : big;
        }
        if (nd->op == NET_BN && nd->fold_conv >= 0)
            continue; /* reads nothing either */
        for (int k = 0; k < 2; k++)
            if (nd->in[k] >= 0) {
                const int r = net->nodes[nd->in[k]].store;
                end[r] = i > end[r] ? i : end[r];
            }
    }
    /* Places in order of first write: the lowest one whose occupant's last
     * reader came before; as many as that takes (at most one per
     * activation). */
    const size_t place_floats = align_floats((size_t)B * big);
    int *until = malloc((size_t)n * sizeof(int));
    int used = 0;
    bool ok = until != NULL && big > 0;
    for (int i = 0; ok && i < n; i++)
        for (int st = 0; st < n; st++) {
            if (start[st] != i)
                continue;
            int p = 0;
            while (p < used && until[p] >= i)
                p++;
            if (p == used)
                used++;
            until[p] = end[st] > i ? end[st] : i;
            place[st] = p;
        }
    free(until);
    /* In the slots when they hold that many places (ResNet-18 and the CNN
     * at every width: three), else in a buffer of their own. */
    float *base = NULL;
    free(net->infer_act);
    net->infer_act = NULL;
    if (ok && (size_t)used * place_floats <= net->slots_floats) {
        base = net->slots;
    } else if (ok) {
        net->infer_act = net_alloc_aligned((size_t)used * place_floats * sizeof(float));
        base = net->infer_act;
    }
    if (base) {
        for (int i = 0; i < n; i++) {
            const int st = net->nodes[i].store;
            out[i] = place[st] >= 0 ? base + (size_t)place[st] * place_floats : NULL;
        }
        net->out_infer = out;
        net->infer_ld = big;
    } else {
        free(out);
    }
    free(start);
}

/* Appends [a, b) to the runs, joined to the last one when adjacent. */
static void kc_run_add(size_t *lo, size_t *hi, int *runs, size_t a, size_t b)
{
    if (*runs > 0 && hi[*runs - 1] == a) {
        hi[*runs - 1] = b;
    } else {
        lo[*runs] = a;
        hi[*runs] = b;
        (*runs)++;
    }
}

/* Where the folded passes keep their convolutions' transformed kernels
 * (ul_conv2d_forward_kc): in the activations' usual buffers, which a
 * folded pass with placed activations (infer_plan) does not touch — every
 * store's but the logits', and the folded BatchNorms' statistics between
 * them, runs of adjacent buffers taken as one. Convolutions on the
 * smallest images first (their kernels cost the most next to the
 * convolution itself), each in the first run with room left. An unfolded
 * pass writes those buffers and raises kc_epoch, after which each cache is
 * filled again by the next folded pass. */
static void net_kcache_plan(ul_net *net, int B)
{
    const int n = net->n_nodes;
    for (int i = 0; i < n; i++)
        net->nodes[i].kc = (ul_conv_kcache){0};
    if (!net->out_infer)
        return;
    /* The free runs, in address order: [lo, hi) in floats from act. */
    size_t *lo = malloc(4 * (size_t)n * sizeof(size_t)), *hi = lo ? lo + 2 * n : NULL;
    bool *done = calloc((size_t)n, sizeof(bool));
    if (!lo || !done) {
        free(lo);
        free(done);
        return;
    }
    int runs = 0;
    const int logits = net->nodes[n - 1].store;
    for (int i = 0; i < n; i++) {
        const net_node *nd = &net->nodes[i];
        if (nd->store == i && i != logits) {
            const size_t a = (size_t)(net->out_train[i] - net->act);
            kc_run_add(lo, hi, &runs, a, a + align_floats((size_t)B * node_numel(nd)));
        }
        if (nd->op == NET_BN && nd->fold_conv >= 0) {
            /* mean, rstd, bn_scale and bn_shift, one after the other. */
            const size_t a = (size_t)(nd->mean - net->act);
            kc_run_add(lo, hi, &runs, a, a + 4 * align_floats((size_t)nd->C));
        }
    }
    for (;;) {
        int best = -1;
        for (int i = 0; i < n; i++) {
            const net_node *nd = &net->nodes[i];
            if (nd->op != NET_CONV || nd->fold_bn < 0 || done[i])
                continue;
            if (best < 0 ||
                nd->conv.H * nd->conv.W < net->nodes[best].conv.H * net->nodes[best].conv.W)
                best = i;
        }
        if (best < 0)
            break;
        done[best] = true;
        net_node *cv = &net->nodes[best];
        ul_conv_shape s = cv->conv;
        s.N = B;
        const size_t need = align_floats(ul_conv2d_kcache_floats(&s));
        for (int r = 0; need && r < runs; r++)
            if (hi[r] - lo[r] >= need) {
                cv->kc = (ul_conv_kcache){net->act + lo[r], need, 0, 0};
                lo[r] += need;
                break;
            }
    }
    free(lo);
    free(done);
}

int ul_net_reserve(ul_net *net, int max_batch, ul_error *err)
{
    if (!net->finalized)
        return ul_errorf(err, UL_EINVAL, "ul_net_reserve: the net is not finalized");
    if (max_batch < 1)
        return ul_errorf(err, UL_EINVAL, "ul_net_reserve: batch size %d must be positive",
                         max_batch);
    if (max_batch <= net->max_batch)
        return UL_OK;
    size_t n_i32 = 0;
    size_t n_f = net_layout_act(net, max_batch, NULL, NULL, &n_i32);
    float *act = net_alloc_aligned(n_f * sizeof(float));
    int32_t *act_i32 = net_alloc_aligned(n_i32 * sizeof(int32_t));
    if (!act || !act_i32) {
        free(act);
        free(act_i32);
        return ul_errorf(err, UL_ENOMEM, "out of memory: activations for a batch of %d need "
                                         "%.1f MiB",
                         max_batch, (double)(n_f * 4 + n_i32 * 4) / (1024.0 * 1024.0));
    }
    if (net_team_alloc(net, err)) {
        free(act);
        free(act_i32);
        return err ? err->code : UL_ENOMEM;
    }
    if (net->n_fold && !net->fold) {
        net->fold = net_alloc_aligned(net->n_fold * sizeof(float));
        if (!net->fold) {
            free(act);
            free(act_i32);
            return ul_errorf(err, UL_ENOMEM, "out of memory: the folded weights need %.1f MiB",
                             (double)net->n_fold * 4 / (1024.0 * 1024.0));
        }
        float *p = net->fold;
        for (int i = 0; i < net->n_nodes; i++) {
            net_node *cv = &net->nodes[i];
            if (cv->fold_bn < 0)
                continue;
            cv->fold_w = p;
            p += (size_t)cv->conv.K * cv->conv.C * cv->conv.R * cv->conv.S;
            cv->fold_b = p;
            p += cv->conv.K;
        }
    }
    free(net->act);
    free(net->act_i32);
    net->act = act;
    net->act_i32 = act_i32;
    net_layout_act(net, max_batch, act, act_i32, &n_i32);
    float **train = realloc(net->out_train, (size_t)net->n_nodes * sizeof(float *));
    if (train) {
        for (int i = 0; i < net->n_nodes; i++)
            train[i] = net->nodes[i].out;
        net->out_train = train;
        infer_plan(net, max_batch);
        net_kcache_plan(net, max_batch);
    } else {
        free(net->out_infer);
        net->out_infer = NULL;
    }
    net->max_batch = max_batch;
    net->last_N = 0;
    return UL_OK;
}

/* ---- forward and backward -------------------------------------------------------- */

/* Backward of an in-place relu: the gradient buffer is shared with the input,
 * so mask it where the output was not positive. */
static void relu_mask_inplace(float *g, const float *out, size_t n)
{
    for (size_t i = 0; i < n; i++)
        g[i] = out[i] > 0.0f ? g[i] : 0.0f;
}

static void accumulate(float *dst, const float *src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] += src[i];
}

/* Backward of BatchNorm in eval mode, where it is an affine map per channel:
 * out = (x − μ_run)·r·γ + β with r = 1/√(var_run + eps). ops.h only has the
 * train-mode backward, which differentiates through the batch statistics. */
static void bn_eval_backward(float *din, float *dgamma, float *dbeta, const float *dout,
                             const float *in, const float *running_mean,
                             const float *running_var, const float *gamma, int N, int C, int HW)
{
    for (int c = 0; c < C; c++) {
        float r = 1.0f / sqrtf(running_var[c] + BN_EPS);
        double sg = 0.0, sb = 0.0;
        for (int n = 0; n < N; n++) {
            size_t base = ((size_t)n * C + c) * HW;
            for (int i = 0; i < HW; i++) {
                float g = dout[base + i];
                sb += g;
                sg += (double)g * (in[base + i] - running_mean[c]) * r;
                if (din)
                    din[base + i] += g * gamma[c] * r;
            }
        }
        dgamma[c] += (float)sg;
        dbeta[c] += (float)sb;
    }
}

void net_fold_conv(ul_net *net, int i)
{
    net_node *cv = &net->nodes[i];
    const net_node *bn = &net->nodes[cv->fold_bn];
    const size_t per = (size_t)cv->conv.C * cv->conv.R * cv->conv.S;
    bool same = cv->fold_set;
    for (int k = 0; k < cv->conv.K; k++) {
        /* bn_forward_eval's scale and shift. */
        const float scale = bn->w[k] / sqrtf(bn->running_var[k] + BN_EPS);
        const float shift = bn->b[k] - bn->running_mean[k] * scale;
        /* Compared bit for bit while written (a NaN equals itself). */
        uint32_t diff = 0;
        for (size_t j = 0; j < per; j++) {
            const float v = cv->w[k * per + j] * scale;
            uint32_t a, o;
            memcpy(&a, &v, sizeof a);
            memcpy(&o, &cv->fold_w[k * per + j], sizeof o);
            diff |= a ^ o;
            cv->fold_w[k * per + j] = v;
        }
        const float fb = (cv->b ? cv->b[k] * scale : 0.0f) + shift;
        uint32_t a, o;
        memcpy(&a, &fb, sizeof a);
        memcpy(&o, &cv->fold_b[k], sizeof o);
        diff |= a ^ o;
        cv->fold_b[k] = fb;
        same = same && diff == 0;
    }
    if (!same)
        cv->fold_gen++;
    cv->fold_set = true;
}

static void node_forward(ul_net *net, net_node *nd, const float *x, int N, bool train,
                         bool fold)
{
    const net_node *a = nd->in[0] >= 0 ? &net->nodes[nd->in[0]] : NULL;
    const net_node *b = nd->in[1] >= 0 ? &net->nodes[nd->in[1]] : NULL;
    size_t count = (size_t)N * node_numel(nd);
    switch (nd->op) {
    case NET_INPUT:
        /* A copy, so the caller may reuse x before backward (the first conv's
         * backward reads it); none when ul_net_infer reads x in place. */
        if (nd->out != x)
            memcpy(nd->out, x, count * sizeof(float));
        break;
    case NET_CONV: {
        ul_conv_shape s = nd->conv;
        s.N = N;
        if (fold && nd->fold_bn >= 0)
            ul_conv2d_forward(net->nodes[nd->fold_bn].out, a->out, nd->fold_w, nd->fold_b, &s,
                              net->scratch);
        else
            ul_conv2d_forward(nd->out, a->out, nd->w, nd->b, &s, net->scratch);
        break;
    }
    case NET_BN:
        if (fold && nd->fold_conv >= 0)
            break; /* written by the convolution */
        if (train) {
            ul_batchnorm_forward_train(nd->out, nd->mean, nd->rstd, a->out, nd->w, nd->b,
                                       nd->running_mean, nd->running_var, N, nd->C,
                                       nd->H * nd->W, BN_MOMENTUM, BN_EPS);
            (*nd->nbt)++;
        } else {
            ul_batchnorm_forward_eval(nd->out, a->out, nd->w, nd->b, nd->running_mean,
                                      nd->running_var, N, nd->C, nd->H * nd->W, BN_EPS);
        }
        break;
    case NET_RELU:
        if (nd->inplace >= 0)
            ul_relu_forward(nd->out, nd->out, count);
        else
            ul_relu_forward(nd->out, a->out, count);
        break;
    case NET_MAXPOOL:
        ul_maxpool2d_forward(nd->out, nd->argmax, a->out, N, a->C, a->H, a->W, nd->kernel,
                             nd->stride, nd->pad);
        break;
    case NET_AVGPOOL:
        ul_avgpool2d_forward(nd->out, a->out, N, a->C, a->H, a->W, nd->kernel, nd->stride,
                             nd->pad);
        break;
    case NET_GAP:
        ul_global_avgpool_forward(nd->out, a->out, N, a->C, a->H * a->W);
        break;
    case NET_ADD:
        if (nd->inplace >= 0)
            accumulate(nd->out, (nd->inplace == 0 ? b : a)->out, count);
        else
            ul_add_forward(nd->out, a->out, b->out, count);
        break;
    case NET_FLATTEN:
        break;
    case NET_LINEAR:
        ul_linear_forward(nd->out, a->out, nd->w, nd->b, N, a->C, nd->C);
        break;
    case NET_OP_COUNT:
        break;
    }
}

/* Whether the input's storage is only ever read: no node but the input
 * and flattening views of it (which write nothing) has it as its store. */
static bool input_read_only(const ul_net *net)
{
    for (int i = 0; i < net->n_nodes; i++)
        if (i != net->input && net->nodes[i].store == net->input &&
            net->nodes[i].op != NET_FLATTEN)
            return false;
    return true;
}

/* Points the nodes stored in the input's buffer at base (x, or the buffer
 * again). */
static void input_rebase(ul_net *net, float *base)
{
    for (int i = 0; i < net->n_nodes; i++)
        if (net->nodes[i].store == net->input)
            net->nodes[i].out = base;
}

static const float *net_run(ul_net *net, const float *x, int N, bool train, bool fold)
{
    if (!net->finalized || N < 1 || N > net->max_batch)
        return NULL;
    /* ul_net_infer keeps nothing for backward, so when no op writes into the
     * input's storage the layers read the caller's x in place: no copy of
     * the batch (12% of an MLP's inference on 3×32×32). */
    const bool placed = fold && net->out_infer;
    /* A pass that writes the activations' usual buffers overwrites the
     * kernel caches kept there; only a placed pass uses them. */
    if (!placed)
        net->kc_epoch++;
    net->kc_on = placed;
    if (placed)
        for (int i = 0; i < net->n_nodes; i++)
            if (net->out_infer[i]) {
                net->nodes[i].out = net->out_infer[i];
                net->nodes[i].out_ld = net->infer_ld;
            }
    float *const input_buf = net->nodes[net->input].out;
    const bool alias = fold && input_read_only(net);
    if (alias)
        input_rebase(net, (float *)x);
    const int T = net_team_size(net, N);
    if (T >= 1) {
        net_forward_team(net, x, N, train, fold, T);
    } else {
        if (fold)
            for (int i = 0; i < net->n_nodes; i++)
                if (net->nodes[i].fold_bn >= 0)
                    net_fold_conv(net, i);
        const bool prof = net_profiling();
        for (int i = 0; i < net->n_nodes; i++) {
            const double t0 = prof ? net_clock() : 0.0;
            node_forward(net, &net->nodes[i], x, N, train, fold);
            if (prof)
                net_prof_add(net, i, 0, net_clock() - t0);
        }
    }
    if (alias)
        input_rebase(net, input_buf);
    const float *logits = net->nodes[net->n_nodes - 1].out;
    if (placed)
        for (int i = 0; i < net->n_nodes; i++) {
            net->nodes[i].out = net->out_train[i];
            net->nodes[i].out_ld = node_numel(&net->nodes[i]);
        }
    /* After a folded pass the convolutions' outputs were never written:
     * there is nothing for backward to run on. */
    net->last_N = fold ? 0 : N;
    net->last_train = train;
    net->last_team = T >= 1;
    if (net_profiling())
        net->prof_passes[0]++;
    return logits;
}

const float *ul_net_forward(ul_net *net, const float *x, int N, bool train)
{
    return net_run(net, x, N, train, false);
}

const float *ul_net_infer(ul_net *net, const float *x, int N)
{
    return net_run(net, x, N, false, true);
}

/* The gradient buffer of input k, or NULL when no gradient flows there. */
static float *node_din(ul_net *net, const net_node *nd, int k)
{
    int j = nd->in[k];
    return (j >= 0 && net->nodes[j].needs_grad) ? net->nodes[j].dout : NULL;
}

static void node_backward(ul_net *net, net_node *nd, int N)
{
    const net_node *a = nd->in[0] >= 0 ? &net->nodes[nd->in[0]] : NULL;
    float *din = node_din(net, nd, 0);
    size_t count = (size_t)N * node_numel(nd);
    switch (nd->op) {
    case NET_CONV: {
        ul_conv_shape s = nd->conv;
        s.N = N;
        ul_conv2d_backward(din, nd->dw, nd->db, nd->dout, a->out, nd->w, &s, net->scratch);
        break;
    }
    case NET_BN:
        if (net->last_train)
            ul_batchnorm_backward(din, nd->dw, nd->db, nd->dout, a->out, nd->mean, nd->rstd,
                                  nd->w, N, nd->C, nd->H * nd->W);
        else
            bn_eval_backward(din, nd->dw, nd->db, nd->dout, a->out, nd->running_mean,
                             nd->running_var, nd->w, N, nd->C, nd->H * nd->W);
        break;
    case NET_RELU:
        if (nd->inplace >= 0)
            relu_mask_inplace(nd->dout, nd->out, count);
        else if (din)
            ul_relu_backward(din, nd->dout, nd->out, count);
        break;
    case NET_MAXPOOL:
        if (din)
            ul_maxpool2d_backward(din, nd->dout, nd->argmax, N, a->C, a->H, a->W, nd->kernel,
                                  nd->stride, nd->pad);
        break;
    case NET_AVGPOOL:
        if (din)
            ul_avgpool2d_backward(din, nd->dout, N, a->C, a->H, a->W, nd->kernel, nd->stride,
                                  nd->pad);
        break;
    case NET_GAP:
        if (din)
            ul_global_avgpool_backward(din, nd->dout, N, a->C, a->H * a->W);
        break;
    case NET_ADD:
        /* The overwritten input shares this node's gradient buffer already. */
        for (int k = 0; k < 2; k++) {
            float *dk = node_din(net, nd, k);
            if (k != nd->inplace && dk)
                accumulate(dk, nd->dout, count);
        }
        break;
    case NET_LINEAR:
        ul_linear_backward(din, nd->dw, nd->db, nd->dout, a->out, nd->w, N, a->C, nd->C);
        break;
    case NET_INPUT:
    case NET_FLATTEN:
    case NET_OP_COUNT:
        break;
    }
}

void ul_net_backward(ul_net *net, const float *dlogits)
{
    int N = net->last_N, n = net->n_nodes;
    if (N == 0 || !net->nodes[n - 1].needs_grad)
        return;
    /* grad_order lists stores by first write, latest first: the logits'
     * store (written by dlogits) leads. */
    const int T = net_team_size(net, N);
    if (net_profiling())
        net->prof_passes[1]++;
    if (T >= 1) {
        net_backward_team(net, dlogits, N, T);
        return;
    }
    int k = 0;
    const net_node *last = &net->nodes[n - 1];
    memcpy(last->dout, dlogits, (size_t)N * node_numel(last) * sizeof(float));
    k++;
    for (int i = n - 1; i >= 0; i--) {
        for (; k < net->n_grad_order && net->nodes[net->grad_order[k]].grad_first == i; k++) {
            const net_node *st = &net->nodes[net->grad_order[k]];
            memset(st->dout, 0, (size_t)N * node_numel(st) * sizeof(float));
        }
        if (!net->nodes[i].needs_grad)
            continue;
        if (net_profiling()) {
            double t0 = net_clock();
            node_backward(net, &net->nodes[i], N);
            net_prof_add(net, i, 1, net_clock() - t0);
        } else {
            node_backward(net, &net->nodes[i], N);
        }
    }
}

void ul_net_zero_grad(ul_net *net)
{
    if (net->grads)
        memset(net->grads, 0, net->n_params * sizeof(float));
}

/* ---- ownership, copies, views ------------------------------------------------- */

void ul_net_free(ul_net *net)
{
    if (!net)
        return;
    if (net_profiling())
        net_profile_print(net);
    for (int i = 0; i < net->n_nodes; i++)
        free(net->nodes[i].name);
    free(net->nodes);
    for (size_t t = 0; t < net->n_tensors; t++)
        free((char *)net->tensors[t].name);
    free(net->tensors);
    free(net->params);
    free(net->grads);
    free(net->stats);
    free(net->counts);
    free(net->slot_numel);
    free(net->grad_order);
    free(net->act);
    free(net->act_i32);
    free(net->out_train);
    free(net->out_infer);
    free(net->infer_act);
    free(net->fold);
    free(net->part);
    free(net->red);
    free(net->wino_shared);
    free(net->team_speed);
    free(net->team_cut);
    free(net);
}

/* Re-issues the builder call that created node src in dst. */
static int net_replay(ul_net *dst, const net_node *nd)
{
    switch (nd->op) {
    case NET_INPUT: return ul_net_input(dst);
    case NET_CONV:
        return ul_net_conv2d(dst, nd->name, nd->in[0], nd->C, nd->kernel, nd->stride, nd->pad,
                             nd->bias);
    case NET_BN: return ul_net_batchnorm(dst, nd->name, nd->in[0]);
    case NET_RELU: return ul_net_relu(dst, nd->in[0]);
    case NET_MAXPOOL: return ul_net_maxpool(dst, nd->in[0], nd->kernel, nd->stride, nd->pad);
    case NET_AVGPOOL: return ul_net_avgpool(dst, nd->in[0], nd->kernel, nd->stride, nd->pad);
    case NET_GAP: return ul_net_global_avgpool(dst, nd->in[0]);
    case NET_ADD: return ul_net_add(dst, nd->in[0], nd->in[1]);
    case NET_FLATTEN: return ul_net_flatten(dst, nd->in[0]);
    case NET_LINEAR: return ul_net_linear(dst, nd->name, nd->in[0], nd->C, nd->bias);
    case NET_OP_COUNT: break;
    }
    return -1;
}

ul_net *ul_net_clone(const ul_net *src, ul_error *err)
{
    if (!src->finalized) {
        ul_errorf(err, UL_EINVAL, "ul_net_clone: the net is not finalized");
        return NULL;
    }
    ul_net *dst = ul_net_new(src->C, src->H, src->W, src->n_classes);
    if (!dst) {
        ul_errorf(err, UL_ENOMEM, "out of memory cloning the net");
        return NULL;
    }
    for (int i = 0; i < src->n_nodes; i++)
        net_replay(dst, &src->nodes[i]);
    if (net_compile(dst, err) || ul_net_copy_weights(dst, src, err))
        goto fail;
    /* A clone is ready to run at the batch size its source was. */
    if (src->max_batch > 0 && ul_net_reserve(dst, src->max_batch, err))
        goto fail;
    return dst;
fail:
    ul_net_free(dst);
    return NULL;
}

int ul_net_copy_weights(ul_net *dst, const ul_net *src, ul_error *err)
{
    if (!dst->finalized || !src->finalized)
        return ul_errorf(err, UL_EINVAL, "ul_net_copy_weights: both nets must be finalized");
    if (dst->n_tensors != src->n_tensors)
        return ul_errorf(err, UL_EINVAL, "cannot copy weights: the nets have %zu and %zu "
                                         "tensors", dst->n_tensors, src->n_tensors);
    for (size_t t = 0; t < src->n_tensors; t++) {
        const ul_tensor_info *a = &dst->tensors[t], *b = &src->tensors[t];
        if (strcmp(a->name, b->name) || a->numel != b->numel)
            return ul_errorf(err, UL_EINVAL, "cannot copy weights: tensor %zu is '%s' "
                                             "(%lld values) here but '%s' (%lld values) in the "
                                             "source",
                             t, a->name, (long long)a->numel, b->name, (long long)b->numel);
    }
    memcpy(dst->params, src->params, src->n_params * sizeof(float));
    memcpy(dst->stats, src->stats, src->n_stats * sizeof(float));
    memcpy(dst->counts, src->counts, src->n_counts * sizeof(int64_t));
    return UL_OK;
}

float *ul_net_params(ul_net *net, size_t *n)
{
    if (n)
        *n = net->n_params;
    return net->params;
}

float *ul_net_grads(ul_net *net, size_t *n)
{
    if (n)
        *n = net->n_params;
    return net->grads;
}

int64_t ul_net_param_count(const ul_net *net)
{
    return (int64_t)net->n_params;
}

size_t ul_net_tensor_count(const ul_net *net)
{
    return net->n_tensors;
}

const ul_tensor_info *ul_net_tensor(const ul_net *net, size_t i)
{
    return i < net->n_tensors ? &net->tensors[i] : NULL;
}

const ul_tensor_info *ul_net_find_tensor(const ul_net *net, const char *name)
{
    for (size_t t = 0; t < net->n_tensors; t++)
        if (!strcmp(net->tensors[t].name, name))
            return &net->tensors[t];
    return NULL;
}

double ul_net_forward_macs(const ul_net *net)
{
    double macs = 0;
    for (int i = 0; i < net->n_nodes; i++) {
        const net_node *nd = &net->nodes[i];
        if (nd->op == NET_CONV)
            macs += (double)nd->conv.K * nd->conv.C * nd->conv.R * nd->conv.S * nd->conv.P *
                    nd->conv.Q;
        else if (nd->op == NET_LINEAR)
            macs += (double)nd->C * (double)node_numel(&net->nodes[nd->in[0]]);
    }
    return macs;
}
