// kernels-simd-gemm.h — the cache-blocked f32 GEMM of every vector ISA
// (gemm_f32), and gemm_bf16 on top of it for ISAs without bf16 dot products,
// written over the vector traits V of kernels-simd.h (included only from there,
// so each ISA file compiles its own copy with its own flags).
#pragma once
#include "kernels.h"

#include <algorithm>
#include <cstdint>
#include <vector>

namespace shoal {
namespace simd {
namespace {

// GEMM micro-kernel, outer-product form: MR rows of x times an NR = 2·W column
// block of w packed k-major (wt [k][NR]); acc[i] holds y[i][j0, j0+NR), so no
// horizontal sums. Per k: 2 loads of w, MR broadcasts of x, 2·MR FMAs. With
// accumulate the accumulators start from y (an earlier slice of k), else from 0:
// either way each y element is one chain of FMAs over t = 0..k−1 in order, so
// cutting k into slices does not change a bit of the result.
template <class V, int MR>
inline void gemm_micro(const float * x, int64_t ldx, const float * wt, int64_t k, float * y, int64_t ldy, int ncols, bool accumulate) {
    using F = typename V::F;
    F a0[MR], a1[MR];
    if (!accumulate) {
        #pragma GCC unroll 16
        for (int i = 0; i < MR; i++) a0[i] = a1[i] = V::zero();
    } else if (ncols == 2 * V::W) {
        #pragma GCC unroll 16
        for (int i = 0; i < MR; i++) {
            a0[i] = V::load(y + i * ldy);
            a1[i] = V::load(y + i * ldy + V::W);
        }
    } else {
        for (int i = 0; i < MR; i++) {
            float tmp[2 * V::W] = {};
            for (int j = 0; j < ncols; j++) tmp[j] = y[i * ldy + j];
            a0[i] = V::load(tmp);
            a1[i] = V::load(tmp + V::W);
        }
    }
    for (int64_t t = 0; t < k; t++) {
        const F w0 = V::load(wt + t * 2 * V::W), w1 = V::load(wt + t * 2 * V::W + V::W);
        #pragma GCC unroll 16
        for (int i = 0; i < MR; i++) {
            const F b = V::set1(x[i * ldx + t]);
            a0[i] = V::fmadd(b, w0, a0[i]);
            a1[i] = V::fmadd(b, w1, a1[i]);
        }
    }
    #pragma GCC unroll 16
    for (int i = 0; i < MR; i++) {
        if (ncols == 2 * V::W) {
            V::store(y + i * ldy, a0[i]);
            V::store(y + i * ldy + V::W, a1[i]);
        } else { // last, partial column block
            float tmp[2 * V::W];
            V::store(tmp, a0[i]);
            V::store(tmp + V::W, a1[i]);
            for (int j = 0; j < ncols; j++) y[i * ldy + j] = tmp[j];
        }
    }
}

// One R-row tile of x (a k-slice of kc) across all column blocks of the packed
// slice wt [n/NR][kc][NR]; the tile (R × kc floats) stays in L1 meanwhile.
template <class V, int R>
void gemm_sweep(const float * x, int64_t ldx, const float * wt, int64_t n, int64_t kc, float * y, int64_t ldy, bool acc) {
    constexpr int NR = 2 * V::W;
    for (int64_t j0 = 0; j0 < n; j0 += NR)
        gemm_micro<V, R>(x, ldx, wt + (j0 / NR) * kc * NR, kc, y + j0, ldy, (int)std::min<int64_t>(NR, n - j0), acc);
}

// y [m][n] = x [m][k] · w [n][k]ᵀ, blocked for the cache: k in slices of KC;
// per slice every NR-column block of w is packed k-major into thread-local
// scratch [n/NR][KC][NR] (zero-padded; KC·n floats, L2-sized for the backend's
// tasks of a few hundred columns), then each MR-row tile of x (MR × KC, in L1)
// is swept across all the column blocks before the next tile (remainder rows by
// 4, 2, 1). x is read once per slice instead of once per column block; y is
// carried from slice to slice in f32 (gemm_micro), so the result is the same
// single FMA chain per element as with no slicing.
template <class V, int MR>
void gemm_f32(const float * x, int64_t ldx, int64_t m, const float * w, int64_t n, int64_t k, float * y, int64_t ldy) {
    constexpr int NR = 2 * V::W;
    constexpr int64_t KC = 256;
    const int64_t nb = (n + NR - 1) / NR;
    thread_local std::vector<float> wbuf; // [nb][KC][NR], from a 64-byte boundary (no load splits a cache line)
    wbuf.resize((size_t)(nb * std::min(k, KC) * NR + 16));
    float * const wt = wbuf.data() + ((64 - (reinterpret_cast<uintptr_t>(wbuf.data()) & 63)) & 63) / sizeof(float);
    for (int64_t t0 = 0; t0 < k; t0 += KC) {
        const int64_t kc = std::min(KC, k - t0);
        const bool acc = t0 > 0;
        for (int64_t b = 0; b < nb; b++) {
            const int64_t j0 = b * NR;
            const int nc = (int)std::min<int64_t>(NR, n - j0);
            float * wb = wt + b * kc * NR;
            // transpose in 16-deep slabs: reads 64-byte runs of each row, writes stay in L1
            for (int64_t s0 = 0; s0 < kc; s0 += 16) {
                const int64_t s1 = std::min<int64_t>(kc, s0 + 16);
                for (int j = 0; j < NR; j++) {
                    const float * wr = j < nc ? w + (j0 + j) * k + t0 : nullptr; // nullptr: zero padding
                    for (int64_t t = s0; t < s1; t++) wb[t * NR + j] = wr ? wr[t] : 0.0f;
                }
            }
        }
        int64_t i = 0;
        for (; i + MR <= m; i += MR) gemm_sweep<V, MR>(x + i * ldx + t0, ldx, wt, n, kc, y + i * ldy, ldy, acc);
        for (; i + 4 <= m; i += 4) gemm_sweep<V, 4>(x + i * ldx + t0, ldx, wt, n, kc, y + i * ldy, ldy, acc);
        for (; i + 2 <= m; i += 2) gemm_sweep<V, 2>(x + i * ldx + t0, ldx, wt, n, kc, y + i * ldy, ldy, acc);
        for (; i < m; i++) gemm_sweep<V, 1>(x + i * ldx + t0, ldx, wt, n, kc, y + i * ldy, ldy, acc);
    }
}

// gemm_bf16 (kernels.h) without bf16 instructions: x and w rounded to bf16 into
// f32 scratch with the two elements of each k-pair swapped (and a zero pair
// partner for odd k), then gemm_f32, whose one FMA chain per element in k order
// is then exactly the pair order of the definition.
template <class V, int MR>
void gemm_bf16_emulated(const float * x, int64_t ldx, int64_t m, const float * w, int64_t n, int64_t k, float * y, int64_t ldy) {
    const int64_t kp = (k + 1) / 2 * 2;
    thread_local std::vector<float> xs, ws;
    xs.resize((size_t)(m * kp));
    ws.resize((size_t)(n * kp));
    auto swap_round = [k, kp](const float * src, float * dst) {
        for (int64_t t = 0; t < kp; t += 2) {
            dst[t] = t + 1 < k ? bf16_round(src[t + 1]) : 0.0f;
            dst[t + 1] = bf16_round(src[t]);
        }
    };
    for (int64_t i = 0; i < m; i++) swap_round(x + i * ldx, xs.data() + i * kp);
    for (int64_t j = 0; j < n; j++) swap_round(w + j * k, ws.data() + j * kp);
    gemm_f32<V, MR>(xs.data(), kp, m, ws.data(), n, kp, y, ldy);
}

} // namespace
} // namespace simd
} // namespace shoal
