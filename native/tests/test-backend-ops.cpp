// test-backend-ops.cpp — every CPU backend op, on every ISA compiled in and
// supported here, at 1 and 2 threads, against (a) the scalar reference ISA and
// (b) a plain double-precision computation written here from the raw inputs
// (for INT4: from AutoAWQ qweight/qzeros/scales packed in this file, not by
// q4-repack; for 2/3/4/8 bits: GPTQ v1/v2/act-order, EfficientQAT native and
// AutoAWQ gemv/gemv_fast tensors packed here, not by lowbit-repack). Exit status non-zero on any failure; the last line is
// "N passed, N failed".
#include "backend.h"
#include "kernels.h"
#include "lowbit-repack.h"
#include "exact-repack.h"
#include "error.h"
#include "tensor.h"
#include "test-tensors.h"
#include "threadpool.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

using namespace shoal;

namespace {

int g_pass = 0, g_fail = 0;

void check(bool ok, const std::string & what) {
    if (ok) {
        g_pass++;
    } else {
        g_fail++;
        std::printf("FAIL %s\n", what.c_str());
    }
}

// Compares got against want element-wise with a per-element tolerance; reports
// the worst element.
void check_close(const std::string & what, const std::vector<float> & got, const std::vector<double> & want,
                 const std::vector<double> & tol) {
    double worst = 0;
    size_t wi = 0;
    bool ok = got.size() == want.size();
    for (size_t i = 0; ok && i < got.size(); i++) {
        const double e = std::fabs((double)got[i] - want[i]);
        if (!(e <= tol[i])) ok = false; // NaN fails too
        if (!(e / tol[i] <= worst)) {
            worst = e / tol[i];
            wi = i;
        }
    }
    if (!ok) {
        std::printf("  worst at %zu: got %.9g want %.9g tol %.3g\n", wi, got[wi], want[wi], tol[wi]);
    }
    check(ok, what);
}

std::mt19937 rng(12345);
float urand(float a, float b) { return std::uniform_real_distribution<float>(a, b)(rng); }
std::vector<float> rand_vec(size_t n, float a = -1, float b = 1) {
    std::vector<float> v(n);
    for (auto & x : v) x = urand(a, b);
    return v;
}

// ---- AutoAWQ packing, written from the format description ----------------------
// qweight i32 [K][N/8], nibble i of word (k, c) = column 8c + ORDER[i]; qzeros the
// same over [K/G][N/8]; scales f16 [K/G][N]; w[k][n] = (q − z)·s.
constexpr int kAwqOrder[8] = {0, 2, 4, 6, 1, 3, 5, 7};

struct AwqTensors {
    int64_t K, N, G;
    std::vector<int32_t> qweight, qzeros; // [K][N/8], [K/G][N/8]
    std::vector<uint16_t> scales;         // f16 [K/G][N]
    std::vector<double> w;                // [K][N] dequantized, double
};

AwqTensors make_awq(int64_t K, int64_t N, int64_t G) {
    AwqTensors t{K, N, G, {}, {}, {}, {}};
    std::vector<int> q(K * N), z(K / G * N);
    for (auto & v : q) v = (int)(rng() % 16);
    for (auto & v : z) v = (int)(rng() % 16);
    t.scales.resize(K / G * N);
    for (auto & s : t.scales) s = f32_to_f16(urand(0.002f, 0.05f));
    t.qweight.assign(K * N / 8, 0);
    t.qzeros.assign(K / G * N / 8, 0);
    for (int64_t k = 0; k < K; k++)
        for (int64_t c = 0; c < N / 8; c++) {
            uint32_t word = 0;
            for (int i = 0; i < 8; i++) word |= (uint32_t)q[k * N + 8 * c + kAwqOrder[i]] << (4 * i);
            t.qweight[k * (N / 8) + c] = (int32_t)word;
        }
    for (int64_t g = 0; g < K / G; g++)
        for (int64_t c = 0; c < N / 8; c++) {
            uint32_t word = 0;
            for (int i = 0; i < 8; i++) word |= (uint32_t)z[g * N + 8 * c + kAwqOrder[i]] << (4 * i);
            t.qzeros[g * (N / 8) + c] = (int32_t)word;
        }
    t.w.resize(K * N);
    for (int64_t k = 0; k < K; k++)
        for (int64_t n = 0; n < N; n++)
            t.w[k * N + n] = (q[k * N + n] - z[k / G * N + n]) * (double)f16_to_f32(t.scales[k / G * N + n]);
    return t;
}

using shoal_test::Bk;
using shoal_test::view;

// Runs y = x·Wᵀ on backend b, with x [M][K] given; returns y [M][N].
// y = x·Wᵀ for M rows x [M][K] with an already loaded linear (fresh activations).
std::vector<float> run_matmul(Backend & b, const std::unique_ptr<Linear> & lin, const std::vector<float> & x, int64_t M = 1) {
    Act xa = b.new_act(M, lin->in), ya = b.new_act(M, lin->out);
    b.from_host(xa, x.data());
    b.matmul(*lin, xa, ya);
    std::vector<float> y(M * lin->out);
    b.to_host(ya, 0, M, y.data());
    b.free_act(xa);
    b.free_act(ya);
    return y;
}

std::vector<float> run_matmul(Backend & b, const LinearSource & src, const std::vector<float> & x, int64_t M) {
    return run_matmul(b, b.load_linear(src), x, M);
}


// ---- low-bit formats, packed here from the format descriptions ------------------
// GPTQ: qweight i32 [ceil(K·b/32)][N], value (k, n) at bits k·b .. k·b+b−1 of column
// n's LSB-first bit stream (3-bit straddles words); qzeros i32 [ceil(K/G)][ceil(N·b/32)]
// the same along N; v1 stores z − 1. EfficientQAT native: 32/b whole values per word.
// AutoAWQ gemv: qweight [N][K/8] nibbles along K, qzeros [N][W], scales [N][8W].
// AutoAWQ gemv_fast: pack_intweight(interleave 4, kstride 64), scaled_zeros = −s·z.
struct LowbitCase {
    QFormat fmt;
    int bits;
    int64_t N, K, G;       // G resolved (GPTQ -1 → K)
    int zero_offset;       // 1 = GPTQ v1
    bool act_order;        // g_idx a permutation of groups
    bool sym = false;      // compressed-tensors: no zero points (z = 0 in signed units)
    bool channel = false;  // compressed-tensors strategy channel: G = K, scales [N, 1]
    bool zp_i8 = false;    // compressed-tensors < 0.10: zero points unpacked, I8 [N, ng] signed
};

struct LowbitTensors {
    std::vector<int32_t> qweight, qzeros, g_idx;
    std::vector<int16_t> qweight16;
    std::vector<int8_t> zp8;
    std::vector<uint16_t> scales, szeros; // f16
    std::vector<double> w;                // [K][N] dequantized, double
    LinearSource src;
};

void set_stream_bits(std::vector<int32_t> & words, int64_t word0, int64_t stride, int64_t bit, int b, uint32_t v) {
    for (int t = 0; t < b; t++)
        if ((v >> t) & 1) {
            const int64_t pos = bit + t;
            int32_t & wd = words[(pos / 32) * stride + word0];
            wd = (int32_t)((uint32_t)wd | (1u << (pos % 32)));
        }
}

int64_t awq_w(int64_t K, int64_t G) { // calculate_zeros_width
    const int64_t mult = G >= 128 ? 1 : G == 64 ? 2 : 4;
    const int64_t base = (K / G + 7) / 8;
    return (base + mult - 1) / mult * mult;
}

std::unique_ptr<LowbitTensors> make_lowbit(const LowbitCase & c) {
    auto t = std::make_unique<LowbitTensors>();
    const int64_t K = c.K, N = c.N, G = c.G, ng = (K + G - 1) / G;
    const int b = c.bits, maxq = (1 << b) - 1;
    std::vector<int> q(K * N), zs(ng * N); // zs: the stored zero (v1: z − 1)
    std::vector<double> sc(ng * N);
    for (auto & v : q) v = (int)(rng() % (maxq + 1));
    for (auto & v : zs) v = (int)(rng() % (maxq + 1));
    // g_idx: groups of G inputs, permuted for act-order
    t->g_idx.resize(K);
    for (int64_t k = 0; k < K; k++) t->g_idx[k] = (int32_t)(k / G);
    if (c.act_order) std::shuffle(t->g_idx.begin(), t->g_idx.end(), rng);
    LinearSource & src = t->src;
    src.name = "test.lowbit";
    src.in = K;
    src.out = N;
    src.qfmt = c.fmt;
    src.bits = b;
    src.group_size = (int)G;
    src.zero_offset = c.zero_offset;
    t->w.resize(K * N);
    if (c.fmt == QFormat::Gptq || c.fmt == QFormat::EqatNative) {
        const bool gptq = c.fmt == QFormat::Gptq;
        const int64_t per = 32 / b;
        const int64_t R = gptq ? (K * b + 31) / 32 : (K + per - 1) / per;
        const int64_t ZW = gptq ? (N * b + 31) / 32 : (N + per - 1) / per;
        t->qweight.assign(R * N, 0);
        t->qzeros.assign(ng * ZW, 0);
        for (int64_t k = 0; k < K; k++)
            for (int64_t n = 0; n < N; n++) {
                if (gptq) set_stream_bits(t->qweight, n, N, k * b, b, (uint32_t)q[k * N + n]);
                else t->qweight[(k / per) * N + n] |= (int32_t)((uint32_t)q[k * N + n] << (b * (k % per)));
            }
        for (int64_t g = 0; g < ng; g++)
            for (int64_t n = 0; n < N; n++) {
                if (gptq) set_stream_bits(t->qzeros, g * ZW, 1, n * b, b, (uint32_t)zs[g * N + n]);
                else t->qzeros[g * ZW + n / per] |= (int32_t)((uint32_t)zs[g * N + n] << (b * (n % per)));
            }
        t->scales.resize(ng * N);
        for (int64_t i = 0; i < ng * N; i++) { t->scales[i] = f32_to_f16(urand(0.002f, 0.05f)); sc[i] = f16_to_f32(t->scales[i]); }
        for (int64_t k = 0; k < K; k++)
            for (int64_t n = 0; n < N; n++) {
                const int64_t g = t->g_idx[k];
                t->w[k * N + n] = (q[k * N + n] - (zs[g * N + n] + c.zero_offset)) * sc[g * N + n];
            }
        src.qweight = view("qweight", DType::I32, {R, N}, t->qweight.data(), t->qweight.size() * 4);
        src.qzeros = view("qzeros", DType::I32, {ng, ZW}, t->qzeros.data(), t->qzeros.size() * 4);
        src.scales = view("scales", DType::F16, {ng, N}, t->scales.data(), t->scales.size() * 2);
        if (gptq) {
            src.has_g_idx = true;
            src.g_idx = view("g_idx", DType::I32, {K}, t->g_idx.data(), K * 4);
        }
    } else if (c.fmt == QFormat::CtPacked) {
        // compressed-tensors pack-quantized, from pack_to_int32 as published: signed codes
        // q in [−2^(b−1), 2^(b−1)), stored q + 2^(b−1); weight_packed [N][ceil(K/pf)] with
        // value k at bits b·(k mod pf) of word k/pf; weight_zero_point [ceil(N/pf)][ng] with
        // row n at bits b·(n mod pf) of word n/pf (packed_dim 0); w = (q − zp)·s.
        const int64_t pf = 32 / b, off = 1 << (b - 1), W = (K + pf - 1) / pf, ZR = (N + pf - 1) / pf;
        std::vector<int> qs(K * N), zp(ng * N);
        for (int64_t i = 0; i < K * N; i++) qs[i] = q[i] - (int)off;
        for (int64_t i = 0; i < ng * N; i++) zp[i] = c.sym ? 0 : zs[i] - (int)off;
        t->qweight.assign(N * W, 0);
        for (int64_t n = 0; n < N; n++)
            for (int64_t k = 0; k < K; k++)
                t->qweight[n * W + k / pf] = (int32_t)((uint32_t)t->qweight[n * W + k / pf] | ((uint32_t)(qs[k * N + n] + off) << (b * (k % pf))));
        if (!c.sym) {
            t->qzeros.assign(ZR * ng, 0);
            for (int64_t n = 0; n < N; n++)
                for (int64_t g = 0; g < ng; g++)
                    t->qzeros[(n / pf) * ng + g] = (int32_t)((uint32_t)t->qzeros[(n / pf) * ng + g] | ((uint32_t)(zp[g * N + n] + off) << (b * (n % pf))));
        }
        t->scales.resize(N * ng); // [N][ng], the row's groups together
        for (int64_t n = 0; n < N; n++)
            for (int64_t g = 0; g < ng; g++) {
                t->scales[n * ng + g] = f32_to_f16(urand(0.002f, 0.05f));
                sc[g * N + n] = f16_to_f32(t->scales[n * ng + g]);
            }
        for (int64_t k = 0; k < K; k++)
            for (int64_t n = 0; n < N; n++) {
                const int64_t g = t->g_idx[k];
                t->w[k * N + n] = (double)(qs[k * N + n] - zp[g * N + n]) * sc[g * N + n];
            }
        src.ct_symmetric = c.sym;
        src.qweight = view("weight_packed", DType::I32, {N, W}, t->qweight.data(), t->qweight.size() * 4);
        if (!c.sym && c.zp_i8) {
            t->zp8.resize(N * ng);
            for (int64_t n = 0; n < N; n++)
                for (int64_t g = 0; g < ng; g++) t->zp8[n * ng + g] = (int8_t)zp[g * N + n];
            src.qzeros = view("weight_zero_point", DType::I8, {N, ng}, t->zp8.data(), t->zp8.size());
            src.ct_zp_unpacked = true;
        } else if (!c.sym) {
            src.qzeros = view("weight_zero_point", DType::I32, {ZR, ng}, t->qzeros.data(), t->qzeros.size() * 4);
        }
        src.scales = view("weight_scale", DType::F16, {N, ng}, t->scales.data(), t->scales.size() * 2);
        if (c.act_order) {
            src.has_g_idx = true;
            src.g_idx = view("weight_g_idx", DType::I32, {K}, t->g_idx.data(), K * 4);
        }
    } else if (c.fmt == QFormat::AwqGemv) {
        const int64_t W = awq_w(K, G);
        t->qweight.assign(N * K / 8, 0);
        t->qzeros.assign(N * W, 0);
        t->scales.assign(N * 8 * W, 0);
        for (int64_t n = 0; n < N; n++) {
            for (int64_t k = 0; k < K; k++) t->qweight[n * (K / 8) + k / 8] |= (int32_t)((uint32_t)q[k * N + n] << (4 * (k % 8)));
            for (int64_t g = 0; g < ng; g++) {
                t->qzeros[n * W + g / 8] |= (int32_t)((uint32_t)zs[g * N + n] << (4 * (g % 8)));
                t->scales[n * 8 * W + g] = f32_to_f16(urand(0.002f, 0.05f));
                sc[g * N + n] = f16_to_f32(t->scales[n * 8 * W + g]);
            }
        }
        for (int64_t k = 0; k < K; k++)
            for (int64_t n = 0; n < N; n++) t->w[k * N + n] = (q[k * N + n] - zs[k / G * N + n]) * sc[k / G * N + n];
        src.qweight = view("qweight", DType::I32, {N, K / 8}, t->qweight.data(), t->qweight.size() * 4);
        src.qzeros = view("qzeros", DType::I32, {N, W}, t->qzeros.data(), t->qzeros.size() * 4);
        src.scales = view("scales", DType::F16, {N, 8 * W}, t->scales.data(), t->scales.size() * 2);
    } else { // AwqGemvFast: the numpy reshapes of pack_intweight, step by step
        const int64_t W = awq_w(K, G);
        std::vector<int> a(N * K), b1(N * K);
        for (int64_t n = 0; n < N; n++)
            for (int64_t k = 0; k < K; k++) a[n * K + k] = q[k * N + n]; // [N][K]
        // (K/32, 4, 4, 2) → transpose(1, 0, 2) of the (4, 4, 2) block
        for (int64_t n = 0; n < N; n++)
            for (int64_t t0 = 0; t0 < K; t0 += 32)
                for (int i0 = 0; i0 < 4; i0++)
                    for (int i1 = 0; i1 < 4; i1++)
                        for (int i2 = 0; i2 < 2; i2++) b1[n * K + t0 + i1 * 8 + i0 * 2 + i2] = a[n * K + t0 + i0 * 8 + i1 * 2 + i2];
        // each 8 as (4, 2) → transpose → (2, 4)
        for (int64_t n = 0; n < N; n++)
            for (int64_t e0 = 0; e0 < K; e0 += 8)
                for (int d = 0; d < 4; d++)
                    for (int e = 0; e < 2; e++) a[n * K + e0 + e * 4 + d] = b1[n * K + e0 + d * 2 + e];
        // (N/4, 4, K/64, 64) → transpose(0, 2, 1, 3) → flat (N/4, K/64, 256) seen as (64, 4): 4 nibbles per int16
        t->qweight16.assign(N / 4 * K, 0);
        for (int64_t i = 0; i < N / 4; i++)
            for (int64_t kb = 0; kb < K / 64; kb++)
                for (int r = 0; r < 4; r++)
                    for (int j = 0; j < 64; j++) {
                        const int64_t f = r * 64 + j;
                        int16_t & h = t->qweight16[i * K + kb * 64 + f / 4];
                        h = (int16_t)((uint16_t)h | (uint16_t)(a[(4 * i + r) * K + kb * 64 + j] << (4 * (f % 4))));
                    }
        t->scales.assign(8 * W * N, 0);
        t->szeros.assign(8 * W * N, 0);
        std::vector<double> szd(ng * N);
        for (int64_t g = 0; g < ng; g++)
            for (int64_t n = 0; n < N; n++) {
                t->scales[g * N + n] = f32_to_f16(urand(0.002f, 0.05f));
                sc[g * N + n] = f16_to_f32(t->scales[g * N + n]);
                t->szeros[g * N + n] = f32_to_f16((float)(-sc[g * N + n] * zs[g * N + n]));
                szd[g * N + n] = f16_to_f32(t->szeros[g * N + n]);
            }
        for (int64_t k = 0; k < K; k++)
            for (int64_t n = 0; n < N; n++) t->w[k * N + n] = q[k * N + n] * sc[k / G * N + n] + szd[k / G * N + n];
        src.qweight = view("qweight", DType::I16, {N / 4, K}, t->qweight16.data(), t->qweight16.size() * 2);
        src.qzeros = view("scaled_zeros", DType::F16, {8 * W, N}, t->szeros.data(), t->szeros.size() * 2);
        src.scales = view("scales", DType::F16, {8 * W, N}, t->scales.data(), t->scales.size() * 2);
    }
    return t;
}

// load_linear releases the source pages (madvise on mapped files; on this heap
// memory it may zero them), so each load gets a fresh copy of the tensors.
std::unique_ptr<LowbitTensors> clone(const LowbitTensors & t) {
    auto c = std::make_unique<LowbitTensors>(t);
    auto repoint = [](TensorView & v, const void * p) { v.data = p; };
    LinearSource & s = c->src;
    if (s.qfmt == QFormat::AwqGemvFast) {
        repoint(s.qweight, c->qweight16.data());
        repoint(s.qzeros, c->szeros.data());
    } else if (s.ct_zp_unpacked) {
        repoint(s.qweight, c->qweight.data());
        repoint(s.qzeros, c->zp8.data());
    } else {
        repoint(s.qweight, c->qweight.data());
        repoint(s.qzeros, c->qzeros.data());
    }
    repoint(s.scales, c->scales.data());
    repoint(s.g_idx, c->g_idx.data());
    return c;
}

const char * fmt_name(QFormat f) {
    switch (f) {
        case QFormat::Gptq: return "gptq";
        case QFormat::EqatNative: return "eqat";
        case QFormat::AwqGemv: return "awq-gemv";
        case QFormat::AwqGemvFast: return "awq-gemv-fast";
        case QFormat::CtPacked: return "compressed-tensors";
        default: return "?";
    }
}

void test_lowbit_matmul(std::vector<Bk> & bks, Backend & ref) {
    std::vector<LowbitCase> cases;
    struct S { int64_t N, K, G; };
    const S shapes[] = {{32, 128, 32}, {40, 256, 64}, {24, 160, 32}, {16, 224, 32}, {8, 96, 32}, {72, 384, 128}, {48, 512, 512}};
    for (int bits : {2, 3, 4, 8})
        for (const S & sh : shapes) {
            if (bits == 4 && !(sh.G == 32 || sh.G % 64 == 0)) continue;
            cases.push_back({QFormat::Gptq, bits, sh.N, sh.K, sh.G, 1, false});
            cases.push_back({QFormat::Gptq, bits, sh.N, sh.K, sh.G, 0, sh.K / sh.G > 1});
            cases.push_back({QFormat::EqatNative, bits, sh.N, sh.K, sh.G, 0, false});
        }
    for (const S & sh : {S{32, 128, 32}, S{40, 256, 64}, S{64, 512, 128}, S{24, 384, 128}}) {
        cases.push_back({QFormat::AwqGemv, 4, sh.N, sh.K, sh.G, 0, false});
        cases.push_back({QFormat::AwqGemvFast, 4, sh.N, sh.K, sh.G, 0, false});
    }
    // compressed-tensors: W4A16 / W8A16, sym and asym, group (with and without act-order)
    // and channel (K = 96, 160: 4-bit kernels take the row's scale in groups of 32); odd
    // N (40, 24, 72) leaves the last zero-point word partly empty
    for (int bits : {4, 8})
        for (bool sym : {true, false}) {
            for (const S & sh : {S{32, 128, 32}, S{40, 256, 64}, S{72, 384, 128}, S{24, 512, 128}}) {
                cases.push_back({QFormat::CtPacked, bits, sh.N, sh.K, sh.G, 0, false, sym, false});
                cases.push_back({QFormat::CtPacked, bits, sh.N, sh.K, sh.G, 0, true, sym, false});
            }
            for (const S & sh : {S{32, 128, 128}, S{40, 96, 96}, S{8, 160, 160}, S{16, 512, 512}})
                cases.push_back({QFormat::CtPacked, bits, sh.N, sh.K, sh.G, 0, false, sym, true});
        }
    // compressed-tensors < 0.10: asymmetric zero points saved unpacked (I8 [N, ng], signed)
    for (int bits : {4, 8}) {
        cases.push_back({QFormat::CtPacked, bits, 40, 256, 64, 0, false, false, false, true});
        cases.push_back({QFormat::CtPacked, bits, 24, 160, 160, 0, false, false, true, true});
    }
    for (const LowbitCase & c : cases) {
        auto t = make_lowbit(c);
        for (int64_t M : {1, 3, 17}) {
            const std::vector<float> x = rand_vec(M * c.K);
            std::vector<double> want(M * c.N), tol_dbl(M * c.N), tol_ref(M * c.N);
            for (int64_t m = 0; m < M; m++) {
                const float * xm = &x[m * c.K];
                for (int64_t n = 0; n < c.N; n++) {
                    double acc = 0, mag = 0, q8 = 0, zt = 0;
                    for (int64_t k = 0; k < c.K; k++) {
                        const double wk = t->w[k * c.N + n];
                        acc += wk * xm[k];
                        mag += std::fabs(wk * xm[k]);
                        if (M < 4 || c.bits == 4) { // int8 activations: decode, and INT4 prefill (q4_gemm)
                            double amax = 0;
                            for (int64_t j = k / 32 * 32; j < k / 32 * 32 + 32; j++) amax = std::max(amax, (double)std::fabs(xm[j]));
                            // the block's amax of the (maybe permuted) activations is at most the row max
                            if (c.act_order) for (int64_t j = 0; j < c.K; j++) amax = std::max(amax, (double)std::fabs(xm[j]));
                            q8 += std::fabs(wk) * amax / 254.0;
                        }
                    }
                    // f16 rounding of −s·z: |s·z|·2^-11 per group, times |Σx| over the group
                    for (int64_t g = 0; g < (c.K + c.G - 1) / c.G; g++) {
                        double gs = 0, szmax = 0;
                        for (int64_t k = 0; k < c.K; k++) {
                            const int64_t gk = c.fmt == QFormat::Gptq || c.fmt == QFormat::CtPacked ? t->g_idx[k] : k / c.G;
                            if (gk != g) continue;
                            gs += xm[k];
                        }
                        szmax = 0.05 * (1 << c.bits) + 0.05;
                        zt += szmax * std::fabs(gs) / 2048.0;
                    }
                    want[m * c.N + n] = acc;
                    tol_dbl[m * c.N + n] = q8 * 1.0001 + zt + 1e-5 * mag + 1e-6;
                    tol_ref[m * c.N + n] = 2e-5 * mag + 1e-6;
                }
            }
            std::ostringstream tag;
            tag << fmt_name(c.fmt) << (c.zero_offset ? "-v1" : "") << (c.act_order ? "-act" : "") << (c.sym ? "-sym" : "")
                << (c.channel ? "-channel" : "") << (c.zp_i8 ? "-zp-i8" : "") << " w" << c.bits << " N=" << c.N
                << " K=" << c.K << " G=" << c.G << " M=" << M;
            const std::vector<float> yref = run_matmul(ref, clone(*t)->src, x, M);
            check_close("scalar: " + tag.str() + " vs double", yref, want, tol_dbl);
            std::vector<double> yref_d(yref.begin(), yref.end());
            for (auto & bk : bks) {
                const std::vector<float> y = run_matmul(*bk.b, clone(*t)->src, x, M);
                check_close(bk.name + ": " + tag.str() + " vs scalar", y, yref_d, tol_ref);
                check_close(bk.name + ": " + tag.str() + " vs double", y, want, tol_dbl);
            }
        }
        auto lin = ref.load_linear(clone(*t)->src);
        // kernel groups: a 4-bit channel scale over K % 64 != 0 is repeated per 32 inputs
        const int64_t kg = c.channel && c.bits == 4 && c.K % 64 != 0 ? 32 : c.G;
        const size_t ng = (size_t)(c.K / kg), perm = c.act_order ? (size_t)c.K * 4 : 0;
        check(lin->bytes() == (size_t)(c.N * c.K * c.bits / 8) + (size_t)c.N * ng * 4 + perm,
              std::string("lowbit Linear::bytes ") + fmt_name(c.fmt) + " w" + std::to_string(c.bits));
        const std::string kind = c.bits == 4 ? "q4" : "q" + std::to_string(c.bits);
        check(lin->kind() == kind, std::string("lowbit Linear::kind ") + kind);
    }
    // exact 3-bit straddling: known words decode to known values (bits 30-31 of word 0 and
    // bit 0 of word 1 hold value 10; bit 31 of word 1 and bits 0-1 of word 2 hold value 21)
    {
        LowbitCase c{QFormat::Gptq, 3, 8, 32, 32, 0, false};
        auto t = make_lowbit(c);
        std::vector<uint8_t> q(8 * 32);
        std::vector<float> s(8), sz(8);
        lowbit_decode_rows(t->src, 0, 8, q.data(), s.data(), sz.data());
        bool ok = true;
        for (int64_t n = 0; n < 8; n++)
            for (int64_t k = 0; k < 32; k++) {
                const uint32_t w0 = (uint32_t)t->qweight[0 * 8 + n], w1 = (uint32_t)t->qweight[1 * 8 + n], w2 = (uint32_t)t->qweight[2 * 8 + n];
                uint32_t v;
                if (k < 10) v = (w0 >> (3 * k)) & 7;
                else if (k == 10) v = (w0 >> 30) | ((w1 & 1) << 2);
                else if (k < 21) v = (w1 >> (3 * (k - 11) + 1)) & 7;
                else if (k == 21) v = (w1 >> 31) | ((w2 & 3) << 1);
                else v = (w2 >> (3 * (k - 22) + 2)) & 7;
                ok = ok && q[n * 32 + k] == v;
            }
        check(ok, "GPTQ 3-bit: 32 values in 3 words, straddling values 10 and 21 exact");
    }
    // errors: unsupported group, K not a multiple of 32, g_idx groups of the wrong size
    auto expect = [&](const std::string & what, shoal_status st, LinearSource src) {
        bool threw = false;
        std::string msg;
        try { ref.load_linear(src); } catch (const Error & e) { threw = e.status == st; msg = e.what(); }
        check(threw && msg.find("test.lowbit") != std::string::npos, what + " → " + shoal_status_name(st) + " naming the linear (" + msg + ")");
    };
    {
        auto t = make_lowbit({QFormat::Gptq, 3, 32, 96, 48, 0, false});
        expect("GPTQ group 48", SHOAL_ERR_GROUP_SIZE, t->src);
        auto t2 = make_lowbit({QFormat::Gptq, 4, 32, 256, 32, 0, true});
        t2->g_idx[0] = (t2->g_idx[0] + 1) % 8; // one group now has 33 inputs, another 31
        expect("GPTQ g_idx with unequal groups", SHOAL_ERR_QUANT_METADATA, t2->src);
        auto t3 = make_lowbit({QFormat::Gptq, 4, 32, 256, 32, 0, true});
        t3->g_idx[5] = 8; // out of range
        expect("GPTQ g_idx out of range", SHOAL_ERR_QUANT_METADATA, t3->src);
        auto t4 = make_lowbit({QFormat::Gptq, 4, 32, 256, 96, 0, false}); // 256 % 96 != 0
        expect("GPTQ group not dividing K", SHOAL_ERR_GROUP_SIZE, t4->src);
    }
}

// ---- precision exact ---------------------------------------------------------------
// Backends made with Precision::Exact hold every 2/3/4/8-bit linear as ExactRows: (q − z)·s
// in f32 with f32 activations. Checked on every ISA, at 1 and 2 threads, decode (M 1, 3)
// and prefill (M 17), for AutoAWQ gemm (F16 and F32 scales: the fast path rounds both s and
// −s·z to f16) and every low-bit format:
//  - matmul against the double product of the checkpoint's (q − z)·s within
//    kExactTol·Σ|w·x| (+1e-7): f32 rounding only, no int8 activations (whose bound above is
//    amax/254 per input, ~1e-2 of Σ|w·x|), no f16 −s·z;
//  - exact_dequant of every ISA bit-identical to the scalar kernel, and to (float)((q − z)·s)
//    of the double weights (one rounding; AutoAWQ gemv_fast stores −s·z, so z = −sz/s is
//    itself rounded: within 2^-22·(|w| + 1) there).
constexpr double kExactTol = 2e-6;

// An AutoAWQ gemm source over copies of the tensors (scales as F16 or F32).
struct AwqSource {
    std::vector<int32_t> qw, qz;
    std::vector<uint16_t> s16;
    std::vector<float> s32;
    LinearSource src;
};
std::unique_ptr<AwqSource> awq_source(const AwqTensors & t, const std::vector<float> * f32_scales) {
    auto a = std::make_unique<AwqSource>();
    a->qw = t.qweight;
    a->qz = t.qzeros;
    LinearSource & src = a->src;
    src.name = "test.exact";
    src.in = t.K;
    src.out = t.N;
    src.awq = true;
    src.group_size = (int)t.G;
    src.qweight = view("qweight", DType::I32, {t.K, t.N / 8}, a->qw.data(), a->qw.size() * 4);
    src.qzeros = view("qzeros", DType::I32, {t.K / t.G, t.N / 8}, a->qz.data(), a->qz.size() * 4);
    if (f32_scales) {
        a->s32 = *f32_scales;
        src.scales = view("scales", DType::F32, {t.K / t.G, t.N}, a->s32.data(), a->s32.size() * 4);
    } else {
        a->s16 = t.scales;
        src.scales = view("scales", DType::F16, {t.K / t.G, t.N}, a->s16.data(), a->s16.size() * 2);
    }
    return a;
}

// One case: a fresh source per load (loads release the source pages), the double
// weights w [K][N] and a label.
struct ExactCase {
    std::string tag;
    int64_t N, K;
    std::vector<double> w;
    std::function<LinearSource()> src; // keeps its tensors alive until the next call
    bool z_rounded = false;            // gemv_fast: z = −sz/s rounded to f32
};

void test_exact(std::vector<Bk> & bks, Backend & ref) {
    std::vector<ExactCase> cases;
    struct S { int64_t N, K, G; };
    for (const S & sh : {S{8, 32, 32}, S{24, 96, 32}, S{40, 192, 64}, S{136, 384, 128}, S{32, 2048, 128}})
        for (bool f32s : {false, true}) {
            auto t = std::make_shared<AwqTensors>(make_awq(sh.K, sh.N, sh.G));
            auto sc = std::make_shared<std::vector<float>>();
            if (f32s) { // F32 scales with low bits an f16 cannot hold
                for (uint16_t h : t->scales) sc->push_back(f16_to_f32(h) * (1.0f + urand(-1e-3f, 1e-3f)));
                for (int64_t k = 0; k < sh.K; k++)
                    for (int64_t n = 0; n < sh.N; n++) {
                        const double s16 = f16_to_f32(t->scales[k / sh.G * sh.N + n]), s = (*sc)[k / sh.G * sh.N + n];
                        t->w[k * sh.N + n] = t->w[k * sh.N + n] / s16 * s; // (q − z) exact in double
                    }
            }
            auto holder = std::make_shared<std::unique_ptr<AwqSource>>();
            ExactCase c;
            std::ostringstream tag;
            tag << "awq-gemm " << (f32s ? "F32" : "F16") << " scales N=" << sh.N << " K=" << sh.K << " G=" << sh.G;
            c.tag = tag.str();
            c.N = sh.N;
            c.K = sh.K;
            c.w = t->w;
            c.src = [t, sc, f32s, holder]() {
                *holder = awq_source(*t, f32s ? sc.get() : nullptr);
                return (*holder)->src;
            };
            cases.push_back(std::move(c));
        }
    std::vector<LowbitCase> lc;
    for (int bits : {2, 3, 4, 8}) {
        lc.push_back({QFormat::Gptq, bits, 40, 256, 64, 1, false});
        lc.push_back({QFormat::Gptq, bits, 24, 384, 128, 0, true});
        lc.push_back({QFormat::EqatNative, bits, 16, 224, 32, 0, false});
    }
    lc.push_back({QFormat::AwqGemv, 4, 40, 256, 64, 0, false});
    lc.push_back({QFormat::AwqGemvFast, 4, 24, 384, 128, 0, false});
    for (int bits : {4, 8})
        for (bool sym : {true, false}) {
            lc.push_back({QFormat::CtPacked, bits, 40, 256, 64, 0, true, sym, false});
            lc.push_back({QFormat::CtPacked, bits, 24, 160, 160, 0, false, sym, true}); // channel, K % 64 != 0
        }
    lc.push_back({QFormat::CtPacked, 8, 40, 256, 64, 0, false, false, false, true});
    for (const LowbitCase & l : lc) {
        auto t = std::shared_ptr<LowbitTensors>(make_lowbit(l).release());
        auto holder = std::make_shared<std::unique_ptr<LowbitTensors>>();
        ExactCase c;
        std::ostringstream tag;
        tag << fmt_name(l.fmt) << (l.zero_offset ? "-v1" : "") << (l.act_order ? "-act" : "") << (l.sym ? "-sym" : "")
            << (l.channel ? "-channel" : "") << (l.zp_i8 ? "-zp-i8" : "") << " w" << l.bits << " N=" << l.N << " K=" << l.K
            << " G=" << l.G;
        c.tag = tag.str();
        c.N = l.N;
        c.K = l.K;
        c.w = t->w;
        c.z_rounded = l.fmt == QFormat::AwqGemvFast;
        c.src = [t, holder]() {
            *holder = clone(*t);
            return (*holder)->src;
        };
        cases.push_back(std::move(c));
    }

    double worst = 0; // max |y − want| / Σ|w·x| over every ISA and case
    ThreadPool pool(1);
    for (ExactCase & c : cases) {
        // dequant: every ISA's table bit-identical to the scalar kernel and to float((q − z)·s)
        const ExactBuffer eb = exact_repack(c.src(), pool);
        std::vector<float> dref((size_t)(c.N * c.K));
        kernels_ref().exact_dequant(eb.view(), 0, c.N, dref.data());
        bool exact_ok = true;
        for (int64_t n = 0; n < c.N; n++)
            for (int64_t j = 0; j < c.K; j++) {
                const int64_t k = eb.perm.empty() ? j : eb.perm[j]; // column j holds input perm[j]
                const double w = c.w[k * c.N + n];
                const float got = dref[n * c.K + j];
                // gemv_fast: z's rounding moves w by |s·z|·2^-24 (|s·z| < 1 here)
                if (c.z_rounded ? !(std::fabs(got - w) <= std::ldexp(std::fabs(w) + 1.0, -22)) : got != (float)w) exact_ok = false;
            }
        check(exact_ok, "exact_dequant scalar: " + c.tag + (c.z_rounded ? " within 2^-22 of" : " ==") + " float((q − z)·s)");
        std::istringstream is(cpu_isas());
        for (std::string isa; is >> isa;) {
            std::vector<float> d((size_t)(c.N * c.K), -1.0f);
            cpu_kernels(isa)->exact_dequant(eb.view(), 0, c.N, d.data());
            check(d == dref, isa + ": exact_dequant bit-identical to scalar, " + c.tag);
        }
        // matmul through the backends (decode: exact_matvec; prefill: exact_dequant + gemm_f32)
        for (int64_t M : {1, 3, 17}) {
            const std::vector<float> x = rand_vec(M * c.K);
            std::vector<double> want(M * c.N), tol(M * c.N), mag(M * c.N);
            for (int64_t m = 0; m < M; m++)
                for (int64_t n = 0; n < c.N; n++) {
                    double acc = 0, a = 0;
                    for (int64_t k = 0; k < c.K; k++) {
                        acc += c.w[k * c.N + n] * x[m * c.K + k];
                        a += std::fabs(c.w[k * c.N + n] * x[m * c.K + k]);
                    }
                    want[m * c.N + n] = acc;
                    mag[m * c.N + n] = a;
                    tol[m * c.N + n] = kExactTol * a + 1e-7;
                }
            const std::string tag = "exact " + c.tag + " M=" + std::to_string(M);
            auto run = [&](const std::string & name, Backend & b) {
                const std::vector<float> y = run_matmul(b, c.src(), x, M);
                check_close(name + ": " + tag + " vs double", y, want, tol);
                for (size_t i = 0; i < y.size(); i++) worst = std::max(worst, std::fabs(y[i] - want[i]) / (mag[i] + 1e-30));
            };
            run("scalar", ref);
            for (auto & bk : bks) run(bk.name, *bk.b);
        }
        auto lin = ref.load_linear(c.src());
        const size_t ng = (size_t)(c.K / eb.group);
        check(lin->bytes() == (size_t)(c.N * c.K * eb.bits / 8) + (size_t)c.N * ng * 8 + eb.perm.size() * 4 &&
                  lin->kind() == (eb.bits == 4 ? std::string("q4") : "q" + std::to_string(eb.bits)),
              "exact Linear::bytes/kind " + c.tag);
    }
    std::printf("exact: worst |y − double| / Σ|w·x| = %.2e over %zu cases × ISAs × M (bound %.0e)\n", worst, cases.size(), kExactTol);
    // the exact backend reports its precision; the int8 lm_head is not made in this mode
    check(std::string(ref.precision()) == "exact" && std::string(make_cpu_backend("scalar", 1)->precision()) == "fast",
          "Backend::precision");
    std::vector<float> wf(64 * 32, 0.01f);
    LinearSource head;
    head.name = "head";
    head.in = 32;
    head.out = 64;
    head.weight = view("head", DType::F32, {64, 32}, wf.data(), wf.size() * 4);
    check(ref.load_linear_int8(head) == nullptr && make_cpu_backend("scalar", 1)->load_linear_int8(head) != nullptr,
          "precision exact keeps the output matrix as stored (no int8 lm_head)");
    bool threw = false;
    try { make_backend("cuda", "auto", 1, Precision::Exact); } catch (const Error & e) { threw = e.status == SHOAL_ERR_BACKEND; }
    check(threw, "precision exact on backend cuda → SHOAL_ERR_BACKEND");
    check(std::string(make_backend("auto", "scalar", 1, Precision::Exact)->name()) == "cpu", "precision exact: auto takes the CPU");
}

// ---- tests ----------------------------------------------------------------------

void test_half() {
    // every finite f16 survives f16 → f32 → f16; every f32 rounds to a nearest f16
    bool ok = true;
    for (uint32_t h = 0; h < 65536; h++) {
        const float f = f16_to_f32((uint16_t)h);
        if (std::isnan(f)) continue;
        if (f32_to_f16(f) != h) ok = false;
    }
    check(ok, "f16 round trip of all 65536 codes");
    check(f16_to_f32(0x3c00) == 1.0f && f16_to_f32(0xc000) == -2.0f && f16_to_f32(0x0001) == 5.9604645e-8f &&
          f16_to_f32(0x7bff) == 65504.0f && std::isinf(f16_to_f32(0x7c00)),
          "f16 decode of known codes");
    check(f32_to_f16(1.0f + 1.0f / 2048) == 0x3c00 && f32_to_f16(1.0f + 3.0f / 2048) == 0x3c02 &&
          f32_to_f16(65520.0f) == 0x7c00 && f32_to_f16(1e-9f) == 0 && f32_to_f16(std::nanf("")) == 0x7e00,
          "f16 ties-to-even, overflow, underflow, nan");
    ok = true;
    for (int i = 0; i < 200000; i++) {
        const float f = std::ldexp(urand(-1, 1), (int)(rng() % 40) - 26);
        const uint16_t h = f32_to_f16(f);
        const double e = std::fabs((double)f16_to_f32(h) - f);
        // neighbours are no closer (h±1 stays in the same sign)
        for (int d : {-1, 1}) {
            const uint16_t n = (uint16_t)(h + d);
            if ((n & 0x7fff) >= 0x7c00 || (n & 0x8000) != (h & 0x8000)) continue;
            if (std::fabs((double)f16_to_f32(n) - f) < e) ok = false;
        }
    }
    check(ok, "f32 → f16 is round-to-nearest on 200000 random values");
    check(bf16_to_f32(0x3f80) == 1.0f && bf16_to_f32(0xc040) == -3.0f, "bf16 decode");
    check(dtype_size(DType::F16) == 2 && dtype_size(DType::I64) == 8 && std::string(dtype_name(DType::BF16)) == "BF16",
          "dtype_size / dtype_name");
}

void test_q4_matmul(std::vector<Bk> & bks, Backend & ref) {
    struct S { int64_t N, K, G; };
    const S shapes[] = {{8, 32, 32},   {24, 96, 32},   {48, 160, 32},  {16, 224, 32},  {40, 192, 64},
                        {72, 320, 64}, {64, 128, 128}, {136, 384, 128}, {256, 1024, 128}, {32, 2048, 128},
                        // K/G past one vector of scales and not a multiple of it (the f16 scale
                        // rows' tails): 20 groups, and TinyLlama's down projection's 44
                        {24, 640, 32}, {16, 5632, 128}};
    for (const S & s : shapes) {
        const AwqTensors t = make_awq(s.K, s.N, s.G);
        for (int64_t M : {1, 3, 17, 64, 7}) {
            const std::vector<float> x = rand_vec(M * s.K);
            // double reference, and the tolerance: int8 activations (decode and
            // prefill alike) err by <= d/2 = amax/254 per input; the f16 −s·z term by
            // 2^-11·|s·z·Σx| per group; f32 accumulation by 1e-5·Σ|w·x|.
            std::vector<double> want(M * s.N), tol_dbl(M * s.N), tol_ref(M * s.N);
            for (int64_t m = 0; m < M; m++) {
                const float * xm = &x[m * s.K];
                for (int64_t n = 0; n < s.N; n++) {
                    double acc = 0, mag = 0, q8 = 0, zt = 0;
                    for (int64_t k = 0; k < s.K; k++) {
                        acc += t.w[k * s.N + n] * xm[k];
                        mag += std::fabs(t.w[k * s.N + n] * xm[k]);
                        double amax = 0;
                        for (int64_t j = k / 32 * 32; j < k / 32 * 32 + 32; j++) amax = std::max(amax, (double)std::fabs(xm[j]));
                        q8 += std::fabs(t.w[k * s.N + n]) * amax / 254.0;
                    }
                    for (int64_t g = 0; g < s.K / s.G; g++) {
                        double gs = 0, sz = 0;
                        for (int64_t k = g * s.G; k < (g + 1) * s.G; k++) gs += xm[k];
                        const double sc = f16_to_f32(t.scales[g * s.N + n]);
                        const uint32_t zw = (uint32_t)t.qzeros[g * (s.N / 8) + n / 8];
                        int nib = 0;
                        while (kAwqOrder[nib] != n % 8) nib++;
                        sz = sc * ((zw >> (4 * nib)) & 15);
                        zt += sz * std::fabs(gs) / 2048.0;
                    }
                    want[m * s.N + n] = acc;
                    tol_dbl[m * s.N + n] = q8 * 1.0001 + zt + 1e-5 * mag + 1e-6;
                    tol_ref[m * s.N + n] = 1e-5 * mag + 1e-6; // same q8 semantics as the reference
                }
            }
            // Each backend repacks its own copy (load_linear releases the source pages).
            auto src_of = [&](std::vector<int32_t> & qw, std::vector<int32_t> & qz, std::vector<uint16_t> & sc) {
                LinearSource src;
                src.name = "test.q4";
                src.in = s.K;
                src.out = s.N;
                src.awq = true;
                src.group_size = (int)s.G;
                src.qweight = view("qweight", DType::I32, {s.K, s.N / 8}, qw.data(), qw.size() * 4);
                src.qzeros = view("qzeros", DType::I32, {s.K / s.G, s.N / 8}, qz.data(), qz.size() * 4);
                src.scales = view("scales", DType::F16, {s.K / s.G, s.N}, sc.data(), sc.size() * 2);
                return src;
            };
            std::vector<int32_t> qw = t.qweight, qz = t.qzeros;
            std::vector<uint16_t> sc = t.scales;
            const std::vector<float> yref = run_matmul(ref, src_of(qw, qz, sc), x, M);
            std::ostringstream tag;
            tag << "q4 matmul N=" << s.N << " K=" << s.K << " G=" << s.G << " M=" << M;
            check_close("scalar: " + tag.str() + " vs double", yref, want, tol_dbl);
            std::vector<double> yref_d(yref.begin(), yref.end());
            for (auto & bk : bks) {
                std::vector<int32_t> qw2 = t.qweight, qz2 = t.qzeros;
                std::vector<uint16_t> sc2 = t.scales;
                const std::vector<float> y = run_matmul(*bk.b, src_of(qw2, qz2, sc2), x, M);
                check_close(bk.name + ": " + tag.str() + " vs scalar", y, yref_d, tol_ref);
                check_close(bk.name + ": " + tag.str() + " vs double", y, want, tol_dbl);
            }
        }
    }
    // bytes(): 0.5 B per weight + two f16 per (row, group)
    std::vector<int32_t> qw(2048 * 256 / 8), qz(2048 / 128 * 256 / 8);
    std::vector<uint16_t> sc(2048 / 128 * 256, f32_to_f16(0.01f));
    LinearSource src;
    src.name = "bytes";
    src.in = 2048;
    src.out = 256;
    src.awq = true;
    src.group_size = 128;
    src.qweight = view("qweight", DType::I32, {2048, 32}, qw.data(), qw.size() * 4);
    src.qzeros = view("qzeros", DType::I32, {16, 32}, qz.data(), qz.size() * 4);
    src.scales = view("scales", DType::F16, {16, 256}, sc.data(), sc.size() * 2);
    auto lin = ref.load_linear(src);
    check(lin->bytes() == (size_t)(256 * 2048 / 2 + 256 * 16 * 4) && std::string(lin->kind()) == "q4", "q4 Linear::bytes/kind");
    // unsupported group size is rejected with its status
    src.group_size = 96;
    bool threw = false;
    try { ref.load_linear(src); } catch (const Error & e) { threw = e.status == SHOAL_ERR_GROUP_SIZE; }
    check(threw, "q4 group 96 (2048 % 96 != 0) rejected with SHOAL_ERR_GROUP_SIZE");
}

// Decode reuses the int8 activations of the previous matmul when its input is
// identical (q/k/v, gate/up): results must equal fresh computations, also when
// the group size differs or the same buffer gets new values. Exact equality.
void test_q8_reuse(std::vector<Bk> & bks) {
    const int64_t K = 256, N = 64;
    AwqTensors t1 = make_awq(K, N, 128), t2 = make_awq(K, N, 64);
    auto load = [&](Backend & b, AwqTensors & t) {
        std::vector<int32_t> qw = t.qweight, qz = t.qzeros;
        std::vector<uint16_t> sc = t.scales;
        LinearSource src;
        src.name = "reuse";
        src.in = K;
        src.out = N;
        src.awq = true;
        src.group_size = (int)t.G;
        src.qweight = view("qweight", DType::I32, {K, N / 8}, qw.data(), qw.size() * 4);
        src.qzeros = view("qzeros", DType::I32, {K / t.G, N / 8}, qz.data(), qz.size() * 4);
        src.scales = view("scales", DType::F16, {K / t.G, N}, sc.data(), sc.size() * 2);
        return b.load_linear(src);
    };
    const std::vector<float> xa = rand_vec(K), xb = rand_vec(K);
    for (auto & bk : bks) {
        Backend & b = *bk.b;
        // each reference on a backend of its own: nothing to reuse
        auto fresh = [&](AwqTensors & t, const std::vector<float> & x) {
            auto b2 = make_cpu_backend(b.isa(), b.n_threads());
            return run_matmul(*b2, load(*b2, t), x);
        };
        const std::vector<float> f1a = fresh(t1, xa), f2a = fresh(t2, xa), f1b = fresh(t1, xb);
        auto l1 = load(b, t1), l2 = load(b, t2);
        Act x = b.new_act(1, K), y = b.new_act(1, N);
        std::vector<float> r1(N), r2(N), r3(N);
        b.from_host(x, xa.data());
        b.matmul(*l1, x, y);
        b.matmul(*l2, x, y); // same input, other group size
        b.to_host(y, 0, 1, r2.data());
        b.matmul(*l1, x, y); // same input again
        b.to_host(y, 0, 1, r1.data());
        b.from_host(x, xb.data()); // same buffer, new values
        b.matmul(*l1, x, y);
        b.to_host(y, 0, 1, r3.data());
        b.free_act(x);
        b.free_act(y);
        check(r1 == f1a && r2 == f2a && r3 == f1b, bk.name + ": q8 activation reuse gives fresh results");
    }
}

void test_float_matmul(std::vector<Bk> & bks, Backend & ref) {
    struct S { int64_t N, K; };
    // {300, 520}: several prefill tasks of a few panels and K slices
    const S shapes[] = {{7, 13}, {33, 100}, {64, 257}, {130, 1000}, {5, 4096}, {16, 64}, {300, 520}};
    for (DType dt : {DType::F32, DType::F16, DType::BF16}) {
        for (const S & s : shapes) {
            // weights stored in dt; the double reference uses the decoded values
            std::vector<float> wf = rand_vec(s.N * s.K);
            std::vector<uint16_t> wh(s.N * s.K);
            std::vector<double> wd(s.N * s.K);
            for (int64_t i = 0; i < s.N * s.K; i++) {
                if (dt == DType::F16) { wh[i] = f32_to_f16(wf[i]); wd[i] = f16_to_f32(wh[i]); }
                else if (dt == DType::BF16) {
                    uint32_t u;
                    std::memcpy(&u, &wf[i], 4);
                    wh[i] = (uint16_t)(u >> 16);
                    wd[i] = bf16_to_f32(wh[i]);
                } else wd[i] = wf[i];
            }
            const bool with_bias = s.N % 2 == 1;
            std::vector<float> bias = rand_vec(s.N);
            LinearSource src;
            src.name = "test.float";
            src.in = s.K;
            src.out = s.N;
            const void * wp = dt == DType::F32 ? (const void *)wf.data() : (const void *)wh.data();
            src.weight = view("weight", dt, {s.N, s.K}, wp, s.N * s.K * dtype_size(dt));
            src.has_bias = with_bias;
            src.bias = view("bias", DType::F32, {s.N}, bias.data(), s.N * 4);
            for (int64_t M : {1, 3, 17, 64, 530}) { // 530: more than one block of rows (kGemmRowBlock)
                const std::vector<float> x = rand_vec(M * s.K);
                // tolerance: f32 accumulation, 1e-5·Σ|w·x| (K <= 4096)
                std::vector<double> want(M * s.N), tol(M * s.N);
                for (int64_t m = 0; m < M; m++)
                    for (int64_t n = 0; n < s.N; n++) {
                        double acc = with_bias ? bias[n] : 0.0, mag = std::fabs(acc);
                        for (int64_t k = 0; k < s.K; k++) {
                            acc += wd[n * s.K + k] * x[m * s.K + k];
                            mag += std::fabs(wd[n * s.K + k] * x[m * s.K + k]);
                        }
                        want[m * s.N + n] = acc;
                        tol[m * s.N + n] = 1e-5 * mag + 1e-6;
                    }
                std::ostringstream tag;
                tag << dtype_name(dt) << " matmul N=" << s.N << " K=" << s.K << " M=" << M << (with_bias ? " +bias" : "");
                const std::vector<float> yref = run_matmul(ref, src, x, M);
                check_close("scalar: " + tag.str() + " vs double", yref, want, tol);
                std::vector<double> yref_d(yref.begin(), yref.end());
                for (auto & bk : bks) {
                    const std::vector<float> y = run_matmul(*bk.b, src, x, M);
                    check_close(bk.name + ": " + tag.str() + " vs scalar", y, yref_d, tol);
                    check_close(bk.name + ": " + tag.str() + " vs double", y, want, tol);
                }
            }
            auto lin = ref.load_linear(src);
            check(lin->bytes() == (size_t)(s.N * s.K) * dtype_size(dt) + (with_bias ? s.N * 4 : 0),
                  std::string(dtype_name(dt)) + " Linear::bytes");
        }
    }
}

// q8w_matvec (8-bit QxRows, f32 activations: the int8 lm_head's decode) of every
// ISA against a float64 sum of the same dequantized weights (c + 128)·s + (−s·z),
// including a nonzero −s·z, groups of 32 and of a whole odd-sized row, and row
// ranges that start inside the matrix. Tolerance: f32 accumulation, 1e-5·Σ|w·x|.
void test_q8w_matvec_kernels() {
    struct S { int64_t n, k, g; };
    const S shapes[] = {{9, 128, 128}, {13, 256, 32}, {6, 96, 96}, {40, 4096, 128}, {5, 1056, 1056}};
    std::istringstream is(cpu_isas());
    for (std::string isa; is >> isa;) {
        const Kernels * kt = cpu_kernels(isa);
        for (const S & s : shapes) {
            const int64_t ng = s.k / s.g;
            std::vector<uint8_t> qs(s.n * s.k);
            std::vector<uint16_t> sc(s.n * ng), sz(s.n * ng);
            for (auto & b : qs) b = (uint8_t)(rng() & 255);
            for (int64_t i = 0; i < s.n * ng; i++) {
                sc[i] = f32_to_f16(0.001f + 0.01f * (float)(rng() % 1000) / 1000.0f);
                sz[i] = f32_to_f16(i % 3 == 0 ? 0.0f : -128.0f * f16_to_f32(sc[i]) + 0.05f * ((float)(rng() % 200) / 100.0f - 1.0f));
            }
            const QxRows w{s.n, s.k, (int)s.g, 8, qs.data(), sc.data(), sz.data()};
            const std::vector<float> x = rand_vec(s.k);
            std::vector<float> gsum(ng, 0.0f);
            for (int64_t g = 0; g < ng; g++)
                for (int64_t k = g * s.g; k < (g + 1) * s.g; k++) gsum[g] += x[k];
            const int64_t n0 = s.n > 4 ? 2 : 0, n1 = s.n;
            std::vector<double> want(n1 - n0), tol(n1 - n0);
            for (int64_t n = n0; n < n1; n++) {
                double acc = 0, mag = 0;
                for (int64_t k = 0; k < s.k; k++) {
                    const int64_t i = n * ng + k / s.g;
                    const double wv = ((double)(int8_t)qs[n * s.k + k] + 128.0) * f16_to_f32(sc[i]) + f16_to_f32(sz[i]);
                    acc += wv * x[k];
                    mag += std::fabs(wv * x[k]);
                }
                want[n - n0] = acc;
                tol[n - n0] = 1e-5 * mag + 1e-6;
            }
            std::vector<float> y(n1 - n0 + 1, -7.0f);
            kt->q8w_matvec(w, x.data(), gsum.data(), n0, n1, y.data());
            const float past = y.back();
            y.pop_back();
            std::ostringstream tag;
            tag << isa << ": q8w_matvec n=[" << n0 << "," << n1 << ") k=" << s.k << " g=" << s.g;
            check_close(tag.str() + " vs double", y, want, tol);
            check(past == -7.0f, tag.str() + " writes only its rows");
        }
    }
}

// The int8 lm_head (load_linear_int8): a float matrix quantized at load to int8
// with an f16 scale per 128 inputs (per row when K % 128 != 0), through matmul in
// decode (M = 1: q8w_matvec, f32 activations) and prefill (M = 9: dequantized
// panels), on every backend, against the float64 product of the *original*
// weights. Bound: the int8 rounding, half a scale step per weight,
// Σ_g s_g/2·Σ_{k∈g}|x_k| (s_g = f16(max|w|/127) of the group), plus f32
// accumulation. Decode also matches the scalar backend within 1e-5·Σ|w·x|.
void test_int8_head(std::vector<Bk> & bks, Backend & ref) {
    struct S { int64_t N, K; };
    const S shapes[] = {{40, 256}, {37, 96}, {64, 2048}};
    for (const S & s : shapes) {
        std::vector<float> wf = rand_vec(s.N * s.K);
        std::vector<uint16_t> wh(s.N * s.K);
        for (int64_t i = 0; i < s.N * s.K; i++) wh[i] = f32_to_f16(wf[i]);
        const int64_t G = s.K % 128 == 0 ? 128 : s.K, ng = s.K / G;
        LinearSource src;
        src.name = "lm_head";
        src.in = s.K;
        src.out = s.N;
        src.weight = view("weight", DType::F16, {s.N, s.K}, wh.data(), s.N * s.K * 2);
        for (int64_t M : {1, 9}) {
            const std::vector<float> x = rand_vec(M * s.K);
            std::vector<double> want(M * s.N), tol(M * s.N), tol_ref(M * s.N);
            for (int64_t m = 0; m < M; m++)
                for (int64_t n = 0; n < s.N; n++) {
                    double acc = 0, mag = 0, q = 0;
                    for (int64_t g = 0; g < ng; g++) {
                        double amax = 0, xs = 0;
                        for (int64_t k = g * G; k < (g + 1) * G; k++) {
                            amax = std::max(amax, (double)std::fabs(f16_to_f32(wh[n * s.K + k])));
                            xs += std::fabs(x[m * s.K + k]);
                        }
                        q += 0.5 * f16_to_f32(f32_to_f16((float)(amax / 127.0))) * xs;
                    }
                    for (int64_t k = 0; k < s.K; k++) {
                        const double wv = f16_to_f32(wh[n * s.K + k]);
                        acc += wv * x[m * s.K + k];
                        mag += std::fabs(wv * x[m * s.K + k]);
                    }
                    want[m * s.N + n] = acc;
                    tol[m * s.N + n] = q * 1.0001 + 1e-5 * mag + 1e-6;
                    tol_ref[m * s.N + n] = 1e-5 * mag + 1e-6;
                }
            auto run = [&](Backend & b) {
                auto lin = b.load_linear_int8(src);
                check(lin && std::string(lin->kind()) == "q8", "load_linear_int8 gives a q8 linear");
                check(lin && lin->bytes() == (size_t)(s.N * s.K) + 4 * (size_t)(s.N * ng), "int8 lm_head bytes: 1 per weight + 4 per group");
                if (!lin) return std::vector<float>(M * s.N, 0.0f);
                return run_matmul(b, lin, x, M);
            };
            std::ostringstream tag;
            tag << "int8 lm_head N=" << s.N << " K=" << s.K << " M=" << M;
            const std::vector<float> yref = run(ref);
            check_close("scalar: " + tag.str() + " vs double of the f16 weights", yref, want, tol);
            const std::vector<double> yref_d(yref.begin(), yref.end());
            for (auto & bk : bks) {
                const std::vector<float> y = run(*bk.b);
                check_close(bk.name + ": " + tag.str() + " vs double of the f16 weights", y, want, tol);
                check_close(bk.name + ": " + tag.str() + " vs scalar", y, yref_d, tol_ref);
            }
        }
    }
}

// The f32 GEMM kernel of every SIMD ISA (gemm_f32: cache-blocked, k cut into
// slices, y carried between slices in f32) gives exactly one FMA chain per
// element over t = 0..k−1 in order: the blocking must not change a bit. Shapes
// cover several k slices (KC = 256), partial column blocks, every row
// remainder, and strides larger than the row. The scalar kernel (no FMA) is the
// tolerance reference.
void test_gemm_f32_kernels() {
    struct S { int64_t m, n, k; };
    const S shapes[] = {{1, 5, 300}, {7, 33, 257}, {29, 70, 600}, {47, 96, 1000}, {13, 300, 513}, {64, 16, 2048}};
    std::istringstream is(cpu_isas());
    for (std::string isa; is >> isa;) {
        if (isa == "scalar") continue;
        const Kernels * kt = cpu_kernels(isa);
        for (const S & s : shapes) {
            const int64_t ldx = s.k + 3, ldy = s.n + 5;
            const std::vector<float> x = rand_vec(s.m * ldx), w = rand_vec(s.n * s.k);
            std::vector<float> y(s.m * ldy, -7.0f), yr(s.m * ldy, -7.0f);
            kt->gemm_f32(x.data(), ldx, s.m, w.data(), s.n, s.k, y.data(), ldy);
            kernels_ref().gemm_f32(x.data(), ldx, s.m, w.data(), s.n, s.k, yr.data(), ldy);
            bool exact = true, close = true, untouched = true;
            for (int64_t i = 0; i < s.m; i++) {
                for (int64_t j = 0; j < s.n; j++) {
                    float acc = 0.0f;
                    double mag = 0;
                    for (int64_t t = 0; t < s.k; t++) {
                        acc = std::fma(x[i * ldx + t], w[j * s.k + t], acc);
                        mag += std::fabs((double)x[i * ldx + t] * w[j * s.k + t]);
                    }
                    const float got = y[i * ldy + j];
                    if (std::memcmp(&got, &acc, 4) != 0) exact = false;
                    if (std::fabs((double)got - yr[i * ldy + j]) > 1e-5 * mag + 1e-6) close = false;
                }
                for (int64_t j = s.n; j < ldy; j++) untouched = untouched && y[i * ldy + j] == -7.0f;
            }
            std::ostringstream tag;
            tag << isa << ": gemm_f32 m=" << s.m << " n=" << s.n << " k=" << s.k;
            check(exact, tag.str() + " is one in-order FMA chain per element (bit-exact)");
            check(close, tag.str() + " vs scalar");
            check(untouched, tag.str() + " leaves y beyond n alone");
        }
    }
}

// gemm_bf16 (kernels.h) of every ISA against the scalar definition, bit for bit
// on normal-range data (AVX512_BF16's vdpbf16ps on Zen 5 included), and against
// double products: of the bf16-rounded inputs within f32 accumulation error, of
// the unrounded inputs within the bf16 rounding error of each product. Shapes
// cover odd k (a zero pair partner), several k slices (KC = 512 native, 256 for
// the emulation), partial column blocks, every row remainder and wide strides.
void test_gemm_bf16_kernels() {
    std::istringstream is(cpu_isas());
    for (std::string isa; is >> isa;) {
        const Kernels * kt = cpu_kernels(isa);
        const std::string name = isa + (kt->gemm_bf16_native ? " (native bf16)" : "");
        for (int64_t m : {1, 5, 13, 64})
            for (int64_t n : {1, 33, 256})
                for (int64_t k : {1, 7, 256, 257, 600}) {
                    const int64_t ldx = k + 3, ldy = n + 5;
                    const std::vector<float> x = rand_vec(m * ldx), w = rand_vec(n * k, -2, 2);
                    std::vector<float> y(m * ldy, -7.0f), yr(m * ldy, -7.0f);
                    kt->gemm_bf16(x.data(), ldx, m, w.data(), n, k, y.data(), ldy);
                    kernels_ref().gemm_bf16(x.data(), ldx, m, w.data(), n, k, yr.data(), ldy);
                    bool exact = true, rounded = true, unrounded = true, untouched = true;
                    for (int64_t i = 0; i < m; i++) {
                        for (int64_t j = 0; j < n; j++) {
                            double sr = 0, su = 0, mag = 0;
                            for (int64_t t = 0; t < k; t++) {
                                const double a = x[i * ldx + t], b = w[j * k + t];
                                sr += (double)bf16_round((float)a) * bf16_round((float)b);
                                su += a * b;
                                mag += std::fabs(a * b);
                            }
                            const float got = y[i * ldy + j];
                            if (std::memcmp(&got, &yr[i * ldy + j], 4) != 0) exact = false;
                            // f32 sums: k roundings of at most 2^-24 of the running |sum|
                            if (std::fabs(got - sr) > (double)k * 0x1p-24 * 1.01 * mag) rounded = false;
                            // bf16 keeps 8 significant bits (unit roundoff 2^-8): each
                            // rounded product is within 2^-7 + 2^-16 of the unrounded one
                            if (std::fabs(got - su) > (0x1p-7 + 0x1p-16 + (double)k * 0x1p-24) * mag) unrounded = false;
                        }
                        for (int64_t j = n; j < ldy; j++) untouched = untouched && y[i * ldy + j] == -7.0f;
                    }
                    std::ostringstream tag;
                    tag << name << ": gemm_bf16 m=" << m << " n=" << n << " k=" << k;
                    check(exact, tag.str() + " equals the scalar definition bit for bit");
                    check(rounded, tag.str() + " vs double product of the bf16 inputs");
                    check(unrounded, tag.str() + " vs double product of the f32 inputs");
                    check(untouched, tag.str() + " leaves y beyond n alone");
                }
        // NaN in x stays NaN in its row; ties round to even (1 + 2^-8 → 1, 1 + 3·2^-8 → 1 + 2^-6)
        std::vector<float> x = {std::nanf(""), 1.0f, 1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f}, w = {1.0f, 1.0f}, y(2);
        kt->gemm_bf16(x.data(), 2, 2, w.data(), 1, 2, y.data(), 1);
        check(std::isnan(y[0]), isa + ": gemm_bf16 keeps NaN");
        check(y[1] == 2.0f + 0x1p-6f, isa + ": gemm_bf16 rounds inputs to nearest even bf16");
    }
}

// Linear::bf16_products through Backend::matmul: float weights take gemm_bf16
// for any M, decode-sized too (bit-identical on every ISA and thread count, as
// the kernel is), bf16 weights too (converted to f32 panels first); unflagged
// linears stay on the f32 path.
void test_bf16_matmul(std::vector<Bk> & bks, Backend & ref) {
    const int64_t N = 70, K = 257;
    std::vector<Backend *> all{&ref};
    for (auto & bk : bks) all.push_back(bk.b.get());
    const std::vector<float> wf = rand_vec(N * K);
    std::vector<uint16_t> wh(N * K);
    for (int64_t i = 0; i < N * K; i++) {
        const float r = bf16_round(wf[i]);
        uint32_t u;
        std::memcpy(&u, &r, 4);
        wh[i] = (uint16_t)(u >> 16);
    }
    for (DType dt : {DType::F32, DType::BF16}) {
        LinearSource src;
        src.name = "test.bf16";
        src.in = K;
        src.out = N;
        const void * wp = dt == DType::F32 ? (const void *)wf.data() : (const void *)wh.data();
        src.weight = view("weight", dt, {N, K}, wp, N * K * dtype_size(dt));
        for (int64_t M : {1, 5, 530}) {
            const std::vector<float> x = rand_vec(M * K);
            std::vector<float> want(M * N);
            kernels_ref().gemm_bf16(x.data(), K, M, wf.data(), N, K, want.data(), N);
            auto run = [&](Backend & b, bool bf16) {
                auto lin = b.load_linear(src);
                lin->bf16_products = bf16;
                Act xa = b.new_act(M, K), ya = b.new_act(M, N);
                b.from_host(xa, x.data());
                b.matmul(*lin, xa, ya);
                std::vector<float> y(M * N);
                b.to_host(ya, 0, M, y.data());
                b.free_act(xa);
                b.free_act(ya);
                return y;
            };
            std::ostringstream tag;
            tag << dtype_name(dt) << " matmul bf16_products N=" << N << " K=" << K << " M=" << M;
            for (Backend * b : all) {
                const std::vector<float> y = run(*b, true), yf = run(*b, false);
                const std::string who = std::string(b->isa()) + "/t" + std::to_string(b->n_threads()) + ": " + tag.str();
                check(std::memcmp(y.data(), want.data(), y.size() * 4) == 0, who + " equals gemm_bf16 bit for bit");
                check(y != yf, who + " differs from the f32 path");
            }
        }
    }
}

// Runs a row op f(backend, act) on every backend and compares.
using RowOp = std::function<std::vector<float>(Backend &)>;
void compare_all(std::vector<Bk> & bks, Backend & ref, const std::string & tag, const RowOp & op,
                 const std::vector<double> & want, const std::vector<double> & tol) {
    const std::vector<float> yref = op(ref);
    check_close("scalar: " + tag + " vs double", yref, want, tol);
    std::vector<double> yref_d(yref.begin(), yref.end());
    for (auto & bk : bks) {
        const std::vector<float> y = op(*bk.b);
        check_close(bk.name + ": " + tag + " vs scalar", y, yref_d, tol);
        check_close(bk.name + ": " + tag + " vs double", y, want, tol);
    }
}

void test_rmsnorm_silu_add_embed(std::vector<Bk> & bks, Backend & ref) {
    for (int64_t M : {1, 3, 17, 64})
        for (int64_t D : {1, 7, 64, 100, 2048, 5632}) {
            const std::vector<float> x = rand_vec(M * D, -3, 3), w = rand_vec(D, 0.5f, 1.5f), u = rand_vec(M * D, -2, 2);
            std::vector<float> y2 = rand_vec(M * D);
            const float eps = 1e-5f;
            // rmsnorm: tolerance 1e-5 relative (f32 sum of squares over D <= 5632)
            std::vector<double> want(M * D), tol(M * D);
            for (int64_t m = 0; m < M; m++) {
                double ss = 0;
                for (int64_t i = 0; i < D; i++) ss += (double)x[m * D + i] * x[m * D + i];
                const double r = 1.0 / std::sqrt(ss / D + eps);
                for (int64_t i = 0; i < D; i++) {
                    want[m * D + i] = x[m * D + i] * r * w[i];
                    tol[m * D + i] = 1e-5 * std::fabs(want[m * D + i]) + 1e-6;
                }
            }
            std::vector<float> wv = w;
            compare_all(bks, ref, "rmsnorm M=" + std::to_string(M) + " D=" + std::to_string(D), [&](Backend & b) {
                auto vec = b.load_vec(view("norm", DType::F32, {D}, wv.data(), D * 4));
                Act a = b.new_act(M, D), o = b.new_act(M, D);
                b.from_host(a, x.data());
                b.rmsnorm(a, *vec, eps, o);
                std::vector<float> y(M * D);
                b.to_host(o, 0, M, y.data());
                b.free_act(a);
                b.free_act(o);
                return y;
            }, want, tol);
            // silu_mul: tolerance 1e-5 relative + 1e-6·|u| (polynomial exp ~2e-7)
            for (int64_t i = 0; i < M * D; i++) {
                const double g = x[i];
                want[i] = g / (1.0 + std::exp(-g)) * u[i];
                tol[i] = 1e-5 * std::fabs(want[i]) + 1e-6 * std::fabs(u[i]);
            }
            compare_all(bks, ref, "silu_mul M=" + std::to_string(M) + " D=" + std::to_string(D), [&](Backend & b) {
                Act g = b.new_act(M, D), up = b.new_act(M, D);
                b.from_host(g, x.data());
                b.from_host(up, u.data());
                b.silu_mul(g, up);
                std::vector<float> y(M * D);
                b.to_host(g, 0, M, y.data());
                b.free_act(g);
                b.free_act(up);
                return y;
            }, want, tol);
            // add: exact (one f32 rounding, the same everywhere)
            for (int64_t i = 0; i < M * D; i++) {
                want[i] = (double)(x[i] + y2[i]);
                tol[i] = 0;
            }
            compare_all(bks, ref, "add M=" + std::to_string(M) + " D=" + std::to_string(D), [&](Backend & b) {
                Act a = b.new_act(M, D), c = b.new_act(M, D);
                b.from_host(a, x.data());
                b.from_host(c, y2.data());
                b.add(a, c);
                std::vector<float> y(M * D);
                b.to_host(a, 0, M, y.data());
                b.free_act(a);
                b.free_act(c);
                return y;
            }, want, tol);
        }
    // embed: exact for every dtype (f16/bf16 → f32 is exact)
    for (DType dt : {DType::F32, DType::F16, DType::BF16})
        for (int64_t dim : {5, 64, 2048}) {
            const int64_t vocab = 97;
            std::vector<float> tf = rand_vec(vocab * dim);
            std::vector<uint16_t> th(vocab * dim);
            std::vector<double> td(vocab * dim);
            for (int64_t i = 0; i < vocab * dim; i++) {
                th[i] = dt == DType::BF16 ? (uint16_t)(f32_to_f16(0) | (uint16_t)(rng() & 0x7f7f)) : f32_to_f16(tf[i]);
                td[i] = dt == DType::F32 ? tf[i] : dt == DType::F16 ? f16_to_f32(th[i]) : bf16_to_f32(th[i]);
            }
            const int32_t toks[] = {0, 96, 5, 5, 42, 13, 77, 1, 2, 3, 50, 60, 70, 80, 90, 91, 92};
            const int64_t M = 17;
            std::vector<double> want(M * dim), tol(M * dim, 0.0);
            for (int64_t m = 0; m < M; m++)
                for (int64_t i = 0; i < dim; i++) want[m * dim + i] = td[toks[m] * dim + i];
            const void * data = dt == DType::F32 ? (const void *)tf.data() : (const void *)th.data();
            compare_all(bks, ref, std::string("embed ") + dtype_name(dt) + " dim=" + std::to_string(dim), [&](Backend & b) {
                auto e = b.load_embedding(view("embed", dt, {vocab, dim}, data, vocab * dim * dtype_size(dt)));
                Act o = b.new_act(M, dim);
                b.embed(*e, toks, M, o);
                std::vector<float> y(M * dim);
                b.to_host(o, 0, M, y.data());
                b.free_act(o);
                return y;
            }, want, tol);
        }
    bool threw = false;
    std::vector<float> tf(4 * 8);
    auto e = ref.load_embedding(view("embed", DType::F32, {4, 8}, tf.data(), tf.size() * 4));
    Act o = ref.new_act(1, 8);
    const int32_t bad = 4;
    try { ref.embed(*e, &bad, 1, o); } catch (const Error & err) { threw = err.status == SHOAL_ERR_INVALID_ARG; }
    ref.free_act(o);
    check(threw, "embed rejects token id == vocab");
}

// Qwen3 q/k norm: every head of every row normalised over its hd values, in place.
void test_head_rmsnorm(std::vector<Bk> & bks, Backend & ref) {
    for (int64_t M : {1, 3, 17})
        for (int H : {1, 4, 16})
            for (int64_t hd : {8, 64, 128}) {
                const int64_t C = H * hd;
                const std::vector<float> x = rand_vec(M * C, -3, 3), w = rand_vec(hd, 0.5f, 1.5f);
                const float eps = 1e-6f;
                std::vector<double> want(M * C), tol(M * C);
                for (int64_t m = 0; m < M; m++)
                    for (int h = 0; h < H; h++) {
                        const float * xh = &x[m * C + h * hd];
                        double ss = 0;
                        for (int64_t i = 0; i < hd; i++) ss += (double)xh[i] * xh[i];
                        const double r = 1.0 / std::sqrt(ss / hd + eps);
                        for (int64_t i = 0; i < hd; i++) {
                            want[m * C + h * hd + i] = xh[i] * r * w[i];
                            tol[m * C + h * hd + i] = 1e-5 * std::fabs(want[m * C + h * hd + i]) + 1e-6;
                        }
                    }
                std::vector<float> wv = w;
                compare_all(bks, ref, "head_rmsnorm M=" + std::to_string(M) + " H=" + std::to_string(H) + " hd=" + std::to_string(hd),
                            [&](Backend & b) {
                                auto vec = b.load_vec(view("q_norm", DType::F32, {hd}, wv.data(), hd * 4));
                                Act a = b.new_act(M, C);
                                b.from_host(a, x.data());
                                b.head_rmsnorm(a, *vec, H, eps);
                                std::vector<float> y(M * C);
                                b.to_host(a, 0, M, y.data());
                                b.free_act(a);
                                return y;
                            }, want, tol);
            }
    // a gain vector that does not match the rows' head size is refused
    bool threw = false;
    try {
        std::vector<float> wv(8, 1.0f);
        auto vec = ref.load_vec(view("q_norm", DType::F32, {8}, wv.data(), 32));
        Act a = ref.new_act(2, 36);
        try { ref.head_rmsnorm(a, *vec, 4, 1e-6f); } catch (const Error & e) { threw = e.status == SHOAL_ERR_INVALID_ARG; }
        ref.free_act(a);
    } catch (...) {}
    check(threw, "head_rmsnorm: cols != heads × hd → SHOAL_ERR_INVALID_ARG");
}

void test_rope(std::vector<Bk> & bks, Backend & ref) {
    struct S { int hd, n_rot; double theta, linear; };
    const S cases[] = {{64, 64, 10000, 1}, {128, 128, 500000, 1}, {64, 64, 10000, 4}, {64, 32, 10000, 1}, {80, 80, 1e6, 2}, {8, 8, 100, 1}};
    for (const S & c : cases) {
        std::vector<float> inv(c.n_rot / 2);
        for (int i = 0; i < c.n_rot / 2; i++) inv[i] = (float)(1.0 / std::pow(c.theta, 2.0 * i / c.n_rot) / c.linear);
        RopeParams p;
        p.head_dim = c.hd;
        p.n_rot = c.n_rot;
        p.inv_freq = inv.data();
        for (int pos0 : {0, 5, 1000})
            for (int64_t M : {1, 3, 17}) {
                const int H = 4, Hkv = 2;
                const std::vector<float> q = rand_vec(M * H * c.hd), k = rand_vec(M * Hkv * c.hd);
                // reference: angle = f32(pos · inv_freq) as HF computes it, cos/sin and the
                // rotation in double. Tolerance 2e-6·(|a|+|b|) + 1e-7 (f32 cos/sin/products).
                std::vector<double> want, tol;
                auto rot = [&](const std::vector<float> & v, int nh) {
                    for (int64_t m = 0; m < M; m++)
                        for (int h = 0; h < nh; h++) {
                            const float * hv = &v[(m * nh + h) * c.hd];
                            std::vector<double> out(hv, hv + c.hd), t(c.hd, 1e-7);
                            for (int i = 0; i < c.n_rot / 2; i++) {
                                const double a = hv[i], b = hv[i + c.n_rot / 2];
                                const double ang = (double)((float)(pos0 + m) * inv[i]);
                                out[i] = a * std::cos(ang) - b * std::sin(ang);
                                out[i + c.n_rot / 2] = b * std::cos(ang) + a * std::sin(ang);
                                t[i] = t[i + c.n_rot / 2] = 2e-6 * (std::fabs(a) + std::fabs(b)) + 1e-7;
                            }
                            want.insert(want.end(), out.begin(), out.end());
                            tol.insert(tol.end(), t.begin(), t.end());
                        }
                };
                rot(q, H);
                rot(k, Hkv);
                std::ostringstream tag;
                tag << "rope hd=" << c.hd << " n_rot=" << c.n_rot << " theta=" << c.theta << " lin=" << c.linear
                    << " pos0=" << pos0 << " M=" << M;
                compare_all(bks, ref, tag.str(), [&](Backend & b) {
                    Act qa = b.new_act(M, H * c.hd), ka = b.new_act(M, Hkv * c.hd);
                    b.from_host(qa, q.data());
                    b.from_host(ka, k.data());
                    b.rope(qa, ka, H, Hkv, pos0, p);
                    std::vector<float> y(M * (H + Hkv) * c.hd);
                    b.to_host(qa, 0, M, y.data());
                    b.to_host(ka, 0, M, y.data() + M * H * c.hd);
                    b.free_act(qa);
                    b.free_act(ka);
                    return y;
                }, want, tol);
            }
    }
}

// The K/V a cache of type t holds for x: f16-rounded, or int8 with one scale per
// (position, head) as the backend's kv_store quantizes it (kv_quantize_q8).
std::vector<float> kv_rounded(const std::vector<float> & x, int hd, KvType t) {
    std::vector<float> r(x);
    if (t == KvType::F16)
        for (auto & v : r) v = f16_to_f32(f32_to_f16(v));
    if (t == KvType::Q8)
        for (size_t h0 = 0; h0 < r.size(); h0 += hd) {
            std::vector<int8_t> q(hd);
            const float d = kv_quantize_q8(&x[h0], hd, q.data());
            for (int i = 0; i < hd; i++) r[h0 + i] = (float)q[i] * d;
        }
    return r;
}

void test_attention(std::vector<Bk> & bks, Backend & ref) {
    for (KvType kt : {KvType::F32, KvType::F16, KvType::Q8})
    for (int ratio : {1, 2, 4, 8, 3})
        for (int hd : {64, 24, 8})
            for (int n_past : {0, 1, 7, 64, 200})
                for (int64_t M : {1, 3, 17}) {
                    if (hd == 8 && n_past == 64) continue; // keeps the table short; hd 8 is stories260K's
                    const int Hkv = ratio == 8 ? 1 : 2, H = Hkv * ratio, kv_dim = Hkv * hd, n_ctx = 224, layers = 2, layer = 1;
                    const int n_pos = n_past + (int)M;
                    const std::vector<float> kc = rand_vec(n_pos * kv_dim, -2, 2), vc = rand_vec(n_pos * kv_dim);
                    // what the cache holds: the double reference uses these
                    const std::vector<float> kr = kv_rounded(kc, hd, kt), vr = kv_rounded(vc, hd, kt);
                    const std::vector<float> q = rand_vec(M * H * hd, -2, 2);
                    const float scale = 1.0f / std::sqrt((float)hd);
                    // double reference, causal: row m sees positions 0..n_past+m.
                    // Tolerance 1e-5·max|v| + 1e-6 (softmax weights sum to 1).
                    std::vector<double> want(M * H * hd), tol(M * H * hd);
                    for (int64_t m = 0; m < M; m++)
                        for (int h = 0; h < H; h++) {
                            const int kvh = h / ratio, n = n_past + (int)m + 1;
                            std::vector<double> s(n);
                            double mx = -1e300, sum = 0, vmax = 0;
                            for (int j = 0; j < n; j++) {
                                double d = 0;
                                for (int i = 0; i < hd; i++) d += (double)q[(m * H + h) * hd + i] * kr[j * kv_dim + kvh * hd + i];
                                s[j] = d * scale;
                                mx = std::max(mx, s[j]);
                            }
                            for (int j = 0; j < n; j++) sum += (s[j] = std::exp(s[j] - mx));
                            for (int i = 0; i < hd; i++) {
                                double o = 0;
                                for (int j = 0; j < n; j++) {
                                    o += s[j] / sum * vr[j * kv_dim + kvh * hd + i];
                                    vmax = std::max(vmax, (double)std::fabs(vr[j * kv_dim + kvh * hd + i]));
                                }
                                want[(m * H + h) * hd + i] = o;
                                tol[(m * H + h) * hd + i] = 1e-5 * vmax + 1e-6;
                            }
                        }
                    std::ostringstream tag;
                    tag << "attention kv=" << kv_type_name(kt) << " H=" << H << " Hkv=" << Hkv << " hd=" << hd
                        << " n_past=" << n_past << " M=" << M;
                    compare_all(bks, ref, tag.str(), [&](Backend & b) {
                        auto kv = b.new_kv_cache(layers, n_ctx, kv_dim, hd, kt);
                        // past positions one at a time, then the M new ones together
                        for (int j = 0; j < n_past; j++) {
                            Act ka = b.new_act(1, kv_dim), va = b.new_act(1, kv_dim);
                            b.from_host(ka, &kc[j * kv_dim]);
                            b.from_host(va, &vc[j * kv_dim]);
                            b.kv_store(*kv, layer, j, ka, va);
                            b.free_act(ka);
                            b.free_act(va);
                        }
                        Act ka = b.new_act(M, kv_dim), va = b.new_act(M, kv_dim), qa = b.new_act(M, H * hd), o = b.new_act(M, H * hd);
                        b.from_host(ka, &kc[n_past * kv_dim]);
                        b.from_host(va, &vc[n_past * kv_dim]);
                        b.kv_store(*kv, layer, n_past, ka, va);
                        b.from_host(qa, q.data());
                        b.attention(qa, *kv, layer, n_past, H, Hkv, hd, scale, o);
                        std::vector<float> y(M * H * hd);
                        b.to_host(o, 0, M, y.data());
                        for (Act * a : {&ka, &va, &qa, &o}) b.free_act(*a);
                        return y;
                    }, want, tol);
                }
    // a full cache refuses more positions
    auto kv = ref.new_kv_cache(1, 4, 8, 8, KvType::F32);
    Act a = ref.new_act(2, 8);
    bool threw = false;
    try { ref.kv_store(*kv, 0, 3, a, a); } catch (const Error & e) { threw = e.status == SHOAL_ERR_CONTEXT_FULL; }
    ref.free_act(a);
    check(threw, "kv_store past n_ctx → SHOAL_ERR_CONTEXT_FULL");
}

// Every task of every job runs exactly once, on a valid thread id, with jobs
// of 1..64 tasks back to back (the decode pattern), for 2 and 3 threads.
void test_threadpool() {
    for (int nt : {2, 3}) {
        ThreadPool pool(nt);
        std::vector<std::atomic<int>> hits(64);
        bool ok = pool.size() == nt;
        for (int job = 0; job < 20000 && ok; job++) {
            const int n = 1 + job % 64;
            for (auto & h : hits) h.store(0);
            std::atomic<int> bad_thread{0};
            pool.parallel_for(n, [&](int64_t t, int th) {
                hits[t].fetch_add(1);
                if (th < 0 || th >= nt) bad_thread.store(1);
            });
            for (int t = 0; t < 64; t++) ok = ok && hits[t].load() == (t < n ? 1 : 0);
            ok = ok && bad_thread.load() == 0;
        }
        check(ok, "threadpool: 20000 jobs, each task once, threads=" + std::to_string(nt));
    }
}

void test_isa_selection() {
    const std::string isas = cpu_isas();
    std::printf("ISAs here: %s\n", isas.c_str());
    check(isas.rfind("scalar", 0) == 0, "cpu_isas() starts with scalar");
    auto b = make_cpu_backend("auto", 1);
    check(isas.substr(isas.rfind(' ') + 1) == b->isa(), "auto picks the best (last) ISA");
    bool threw = false;
    try { make_cpu_backend("avx9000", 1); } catch (const Error & e) {
        threw = e.status == SHOAL_ERR_BACKEND && std::string(e.what()).find("available: " + isas) != std::string::npos;
    }
    check(threw, "unknown ISA → SHOAL_ERR_BACKEND listing the available ones");
    // An ISA of the other architecture is never supported here.
    const char * foreign = isas.find("avx") != std::string::npos || isas == "scalar" ? "neon" : "avx2";
    threw = false;
    try { make_cpu_backend(foreign, 1); } catch (const Error & e) { threw = e.status == SHOAL_ERR_BACKEND; }
    check(threw, std::string("ISA '") + foreign + "' not supported → SHOAL_ERR_BACKEND");
    check(make_cpu_backend("scalar", 0)->n_threads() >= 1, "n_threads 0 = online cores");
}

// matmul_shared (q/k/v and gate/up in one pass) gives exactly what separate
// matmuls give, for INT4 decode rows (the fused path), prefill rows, and mixed
// group sizes (the fallback), on every ISA and thread count.
void test_matmul_shared(std::vector<Bk> & bks, Backend & ref) {
    struct L { int64_t N, G; };
    const std::vector<std::vector<L>> sets = {{{64, 128}, {32, 128}, {32, 128}}, {{88, 64}, {88, 64}}, {{64, 128}, {40, 64}}};
    const int64_t K = 256;
    std::vector<Bk *> all;
    Bk self{"scalar/t1", nullptr};
    for (auto & bk : bks) all.push_back(&bk);
    for (const auto & set : sets) {
        std::vector<AwqTensors> ts;
        for (const L & l : set) ts.push_back(make_awq(K, l.N, l.G));
        for (int64_t M : {1, 2, 5}) {
            const std::vector<float> x = rand_vec(M * K);
            for (size_t bi = 0; bi <= all.size(); bi++) {
                Backend & b = bi < all.size() ? *all[bi]->b : ref;
                const std::string name = bi < all.size() ? all[bi]->name : self.name;
                std::vector<std::vector<int32_t>> qw, qz;
                std::vector<std::vector<uint16_t>> sc;
                std::vector<std::unique_ptr<Linear>> lins;
                for (size_t i = 0; i < set.size(); i++) {
                    qw.push_back(ts[i].qweight);
                    qz.push_back(ts[i].qzeros);
                    sc.push_back(ts[i].scales);
                    LinearSource src;
                    src.name = "shared";
                    src.in = K;
                    src.out = set[i].N;
                    src.awq = true;
                    src.group_size = (int)set[i].G;
                    src.qweight = view("qweight", DType::I32, {K, set[i].N / 8}, qw[i].data(), qw[i].size() * 4);
                    src.qzeros = view("qzeros", DType::I32, {K / set[i].G, set[i].N / 8}, qz[i].data(), qz[i].size() * 4);
                    src.scales = view("scales", DType::F16, {K / set[i].G, set[i].N}, sc[i].data(), sc[i].size() * 2);
                    lins.push_back(b.load_linear(src));
                }
                Act xa = b.new_act(M, K);
                b.from_host(xa, x.data());
                std::vector<Act> fused, sep;
                std::vector<const Linear *> ws;
                std::vector<Act *> ys;
                for (size_t i = 0; i < set.size(); i++) {
                    fused.push_back(b.new_act(M, set[i].N));
                    sep.push_back(b.new_act(M, set[i].N));
                    ws.push_back(lins[i].get());
                }
                for (auto & a : fused) ys.push_back(&a);
                b.matmul_shared(ws.data(), ys.data(), (int)set.size(), xa);
                for (size_t i = 0; i < set.size(); i++) b.matmul(*lins[i], xa, sep[i]);
                bool same = true;
                for (size_t i = 0; i < set.size(); i++) {
                    std::vector<float> f(M * set[i].N), g(M * set[i].N);
                    b.to_host(fused[i], 0, M, f.data());
                    b.to_host(sep[i], 0, M, g.data());
                    same = same && f == g;
                    b.free_act(fused[i]);
                    b.free_act(sep[i]);
                }
                b.free_act(xa);
                check(same, name + ": matmul_shared of " + std::to_string(set.size()) + " linears, M=" + std::to_string(M) +
                                " equals separate matmuls");
            }
        }
    }
}

} // namespace

int main() {
    test_half();
    test_isa_selection();
    test_threadpool();
    test_gemm_f32_kernels();
    test_gemm_bf16_kernels();
    test_q8w_matvec_kernels();
    auto ref = make_cpu_backend("scalar", 1);
    std::vector<Bk> bks;
    std::istringstream is(cpu_isas());
    for (std::string isa; is >> isa;)
        for (int th : {1, 2}) {
            if (isa == "scalar" && th == 1) continue; // that is the reference itself
            bks.push_back({isa + "/t" + std::to_string(th), make_cpu_backend(isa, th)});
        }
    test_q4_matmul(bks, *ref);
    test_q8_reuse(bks);
    test_matmul_shared(bks, *ref);
    test_lowbit_matmul(bks, *ref);
    test_float_matmul(bks, *ref);
    test_int8_head(bks, *ref);
    test_bf16_matmul(bks, *ref);
    test_rmsnorm_silu_add_embed(bks, *ref);
    test_head_rmsnorm(bks, *ref);
    test_rope(bks, *ref);
    test_attention(bks, *ref);
    {
        auto exact_ref = make_cpu_backend("scalar", 1, Precision::Exact);
        std::vector<Bk> exact_bks;
        std::istringstream es(cpu_isas());
        for (std::string isa; es >> isa;)
            for (int th : {1, 2}) {
                if (isa == "scalar" && th == 1) continue;
                exact_bks.push_back({isa + "/t" + std::to_string(th) + "/exact", make_cpu_backend(isa, th, Precision::Exact)});
            }
        test_exact(exact_bks, *exact_ref);
    }
    std::printf("%d passed, %d failed\n", g_pass, g_fail);
    return g_fail == 0 ? 0 : 1;
}
