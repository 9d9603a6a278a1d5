// add.cu — see add.cuh. Grid-stride, one element per thread step.
#include "add.cuh"

namespace shoal {
namespace cuda {
namespace {

__global__ void add_kernel(__half * __restrict__ x, const __half * __restrict__ y, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        x[i] = __float2half(__half2float(x[i]) + __half2float(y[i]));
}

} // namespace

void add(__half * x, const __half * y, int64_t n, cudaStream_t stream) {
    SHOAL_CUDA_ASSERT(n >= 0 && (n == 0 || (x && y)), "add: shape or null buffer");
    if (n == 0) return;
    const int threads = 256;
    const unsigned blocks = (unsigned)std::min<int64_t>(ceil_div(n, threads), 65535);
    add_kernel<<<blocks, threads, 0, stream>>>(x, y, n);
    CUDA_CHECK(cudaGetLastError());
}

} // namespace cuda
} // namespace shoal
