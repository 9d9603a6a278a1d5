// fw-matvec.cuh — matrix-vector product with unquantized weights (lm_head,
// unquantized checkpoints) for decode batches (M = 1..8):
// y[M][N] f16 = x[M][K] f16 · Wᵀ (+ bias f32 [N]), W [N][K] in f32/f16/bf16 as in
// the checkpoint, fp32 accumulation.
#pragma once
#include "cuda-common.cuh"

namespace shoal {
namespace cuda {

void fw_matvec(WType wt, const void * w, int64_t N, int64_t K, const __half * x, int M, const float * bias, __half * y,
               cudaStream_t stream);

} // namespace cuda
} // namespace shoal
