// kernels-avx512-bf16.cpp — gemm_bf16 (kernels.h) on AVX512_BF16: vdpbf16ps
// multiplies bf16 pairs exactly and adds them to f32 lanes odd element first,
// which is the definition of gemm_bf16. Only this file is compiled with
// -mavx512bf16; the AVX-512 table takes it when CPUID reports AVX512_BF16.
//
// Blocked like gemm_f32 (kernels-simd-gemm.h): k in slices of KC (even, so no
// pair straddles two slices); per slice each 32-column block of w is packed as
// bf16 pairs k-major (wt [kc/2][32] u32, 64-byte aligned), then each MR-row
// tile of x is converted to bf16 pairs once and swept across all the column
// blocks. y carries the f32 sums from slice to slice, so slicing changes no bit.
//
// Differences from the scalar definition, all outside the normal range: the
// conversions (vcvtne2ps2bf16) and vdpbf16ps treat subnormal inputs as zero and
// vdpbf16ps flushes subnormal results to zero, whatever MXCSR says.
#include "kernels.h"

#include <immintrin.h>

#include <algorithm>
#include <vector>

namespace shoal {
namespace {

constexpr int NR = 32;       // output columns per block: two registers of 16 f32
constexpr int64_t KC = 512;  // inputs per slice: a 256-column block set of w is 256 KiB (L2)
constexpr int MR = 12;       // rows per tile: 24 accumulators + 2 weights + 1 broadcast of 32 zmm

inline __mmask16 first_lanes(int64_t r) { return r >= 16 ? (__mmask16)0xFFFF : r <= 0 ? (__mmask16)0 : (__mmask16)((1u << r) - 1); }

// kc floats → (kc + 1)/2 bf16 pairs, pair p = x[2p] (low half) | x[2p+1] (high half);
// the partner of an odd last element is 0.
inline void to_pairs(const float * src, int64_t kc, uint32_t * dst) {
    int64_t t = 0;
    for (; t + 32 <= kc; t += 32) {
        const __m512bh b = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + t + 16), _mm512_loadu_ps(src + t));
        _mm512_storeu_si512(dst + t / 2, (__m512i)b);
    }
    if (t < kc) {
        const int64_t r = kc - t; // 1..31
        const __m512 lo = _mm512_maskz_loadu_ps(first_lanes(r), src + t);
        const __m512 hi = _mm512_maskz_loadu_ps(first_lanes(r - 16), src + t + 16);
        _mm512_mask_storeu_epi32(dst + t / 2, first_lanes((r + 1) / 2), (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
    }
}

// R rows of pairs xp [R][ldxp] times one packed block wt [kp][32]: y[i][0, ncols).
template <int R>
inline void micro(const uint32_t * xp, int64_t ldxp, const uint32_t * wt, int64_t kp, float * y, int64_t ldy, int ncols, bool acc) {
    __m512 a0[R], a1[R];
    const __mmask16 m0 = first_lanes(ncols), m1 = first_lanes(ncols - 16);
    #pragma GCC unroll 16
    for (int i = 0; i < R; i++) {
        a0[i] = acc ? _mm512_maskz_loadu_ps(m0, y + i * ldy) : _mm512_setzero_ps();
        a1[i] = acc ? _mm512_maskz_loadu_ps(m1, y + i * ldy + 16) : _mm512_setzero_ps();
    }
    for (int64_t p = 0; p < kp; p++) {
        const __m512bh w0 = (__m512bh)_mm512_load_si512(wt + p * NR);
        const __m512bh w1 = (__m512bh)_mm512_load_si512(wt + p * NR + 16);
        #pragma GCC unroll 16
        for (int i = 0; i < R; i++) {
            const __m512bh b = (__m512bh)_mm512_set1_epi32((int)xp[i * ldxp + p]);
            a0[i] = _mm512_dpbf16_ps(a0[i], b, w0);
            a1[i] = _mm512_dpbf16_ps(a1[i], b, w1);
        }
    }
    #pragma GCC unroll 16
    for (int i = 0; i < R; i++) {
        _mm512_mask_storeu_ps(y + i * ldy, m0, a0[i]);
        _mm512_mask_storeu_ps(y + i * ldy + 16, m1, a1[i]);
    }
}

// Rows [i0, i0 + R) of x for the slice at t0: pairs once, then every column block.
template <int R>
inline void tile(const float * x, int64_t ldx, int64_t t0, int64_t kc, const uint32_t * wt, int64_t n, uint32_t * xp,
                 float * y, int64_t ldy, bool acc) {
    const int64_t kp = (kc + 1) / 2;
    for (int r = 0; r < R; r++) to_pairs(x + r * ldx + t0, kc, xp + r * kp);
    for (int64_t j0 = 0; j0 < n; j0 += NR)
        micro<R>(xp, kp, wt + (j0 / NR) * kp * NR, kp, y + j0, ldy, (int)std::min<int64_t>(NR, n - j0), acc);
}

} // namespace

void gemm_bf16_avx512bf16(const float * x, int64_t ldx, int64_t m, const float * w, int64_t n, int64_t k, float * y,
                          int64_t ldy) {
    const int64_t nb = (n + NR - 1) / NR, kpmax = (std::min(k, KC) + 1) / 2;
    thread_local std::vector<uint32_t> wbuf, xbuf, row;
    wbuf.resize((size_t)(nb * kpmax * NR + 16)); // [nb][kp][NR] from a 64-byte boundary (aligned loads)
    xbuf.resize((size_t)(MR * kpmax));
    row.resize((size_t)kpmax);
    uint32_t * const wt = wbuf.data() + ((64 - (reinterpret_cast<uintptr_t>(wbuf.data()) & 63)) & 63) / sizeof(uint32_t);
    for (int64_t t0 = 0; t0 < k; t0 += KC) {
        const int64_t kc = std::min(KC, k - t0), kp = (kc + 1) / 2;
        const bool acc = t0 > 0;
        for (int64_t b = 0; b < nb; b++) {
            uint32_t * wb = wt + b * kp * NR;
            for (int j = 0; j < NR; j++) {
                const int64_t c = b * NR + j;
                if (c + 2 < n) // rows of w come from DRAM: ask for the one after next now
                    for (int64_t o = 0; o < kc; o += 16) _mm_prefetch((const char *)(w + (c + 2) * k + t0 + o), _MM_HINT_T0);
                if (c < n) to_pairs(w + c * k + t0, kc, row.data());
                for (int64_t p = 0; p < kp; p++) wb[p * NR + j] = c < n ? row[p] : 0u;
            }
        }
        int64_t i = 0;
        for (; i + MR <= m; i += MR) tile<MR>(x + i * ldx, ldx, t0, kc, wt, n, xbuf.data(), y + i * ldy, ldy, acc);
        for (; i + 4 <= m; i += 4) tile<4>(x + i * ldx, ldx, t0, kc, wt, n, xbuf.data(), y + i * ldy, ldy, acc);
        for (; i + 2 <= m; i += 2) tile<2>(x + i * ldx, ldx, t0, kc, wt, n, xbuf.data(), y + i * ldy, ldy, acc);
        for (; i < m; i++) tile<1>(x + i * ldx, ldx, t0, kc, wt, n, xbuf.data(), y + i * ldy, ldy, acc);
    }
}

} // namespace shoal
