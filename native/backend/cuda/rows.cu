// rows.cu — see rows.cuh. One block per row.
#include "rows.cuh"

namespace shoal {
namespace cuda {
namespace {

struct RowArgs {
    int32_t row[kRowsMax];
    float w[kRowsMax];
};

__global__ void gather_kernel(const __half * __restrict__ src, int64_t cols, const RowArgs a, __half * __restrict__ dst) {
    const __half * s = src + (int64_t)a.row[blockIdx.x] * cols;
    __half * d = dst + (int64_t)blockIdx.x * cols;
    for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) d[i] = s[i];
}

__global__ void scatter_add_kernel(__half * __restrict__ dst, int64_t cols, const RowArgs a, const __half * __restrict__ src) {
    __half * d = dst + (int64_t)a.row[blockIdx.x] * cols;
    const __half * s = src + (int64_t)blockIdx.x * cols;
    const float w = a.w[blockIdx.x];
    for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) d[i] = __float2half(__half2float(d[i]) + w * __half2float(s[i]));
}

template <WType T> __global__ void add_table_kernel(__half * __restrict__ x, const void * __restrict__ table, int64_t dim, int64_t row0) {
    __half * o = x + (int64_t)blockIdx.x * dim;
    const int64_t r = row0 + blockIdx.x;
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) o[i] = __float2half(__half2float(o[i]) + load_w<T>(table, r * dim + i));
}

} // namespace

void gather_rows(const __half * src, int64_t cols, const int32_t * host_rows, int64_t n, __half * dst, cudaStream_t stream) {
    SHOAL_CUDA_ASSERT(n >= 0 && cols > 0 && src && dst && (n == 0 || host_rows), "gather_rows: shapes");
    for (int64_t i0 = 0; i0 < n; i0 += kRowsMax) {
        const int cnt = (int)std::min<int64_t>(kRowsMax, n - i0);
        RowArgs a;
        for (int i = 0; i < cnt; i++) a.row[i] = host_rows[i0 + i];
        gather_kernel<<<cnt, 128, 0, stream>>>(src, cols, a, dst + i0 * cols);
        CUDA_CHECK(cudaGetLastError());
    }
}

void scatter_add_rows(__half * dst, int64_t cols, const int32_t * host_rows, const float * host_w, int64_t n, const __half * src,
                      cudaStream_t stream) {
    SHOAL_CUDA_ASSERT(n >= 0 && cols > 0 && src && dst && (n == 0 || (host_rows && host_w)), "scatter_add_rows: shapes");
    for (int64_t i0 = 0; i0 < n; i0 += kRowsMax) {
        const int cnt = (int)std::min<int64_t>(kRowsMax, n - i0);
        RowArgs a;
        for (int i = 0; i < cnt; i++) {
            a.row[i] = host_rows[i0 + i];
            a.w[i] = host_w[i0 + i];
        }
        scatter_add_kernel<<<cnt, 128, 0, stream>>>(dst, cols, a, src + i0 * cols);
        CUDA_CHECK(cudaGetLastError());
    }
}

void add_table_rows(__half * x, int64_t n, WType wt, const void * table, int64_t dim, int64_t row0, cudaStream_t stream) {
    SHOAL_CUDA_ASSERT(n >= 0 && n < 2147483647 && dim > 0 && row0 >= 0 && x && table, "add_table_rows: shapes");
    if (n == 0) return;
    switch (wt) {
        case WType::F32: add_table_kernel<WType::F32><<<(unsigned)n, 128, 0, stream>>>(x, table, dim, row0); break;
        case WType::F16: add_table_kernel<WType::F16><<<(unsigned)n, 128, 0, stream>>>(x, table, dim, row0); break;
        case WType::BF16: add_table_kernel<WType::BF16><<<(unsigned)n, 128, 0, stream>>>(x, table, dim, row0); break;
    }
    CUDA_CHECK(cudaGetLastError());
}

} // namespace cuda
} // namespace shoal
