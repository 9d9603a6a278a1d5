// rope.cuh — rotary embedding in place, HF rotate_half layout: in each head the
// pairs (i, i + n_rot/2), i < n_rot/2, rotate by angle (pos0 + m) · inv_freq[i];
// cos/sin are multiplied by attn_factor. q [M][n_heads·hd], k [M][n_kv_heads·hd]
// f16; inv_freq f32 [n_rot/2] in device memory (the table the model computed,
// with any scaling — none/linear/llama3 — already applied).
#pragma once
#include "cuda-common.cuh"

namespace shoal {
namespace cuda {

void rope(__half * q, __half * k, int64_t M, int n_heads, int n_kv_heads, int head_dim, int n_rot, int pos0,
          const float * inv_freq, float attn_factor, cudaStream_t stream);

} // namespace cuda
} // namespace shoal
