// kernels-neon-dotprod.cpp — AArch64 with the dot-product extension (ARMv8.2
// sdot; Cortex-A78AE in Jetson Orin). Same layout and int8 activations as the
// NEON kernels; the INT4 matvec uses sdot (16 s8 × s8 products per
// instruction into 4 s32 lanes). The float kernels are the generic NEON ones,
// compiled here with +fp16.
#include "kernels-neon-common.h"

namespace shoal {
namespace {

inline int32x4_t dot_s8(int32x4_t acc, int8x16_t w, int8x16_t x) { return vdotq_s32(acc, w, x); }

void q4_matvec(const Q4Rows & w, const Q8Row & x, int64_t n0, int64_t n1, float * y) {
    neon::q4_matvec_with<dot_s8>(w, x, n0, n1, y);
}

void qx_matvec(const QxRows & w, const Q8Row & x, int64_t n0, int64_t n1, float * y) {
    neon::qx_matvec_with<dot_s8>(w, x, n0, n1, y);
}

} // namespace

const Kernels & kernels_neon_dotprod() {
    static const Kernels k = simd::make_kernels<neon::V, 12>("neon-dotprod", q4_matvec, simd::q4_gemm_rows<q4_matvec>, qx_matvec);
    return k;
}

} // namespace shoal
