// embed.cuh — token embedding lookup: out[m][:] f16 = table[tokens[m]][:] for m < n,
// table [vocab][dim] on the device in its checkpoint dtype (f32/f16/bf16).
// Token ids travel as a kernel argument (no host→device copy, no sync), in
// launches of up to kEmbedMaxTokens rows; the caller has range-checked them.
#pragma once
#include "cuda-common.cuh"

namespace shoal {
namespace cuda {

constexpr int kEmbedMaxTokens = 256;

void embed(WType wt, const void * table, int64_t vocab, int64_t dim, const int32_t * host_tokens, int64_t n, __half * out,
           cudaStream_t stream);

} // namespace cuda
} // namespace shoal
