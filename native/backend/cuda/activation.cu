// activation.cu — see activation.cuh. Grid-stride, one element per thread step.
#include "activation.cuh"

namespace shoal {
namespace cuda {
namespace {

template <int KIND> __global__ void act_kernel(__half * __restrict__ x, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const float v = __half2float(x[i]);
        float r;
        if (KIND == 0) r = fmaxf(v, 0.0f);
        else if (KIND == 1) r = 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
        else r = 0.5f * v * (1.0f + tanhf(0.79788456080286536f * (v + 0.044715f * v * v * v)));
        x[i] = __float2half(r);
    }
}

} // namespace

void activation(__half * x, int64_t n, int kind, cudaStream_t stream) {
    SHOAL_CUDA_ASSERT(n >= 0 && (n == 0 || x) && kind >= 0 && kind <= 2, "activation: shape, buffer or kind");
    if (n == 0) return;
    const int threads = 256;
    const unsigned blocks = (unsigned)std::min<int64_t>(ceil_div(n, threads), 65535);
    if (kind == 0) act_kernel<0><<<blocks, threads, 0, stream>>>(x, n);
    else if (kind == 1) act_kernel<1><<<blocks, threads, 0, stream>>>(x, n);
    else act_kernel<2><<<blocks, threads, 0, stream>>>(x, n);
    CUDA_CHECK(cudaGetLastError());
}

} // namespace cuda
} // namespace shoal
