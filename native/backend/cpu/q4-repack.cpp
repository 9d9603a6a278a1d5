// q4-repack.cpp — AutoAWQ gemm → the chunked row-major layout of q4-repack.h.
#include "q4-repack.h"

#include "error.h"
#include "threadpool.h"

#include <algorithm>
#include <string>

namespace shoal {
namespace {

float scale_at(const TensorView & s, int64_t i) {
    switch (s.dtype) {
        case DType::F16: return f16_to_f32(static_cast<const uint16_t *>(s.data)[i]);
        case DType::BF16: return bf16_to_f32(static_cast<const uint16_t *>(s.data)[i]);
        default: return static_cast<const float *>(s.data)[i];
    }
}

} // namespace

Q4Buffer q4_repack(const LinearSource & src, ThreadPool & pool) {
    const int64_t K = src.in, N = src.out, G = src.group_size;
    const std::string where = "AWQ linear '" + src.name + "'";
    SHOAL_CHECK(src.awq, SHOAL_ERR_INTERNAL, where + ": not AWQ");
    SHOAL_CHECK(G > 0 && K % G == 0, SHOAL_ERR_GROUP_SIZE, where + ": group size " + std::to_string(G) +
                " does not divide in_features " + std::to_string(K));
    // The kernels' scale lookup needs whole 32-blocks per group, and each
    // 64-input half-chunk in one group (G == 32 or G % 64 == 0).
    SHOAL_CHECK(G == 32 || G % 64 == 0, SHOAL_ERR_GROUP_SIZE,
                where + ": group size " + std::to_string(G) + " not supported by the CPU kernels (32 or a multiple of 64)");
    SHOAL_CHECK(K % 32 == 0 && N % 8 == 0 && K / G <= 1024, SHOAL_ERR_SHAPE,
                where + ": shape [" + std::to_string(N) + ", " + std::to_string(K) +
                "] not supported (in_features % 32, out_features % 8, in_features/group <= 1024)");
    SHOAL_CHECK(src.qweight.dtype == DType::I32 && src.qzeros.dtype == DType::I32 &&
                (src.scales.dtype == DType::F16 || src.scales.dtype == DType::BF16 || src.scales.dtype == DType::F32),
                SHOAL_ERR_ST_DTYPE, where + ": qweight/qzeros must be I32 and scales F16/BF16/F32");
    SHOAL_CHECK(src.qweight.numel() == K * N / 8 && src.qzeros.numel() == K / G * N / 8 && src.scales.numel() == K / G * N,
                SHOAL_ERR_SHAPE, where + ": qweight/qzeros/scales sizes do not match [" + std::to_string(K) + ", " +
                std::to_string(N) + "] with group " + std::to_string(G));

    Q4Buffer out;
    out.n = N;
    out.k = K;
    out.group = (int)G;
    const int64_t ng = K / G, nw = N / 8; // words per qweight row
    out.qs.resize(N * K / 2);
    out.scale.resize(N * ng);
    out.szero.resize(N * ng);
    const int32_t * qw = static_cast<const int32_t *>(src.qweight.data); // [K][N/8], 8 nibbles along N
    const int32_t * qz = static_cast<const int32_t *>(src.qzeros.data);  // [K/G][N/8]

    // One task = 16 packed words = 128 output rows. Per 128-input chunk the
    // tile's words are first copied to a local block (8 KiB, L1), then each
    // row's bytes are gathered from it: a blocked transpose, ~1 ns/weight.
    constexpr int64_t kWords = 16;
    const int64_t n_tiles = (nw + kWords - 1) / kWords;
    pool.parallel_for(n_tiles, [&](int64_t tile, int) {
        const int64_t c0 = tile * kWords, c1 = std::min(nw, c0 + kWords), nc = c1 - c0;
        uint32_t blk[128][kWords]; // [k - k0][c - c0] words of this chunk
        int shift[8];              // bit offset of column 8c + i inside its word
        for (int i = 0; i < 8; i++) shift[AWQ_ORDER[i]] = 4 * i;
        for (int64_t k0 = 0; k0 < K; k0 += 128) {
            const int64_t T = std::min<int64_t>(128, K - k0), half = T / 2;
            for (int64_t kk = 0; kk < T; kk++)
                for (int64_t cc = 0; cc < nc; cc++) blk[kk][cc] = (uint32_t)qw[(k0 + kk) * nw + c0 + cc];
            for (int64_t n = 8 * c0; n < 8 * c1; n++) {
                const int64_t cc = n / 8 - c0;
                const int sh = shift[n % 8];
                uint8_t * dst = &out.qs[n * (K / 2) + k0 / 2];
                for (int64_t j = 0; j < half; j++)
                    dst[j] = (uint8_t)(((blk[j][cc] >> sh) & 15) | (((blk[half + j][cc] >> sh) & 15) << 4));
            }
        }
        for (int64_t n = 8 * c0; n < 8 * c1; n++) {
            const int64_t c = n / 8;
            const int sh = shift[n % 8];
            for (int64_t g = 0; g < ng; g++) {
                const float s = scale_at(src.scales, g * N + n);
                const int z = ((uint32_t)qz[g * nw + c] >> sh) & 15;
                out.scale[n * ng + g] = f32_to_f16(s);
                out.szero[n * ng + g] = f32_to_f16(-s * (float)z);
            }
        }
    });
    return out;
}

} // namespace shoal
