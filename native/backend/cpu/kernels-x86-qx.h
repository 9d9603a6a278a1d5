// kernels-x86-qx.h — integer traits of the 2/3/8-bit matvec shared by the
// AVX2 and AVX-512 kernel files (both use 256-bit registers for it; they differ
// only in the u8×s8 dot they pass as DOTU). Included by ISA files only.
#pragma once
#include <immintrin.h>

namespace shoal {
namespace cpu_x86 {

// Integer traits for the 2/3/8-bit matvec (kernels-simd.h qx_matvec): one
// 32-byte register per 32-block of weights. DOTU: s32 [8] += u8 w × s8 x quads.
template <__m256i (*DOTU)(__m256i, __m256i)> struct IVx86 {
    using B = __m256i;
    using A = __m256;
    static B load32(const uint8_t * p) { return _mm256_loadu_si256((const __m256i *)p); }
    static B load16x2(const uint8_t * p) { return _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)p)); }
    template <int P> static B plane2(B v) { return _mm256_and_si256(_mm256_srli_epi16(v, 2 * P), _mm256_set1_epi8(3)); }
    template <int P> static B hibit(B h) {
        const __m256i m = _mm256_set_m128i(_mm_set1_epi8((char)(1 << (2 * P + 1))), _mm_set1_epi8((char)(1 << (2 * P))));
        return _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(h, m), m), _mm256_set1_epi8(4));
    }
    static B or_(B a, B b) { return _mm256_or_si256(a, b); }
    static A azero() { return _mm256_setzero_ps(); }
    static float ahsum(A a) {
        __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
        s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        s = _mm_add_ss(s, _mm_movehdup_ps(s));
        return _mm_cvtss_f32(s);
    }
    // four blocks' s32 [8] partial sums → [b0, b1, b2, b3] in each 128-bit half, one convert, one FMA
    static A quad(A a, __m256i i0, __m256i i1, __m256i i2, __m256i i3, const float * ds) {
        const __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(i0, i1), _mm256_hadd_epi32(i2, i3));
        return _mm256_fmadd_ps(_mm256_cvtepi32_ps(h), _mm256_broadcast_ps((const __m128 *)ds), a);
    }
    static __m256i xv(const int8_t * x) { return _mm256_loadu_si256((const __m256i *)x); }
    static A quad_u(A a, B w0, B w1, B w2, B w3, const int8_t * x, const float * ds) {
        return quad(a, DOTU(w0, xv(x)), DOTU(w1, xv(x + 32)), DOTU(w2, xv(x + 64)), DOTU(w3, xv(x + 96)), ds);
    }
    // signed w: |w| (u8, up to 128) × sign(w)·x; pairs stay within s16 (2·128·127)
    static __m256i dots(B w, const int8_t * x) { return DOTU(_mm256_sign_epi8(w, w), _mm256_sign_epi8(xv(x), w)); }
    static A quad_s(A a, B w0, B w1, B w2, B w3, const int8_t * x, const float * ds) {
        return quad(a, dots(w0, x), dots(w1, x + 32), dots(w2, x + 64), dots(w3, x + 96), ds);
    }
};


} // namespace cpu_x86
} // namespace shoal
