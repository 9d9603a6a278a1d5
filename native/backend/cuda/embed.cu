// embed.cu — see embed.cuh. One block per token row.
#include "embed.cuh"

namespace shoal {
namespace cuda {
namespace {

struct Tokens {
    int32_t id[kEmbedMaxTokens];
};

template <WType T>
__global__ void embed_kernel(const void * __restrict__ table, int64_t dim, const Tokens toks, __half * __restrict__ out) {
    const int64_t row = toks.id[blockIdx.x];
    __half * o = out + (int64_t)blockIdx.x * dim;
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) o[i] = __float2half(load_w<T>(table, row * dim + i));
}

} // namespace

void embed(WType wt, const void * table, int64_t vocab, int64_t dim, const int32_t * host_tokens, int64_t n, __half * out,
           cudaStream_t stream) {
    SHOAL_CUDA_ASSERT(n >= 0 && dim > 0 && vocab > 0 && table && out && (n == 0 || host_tokens), "embed: shapes");
    for (int64_t m0 = 0; m0 < n; m0 += kEmbedMaxTokens) {
        const int cnt = (int)std::min<int64_t>(kEmbedMaxTokens, n - m0);
        Tokens t;
        for (int i = 0; i < cnt; i++) {
            SHOAL_CUDA_ASSERT(host_tokens[m0 + i] >= 0 && host_tokens[m0 + i] < vocab, "embed: token id out of range");
            t.id[i] = host_tokens[m0 + i];
        }
        __half * o = out + m0 * dim;
        switch (wt) {
            case WType::F32: embed_kernel<WType::F32><<<cnt, 128, 0, stream>>>(table, dim, t, o); break;
            case WType::F16: embed_kernel<WType::F16><<<cnt, 128, 0, stream>>>(table, dim, t, o); break;
            case WType::BF16: embed_kernel<WType::BF16><<<cnt, 128, 0, stream>>>(table, dim, t, o); break;
        }
        CUDA_CHECK(cudaGetLastError());
    }
}

} // namespace cuda
} // namespace shoal
