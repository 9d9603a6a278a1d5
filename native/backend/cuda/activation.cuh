// activation.cuh — x [n] f16 in place: ReLU, GELU (erf) or GELU (tanh approximation),
// computed in f32. kind: 0 relu, 1 gelu erf, 2 gelu tanh.
#pragma once
#include "cuda-common.cuh"

namespace shoal {
namespace cuda {

void activation(__half * x, int64_t n, int kind, cudaStream_t stream);

} // namespace cuda
} // namespace shoal
