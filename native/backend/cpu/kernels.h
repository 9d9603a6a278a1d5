// kernels.h — the CPU kernel table. One table per ISA (scalar reference,
// AVX2, AVX-512, NEON, NEON-dotprod); the backend picks one at run time from
// CPU feature detection and only ever calls through it. Kernels are
// single-threaded and work on a slice (rows [n0, n1), one head, ...): the
// backend splits the work across its thread pool.
#pragma once
#include "tensor.h"

#include <cstdint>
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

// One activation row quantized for the integer dot kernels ("q8"):
// x[i] ≈ q[i] · d[i/32]. The quantization is the same scalar code for every
// ISA, so all ISAs see bit-identical q and d.
struct Q8Row {
    const int8_t * q = nullptr;      // [K]     round(x / d), |q| <= 127
    const float *  d = nullptr;      // [K/32]  max|x| / 127 over each 32-block
    const float *  gsum = nullptr;   // [K/G]   exact f32 Σx over each group (for the −s·z term)
};

struct Kernels {
    const char * isa;

    // x [K] → q [K], d [K/32], gsum [K/G].
    void (*quantize_q8)(const float * x, int64_t k, int group, int8_t * q, float * d, float * gsum);
    // y[n - n0] = Σ_k w[n, k] · x[k] for n in [n0, n1), int8 activations (decode).
    void (*q4_matvec)(const Q4Rows & w, const Q8Row & x, int64_t n0, int64_t n1, float * y);
    // out [n1-n0][K] f32 = dequantized rows n0..n1 (prefill panels).
    void (*q4_dequant)(const Q4Rows & w, int64_t n0, int64_t n1, float * out);
    // Float weights w [N][K] of dtype dt (F32/F16/BF16): y[n - n0] = w[n]·x.
    void (*fw_matvec)(DType dt, const void * w, int64_t k, const float * x, int64_t n0, int64_t n1, float * y);
    // dst [n] f32 = src [n] of dtype dt (F32/F16/BF16).
    void (*to_f32)(DType dt, const void * src, int64_t n, float * dst);
    // y[i*ldy + j] = Σ_t x[i*ldx + t] · w[j*k + t] for i < m, j < n (w: f32 panel [n][k]).
    void (*gemm_f32)(const float * x, int64_t ldx, int64_t m, const float * w, int64_t n, int64_t k,
                     float * y, int64_t ldy);
    // out [n] = x [n] / sqrt(mean(x²) + eps) · w [n]
    void (*rmsnorm)(const float * x, const float * w, int64_t n, float eps, float * out);
    // One head v [≥ n_rot] in place, HF rotate_half: pairs (i, i + n_rot/2);
    // cos, sin [n_rot/2] for this position.
    void (*rope)(float * v, int n_rot, const float * cos, const float * sin);
    // One query head over n_kv cached positions: k/v rows at k + j*stride, [hd] each.
    // scores: scratch [n_kv]. out [hd] = softmax(scale · q·kⱼ) · V.
    void (*attn_head)(const float * q, const float * k, const float * v, int64_t stride, int n_kv, int hd,
                      float scale, float * scores, float * out);
    // g [n] = silu(g) · u
    void (*silu_mul)(float * g, const float * u, int64_t n);
    // x [n] += y [n]
    void (*add)(float * x, const float * y, int64_t n);
};

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

} // namespace shoal
