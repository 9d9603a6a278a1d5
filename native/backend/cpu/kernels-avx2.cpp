// kernels-avx2.cpp — AVX2 + FMA + F16C kernels. The INT4 matvec multiplies
// 4-bit weights by int8 activations with vpmaddubsw (u8 × s8 → s16 pairs; at
// most 2·15·127 = 3810, so no saturation) then vpmaddwd by 1 → s32; everything
// else is the generic code of kernels-simd.h over 8-float registers.
#include "kernels-simd.h"
#include "kernels-x86-qx.h"

#include <immintrin.h>

#include <vector>

namespace shoal {
namespace {

struct V {
    using F = __m256;
    static constexpr int W = 8;
    static F zero() { return _mm256_setzero_ps(); }
    static F set1(float a) { return _mm256_set1_ps(a); }
    static F load(const float * p) { return _mm256_loadu_ps(p); }
    static void store(float * p, F a) { _mm256_storeu_ps(p, a); }
    static F add(F a, F b) { return _mm256_add_ps(a, b); }
    static F sub(F a, F b) { return _mm256_sub_ps(a, b); }
    static F mul(F a, F b) { return _mm256_mul_ps(a, b); }
    static F div(F a, F b) { return _mm256_div_ps(a, b); }
    static F fmadd(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }
    static F max(F a, F b) { return _mm256_max_ps(a, b); }
    static F min(F a, F b) { return _mm256_min_ps(a, b); }
    static float hsum(F a) {
        __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
        s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        s = _mm_add_ss(s, _mm_movehdup_ps(s));
        return _mm_cvtss_f32(s);
    }
    static F round(F a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
    static F pow2(F n) {
        const __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
        return _mm256_castsi256_ps(_mm256_slli_epi32(e, 23));
    }
    static F load_f16(const uint16_t * p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); }
    static F load_i8(const int8_t * p) { return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p))); }
    static F load_bf16(const uint16_t * p) {
        const __m256i u = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
        return _mm256_castsi256_ps(_mm256_slli_epi32(u, 16));
    }
    static void dq16(const uint8_t * b, float slo, float zlo, float shi, float zhi, float * lo, float * hi) {
        const __m128i v = _mm_loadu_si128((const __m128i *)b);
        const __m128i m4 = _mm_set1_epi8(0x0F);
        const __m128i l = _mm_and_si128(v, m4), h = _mm_and_si128(_mm_srli_epi16(v, 4), m4);
        const __m256 sl = _mm256_set1_ps(slo), zl = _mm256_set1_ps(zlo);
        const __m256 sh = _mm256_set1_ps(shi), zh = _mm256_set1_ps(zhi);
        _mm256_storeu_ps(lo, _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(l)), sl, zl));
        _mm256_storeu_ps(lo + 8, _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(l, 8))), sl, zl));
        _mm256_storeu_ps(hi, _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(h)), sh, zh));
        _mm256_storeu_ps(hi + 8, _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(h, 8))), sh, zh));
    }
};

// s32 [8] = Σ over byte quads of u8 w × s8 x
inline __m256i dot_u8s8(__m256i w, __m256i x) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), _mm256_set1_epi16(1));
}

// R rows share the activation loads. A 128-input chunk is two 32-byte vectors:
// vector v (0, 1) has low nibbles ↔ 32-block 4c+v and high ↔ 4c+2+v, so each
// (vector, nibble) product has one scale d·s.
template <int R>
inline void q4_rows(const Q4Rows & w, const Q8Row & x, const int32_t * grp, int64_t n, float * y) {
    const int64_t K = w.k, G = w.group, ng = K / G, nc = K / 128;
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    float sf[R][1024], zf[R][1024]; // [K/G] f32 scales of each row
    const uint8_t * row[R];
    __m256 a0[R], a1[R];
    #pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
        simd::f16_row<V>(w.scale + (n + r) * ng, ng, sf[r]);
        simd::f16_row<V>(w.szero + (n + r) * ng, ng, zf[r]);
        row[r] = w.qs + (n + r) * (K / 2);
        a0[r] = a1[r] = _mm256_setzero_ps();
    }
    for (int64_t c = 0; c < nc; c++) {
        #pragma GCC unroll 8
        for (int v = 0; v < 2; v++) {
            const int64_t bl = 4 * c + v, bh = 4 * c + 2 + v; // 32-blocks of the two nibbles
            const __m256i xl = _mm256_loadu_si256((const __m256i *)(x.q + 32 * bl));
            const __m256i xh = _mm256_loadu_si256((const __m256i *)(x.q + 32 * bh));
            #pragma GCC unroll 8
            for (int r = 0; r < R; r++) {
                const __m256i b = _mm256_loadu_si256((const __m256i *)(row[r] + 64 * c + 32 * v));
                if (v == 0) __builtin_prefetch(row[r] + 64 * c + simd::kPrefetchBytes);
                const __m256i il = dot_u8s8(_mm256_and_si256(b, m4), xl);
                const __m256i ih = dot_u8s8(_mm256_and_si256(_mm256_srli_epi16(b, 4), m4), xh);
                a0[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(il), _mm256_set1_ps(x.d[bl] * sf[r][grp[bl]]), a0[r]);
                a1[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ih), _mm256_set1_ps(x.d[bh] * sf[r][grp[bh]]), a1[r]);
            }
        }
    }
    #pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
        float s = V::hsum(_mm256_add_ps(a0[r], a1[r]));
        if (nc * 128 < K) s += simd::q4_tail(row[r], x, sf[r], (int)G, nc * 128, K);
        s += simd::dot<V>(zf[r], x.gsum, ng);
        y[r] = s;
    }
}


using cpu_x86::IVx86; // kernels-x86-qx.h
void qx_matvec(const QxRows & w, const Q8Row & x, int64_t n0, int64_t n1, float * y) {
    simd::qx_matvec<V, IVx86<dot_u8s8>>(w, x, n0, n1, y);
}

void q4_matvec(const Q4Rows & w, const Q8Row & x, int64_t n0, int64_t n1, float * y) {
    // grp [K/32]: group of each 32-block (no integer division in the hot loop)
    thread_local std::vector<int32_t> grp;
    grp.resize(w.k / 32);
    for (int64_t b = 0; b < w.k / 32; b++) grp[b] = (int32_t)(b * 32 / w.group);
    int64_t n = n0;
    for (; n + 4 <= n1; n += 4) q4_rows<4>(w, x, grp.data(), n, y + (n - n0));
    for (; n + 2 <= n1; n += 2) q4_rows<2>(w, x, grp.data(), n, y + (n - n0));
    for (; n < n1; n++) q4_rows<1>(w, x, grp.data(), n, y + (n - n0));
}

} // namespace

const Kernels & kernels_avx2() {
    static const Kernels k = simd::make_kernels<V, 6>("avx2", q4_matvec, simd::q4_gemm_rows<q4_matvec>, qx_matvec);
    return k;
}

} // namespace shoal
