// convert.cu — see convert.cuh. Grid-stride element-wise kernels.
#include "convert.cuh"

namespace shoal {
namespace cuda {
namespace {

__global__ void f16_to_f32_kernel(const __half * __restrict__ s, int64_t n, float * __restrict__ d) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        d[i] = __half2float(s[i]);
}
__global__ void f32_to_f16_kernel(const float * __restrict__ s, int64_t n, __half * __restrict__ d) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        d[i] = __float2half(s[i]);
}
unsigned blocks_for(int64_t n) { return (unsigned)std::max<int64_t>(1, std::min<int64_t>(ceil_div(n, 256), 65535)); }

} // namespace

void f16_to_f32(const __half * src, int64_t n, float * dst, cudaStream_t stream) {
    SHOAL_CUDA_ASSERT(n >= 0 && (n == 0 || (src && dst)), "f16_to_f32: shape");
    if (n == 0) return;
    f16_to_f32_kernel<<<blocks_for(n), 256, 0, stream>>>(src, n, dst);
    CUDA_CHECK(cudaGetLastError());
}

void f32_to_f16(const float * src, int64_t n, __half * dst, cudaStream_t stream) {
    SHOAL_CUDA_ASSERT(n >= 0 && (n == 0 || (src && dst)), "f32_to_f16: shape");
    if (n == 0) return;
    f32_to_f16_kernel<<<blocks_for(n), 256, 0, stream>>>(src, n, dst);
    CUDA_CHECK(cudaGetLastError());
}

} // namespace cuda
} // namespace shoal
