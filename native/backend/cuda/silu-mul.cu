// silu-mul.cu — see silu-mul.cuh. Grid-stride, one element per thread step.
#include "silu-mul.cuh"

namespace shoal {
namespace cuda {
namespace {

__global__ void silu_mul_kernel(__half * __restrict__ g, const __half * __restrict__ u, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const float a = __half2float(g[i]);
        g[i] = __float2half(a / (1.0f + expf(-a)) * __half2float(u[i]));
    }
}

} // namespace

void silu_mul(__half * gate, const __half * up, int64_t n, cudaStream_t stream) {
    SHOAL_CUDA_ASSERT(n >= 0 && (n == 0 || (gate && up)), "silu_mul: shape or null buffer");
    if (n == 0) return;
    const int threads = 256;
    const unsigned blocks = (unsigned)std::min<int64_t>(ceil_div(n, threads), 65535);
    silu_mul_kernel<<<blocks, threads, 0, stream>>>(gate, up, n);
    CUDA_CHECK(cudaGetLastError());
}

} // namespace cuda
} // namespace shoal
