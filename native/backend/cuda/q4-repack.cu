// q4-repack.cu — see q4-repack.cuh. A one-time pass per tensor at load.
#include "cuda-common.cuh"
#include "q4-repack.cuh"

namespace shoal {
namespace cuda {
namespace {

// Column 8c + j of an AutoAWQ word sits in nibble kAwqInv[j] (inverse of AWQ_ORDER {0,2,4,6,1,3,5,7}).
__constant__ int kAwqInv[8] = {0, 4, 1, 5, 2, 6, 3, 7};

// One thread per output word (n, w): inputs 8w..8w+7 of row n.
__global__ void repack_qs_kernel(const int32_t * __restrict__ qweight, int64_t K, int64_t N,
                                 uint32_t * __restrict__ qs) {
    const int64_t words = K / 8;
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N * words) return;
    const int64_t n = i / words, w = i % words;
    const int shift = 4 * kAwqInv[n % 8];
    uint32_t out = 0;
#pragma unroll
    for (int e = 0; e < 8; e++) {
        const uint32_t word = (uint32_t)__ldg(qweight + (8 * w + e) * (N / 8) + n / 8);
        const uint32_t q = (word >> shift) & 15u;
        out |= q << ((e & 1) * 16 + (e >> 1) * 4);
    }
    qs[i] = out;
}

// One thread per (n, g): sz = (s, 1024 + z).
__global__ void repack_sz_kernel(const int32_t * __restrict__ qzeros, const __half * __restrict__ scales, int64_t N,
                                 int64_t n_groups, __half2 * __restrict__ sz) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N * n_groups) return;
    const int64_t n = i / n_groups, g = i % n_groups;
    const uint32_t word = (uint32_t)qzeros[g * (N / 8) + n / 8];
    const int z = (int)((word >> (4 * kAwqInv[n % 8])) & 15u);
    sz[i] = __halves2half2(scales[g * N + n], __float2half(1024.0f + (float)z));
}

} // namespace

void q4_repack_awq(const int32_t * qweight, const int32_t * qzeros, const __half * scales, int64_t K, int64_t N, int G,
                   uint32_t * qs, __half2 * sz, cudaStream_t stream) {
    SHOAL_CUDA_ASSERT(K > 0 && N > 0 && G > 0 && K % 32 == 0 && G % 32 == 0 && K % G == 0 && N % 8 == 0,
                      "q4_repack_awq: need K % 32 == 0, G % 32 == 0, K % G == 0, N % 8 == 0 (K=" + std::to_string(K) +
                          " N=" + std::to_string(N) + " G=" + std::to_string(G) + ")");
    const int threads = 256;
    repack_qs_kernel<<<ceil_div(N * (K / 8), threads), threads, 0, stream>>>(qweight, K, N, qs);
    CUDA_CHECK(cudaGetLastError());
    repack_sz_kernel<<<ceil_div(N * (K / G), threads), threads, 0, stream>>>(qzeros, scales, N, K / G, sz);
    CUDA_CHECK(cudaGetLastError());
}

} // namespace cuda
} // namespace shoal
