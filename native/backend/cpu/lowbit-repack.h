// lowbit-repack.h — every quantized checkpoint format other than AutoAWQ gemm
// (which q4-repack.h handles directly) → the CPU kernels' layouts:
//   bits 4 (GPTQ, EfficientQAT, AutoAWQ gemv / gemv_fast) → Q4Buffer (q4-repack.h)
//   bits 2, 3, 8                                         → QxBuffer (kernels.h QxRows)
// with f16 s and f16 −s·z per (row, group).
//
// GPTQ desc_act (g_idx not k / G): the inputs are reordered so that every group
// is G consecutive inputs (a stable sort of k by g_idx), and the backend gathers
// the activations through `perm` (x'[j] = x[perm[j]]) before each matmul: one
// gather of K floats per row, against a per-weight group lookup in the kernels.
// A g_idx whose groups are not each exactly G inputs is rejected
// (SHOAL_ERR_QUANT_METADATA).
//
// Requirements (else SHOAL_ERR_GROUP_SIZE / SHOAL_ERR_SHAPE naming the tensor):
// K % 32 == 0, G % 32 == 0, K % G == 0, K / G <= 1024; bits 4 also G == 32 or
// G % 64 == 0 (the Q4 kernels' group lookup).
#pragma once
#include "kernels.h"
#include "q4-repack.h"
#include "tensor.h"

#include <cstdint>
#include <vector>

namespace shoal {

class ThreadPool;

struct QxBuffer {
    int64_t n = 0, k = 0;
    int     group = 0, bits = 0;
    WeightVector<uint8_t>  qs;     // [N][K·bits/8]
    WeightVector<uint16_t> scale;  // f16 [N][K/G]
    WeightVector<uint16_t> szero;  // f16 [N][K/G]
    QxRows view() const { return QxRows{n, k, group, bits, qs.data(), scale.data(), szero.data()}; }
    size_t bytes() const { return qs.size() + 2 * (scale.size() + szero.size()); }
};

struct LowbitWeights {
    int bits = 0;                 // 4: q4 holds the weights; 2, 3, 8: qx
    Q4Buffer q4;
    QxBuffer qx;
    std::vector<int32_t> perm;    // [K] activation gather (desc_act), empty when the identity
    size_t bytes() const { return (bits == 4 ? q4.bytes() : qx.bytes()) + perm.size() * sizeof(int32_t); }
};

// Element i of a F32/F16/BF16 tensor (scales, scaled zeros) as f32.
float scale_f32(const TensorView & t, int64_t i);

// Repacks src (src.qfmt != None, not AwqGemm). Throws shoal::Error naming the tensor.
LowbitWeights lowbit_repack(const LinearSource & src, ThreadPool & pool);

// Decodes rows [n0, n1) of src into integer weights q [n1−n0][K] (input order of
// the checkpoint), scales s and zero terms sz = −s·z [n1−n0][ceil(K/G)] (group
// numbering of the checkpoint) and, when z is not null, the zero points z in the
// units of q (w = (q − z)·s; AutoAWQ gemv_fast stores −s·z: z = −sz/s in f32).
// Exposed for tests and the exact repack (exact-repack.h).
void lowbit_decode_rows(const LinearSource & src, int64_t n0, int64_t n1, uint8_t * q, float * s, float * sz,
                        float * z = nullptr);

// Packs one row of K values q (0..2^bits−1) into the QxRows layout (row_bytes bytes).
void qx_pack_row(const uint8_t * q, int64_t K, int bits, uint8_t * dst);

} // namespace shoal
