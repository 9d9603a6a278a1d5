// q4-repack.h — AutoAWQ `gemm` INT4 tensors → the CPU kernels' layout.
//
// Layout (per output row n, so one decode row is one contiguous stream):
//   qs    u8  [N][K/2]   pack factor 2. K is cut into chunks of 128 inputs (the
//                        last chunk may be 32/64/96 wide). In a chunk of width T
//                        starting at input k0, byte j (0 <= j < T/2) holds
//                        q[k0 + j] in its low nibble and q[k0 + T/2 + j] in its
//                        high nibble. So a vector of bytes splits into two runs
//                        of *consecutive* inputs (low and high nibbles) for any
//                        vector width 16/32/64 bytes, and activations stay in
//                        natural order.
//   scale f16 [N][K/G]   s of (row, group)
//   szero f16 [N][K/G]   −s·z of (row, group), so w = q·s + (−s·z) and
//                        y[n] = Σ_g s·(Σ_{k∈g} q·x) + Σ_g (−s·z)·(Σ_{k∈g} x).
// Bytes per weight: 0.5 + 4/G (G=128: 0.53125 B = 4.25 bit, vs AutoAWQ's 4.156 bit
// on disk, whose zeros are 4-bit); TinyLlama-1.1B w4g128: 491 MiB of linears.
// The f16 −s·z rounds s·z to 11 bits (rel. 2^-12), far below the INT4 error.
// Repack cost: one pass over qweight/qzeros/scales, a blocked transpose
// threaded over tiles of 128 output rows: ~0.9 ns per weight per thread on the
// dev machine (Zen 5, 2 cores; bench-kernels reports it), i.e. ~0.5 s for
// TinyLlama-1.1B with 2 threads.
// Requirements: K % 32 == 0, G % 32 == 0, K % G == 0, N % 8 == 0.
#pragma once
#include "huge-pages.h"
#include "kernels.h"
#include "tensor.h"

#include <cstdint>
#include <vector>

namespace shoal {

class ThreadPool;

struct Q4Buffer {
    int64_t n = 0, k = 0;
    int     group = 0;
    WeightVector<uint8_t>  qs;     // [N][K/2]
    WeightVector<uint16_t> scale;  // f16 [N][K/G]
    WeightVector<uint16_t> szero;  // f16 [N][K/G]
    // Or the same three arrays in a mapped repack cache file (repack-cache.h), not owned.
    const uint8_t * ext_qs = nullptr;
    const uint16_t * ext_scale = nullptr, * ext_szero = nullptr;
    Q4Rows view() const {
        if (ext_qs) return Q4Rows{n, k, group, ext_qs, ext_scale, ext_szero};
        return Q4Rows{n, k, group, qs.data(), scale.data(), szero.data()};
    }
    size_t bytes() const {
        if (ext_qs) return (size_t)(n * k / 2) + 4 * (size_t)(n * (k / group));
        return qs.size() + 2 * (scale.size() + szero.size());
    }
};

// Repacks src (src.awq must be true). Throws shoal::Error on unsupported shapes.
// Does not release the source pages; the caller does.
Q4Buffer q4_repack(const LinearSource & src, ThreadPool & pool);

// Byte index in a row of qs, and nibble (0 low, 1 high), of input k (K inputs).
inline void q4_locate(int64_t k, int64_t K, int64_t * byte, int * hi) {
    const int64_t k0 = k / 128 * 128;
    const int64_t T = (K - k0) < 128 ? (K - k0) : 128;
    const int64_t j = k - k0;
    *hi = j >= T / 2;
    *byte = k0 / 2 + (j % (T / 2));
}

} // namespace shoal
