// q4-matvec.cuh — W4A16 matrix-vector product for decode batches (M = 1..8):
// y[M][N] f16 = x[M][K] f16 · Wᵀ (+ bias f32 [N]), W INT4 in the q4-layout.cuh layout,
// fp32 accumulation across K (fp16 products summed 4-wide per 8-weight word).
#pragma once
#include "q4-layout.cuh"

#include <cuda_runtime.h>

namespace shoal {
namespace cuda {

constexpr int kMatvecMaxRows = 8;

void q4_matvec(const Q4Weights & w, const __half * x, int M, const float * bias, __half * y, cudaStream_t stream);

} // namespace cuda
} // namespace shoal
