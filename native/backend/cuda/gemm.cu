// gemm.cu — see gemm.cuh. Block tile 64 (M) × 64 (N) × 32 (K), 4 warps in a 2×2
// arrangement, each warp 32×32 outputs = 2×2 WMMA accumulators. Per K step the
// block stages x [64][32] and the weight tile W[64 rows][32 inputs] (as f16)
// in shared memory; B = Wᵀ is read column-major straight from W's row-major tile.
// Edges (M, N, K not multiples of the tile) are zero-filled on load and
// masked on store. Weights are re-read once per 64 rows of M.
#include "gemm.cuh"

#include <mma.h>

namespace shoal {
namespace cuda {
namespace {

constexpr int BM = 64, BN = 64, BK = 32, kThreads = 128;
constexpr int LDS = BK + 8; // half elements per smem row (multiple of 8 for WMMA; padding spreads banks)
constexpr int LDC = BN + 4; // float elements per accumulator-staging row

struct Q4Tile {
    Q4Weights w;
    // Dequantizes W[n0 + r][k0 .. k0+32) into ws[r][0..32) (threads 0..63, one row each).
    __device__ __forceinline__ void load(int64_t n0, int64_t k0, __half * ws) const {
        const int r = threadIdx.x;
        if (r >= BN) return;
        const int64_t n = n0 + r;
        __half2 * dst = reinterpret_cast<__half2 *>(ws + r * LDS);
        if (n >= w.n) {
#pragma unroll
            for (int j = 0; j < 16; j++) dst[j] = __float2half2_rn(0.0f);
            return;
        }
        const uint4 q = __ldg(reinterpret_cast<const uint4 *>(w.qs + n * (w.k / 8) + k0 / 8));
        const __half2 s_z = __ldg(w.sz + n * (w.k / w.group) + k0 / w.group);
        const __half2 s2 = __low2half2(s_z), z2 = __high2half2(s_z);
        q4_dequant8(q.x, s2, z2, dst + 0);
        q4_dequant8(q.y, s2, z2, dst + 4);
        q4_dequant8(q.z, s2, z2, dst + 8);
        q4_dequant8(q.w, s2, z2, dst + 12);
    }
};

template <WType T> struct FloatTile {
    const void * w;
    int64_t n, k;
    __device__ __forceinline__ void load(int64_t n0, int64_t k0, __half * ws) const {
#pragma unroll 4
        for (int i = threadIdx.x; i < BN * BK; i += kThreads) {
            const int r = i / BK, c = i % BK;
            const int64_t gn = n0 + r, gk = k0 + c;
            const float v = gn < n && gk < k ? load_w<T>(w, gn * k + gk) : 0.0f;
            ws[r * LDS + c] = __float2half(v);
        }
    }
};

template <class Tile>
__global__ void __launch_bounds__(kThreads)
gemm_kernel(Tile tile, int64_t N, int64_t K, const __half * __restrict__ x, int64_t M, const float * __restrict__ bias,
            __half * __restrict__ y) {
    using namespace nvcuda;
    __shared__ __align__(32) __half xs[BM * LDS];
    __shared__ __align__(32) __half ws[BN * LDS];
    __shared__ __align__(32) float cs[BM * LDC];

    const int64_t n0 = (int64_t)blockIdx.x * BN, m0 = (int64_t)blockIdx.y * BM;
    const int warp = threadIdx.x >> 5, wm = warp >> 1, wn = warp & 1;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][2];
#pragma unroll
    for (int i = 0; i < 2; i++)
#pragma unroll
        for (int j = 0; j < 2; j++) wmma::fill_fragment(acc[i][j], 0.0f);

    const bool x_vec = K % 8 == 0;
    for (int64_t k0 = 0; k0 < K; k0 += BK) {
        // x tile [64][32]: 256 chunks of 8 halves, 2 per thread
        for (int i = threadIdx.x; i < BM * BK / 8; i += kThreads) {
            const int r = i / (BK / 8), c = (i % (BK / 8)) * 8;
            const int64_t gm = m0 + r, gk = k0 + c;
            uint4 v = make_uint4(0, 0, 0, 0);
            if (gm < M) {
                if (x_vec && gk + 8 <= K) {
                    v = __ldg(reinterpret_cast<const uint4 *>(x + gm * K + gk));
                } else {
                    uint32_t h[4];
#pragma unroll
                    for (int j = 0; j < 4; j++) {
                        const unsigned short lo = gk + 2 * j < K ? __half_as_ushort(x[gm * K + gk + 2 * j]) : 0;
                        const unsigned short hi = gk + 2 * j + 1 < K ? __half_as_ushort(x[gm * K + gk + 2 * j + 1]) : 0;
                        h[j] = (uint32_t)lo | ((uint32_t)hi << 16);
                    }
                    v = make_uint4(h[0], h[1], h[2], h[3]);
                }
            }
            *reinterpret_cast<uint4 *>(xs + r * LDS + c) = v;
        }
        tile.load(n0, k0, ws);
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < BK; kk += 16) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> a[2];
            wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::col_major> b[2];
#pragma unroll
            for (int i = 0; i < 2; i++) wmma::load_matrix_sync(a[i], xs + (wm * 32 + i * 16) * LDS + kk, LDS);
#pragma unroll
            for (int j = 0; j < 2; j++) wmma::load_matrix_sync(b[j], ws + (wn * 32 + j * 16) * LDS + kk, LDS);
#pragma unroll
            for (int i = 0; i < 2; i++)
#pragma unroll
                for (int j = 0; j < 2; j++) wmma::mma_sync(acc[i][j], a[i], b[j], acc[i][j]);
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 2; i++)
#pragma unroll
        for (int j = 0; j < 2; j++)
            wmma::store_matrix_sync(cs + (wm * 32 + i * 16) * LDC + wn * 32 + j * 16, acc[i][j], LDC, wmma::mem_row_major);
    __syncthreads();
    for (int i = threadIdx.x; i < BM * BN; i += kThreads) {
        const int r = i / BN, c = i % BN;
        const int64_t gm = m0 + r, gn = n0 + c;
        if (gm < M && gn < N) y[gm * N + gn] = __float2half(cs[r * LDC + c] + (bias ? bias[gn] : 0.0f));
    }
}

template <class Tile> void launch(const Tile & t, int64_t N, int64_t K, const __half * x, int64_t M, const float * bias,
                                  __half * y, cudaStream_t stream) {
    SHOAL_CUDA_ASSERT(M > 0 && N > 0 && K > 0 && M < (int64_t)65535 * BM && x && y, "gemm: empty shape or null buffer");
    const dim3 grid(ceil_div(N, BN), ceil_div(M, BM));
    gemm_kernel<Tile><<<grid, kThreads, 0, stream>>>(t, N, K, x, M, bias, y);
    CUDA_CHECK(cudaGetLastError());
}

} // namespace

void q4_gemm(const Q4Weights & w, const __half * x, int64_t M, const float * bias, __half * y, cudaStream_t stream) {
    SHOAL_CUDA_ASSERT(w.k % 32 == 0 && w.group % 32 == 0 && w.k % w.group == 0 && w.qs && w.sz,
                      "q4_gemm: K % 32, G % 32, K % G must be 0");
    launch(Q4Tile{w}, w.n, w.k, x, M, bias, y, stream);
}

void fw_gemm(WType wt, const void * w, int64_t N, int64_t K, const __half * x, int64_t M, const float * bias, __half * y,
             cudaStream_t stream) {
    SHOAL_CUDA_ASSERT(w != nullptr, "fw_gemm: null weights");
    switch (wt) {
        case WType::F32: launch(FloatTile<WType::F32>{w, N, K}, N, K, x, M, bias, y, stream); break;
        case WType::F16: launch(FloatTile<WType::F16>{w, N, K}, N, K, x, M, bias, y, stream); break;
        case WType::BF16: launch(FloatTile<WType::BF16>{w, N, K}, N, K, x, M, bias, y, stream); break;
    }
}

} // namespace cuda
} // namespace shoal
