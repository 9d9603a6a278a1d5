// fake-quant.cpp — see fake-quant.h. Every step follows fake-quant.ts in
// double precision (JavaScript numbers), so the two agree bit for bit:
// products and quotients are rounded to f32 only where the TypeScript code
// stores into a Float32Array.
#include "fake-quant.h"

#include <algorithm>
#include <cmath>

namespace shoal_addon {

namespace {

constexpr double kMinRange = 1e-5; // AWQ_MIN_RANGE (awq-pack.ts)

// Round half to even (the default FE_TONEAREST mode of nearbyint).
inline double round_even(double x) { return std::nearbyint(x); }

} // namespace

// double → f16 → double with round to nearest even (f64ToF16 + f16ToF32).
double round_to_f16(double v) {
    const double a = std::fabs(v);
    if (a >= 65520.0) return std::copysign(INFINITY, v);
    if (a < 0x1p-14) return std::copysign(round_even(a * 0x1p24) * 0x1p-24, v); // subnormal step 2^-24
    const int e = std::ilogb(a);
    const double m = round_even(std::ldexp(a, 10 - e)); // 1024..2048 (2048 carries into the exponent)
    return std::copysign(std::ldexp(m, e - 10), v);
}

namespace {

// One group x[0..G) (already scaled) → out[0..G) dequantized; false on a bad group.
bool qdq_group(const double * x, int G, double qmax, double * out, std::string * err) {
    double mn = INFINITY, mx = -INFINITY;
    for (int j = 0; j < G; j++) {
        if (std::isnan(x[j])) mn = NAN;
        mn = std::min(mn, x[j]);
        mx = std::max(mx, x[j]);
    }
    if (!std::isfinite(mn) || !std::isfinite(mx)) {
        *err = "a weight group has a non-finite value; the checkpoint is corrupt";
        return false;
    }
    const double range = std::max(mx - mn, kMinRange);
    const double scale = round_to_f16(range / qmax);
    if (!std::isfinite(scale) || scale <= 0) {
        *err = "weight range " + std::to_string(range) + " gives a scale outside f16; the weights are not finite or far too large";
        return false;
    }
    const double zero = std::min(qmax, std::max(0.0, -round_even(mn / scale)));
    for (int j = 0; j < G; j++) {
        double q = round_even(x[j] / scale) + zero;
        q = std::min(qmax, std::max(0.0, q));
        out[j] = (q - zero) * scale;
    }
    return true;
}

} // namespace

bool fake_quant_rows(const float * w, const double * s, int64_t K, int G, int bits, int64_t n0, int64_t n1, float * out,
                     std::string * err) {
    const double qmax = (double)((1 << bits) - 1);
    double x[1024], y[1024];
    if (G > 1024) {
        *err = "group size above 1024";
        return false;
    }
    for (int64_t n = n0; n < n1; n++) {
        const float * wr = w + n * K;
        float * orow = out + n * K;
        for (int64_t g0 = 0; g0 < K; g0 += G) {
            // scaleColumns stores w·s as f32
            for (int j = 0; j < G; j++) x[j] = s ? (double)(float)((double)wr[g0 + j] * s[g0 + j]) : (double)wr[g0 + j];
            if (!qdq_group(x, G, qmax, y, err)) return false;
            // the dequantized value is stored as f32, then divColumnsInPlace divides it by s
            for (int j = 0; j < G; j++) {
                const float q = (float)y[j];
                orow[g0 + j] = s ? (float)((double)q / s[g0 + j]) : q;
            }
        }
    }
    return true;
}

bool clip_deltas_rows(const float * w, int64_t K, int G, int g, int bits, int steps, int n_grid, int64_t n0, int64_t n1,
                      float * d, std::string * err) {
    const double qmax = (double)((1 << bits) - 1);
    double orig[1024], c[1024], y[1024];
    if (G > 1024) {
        *err = "group size above 1024";
        return false;
    }
    for (int64_t n = n0; n < n1; n++) {
        const float * wg = w + n * K + (int64_t)g * G;
        double m = 0;
        for (int j = 0; j < G; j++) {
            orig[j] = wg[j];
            m = std::max(m, std::fabs(orig[j]));
        }
        for (int i = 0; i < steps; i++) {
            const double mv = m * (1.0 - (double)i / n_grid);
            // the clamped group is a Float32Array in the TypeScript search
            for (int j = 0; j < G; j++) c[j] = (double)(float)std::min(mv, std::max(-mv, orig[j]));
            if (!qdq_group(c, G, qmax, y, err)) return false;
            float * dr = d + ((n * steps) + i) * G;
            for (int j = 0; j < G; j++) dr[j] = (float)((double)(float)y[j] - orig[j]);
        }
    }
    return true;
}

} // namespace shoal_addon
