// rows.cuh — row movements of the MoE and learned-position paths. Row indices
// and weights travel as a kernel argument (no host→device copy, no sync), up to
// kRowsMax per launch; the caller has range-checked them.
//   gather_rows:      dst[i][:] = src[rows[i]][:]                 (f16 [·][cols])
//   scatter_add_rows: dst[rows[i]][:] += w[i] · src[i][:]          (rows distinct)
//   add_table_rows:   x[m][:] += table[row0 + m][:] for m < n      (table in dtype wt)
#pragma once
#include "cuda-common.cuh"

namespace shoal {
namespace cuda {

constexpr int kRowsMax = 256;

void gather_rows(const __half * src, int64_t cols, const int32_t * host_rows, int64_t n, __half * dst, cudaStream_t stream);
void scatter_add_rows(__half * dst, int64_t cols, const int32_t * host_rows, const float * host_w, int64_t n, const __half * src,
                      cudaStream_t stream);
void add_table_rows(__half * x, int64_t n, WType wt, const void * table, int64_t dim, int64_t row0, cudaStream_t stream);

} // namespace cuda
} // namespace shoal
