/* Losses on logits (N,K): softmax cross-entropy, distillation KL, L1.
 * Every softmax subtracts the row maximum first (log-sum-exp) so that large
 * logits cannot overflow; row sums are in double. */
#include <math.h>

#include "unlearn/ops.h"

/* log Σ_c exp(z_c / T), shifted by the maximum. */
static double ul_logsumexp(const float *z, int K, double T)
{
    double mx = z[0] / T;
    for (int c = 1; c < K; c++)
        mx = z[c] / T > mx ? z[c] / T : mx;
    double sum = 0.0;
    for (int c = 0; c < K; c++)
        sum += exp(z[c] / T - mx);
    return mx + log(sum);
}

float ul_softmax_xent_forward(float *probs, float *losses, const float *logits,
                              const int32_t *labels, int N, int K)
{
    // probs, logits are (N,K); losses, labels are (N)
    double total = 0.0;
    for (int n = 0; n < N; n++) {
        const float *z = logits + (size_t)n * K;
        float *pr = probs + (size_t)n * K;
        double lse = ul_logsumexp(z, K, 1.0);
        for (int c = 0; c < K; c++)
            pr[c] = (float)exp((double)z[c] - lse);
        double loss = lse - z[labels[n]];
        if (losses)
            losses[n] = (float)loss;
        total += loss;
    }
    return N > 0 ? (float)(total / N) : 0.0f;
}

void ul_softmax_xent_backward(float *dlogits, const float *probs, const int32_t *labels, int N,
                              int K, float scale)
{
    const float g = scale / (float)N;
    for (int n = 0; n < N; n++) {
        const float *pr = probs + (size_t)n * K;
        float *d = dlogits + (size_t)n * K;
        for (int c = 0; c < K; c++)
            d[c] += g * pr[c];
        d[labels[n]] -= g;
    }
}

float ul_kl_div_forward(const float *student, const float *teacher, int N, int K, float T)
{
    // student, teacher are (N,K) logits
    double total = 0.0;
    for (int n = 0; n < N; n++) {
        const float *s = student + (size_t)n * K, *t = teacher + (size_t)n * K;
        double lse_s = ul_logsumexp(s, K, T), lse_t = ul_logsumexp(t, K, T);
        for (int c = 0; c < K; c++) {
            double lt = t[c] / (double)T - lse_t, ls = s[c] / (double)T - lse_s;
            /* exp(lt) may underflow to 0; the term is then 0·finite = 0, the
             * limit of p·log p, so no special case is needed. */
            total += exp(lt) * (lt - ls);
        }
    }
    return N > 0 ? (float)((double)T * T * total / N) : 0.0f;
}

void ul_kl_div_backward(float *dstudent, const float *student, const float *teacher, int N,
                        int K, float T, float scale)
{
    /* ∂/∂s of T²·KL(p_T(t) ‖ p_T(s)) / N is T²/N · (1/T)·(p_T(s) − p_T(t)). */
    const double g = (double)scale * T / N;
    for (int n = 0; n < N; n++) {
        const float *s = student + (size_t)n * K, *t = teacher + (size_t)n * K;
        double lse_s = ul_logsumexp(s, K, T), lse_t = ul_logsumexp(t, K, T);
        float *d = dstudent + (size_t)n * K;
        for (int c = 0; c < K; c++)
            d[c] += (float)(g * (exp(s[c] / (double)T - lse_s) - exp(t[c] / (double)T - lse_t)));
    }
}

double ul_l1_penalty(float *grad, const float *w, size_t n, float alpha)
{
    double sum = 0.0;
    for (size_t i = 0; i < n; i++) {
        sum += fabsf(w[i]);
        if (grad)
            grad[i] += w[i] > 0.0f ? alpha : w[i] < 0.0f ? -alpha : 0.0f;
    }
    return (double)alpha * sum;
}
