// attention.cuh — causal multi-head attention over the fp16 KV cache, for
// prefill and decode alike (flash-attention style: tiles of keys/values staged
// in shared memory, online softmax in fp32, no score matrix in device memory).
//   q   f16 [M][H·hd]               query rows; row m is at position pos0 + m
//   kc  f16 [n_ctx][Hkv·hd]          this layer's keys   (rows 0 .. pos0+M-1 valid)
//   vc  f16 [n_ctx][Hkv·hd]          this layer's values
//   out f16 [M][H·hd]
// Row m, head h attends to positions 0 .. pos0+m of kv head h / (H/Hkv); with window W > 0
// to max(0, pos0+m−W+1) .. pos0+m. slots > 0: a ring cache of that many rows (≥ W + M − 1),
// position p at row p % slots.
// Requirements: hd even and ≤ 256, H % Hkv == 0.
// Decode (M ≤ 8) splits the key range over several blocks when the grid would
// not fill the GPU (flash-decoding); partials go to `part` and are merged.
#pragma once
#include "cuda-common.cuh"

namespace shoal {
namespace cuda {

constexpr int kAttnMaxSplit = 32;
constexpr int kAttnSplitMaxRows = 8;

// Floats of scratch the split-key path needs for M rows (0 when M > kAttnSplitMaxRows).
inline size_t attention_scratch_floats(int64_t M, int n_heads, int head_dim) {
    return M > kAttnSplitMaxRows ? 0 : (size_t)kAttnMaxSplit * M * n_heads * (head_dim + 2);
}

// target_blocks: blocks that fill the GPU (e.g. 2 × multiprocessors); part: scratch of
// attention_scratch_floats(M, H, hd) floats, or null to never split.
void attention(const __half * q, const __half * kc, const __half * vc, int64_t M, int pos0, int n_heads, int n_kv_heads,
               int head_dim, float scale, __half * out, float * part, int target_blocks, cudaStream_t stream, int window = 0,
               int slots = 0);

} // namespace cuda
} // namespace shoal
