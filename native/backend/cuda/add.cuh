// add.cuh — residual add: x[i] += y[i] over n f16 elements (f32 math).
#pragma once
#include "cuda-common.cuh"

namespace shoal {
namespace cuda {

void add(__half * x, const __half * y, int64_t n, cudaStream_t stream);

} // namespace cuda
} // namespace shoal
