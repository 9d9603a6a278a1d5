// kernels-avx512.cpp — AVX-512 (F/BW/VL/DQ + VNNI + F16C) kernels.
// The INT4 matvec multiplies 4-bit weights by int8 activations with VNNI
// vpdpbusd (u8 × s8 → s32), 128 inputs per step; everything else is the
// generic code of kernels-simd.h over 16-float registers.
#include "cpu-features.h"
#include "kernels-simd.h"
#include "kernels-x86-qx.h"

// GCC 12 falsely reports the _mm512_undefined_* placeholders inside its own
// intrinsic headers as uninitialized (GCC bug 105593).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <cstring>
#include <vector>

namespace shoal {
namespace {

struct V {
    using F = __m512;
    static constexpr int W = 16;
    static F zero() { return _mm512_setzero_ps(); }
    static F set1(float a) { return _mm512_set1_ps(a); }
    static F load(const float * p) { return _mm512_loadu_ps(p); }
    static void store(float * p, F a) { _mm512_storeu_ps(p, a); }
    static F add(F a, F b) { return _mm512_add_ps(a, b); }
    static F sub(F a, F b) { return _mm512_sub_ps(a, b); }
    static F mul(F a, F b) { return _mm512_mul_ps(a, b); }
    static F div(F a, F b) { return _mm512_div_ps(a, b); }
    static F fmadd(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
    static F max(F a, F b) { return _mm512_max_ps(a, b); }
    static F min(F a, F b) { return _mm512_min_ps(a, b); }
    static float hsum(F a) { return _mm512_reduce_add_ps(a); }
    static F round(F a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
    static F pow2(F n) {
        const __m512i e = _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127));
        return _mm512_castsi512_ps(_mm512_slli_epi32(e, 23));
    }
    static F load_f16(const uint16_t * p) { return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p)); }
    static F load_i8(const int8_t * p) { return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p))); }
    static F load_bf16(const uint16_t * p) {
        const __m512i u = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p));
        return _mm512_castsi512_ps(_mm512_slli_epi32(u, 16));
    }
    static void dq16(const uint8_t * b, float slo, float zlo, float shi, float zhi, float * lo, float * hi) {
        const __m128i v = _mm_loadu_si128((const __m128i *)b);
        const __m128i m4 = _mm_set1_epi8(0x0F);
        const __m512 ql = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(v, m4)));
        const __m512 qh = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(v, 4), m4)));
        _mm512_storeu_ps(lo, _mm512_fmadd_ps(ql, _mm512_set1_ps(slo), _mm512_set1_ps(zlo)));
        _mm512_storeu_ps(hi, _mm512_fmadd_ps(qh, _mm512_set1_ps(shi), _mm512_set1_ps(zhi)));
    }
};

// R rows at once share the activation loads. Per 128-input chunk c: 64 weight
// bytes; low nibbles ↔ x[128c, +64), high ↔ x[128c+64, +64); dpbusd lane l sums
// 4 consecutive inputs (4l..4l+3 of the half), i.e. 32-block l/8 of the half.
// Three things keep a pass streaming (bench-q4-ab, one thread, Zen 5; all
// bit-identical to the kernel before them):
//  * the activation block scales of a chunk's lanes come from its 4 values of
//    x.d by a permute, not from a [K/128][32] f32 table: on K = 5632 that table
//    was 5.5 KiB more in L1 beside the weight stream (down projection from
//    cache 51 → 57 GB/s);
//  * the weights are prefetched in address order over the pass's R rows (one
//    stream 16 KiB ahead), not 16 KiB ahead in each row (R streams whose lines
//    lie K/2 bytes apart, across 4 KiB pages when K/2 = 2,816);
//  * the scale and −s·z rows of the pass 16 KiB of weights ahead are
//    prefetched at the start of a pass (they are read once per row, before its
//    first chunk), and the f32 copies of the rows' scales sit K/G rounded to 16
//    floats apart, not 4 KiB apart.
template <int R, bool G_GE_64>
inline void q4_rows(const Q4Rows & w, const Q8Row & x, const int32_t * grp, int64_t n, float * y) {
    const int64_t K = w.k, G = w.group, ng = K / G, nc = K / 128, st = (ng + 15) / 16 * 16;
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    float sf[R * 1024], zf[R * 1024]; // [R][st] f32 scales of each row (st <= 1024)
    const uint8_t * row[R];
    const uint8_t * blk = w.qs + n * (K / 2); // the R rows, contiguous
    __m512 al[R], ah[R];
    {
        const int64_t pass_bytes = R * (K / 2), ahead = n + R * ((simd::kPrefetchBytes + pass_bytes - 1) / pass_bytes);
        if (ahead + R <= w.n)
            for (int64_t off = 0; off < R * ng * 2; off += 64) {
                __builtin_prefetch(reinterpret_cast<const char *>(w.scale + ahead * ng) + off);
                __builtin_prefetch(reinterpret_cast<const char *>(w.szero + ahead * ng) + off);
            }
    }
    #pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
        simd::f16_row<V>(w.scale + (n + r) * ng, ng, sf + r * st);
        simd::f16_row<V>(w.szero + (n + r) * ng, ng, zf + r * st);
        row[r] = w.qs + (n + r) * (K / 2);
        al[r] = ah[r] = _mm512_setzero_ps();
    }
    // lanes 0-7 ← x.d[4c] (low half) or x.d[4c + 2] (high), lanes 8-15 ← the next block's
    const __m512i pl = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    const __m512i ph = _mm512_set_epi32(3, 3, 3, 3, 3, 3, 3, 3, 2, 2, 2, 2, 2, 2, 2, 2);
    for (int64_t c = 0; c < nc; c++) {
        const __m512i xl = _mm512_loadu_si512(x.q + 128 * c);
        const __m512i xh = _mm512_loadu_si512(x.q + 128 * c + 64);
        const __m512 d4 = _mm512_castps128_ps512(_mm_loadu_ps(x.d + 4 * c));
        const __m512 dl = _mm512_permutexvar_ps(pl, d4), dh = _mm512_permutexvar_ps(ph, d4);
        #pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            const __m512i b = _mm512_loadu_si512(row[r] + 64 * c);
            // the pass's R·nc lines in address order (a partial last chunk, K % 128 != 0,
            // shifts this by a few lines: only how far ahead, never what is read)
            __builtin_prefetch(blk + 64 * (R * c + r) + simd::kPrefetchBytes);
            const __m512i il = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_and_si512(b, m4), xl);
            const __m512i ih = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_and_si512(_mm512_srli_epi16(b, 4), m4), xh);
            const float * s = sf + r * st;
            __m512 sl, sh;
            if (G_GE_64) { // each half lies in one group
                sl = _mm512_set1_ps(s[grp[4 * c]]);
                sh = _mm512_set1_ps(s[grp[4 * c + 2]]);
            } else {       // G == 32: lanes 0-7 and 8-15 are two groups
                sl = _mm512_insertf32x8(_mm512_set1_ps(s[4 * c]), _mm256_set1_ps(s[4 * c + 1]), 1);
                sh = _mm512_insertf32x8(_mm512_set1_ps(s[4 * c + 2]), _mm256_set1_ps(s[4 * c + 3]), 1);
            }
            al[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(il), _mm512_mul_ps(dl, sl), al[r]);
            ah[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ih), _mm512_mul_ps(dh, sh), ah[r]);
        }
    }
    #pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
        float s = _mm512_reduce_add_ps(_mm512_add_ps(al[r], ah[r]));
        if (nc * 128 < K) s += simd::q4_tail(row[r], x, sf + r * st, (int)G, nc * 128, K);
        s += simd::dot<V>(zf + r * st, x.gsum, ng);
        y[r] = s;
    }
}

template <bool G_GE_64>
void q4_matvec_g(const Q4Rows & w, const Q8Row & x, int64_t n0, int64_t n1, float * y) {
    // grp [K/32]: group of each 32-block (no integer division in the hot loop)
    thread_local std::vector<int32_t> grp;
    grp.resize(w.k / 32);
    for (int64_t b = 0; b < w.k / 32; b++) grp[b] = (int32_t)(b * 32 / w.group);
    // 4 rows per pass: one activation load feeds 4 weight streams, and 4 rows'
    // streams keep more loads in flight (R=4 vs 2: +14% GB/s, one thread, Zen 5)
    int64_t n = n0;
    for (; n + 4 <= n1; n += 4) q4_rows<4, G_GE_64>(w, x, grp.data(), n, y + (n - n0));
    for (; n + 2 <= n1; n += 2) q4_rows<2, G_GE_64>(w, x, grp.data(), n, y + (n - n0));
    for (; n < n1; n++) q4_rows<1, G_GE_64>(w, x, grp.data(), n, y + (n - n0));
}

// ---- prefill: int8 GEMM with VNNI on an unpacked panel ----------------------
// A panel of 32 weight rows is unpacked once into VNNI order, pw [K/4][32][4]
// u8 (the 4 consecutive inputs of each row a dpbusd lane sums), so one
// 64-byte load holds a 4-input quad of 16 rows and an MR × 32 tile of outputs
// accumulates 32 inputs (8 quads) in int32 before its one float step per
// 32-block: ~4× fewer instructions per multiply-add than dequantizing to f32.
constexpr int kGemmPanel = 32;

struct GemmPanel {
    std::vector<uint8_t> w; // [K/4][32][4]
    std::vector<float> s, z; // [K/G][32]  s and −s·z of each row (0 for rows past n1)
};

void unpack_panel(const Q4Rows & w, int64_t n0, int64_t n1, GemmPanel & p) {
    const int64_t K = w.k, ng = K / w.group, nc = K / 128;
    p.w.resize((size_t)K * kGemmPanel);
    p.s.assign((size_t)ng * kGemmPanel, 0.0f);
    p.z.assign((size_t)ng * kGemmPanel, 0.0f);
    if (n1 - n0 < kGemmPanel) std::fill(p.w.begin(), p.w.end(), 0);
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    for (int64_t r = 0; r < n1 - n0; r++) {
        const int64_t n = n0 + r;
        const uint8_t * row = w.qs + n * (K / 2);
        uint8_t * dst = p.w.data() + 4 * r;
        for (int64_t c = 0; c < nc; c++) {
            // 64 bytes: low nibbles = inputs 128c + [0, 64), high = 128c + [64, 128)
            const __m512i b = _mm512_loadu_si512(row + 64 * c);
            alignas(64) uint32_t lo[16], hi[16];
            _mm512_store_si512(lo, _mm512_and_si512(b, m4));
            _mm512_store_si512(hi, _mm512_and_si512(_mm512_srli_epi16(b, 4), m4));
            for (int l = 0; l < 16; l++) {
                std::memcpy(dst + (size_t)(32 * c + l) * 4 * kGemmPanel, &lo[l], 4);
                std::memcpy(dst + (size_t)(32 * c + 16 + l) * 4 * kGemmPanel, &hi[l], 4);
            }
        }
        if (nc * 128 < K) { // last chunk of T = 32..96 inputs: byte j holds k0 + j and k0 + T/2 + j
            const int64_t k0 = nc * 128, half = (K - k0) / 2;
            for (int64_t j = 0; j < half; j++) {
                const uint8_t v = row[k0 / 2 + j];
                const int64_t ka = k0 + j, kb = k0 + half + j;
                dst[(ka / 4) * 4 * kGemmPanel + ka % 4] = v & 15;
                dst[(kb / 4) * 4 * kGemmPanel + kb % 4] = v >> 4;
            }
        }
        for (int64_t g = 0; g < ng; g++) {
            p.s[g * kGemmPanel + r] = f16_to_f32(w.scale[n * ng + g]);
            p.z[g * kGemmPanel + r] = f16_to_f32(w.szero[n * ng + g]);
        }
    }
}

// Rows m0 .. m0+MR of x times the panel: y[m][0, ncols).
template <int MR>
inline void gemm_tile(const GemmPanel & p, int64_t K, int64_t G, const Q8Row & x0, int64_t m0, float * y, int64_t ldy,
                      int ncols) {
    const int64_t nb = K / 32, ng = K / G;
    __m512 f[MR][2];
    #pragma GCC unroll 8
    for (int m = 0; m < MR; m++) f[m][0] = f[m][1] = _mm512_setzero_ps();
    const int8_t * xq[MR];
    #pragma GCC unroll 8
    for (int m = 0; m < MR; m++) xq[m] = x0.q + (m0 + m) * K;
    for (int64_t b = 0; b < nb; b++) {
        __m512i acc[MR][2];
        #pragma GCC unroll 8
        for (int m = 0; m < MR; m++) acc[m][0] = acc[m][1] = _mm512_setzero_si512();
        const uint8_t * wb = p.w.data() + (size_t)b * 8 * 4 * kGemmPanel;
        #pragma GCC unroll 8
        for (int q = 0; q < 8; q++) {
            const __m512i w0 = _mm512_loadu_si512(wb + q * 128), w1 = _mm512_loadu_si512(wb + q * 128 + 64);
            #pragma GCC unroll 8
            for (int m = 0; m < MR; m++) {
                int32_t xv;
                std::memcpy(&xv, xq[m] + 32 * b + 4 * q, 4);
                const __m512i xb = _mm512_set1_epi32(xv);
                acc[m][0] = _mm512_dpbusd_epi32(acc[m][0], w0, xb);
                acc[m][1] = _mm512_dpbusd_epi32(acc[m][1], w1, xb);
            }
        }
        const int64_t g = b * 32 / G;
        const __m512 s0 = _mm512_loadu_ps(p.s.data() + g * kGemmPanel), s1 = _mm512_loadu_ps(p.s.data() + g * kGemmPanel + 16);
        #pragma GCC unroll 8
        for (int m = 0; m < MR; m++) {
            const __m512 dx = _mm512_set1_ps(x0.d[(m0 + m) * nb + b]);
            f[m][0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[m][0]), _mm512_mul_ps(s0, dx), f[m][0]);
            f[m][1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[m][1]), _mm512_mul_ps(s1, dx), f[m][1]);
        }
    }
    for (int64_t g = 0; g < ng; g++) { // + Σ_g (−s·z) · Σ_{k∈g} x
        const __m512 z0 = _mm512_loadu_ps(p.z.data() + g * kGemmPanel), z1 = _mm512_loadu_ps(p.z.data() + g * kGemmPanel + 16);
        #pragma GCC unroll 8
        for (int m = 0; m < MR; m++) {
            const __m512 gs = _mm512_set1_ps(x0.gsum[(m0 + m) * ng + g]);
            f[m][0] = _mm512_fmadd_ps(z0, gs, f[m][0]);
            f[m][1] = _mm512_fmadd_ps(z1, gs, f[m][1]);
        }
    }
    #pragma GCC unroll 8
    for (int m = 0; m < MR; m++) {
        float * o = y + (m0 + m) * ldy;
        if (ncols == kGemmPanel) {
            _mm512_storeu_ps(o, f[m][0]);
            _mm512_storeu_ps(o + 16, f[m][1]);
        } else {
            alignas(64) float tmp[kGemmPanel];
            _mm512_store_ps(tmp, f[m][0]);
            _mm512_store_ps(tmp + 16, f[m][1]);
            std::memcpy(o, tmp, (size_t)ncols * sizeof(float));
        }
    }
}

void q4_gemm(const Q4Rows & w, const Q8Row & x0, int64_t M, int64_t n0, int64_t n1, float * y, int64_t ldy) {
    thread_local GemmPanel p;
    unpack_panel(w, n0, n1, p);
    const int nc = (int)(n1 - n0);
    int64_t m = 0;
    for (; m + 6 <= M; m += 6) gemm_tile<6>(p, w.k, w.group, x0, m, y, ldy, nc);
    for (; m + 2 <= M; m += 2) gemm_tile<2>(p, w.k, w.group, x0, m, y, ldy, nc);
    for (; m < M; m++) gemm_tile<1>(p, w.k, w.group, x0, m, y, ldy, nc);
}

// s32 [8] += u8 w × s8 x quads with VNNI on 256-bit registers (AVX512VL)
inline __m256i dot_vnni256(__m256i w, __m256i x) { return _mm256_dpbusd_epi32(_mm256_setzero_si256(), w, x); }

using cpu_x86::IVx86; // kernels-x86-qx.h
void qx_matvec(const QxRows & w, const Q8Row & x, int64_t n0, int64_t n1, float * y) {
    simd::qx_matvec<V, IVx86<dot_vnni256>>(w, x, n0, n1, y);
}

void q4_matvec(const Q4Rows & w, const Q8Row & x, int64_t n0, int64_t n1, float * y) {
    if (w.group >= 64) q4_matvec_g<true>(w, x, n0, n1, y);
    else q4_matvec_g<false>(w, x, n0, n1, y);
}

} // namespace

const Kernels & kernels_avx512() {
    static const Kernels k = [] {
        Kernels t = simd::make_kernels<V, 12>("avx512", q4_matvec, q4_gemm, qx_matvec);
#ifdef SHOAL_HAVE_AVX512BF16
        if (cpu_features().avx512bf16) { // else the f32 emulation of make_kernels
            t.gemm_bf16 = gemm_bf16_avx512bf16;
            t.gemm_bf16_native = true;
        }
#endif
        return t;
    }();
    return k;
}

} // namespace shoal
