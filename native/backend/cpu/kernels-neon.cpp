// kernels-neon.cpp — AArch64 Advanced SIMD (baseline armv8-a) kernels. The INT4
// matvec multiplies 4-bit weights (as s8 0..15) by int8 activations with
// smull/smull2 (s8 × s8 → s16; a pair sums to at most 2·15·127 = 3810) and
// sadalp into s32; everything else is the generic code of kernels-simd.h.
#include "kernels-neon-common.h"

namespace shoal {
namespace {

// s32 [4] += Σ over byte quads of w × x (s8)
inline int32x4_t dot_s8(int32x4_t acc, int8x16_t w, int8x16_t x) {
    const int16x8_t p = vaddq_s16(vmull_s8(vget_low_s8(w), vget_low_s8(x)), vmull_high_s8(w, x));
    return vpadalq_s16(acc, p);
}

void q4_matvec(const Q4Rows & w, const Q8Row & x, int64_t n0, int64_t n1, float * y) {
    neon::q4_matvec_with<dot_s8>(w, x, n0, n1, y);
}

void qx_matvec(const QxRows & w, const Q8Row & x, int64_t n0, int64_t n1, float * y) {
    neon::qx_matvec_with<dot_s8>(w, x, n0, n1, y);
}

} // namespace

const Kernels & kernels_neon() {
    static const Kernels k = simd::make_kernels<neon::V, 12>("neon", q4_matvec, simd::q4_gemm_rows<q4_matvec>, qx_matvec);
    return k;
}

} // namespace shoal
