// q4-repack.cuh — AutoAWQ `gemm` tensors (already on the device) → the layout of
// q4-layout.cuh, on the GPU, so the host never holds a second copy of a weight.
#pragma once
#include "q4-layout.cuh"

#include <cuda_runtime.h>
#include <cstdint>

namespace shoal {
namespace cuda {

// qweight i32 [K][N/8] (pack factor 8 along N, AutoAWQ nibble order),
// qzeros i32 [K/G][N/8] (same packing), scales f16 [K/G][N]
//   → qs u32 [N][K/8], sz half2 [N][K/G] (q4-layout.cuh).
void q4_repack_awq(const int32_t * qweight, const int32_t * qzeros, const __half * scales, int64_t K, int64_t N, int G,
                   uint32_t * qs, __half2 * sz, cudaStream_t stream);

} // namespace cuda
} // namespace shoal
