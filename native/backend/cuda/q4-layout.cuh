// q4-layout.cuh — the CUDA backend's INT4 weight layout (W4A16), shared by the
// repack, matvec and GEMM ops.
//
//   qs  u32   [N][K/8]   pack factor 8: word (n, w) holds the 8 consecutive inputs
//                        k = 8w .. 8w+7 of output row n. Nibble of input 8w+e sits at
//                        bits 4·(e/2) (e even) or 16 + 4·(e/2) (e odd):
//                            bits  0- 3: e=0   16-19: e=1
//                            bits  4- 7: e=2   20-23: e=3
//                            bits  8-11: e=4   24-27: e=5
//                            bits 12-15: e=6   28-31: e=7
//                        so (word >> 4j) & 0x000F000F | 0x64006400 is a half2 holding
//                        (1024 + q[2j], 1024 + q[2j+1]): the magic-number int4→fp16
//                        conversion (one shift, one lop3) that needs no int→float op.
//   sz  half2 [N][K/G]   (s, 1024 + z) of (row n, group g); w = ((1024+q) − (1024+z)) · s
//                        — the subtraction is exact in fp16 (integers ≤ 1039), so
//                        the dequantized weight is (q − z)·s rounded once to fp16.
//
// One 128-bit load of a row reads 32 consecutive inputs (4 words) that always lie in
// one group (G ∈ {32, 64, 128, ...}, G % 32 == 0), so it needs exactly one sz entry.
// A warp reading one row with 16-byte loads covers 1024 inputs per instruction:
// fully coalesced. Row n is contiguous, so decode streams each row once.
// Bytes per weight: 0.5 + 4/G (G=128: 4.25 bit; AutoAWQ stores 4.156 bit: its
// zeros are 4-bit, ours are f16 beside the scale for a single 32-bit load).
// Requirements: K % 32 == 0, G % 32 == 0, K % G == 0, N % 8 == 0 (AutoAWQ packs N/8).
#pragma once
#include <cuda_fp16.h>
#include <cstdint>

namespace shoal {
namespace cuda {

struct Q4Weights {
    int64_t n = 0, k = 0;            // N outputs, K inputs
    int     group = 0;               // G
    const uint32_t * qs = nullptr;   // [N][K/8]  pack factor 8 (see above)
    const __half2 *  sz = nullptr;   // [N][K/G]  (s, 1024+z)
};

#ifdef __CUDACC__
// The 8 weights of one word as 4 half2 (k pairs 0-1, 2-3, 4-5, 6-7), dequantized.
__device__ __forceinline__ void q4_dequant8(uint32_t w, __half2 s2, __half2 z2, __half2 out[4]) {
#pragma unroll
    for (int j = 0; j < 4; j++) {
        uint32_t t;
        // t = ((w >> 4j) & 0x000F000F) | 0x64006400 in one lop3 (immLut 0xEA = (a & b) | c)
        asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(t) : "r"(w >> (4 * j)), "r"(0x000F000Fu), "r"(0x64006400u));
        __half2 h = *reinterpret_cast<__half2 *>(&t);
        out[j] = __hmul2(__hsub2(h, z2), s2);
    }
}
#endif

} // namespace cuda
} // namespace shoal
