// bench-q4-ab.cpp — one-process A/B of the AVX-512 INT4 decode matvec
// (issue 16). The kernel as the backend calls it (the "avx512" table) and
// local variants of it run alternately, one thread, on random Q4Rows of one
// shape, each repetition timing every variant once over the same weights:
//   * from DRAM: distinct copies cycled over >= --mib MiB (default 256), so
//     none sits in the last-level cache, as in a decoded token;
//   * from cache (--cache): one copy, read again and again.
// Rows are split as the backend's decode branch splits them at 1 thread (4
// contiguous tasks, row counts a multiple of 4). Prints the median and range
// of GB/s per variant, and checks that every variant flagged exact gives
// bit-identical outputs to the table's kernel.
// Variants: "table" is the kernel the backend calls; "local" (flags 0) is
// the kernel as it was before the issue-16 change to it (a [K/128][32] f32
// table of activation scales, a prefetch 16 KiB ahead in each row, the rows'
// f32 scales 4 KiB apart); the flags add one change each, and those marked
// timing only compute wrong results on purpose (a lower or upper bound).
// Usage: bench-q4-ab [--n N] [--k K] [--g G] [--reps R] [--mib M] [--cache] [--huge] [--only a,b,...]
// Built on x86 only (AVX-512 flags on this file); exits 0 with a message on a
// CPU without AVX-512.
#include "kernels-simd.h"
#include "tensor.h"

#include <immintrin.h>
#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

using namespace shoal;

namespace {

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

// Variant flags of q4_rows_v.
enum : int {
    kDvPerm = 1,      // activation block scales per lane by a permute of x.d, no dv [nc][32] array
    kLinPf = 2,       // prefetch the block of the pass 16 KiB ahead in address order (one stream)
    kPacked = 4,      // per-row f32 scales packed at a stride of K/G rounded to 16 (not 1024)
    kNoEpi = 8,       // timing only: no −s·z dot, no f16 conversions per row (wrong results)
    kLoadsOnly = 16,  // timing only: weight loads + prefetch, xor-accumulated (wrong results)
    kInterleave = 32, // timing only: reads qs as if 4 rows were interleaved per 64-byte chunk
    kNoPf = 64,       // no software prefetch
    kNoZdot = 128,    // timing only: no −s·z dot per row
    kNoF16 = 256,     // timing only: no f16 → f32 conversion of the scale rows
    kPfScale = 512,   // prefetch the scale and −s·z rows of the pass 16 KiB of weights ahead
};

struct V16 {
    using F = __m512;
    static constexpr int W = 16;
    static F load_f16(const uint16_t * p) { return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p)); }
    static void store(float * p, F a) { _mm512_storeu_ps(p, a); }
    static F zero() { return _mm512_setzero_ps(); }
    static F load(const float * p) { return _mm512_loadu_ps(p); }
    static F fmadd(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
    static F add(F a, F b) { return _mm512_add_ps(a, b); }
    static float hsum(F a) { return _mm512_reduce_add_ps(a); }
};

template <int R, int VAR>
inline void q4_rows_v(const Q4Rows & w, const Q8Row & x, const float * dv, const int32_t * grp, int64_t n, float * y) {
    const int64_t K = w.k, G = w.group, ng = K / G, nc = K / 128;
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    constexpr int64_t kStride = (VAR & kPacked) ? 0 : 1024;
    const int64_t st = kStride ? kStride : (ng + 15) / 16 * 16;
    float sf[R * 1024], zf[R * 1024];
    const uint8_t * row[R];
    const uint8_t * blk = w.qs + n * (K / 2);
    __m512 al[R], ah[R];
    __m512i xa[R];
    #pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
        if (!(VAR & (kNoEpi | kNoF16))) {
            simd::f16_row<V16>(w.scale + (n + r) * ng, ng, sf + r * st);
            simd::f16_row<V16>(w.szero + (n + r) * ng, ng, zf + r * st);
        } else {
            for (int64_t g = 0; g < ng; g++) zf[r * st + g] = 0.5f;
            for (int64_t g = 0; g < ng; g++) sf[r * st + g] = 1.0f;
        }
        row[r] = w.qs + (n + r) * (K / 2);
        al[r] = ah[r] = _mm512_setzero_ps();
        xa[r] = _mm512_setzero_si512();
    }
    if (VAR & kPfScale) {
        const int64_t ahead = n + R * ((simd::kPrefetchBytes + R * K / 2 - 1) / (R * K / 2));
        if (ahead + R <= w.n)
            for (int64_t off = 0; off < R * ng * 2; off += 64) {
                __builtin_prefetch(reinterpret_cast<const char *>(w.scale + ahead * ng) + off);
                __builtin_prefetch(reinterpret_cast<const char *>(w.szero + ahead * ng) + off);
            }
    }
    const __m512i il0 = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    const __m512i ih0 = _mm512_set_epi32(3, 3, 3, 3, 3, 3, 3, 3, 2, 2, 2, 2, 2, 2, 2, 2);
    for (int64_t c = 0; c < nc; c++) {
        const __m512i xl = _mm512_loadu_si512(x.q + 128 * c);
        const __m512i xh = _mm512_loadu_si512(x.q + 128 * c + 64);
        __m512 dl, dh;
        if (VAR & kDvPerm) {
            const __m512 d4 = _mm512_castps128_ps512(_mm_loadu_ps(x.d + 4 * c));
            dl = _mm512_permutexvar_ps(il0, d4);
            dh = _mm512_permutexvar_ps(ih0, d4);
        } else {
            dl = _mm512_loadu_ps(dv + 32 * c);
            dh = _mm512_loadu_ps(dv + 32 * c + 16);
        }
        #pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            const uint8_t * p = (VAR & kInterleave) ? blk + 64 * (R * c + r) : row[r] + 64 * c;
            const __m512i b = _mm512_loadu_si512(p);
            if (!(VAR & kNoPf)) {
                if (VAR & kLinPf) __builtin_prefetch(blk + 64 * (R * c + r) + simd::kPrefetchBytes);
                else __builtin_prefetch(p + simd::kPrefetchBytes);
            }
            if (VAR & kLoadsOnly) {
                xa[r] = _mm512_xor_si512(xa[r], b);
                continue;
            }
            const __m512i il = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_and_si512(b, m4), xl);
            const __m512i ih = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_and_si512(_mm512_srli_epi16(b, 4), m4), xh);
            const __m512 sl = _mm512_set1_ps(sf[r * st + grp[4 * c]]);
            const __m512 sh = _mm512_set1_ps(sf[r * st + grp[4 * c + 2]]);
            al[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(il), _mm512_mul_ps(dl, sl), al[r]);
            ah[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ih), _mm512_mul_ps(dh, sh), ah[r]);
        }
    }
    #pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
        if (VAR & kLoadsOnly) {
            y[r] = (float)_mm512_reduce_add_epi32(xa[r]);
            continue;
        }
        float s = _mm512_reduce_add_ps(_mm512_add_ps(al[r], ah[r]));
        if (nc * 128 < K) s += simd::q4_tail(row[r], x, sf + r * st, (int)G, nc * 128, K);
        if (!(VAR & (kNoEpi | kNoZdot))) s += simd::dot<V16>(zf + r * st, x.gsum, ng);
        y[r] = s;
    }
}

template <int VAR>
void q4_matvec_v(const Q4Rows & w, const Q8Row & x, int64_t n0, int64_t n1, float * y) {
    const int64_t nc = w.k / 128;
    thread_local std::vector<float> dv;
    thread_local std::vector<int32_t> grp;
    if (!(VAR & kDvPerm)) {
        dv.resize(nc * 32);
        for (int64_t c = 0; c < nc; c++)
            for (int l = 0; l < 16; l++) {
                dv[32 * c + l] = x.d[4 * c + l / 8];
                dv[32 * c + 16 + l] = x.d[4 * c + 2 + l / 8];
            }
    }
    grp.resize(w.k / 32);
    for (int64_t b = 0; b < w.k / 32; b++) grp[b] = (int32_t)(b * 32 / w.group);
    int64_t n = n0;
    for (; n + 4 <= n1; n += 4) q4_rows_v<4, VAR>(w, x, dv.data(), grp.data(), n, y + (n - n0));
    for (; n < n1; n++) q4_rows_v<1, VAR>(w, x, dv.data(), grp.data(), n, y + (n - n0));
}

struct Variant {
    const char * name;
    void (*fn)(const Q4Rows &, const Q8Row &, int64_t, int64_t, float *);
    bool exact; // must match the table's kernel bit for bit
};

// One weight set in one 2 MiB-aligned allocation: qs, then scale, then szero
// (with --huge, madvise(MADV_HUGEPAGE) on it: transparent huge pages are
// "madvise" on the dev VM, so heap weights otherwise sit on 4 KiB pages).
struct Copy {
    uint8_t * buf = nullptr;
    uint8_t * qs = nullptr;
    uint16_t * scale = nullptr, * szero = nullptr;
    void alloc(int64_t N, int64_t K, int64_t ng, bool huge) {
        const size_t qb = (size_t)(N * K / 2), sb = (size_t)(N * ng) * 2;
        const size_t bytes = (qb + 2 * sb + (2u << 20) - 1) / (2u << 20) * (2u << 20);
        buf = static_cast<uint8_t *>(std::aligned_alloc(2u << 20, bytes));
        if (huge) ::madvise(buf, bytes, MADV_HUGEPAGE);
        qs = buf;
        scale = reinterpret_cast<uint16_t *>(buf + qb);
        szero = reinterpret_cast<uint16_t *>(buf + qb + sb);
    }
    Q4Rows view(int64_t N, int64_t K, int G) const { return Q4Rows{N, K, G, qs, scale, szero}; }
    Copy() = default;
    Copy(const Copy &) = delete;
    ~Copy() { std::free(buf); }
};

} // namespace

int main(int argc, char ** argv) {
    int64_t N = 2048, K = 5632;
    int G = 128, reps = 21;
    size_t mib = 256;
    bool cache = false, huge = false;
    std::string only;
    for (int i = 1; i < argc; i++) {
        auto next = [&]() { return i + 1 < argc ? argv[++i] : (std::fprintf(stderr, "missing value\n"), std::exit(2), argv[0]); };
        if (!std::strcmp(argv[i], "--n")) N = std::atoll(next());
        else if (!std::strcmp(argv[i], "--k")) K = std::atoll(next());
        else if (!std::strcmp(argv[i], "--g")) G = std::atoi(next());
        else if (!std::strcmp(argv[i], "--reps")) reps = std::atoi(next());
        else if (!std::strcmp(argv[i], "--mib")) mib = std::atoll(next());
        else if (!std::strcmp(argv[i], "--cache")) cache = true;
        else if (!std::strcmp(argv[i], "--huge")) huge = true;
        else if (!std::strcmp(argv[i], "--only")) only = std::string(",") + next() + ",";
        else {
            std::fprintf(stderr, "usage: %s [--n N] [--k K] [--g G] [--reps R] [--mib M] [--cache] [--huge] [--only a,b]\n", argv[0]);
            return 2;
        }
    }
    const Kernels * lib = cpu_kernels("avx512");
    if (!lib) {
        std::printf("no avx512 kernels on this CPU: nothing to measure\n");
        return 0;
    }
    if (K % 128 || G < 128 || K % G || N % 4) {
        std::fprintf(stderr, "shapes: K %% 128 == 0, G >= 128, K %% G == 0, N %% 4 == 0\n");
        return 2;
    }
    const Variant all[] = {
        {"table", lib->q4_matvec, true},
        {"local", q4_matvec_v<0>, true},
        {"dvperm", q4_matvec_v<kDvPerm>, true},
        {"linpf", q4_matvec_v<kLinPf>, true},
        {"packed", q4_matvec_v<kPacked>, true},
        {"dvperm+linpf", q4_matvec_v<kDvPerm | kLinPf>, true},
        {"dvperm+nopf", q4_matvec_v<kDvPerm | kNoPf>, true},
        {"dvperm+linpf+packed+pfscale", q4_matvec_v<kDvPerm | kLinPf | kPacked | kPfScale>, true},
        {"dvperm+linpf+packed", q4_matvec_v<kDvPerm | kLinPf | kPacked>, true},
        {"noepi", q4_matvec_v<kNoEpi>, false},
        {"loadsonly", q4_matvec_v<kLoadsOnly>, false},
        {"loadsonly+linpf", q4_matvec_v<kLoadsOnly | kLinPf>, false},
        {"interleave", q4_matvec_v<kInterleave | kLinPf>, false},
        {"nopf", q4_matvec_v<kNoPf>, true},
        {"nozdot", q4_matvec_v<kNoZdot>, false},
        {"nof16", q4_matvec_v<kNoF16>, false},
        {"dvperm+packed", q4_matvec_v<kDvPerm | kPacked>, true},
        {"dvperm+packed+nozdot", q4_matvec_v<kDvPerm | kPacked | kNoZdot>, false},
    };
    std::vector<Variant> vs;
    for (const Variant & v : all)
        if (only.empty() || only.find(std::string(",") + v.name + ",") != std::string::npos) vs.push_back(v);

    std::mt19937 rng(7);
    const int64_t ng = K / G, nb = K / 32;
    const size_t copy_bytes = (size_t)(N * K / 2) + 4 * (size_t)(N * ng);
    const int n_copies = cache ? 1 : (int)std::max<size_t>(1, (mib << 20) / copy_bytes + 1);
    std::vector<Copy> copies(n_copies);
    for (Copy & c : copies) {
        c.alloc(N, K, ng, huge);
        for (int64_t i = 0; i < N * K / 2; i++) c.qs[i] = (uint8_t)rng();
        for (int64_t i = 0; i < N * ng; i++) c.scale[i] = f32_to_f16(0.001f + (rng() % 1000) * 1e-5f);
        for (int64_t i = 0; i < N * ng; i++) c.szero[i] = f32_to_f16(-0.008f * ((rng() % 1000) * 1e-3f));
    }
    std::vector<float> xf(K);
    for (auto & v : xf) v = (float)((int)(rng() % 2001) - 1000) * 1e-3f;
    std::vector<int8_t> xq(K);
    std::vector<float> xd(nb), xg(ng);
    kernels_ref().quantize_q8(xf.data(), K, G, xq.data(), xd.data(), xg.data());
    const Q8Row x{xq.data(), xd.data(), xg.data()};
    // the backend's decode split at 1 thread
    const int64_t n_tasks = std::max<int64_t>(1, std::min<int64_t>(N / 16, 4));
    const int64_t step = ((N + n_tasks - 1) / n_tasks + 3) / 4 * 4;
    const int inner = cache ? std::max<int>(1, (int)((mib << 20) / copy_bytes)) : 1; // passes over the one copy

    std::vector<float> yref(N), y(N);
    auto pass = [&](const Variant & v, const Copy & c, float * out) {
        const Q4Rows w = c.view(N, K, G);
        for (int64_t n0 = 0; n0 < N; n0 += step) v.fn(w, x, n0, std::min(N, n0 + step), out + n0);
    };
    pass(vs[0], copies[0], yref.data());
    if (vs[0].fn != lib->q4_matvec) pass(Variant{"table", lib->q4_matvec, true}, copies[0], yref.data());
    for (const Variant & v : vs) {
        pass(v, copies[0], y.data());
        if (v.exact && std::memcmp(y.data(), yref.data(), N * sizeof(float))) {
            std::fprintf(stderr, "variant %s: output differs from the table's kernel\n", v.name);
            return 1;
        }
    }
    std::vector<std::vector<double>> gbs(vs.size());
    for (int rep = 0; rep < reps + 1; rep++)
        for (size_t j = 0; j < vs.size(); j++) {
            const size_t i = (j + rep) % vs.size(); // each variant takes every position in turn
            const double t0 = now();
            for (int it = 0; it < inner; it++)
                for (const Copy & c : copies) pass(vs[i], c, y.data());
            const double dt = now() - t0;
            if (rep > 0) gbs[i].push_back((double)copy_bytes * n_copies * inner / dt / 1e9);
        }
    std::printf("q4 matvec %lldx%lld G=%d, 1 thread, %s%s, %d alternating reps, order rotated (GB/s: median [min, max])\n", (long long)N,
                (long long)K, G, cache ? "from cache (one copy)" : "from DRAM (copies cycled)", huge ? ", huge pages" : "", reps);
    for (size_t i = 0; i < vs.size(); i++) {
        std::vector<double> s = gbs[i];
        std::sort(s.begin(), s.end());
        std::printf("  %-22s %6.2f  [%6.2f, %6.2f]%s\n", vs[i].name, s[s.size() / 2], s.front(), s.back(),
                    vs[i].exact ? "" : "  (timing only)");
    }
    return 0;
}
