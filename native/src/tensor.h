// tensor.h — views of weights as the loader finds them in the checkpoint.
// The loader validates sizes and offsets; a view always points at bytes that
// lie inside a mapped file and match its shape and dtype.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace shoal {

enum class DType { F32, F16, BF16, I32, I16, I8, U8, F64, I64 };

const char * dtype_name(DType t);
size_t dtype_size(DType t);

// A dense tensor inside a mapped safetensors file (row-major, shape[0] slowest).
struct TensorView {
    std::string name;
    DType       dtype = DType::F32;
    int         n_dims = 0;
    int64_t     shape[4] = {0, 0, 0, 0};
    const void * data = nullptr;
    size_t      nbytes = 0;
    int64_t numel() const {
        int64_t n = 1;
        for (int i = 0; i < n_dims; i++) n *= shape[i];
        return n;
    }
};

// How a quantized linear is stored on disk (docs/lowbit.md has every layout).
enum class QFormat {
    None,
    AwqGemm,      // AutoAWQ gemm: qweight i32 [K, N/8] (AWQ_ORDER), qzeros i32 [K/G, N/8], scales [K/G, N]
    AwqGemv,      // AutoAWQ gemv: qweight i32 [N, K/8] along K, qzeros i32 [N, W], scales [N, 8W]
    AwqGemvFast,  // AutoAWQ gemv_fast / llm-awq v2: qweight i16 [N/4, K] interleaved, scales and
                  // scaled_zeros (−s·z) f16 [8W, N]
    Gptq,         // GPTQ: qweight i32 [ceil(K·b/32), N] flat LSB-first bitstream along K (3-bit
                  // values straddle words), qzeros i32 [ceil(K/G), ceil(N·b/32)] along N,
                  // scales [ceil(K/G), N], optional g_idx i32 [K]
    EqatNative,   // EfficientQAT native: like Gptq but 32/b values per word (3-bit: 10, 2 bits
                  // unused): qweight [ceil(K/(32/b)), N], qzeros [ceil(K/G), ceil(N/(32/b))]
    CtPacked,     // compressed-tensors pack-quantized: weight_packed i32 [N, ceil(K/(32/b))] along K,
                  // value k at bits b·(k mod 32/b) of word k/(32/b), stored q + 2^(b−1); weight_scale
                  // [N, K/G] (channel: [N, 1]); weight_zero_point i32 [ceil(N/(32/b)), K/G] packed the
                  // same way along N (asymmetric only); optional weight_g_idx i32 [K]
};

// A linear layer y = x·Wᵀ (+ b), W: [out, in], as stored in the checkpoint.
struct LinearSource {
    std::string name;        // e.g. "model.layers.0.self_attn.q_proj"
    int64_t     in = 0;      // K, in_features
    int64_t     out = 0;     // N, out_features
    // Unquantized: weight [out, in] in F32/F16/BF16.
    TensorView  weight;
    // AutoAWQ gemm INT4 (when awq == true):
    //   qweight i32 [in, out/8]   8 nibbles per word along out; nibble i = column 8c + AWQ_ORDER[i]
    //   qzeros  i32 [in/G, out/8] packed the same way
    //   scales  f16 [in/G, out]
    //   w[k, n] = (q − z) · s
    bool        awq = false;
    int         group_size = 0;
    TensorView  qweight, qzeros, scales;
    // Every quantized format (awq above is qfmt == AwqGemm): bits b in {2,3,4,8}; group_size
    // is the effective G (GPTQ -1 resolved to in); w[k, n] = (q − z)·s of group g_idx[k]
    // (k / G without g_idx); gemv_fast stores −s·z in qzeros (f16) instead of z.
    QFormat     qfmt = QFormat::None;
    int         bits = 0;
    int         zero_offset = 0; // GPTQ checkpoint_format "gptq" (v1) stores z − 1: z = stored + 1
    bool        has_g_idx = false;
    TensorView  g_idx;           // i32 [in], validated: every entry in [0, ceil(in/G))
    // CtPacked: group_size is the scales' group (in for strategy channel); symmetric schemes
    // have no zero tensor (z = 2^(b−1) in stored units), asymmetric ones keep it in qzeros.
    bool        ct_symmetric = false;
    // compressed-tensors before 0.10 (PR #296, Apr 2025) saved asymmetric zero points
    // unpacked: I8 [out, in/G], signed. Otherwise qzeros is the packed I32 tensor.
    bool        ct_zp_unpacked = false;
    // Optional bias [out] (Qwen2 q/k/v), any float dtype.
    bool        has_bias = false;
    TensorView  bias;
    // The bytes belong to the caller (e.g. a JavaScript array of the quantizer) and
    // stay valid only while the Linear lives; they may be reused at the same address
    // for other weights: the backend must not cache by address nor release pages.
    bool        transient = false;
};

// AutoAWQ nibble order: nibble i of a packed word holds column 8c + AWQ_ORDER[i].
constexpr int AWQ_ORDER[8] = {0, 2, 4, 6, 1, 3, 5, 7};

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);
float bf16_to_f32(uint16_t h);

} // namespace shoal
