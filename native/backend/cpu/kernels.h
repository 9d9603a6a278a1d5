// kernels.h — the CPU kernel table. One table per ISA (scalar reference,
// AVX2, AVX-512, NEON, NEON-dotprod); the backend picks one at run time from
// CPU feature detection and only ever calls through it. Kernels are
// single-threaded and work on a slice (rows [n0, n1), one head, ...): the
// backend splits the work across its thread pool.
#pragma once
#include "backend.h" // KvType
#include "tensor.h"

#include <cstdint>
#include <cstring>
#include <string>

namespace shoal {

// INT4 weights in the repacked layout of q4-repack.h (pack factor 2 per byte).
struct Q4Rows {
    int64_t n = 0;                   // N output rows
    int64_t k = 0;                   // K inputs, K % 32 == 0, K % G == 0
    int     group = 0;               // G, 32 | G
    const uint8_t *  qs = nullptr;   // [N][K/2]   two 4-bit weights per byte, chunked (q4-repack.h)
    const uint16_t * scale = nullptr; // f16 [N][K/G]  s
    const uint16_t * szero = nullptr; // f16 [N][K/G]  −s·z
};

// 2-, 3- and 8-bit weights in the repacked layouts of lowbit-repack.h. Each
// row is K·bits/8 bytes, cut into chunks of 128 inputs (the last may be 32, 64
// or 96 wide, T); in a chunk starting at k0:
//   bits 8: byte k − k0 = q − 128 as int8 (natural order)
//   bits 2: T/4 bytes; byte j, bits 2p..2p+1 = q[k0 + p·T/4 + j]     (p = 0..3)
//   bits 3: the 2-bit planes of q & 3 (T/4 bytes), then T/8 bytes:
//           byte i, bit p = bit 2 of q[k0 + p·T/8 + i]               (p = 0..7)
// so a full chunk's planes are runs of 32 (2-bit) or 16 (high bits)
// consecutive inputs: one 32-byte vector gives a whole 32-block of weights.
// w = q·s + (−s·z) with s, −s·z per (row, group) as in Q4Rows.
struct QxRows {
    int64_t n = 0;                   // N output rows
    int64_t k = 0;                   // K inputs, K % 32 == 0, K % G == 0
    int     group = 0;               // G, 32 | G
    int     bits = 0;                // 2, 3 or 8
    const uint8_t *  qs = nullptr;   // [N][K·bits/8]
    const uint16_t * scale = nullptr; // f16 [N][K/G]  s
    const uint16_t * szero = nullptr; // f16 [N][K/G]  −s·z
    int64_t row_bytes() const { return k * bits / 8; }
};

// Quantized weights for precision "exact" (shoal_model_params.precision): the
// codes of the Q4Rows layout (bits 4) or of the QxRows layout (bits 2, 3, 8)
// with f32 s and f32 z per (row, group) in the units of the stored codes, so
//   w = (c − z) · s        (c: the stored nibble, 2/3-bit value, or int8 q − 128;
//                           for bits 8, z is the checkpoint's zero − 128)
// is one f32 rounding of the checkpoint's (q − z)·s: (c − z) is an exact integer
// in f32 and the product rounds once. No f16 −s·z, no int8 activations; the
// kernels take f32 activations. A verification mode: ~2× the bytes of Q4Rows
// per group term and no integer dot products.
struct ExactRows {
    int64_t n = 0;                   // N output rows
    int64_t k = 0;                   // K inputs, K % 32 == 0, K % G == 0
    int     group = 0;               // G, 32 | G
    int     bits = 0;                // 4: Q4Rows codes; 2, 3, 8: QxRows codes
    const uint8_t * qs = nullptr;    // [N][K·bits/8]
    const float *   scale = nullptr; // [N][K/G]  s
    const float *   zero = nullptr;  // [N][K/G]  z (code units)
    int64_t row_bytes() const { return k * bits / 8; }
};

// One activation row quantized for the integer dot kernels ("q8"):
// x[i] ≈ q[i] · d[i/32]. The quantization is the same scalar code for every
// ISA, so all ISAs see bit-identical q and d.
struct Q8Row {
    const int8_t * q = nullptr;      // [K]     round(x / d), |q| <= 127
    const float *  d = nullptr;      // [K/32]  max|x| / 127 over each 32-block
    const float *  gsum = nullptr;   // [K/G]   exact f32 Σx over each group (for the −s·z term)
};

// One KV head of one layer in the CPU cache layout (backend-cpu.cpp owns the
// memory; T = f32 | f16 | int8 by type). Keys are blocked-transposed so that
// attention scores are vectorised over positions with no horizontal sums:
//   k   T   [ceil(n_ctx/32)][hd][32]  key dim i of position p at ((p/32)·hd + i)·32 + p%32
//   v   T   [n_ctx][hd]               values, natural order
//   ks  f32 [ceil(n_ctx/32)·32]       q8 only: k ≈ q · ks[p], one scale per (position, head)
//   vs  f32 [ceil(n_ctx/32)·32]       q8 only: v ≈ q · vs[p]
// Only positions < n_kv are ever read as valid; the rest of a 32-tile holds
// zeros or stale (finite) rows and is masked off.
constexpr int kKvTile = 32;
struct KvHead {
    KvType type = KvType::F32;
    int hd = 0;
    const void * k = nullptr;
    const void * v = nullptr;
    const float * ks = nullptr;
    const float * vs = nullptr;
    int lo = 0;                    // positions 0..lo−1 are masked (a window starting inside a tile)
};

// Symmetric int8 of n values: q = round(x / d), d = max|x| / 127 (0 for an
// all-zero row). The KV cache's q8 rows; scalar and shared by every ISA, so
// all of them read bit-identical caches.
static inline float kv_quantize_q8(const float * x, int n, int8_t * q) {
    float amax = 0.0f;
    for (int i = 0; i < n; i++) amax = x[i] < 0 ? (-x[i] > amax ? -x[i] : amax) : (x[i] > amax ? x[i] : amax);
    const float id = amax > 1e-30f ? 127.0f / amax : 0.0f;
    for (int i = 0; i < n; i++) {
        const float v = x[i] * id + 12582912.0f; // round half to even, as quantize_q8
        q[i] = (int8_t)(int)(v - 12582912.0f);
    }
    return amax / 127.0f;
}

struct Kernels {
    const char * isa;

    // x [K] → q [K], d [K/32], gsum [K/G].
    void (*quantize_q8)(const float * x, int64_t k, int group, int8_t * q, float * d, float * gsum);
    // y[n - n0] = Σ_k w[n, k] · x[k] for n in [n0, n1), int8 activations (decode).
    void (*q4_matvec)(const Q4Rows & w, const Q8Row & x, int64_t n0, int64_t n1, float * y);
    // Prefill on INT4 weights with int8 activations (the decode numerics): for
    // the M rows x0 + m (q + m·K, d + m·K/32, gsum + m·K/G) and n in [n0, n1),
    // n1 − n0 <= 32: y[m·ldy + n − n0] = Σ_k w[n, k] · x_m[k].
    void (*q4_gemm)(const Q4Rows & w, const Q8Row & x0, int64_t m, int64_t n0, int64_t n1, float * y, int64_t ldy);
    // out [n1-n0][K] f32 = dequantized rows n0..n1 (prefill panels).
    void (*q4_dequant)(const Q4Rows & w, int64_t n0, int64_t n1, float * out);
    // Float weights w [N][K] of dtype dt (F32/F16/BF16): y[n - n0] = w[n]·x.
    void (*fw_matvec)(DType dt, const void * w, int64_t k, const float * x, int64_t n0, int64_t n1, float * y);
    // dst [n] f32 = src [n] of dtype dt (F32/F16/BF16).
    void (*to_f32)(DType dt, const void * src, int64_t n, float * dst);
    // y[i*ldy + j] = Σ_t x[i*ldx + t] · w[j*k + t] for i < m, j < n (w: f32 panel [n][k]).
    void (*gemm_f32)(const float * x, int64_t ldx, int64_t m, const float * w, int64_t n, int64_t k,
                     float * y, int64_t ldy);
    // As gemm_f32 with bf16 products (Linear::bf16_products): x and w rounded to
    // bf16 (bf16_round), then per y element, over k-pairs p in order,
    //   acc = fma(x[2p+1], w[2p+1], acc); acc = fma(x[2p], w[2p], acc)
    // (the order of VDPBF16PS; bf16 × bf16 is exact in f32, so one rounding per
    // step); for odd k the missing element is 0. The scalar table is the
    // definition; the others match it bit for bit on normal-range data.
    void (*gemm_bf16)(const float * x, int64_t ldx, int64_t m, const float * w, int64_t n, int64_t k,
                      float * y, int64_t ldy);
    // out [n] = x [n] / sqrt(mean(x²) + eps) · w [n]
    void (*rmsnorm)(const float * x, const float * w, int64_t n, float eps, float * out);
    // One head v [≥ n_rot] in place, HF rotate_half: pairs (i, i + n_rot/2);
    // cos, sin [n_rot/2] for this position.
    void (*rope)(float * v, int n_rot, const float * cos, const float * sin);
    // nq query heads that share one KV head, one query row, n_kv cached
    // positions: q, out [nq][hd]; scores: scratch [nq][ceil(n_kv/32)·32].
    // out[h] = softmax(scale · q[h]·kⱼ) · V over j in [kv.lo, n_kv). Each K/V row is read once for all nq heads.
    void (*attn_group)(const KvHead & kv, const float * q, int nq, int n_kv, float scale, float * scores, float * out);
    // g [n] = silu(g) · u
    void (*silu_mul)(float * g, const float * u, int64_t n);
    // x [n] += y [n]
    void (*add)(float * x, const float * y, int64_t n);
    // As q4_matvec / q4_dequant, for 2-, 3- and 8-bit rows (QxRows).
    void (*qx_matvec)(const QxRows & w, const Q8Row & x, int64_t n0, int64_t n1, float * y);
    void (*qx_dequant)(const QxRows & w, int64_t n0, int64_t n1, float * out);
    // out [n] = (x − mean) / sqrt(var + eps) · w + b (two passes: mean, then variance)
    void (*layernorm)(const float * x, const float * w, const float * b, int64_t n, float eps, float * out);
    // x [n] in place: max(x, 0)
    void (*relu)(float * x, int64_t n);
    // x [n] in place: x·Φ(x) = 0.5·x·(1 + erf(x/√2))
    void (*gelu_erf)(float * x, int64_t n);
    // x [n] in place: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))) (gelu_new, gelu_pytorch_tanh)
    void (*gelu_tanh)(float * x, int64_t n);

    // ---- precision "exact" (ExactRows): the INT4/2/3/8 weight kernels of that mode ----
    // out [n1−n0][K] f32 = (c − z)·s of rows n0..n1, bit-identical on every ISA (one
    // subtraction and one product per weight, no FMA): prefill panels for gemm_f32.
    void (*exact_dequant)(const ExactRows & w, int64_t n0, int64_t n1, float * out);
    // y[n − n0] = Σ_k ((c − z)·s)[n, k] · x[k] for n in [n0, n1), x f32 [K] (decode).
    void (*exact_matvec)(const ExactRows & w, const float * x, int64_t n0, int64_t n1, float * y);

    // ---- the int8 lm_head (load_linear_int8) ----
    // y[n − n0] = Σ_k w[n, k] · x[k] for n in [n0, n1) on 8-bit QxRows with f32
    // activations x [K] (weights-only int8: no rounding of x), gsum [K/G] the f32 Σx
    // of each group (for the −s·z term). Int8 activations (qx_matvec) moved logits by
    // up to 0.06 on stories260K and changed its greedy output; this does not.
    void (*q8w_matvec)(const QxRows & w, const float * x, const float * gsum, int64_t n0, int64_t n1, float * y);

    // gemm_bf16 runs on native bf16 dot products (AVX512_BF16), not an emulation.
    bool gemm_bf16_native = false;
};

// f32 rounded to the nearest bf16 (ties to even), back as f32; NaN stays NaN
// (quieted). Subnormals are kept, unlike the AVX512_BF16 conversions.
static inline float bf16_round(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) u |= 0x00400000u;
    else u += 0x7fffu + ((u >> 16) & 1u);
    u &= 0xffff0000u;
    std::memcpy(&f, &u, 4);
    return f;
}

// Value q (0..2^bits−1; for bits 8 the stored q − 128) of input k in a QxRows row (scalar).
static inline int qx_value(const uint8_t * row, int bits, int64_t k, int64_t K) {
    if (bits == 8) return (int)(int8_t)row[k];
    const int64_t k0 = k / 128 * 128, T = (K - k0) < 128 ? (K - k0) : 128, j = k - k0;
    const uint8_t * c = row + k0 * bits / 8;
    const int lo = (c[j % (T / 4)] >> (2 * (j / (T / 4)))) & 3;
    if (bits == 2) return lo;
    const int hi = (c[T / 4 + j % (T / 8)] >> (j / (T / 8))) & 1;
    return lo | (hi << 2);
}

// Stored code c of input k in an ExactRows row (scalar): bits 4 the Q4Rows nibble
// (q4-repack.h: chunk of T ≤ 128 at k0, byte j low = k0 + j, high = k0 + T/2 + j),
// other bits qx_value.
static inline int exact_code(const uint8_t * row, int bits, int64_t k, int64_t K) {
    if (bits != 4) return qx_value(row, bits, k, K);
    const int64_t k0 = k / 128 * 128, T = (K - k0) < 128 ? (K - k0) : 128, j = k - k0;
    const uint8_t b = row[k0 / 2 + j % (T / 2)];
    return j < T / 2 ? (b & 15) : (b >> 4);
}

// The scalar reference kernels (always available; the oracle of the tests).
const Kernels & kernels_ref();
// The table for an ISA name ("scalar", "avx2", ...), or nullptr when it is not
// compiled in or not supported by this CPU.
const Kernels * cpu_kernels(const std::string & isa);

// Per-ISA tables, defined in kernels-<isa>.cpp (only those compiled for this arch).
const Kernels & kernels_avx2();
const Kernels & kernels_avx512();
const Kernels & kernels_neon();
const Kernels & kernels_neon_dotprod();
// gemm_bf16 on AVX512_BF16 (kernels-avx512-bf16.cpp; x86-64 builds whose compiler
// has -mavx512bf16, SHOAL_HAVE_AVX512BF16), for the AVX-512 table when CPUID has it.
void gemm_bf16_avx512bf16(const float * x, int64_t ldx, int64_t m, const float * w, int64_t n, int64_t k, float * y,
                          int64_t ldy);

} // namespace shoal
