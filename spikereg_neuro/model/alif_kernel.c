/* The FusedALIF time loop of spikereg_neuro/model/fused_alif.py in C, for its exact float32
 * regime without threshold adaptation: every state is an integer below 2**24 held in a float,
 * so every operation below is exact except the graded payload's one division, which is the
 * same IEEE division torch performs. Compiled without FMA contraction (-ffp-contract=off) so
 * that the backward recurrence rounds after each multiply and each add, as torch does.
 *
 * Elements are independent: each block of elements keeps its states in a small local array
 * across all time steps (read x once, write spikes and margin once), instead of one pass over
 * memory per operation per step.
 *
 * Layout: frame t of x starts at x + t * x_tstride (x_tstride 0: one frame for every step),
 * frame t of spikes / margin / g / out at + t * o_tstride; element i of a frame is at + i in
 * every one of them (the caller checks that all frames share one dense layout).
 */
#include <math.h>
#include <stdint.h>

#define BLOCK 256

/* rstz(x * m, 12) of SLAYER for an integer-valued float x: trunc(x * (m / 4096)), or, when
 * comp, its complement x - sign(x) * ceil(|x| * (d / 4096)) (the same integer). */
static inline float decay(float x, float mf, float df, int comp) {
    float complement = x - copysignf(ceilf(fabsf(x) * df), x);
    float direct = truncf(x * mf);
    return comp ? complement : direct;     /* both computed: a select, no branch */
}

/* One block of elements over all steps; with_margin and graded are constants where it is
 * inlined, so that each of the four loops is straight-line code the compiler vectorizes. */
static inline __attribute__((always_inline)) int block(
        const float *x, int64_t x_tstride, int64_t T, int64_t b, int64_t nb, int64_t o_tstride,
        float *spikes, float *margin, float s_scale,
        float mc, float dc, int compc, float mv, float dv, int compv, float mr, float dr, int compr,
        float lim_c, float lim_v, float lim_r, float th0, float two_th0, const int graded, float divisor,
        float inv, const int with_margin) {
    const float big = 16777216.0f;
    float c[BLOCK], v[BLOCK], r[BLOCK];
    int bad = 0;
    for (int64_t j = 0; j < nb; j++) { c[j] = 0.0f; v[j] = 0.0f; r[j] = 0.0f; }
    for (int64_t t = 0; t < T; t++) {
        const float *xt = x + t * x_tstride + b;
        float *st = spikes + t * o_tstride + b;
        float *mt = margin + (with_margin ? t * o_tstride + b : 0);
        for (int64_t j = 0; j < nb; j++) {
            float xq = truncf(xt[j] * s_scale);
            float cj = decay(c[j], mc, dc, compc) + xq;
            float vj = decay(v[j], mv, dv, compv) + cj;
            float rj = decay(r[j], mr, dr, compr);
            float d = (vj - rj) - th0;
            float hit = d >= 0.0f ? 1.0f : 0.0f;
            float rn = rj + hit * two_th0;
            bad |= !(fabsf(xq) < big) | !(fabsf(cj) < lim_c) | !(fabsf(vj) < lim_v) | !(fabsf(rn) < lim_r)
                   | !(fabsf(vj) + fabsf(rj) + th0 < big);
            st[j] = graded ? (vj * hit) / divisor : hit;
            if (with_margin) mt[j] = d * inv;
            c[j] = cj; v[j] = vj; r[j] = rn;
        }
    }
    return bad;
}

/* Quantizes x (xq = trunc(s_scale x), SLAYER's (4096 x).to(int64)) and runs the recurrences;
 * returns 0 when every value stayed where float32 is exact (|xq| < 2**24, |c| < lim_c,
 * |v| < lim_v, |r| < lim_r with lim = 2**24 / cost of that decay, |v| + |r| + th0 < 2**24),
 * else 1 (the caller then runs the exact wider types instead; NaN and inf count as 1). */
int alif_forward(const float *x, int64_t x_tstride, int64_t T, int64_t begin, int64_t end, int64_t o_tstride,
                 float *spikes, float *margin, float s_scale,
                 float mc, float dc, int compc, float mv, float dv, int compv, float mr, float dr, int compr,
                 float lim_c, float lim_v, float lim_r,
                 float th0, float two_th0, int graded, float divisor, float inv) {
    int bad = 0;
    for (int64_t b = begin; b < end; b += BLOCK) {
        int64_t nb = end - b < BLOCK ? end - b : BLOCK;
#define BLOCK_ARGS x, x_tstride, T, b, nb, o_tstride, spikes, margin, s_scale, mc, dc, compc, mv, dv, compv, \
                   mr, dr, compr, lim_c, lim_v, lim_r, th0, two_th0
        if (margin && graded) bad |= block(BLOCK_ARGS, 1, divisor, inv, 1);
        else if (margin) bad |= block(BLOCK_ARGS, 0, divisor, inv, 1);
        else if (graded) bad |= block(BLOCK_ARGS, 1, divisor, inv, 0);
        else bad |= block(BLOCK_ARGS, 0, divisor, inv, 0);
#undef BLOCK_ARGS
    }
    return bad;
}

/* The two leaky-integrator gradient recurrences, last step first:
 * gv = g_v * gv + g[t] (voltage), gc = g_c * gc + gv (current), out[t] = gc. */
void alif_backward(const float *g, int64_t T, int64_t begin, int64_t end, int64_t tstride, float *out,
                   float g_v, float g_c) {
    float gv[BLOCK], gc[BLOCK];
    for (int64_t b = begin; b < end; b += BLOCK) {
        int64_t nb = end - b < BLOCK ? end - b : BLOCK;
        for (int64_t t = T - 1; t >= 0; t--) {
            const float *gt = g + t * tstride + b;
            float *ot = out + t * tstride + b;
            if (t == T - 1) {
                for (int64_t j = 0; j < nb; j++) { gv[j] = gt[j]; gc[j] = gt[j]; ot[j] = gt[j]; }
                continue;
            }
            for (int64_t j = 0; j < nb; j++) {
                float a = g_v * gv[j];
                float vj = a + gt[j];
                float e = g_c * gc[j];
                float cj = e + vj;
                gv[j] = vj; gc[j] = cj; ot[j] = cj;
            }
        }
    }
}
