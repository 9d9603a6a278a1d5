// lowbit-repack.cpp — GPTQ / EfficientQAT / AutoAWQ gemv, gemv_fast → kernel layouts
// (lowbit-repack.h). Decoding is scalar and threaded over tiles of 64 rows; the
// column-major GPTQ words of a tile are first transposed into a local buffer.
#include "lowbit-repack.h"

#include "error.h"
#include "threadpool.h"

#include <algorithm>
#include <numeric>
#include <string>

namespace shoal {

float scale_f32(const TensorView & t, int64_t i) {
    switch (t.dtype) {
        case DType::F16: return f16_to_f32(static_cast<const uint16_t *>(t.data)[i]);
        case DType::BF16: return bf16_to_f32(static_cast<const uint16_t *>(t.data)[i]);
        default: return static_cast<const float *>(t.data)[i];
    }
}

namespace {

// Value of width b at bit position bit of a little-endian stream of 32-bit
// words (values may straddle two words, as GPTQ 3-bit does).
inline uint32_t bits_at(const uint32_t * w, int64_t bit, int b) {
    const int64_t i = bit >> 5;
    const int sh = (int)(bit & 31);
    uint64_t v = w[i] >> sh;
    if (sh + b > 32) v |= (uint64_t)w[i + 1] << (32 - sh);
    return (uint32_t)v & ((1u << b) - 1);
}

constexpr int64_t kTile = 64;

} // namespace

void lowbit_decode_rows(const LinearSource & src, int64_t n0, int64_t n1, uint8_t * q, float * s, float * sz, float * z_out) {
    const int64_t K = src.in, N = src.out, G = src.group_size, ng = (K + G - 1) / G;
    const int b = src.bits;
    const uint32_t mask = (1u << b) - 1;
    switch (src.qfmt) {
    case QFormat::Gptq:
    case QFormat::EqatNative: {
        const bool gptq = src.qfmt == QFormat::Gptq;
        const int64_t per = 32 / b;
        const int64_t R = src.qweight.shape[0]; // word rows
        const uint32_t * qw = static_cast<const uint32_t *>(src.qweight.data); // [R][N]
        const uint32_t * qz = static_cast<const uint32_t *>(src.qzeros.data);  // [ng][ZW]
        const int64_t ZW = src.qzeros.shape[1];
        std::vector<uint32_t> col((size_t)R * (n1 - n0)); // [n - n0][R]: the tile's columns, transposed
        for (int64_t r = 0; r < R; r++)
            for (int64_t n = n0; n < n1; n++) col[(n - n0) * R + r] = qw[r * N + n];
        for (int64_t n = n0; n < n1; n++) {
            const uint32_t * cw = &col[(n - n0) * R];
            uint8_t * qn = q + (n - n0) * K;
            if (gptq) {
                for (int64_t k = 0; k < K; k++) qn[k] = (uint8_t)bits_at(cw, k * b, b);
            } else {
                for (int64_t k = 0; k < K; k++) qn[k] = (uint8_t)((cw[k / per] >> (b * (k % per))) & mask);
            }
            for (int64_t g = 0; g < ng; g++) {
                const uint32_t * zr = qz + g * ZW;
                const uint32_t zraw = gptq ? bits_at(zr, n * b, b) : (zr[n / per] >> (b * (n % per))) & mask;
                // v1 ("gptq"): stored z − 1, read back as AutoGPTQ does: (stored & maxq) + 1
                const float z = (float)(zraw + (uint32_t)src.zero_offset);
                const float sc = scale_f32(src.scales, g * N + n);
                s[(n - n0) * ng + g] = sc;
                sz[(n - n0) * ng + g] = -sc * z;
                if (z_out) z_out[(n - n0) * ng + g] = z;
            }
        }
        break;
    }
    case QFormat::AwqGemv: {
        const int64_t W = src.qzeros.shape[1];
        const uint32_t * qw = static_cast<const uint32_t *>(src.qweight.data); // [N][K/8]
        const uint32_t * qz = static_cast<const uint32_t *>(src.qzeros.data);  // [N][W]
        for (int64_t n = n0; n < n1; n++) {
            uint8_t * qn = q + (n - n0) * K;
            for (int64_t k = 0; k < K; k++) qn[k] = (uint8_t)((qw[n * (K / 8) + k / 8] >> (4 * (k % 8))) & 15);
            for (int64_t g = 0; g < ng; g++) {
                const float z = (float)((qz[n * W + g / 8] >> (4 * (g % 8))) & 15);
                const float sc = scale_f32(src.scales, n * 8 * W + g);
                s[(n - n0) * ng + g] = sc;
                sz[(n - n0) * ng + g] = -sc * z;
                if (z_out) z_out[(n - n0) * ng + g] = z;
            }
        }
        break;
    }
    case QFormat::AwqGemvFast: {
        // pack_intweight(interleave 4, kstride 64): within each 32 inputs, k%32 = 8d + 2c + e
        // sits at position 8c + 4e + d; then rows n = 4i + r are interleaved: position P of
        // row n is int16 [i][P/64·64 + 16r + (P%64)/4], nibble (P%64)%4.
        const uint16_t * qw = static_cast<const uint16_t *>(src.qweight.data); // [N/4][K]
        for (int64_t n = n0; n < n1; n++) {
            uint8_t * qn = q + (n - n0) * K;
            const uint16_t * rw = qw + (n / 4) * K;
            const int64_t r = n % 4;
            for (int64_t k = 0; k < K; k++) {
                const int64_t t = k % 32, d = t / 8, c = (t % 8) / 2, e = t % 2;
                const int64_t P = k / 32 * 32 + 8 * c + 4 * e + d;
                const uint16_t v = rw[P / 64 * 64 + 16 * r + (P % 64) / 4];
                qn[k] = (uint8_t)((v >> (4 * ((P % 64) % 4))) & 15);
            }
            for (int64_t g = 0; g < ng; g++) {
                const float sc = scale_f32(src.scales, g * N + n), szv = scale_f32(src.qzeros, g * N + n); // scaled_zeros = −s·z
                s[(n - n0) * ng + g] = sc;
                sz[(n - n0) * ng + g] = szv;
                // the format stores −s·z, not z: z = −sz/s, rounded once to f32 (s = 0: z = 0)
                if (z_out) z_out[(n - n0) * ng + g] = sc != 0.0f ? (float)(-(double)szv / (double)sc) : 0.0f;
            }
        }
        break;
    }
    case QFormat::CtPacked: {
        // compressed-tensors pack_to_int32: value k of row n at bits b·(k mod pf) of
        // weight_packed[n][k / pf], stored q + 2^(b−1) (so the signed codes become 0..2^b−1);
        // zero points packed the same way along the rows: weight_zero_point[n / pf][g].
        // w = (q − z)·s in signed units equals (stored q − stored z)·s; symmetric: z = 0,
        // i.e. stored z = 2^(b−1).
        const int64_t pf = 32 / b, W = src.qweight.shape[1];
        const uint32_t * qw = static_cast<const uint32_t *>(src.qweight.data); // [N][W]
        const uint32_t * qz = static_cast<const uint32_t *>(src.qzeros.data);  // [ceil(N/pf)][ng] or null
        const uint32_t zsym = 1u << (b - 1);
        const int8_t * qz8 = static_cast<const int8_t *>(src.qzeros.data); // [N][ng] when ct_zp_unpacked
        for (int64_t n = n0; n < n1; n++) {
            uint8_t * qn = q + (n - n0) * K;
            const uint32_t * rw = qw + n * W;
            for (int64_t k = 0; k < K; k++) qn[k] = (uint8_t)((rw[k / pf] >> (b * (k % pf))) & mask);
            for (int64_t g = 0; g < ng; g++) {
                const float zu = src.ct_symmetric     ? (float)zsym
                                 : src.ct_zp_unpacked ? (float)((int)qz8[n * ng + g] + (int)zsym)
                                                      : (float)((qz[(n / pf) * ng + g] >> (b * (n % pf))) & mask);
                const float sc = scale_f32(src.scales, n * ng + g);
                s[(n - n0) * ng + g] = sc;
                sz[(n - n0) * ng + g] = -sc * zu;
                if (z_out) z_out[(n - n0) * ng + g] = zu;
            }
        }
        break;
    }
    default: fail(SHOAL_ERR_INTERNAL, "linear '" + src.name + "': lowbit_decode_rows on an unsupported format");
    }
}

void qx_pack_row(const uint8_t * q, int64_t K, int bits, uint8_t * dst) {
    if (bits == 8) {
        for (int64_t k = 0; k < K; k++) dst[k] = (uint8_t)(int8_t)((int)q[k] - 128);
        return;
    }
    for (int64_t k0 = 0; k0 < K; k0 += 128) {
        const int64_t T = std::min<int64_t>(128, K - k0), L = T / 4, H = T / 8;
        uint8_t * c = dst + k0 * bits / 8;
        for (int64_t j = 0; j < L; j++) {
            uint8_t v = 0;
            for (int p = 0; p < 4; p++) v |= (uint8_t)((q[k0 + p * L + j] & 3) << (2 * p));
            c[j] = v;
        }
        if (bits == 3) {
            for (int64_t i = 0; i < H; i++) {
                uint8_t v = 0;
                for (int p = 0; p < 8; p++) v |= (uint8_t)(((q[k0 + p * H + i] >> 2) & 1) << p);
                c[L + i] = v;
            }
        }
    }
}

LowbitWeights lowbit_repack(const LinearSource & src, ThreadPool & pool) {
    const int64_t K = src.in, N = src.out, Gs = src.group_size; // Gs: the checkpoint's group
    const int b = src.bits;
    const std::string where = "quantized linear '" + src.name + "'";
    // One scale per row (compressed-tensors strategy channel, G = K): when K is not a
    // group size the kernels take, the row's scale is repeated over groups of 32.
    int64_t G = Gs;
    if (src.qfmt == QFormat::CtPacked && Gs == K && K % 32 == 0 && b == 4 && K % 64 != 0) G = 32;
    SHOAL_CHECK(Gs > 0 && G > 0 && Gs % G == 0, SHOAL_ERR_INTERNAL, where + ": kernel group");
    SHOAL_CHECK(src.qfmt != QFormat::None && src.qfmt != QFormat::AwqGemm, SHOAL_ERR_INTERNAL, where + ": not a low-bit source");
    SHOAL_CHECK(b == 2 || b == 3 || b == 4 || b == 8, SHOAL_ERR_UNSUPPORTED_QUANT, where + ": bits " + std::to_string(b) + " not supported");
    SHOAL_CHECK(G > 0 && K % G == 0, SHOAL_ERR_GROUP_SIZE, where + ": group size " + std::to_string(G) +
                " does not divide in_features " + std::to_string(K) + " (the CPU kernels need whole groups)");
    SHOAL_CHECK(G % 32 == 0 && (b != 4 || G == 32 || G % 64 == 0), SHOAL_ERR_GROUP_SIZE,
                where + ": group size " + std::to_string(G) + " not supported by the CPU kernels at " + std::to_string(b) +
                " bits (a multiple of 32" + (b == 4 ? std::string("; 32 or a multiple of 64 at 4 bits") : std::string()) + ")");
    SHOAL_CHECK(K % 32 == 0 && K / G <= 1024 && N > 0, SHOAL_ERR_SHAPE,
                where + ": shape [" + std::to_string(N) + ", " + std::to_string(K) +
                "] not supported by the CPU kernels (in_features % 32 == 0, in_features/group <= 1024)");
    const int64_t ng = K / G, ngs = K / Gs; // kernel groups, checkpoint groups
    SHOAL_CHECK(src.scales.numel() >= ngs * N, SHOAL_ERR_SHAPE, where + ": scales too small");

    LowbitWeights out;
    out.bits = b;
    // desc_act: stable sort of the inputs by group
    if (src.has_g_idx) {
        SHOAL_CHECK(src.g_idx.dtype == DType::I32 && src.g_idx.numel() == K, SHOAL_ERR_SHAPE, where + ": g_idx must be I32 [" + std::to_string(K) + "]");
        const int32_t * gi = static_cast<const int32_t *>(src.g_idx.data);
        bool trivial = true;
        for (int64_t k = 0; k < K && trivial; k++) trivial = gi[k] == k / Gs;
        if (!trivial) {
            out.perm.resize(K);
            std::iota(out.perm.begin(), out.perm.end(), 0);
            for (int64_t k = 0; k < K; k++)
                SHOAL_CHECK(gi[k] >= 0 && gi[k] < ngs, SHOAL_ERR_QUANT_METADATA,
                            src.name + ".g_idx[" + std::to_string(k) + "] = " + std::to_string(gi[k]) + " is outside [0, " + std::to_string(ngs) + ")");
            std::stable_sort(out.perm.begin(), out.perm.end(), [&](int32_t a, int32_t c) { return gi[a] < gi[c]; });
            for (int64_t j = 0; j < K; j++) {
                SHOAL_CHECK(gi[out.perm[j]] == j / Gs, SHOAL_ERR_QUANT_METADATA,
                            src.name + ".g_idx: group " + std::to_string(j / Gs) + " does not hold exactly " + std::to_string(Gs) +
                            " inputs (act-order groups must each be group_size inputs)");
            }
        }
    }
    const bool permute = !out.perm.empty();

    Q4Buffer & q4 = out.q4;
    QxBuffer & qx = out.qx;
    if (b == 4) {
        q4.n = N; q4.k = K; q4.group = (int)G;
        q4.qs.assign(N * K / 2, 0);
        q4.scale.resize(N * ng);
        q4.szero.resize(N * ng);
    } else {
        qx.n = N; qx.k = K; qx.group = (int)G; qx.bits = b;
        qx.qs.assign(N * (K * b / 8), 0);
        qx.scale.resize(N * ng);
        qx.szero.resize(N * ng);
    }
    uint16_t * scale_out = b == 4 ? q4.scale.data() : qx.scale.data();
    uint16_t * szero_out = b == 4 ? q4.szero.data() : qx.szero.data();
    pool.parallel_for((N + kTile - 1) / kTile, [&](int64_t tile, int) {
        const int64_t n0 = tile * kTile, n1 = std::min(N, n0 + kTile), rows = n1 - n0;
        std::vector<uint8_t> q((size_t)(rows * K)), qp(permute ? (size_t)K : 0);
        std::vector<float> s((size_t)(rows * ngs)), sz((size_t)(rows * ngs));
        lowbit_decode_rows(src, n0, n1, q.data(), s.data(), sz.data());
        for (int64_t n = n0; n < n1; n++) {
            const uint8_t * qn = &q[(n - n0) * K];
            if (permute) {
                for (int64_t j = 0; j < K; j++) qp[j] = qn[out.perm[j]];
                qn = qp.data();
            }
            if (b == 4) {
                uint8_t * dst = &q4.qs[n * (K / 2)];
                for (int64_t k = 0; k < K; k++) {
                    int64_t byte;
                    int hi;
                    q4_locate(k, K, &byte, &hi);
                    dst[byte] |= (uint8_t)((qn[k] & 15) << (4 * hi));
                }
            } else {
                qx_pack_row(qn, K, b, &qx.qs[n * (K * b / 8)]);
            }
            for (int64_t g = 0; g < ng; g++) {
                const int64_t gs = g * G / Gs; // the checkpoint group holding kernel group g
                scale_out[n * ng + g] = f32_to_f16(s[(n - n0) * ngs + gs]);
                szero_out[n * ng + g] = f32_to_f16(sz[(n - n0) * ngs + gs]);
            }
        }
    });
    return out;
}

} // namespace shoal
