/* unlearn — the statistics metric plugins share: binary logistic
 * regression, stratified shuffle splits, the loss-based membership
 * inference (MIA) score, per-class thresholds, and per-example scores
 * (loss, softmax entropy, true-class confidence) of a net.
 *
 * Everything runs in double precision. Ownership: input arrays are borrowed
 * for the duration of the call; output arrays are allocated by the caller;
 * only ul_shuffle_split owns memory (ul_shuffle_split_init/_free). */
#ifndef UNLEARN_STATS_H
#define UNLEARN_STATS_H

#include "common.h"
#include "net.h"
#include "params.h"
#include "rng.h"
#include "train.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- binary logistic regression ------------------------------------------ */
#define UL_LOGREG_MAX_D 4

typedef struct ul_logreg {
    int d;
    double w[UL_LOGREG_MAX_D];
    double b;
    int iterations; /* Newton iterations the fit took */
} ul_logreg;

/* Fits P(y = 1 | x) = σ(w·x + b) by minimising scikit-learn's
 * LogisticRegression(penalty="l2", C=C) objective
 *     ½‖w‖² + C · Σ_i s_i · logloss(y_i, w·x_i + b)
 * (intercept unpenalised), with s_i = 1, or s_i = n / (2·n_{y_i}) when
 * `balanced` (class_weight="balanced"). x is row-major (n, d) with
 * 1 <= d <= UL_LOGREG_MAX_D, finite; y[i] is 0 or 1 and both occur.
 * Newton's method with a backtracking line search: the objective is
 * strictly convex, so the result is the exact optimum to ~1e-12 relative,
 * where lbfgs stops at its tolerance. */
UL_API int ul_logreg_fit(ul_logreg *m, const double *x, const uint8_t *y, int64_t n, int d,
                         double C, bool balanced, ul_error *err);
/* w·x + b for one row x (length m->d). */
UL_API double ul_logreg_decision(const ul_logreg *m, const double *x);
/* 1 when w·x + b > 0, as scikit-learn's predict. */
UL_API int ul_logreg_predict(const ul_logreg *m, const double *x);

/* ---- stratified shuffle split -------------------------------------------
 * scikit-learn's StratifiedShuffleSplit semantics: n_test = ceil(test_size·n),
 * n_train = n − n_test; the per-class counts are the proportional shares,
 * rounded as sklearn's _approximate_mode (floors, then the remaining slots
 * to the largest fractional parts; ties go to the lower class index where
 * sklearn draws them at random) — train counts first, test counts from what
 * is left. Each split draws, per class, a fresh random subset. Index
 * equality with sklearn is not a goal. Requirements (as sklearn): every
 * present class has >= 2 examples, and n_train, n_test >= the number of
 * present classes. */
typedef struct ul_shuffle_split {
    int64_t n, n_train, n_test;
    int n_classes;       /* labels are in [0, n_classes) */
    int64_t *group;      /* 0..n-1 grouped by class, reshuffled each split */
    int64_t *start;      /* class k owns group[start[k] .. start[k+1]-1] */
    int64_t *train_k;    /* per-class train counts */
    int64_t *test_k;     /* per-class test counts */
    ul_rng rng;
} ul_shuffle_split;

UL_API int ul_shuffle_split_init(ul_shuffle_split *s, const int32_t *labels, int64_t n,
                                 int n_classes, double test_size, uint64_t seed, ul_error *err);
/* The next split: train[0..s->n_train-1] and test[0..s->n_test-1] receive
 * disjoint example indices, grouped by class (the order does not matter to
 * the estimators here). */
UL_API void ul_shuffle_split_next(ul_shuffle_split *s, int64_t *train, int64_t *test);
UL_API void ul_shuffle_split_free(ul_shuffle_split *s);

/* ---- membership inference score -----------------------------------------
 * The protocol of SCRUB's membership_inference_attack (and the NeurIPS 2023
 * starting kit's simple_mia):
 *   1. the larger side is subsampled without replacement to the size of the
 *      smaller one (seeded), so chance level is exactly 0.5;
 *   2. values are clipped to [−clip, clip] (a diverged loss of +inf becomes
 *      clip); NaN is rejected;
 *   3. a 1-D logistic regression (C = 1, no class weights: the classes are
 *      balanced) is fitted on the train part of each of n_splits stratified
 *      shuffle splits and scored by accuracy on the test part.
 * Result: mean and population std (ddof = 0, as numpy) of the accuracies.
 * 0.5 means the attacker cannot tell members from non-members.
 * Defaults: 5 splits as SCRUB; test_size 0.1, which is what SCRUB gets from
 * StratifiedShuffleSplit's default; clip 100. With 200 forget examples the
 * attack trains on 360 values and tests on 40 per split. */
typedef struct ul_mia_cfg {
    int n_splits;
    double test_size;  /* fraction in (0, 1) */
    double clip;
    uint64_t seed;     /* subsampling and splits */
} ul_mia_cfg;

/* The schema entries of a loss-MIA metric plugin, shared so every plugin
 * that runs the loss MIA has the same parameters and defaults. */
#define UL_MIA_PARAM_DEFS                                                                 \
    UL_PARAM_INT("n_splits", "5", 1, 1000, "stratified shuffle splits of the attack"),    \
    UL_PARAM_DOUBLE("test_size", "0.1", 0.01, 0.99,                                       \
                    "fraction of the balanced member/non-member set held out per split "  \
                    "(0.1: sklearn's StratifiedShuffleSplit default, as SCRUB uses)"),    \
    UL_PARAM_DOUBLE("clip", "100", 1e-6, 1e300, "losses are clipped to [-clip, clip]"),   \
    UL_PARAM_INT("seed", "0", 0, 9007199254740991.0,                                      \
                 "added to the run seed for the subsampling and the splits")

/* Reads the UL_MIA_PARAM_DEFS values; the seed is run_seed + params.seed. */
UL_API void ul_mia_cfg_from_params(ul_mia_cfg *cfg, const ul_params *params, uint64_t run_seed);

/* The score of members (label 1) vs non-members (label 0) as above. Fails
 * (UL_EINVAL, with the sizes in the message) when a side is too small for
 * the splits. */
UL_API int ul_mia_score(const double *member, int64_t n_member, const double *nonmember,
                        int64_t n_nonmember, const ul_mia_cfg *cfg, double *mean, double *std,
                        ul_error *err);

/* The loss MIA of a net: per-example cross-entropy on `members` against
 * `heldout`, the held-out examples restricted to `classes[0..n_classes-1]`
 * when n_classes > 0 (a class-wise forget set), then ul_mia_score. */
UL_API int ul_mia_loss(ul_net *net, const ul_data_view *members, const ul_data_view *heldout,
                       const int32_t *classes, int n_classes, const ul_mia_cfg *cfg,
                       double *mean, double *std, ul_error *err);

/* ---- thresholds -------------------------------------------------------------
 * The threshold attack of Song & Mittal ("Systematic evaluation of privacy
 * risks", used by l1-sparse and SalUn for MIA-efficacy): predict "member"
 * when value >= threshold. ul_threshold_fit sorts items in place and picks,
 * among the values present, the threshold maximising the balanced accuracy
 * ½·(members >= t)/n_members + ½·(non-members < t)/n_nonmembers; ties go to
 * the smallest such threshold. Returns false (outputs untouched) when
 * either side is empty. Values must not be NaN. */
typedef struct ul_scored {
    double value;
    bool member;
} ul_scored;

UL_API bool ul_threshold_fit(ul_scored *items, int64_t n, double *threshold,
                             double *balanced_accuracy);

/* ---- per-example scores ------------------------------------------------------ */
/* For one row of logits (K) and its label y: cross-entropy loss,
 * softmax entropy (natural log) and softmax probability of y. Any output
 * may be NULL. */
UL_API void ul_logit_scores(const float *logits, int K, int32_t y, double *loss,
                            double *entropy, double *confidence);
/* The same for every example of the view, in view order, with the net in
 * eval mode (batch_size < 1: 256). Outputs of length v->n; any may be NULL. */
UL_API int ul_net_scores(ul_net *net, const ul_data_view *v, int batch_size, double *loss,
                         double *entropy, double *confidence, ul_error *err);

#ifdef __cplusplus
}
#endif
#endif
