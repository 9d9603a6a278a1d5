// gemm.cuh — matrix-matrix product for prefill (M > 8 rows):
// y[M][N] f16 = x[M][K] f16 · Wᵀ (+ bias f32 [N]) on the tensor cores (WMMA
// 16×16×16, f16 inputs, f32 accumulation). W is either INT4 (q4-layout.cuh;
// tiles dequantized to f16 in shared memory) or unquantized f32/f16/bf16 [N][K]
// (converted to f16 in shared memory; f32/bf16 lose mantissa bits there, like
// the f16 activations they multiply).
#pragma once
#include "cuda-common.cuh"
#include "q4-layout.cuh"

namespace shoal {
namespace cuda {

void q4_gemm(const Q4Weights & w, const __half * x, int64_t M, const float * bias, __half * y, cudaStream_t stream);
void fw_gemm(WType wt, const void * w, int64_t N, int64_t K, const __half * x, int64_t M, const float * bias, __half * y,
             cudaStream_t stream);

} // namespace cuda
} // namespace shoal
