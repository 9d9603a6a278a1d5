// half.cpp — scalar f16/bf16 conversions and dtype names/sizes (tensor.h).
// Bit-exact IEEE-754 binary16 with round-to-nearest-even; kernels use the
// hardware instructions (F16C / NEON fp16) and are tested against these.
#include "tensor.h"

#include <cstring>

namespace shoal {

const char * dtype_name(DType t) {
    switch (t) {
        case DType::F32: return "F32";
        case DType::F16: return "F16";
        case DType::BF16: return "BF16";
        case DType::I32: return "I32";
        case DType::I16: return "I16";
        case DType::I8: return "I8";
        case DType::U8: return "U8";
        case DType::F64: return "F64";
        case DType::I64: return "I64";
    }
    return "?";
}

size_t dtype_size(DType t) {
    switch (t) {
        case DType::F32: case DType::I32: return 4;
        case DType::F16: case DType::BF16: case DType::I16: return 2;
        case DType::I8: case DType::U8: return 1;
        case DType::F64: case DType::I64: return 8;
    }
    return 0;
}

static inline uint32_t f32_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
static inline float bits_f32(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }

float f16_to_f32(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    const uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    if (exp == 0x1f) return bits_f32(sign | 0x7f800000u | (mant << 13)); // inf / nan
    if (exp != 0) return bits_f32(sign | ((exp + 112) << 23) | (mant << 13));
    if (mant == 0) return bits_f32(sign);                               // ±0
    // subnormal: value = mant · 2^-24, exact in f32
    const float v = (float)mant * 5.9604644775390625e-8f;
    return sign ? -v : v;
}

uint16_t f32_to_f16(float f) {
    const uint32_t u = f32_bits(f);
    const uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    const uint32_t a = u & 0x7fffffffu;
    if (a >= 0x7f800000u) return sign | (a > 0x7f800000u ? 0x7e00 : 0x7c00); // nan / inf
    if (a >= 0x477ff000u) return sign | 0x7c00;                            // rounds to >= 65520: inf
    if (a < 0x38800000u) {
        // result is subnormal (or zero): round a·2^24 to an integer, ties to even.
        // Adding 0.5f (2^-1) forces the f32 ulp to 2^-24 relative to the f16 subnormal step.
        const float r = bits_f32(a) + 0.5f;
        return sign | (uint16_t)(f32_bits(r) - f32_bits(0.5f));
    }
    // normal: rebias exponent and round the 13 dropped bits to nearest even
    const uint32_t mant_odd = (a >> 13) & 1;
    const uint32_t v = a + 0xc8000fffu + mant_odd; // (-112 << 23) + 0xfff
    return sign | (uint16_t)(v >> 13);
}

float bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

} // namespace shoal
