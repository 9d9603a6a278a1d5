// kernels-simd.h — the vector kernels written once over a small "vector
// traits" type V that each per-ISA file defines with its own intrinsics (AVX2,
// AVX-512, NEON). Included only by kernels-<isa>.cpp, so every instantiation
// is compiled with that file's ISA flags; this header itself holds no
// intrinsics. The INT4 matrix-vector kernel is not here: it is hand-written
// per ISA because its integer dot instructions differ.
//
// V provides: F (register type), W (floats per register), zero, set1, load,
// store, add, sub, mul, div, fmadd(a,b,c)=a·b+c, max, min, hsum, round
// (to nearest), pow2 (2^n for integral n in [-126,127]), load_f16, load_bf16,
// load_i8 (W int8 → W floats)
// (W values → F), dq16 (16 packed bytes → 16 low + 16 high dequantized floats).
// The 2/3/8-bit matvec also takes an integer traits type IV (see qx_matvec).
#pragma once
#include "kernels.h"
#include "kernels-simd-gemm.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

namespace shoal {
namespace simd {
// Internal linkage: each ISA file gets its own copy, compiled with its own
// flags, so the linker can never mix an AVX-512 body into the AVX2 table.
namespace {

// Weight streams are prefetched this far ahead: decode reads each weight once,
// and the hardware prefetcher alone leaves the INT4 matvec at ~40% of DRAM
// bandwidth (measured on Zen 5, one thread: 12 GB/s without, 24 GB/s at 4 KiB,
// 31 at 8 KiB, 34 at 16 KiB; 32 KiB no better).
constexpr int64_t kPrefetchBytes = 16384;

// exp(x) for a register: range reduction x = n·ln2 + r, |r| <= ln2/2, then a
// degree-7 polynomial (rel. error ~2e-7 in f32). Inputs are clamped to
// [-87.3, 88.3] so 2^n stays a normal f32.
template <class V> inline typename V::F vexp(typename V::F x) {
    using F = typename V::F;
    x = V::min(V::max(x, V::set1(-87.3f)), V::set1(88.3f));
    const F n = V::round(V::mul(x, V::set1(1.44269504088896341f)));
    F r = V::fmadd(n, V::set1(-0.693359375f), x);      // ln2 split hi/lo
    r = V::fmadd(n, V::set1(2.12194440e-4f), r);
    F p = V::set1(1.9875691500e-4f);
    p = V::fmadd(p, r, V::set1(1.3981999507e-3f));
    p = V::fmadd(p, r, V::set1(8.3334519073e-3f));
    p = V::fmadd(p, r, V::set1(4.1665795894e-2f));
    p = V::fmadd(p, r, V::set1(1.6666665459e-1f));
    p = V::fmadd(p, r, V::set1(5.0000001201e-1f));
    p = V::fmadd(p, V::mul(r, r), V::add(r, V::set1(1.0f)));
    return V::mul(p, V::pow2(n));
}

// Loads W values of dtype T as f32.
template <class V, DType T> inline typename V::F load_as(const void * p, int64_t i) {
    if constexpr (T == DType::F16) return V::load_f16(static_cast<const uint16_t *>(p) + i);
    else if constexpr (T == DType::BF16) return V::load_bf16(static_cast<const uint16_t *>(p) + i);
    else return V::load(static_cast<const float *>(p) + i);
}
template <DType T> inline float load1(const void * p, int64_t i) {
    if constexpr (T == DType::F16) return f16_to_f32(static_cast<const uint16_t *>(p)[i]);
    else if constexpr (T == DType::BF16) return bf16_to_f32(static_cast<const uint16_t *>(p)[i]);
    else return static_cast<const float *>(p)[i];
}

// f16 [n] → f32 [n] (n small: the per-row scales of a Q4 row).
// out must have room for n rounded up to V::W floats (every caller's [1024]
// buffer does: K/G <= 1024, checked at repack). No memcpy of a run-time length
// for the tail, which GCC emitted as two libc calls per row and scale array
// whenever K/G % W != 0 (TinyLlama's down projection, K/G = 44: 2.2 % of a
// decoded token's time in memmove, one thread); the overlapping load instead
// ran that matvec at 26.4–27.8 GB/s against 25.4–26.5 with the memcpy tail
// (medians of three runs, one thread, Zen 5, the two alternating in one process).
template <class V> inline void f16_row(const uint16_t * s, int64_t n, float * out) {
    int64_t i = 0;
    for (; i + V::W <= n; i += V::W) V::store(out + i, V::load_f16(s + i));
    if (i < n && n >= V::W) { // the last W values again, overlapping: same values
        V::store(out + n - V::W, V::load_f16(s + n - V::W));
    } else if (i < n) {       // n < W: one register, gathered element by element
        uint16_t h[V::W];
        const int64_t r = n - i;
        #pragma GCC unroll 16
        for (int j = 0; j < V::W; j++) h[j] = j < r ? s[i + j] : (uint16_t)0;
        V::store(out + i, V::load_f16(h));
    }
}

template <class V> inline float dot(const float * a, const float * b, int64_t n) {
    using F = typename V::F;
    F a0 = V::zero(), a1 = V::zero();
    int64_t i = 0;
    for (; i + 2 * V::W <= n; i += 2 * V::W) {
        a0 = V::fmadd(V::load(a + i), V::load(b + i), a0);
        a1 = V::fmadd(V::load(a + i + V::W), V::load(b + i + V::W), a1);
    }
    for (; i + V::W <= n; i += V::W) a0 = V::fmadd(V::load(a + i), V::load(b + i), a0);
    float s = V::hsum(V::add(a0, a1));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

// Contribution Σ_b isum_b · d_b · s_g of the last, partial chunk (32..96 wide)
// of a Q4 row; scalar, as only odd shapes have one.
inline float q4_tail(const uint8_t * row, const Q8Row & x, const float * sf, int group, int64_t k0, int64_t K) {
    const int64_t half = (K - k0) / 2;
    int32_t isum[3] = {0, 0, 0}; // [T/32] blocks of the tail
    for (int64_t j = 0; j < half; j++) {
        const uint8_t b = row[k0 / 2 + j];
        isum[j / 32] += (b & 15) * x.q[k0 + j];
        isum[(half + j) / 32] += (b >> 4) * x.q[k0 + half + j];
    }
    float acc = 0.0f;
    for (int64_t t = 0; t < (K - k0) / 32; t++) {
        const int64_t blk = k0 / 32 + t;
        acc += (float)isum[t] * (x.d[blk] * sf[blk * 32 / group]);
    }
    return acc;
}

template <class V> void q4_dequant(const Q4Rows & w, int64_t n0, int64_t n1, float * out) {
    const int64_t K = w.k, ng = K / w.group;
    float sf[1024], zf[1024]; // [K/G] per-row scales; K/G <= 1024 checked at repack
    for (int64_t n = n0; n < n1; n++) {
        f16_row<V>(w.scale + n * ng, ng, sf);
        f16_row<V>(w.szero + n * ng, ng, zf);
        const uint8_t * row = w.qs + n * (K / 2);
        float * o = out + (n - n0) * K;
        for (int64_t k0 = 0; k0 < K; k0 += 128) {
            const int64_t half = std::min<int64_t>(128, K - k0) / 2;
            for (int64_t j = 0; j < half; j += 16) {
                const int64_t ga = (k0 + j) / w.group, gb = (k0 + half + j) / w.group;
                V::dq16(row + k0 / 2 + j, sf[ga], zf[ga], sf[gb], zf[gb], o + k0 + j, o + k0 + half + j);
            }
        }
    }
}

template <class V, DType T>
void fw_matvec_t(const void * w, int64_t k, const float * x, int64_t n0, int64_t n1, float * y) {
    using F = typename V::F;
    for (int64_t n = n0; n < n1; n++) {
        const int64_t base = n * k;
        F a0 = V::zero(), a1 = V::zero(), a2 = V::zero(), a3 = V::zero();
        int64_t i = 0;
        constexpr int64_t esz = T == DType::F32 ? 4 : 2; // bytes per weight
        const char * wb = static_cast<const char *>(w) + base * esz;
        for (; i + 4 * V::W <= k; i += 4 * V::W) {
            // one prefetch per 64-byte line of this step (4·W weights)
            for (int64_t off = 0; off < 4 * V::W * esz; off += 64) __builtin_prefetch(wb + i * esz + off + kPrefetchBytes);
            a0 = V::fmadd(load_as<V, T>(w, base + i), V::load(x + i), a0);
            a1 = V::fmadd(load_as<V, T>(w, base + i + V::W), V::load(x + i + V::W), a1);
            a2 = V::fmadd(load_as<V, T>(w, base + i + 2 * V::W), V::load(x + i + 2 * V::W), a2);
            a3 = V::fmadd(load_as<V, T>(w, base + i + 3 * V::W), V::load(x + i + 3 * V::W), a3);
        }
        for (; i + V::W <= k; i += V::W) a0 = V::fmadd(load_as<V, T>(w, base + i), V::load(x + i), a0);
        float s = V::hsum(V::add(V::add(a0, a1), V::add(a2, a3)));
        for (; i < k; i++) s += load1<T>(w, base + i) * x[i];
        y[n - n0] = s;
    }
}

template <class V> void fw_matvec(DType dt, const void * w, int64_t k, const float * x, int64_t n0, int64_t n1, float * y) {
    switch (dt) {
        case DType::F16: return fw_matvec_t<V, DType::F16>(w, k, x, n0, n1, y);
        case DType::BF16: return fw_matvec_t<V, DType::BF16>(w, k, x, n0, n1, y);
        default: return fw_matvec_t<V, DType::F32>(w, k, x, n0, n1, y);
    }
}

// Decode on the int8 lm_head (8-bit QxRows read with f32 activations; see
// Kernels::q8w_matvec): per row and group, Σ c·x of the stored int8 c in four f32
// accumulators, scaled by s into the row's lanes; the zero term (−s·z + 128·s)·Σx
// is added once per group from gsum. One row at a time, prefetched like fw_matvec.
template <class V> void q8w_matvec(const QxRows & w, const float * x, const float * gsum, int64_t n0, int64_t n1, float * y) {
    using F = typename V::F;
    const int64_t K = w.k, G = w.group, ng = K / G;
    for (int64_t n = n0; n < n1; n++) {
        const int8_t * row = reinterpret_cast<const int8_t *>(w.qs + n * K);
        const uint16_t * sc = w.scale + n * ng, * sz = w.szero + n * ng;
        F acc = V::zero();
        float zsum = 0.0f;
        for (int64_t g = 0; g < ng; g++) {
            const int64_t e = (g + 1) * G;
            int64_t i = g * G;
            F a0 = V::zero(), a1 = V::zero(), a2 = V::zero(), a3 = V::zero();
            for (; i + 4 * V::W <= e; i += 4 * V::W) {
                if ((i & 63) < 4 * V::W) __builtin_prefetch(row + i + kPrefetchBytes); // once per 64-byte line
                a0 = V::fmadd(V::load_i8(row + i), V::load(x + i), a0);
                a1 = V::fmadd(V::load_i8(row + i + V::W), V::load(x + i + V::W), a1);
                a2 = V::fmadd(V::load_i8(row + i + 2 * V::W), V::load(x + i + 2 * V::W), a2);
                a3 = V::fmadd(V::load_i8(row + i + 3 * V::W), V::load(x + i + 3 * V::W), a3);
            }
            for (; i < e; i += V::W) a0 = V::fmadd(V::load_i8(row + i), V::load(x + i), a0); // G % 32 == 0, W | 32
            const float s = f16_to_f32(sc[g]);
            acc = V::fmadd(V::add(V::add(a0, a1), V::add(a2, a3)), V::set1(s), acc);
            zsum += (f16_to_f32(sz[g]) + 128.0f * s) * gsum[g];
        }
        y[n - n0] = V::hsum(acc) + zsum;
    }
}

template <class V, DType T> void to_f32_t(const void * src, int64_t n, float * dst) {
    int64_t i = 0;
    for (; i + V::W <= n; i += V::W) V::store(dst + i, load_as<V, T>(src, i));
    for (; i < n; i++) dst[i] = load1<T>(src, i);
}

template <class V> void to_f32(DType dt, const void * src, int64_t n, float * dst) {
    switch (dt) {
        case DType::F16: return to_f32_t<V, DType::F16>(src, n, dst);
        case DType::BF16: return to_f32_t<V, DType::BF16>(src, n, dst);
        default: return to_f32_t<V, DType::F32>(src, n, dst);
    }
}

template <class V> void rmsnorm(const float * x, const float * w, int64_t n, float eps, float * out) {
    const float r = 1.0f / std::sqrt(dot<V>(x, x, n) / (float)n + eps);
    const typename V::F rv = V::set1(r);
    int64_t i = 0;
    for (; i + V::W <= n; i += V::W) V::store(out + i, V::mul(V::mul(V::load(x + i), rv), V::load(w + i)));
    for (; i < n; i++) out[i] = x[i] * r * w[i];
}

template <class V> void rope(float * v, int n_rot, const float * c, const float * s) {
    const int half = n_rot / 2;
    int i = 0;
    for (; i + V::W <= half; i += V::W) {
        const auto a = V::load(v + i), b = V::load(v + i + half);
        const auto cv = V::load(c + i), sv = V::load(s + i);
        V::store(v + i, V::sub(V::mul(a, cv), V::mul(b, sv)));
        V::store(v + i + half, V::fmadd(a, sv, V::mul(b, cv)));
    }
    for (; i < half; i++) {
        const float a = v[i], b = v[i + half];
        v[i] = a * c[i] - b * s[i];
        v[i + half] = b * c[i] + a * s[i];
    }
}

// ---- attention over the KV cache (layouts: KvHead in kernels.h) ------------

// W keys/values of type T at element index i, as f32.
template <class V, KvType T> inline typename V::F kv_load(const void * p, int64_t i) {
    if constexpr (T == KvType::F16) return V::load_f16(static_cast<const uint16_t *>(p) + i);
    else if constexpr (T == KvType::Q8) return V::load_i8(static_cast<const int8_t *>(p) + i);
    else return V::load(static_cast<const float *>(p) + i);
}
template <KvType T> inline float kv_load1(const void * p, int64_t i) {
    if constexpr (T == KvType::F16) return f16_to_f32(static_cast<const uint16_t *>(p)[i]);
    else if constexpr (T == KvType::Q8) return (float)static_cast<const int8_t *>(p)[i];
    else return static_cast<const float *>(p)[i];
}

// The KV cache is read once per token, after the layer's weights have passed
// through the caches, so it comes from DRAM; a key tile is one 4 KiB page (f16,
// hd 64) and the hardware prefetcher restarts on every page. Both passes
// prefetch what they read kKvPrefetchTiles tiles (keys) / one 64-position slab
// (values) ahead. Addresses past the cache are only prefetched, never read.
constexpr int kKvPrefetchTiles = 2;
template <KvType T> constexpr int64_t kv_esz() { return T == KvType::F32 ? 4 : T == KvType::F16 ? 2 : 1; }
inline void prefetch_at(const void * base, int64_t off) {
    __builtin_prefetch(reinterpret_cast<const void *>(reinterpret_cast<uintptr_t>(base) + (uintptr_t)off));
}

// Scores of NH heads over 32-position tile t: s[h][32t + j] = scale · q[h]·k(32t+j).
// The tile's keys are [hd][32]: per dim, NV = 32/W loads serve all NH heads
// (broadcast q, FMA), so there are no horizontal sums.
template <class V, KvType T, int NH>
inline void attn_scores_tile(const KvHead & kv, const float * q, int t, float scale, float * s, int64_t ld) {
    using F = typename V::F;
    constexpr int NV = kKvTile / V::W;
    const int hd = kv.hd;
    const int64_t base = (int64_t)t * hd * kKvTile;
    F acc[NH][NV];
    #pragma GCC unroll 16
    for (int h = 0; h < NH; h++)
        #pragma GCC unroll 8
        for (int v = 0; v < NV; v++) acc[h][v] = V::zero();
    constexpr int64_t row_b = kKvTile * kv_esz<T>(); // bytes of one dim of a tile
    const int64_t ahead = kKvPrefetchTiles * hd * row_b;
    for (int i = 0; i < hd; i++) {
        #pragma GCC unroll 2
        for (int64_t o = 0; o < row_b; o += 64) prefetch_at(kv.k, (base + (int64_t)i * kKvTile) * kv_esz<T>() + ahead + o);
        F kk[NV];
        #pragma GCC unroll 8
        for (int v = 0; v < NV; v++) kk[v] = kv_load<V, T>(kv.k, base + (int64_t)i * kKvTile + v * V::W);
        #pragma GCC unroll 16
        for (int h = 0; h < NH; h++) {
            const F qb = V::set1(q[h * hd + i]);
            #pragma GCC unroll 8
            for (int v = 0; v < NV; v++) acc[h][v] = V::fmadd(qb, kk[v], acc[h][v]);
        }
    }
    #pragma GCC unroll 8
    for (int v = 0; v < NV; v++) {
        F sc = V::set1(scale);
        if constexpr (T == KvType::Q8) sc = V::mul(sc, V::load(kv.ks + (int64_t)t * kKvTile + v * V::W));
        #pragma GCC unroll 16
        for (int h = 0; h < NH; h++) V::store(s + h * ld + (int64_t)t * kKvTile + v * V::W, V::mul(acc[h][v], sc));
    }
}

// out[h][i0 .. i0 + ND·W) += Σ_{j in [j0, j1)} p[h][j] · v(j)[...] for NH heads
// (p already includes the q8 row scale and 1/Σ).
template <class V, KvType T, int NH, int ND>
inline void attn_values_block(const KvHead & kv, const float * p, int64_t ld, int j0, int j1, int i0, float * out) {
    using F = typename V::F;
    const int hd = kv.hd;
    F acc[NH][ND];
    #pragma GCC unroll 8
    for (int h = 0; h < NH; h++)
        #pragma GCC unroll 4
        for (int d = 0; d < ND; d++) acc[h][d] = V::load(out + h * hd + i0 + d * V::W);
    constexpr int64_t blk_b = ND * V::W * kv_esz<T>(); // bytes of a value row this block reads
    for (int j = j0; j < j1; j++) {
        #pragma GCC unroll 4
        for (int64_t o = 0; o < blk_b; o += 64) prefetch_at(kv.v, ((int64_t)(j + 64) * hd + i0) * kv_esz<T>() + o);
        F vv[ND];
        #pragma GCC unroll 4
        for (int d = 0; d < ND; d++) vv[d] = kv_load<V, T>(kv.v, (int64_t)j * hd + i0 + d * V::W);
        #pragma GCC unroll 8
        for (int h = 0; h < NH; h++) {
            const F pb = V::set1(p[h * ld + j]);
            #pragma GCC unroll 4
            for (int d = 0; d < ND; d++) acc[h][d] = V::fmadd(pb, vv[d], acc[h][d]);
        }
    }
    #pragma GCC unroll 8
    for (int h = 0; h < NH; h++)
        #pragma GCC unroll 4
        for (int d = 0; d < ND; d++) V::store(out + h * hd + i0 + d * V::W, acc[h][d]);
}

template <class V, KvType T, int NH>
inline void attn_values_heads(const KvHead & kv, const float * p, int64_t ld, int j0, int j1, float * out) {
    const int nv = kv.hd / V::W; // vectors per row (hd % W == 0 here)
    int i0 = 0;
    for (int r = nv; r > 0;) {
        const int nd = r >= 4 ? 4 : r;
        switch (nd) {
            case 4: attn_values_block<V, T, NH, 4>(kv, p, ld, j0, j1, i0, out); break;
            case 3: attn_values_block<V, T, NH, 3>(kv, p, ld, j0, j1, i0, out); break;
            case 2: attn_values_block<V, T, NH, 2>(kv, p, ld, j0, j1, i0, out); break;
            default: attn_values_block<V, T, NH, 1>(kv, p, ld, j0, j1, i0, out); break;
        }
        i0 += nd * V::W;
        r -= nd;
    }
}

// Heads in register blocks of up to HMAX (then 4, 2, 1 for the rest).
template <int HMAX, class Fn> inline void by_head_blocks(int nq, Fn && fn) {
    int h = 0;
    if constexpr (HMAX >= 8) for (; h + 8 <= nq; h += 8) fn(std::integral_constant<int, 8>{}, h);
    if constexpr (HMAX >= 4) for (; h + 4 <= nq; h += 4) fn(std::integral_constant<int, 4>{}, h);
    if constexpr (HMAX >= 2) for (; h + 2 <= nq; h += 2) fn(std::integral_constant<int, 2>{}, h);
    for (; h < nq; h++) fn(std::integral_constant<int, 1>{}, h);
}

template <class V, KvType T>
void attn_group_t(const KvHead & kv, const float * q, int nq, int n_kv, float scale, float * scores, float * out) {
    using F = typename V::F;
    const int hd = kv.hd, nt = (n_kv + kKvTile - 1) / kKvTile;
    const int64_t ld = (int64_t)nt * kKvTile; // scores row stride
    // 16 accumulators where there are 32 registers (AVX-512, NEON), 8 with 16 (AVX2).
    constexpr int kAcc = V::W == 8 ? 8 : 16;
    constexpr int HS = kAcc / (kKvTile / V::W) >= 8 ? 8 : kAcc / (kKvTile / V::W) >= 4 ? 4 : kAcc / (kKvTile / V::W) >= 2 ? 2 : 1;
    // 1. scores, tile by tile: each 32-position key tile is read once for all heads
    for (int t = 0; t < nt; t++)
        by_head_blocks<HS>(nq, [&](auto nh, int h) {
            attn_scores_tile<V, T, decltype(nh)::value>(kv, q + h * hd, t, scale, scores + h * ld, ld);
        });
    // 2. softmax per head; the q8 value scales and 1/Σ folded into the weights;
    // masked positions (before kv.lo, a window's start) get weight 0
    for (int h = 0; h < nq; h++) {
        float * s = scores + h * ld;
        for (int j = 0; j < kv.lo; j++) s[j] = -INFINITY;
        F mv = V::set1(-INFINITY);
        int j = 0;
        for (; j + V::W <= n_kv; j += V::W) mv = V::max(mv, V::load(s + j));
        float tmp[V::W], mx = -INFINITY;
        V::store(tmp, mv);
        for (int l = 0; l < V::W; l++) mx = std::max(mx, tmp[l]);
        for (; j < n_kv; j++) mx = std::max(mx, s[j]);
        const F mxv = V::set1(mx);
        F sv = V::zero();
        for (j = 0; j + V::W <= n_kv; j += V::W) {
            const F e = vexp<V>(V::sub(V::load(s + j), mxv));
            V::store(s + j, e);
            sv = V::add(sv, e);
        }
        float sum = V::hsum(sv);
        for (; j < n_kv; j++) sum += (s[j] = std::exp(s[j] - mx));
        const float inv = 1.0f / sum;
        if constexpr (T == KvType::Q8) {
            for (j = 0; j + V::W <= n_kv; j += V::W) V::store(s + j, V::mul(V::load(s + j), V::mul(V::load(kv.vs + j), V::set1(inv))));
            for (; j < n_kv; j++) s[j] *= kv.vs[j] * inv;
        } else {
            for (j = 0; j + V::W <= n_kv; j += V::W) V::store(s + j, V::mul(V::load(s + j), V::set1(inv)));
            for (; j < n_kv; j++) s[j] *= inv;
        }
        for (j = 0; j < kv.lo; j++) s[j] = 0.0f; // vexp(−inf) is ~1e-38, not 0
    }
    // 3. out = P · V, in 64-position slabs (the slab's values stay in L1 across head blocks)
    std::fill(out, out + (int64_t)nq * hd, 0.0f);
    if (hd % V::W != 0) { // odd head sizes (e.g. 8 floats under AVX-512): plain loops
        for (int h = 0; h < nq; h++)
            for (int j = 0; j < n_kv; j++) {
                const float p = scores[h * ld + j];
                for (int i = 0; i < hd; i++) out[h * hd + i] += p * kv_load1<T>(kv.v, (int64_t)j * hd + i);
            }
        return;
    }
    constexpr int HV = V::W == 8 ? 2 : 4;
    for (int j0 = 0; j0 < n_kv; j0 += 64) {
        const int j1 = std::min(n_kv, j0 + 64);
        by_head_blocks<HV>(nq, [&](auto nh, int h) {
            attn_values_heads<V, T, decltype(nh)::value>(kv, scores + h * ld, ld, j0, j1, out + h * hd);
        });
    }
}

template <class V> void attn_group(const KvHead & kv, const float * q, int nq, int n_kv, float scale, float * scores, float * out) {
    switch (kv.type) {
        case KvType::F16: return attn_group_t<V, KvType::F16>(kv, q, nq, n_kv, scale, scores, out);
        case KvType::Q8: return attn_group_t<V, KvType::Q8>(kv, q, nq, n_kv, scale, scores, out);
        default: return attn_group_t<V, KvType::F32>(kv, q, nq, n_kv, scale, scores, out);
    }
}

template <class V> void silu_mul(float * g, const float * u, int64_t n) {
    const auto one = V::set1(1.0f);
    int64_t i = 0;
    for (; i + V::W <= n; i += V::W) {
        const auto x = V::load(g + i);
        const auto e = vexp<V>(V::sub(V::zero(), x));
        V::store(g + i, V::mul(V::div(x, V::add(one, e)), V::load(u + i)));
    }
    for (; i < n; i++) g[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
}

template <class V> void add(float * x, const float * y, int64_t n) {
    int64_t i = 0;
    for (; i + V::W <= n; i += V::W) V::store(x + i, V::add(V::load(x + i), V::load(y + i)));
    for (; i < n; i++) x[i] += y[i];
}

// ---- 2-, 3- and 8-bit weights (QxRows, kernels.h) --------------------------
// qx_matvec is written once over an integer traits type IV from the ISA file:
//   B                      32 bytes of weights (one 32-block of inputs)
//   load32(p), load16x2(p) 32 bytes; 16 bytes into both 16-byte halves
//   plane2<P>(v)           (v >> 2P) & 3 per byte
//   hibit<P>(h)            per byte: 4 if bit 2P (first half) / 2P+1 (second half) of h is set, else 0
//   or_(a, b)
//   A, azero(), ahsum(a)   float accumulator
//   quad_u(a, w0..w3, x, ds)  a += Σ_j (Σ of the 32 products wj·x[32j..32j+32)) · ds[j],
//                             w in 0..7 (the four 32-blocks of a 128-input chunk)
//   quad_s(...)            the same for signed w in −128..127
// The four integer block sums are reduced into one register and scaled by a
// vector of the four block scales (one convert and one FMA per 128 inputs).

// Unpacks the 2/3-bit chunk of width T (32..128) at k0 of a row into q [T].
inline void qx_unpack_chunk(const uint8_t * row, int bits, int64_t k0, int64_t T, uint8_t * q) {
    const int64_t L = T / 4, H = T / 8;
    const uint8_t * c = row + k0 * bits / 8;
    for (int p = 0; p < 4; p++)
        for (int64_t j = 0; j < L; j++) q[p * L + j] = (uint8_t)((c[j] >> (2 * p)) & 3);
    if (bits == 3)
        for (int p = 0; p < 8; p++)
            for (int64_t i = 0; i < H; i++) q[p * H + i] |= (uint8_t)(((c[L + i] >> p) & 1) << 2);
}

// Scalar Σ_b isum_b·ds_b over the 32-blocks [b0, K/32) of a row: for 8 bits
// the last K/32 % 4 blocks, for 2/3 bits the partial last chunk (b0 = its start).
inline float qx_tail(const uint8_t * row, const QxRows & w, const Q8Row & x, const float * ds, int64_t b0) {
    const int64_t k0 = 32 * b0, T = w.k - k0;
    uint8_t qc[128];
    if (w.bits != 8) qx_unpack_chunk(row, w.bits, k0, T, qc);
    const int8_t * r8 = reinterpret_cast<const int8_t *>(row) + k0;
    float acc = 0.0f;
    for (int64_t b = 0; b < T / 32; b++) {
        int32_t isum = 0;
        for (int64_t i = 32 * b; i < 32 * b + 32; i++)
            isum += (w.bits == 8 ? (int32_t)r8[i] : (int32_t)qc[i]) * (int32_t)x.q[k0 + i];
        acc += (float)isum * ds[b0 + b];
    }
    return acc;
}

template <class V, class IV> void qx_matvec(const QxRows & w, const Q8Row & x, int64_t n0, int64_t n1, float * y) {
    using A = typename IV::A;
    using B = typename IV::B;
    const int64_t K = w.k, G = w.group, ng = K / G, rb = w.row_bytes(), nc = K / 128, nb = K / 32;
    float sf[1024], zf[1024]; // [K/G] f32 scales of the row; K/G <= 1024 checked at repack
    thread_local std::vector<float> dsv;   // [K/32] activation scale × weight scale of each block
    dsv.resize(nb);
    const int64_t bpg = G / 32;            // 32-blocks per group
    float * ds = dsv.data();
    for (int64_t n = n0; n < n1; n++) {
        f16_row<V>(w.scale + n * ng, ng, sf);
        f16_row<V>(w.szero + n * ng, ng, zf);
        // block scales: G % 32 == 0, so blocks [g·bpg, (g+1)·bpg) share sf[g] (a vectorizable loop)
        if (bpg == 1) {
            for (int64_t b = 0; b < nb; b++) ds[b] = x.d[b] * sf[b];
        } else {
            for (int64_t g = 0; g < ng; g++) {
                const float sg = sf[g];
                for (int64_t j = 0; j < bpg; j++) ds[g * bpg + j] = x.d[g * bpg + j] * sg;
            }
        }
        const uint8_t * row = w.qs + n * rb;
        A a0 = IV::azero(), a1 = IV::azero();
        float s = 0.0f;
        if (w.bits == 8) {
            int64_t c = 0;
            for (; c + 2 <= nb / 4; c += 2) {
                const uint8_t * p = row + 128 * c;
                __builtin_prefetch(p + kPrefetchBytes);
                __builtin_prefetch(p + 64 + kPrefetchBytes);
                __builtin_prefetch(p + 128 + kPrefetchBytes);
                __builtin_prefetch(p + 192 + kPrefetchBytes);
                a0 = IV::quad_s(a0, IV::load32(p), IV::load32(p + 32), IV::load32(p + 64), IV::load32(p + 96), x.q + 128 * c, ds + 4 * c);
                a1 = IV::quad_s(a1, IV::load32(p + 128), IV::load32(p + 160), IV::load32(p + 192), IV::load32(p + 224),
                                x.q + 128 * c + 128, ds + 4 * c + 4);
            }
            for (; c < nb / 4; c++) {
                const uint8_t * p = row + 128 * c;
                a0 = IV::quad_s(a0, IV::load32(p), IV::load32(p + 32), IV::load32(p + 64), IV::load32(p + 96), x.q + 128 * c, ds + 4 * c);
            }
            if (nb % 4) s += qx_tail(row, w, x, ds, nb / 4 * 4);
        } else if (w.bits == 2) {
            int64_t c = 0;
            for (; c + 2 <= nc; c += 2) {
                const uint8_t * p = row + 32 * c;
                __builtin_prefetch(p + kPrefetchBytes);
                const B v = IV::load32(p), u = IV::load32(p + 32);
                a0 = IV::quad_u(a0, IV::template plane2<0>(v), IV::template plane2<1>(v), IV::template plane2<2>(v),
                                IV::template plane2<3>(v), x.q + 128 * c, ds + 4 * c);
                a1 = IV::quad_u(a1, IV::template plane2<0>(u), IV::template plane2<1>(u), IV::template plane2<2>(u),
                                IV::template plane2<3>(u), x.q + 128 * c + 128, ds + 4 * c + 4);
            }
            for (; c < nc; c++) {
                const B v = IV::load32(row + 32 * c);
                a0 = IV::quad_u(a0, IV::template plane2<0>(v), IV::template plane2<1>(v), IV::template plane2<2>(v),
                                IV::template plane2<3>(v), x.q + 128 * c, ds + 4 * c);
            }
            if (nc * 128 < K) s += qx_tail(row, w, x, ds, nc * 4);
        } else {
            // 3 bits: 2-bit planes (32 bytes) then the high bits (16 bytes) of each chunk
            auto chunk3 = [&](A a, int64_t c) {
                const uint8_t * p = row + 48 * c;
                __builtin_prefetch(p + kPrefetchBytes);
                const B v = IV::load32(p), h = IV::load16x2(p + 32);
                return IV::quad_u(a, IV::or_(IV::template plane2<0>(v), IV::template hibit<0>(h)),
                                  IV::or_(IV::template plane2<1>(v), IV::template hibit<1>(h)),
                                  IV::or_(IV::template plane2<2>(v), IV::template hibit<2>(h)),
                                  IV::or_(IV::template plane2<3>(v), IV::template hibit<3>(h)), x.q + 128 * c, ds + 4 * c);
            };
            int64_t c = 0;
            for (; c + 2 <= nc; c += 2) {
                a0 = chunk3(a0, c);
                a1 = chunk3(a1, c + 1);
            }
            if (c < nc) a0 = chunk3(a0, c);
            if (nc * 128 < K) s += qx_tail(row, w, x, ds, nc * 4);
        }
        s += IV::ahsum(a0) + IV::ahsum(a1);
        if (w.bits == 8)
            for (int64_t g = 0; g < ng; g++) zf[g] += 128.0f * sf[g];
        s += dot<V>(zf, x.gsum, ng);
        y[n - n0] = s;
    }
}

// Prefill panels: unpack a chunk's integers, then q·s + (−s·z) per 32-block
// (plain loops the compiler vectorizes with this file's ISA flags).
template <class V> void qx_dequant(const QxRows & w, int64_t n0, int64_t n1, float * out) {
    const int64_t K = w.k, G = w.group, ng = K / G, rb = w.row_bytes();
    float sf[1024], zf[1024];
    for (int64_t n = n0; n < n1; n++) {
        f16_row<V>(w.scale + n * ng, ng, sf);
        f16_row<V>(w.szero + n * ng, ng, zf);
        const uint8_t * row = w.qs + n * rb;
        float * o = out + (n - n0) * K;
        if (w.bits == 8) {
            for (int64_t g = 0; g < ng; g++) {
                const float sc = sf[g], z = zf[g] + 128.0f * sf[g];
                const int8_t * q = reinterpret_cast<const int8_t *>(row) + g * G;
                for (int64_t i = 0; i < G; i++) o[g * G + i] = (float)q[i] * sc + z;
            }
            continue;
        }
        for (int64_t k0 = 0; k0 < K; k0 += 128) {
            const int64_t T = std::min<int64_t>(128, K - k0);
            uint8_t q[128];
            qx_unpack_chunk(row, w.bits, k0, T, q);
            for (int64_t b = 0; b < T / 32; b++) {
                const int64_t g = (k0 + 32 * b) / G;
                const float sc = sf[g], z = zf[g];
                for (int i = 0; i < 32; i++) o[k0 + 32 * b + i] = (float)q[32 * b + i] * sc + z;
            }
        }
    }
}

template <class V> void layernorm(const float * x, const float * w, const float * b, int64_t n, float eps, float * out) {
    using F = typename V::F;
    F sv = V::zero();
    int64_t i = 0;
    for (; i + V::W <= n; i += V::W) sv = V::add(sv, V::load(x + i));
    float sum = V::hsum(sv);
    for (; i < n; i++) sum += x[i];
    const float mean = sum / (float)n;
    const F mv = V::set1(mean);
    F qv = V::zero();
    for (i = 0; i + V::W <= n; i += V::W) {
        const F d = V::sub(V::load(x + i), mv);
        qv = V::fmadd(d, d, qv);
    }
    float var = V::hsum(qv);
    for (; i < n; i++) var += (x[i] - mean) * (x[i] - mean);
    const float r = 1.0f / std::sqrt(var / (float)n + eps);
    const F rv = V::set1(r);
    for (i = 0; i + V::W <= n; i += V::W)
        V::store(out + i, V::fmadd(V::mul(V::sub(V::load(x + i), mv), rv), V::load(w + i), V::load(b + i)));
    for (; i < n; i++) out[i] = (x[i] - mean) * r * w[i] + b[i];
}

template <class V> void relu(float * x, int64_t n) {
    int64_t i = 0;
    for (; i + V::W <= n; i += V::W) V::store(x + i, V::max(V::load(x + i), V::zero()));
    for (; i < n; i++) x[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

// erf has no vector form here; the scalar loop is compiled with the ISA's flags.
template <class V> void gelu_erf(float * x, int64_t n) {
    for (int64_t i = 0; i < n; i++) x[i] = 0.5f * x[i] * (1.0f + std::erf(x[i] * 0.70710678118654752f));
}

// tanh(u) = 1 − 2 / (1 + e^{2u}); vexp clamps, so large |u| gives ±1 exactly.
template <class V> void gelu_tanh(float * x, int64_t n) {
    using F = typename V::F;
    const F half = V::set1(0.5f), one = V::set1(1.0f), two = V::set1(2.0f);
    const F c = V::set1(0.79788456080286536f), c3 = V::set1(0.044715f);
    int64_t i = 0;
    for (; i + V::W <= n; i += V::W) {
        const F v = V::load(x + i);
        const F u = V::mul(c, V::fmadd(V::mul(c3, V::mul(v, v)), v, v));
        const F t = V::sub(one, V::div(two, V::add(one, vexp<V>(V::mul(two, u)))));
        V::store(x + i, V::mul(V::mul(half, v), V::add(one, t)));
    }
    for (; i < n; i++) {
        const float v = x[i];
        x[i] = 0.5f * v * (1.0f + std::tanh(0.79788456080286536f * (v + 0.044715f * v * v * v)));
    }
}

// ---- precision "exact" (ExactRows, kernels.h) ---------------------------------
// The codes of a 128-input chunk (the last T = 32..96 wide) as int8: nibbles of the
// Q4 layout, the 2/3-bit planes, or the int8 q − 128 of the 8-bit rows.
inline void exact_codes_chunk(const uint8_t * row, int bits, int64_t k0, int64_t T, int8_t * c) {
    if (bits == 8) {
        std::memcpy(c, row + k0, (size_t)T);
    } else if (bits == 4) {
        const uint8_t * b = row + k0 / 2;
        const int64_t half = T / 2;
        for (int64_t j = 0; j < half; j++) {
            c[j] = (int8_t)(b[j] & 15);
            c[half + j] = (int8_t)(b[j] >> 4);
        }
    } else {
        uint8_t q[128];
        qx_unpack_chunk(row, bits, k0, T, q);
        for (int64_t i = 0; i < T; i++) c[i] = (int8_t)q[i];
    }
}

// Row n → o [K] = (c − z)·s: a subtraction and a product per weight (no FMA), so
// every ISA gives the scalar reference's floats bit for bit.
template <class V> inline void exact_row(const ExactRows & w, int64_t n, float * o) {
    const int64_t K = w.k, G = w.group, ng = K / G;
    const uint8_t * row = w.qs + n * w.row_bytes();
    const float * s = w.scale + n * ng;
    const float * z = w.zero + n * ng;
    for (int64_t k0 = 0; k0 < K; k0 += 128) {
        const int64_t T = std::min<int64_t>(128, K - k0);
        int8_t c[128];
        exact_codes_chunk(row, w.bits, k0, T, c);
        for (int64_t b = 0; b < T; b += 32) { // a 32-block lies in one group (32 | G)
            const int64_t g = (k0 + b) / G;
            const typename V::F sv = V::set1(s[g]), zv = V::set1(z[g]);
            for (int i = 0; i < 32; i += V::W) V::store(o + k0 + b + i, V::mul(V::sub(V::load_i8(c + b + i), zv), sv));
        }
    }
}

template <class V> void exact_dequant(const ExactRows & w, int64_t n0, int64_t n1, float * out) {
    for (int64_t n = n0; n < n1; n++) exact_row<V>(w, n, out + (n - n0) * w.k);
}

// Decode: each row dequantized into thread-local f32, then an f32 dot with x.
template <class V> void exact_matvec(const ExactRows & w, const float * x, int64_t n0, int64_t n1, float * y) {
    thread_local std::vector<float> wr; // [K]
    wr.resize((size_t)w.k);
    for (int64_t n = n0; n < n1; n++) {
        exact_row<V>(w, n, wr.data());
        y[n - n0] = dot<V>(wr.data(), x, w.k);
    }
}

// Prefill on INT4 weights where the ISA has no GEMM of its own: the decode
// kernel once per activation row over the panel's rows, which stay in cache.
template <decltype(Kernels::q4_matvec) MV>
void q4_gemm_rows(const Q4Rows & w, const Q8Row & x0, int64_t M, int64_t n0, int64_t n1, float * y, int64_t ldy) {
    const int64_t K = w.k, nb = K / 32, ng = K / w.group;
    for (int64_t m = 0; m < M; m++) MV(w, Q8Row{x0.q + m * K, x0.d + m * nb, x0.gsum + m * ng}, n0, n1, y + m * ldy);
}

// The table for V, with q4_matvec supplied by the ISA file; quantize_q8 is the
// shared scalar one (bit-identical activations on every ISA; O(K) per row).
template <class V, int MR>
Kernels make_kernels(const char * isa, decltype(Kernels::q4_matvec) q4mv, decltype(Kernels::q4_gemm) q4gemm,
                     decltype(Kernels::qx_matvec) qxmv) {
    return Kernels{isa, kernels_ref().quantize_q8, q4mv, q4gemm, q4_dequant<V>, fw_matvec<V>, to_f32<V>,
                   gemm_f32<V, MR>, gemm_bf16_emulated<V, MR>, rmsnorm<V>, rope<V>, attn_group<V>, silu_mul<V>, add<V>,
                   qxmv, qx_dequant<V>, layernorm<V>, relu<V>, gelu_erf<V>, gelu_tanh<V>, exact_dequant<V>,
                   exact_matvec<V>, q8w_matvec<V>, false};
}

} // namespace
} // namespace simd
} // namespace shoal
