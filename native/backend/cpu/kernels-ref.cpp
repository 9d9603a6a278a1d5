// kernels-ref.cpp — plain scalar kernels: the reference every SIMD variant is
// tested against, and the "scalar" ISA. Written for clarity, not speed.
#include "kernels.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace shoal {
namespace {

float load_f(DType dt, const void * p, int64_t i) {
    switch (dt) {
        case DType::F16: return f16_to_f32(static_cast<const uint16_t *>(p)[i]);
        case DType::BF16: return bf16_to_f32(static_cast<const uint16_t *>(p)[i]);
        default: return static_cast<const float *>(p)[i];
    }
}

void quantize_q8(const float * x, int64_t k, int group, int8_t * q, float * d, float * gsum) {
    for (int64_t b = 0; b < k / 32; b++) {
        float amax = 0.0f;
        for (int j = 0; j < 32; j++) amax = std::max(amax, std::fabs(x[32 * b + j]));
        // blocks of (near-)zeros quantize to 0; 127/amax would overflow below ~4e-37
        const float id = amax > 1e-30f ? 127.0f / amax : 0.0f;
        d[b] = amax / 127.0f;
        // Round half to even (as the vector conversions do) by the 1.5·2^23
        // trick, exact for |v| <= 127 in the default rounding mode; inline,
        // unlike a nearbyintf call.
        for (int j = 0; j < 32; j++) {
            const float v = x[32 * b + j] * id + 12582912.0f; // not folded without -ffast-math
            q[32 * b + j] = (int8_t)(int)(v - 12582912.0f);
        }
    }
    for (int64_t g = 0; g < k / group; g++) {
        float s = 0.0f;
        for (int j = 0; j < group; j++) s += x[g * group + j];
        gsum[g] = s;
    }
}

void q4_matvec(const Q4Rows & w, const Q8Row & x, int64_t n0, int64_t n1, float * y) {
    const int64_t K = w.k, ng = K / w.group;
    std::vector<int32_t> isum(K / 32); // [K/32] integer Σ q·xq per 32-block
    for (int64_t n = n0; n < n1; n++) {
        const uint8_t * row = w.qs + n * (K / 2);
        std::fill(isum.begin(), isum.end(), 0);
        for (int64_t k0 = 0; k0 < K; k0 += 128) {
            const int64_t half = std::min<int64_t>(128, K - k0) / 2;
            for (int64_t j = 0; j < half; j++) {
                const uint8_t b = row[k0 / 2 + j];
                isum[(k0 + j) / 32] += (b & 15) * x.q[k0 + j];
                isum[(k0 + half + j) / 32] += (b >> 4) * x.q[k0 + half + j];
            }
        }
        float acc = 0.0f;
        for (int64_t b = 0; b < K / 32; b++) {
            const float s = f16_to_f32(w.scale[n * ng + b * 32 / w.group]);
            acc += (float)isum[b] * (x.d[b] * s);
        }
        for (int64_t g = 0; g < ng; g++) acc += f16_to_f32(w.szero[n * ng + g]) * x.gsum[g];
        y[n - n0] = acc;
    }
}

void q4_gemm(const Q4Rows & w, const Q8Row & x0, int64_t M, int64_t n0, int64_t n1, float * y, int64_t ldy) {
    const int64_t K = w.k, nb = K / 32, ng = K / w.group;
    for (int64_t m = 0; m < M; m++)
        q4_matvec(w, Q8Row{x0.q + m * K, x0.d + m * nb, x0.gsum + m * ng}, n0, n1, y + m * ldy);
}

void q4_dequant(const Q4Rows & w, int64_t n0, int64_t n1, float * out) {
    const int64_t K = w.k, ng = K / w.group;
    for (int64_t n = n0; n < n1; n++) {
        const uint8_t * row = w.qs + n * (K / 2);
        float * o = out + (n - n0) * K;
        for (int64_t k0 = 0; k0 < K; k0 += 128) {
            const int64_t half = std::min<int64_t>(128, K - k0) / 2;
            for (int64_t j = 0; j < half; j++) {
                const uint8_t b = row[k0 / 2 + j];
                const int64_t ka = k0 + j, kb = k0 + half + j;
                o[ka] = (b & 15) * f16_to_f32(w.scale[n * ng + ka / w.group]) + f16_to_f32(w.szero[n * ng + ka / w.group]);
                o[kb] = (b >> 4) * f16_to_f32(w.scale[n * ng + kb / w.group]) + f16_to_f32(w.szero[n * ng + kb / w.group]);
            }
        }
    }
}

// 2/3/8-bit rows: the integer Σ q·xq per 32-block from qx_value, then the
// block scales; bits 8 stores q − 128, so its zero term is (−s·z + 128·s)·Σx.
void qx_matvec(const QxRows & w, const Q8Row & x, int64_t n0, int64_t n1, float * y) {
    const int64_t K = w.k, ng = K / w.group, rb = w.row_bytes();
    for (int64_t n = n0; n < n1; n++) {
        const uint8_t * row = w.qs + n * rb;
        float acc = 0.0f;
        for (int64_t b = 0; b < K / 32; b++) {
            int32_t isum = 0;
            for (int64_t k = 32 * b; k < 32 * b + 32; k++) isum += qx_value(row, w.bits, k, K) * x.q[k];
            acc += (float)isum * (x.d[b] * f16_to_f32(w.scale[n * ng + b * 32 / w.group]));
        }
        for (int64_t g = 0; g < ng; g++) {
            float z = f16_to_f32(w.szero[n * ng + g]);
            if (w.bits == 8) z += 128.0f * f16_to_f32(w.scale[n * ng + g]);
            acc += z * x.gsum[g];
        }
        y[n - n0] = acc;
    }
}

void qx_dequant(const QxRows & w, int64_t n0, int64_t n1, float * out) {
    const int64_t K = w.k, ng = K / w.group, rb = w.row_bytes();
    const float off = w.bits == 8 ? 128.0f : 0.0f;
    for (int64_t n = n0; n < n1; n++) {
        const uint8_t * row = w.qs + n * rb;
        for (int64_t k = 0; k < K; k++) {
            const int64_t g = k / w.group;
            out[(n - n0) * K + k] = ((float)qx_value(row, w.bits, k, K) + off) * f16_to_f32(w.scale[n * ng + g]) +
                                    f16_to_f32(w.szero[n * ng + g]);
        }
    }
}

void fw_matvec(DType dt, const void * w, int64_t k, const float * x, int64_t n0, int64_t n1, float * y) {
    for (int64_t n = n0; n < n1; n++) {
        float acc = 0.0f;
        for (int64_t i = 0; i < k; i++) acc += load_f(dt, w, n * k + i) * x[i];
        y[n - n0] = acc;
    }
}

void to_f32(DType dt, const void * src, int64_t n, float * dst) {
    for (int64_t i = 0; i < n; i++) dst[i] = load_f(dt, src, i);
}

void gemm_f32(const float * x, int64_t ldx, int64_t m, const float * w, int64_t n, int64_t k, float * y, int64_t ldy) {
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            float acc = 0.0f;
            for (int64_t t = 0; t < k; t++) acc += x[i * ldx + t] * w[j * k + t];
            y[i * ldy + j] = acc;
        }
}

void gemm_bf16(const float * x, int64_t ldx, int64_t m, const float * w, int64_t n, int64_t k, float * y, int64_t ldy) {
    // element t of a row, rounded to bf16; 0 past the end (odd k)
    auto at = [k](const float * r, int64_t t) { return t < k ? bf16_round(r[t]) : 0.0f; };
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            const float * xr = x + i * ldx, * wr = w + j * k;
            float acc = 0.0f;
            for (int64_t t = 0; t < k; t += 2) {
                acc = std::fma(at(xr, t + 1), at(wr, t + 1), acc);
                acc = std::fma(at(xr, t), at(wr, t), acc);
            }
            y[i * ldy + j] = acc;
        }
}

void rmsnorm(const float * x, const float * w, int64_t n, float eps, float * out) {
    float ss = 0.0f;
    for (int64_t i = 0; i < n; i++) ss += x[i] * x[i];
    const float r = 1.0f / std::sqrt(ss / (float)n + eps);
    for (int64_t i = 0; i < n; i++) out[i] = x[i] * r * w[i];
}

void rope(float * v, int n_rot, const float * c, const float * s) {
    const int half = n_rot / 2;
    for (int i = 0; i < half; i++) {
        const float a = v[i], b = v[i + half];
        v[i] = a * c[i] - b * s[i];
        v[i + half] = b * c[i] + a * s[i];
    }
}

// Element i of position p of a KV head, as f32 (layouts in kernels.h).
float kv_k(const KvHead & kv, int p, int i) {
    const int64_t at = ((int64_t)(p / kKvTile) * kv.hd + i) * kKvTile + p % kKvTile;
    switch (kv.type) {
        case KvType::F16: return f16_to_f32(static_cast<const uint16_t *>(kv.k)[at]);
        case KvType::Q8: return (float)static_cast<const int8_t *>(kv.k)[at] * kv.ks[p];
        default: return static_cast<const float *>(kv.k)[at];
    }
}
float kv_v(const KvHead & kv, int p, int i) {
    const int64_t at = (int64_t)p * kv.hd + i;
    switch (kv.type) {
        case KvType::F16: return f16_to_f32(static_cast<const uint16_t *>(kv.v)[at]);
        case KvType::Q8: return (float)static_cast<const int8_t *>(kv.v)[at] * kv.vs[p];
        default: return static_cast<const float *>(kv.v)[at];
    }
}

void attn_group(const KvHead & kv, const float * q, int nq, int n_kv, float scale, float * scores, float * out) {
    const int hd = kv.hd;
    for (int h = 0; h < nq; h++) {
        float * s = scores + (int64_t)h * n_kv;
        float mx = -INFINITY;
        for (int j = kv.lo; j < n_kv; j++) {
            float d = 0.0f;
            for (int i = 0; i < hd; i++) d += q[h * hd + i] * kv_k(kv, j, i);
            s[j] = d * scale;
            mx = std::max(mx, s[j]);
        }
        float sum = 0.0f;
        for (int j = kv.lo; j < n_kv; j++) {
            s[j] = std::exp(s[j] - mx); // max-subtraction: no overflow
            sum += s[j];
        }
        for (int i = 0; i < hd; i++) out[h * hd + i] = 0.0f;
        for (int j = kv.lo; j < n_kv; j++) {
            const float p = s[j] / sum;
            for (int i = 0; i < hd; i++) out[h * hd + i] += p * kv_v(kv, j, i);
        }
    }
}

void silu_mul(float * g, const float * u, int64_t n) {
    for (int64_t i = 0; i < n; i++) g[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
}

void add(float * x, const float * y, int64_t n) {
    for (int64_t i = 0; i < n; i++) x[i] += y[i];
}

void layernorm(const float * x, const float * w, const float * b, int64_t n, float eps, float * out) {
    float mean = 0.0f;
    for (int64_t i = 0; i < n; i++) mean += x[i];
    mean /= (float)n;
    float var = 0.0f;
    for (int64_t i = 0; i < n; i++) var += (x[i] - mean) * (x[i] - mean);
    const float r = 1.0f / std::sqrt(var / (float)n + eps);
    for (int64_t i = 0; i < n; i++) out[i] = (x[i] - mean) * r * w[i] + b[i];
}

void relu(float * x, int64_t n) {
    for (int64_t i = 0; i < n; i++) x[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

void gelu_erf(float * x, int64_t n) {
    for (int64_t i = 0; i < n; i++) x[i] = 0.5f * x[i] * (1.0f + std::erf(x[i] * 0.70710678118654752f));
}

void gelu_tanh(float * x, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        const float v = x[i];
        x[i] = 0.5f * v * (1.0f + std::tanh(0.79788456080286536f * (v + 0.044715f * v * v * v)));
    }
}

// Precision "exact": (c − z)·s per weight in f32 (one rounding), f32 activations.
void exact_dequant(const ExactRows & w, int64_t n0, int64_t n1, float * out) {
    const int64_t K = w.k, ng = K / w.group, rb = w.row_bytes();
    for (int64_t n = n0; n < n1; n++) {
        const uint8_t * row = w.qs + n * rb;
        for (int64_t k = 0; k < K; k++) {
            const int64_t g = n * ng + k / w.group;
            out[(n - n0) * K + k] = ((float)exact_code(row, w.bits, k, K) - w.zero[g]) * w.scale[g];
        }
    }
}

void exact_matvec(const ExactRows & w, const float * x, int64_t n0, int64_t n1, float * y) {
    const int64_t K = w.k, ng = K / w.group, rb = w.row_bytes();
    for (int64_t n = n0; n < n1; n++) {
        const uint8_t * row = w.qs + n * rb;
        float acc = 0.0f;
        for (int64_t k = 0; k < K; k++) {
            const int64_t g = n * ng + k / w.group;
            const float wk = ((float)exact_code(row, w.bits, k, K) - w.zero[g]) * w.scale[g];
            acc += wk * x[k];
        }
        y[n - n0] = acc;
    }
}

// 8-bit rows with f32 activations: per group the f32 Σ c·x of the stored int8 c
// (q − 128), times s, plus (−s·z + 128·s)·Σx.
void q8w_matvec(const QxRows & w, const float * x, const float * gsum, int64_t n0, int64_t n1, float * y) {
    const int64_t K = w.k, G = w.group, ng = K / G;
    for (int64_t n = n0; n < n1; n++) {
        const int8_t * row = reinterpret_cast<const int8_t *>(w.qs + n * K);
        float acc = 0.0f;
        for (int64_t g = 0; g < ng; g++) {
            float part = 0.0f;
            for (int64_t k = g * G; k < (g + 1) * G; k++) part += (float)row[k] * x[k];
            const float s = f16_to_f32(w.scale[n * ng + g]);
            acc += s * part + (f16_to_f32(w.szero[n * ng + g]) + 128.0f * s) * gsum[g];
        }
        y[n - n0] = acc;
    }
}

} // namespace

const Kernels & kernels_ref() {
    static const Kernels k = {"scalar", quantize_q8, q4_matvec, q4_gemm, q4_dequant, fw_matvec, to_f32, gemm_f32, gemm_bf16,
                              rmsnorm, rope, attn_group, silu_mul, add, qx_matvec, qx_dequant,
                              layernorm, relu, gelu_erf, gelu_tanh, exact_dequant, exact_matvec, q8w_matvec, false};
    return k;
}

} // namespace shoal
