// kernels-neon-common.h — NEON vector traits and the INT4 matvec loop shared
// by kernels-neon.cpp and kernels-neon-dotprod.cpp (the only includers; each
// gets its own internal-linkage copy compiled with its own flags). The two
// differ only in the s8 dot instruction passed as DOT.
#pragma once
#include "kernels-simd.h"

#include <arm_neon.h>

#include <vector>

namespace shoal {
namespace neon {
namespace {

struct V {
    using F = float32x4_t;
    static constexpr int W = 4;
    static F zero() { return vdupq_n_f32(0.0f); }
    static F set1(float a) { return vdupq_n_f32(a); }
    static F load(const float * p) { return vld1q_f32(p); }
    static void store(float * p, F a) { vst1q_f32(p, a); }
    static F add(F a, F b) { return vaddq_f32(a, b); }
    static F sub(F a, F b) { return vsubq_f32(a, b); }
    static F mul(F a, F b) { return vmulq_f32(a, b); }
    static F div(F a, F b) { return vdivq_f32(a, b); }
    static F fmadd(F a, F b, F c) { return vfmaq_f32(c, a, b); }
    static F max(F a, F b) { return vmaxq_f32(a, b); }
    static F min(F a, F b) { return vminq_f32(a, b); }
    static float hsum(F a) { return vaddvq_f32(a); }
    static F round(F a) { return vrndnq_f32(a); }
    static F pow2(F n) {
        const int32x4_t e = vaddq_s32(vcvtnq_s32_f32(n), vdupq_n_s32(127));
        return vreinterpretq_f32_s32(vshlq_n_s32(e, 23));
    }
    static F load_f16(const uint16_t * p) { return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p))); }
    static F load_i8(const int8_t * p) {
        int32_t w;
        std::memcpy(&w, p, 4); // 4 bytes, any alignment
        return vcvtq_f32_s32(vmovl_s16(vget_low_s16(vmovl_s8(vreinterpret_s8_s32(vdup_n_s32(w))))));
    }
    static F load_bf16(const uint16_t * p) { return vreinterpretq_f32_u32(vshlq_n_u32(vmovl_u16(vld1_u16(p)), 16)); }
    static void dq8x2(uint8x16_t q, float s, float z, float * out) {
        const uint16x8_t a = vmovl_u8(vget_low_u8(q)), b = vmovl_high_u8(q);
        const float32x4_t zv = vdupq_n_f32(z);
        vst1q_f32(out + 0, vfmaq_n_f32(zv, vcvtq_f32_u32(vmovl_u16(vget_low_u16(a))), s));
        vst1q_f32(out + 4, vfmaq_n_f32(zv, vcvtq_f32_u32(vmovl_high_u16(a)), s));
        vst1q_f32(out + 8, vfmaq_n_f32(zv, vcvtq_f32_u32(vmovl_u16(vget_low_u16(b))), s));
        vst1q_f32(out + 12, vfmaq_n_f32(zv, vcvtq_f32_u32(vmovl_high_u16(b)), s));
    }
    static void dq16(const uint8_t * b, float slo, float zlo, float shi, float zhi, float * lo, float * hi) {
        const uint8x16_t v = vld1q_u8(b);
        dq8x2(vandq_u8(v, vdupq_n_u8(0x0F)), slo, zlo, lo);
        dq8x2(vshrq_n_u8(v, 4), shi, zhi, hi);
    }
};

using DotFn = int32x4_t (*)(int32x4_t, int8x16_t, int8x16_t);

// R rows share the activation loads. A 128-input chunk is four 16-byte vectors:
// vector v has low nibbles ↔ 32-block 4c + v/2, high nibbles ↔ 4c + 2 + v/2.
template <DotFn DOT, int R>
inline void q4_rows(const Q4Rows & w, const Q8Row & x, const int32_t * grp, int64_t n, float * y) {
    const int64_t K = w.k, G = w.group, ng = K / G, nc = K / 128;
    const uint8x16_t m4 = vdupq_n_u8(0x0F);
    float sf[R][1024], zf[R][1024]; // [K/G] f32 scales of each row
    const uint8_t * row[R];
    float32x4_t a0[R], a1[R];
    #pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
        simd::f16_row<V>(w.scale + (n + r) * ng, ng, sf[r]);
        simd::f16_row<V>(w.szero + (n + r) * ng, ng, zf[r]);
        row[r] = w.qs + (n + r) * (K / 2);
        a0[r] = a1[r] = vdupq_n_f32(0.0f);
    }
    for (int64_t c = 0; c < nc; c++) {
        int8x16_t xl[4], xh[4];
        #pragma GCC unroll 8
        for (int v = 0; v < 4; v++) {
            xl[v] = vld1q_s8(x.q + 128 * c + 16 * v);
            xh[v] = vld1q_s8(x.q + 128 * c + 64 + 16 * v);
        }
        #pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            int32x4_t ib[4] = {vdupq_n_s32(0), vdupq_n_s32(0), vdupq_n_s32(0), vdupq_n_s32(0)}; // blocks 4c..4c+3
            __builtin_prefetch(row[r] + 64 * c + simd::kPrefetchBytes);
            #pragma GCC unroll 8
            for (int v = 0; v < 4; v++) {
                const uint8x16_t b = vld1q_u8(row[r] + 64 * c + 16 * v);
                ib[v / 2] = DOT(ib[v / 2], vreinterpretq_s8_u8(vandq_u8(b, m4)), xl[v]);
                ib[2 + v / 2] = DOT(ib[2 + v / 2], vreinterpretq_s8_u8(vshrq_n_u8(b, 4)), xh[v]);
            }
            #pragma GCC unroll 8
            for (int t = 0; t < 4; t++) {
                const int64_t blk = 4 * c + t;
                const float ds = x.d[blk] * sf[r][grp[blk]];
                if (t & 1) a1[r] = vfmaq_n_f32(a1[r], vcvtq_f32_s32(ib[t]), ds);
                else a0[r] = vfmaq_n_f32(a0[r], vcvtq_f32_s32(ib[t]), ds);
            }
        }
    }
    #pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
        float s = vaddvq_f32(vaddq_f32(a0[r], a1[r]));
        if (nc * 128 < K) s += simd::q4_tail(row[r], x, sf[r], (int)G, nc * 128, K);
        s += simd::dot<V>(zf[r], x.gsum, ng);
        y[r] = s;
    }
}

// Integer traits for the 2/3/8-bit matvec (kernels-simd.h qx_matvec): a
// 32-block of weights is two 16-byte registers; DOT is the s8 dot of the file.
template <DotFn DOT> struct IV {
    struct B { uint8x16_t lo, hi; };
    using A = float32x4_t;
    static B load32(const uint8_t * p) { return B{vld1q_u8(p), vld1q_u8(p + 16)}; }
    static B load16x2(const uint8_t * p) { const uint8x16_t v = vld1q_u8(p); return B{v, v}; }
    template <int P> static uint8x16_t shr(uint8x16_t v) {
        if constexpr (P == 0) return v;
        else return vshrq_n_u8(v, 2 * P);
    }
    template <int P> static B plane2(B v) {
        const uint8x16_t m = vdupq_n_u8(3);
        return B{vandq_u8(shr<P>(v.lo), m), vandq_u8(shr<P>(v.hi), m)};
    }
    template <int P> static B hibit(B h) {
        const uint8x16_t four = vdupq_n_u8(4);
        return B{vandq_u8(vtstq_u8(h.lo, vdupq_n_u8((uint8_t)(1 << (2 * P)))), four),
                 vandq_u8(vtstq_u8(h.hi, vdupq_n_u8((uint8_t)(1 << (2 * P + 1)))), four)};
    }
    static B or_(B a, B b) { return B{vorrq_u8(a.lo, b.lo), vorrq_u8(a.hi, b.hi)}; }
    static A azero() { return vdupq_n_f32(0.0f); }
    static float ahsum(A a) { return vaddvq_f32(a); }
    // s8 × s8 covers both: small unsigned weights and the signed 8-bit q − 128
    static int32x4_t dot32(B w, const int8_t * x) {
        return DOT(DOT(vdupq_n_s32(0), vreinterpretq_s8_u8(w.lo), vld1q_s8(x)), vreinterpretq_s8_u8(w.hi), vld1q_s8(x + 16));
    }
    // four blocks' sums → [b0, b1, b2, b3] by pairwise adds, one convert, one FMA
    static A quad_s(A a, B w0, B w1, B w2, B w3, const int8_t * x, const float * ds) {
        const int32x4_t s = vpaddq_s32(vpaddq_s32(dot32(w0, x), dot32(w1, x + 32)), vpaddq_s32(dot32(w2, x + 64), dot32(w3, x + 96)));
        return vfmaq_f32(a, vcvtq_f32_s32(s), vld1q_f32(ds));
    }
    static A quad_u(A a, B w0, B w1, B w2, B w3, const int8_t * x, const float * ds) { return quad_s(a, w0, w1, w2, w3, x, ds); }
};

template <DotFn DOT>
void qx_matvec_with(const QxRows & w, const Q8Row & x, int64_t n0, int64_t n1, float * y) {
    simd::qx_matvec<V, IV<DOT>>(w, x, n0, n1, y);
}

template <DotFn DOT>
void q4_matvec_with(const Q4Rows & w, const Q8Row & x, int64_t n0, int64_t n1, float * y) {
    // grp [K/32]: group of each 32-block (no integer division in the hot loop)
    thread_local std::vector<int32_t> grp;
    grp.resize(w.k / 32);
    for (int64_t b = 0; b < w.k / 32; b++) grp[b] = (int32_t)(b * 32 / w.group);
    int64_t n = n0;
    for (; n + 4 <= n1; n += 4) q4_rows<DOT, 4>(w, x, grp.data(), n, y + (n - n0));
    for (; n + 2 <= n1; n += 2) q4_rows<DOT, 2>(w, x, grp.data(), n, y + (n - n0));
    for (; n < n1; n++) q4_rows<DOT, 1>(w, x, grp.data(), n, y + (n - n0));
}

} // namespace
} // namespace neon
} // namespace shoal
