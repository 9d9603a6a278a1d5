// gguf-writer.h — writes GGUF v3 files (the llama.cpp model format) for the
// peer benchmark: metadata, tensor descriptors and data, Q4_0 quantization.
// Written by hand from the published format description (ggml docs/gguf.md):
// no library writes GGUF from C++ without pulling in ggml itself.
//
// File layout (all little-endian):
//   "GGUF" u32 version=3 u64 n_tensors u64 n_kv
//   n_kv × { string key, u32 value type, value }      string = u64 length + bytes
//   n_tensors × { string name, u32 n_dims, u64 ne[n_dims], u32 ggml type, u64 offset }
//   zero padding to `alignment` (32), then the tensors' data, each at
//   data_start + offset, offsets multiples of the alignment.
// ne[0] is the contiguous (innermost) dimension: a linear layer [out ← in] is
// ne = {in, out}.
//
// Q4_0: blocks of 32 values, 18 bytes each: f16 d, then 16 bytes where byte j
// holds q[j] in its low nibble and q[j + 16] in its high nibble; x ≈ (q − 8)·d.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace shoal {
namespace gguf {

enum class ValueType : uint32_t {
    U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, BOOL = 7, STRING = 8, ARRAY = 9, U64 = 10, I64 = 11, F64 = 12,
};

enum class TensorType : uint32_t { F32 = 0, F16 = 1, Q4_0 = 2 };

constexpr uint32_t kVersion = 3;
constexpr uint64_t kAlignment = 32;
constexpr int kQ4Block = 32;         // values per Q4_0 block
constexpr int kQ4BlockBytes = 18;    // f16 d + 16 bytes of nibbles

// Bytes of n values of type t (n a multiple of 32 for Q4_0).
uint64_t tensor_bytes(TensorType t, uint64_t n);

// x [n] (n % 32 == 0) → n/32 Q4_0 blocks. Per block, d = m / −8 where m is the
// value of largest magnitude (so m maps to q = 0 exactly), q = clamp(round(x/d) + 8, 0, 15).
void quantize_q4_0(const float * x, int64_t n, uint8_t * out);
// The inverse, for tests: blocks → n values.
void dequantize_q4_0(const uint8_t * in, int64_t n, float * x);

class Writer {
public:
    void add_u32(const std::string & key, uint32_t v);
    void add_i32(const std::string & key, int32_t v);
    void add_f32(const std::string & key, float v);
    void add_bool(const std::string & key, bool v);
    void add_string(const std::string & key, const std::string & v);
    void add_strings(const std::string & key, const std::vector<std::string> & v);
    void add_f32s(const std::string & key, const std::vector<float> & v);
    void add_i32s(const std::string & key, const std::vector<int32_t> & v);

    // A tensor whose data fill() writes into dst [tensor_bytes] when the file is written.
    using Fill = std::function<void(uint8_t * dst, uint64_t bytes)>;
    void add_tensor(const std::string & name, const std::vector<uint64_t> & ne, TensorType type, Fill fill);

    // Writes path atomically (path.tmp, then rename). Throws std::runtime_error on I/O errors.
    void write(const std::string & path) const;
    // Total bytes of tensor data (without padding).
    uint64_t data_bytes() const;

private:
    struct Tensor {
        std::string name;
        std::vector<uint64_t> ne;
        TensorType type;
        Fill fill;
        uint64_t bytes() const;
    };
    std::vector<uint8_t> kv_;   // the encoded metadata pairs
    uint64_t n_kv_ = 0;
    std::vector<Tensor> tensors_;
    void key(const std::string & k, ValueType t);
};

} // namespace gguf
} // namespace shoal
