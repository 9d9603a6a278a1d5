// layernorm.cu — see layernorm.cuh. One block of 256 threads per row; mean
// first, then the variance around it (two passes over the row, as the CPU
// reference does).
#include "layernorm.cuh"

namespace shoal {
namespace cuda {
namespace {

constexpr int kThreads = 256;

__device__ float block_sum(float v, float * part) {
    v = warp_sum(v);
    __syncthreads(); // part is reused between calls
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = v;
    __syncthreads();
    float tot = 0.0f;
#pragma unroll
    for (int i = 0; i < kThreads / 32; i++) tot += part[i];
    return tot;
}

__global__ void __launch_bounds__(kThreads)
layernorm_kernel(const __half * x, const float * __restrict__ w, const float * __restrict__ b, int64_t cols, float eps, __half * out) {
    __shared__ float part[kThreads / 32];
    const __half * xr = x + (int64_t)blockIdx.x * cols;
    __half * orow = out + (int64_t)blockIdx.x * cols;
    float s = 0.0f;
    for (int64_t i = threadIdx.x; i < cols; i += kThreads) s += __half2float(xr[i]);
    const float mean = block_sum(s, part) / (float)cols;
    float q = 0.0f;
    for (int64_t i = threadIdx.x; i < cols; i += kThreads) {
        const float d = __half2float(xr[i]) - mean;
        q = fmaf(d, d, q);
    }
    const float r = 1.0f / sqrtf(block_sum(q, part) / (float)cols + eps);
    for (int64_t i = threadIdx.x; i < cols; i += kThreads) orow[i] = __float2half((__half2float(xr[i]) - mean) * r * w[i] + b[i]);
}

} // namespace

void layernorm(const __half * x, const float * w, const float * b, int64_t rows, int64_t cols, float eps, __half * out,
               cudaStream_t stream) {
    SHOAL_CUDA_ASSERT(rows > 0 && rows < 2147483647 && cols > 0 && x && w && b && out, "layernorm: shape or null buffer");
    layernorm_kernel<<<(unsigned)rows, kThreads, 0, stream>>>(x, w, b, cols, eps, out);
    CUDA_CHECK(cudaGetLastError());
}

} // namespace cuda
} // namespace shoal
