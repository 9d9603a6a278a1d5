// rmsnorm.cu — see rmsnorm.cuh. One block of 256 threads per row.
#include "rmsnorm.cuh"

namespace shoal {
namespace cuda {
namespace {

constexpr int kThreads = 256;

__global__ void __launch_bounds__(kThreads)
rmsnorm_kernel(const __half * x, const float * __restrict__ w, int64_t cols, float eps, __half * out) {
    __shared__ float part[kThreads / 32];
    const __half * xr = x + (int64_t)blockIdx.x * cols;
    __half * orow = out + (int64_t)blockIdx.x * cols;
    float ss = 0.0f;
    for (int64_t i = threadIdx.x; i < cols; i += kThreads) {
        const float v = __half2float(xr[i]);
        ss = fmaf(v, v, ss);
    }
    ss = warp_sum(ss);
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = ss;
    __syncthreads();
    float tot = 0.0f;
#pragma unroll
    for (int i = 0; i < kThreads / 32; i++) tot += part[i];
    const float r = 1.0f / sqrtf(tot / (float)cols + eps);
    for (int64_t i = threadIdx.x; i < cols; i += kThreads) orow[i] = __float2half(__half2float(xr[i]) * r * w[i]);
}

} // namespace

void rmsnorm(const __half * x, const float * w, int64_t rows, int64_t cols, float eps, __half * out, cudaStream_t stream) {
    SHOAL_CUDA_ASSERT(rows > 0 && rows < 2147483647 && cols > 0 && x && w && out, "rmsnorm: shape or null buffer");
    rmsnorm_kernel<<<(unsigned)rows, kThreads, 0, stream>>>(x, w, cols, eps, out);
    CUDA_CHECK(cudaGetLastError());
}

} // namespace cuda
} // namespace shoal
