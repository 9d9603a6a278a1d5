// exact-repack.cpp — quantized linears → ExactBuffer (exact-repack.h). The codes
// and the act-order permutation come from the fast repackers; s and z are read
// again here from the checkpoint tensors, in f32.
#include "exact-repack.h"

#include "error.h"
#include "lowbit-repack.h"
#include "q4-repack.h"
#include "threadpool.h"

#include <algorithm>
#include <string>

namespace shoal {
namespace {

constexpr int64_t kTile = 64;

} // namespace

ExactBuffer exact_repack(const LinearSource & src, ThreadPool & pool) {
    ExactBuffer out;
    const int64_t K = src.in, N = src.out;
    if (src.awq) {
        // AutoAWQ gemm: q4_repack checks every size; z from qzeros [K/G][N/8] (AWQ_ORDER
        // nibbles), s from scales [K/G][N]
        Q4Buffer q = q4_repack(src, pool);
        const int64_t G = q.group, ng = K / G, nw = N / 8;
        out.n = N; out.k = K; out.group = (int)G; out.bits = 4;
        out.qs = std::move(q.qs);
        out.scale.resize(N * ng);
        out.zero.resize(N * ng);
        int shift[8];
        for (int i = 0; i < 8; i++) shift[AWQ_ORDER[i]] = 4 * i;
        const uint32_t * qz = static_cast<const uint32_t *>(src.qzeros.data);
        pool.parallel_for((N + kTile - 1) / kTile, [&](int64_t t, int) {
            for (int64_t n = t * kTile; n < std::min(N, t * kTile + kTile); n++)
                for (int64_t g = 0; g < ng; g++) {
                    out.scale[n * ng + g] = scale_f32(src.scales, g * N + n);
                    out.zero[n * ng + g] = (float)((qz[g * nw + n / 8] >> shift[n % 8]) & 15);
                }
        });
        return out;
    }
    LowbitWeights lw = lowbit_repack(src, pool); // checks shapes, group, g_idx
    const int b = lw.bits;
    const int64_t G = b == 4 ? lw.q4.group : lw.qx.group, ng = K / G;
    const int64_t Gs = src.group_size, ngs = (K + Gs - 1) / Gs; // the checkpoint's groups
    SHOAL_CHECK(Gs > 0 && Gs % G == 0, SHOAL_ERR_INTERNAL, "linear '" + src.name + "': exact repack groups");
    out.n = N; out.k = K; out.group = (int)G; out.bits = b;
    out.qs = b == 4 ? std::move(lw.q4.qs) : std::move(lw.qx.qs);
    out.perm = std::move(lw.perm);
    out.scale.resize(N * ng);
    out.zero.resize(N * ng);
    // the 8-bit rows store q − 128: their zero in code units is z − 128
    const float zoff = b == 8 ? 128.0f : 0.0f;
    pool.parallel_for((N + kTile - 1) / kTile, [&](int64_t t, int) {
        const int64_t n0 = t * kTile, n1 = std::min(N, n0 + kTile), rows = n1 - n0;
        std::vector<uint8_t> q((size_t)(rows * K));
        std::vector<float> s((size_t)(rows * ngs)), sz((size_t)(rows * ngs)), z((size_t)(rows * ngs));
        lowbit_decode_rows(src, n0, n1, q.data(), s.data(), sz.data(), z.data());
        for (int64_t n = n0; n < n1; n++)
            for (int64_t g = 0; g < ng; g++) {
                const int64_t gs = g * G / Gs; // the checkpoint group holding kernel group g
                out.scale[n * ng + g] = s[(n - n0) * ngs + gs];
                out.zero[n * ng + g] = z[(n - n0) * ngs + gs] - zoff;
            }
    });
    return out;
}

} // namespace shoal
