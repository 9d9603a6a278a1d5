// exact-repack.h — every quantized linear (AutoAWQ gemm and the formats of
// lowbit-repack.h) → the ExactRows layout of precision "exact" (kernels.h):
// the packed codes of the fast layouts (Q4 for 4 bits, Qx for 2/3/8), with
// f32 s and f32 z per (row, kernel group) instead of f16 s and f16 −s·z, so the
// kernels compute (c − z)·s with a single f32 rounding. The f16 −s·z of the
// fast layouts rounds s·z to 11 bits (q4-repack.h); here z is the checkpoint's
// integer (exact in f32) and s its f16/bf16/f32 scale (exact in f32).
//
// Same shape requirements and errors as q4_repack / lowbit_repack (it calls
// them for the codes and the act-order permutation).
#pragma once
#include "huge-pages.h"
#include "kernels.h"
#include "tensor.h"

#include <cstdint>
#include <vector>

namespace shoal {

class ThreadPool;

struct ExactBuffer {
    int64_t n = 0, k = 0;
    int     group = 0, bits = 0;
    WeightVector<uint8_t> qs;     // [N][K·bits/8] codes, as Q4Buffer (bits 4) / QxBuffer
    WeightVector<float>   scale;  // [N][K/G] s
    WeightVector<float>   zero;   // [N][K/G] z in code units (bits 8: z − 128)
    std::vector<int32_t> perm;    // [K] act-order activation gather, empty when the identity
    ExactRows view() const { return ExactRows{n, k, group, bits, qs.data(), scale.data(), zero.data()}; }
    size_t bytes() const { return qs.size() + 4 * (scale.size() + zero.size()) + 4 * perm.size(); }
};

// Repacks src (src.awq or src.qfmt != None). Throws shoal::Error naming the tensor.
// Does not release the source pages; the caller does.
ExactBuffer exact_repack(const LinearSource & src, ThreadPool & pool);

} // namespace shoal
