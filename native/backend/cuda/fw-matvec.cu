// fw-matvec.cu — see fw-matvec.cuh. One warp per output row, 4 rows per block.
// When K % 8 == 0 each lane reads 8 consecutive weights per step (one 16-byte
// load for f16/bf16, two for f32: coalesced) and the 8 matching activations of
// each row as one 16-byte load; otherwise a scalar lane-strided loop.
#include "fw-matvec.cuh"
#include "q4-matvec.cuh" // kMatvecMaxRows

namespace shoal {
namespace cuda {
namespace {

constexpr int kWarps = 4;

template <WType T> __device__ __forceinline__ void load8(const void * w, int64_t i, float out[8]) {
    if (T == WType::F32) {
        const float4 a = __ldg(reinterpret_cast<const float4 *>(static_cast<const float *>(w) + i));
        const float4 b = __ldg(reinterpret_cast<const float4 *>(static_cast<const float *>(w) + i) + 1);
        out[0] = a.x; out[1] = a.y; out[2] = a.z; out[3] = a.w;
        out[4] = b.x; out[5] = b.y; out[6] = b.z; out[7] = b.w;
    } else {
        const uint4 v = __ldg(reinterpret_cast<const uint4 *>(static_cast<const uint16_t *>(w) + i));
        const uint32_t u[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int j = 0; j < 4; j++) {
            if (T == WType::F16) {
                const float2 f = __half22float2(*reinterpret_cast<const __half2 *>(&u[j]));
                out[2 * j] = f.x;
                out[2 * j + 1] = f.y;
            } else {
                out[2 * j] = __uint_as_float(u[j] << 16);
                out[2 * j + 1] = __uint_as_float(u[j] & 0xffff0000u);
            }
        }
    }
}

template <WType T>
__global__ void __launch_bounds__(kWarps * 32)
fw_matvec_kernel(const void * __restrict__ w, int64_t N, int64_t K, const __half * __restrict__ x, int M,
                 const float * __restrict__ bias, __half * __restrict__ y) {
    const int lane = threadIdx.x & 31;
    const int64_t n = (int64_t)blockIdx.x * kWarps + (threadIdx.x >> 5);
    if (n >= N) return;
    float acc[kMatvecMaxRows];
#pragma unroll
    for (int m = 0; m < kMatvecMaxRows; m++) acc[m] = 0.0f;
    if (K % 8 == 0) {
#pragma unroll 2
        for (int64_t k = 8 * lane; k < K; k += 256) {
            float wv[8];
            load8<T>(w, n * K + k, wv);
#pragma unroll
            for (int m = 0; m < kMatvecMaxRows; m++) {
                if (m < M) {
                    const uint4 xv = __ldg(reinterpret_cast<const uint4 *>(x + (int64_t)m * K + k));
                    const __half2 * xh = reinterpret_cast<const __half2 *>(&xv);
#pragma unroll
                    for (int j = 0; j < 4; j++) {
                        const float2 f = __half22float2(xh[j]);
                        acc[m] = fmaf(wv[2 * j], f.x, acc[m]);
                        acc[m] = fmaf(wv[2 * j + 1], f.y, acc[m]);
                    }
                }
            }
        }
    } else {
        for (int64_t k = lane; k < K; k += 32) {
            const float wv = load_w<T>(w, n * K + k);
#pragma unroll
            for (int m = 0; m < kMatvecMaxRows; m++)
                if (m < M) acc[m] = fmaf(wv, __half2float(x[(int64_t)m * K + k]), acc[m]);
        }
    }
#pragma unroll
    for (int m = 0; m < kMatvecMaxRows; m++) {
        if (m < M) {
            const float v = warp_sum(acc[m]);
            if (lane == 0) y[(int64_t)m * N + n] = __float2half(v + (bias ? bias[n] : 0.0f));
        }
    }
}

} // namespace

void fw_matvec(WType wt, const void * w, int64_t N, int64_t K, const __half * x, int M, const float * bias, __half * y,
               cudaStream_t stream) {
    SHOAL_CUDA_ASSERT(M >= 1 && M <= kMatvecMaxRows, "fw_matvec: M must be 1..8, got " + std::to_string(M));
    SHOAL_CUDA_ASSERT(N > 0 && K > 0 && w && x && y, "fw_matvec: empty shape or null buffer");
    const dim3 grid(ceil_div(N, kWarps)), block(kWarps * 32);
    switch (wt) {
        case WType::F32: fw_matvec_kernel<WType::F32><<<grid, block, 0, stream>>>(w, N, K, x, M, bias, y); break;
        case WType::F16: fw_matvec_kernel<WType::F16><<<grid, block, 0, stream>>>(w, N, K, x, M, bias, y); break;
        case WType::BF16: fw_matvec_kernel<WType::BF16><<<grid, block, 0, stream>>>(w, N, K, x, M, bias, y); break;
    }
    CUDA_CHECK(cudaGetLastError());
}

} // namespace cuda
} // namespace shoal
