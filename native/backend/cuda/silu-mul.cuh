// silu-mul.cuh — SwiGLU: gate[i] = silu(gate[i]) · up[i] over n f16 elements (f32 math).
#pragma once
#include "cuda-common.cuh"

namespace shoal {
namespace cuda {

void silu_mul(__half * gate, const __half * up, int64_t n, cudaStream_t stream);

} // namespace cuda
} // namespace shoal
