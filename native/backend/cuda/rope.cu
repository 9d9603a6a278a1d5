// rope.cu — see rope.cuh. One block per token row; threads cover
// (head, i) pairs of q and k. The angle is the f32 product pos·inv_freq, as the
// CPU backend and HF compute it; sincosf is the accurate (non fast-math) one.
#include "rope.cuh"

namespace shoal {
namespace cuda {
namespace {

constexpr int kThreads = 128;

__global__ void __launch_bounds__(kThreads)
rope_kernel(__half * q, __half * k, int n_heads, int n_kv_heads, int hd, int half, int pos0,
            const float * __restrict__ inv_freq, float attn_factor) {
    const int m = blockIdx.x;
    const float pos = (float)(pos0 + m);
    const int total = (n_heads + n_kv_heads) * half;
    for (int t = threadIdx.x; t < total; t += kThreads) {
        const int h = t / half, i = t % half;
        __half * v = h < n_heads ? q + ((int64_t)m * n_heads + h) * hd : k + ((int64_t)m * n_kv_heads + (h - n_heads)) * hd;
        float s, c;
        sincosf(pos * inv_freq[i], &s, &c);
        c *= attn_factor;
        s *= attn_factor;
        const float a = __half2float(v[i]), b = __half2float(v[i + half]);
        v[i] = __float2half(a * c - b * s);
        v[i + half] = __float2half(b * c + a * s);
    }
}

} // namespace

void rope(__half * q, __half * k, int64_t M, int n_heads, int n_kv_heads, int head_dim, int n_rot, int pos0,
          const float * inv_freq, float attn_factor, cudaStream_t stream) {
    SHOAL_CUDA_ASSERT(M > 0 && M < 2147483647 && n_heads > 0 && n_kv_heads >= 0 && n_rot % 2 == 0 && n_rot > 0 &&
                      n_rot <= head_dim && pos0 >= 0 && q && inv_freq && (k || n_kv_heads == 0),
                      "rope: shapes");
    rope_kernel<<<(unsigned)M, kThreads, 0, stream>>>(q, k, n_heads, n_kv_heads, head_dim, n_rot / 2, pos0, inv_freq,
                                                    attn_factor);
    CUDA_CHECK(cudaGetLastError());
}

} // namespace cuda
} // namespace shoal
