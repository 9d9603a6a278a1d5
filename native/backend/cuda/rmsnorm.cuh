// rmsnorm.cuh — out[m][:] f16 = x[m][:] / sqrt(mean(x[m]²) + eps) · w, w f32 [cols];
// rows × cols f16, fp32 statistics. out may alias x.
#pragma once
#include "cuda-common.cuh"

namespace shoal {
namespace cuda {

void rmsnorm(const __half * x, const float * w, int64_t rows, int64_t cols, float eps, __half * out, cudaStream_t stream);

} // namespace cuda
} // namespace shoal
