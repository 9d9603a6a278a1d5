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
    // Optional bias [out] (Qwen2 q/k/v), any float dtype.
    bool        has_bias = false;
    TensorView  bias;
};

// AutoAWQ nibble order: nibble i of a packed word holds column 8c + AWQ_ORDER[i].
constexpr int AWQ_ORDER[8] = {0, 2, 4, 6, 1, 3, 5, 7};

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);
float bf16_to_f32(uint16_t h);

} // namespace shoal
