// convert.cuh — activation dtype conversions for the host boundary:
// f16 → f32 (to_host: logits and rows leave the device as f32) and
// f32 → f16 (from_host), n elements.
#pragma once
#include "cuda-common.cuh"

namespace shoal {
namespace cuda {

void f16_to_f32(const __half * src, int64_t n, float * dst, cudaStream_t stream);
void f32_to_f16(const float * src, int64_t n, __half * dst, cudaStream_t stream);

} // namespace cuda
} // namespace shoal
