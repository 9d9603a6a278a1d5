// gptq.cpp — see gptq.h. Follows the published algorithm (IST-DASLab/gptq
// `fasterquant`, AutoGPTQ `GPTQ.fasterquant`), with one deliberate choice: the
// scale of each group is rounded to f16 before the group's codes are chosen
// (Shoal's one grid, packages/modelkit/src/quant/grid.ts, GPTQ style; the test
// compares against a reference built on it),
// so the error fed back is the error of the weights that are stored.
//
// Steps, for W [N, K] and H [K, K]:
//   dead inputs (H_kk = 0): H_kk = 1, W[:, k] = 0
//   static groups: each group's grid from the original W
//   act order: permute inputs by decreasing H_kk
//   H += damp · mean(diag H) · I
//   U = upper Cholesky factor of H⁻¹ (H⁻¹ = UᵀU), computed as the inverse of the
//       upper factor R of H = R·Rᵀ, which is the Cholesky factor of H with rows
//       and columns reversed (no explicit inverse of H is formed)
//   for each block of `block` inputs, for each input i in it:
//       at a group start: the group's grid from the current weights (the values
//           at the start of the block inside it, as the reference implementation)
//       q = Q(w_i); e = (w_i − q) / U_ii; w_j −= e · U_ij for the block's j > i
//   then the inputs after the block: W[:, i2:] −= E · U[i1:i2, i2:]
// Rows of W are independent given U: threads take rows.
#include "gptq.h"

#include "fake-quant.h"
#include "host-threads.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <functional>
#include <numeric>
#include <thread>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif

namespace shoal_addon {

namespace {

// worker() on host_threads(n) threads (this one included); the workers share the
// n items among themselves (e.g. through an atomic counter).
void on_host_threads(int64_t n, const std::function<void()> & worker) {
    std::vector<std::thread> th;
    for (int64_t t = 1; t < host_threads(n); t++) th.emplace_back(worker);
    worker();
    for (auto & x : th) x.join();
}

// [0, n) split over the host's cores.
void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)> & fn) {
    const int64_t nt = host_threads(n);
    if (nt == 1) return fn(0, n);
    const int64_t step = (n + nt - 1) / nt;
    std::vector<std::thread> th;
    for (int64_t t = 1; t < nt; t++) th.emplace_back([&, t] { fn(std::min(n, t * step), std::min(n, (t + 1) * step)); });
    fn(0, std::min(n, step));
    for (auto & x : th) x.join();
}

// Σ a[k]·b[k] with 32 independent partial sums: four vector chains, so the
// Cholesky and the inverse are not bound by the latency of one FMA chain.
__attribute__((target_clones("avx512f", "avx2", "default")))
double dot(const double * a, const double * b, int64_t n) {
    double acc[32] = {};
    int64_t k = 0;
    for (; k + 32 <= n; k += 32)
        for (int l = 0; l < 32; l++) acc[l] += a[k + l] * b[k + l];
    for (; k + 8 <= n; k += 8)
        for (int l = 0; l < 8; l++) acc[l] += a[k + l] * b[k + l];
    for (int l = 0; l < 8; l++) acc[l] = (acc[l] + acc[l + 8]) + (acc[l + 16] + acc[l + 24]);
    double s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (; k < n; k++) s += a[k] * b[k];
    return s;
}

// y[k] −= e·x[k]
__attribute__((target_clones("avx512f", "avx2", "default")))
void axpy_neg(double * y, const double * x, double e, int64_t n) {
    for (int64_t k = 0; k < n; k++) y[k] -= e * x[k];
}

// GPTQ's lazy update of the inputs after a block, for the nr rows of a tile:
// w[r][j] −= Σ_c e[r][c] · U[c][j] for j in [0, n), c = 0..cnt−1 in order (w and U
// rows with stride ldw, ldu; e [nr][lde]). Columns go 16 at a time, a row's 16
// running values held in registers over all cnt terms: each w element is read
// and written once per block instead of once per term (the tile has R = 32
// rows, so U's block is read from memory once per 32 rows of W).
#if defined(__x86_64__) || defined(_M_X64)
// block_update's full tiles on AVX-512: 8 rows × 16 columns of running values in
// 16 registers, each U value loaded once for all 8 rows (U's rows are K doubles
// apart, a multiple of 4 KiB for K % 512 == 0, so re-reading them per row
// missed L1). w −= e·u is one fused step, as the other ISAs' FMA builds.
__attribute__((target("avx512f")))
void block_update8_avx512(double * w0, int64_t ldw, const double * U, int64_t ldu, const double * e0, int64_t lde,
                          int64_t ngroups, int64_t cnt, int64_t n16) {
    for (int64_t j0 = 0; j0 < n16; j0 += 16)
      for (int64_t g = 0; g < ngroups; g++) { // groups of 8 rows share the L1-resident U columns
        double * w = w0 + g * 8 * ldw;
        const double * e = e0 + g * 8 * lde;
        __m512d a[8][2];
        for (int r = 0; r < 8; r++) {
            a[r][0] = _mm512_loadu_pd(w + r * ldw + j0);
            a[r][1] = _mm512_loadu_pd(w + r * ldw + j0 + 8);
        }
        for (int64_t c = 0; c < cnt; c++) {
            const __m512d u0 = _mm512_loadu_pd(U + c * ldu + j0), u1 = _mm512_loadu_pd(U + c * ldu + j0 + 8);
            for (int r = 0; r < 8; r++) {
                const __m512d ec = _mm512_set1_pd(e[r * lde + c]);
                a[r][0] = _mm512_fnmadd_pd(ec, u0, a[r][0]);
                a[r][1] = _mm512_fnmadd_pd(ec, u1, a[r][1]);
            }
        }
        for (int r = 0; r < 8; r++) {
            _mm512_storeu_pd(w + r * ldw + j0, a[r][0]);
            _mm512_storeu_pd(w + r * ldw + j0 + 8, a[r][1]);
        }
      }
}
const bool g_avx512 = __builtin_cpu_supports("avx512f");
#else
const bool g_avx512 = false;
#endif

// GPTQ's lazy update for a tile of nr rows (see above): the AVX-512 kernel for
// full tiles, else per row, 16 columns at a time in registers, then the rest.
__attribute__((target_clones("avx512f", "avx2", "default")))
void block_update_rows(double * w, int64_t ldw, const double * U, int64_t ldu, const double * e, int64_t lde, int64_t nr,
                       int64_t cnt, int64_t j0, int64_t n) {
    for (; j0 + 16 <= n; j0 += 16)
        for (int64_t r = 0; r < nr; r++) {
            double acc[16];
            double * wr = w + r * ldw + j0;
            for (int l = 0; l < 16; l++) acc[l] = wr[l];
            for (int64_t c = 0; c < cnt; c++) {
                const double ec = e[r * lde + c];
                const double * u = U + c * ldu + j0;
                for (int l = 0; l < 16; l++) acc[l] -= ec * u[l];
            }
            for (int l = 0; l < 16; l++) wr[l] = acc[l];
        }
    for (int64_t r = 0; r < nr; r++)
        for (int64_t c = 0; c < cnt; c++) axpy_neg(w + r * ldw + j0, U + c * ldu + j0, e[r * lde + c], n - j0);
}

void block_update(double * w, int64_t ldw, const double * U, int64_t ldu, const double * e, int64_t lde, int64_t nr,
                  int64_t cnt, int64_t n) {
#if defined(__x86_64__) || defined(_M_X64)
    if (g_avx512 && nr >= 8) {
        const int64_t full = nr / 8 * 8, n16 = n / 16 * 16;
        block_update8_avx512(w, ldw, U, ldu, e, lde, full / 8, cnt, n16);
        block_update_rows(w, ldw, U, ldu, e, lde, full, cnt, n16, n);                                  // last columns
        block_update_rows(w + full * ldw, ldw, U, ldu, e + full * lde, lde, nr - full, cnt, 0, n);     // last rows
        return;
    }
#endif
    block_update_rows(w, ldw, U, ldu, e, lde, nr, cnt, 0, n);
}

#if defined(__x86_64__) || defined(_M_X64)
// Σ of the 8 lanes, pairwise in a fixed order.
__attribute__((target("avx512f"))) inline double hsum(__m512d v) { return _mm512_reduce_add_pd(v); }

// Cholesky's left-looking update of one panel on AVX-512: A[i][c] −= Σ_{k<p0}
// A[i][k]·A[c][k] for rows i in [r0, r1) and panel columns c in [p0, min(p1, i+1)),
// p0 % 8 == 0. Tiles of 4 rows × 4 columns: 16 dot products share their loads
// (8 loads per 16 FMAs instead of 2 per FMA).
__attribute__((target("avx512f")))
void chol_update_avx512(double * A, int64_t K, int64_t p0, int64_t p1, int64_t r0, int64_t r1) {
    for (int64_t i0 = r0; i0 < r1; i0 += 4) {
        const int64_t ni = std::min<int64_t>(4, r1 - i0);
        const double * ar[4];
        for (int ii = 0; ii < 4; ii++) ar[ii] = A + (i0 + std::min<int64_t>(ii, ni - 1)) * K;
        for (int64_t c0 = p0; c0 < std::min(p1, i0 + ni); c0 += 4) {
            const int64_t nc = std::min<int64_t>(4, p1 - c0);
            const double * br[4];
            for (int cc = 0; cc < 4; cc++) br[cc] = A + (c0 + std::min<int64_t>(cc, nc - 1)) * K;
            __m512d acc[4][4];
            for (int ii = 0; ii < 4; ii++)
                for (int cc = 0; cc < 4; cc++) acc[ii][cc] = _mm512_setzero_pd();
            for (int64_t k = 0; k < p0; k += 8) {
                const __m512d b0 = _mm512_loadu_pd(br[0] + k), b1 = _mm512_loadu_pd(br[1] + k);
                const __m512d b2 = _mm512_loadu_pd(br[2] + k), b3 = _mm512_loadu_pd(br[3] + k);
                for (int ii = 0; ii < 4; ii++) {
                    const __m512d a = _mm512_loadu_pd(ar[ii] + k);
                    acc[ii][0] = _mm512_fmadd_pd(a, b0, acc[ii][0]);
                    acc[ii][1] = _mm512_fmadd_pd(a, b1, acc[ii][1]);
                    acc[ii][2] = _mm512_fmadd_pd(a, b2, acc[ii][2]);
                    acc[ii][3] = _mm512_fmadd_pd(a, b3, acc[ii][3]);
                }
            }
            for (int ii = 0; ii < ni; ii++)
                for (int cc = 0; cc < nc; cc++) {
                    const int64_t i = i0 + ii, c = c0 + cc;
                    if (c <= i) A[i * K + c] -= hsum(acc[ii][cc]);
                }
        }
    }
}

// Four dot products Σ_k a[k]·x_q[k], k < n, sharing the loads of a (the inverse's
// columns of one group against one row of M).
__attribute__((target("avx512f")))
void dot4_avx512(const double * a, const double * const * x, int64_t n, double * out) {
    __m512d acc[4] = {_mm512_setzero_pd(), _mm512_setzero_pd(), _mm512_setzero_pd(), _mm512_setzero_pd()};
    int64_t k = 0;
    for (; k + 8 <= n; k += 8) {
        const __m512d av = _mm512_loadu_pd(a + k);
        for (int q = 0; q < 4; q++) acc[q] = _mm512_fmadd_pd(av, _mm512_loadu_pd(x[q] + k), acc[q]);
    }
    if (k < n) {
        const __mmask8 m = (__mmask8)((1u << (n - k)) - 1);
        const __m512d av = _mm512_maskz_loadu_pd(m, a + k);
        for (int q = 0; q < 4; q++) acc[q] = _mm512_fmadd_pd(av, _mm512_maskz_loadu_pd(m, x[q] + k), acc[q]);
    }
    for (int q = 0; q < 4; q++) out[q] = hsum(acc[q]);
}
#endif

// In-place lower Cholesky of the row-major A [K, K] (lower triangle read and
// written), left-looking in panels of 64 columns; false when not positive definite.
bool cholesky_lower(double * A, int64_t K, int64_t * bad) {
    constexpr int64_t nb = 64;
    bool ok = true;
    for (int64_t p0 = 0; p0 < K && ok; p0 += nb) {
        const int64_t p1 = std::min(K, p0 + nb);
        if (p0 > 0)
            parallel_for(K - p0, [&](int64_t r0, int64_t r1) {
#if defined(__x86_64__) || defined(_M_X64)
                if (g_avx512) return chol_update_avx512(A, K, p0, p1, p0 + r0, p0 + r1);
#endif
                for (int64_t i = p0 + r0; i < p0 + r1; i++)
                    for (int64_t c = p0; c < std::min(p1, i + 1); c++) A[i * K + c] -= dot(A + i * K, A + c * K, p0);
            });
        for (int64_t c = p0; c < p1; c++) {
            for (int64_t j = p0; j < c; j++)
                A[c * K + j] = (A[c * K + j] - dot(A + c * K + p0, A + j * K + p0, j - p0)) / A[j * K + j];
            const double d = A[c * K + c] - dot(A + c * K + p0, A + c * K + p0, c - p0);
            if (!(d > 0) || !std::isfinite(d)) {
                *bad = c;
                ok = false;
                break;
            }
            A[c * K + c] = std::sqrt(d);
        }
        if (!ok) break;
        parallel_for(K - p1, [&](int64_t r0, int64_t r1) {
            for (int64_t i = p1 + r0; i < p1 + r1; i++)
                for (int64_t j = p0; j < p1; j++)
                    A[i * K + j] = (A[i * K + j] - dot(A + i * K + p0, A + j * K + p0, j - p0)) / A[j * K + j];
        });
    }
    return ok;
}

// Shoal's grid of one group (quant/grid.ts groupParams, style gptq): range
// includes 0, scale rounded to f16.
struct Grid {
    double s;
    int z;
    uint16_t sbits;
};

uint16_t f16_bits_exact(double v) { // v > 0, exactly an f16 value
    if (v < 0x1p-14) return (uint16_t)std::lround(v * 0x1p24);
    const int e = std::ilogb(v);
    return (uint16_t)(((e + 15) << 10) | ((int)std::ldexp(v, 10 - e) - 1024));
}

double f16_value(uint16_t h) { // positive finite f16 bits
    const int e = (h >> 10) & 0x1f, m = h & 0x3ff;
    return e == 0 ? std::ldexp((double)m, -24) : std::ldexp((double)(1024 + m), e - 25);
}

bool make_grid(double mn, double mx, int maxq, bool sym, int min_zero, Grid * g, std::string * err) {
    mn = std::min(mn, 0.0);
    mx = std::max(mx, 0.0);
    double range = sym ? 2 * std::max(-mn, mx) : mx - mn;
    if (!std::isfinite(range)) {
        *err = "a weight is not finite; the checkpoint is corrupt";
        return false;
    }
    if (range == 0) range = 1e-5 * maxq;
    const double s = round_to_f16(range / maxq);
    if (!(s > 0) || !std::isfinite(s)) {
        *err = "weight range " + std::to_string(range) + " gives a scale outside f16";
        return false;
    }
    g->s = s;
    g->sbits = f16_bits_exact(s);
    g->z = sym ? (maxq + 1) >> 1 : (int)std::min<double>(maxq, std::max<double>(min_zero, std::nearbyint(-mn / s)));
    return true;
}

inline int quant(double w, const Grid & g, int maxq) {
    return (int)std::min<double>(maxq, std::max(0.0, std::nearbyint(w / g.s) + g.z));
}

} // namespace

bool gptq_quantize(const GptqParams & p, double * H, const float * W, GptqOutput * out, std::string * err) {
    const int64_t N = p.N, K = p.K, G = p.group, B = std::max<int64_t>(1, p.block);
    if (N < 1 || K < 1 || G < 1 || K % G != 0 || p.bits < 2 || p.bits > 8) {
        *err = "gptq: need N, K >= 1, a group dividing K and bits 2..8";
        return false;
    }
    const int maxq = (1 << p.bits) - 1;
    const int64_t ng = K / G;
    out->q.assign((size_t)(K * N), 0);
    out->scales.assign((size_t)(ng * N), 0);
    out->zeros.assign((size_t)(ng * N), 0);
    out->g_idx.assign((size_t)K, 0);

    // undamped H kept (as f32) for the error report
    std::vector<float> H0;
    if (p.errors) H0.assign(H, H + K * K);

    std::vector<char> dead((size_t)K, 0);
    out->dead = 0;
    for (int64_t k = 0; k < K; k++)
        if (H[k * K + k] == 0) {
            dead[k] = 1;
            H[k * K + k] = 1;
            out->dead++;
        }
    auto wv = [&](int64_t n, int64_t k) -> double { return dead[k] ? 0.0 : (double)W[n * K + k]; };

    // static groups: grids from the original weights, in original order
    std::vector<Grid> static_grid;
    std::string gerr;
    bool gok = true;
    if (p.static_groups) {
        static_grid.resize((size_t)(ng * N));
        for (int64_t n = 0; n < N && gok; n++)
            for (int64_t g = 0; g < ng && gok; g++) {
                double mn = INFINITY, mx = -INFINITY;
                for (int64_t k = g * G; k < (g + 1) * G; k++) {
                    mn = std::min(mn, wv(n, k));
                    mx = std::max(mx, wv(n, k));
                }
                gok = make_grid(mn, mx, maxq, p.sym, p.min_zero, &static_grid[g * N + n], &gerr);
            }
        if (!gok) {
            *err = gerr;
            return false;
        }
    }

    // permutation (act order: decreasing diag H, ties in input order)
    std::vector<int64_t> perm((size_t)K);
    std::iota(perm.begin(), perm.end(), 0);
    if (p.act_order)
        std::stable_sort(perm.begin(), perm.end(), [&](int64_t a, int64_t b) { return H[a * K + a] > H[b * K + b]; });

    double mean_diag = 0;
    for (int64_t k = 0; k < K; k++) mean_diag += H[k * K + k];
    mean_diag /= (double)K;
    const double damp = p.damp * mean_diag;

    // A = J·P·(H + damp)·Pᵀ·J (permuted, then reversed), lower Cholesky A = M·Mᵀ;
    // then R = J·M·J is upper with P H Pᵀ = R·Rᵀ and U = R⁻¹ = J·M⁻¹·J.
    std::vector<double> A((size_t)(K * K));
    parallel_for(K, [&](int64_t r0, int64_t r1) {
        for (int64_t i = r0; i < r1; i++) {
            const int64_t pi = perm[K - 1 - i];
            for (int64_t j = 0; j <= i; j++) A[i * K + j] = H[pi * K + perm[K - 1 - j]] + (i == j ? damp : 0.0);
        }
    });
    int64_t bad = -1;
    if (!cholesky_lower(A.data(), K, &bad)) {
        *err = "the Hessian is not positive definite after dampening (pivot " + std::to_string(bad) +
               "); raise --damp (e.g. 0.1) or use more calibration tokens";
        return false;
    }
    // Minv = M⁻¹ (lower), column by column (independent): X[j][i] = Minv[i][j], i >= j.
    // Columns go in groups of kCols that walk the rows of M together, so each row
    // segment M[i, j0..i] is read from memory once per group instead of once per
    // column (it stays in cache for the group's dot products); the groups are handed
    // out in order to the threads (column j costs ∝ (K − j)², so contiguous halves
    // would leave one thread with 7/8 of the work). The portable path sums each x[i]
    // as column by column did; the AVX-512 path sums over [j0, i) (the extra terms
    // are zeros) in dot4_avx512's order, so its last bits can differ.
    double * X = H; // H is no longer needed: reuse it
    {
        constexpr int64_t kCols = 16;
        const int64_t n_groups = (K + kCols - 1) / kCols;
        std::atomic<int64_t> next{0};
        const double * Ap = A.data();
        auto worker = [&] {
            std::vector<double> xs((size_t)(kCols * K));
            for (int64_t gi; (gi = next.fetch_add(1)) < n_groups;) {
                const int64_t j0 = gi * kCols, j1 = std::min(K, j0 + kCols);
                // forward substitution of M x_j = e_j, x_j[i] for i >= j
#if defined(__x86_64__) || defined(_M_X64)
                if (g_avx512) {
                    // x_j[k] = 0 for j0 <= k < j, so every column's sum can run over
                    // [j0, i) and four columns share the loads of M's row
                    for (int64_t j = j0; j < j1; j++) std::fill_n(xs.data() + (j - j0) * K + j0, j - j0, 0.0);
                    for (int64_t i = j0; i < K; i++) {
                        const double * Ai = Ap + i * K;
                        const double d = Ai[i];
                        const int64_t je = std::min(j1, i + 1);
                        for (int64_t j = j0; j < je; j += 4) {
                            const double * xq[4];
                            double sq[4];
                            for (int q = 0; q < 4; q++) xq[q] = xs.data() + (std::min(j + q, je - 1) - j0) * K + j0;
                            dot4_avx512(Ai + j0, xq, i - j0, sq);
                            for (int q = 0; q < 4 && j + q < je; q++)
                                xs[(size_t)((j + q - j0) * K + i)] = ((i == j + q ? 1.0 : 0.0) - sq[q]) / d;
                        }
                    }
                } else
#endif
                for (int64_t i = j0; i < K; i++) {
                    const double * Ai = Ap + i * K;
                    const double d = Ai[i];
                    for (int64_t j = j0; j < std::min(j1, i + 1); j++) {
                        double * x = xs.data() + (j - j0) * K;
                        const double s = (i == j ? 1.0 : 0.0) - dot(Ai + j, x + j, i - j);
                        x[i] = s / d;
                    }
                }
                for (int64_t j = j0; j < j1; j++) {
                    const double * x = xs.data() + (j - j0) * K;
                    for (int64_t i = 0; i < j; i++) X[j * K + i] = 0;
                    for (int64_t i = j; i < K; i++) X[j * K + i] = x[i];
                }
            }
        };
        on_host_threads(n_groups, worker);
    }
    // U[i][j] = Minv[K−1−i][K−1−j] = X[K−1−j][K−1−i], upper (j >= i); into A
    parallel_for(K, [&](int64_t r0, int64_t r1) {
        for (int64_t i = r0; i < r1; i++)
            for (int64_t j = 0; j < K; j++) A[i * K + j] = j >= i ? X[(K - 1 - j) * K + (K - 1 - i)] : 0.0;
    });
    const double * U = A.data();

    // column-by-column quantization, rows in tiles (U's rows reused across a tile)
    constexpr int64_t R = 32; // rows per tile: U's block is read once per tile
    std::vector<double> losses((size_t)N, 0.0);
    std::vector<std::string> errs;
    std::vector<char> oks;
    const int64_t nt = host_threads(N);
    errs.resize((size_t)nt);
    oks.assign((size_t)nt, 1);
    const int64_t step = (N + nt - 1) / nt;
    auto rows = [&](int64_t t) {
        const int64_t n0 = std::min(N, t * step), n1 = std::min(N, (t + 1) * step);
        std::vector<double> w((size_t)(R * K)), wb((size_t)(R * B)), e((size_t)(R * B));
        std::vector<Grid> grid((size_t)R);
        for (int64_t t0 = n0; t0 < n1; t0 += R) {
            const int64_t nr = std::min(R, n1 - t0);
            for (int64_t r = 0; r < nr; r++)
                for (int64_t i = 0; i < K; i++) w[r * K + i] = wv(t0 + r, perm[i]);
            for (int64_t i1 = 0; i1 < K; i1 += B) {
                const int64_t i2 = std::min(K, i1 + B), cnt = i2 - i1;
                for (int64_t r = 0; r < nr; r++) std::copy(&w[r * K + i1], &w[r * K + i2], &wb[r * B]);
                for (int64_t i = i1; i < i2; i++) {
                    const double d = U[i * K + i];
                    for (int64_t r = 0; r < nr; r++) {
                        const int64_t n = t0 + r;
                        double * wr = &w[r * K];
                        const Grid * gp;
                        if (p.static_groups) {
                            gp = &static_grid[(perm[i] / G) * N + n];
                        } else {
                            if (i % G == 0) {
                                // the group's grid from the weights as they were at the start of this block
                                double mn = INFINITY, mx = -INFINITY;
                                for (int64_t k = i; k < i + G; k++) {
                                    const double v = k < i2 ? wb[r * B + (k - i1)] : wr[k];
                                    mn = std::min(mn, v);
                                    mx = std::max(mx, v);
                                }
                                if (!make_grid(mn, mx, maxq, p.sym, p.min_zero, &grid[r], &errs[t])) {
                                    oks[t] = 0;
                                    return;
                                }
                                const int64_t g = i / G;
                                out->scales[g * N + n] = grid[r].sbits;
                                out->zeros[g * N + n] = (uint8_t)grid[r].z;
                            }
                            gp = &grid[r];
                        }
                        const int qv = quant(wr[i], *gp, maxq);
                        const double dq = (qv - gp->z) * gp->s;
                        const double er = (wr[i] - dq) / d;
                        losses[n] += er * er;
                        out->q[perm[i] * N + n] = (uint8_t)qv;
                        e[r * B + (i - i1)] = er;
                        axpy_neg(wr + i + 1, U + i * K + i + 1, er, i2 - i - 1);
                    }
                }
                // lazy update of the inputs after the block
                if (i2 < K) block_update(&w[i2], K, U + i1 * K + i2, K, e.data(), B, nr, cnt, K - i2);
            }
        }
    };
    {
        std::vector<std::thread> th;
        for (int64_t t = 1; t < nt; t++) th.emplace_back(rows, t);
        rows(0);
        for (auto & x : th) x.join();
    }
    for (int64_t t = 0; t < nt; t++)
        if (!oks[t]) {
            *err = errs[t];
            return false;
        }
    out->loss = 0;
    for (double l : losses) out->loss += l;
    if (p.static_groups) {
        for (int64_t g = 0; g < ng; g++)
            for (int64_t n = 0; n < N; n++) {
                out->scales[g * N + n] = static_grid[g * N + n].sbits;
                out->zeros[g * N + n] = (uint8_t)static_grid[g * N + n].z;
            }
        for (int64_t k = 0; k < K; k++) out->g_idx[k] = (int32_t)(k / G);
    } else {
        for (int64_t i = 0; i < K; i++) out->g_idx[perm[i]] = (int32_t)(i / G);
    }

    if (p.errors) {
        // δᵀ H δ per row for GPTQ's and RTN's weights (RTN: the same grid on the
        // original weights, groups in input order), and wᵀ H w
        std::vector<double> eg((size_t)N, 0), er((size_t)N, 0), en((size_t)N, 0);
        bool rok = true;
        std::string rerr;
        parallel_for(N, [&](int64_t n0, int64_t n1) {
            std::vector<double> dg((size_t)K), dr((size_t)K), w0((size_t)K), hv((size_t)K);
            std::string e2;
            for (int64_t n = n0; n < n1; n++) {
                for (int64_t k = 0; k < K; k++) w0[k] = wv(n, k);
                for (int64_t k = 0; k < K; k++) {
                    const int64_t g = out->g_idx[k];
                    const double s = f16_value(out->scales[g * N + n]);
                    dg[k] = (out->q[k * N + n] - (double)out->zeros[g * N + n]) * s - w0[k];
                }
                for (int64_t g = 0; g < ng; g++) {
                    double mn = INFINITY, mx = -INFINITY;
                    for (int64_t k = g * G; k < (g + 1) * G; k++) {
                        mn = std::min(mn, w0[k]);
                        mx = std::max(mx, w0[k]);
                    }
                    Grid gr;
                    if (!make_grid(mn, mx, maxq, p.sym, p.min_zero, &gr, &e2)) {
                        rok = false;
                        return;
                    }
                    for (int64_t k = g * G; k < (g + 1) * G; k++) dr[k] = (quant(w0[k], gr, maxq) - gr.z) * gr.s - w0[k];
                }
                double a = 0, b = 0, c = 0;
                for (int64_t i = 0; i < K; i++) {
                    const float * hr = &H0[(size_t)(i * K)];
                    double sg = 0, sr = 0, sw = 0;
                    for (int64_t j = 0; j < K; j++) {
                        sg += hr[j] * dg[j];
                        sr += hr[j] * dr[j];
                        sw += hr[j] * w0[j];
                    }
                    a += dg[i] * sg;
                    b += dr[i] * sr;
                    c += w0[i] * sw;
                }
                eg[n] = a;
                er[n] = b;
                en[n] = c;
            }
        });
        if (!rok) {
            *err = "gptq: RTN comparison failed on a non-finite weight";
            return false;
        }
        out->err_gptq = std::accumulate(eg.begin(), eg.end(), 0.0);
        out->err_rtn = std::accumulate(er.begin(), er.end(), 0.0);
        out->norm = std::accumulate(en.begin(), en.end(), 0.0);
    }
    return true;
}

} // namespace shoal_addon
