// layernorm.cuh — out[r] f16 = (x[r] − mean) / sqrt(var + eps) · w + b per row of
// x [rows][cols] f16; w, b f32 [cols]. Statistics in f32; out may alias x.
#pragma once
#include "cuda-common.cuh"

namespace shoal {
namespace cuda {

void layernorm(const __half * x, const float * w, const float * b, int64_t rows, int64_t cols, float eps, __half * out,
               cudaStream_t stream);

} // namespace cuda
} // namespace shoal
