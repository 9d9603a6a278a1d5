// q4-matvec.cu — see q4-matvec.cuh.
// Mapping: one warp per output row n, 4 warps (4 rows) per block. Lane l reads
// 16 bytes (32 inputs) of the row at 32·(l + 32·i): a warp-wide 512-byte,
// fully coalesced load; the 4 words are dequantized with q4_dequant8 and
// multiplied with the matching 32 activations of each of the M rows (x is read
// through the read-only cache; every warp of the GPU reads the same x, so it
// stays in L1/L2). Weight bytes are read exactly once per call for any M ≤ 8.
#include "cuda-common.cuh"
#include "q4-matvec.cuh"

namespace shoal {
namespace cuda {
namespace {

constexpr int kWarps = 4;

__global__ void __launch_bounds__(kWarps * 32)
q4_matvec_kernel(const uint32_t * __restrict__ qs, const __half2 * __restrict__ sz, int64_t N, int64_t K, int G,
                 const __half * __restrict__ x, int M, const float * __restrict__ bias, __half * __restrict__ y) {
    const int lane = threadIdx.x & 31;
    const int64_t n = (int64_t)blockIdx.x * kWarps + (threadIdx.x >> 5);
    if (n >= N) return;
    const int64_t chunks = K / 32; // 16-byte chunks of the row
    const uint4 * row = reinterpret_cast<const uint4 *>(qs + n * (K / 8));
    const __half2 * rsz = sz + n * (K / G);
    const int chunks_per_group = G / 32;

    float acc[kMatvecMaxRows];
#pragma unroll
    for (int m = 0; m < kMatvecMaxRows; m++) acc[m] = 0.0f;

#pragma unroll 2
    for (int64_t c = lane; c < chunks; c += 32) {
        const uint4 q = __ldg(row + c);
        const __half2 s_z = __ldg(rsz + c / chunks_per_group);
        const __half2 s2 = __low2half2(s_z), z2 = __high2half2(s_z);
        __half2 w[4][4];
        q4_dequant8(q.x, s2, z2, w[0]);
        q4_dequant8(q.y, s2, z2, w[1]);
        q4_dequant8(q.z, s2, z2, w[2]);
        q4_dequant8(q.w, s2, z2, w[3]);
#pragma unroll
        for (int m = 0; m < kMatvecMaxRows; m++) {
            if (m < M) {
                const uint4 * xr = reinterpret_cast<const uint4 *>(x + (int64_t)m * K) + 4 * c;
                float part = 0.0f;
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    const uint4 xv = __ldg(xr + i);
                    const __half2 * xh = reinterpret_cast<const __half2 *>(&xv);
                    __half2 h = __hmul2(w[i][0], xh[0]);
                    h = __hfma2(w[i][1], xh[1], h);
                    h = __hfma2(w[i][2], xh[2], h);
                    h = __hfma2(w[i][3], xh[3], h);
                    const float2 f = __half22float2(h);
                    part += f.x + f.y;
                }
                acc[m] += part;
            }
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

void q4_matvec(const Q4Weights & w, const __half * x, int M, const float * bias, __half * y, cudaStream_t stream) {
    SHOAL_CUDA_ASSERT(M >= 1 && M <= kMatvecMaxRows, "q4_matvec: M must be 1..8, got " + std::to_string(M));
    SHOAL_CUDA_ASSERT(w.k % 32 == 0 && w.group % 32 == 0 && w.k % w.group == 0 && w.n > 0,
                      "q4_matvec: K % 32, G % 32, K % G must be 0");
    SHOAL_CUDA_ASSERT(x && y && w.qs && w.sz, "q4_matvec: null buffer");
    q4_matvec_kernel<<<ceil_div(w.n, kWarps), kWarps * 32, 0, stream>>>(w.qs, w.sz, w.n, w.k, w.group, x, M, bias, y);
    CUDA_CHECK(cudaGetLastError());
}

} // namespace cuda
} // namespace shoal
