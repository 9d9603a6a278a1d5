// test-arch-ops.cpp — the ops the non-Llama families add (backend.h, "ops of
// the other families") and sliding-window attention, on every ISA compiled in
// and supported here at 1 and 2 threads, against (a) the scalar reference ISA
// and (b) a double-precision computation written here from the raw inputs:
// LayerNorm with bias, ReLU, GELU (erf, tanh), learned positions, fused-qkv
// column split, MoE top-k routing, row gather / weighted scatter-add, and
// attention over a window, in a full cache and in the ring cache.
#include "backend.h"
#include "kernels.h"
#include "error.h"
#include "route.h"
#include "tensor.h"
#include "test-tensors.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
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
    if (ok) g_pass++;
    else {
        g_fail++;
        std::printf("FAIL %s\n", what.c_str());
    }
}

void check_close(const std::string & what, const std::vector<float> & got, const std::vector<double> & want,
                 const std::vector<double> & tol) {
    bool ok = got.size() == want.size();
    size_t wi = 0;
    double worst = 0;
    for (size_t i = 0; ok && i < got.size(); i++) {
        const double e = std::fabs((double)got[i] - want[i]);
        if (!(e <= tol[i])) ok = false; // NaN fails too
        if (!(e / (tol[i] > 0 ? tol[i] : 1e-30) <= worst)) {
            worst = e / (tol[i] > 0 ? tol[i] : 1e-30);
            wi = i;
        }
    }
    if (!ok && wi < got.size()) std::printf("  worst at %zu: got %.9g want %.9g tol %.3g\n", wi, got[wi], want[wi], tol[wi]);
    check(ok, what);
}

std::mt19937 rng(2207);
float urand(float a, float b) { return std::uniform_real_distribution<float>(a, b)(rng); }
std::vector<float> rand_vec(size_t n, float a = -1, float b = 1) {
    std::vector<float> v(n);
    for (auto & x : v) x = urand(a, b);
    return v;
}

using shoal_test::Bk;
using shoal_test::view;

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

std::vector<float> read(Backend & b, const Act & a) {
    std::vector<float> y((size_t)(a.rows * a.cols));
    b.to_host(a, 0, a.rows, y.data());
    return y;
}

void test_layernorm(std::vector<Bk> & bks, Backend & ref) {
    for (int64_t M : {1, 3, 17, 64})
        for (int64_t D : {1, 7, 64, 100, 2048}) {
            // an offset mean, as in real residual streams: the two-pass variance keeps it exact
            const std::vector<float> x = rand_vec(M * D, 2, 6), w = rand_vec(D, 0.5f, 1.5f), bias = rand_vec(D, -1, 1);
            const float eps = 1e-5f;
            std::vector<double> want(M * D), tol(M * D);
            for (int64_t m = 0; m < M; m++) {
                double mean = 0, var = 0;
                for (int64_t i = 0; i < D; i++) mean += x[m * D + i];
                mean /= D;
                for (int64_t i = 0; i < D; i++) var += (x[m * D + i] - mean) * (x[m * D + i] - mean);
                const double r = 1.0 / std::sqrt(var / D + eps);
                for (int64_t i = 0; i < D; i++) {
                    want[m * D + i] = (x[m * D + i] - mean) * r * w[i] + bias[i];
                    // f32 sums over D ≤ 2048 of values ≤ 6: ~1e-5 of the normalised value
                    tol[m * D + i] = 2e-5 * (std::fabs((x[m * D + i] - mean) * r * w[i]) + 1.0) ;
                }
            }
            compare_all(bks, ref, "layernorm M=" + std::to_string(M) + " D=" + std::to_string(D), [&](Backend & b) {
                auto vw = b.load_vec(view("ln.weight", DType::F32, {D}, w.data(), D * 4));
                auto vb = b.load_vec(view("ln.bias", DType::F32, {D}, bias.data(), D * 4));
                Act a = b.new_act(M, D), o = b.new_act(M, D);
                b.from_host(a, x.data());
                b.layernorm(a, *vw, *vb, eps, o);
                std::vector<float> y = read(b, o);
                // in place gives the same
                b.layernorm(a, *vw, *vb, eps, a);
                const bool same = read(b, a) == y;
                b.free_act(a);
                b.free_act(o);
                if (!same) y.assign(y.size(), NAN);
                return y;
            }, want, tol);
        }
}

void test_activations(std::vector<Bk> & bks, Backend & ref) {
    for (int64_t n : {1, 7, 16, 100, 5000, 70000}) {
        std::vector<float> x = rand_vec(n, -6, 6);
        if (n >= 7) { x[0] = 0.0f; x[1] = -0.0f; x[2] = 20.0f; x[3] = -20.0f; x[4] = 1e-8f; }
        for (ActKind k : {ActKind::Relu, ActKind::GeluErf, ActKind::GeluTanh}) {
            std::vector<double> want(n), tol(n);
            for (int64_t i = 0; i < n; i++) {
                const double v = x[i];
                if (k == ActKind::Relu) want[i] = v > 0 ? v : 0;
                else if (k == ActKind::GeluErf) want[i] = 0.5 * v * (1 + std::erf(v / std::sqrt(2.0)));
                else want[i] = 0.5 * v * (1 + std::tanh(std::sqrt(2.0 / M_PI) * (v + 0.044715 * v * v * v)));
                tol[i] = k == ActKind::Relu ? 0.0 : 2e-6 * std::fabs(want[i]) + 1e-7 * std::fabs(v) + 1e-12;
            }
            const char * name = k == ActKind::Relu ? "relu" : k == ActKind::GeluErf ? "gelu_erf" : "gelu_tanh";
            compare_all(bks, ref, std::string(name) + " n=" + std::to_string(n), [&](Backend & b) {
                Act a = b.new_act(1, n);
                b.from_host(a, x.data());
                b.activation(a, k);
                std::vector<float> y = read(b, a);
                b.free_act(a);
                return y;
            }, want, tol);
        }
    }
    bool threw = false;
    Act a = ref.new_act(1, 4);
    try { ref.activation(a, ActKind::Silu); } catch (const Error & e) { threw = e.status == SHOAL_ERR_INVALID_ARG; }
    ref.free_act(a);
    check(threw, "activation(Silu) → SHOAL_ERR_INVALID_ARG (only fused as silu_mul)");
}

void test_positions_and_cols(std::vector<Bk> & bks, Backend & ref) {
    // learned positions: exact (one f32 add of a value converted exactly)
    for (DType dt : {DType::F32, DType::F16})
        for (int offset : {0, 2})
            for (int pos0 : {0, 5, 30}) {
                const int64_t P = 40, D = 24, M = 3;
                std::vector<float> tf = rand_vec(P * D);
                std::vector<uint16_t> th(P * D);
                for (int64_t i = 0; i < P * D; i++) th[i] = f32_to_f16(tf[i]);
                const std::vector<float> x = rand_vec(M * D);
                std::vector<double> want(M * D), tol(M * D, 0.0);
                for (int64_t m = 0; m < M; m++)
                    for (int64_t i = 0; i < D; i++) {
                        const float t = dt == DType::F32 ? tf[(pos0 + offset + m) * D + i] : f16_to_f32(th[(pos0 + offset + m) * D + i]);
                        want[m * D + i] = (double)(x[m * D + i] + t);
                    }
                const void * data = dt == DType::F32 ? (const void *)tf.data() : (const void *)th.data();
                compare_all(bks, ref, std::string("add_positions ") + dtype_name(dt) + " offset=" + std::to_string(offset) +
                                          " pos0=" + std::to_string(pos0), [&](Backend & b) {
                    auto e = b.load_embedding(view("wpe", dt, {P, D}, data, P * D * dtype_size(dt)));
                    Act a = b.new_act(M, D);
                    b.from_host(a, x.data());
                    b.add_positions(a, *e, pos0, offset);
                    std::vector<float> y = read(b, a);
                    b.free_act(a);
                    return y;
                }, want, tol);
            }
    {
        std::vector<float> tf(10 * 4, 0.0f);
        auto e = ref.load_embedding(view("wpe", DType::F32, {10, 4}, tf.data(), tf.size() * 4));
        Act a = ref.new_act(2, 4);
        bool threw = false;
        try { ref.add_positions(a, *e, 7, 2); } catch (const Error & err) { threw = err.status == SHOAL_ERR_INVALID_ARG; }
        ref.free_act(a);
        check(threw, "add_positions past the table → SHOAL_ERR_INVALID_ARG");
    }
    // copy_cols: the q | k | v parts of a fused projection, exact
    const int64_t M = 5, qd = 32, kvd = 8, C = qd + 2 * kvd;
    const std::vector<float> src = rand_vec(M * C);
    for (int64_t c0 : {(int64_t)0, qd, qd + kvd}) {
        const int64_t w = c0 == 0 ? qd : kvd;
        std::vector<double> want(M * w), tol(M * w, 0.0);
        for (int64_t m = 0; m < M; m++)
            for (int64_t i = 0; i < w; i++) want[m * w + i] = src[m * C + c0 + i];
        compare_all(bks, ref, "copy_cols c0=" + std::to_string(c0), [&](Backend & b) {
            Act s = b.new_act(M, C), d = b.new_act(M, w);
            b.from_host(s, src.data());
            b.copy_cols(s, c0, d);
            std::vector<float> y = read(b, d);
            b.free_act(s);
            b.free_act(d);
            return y;
        }, want, tol);
    }
}

// Routing: softmax over E, top-k by probability (ties: lower index), renormalised or not.
void test_routing(std::vector<Bk> & bks, Backend & ref) {
    for (int E : {8, 60, 128})
        for (int k : {1, 2, 8})
            for (bool renorm : {true, false}) {
                if (k > E) continue;
                const int64_t M = 9;
                std::vector<float> logits = rand_vec(M * E, -4, 4);
                logits[3 * E + 1] = logits[3 * E + 5] = 9.0f; // a tie: expert 1 before 5
                std::vector<int32_t> want_ids(M * k);
                std::vector<double> want_w(M * k);
                for (int64_t m = 0; m < M; m++) {
                    std::vector<double> p(E);
                    double mx = -1e300, s = 0;
                    for (int e = 0; e < E; e++) mx = std::max(mx, (double)logits[m * E + e]);
                    for (int e = 0; e < E; e++) s += (p[e] = std::exp(logits[m * E + e] - mx));
                    std::vector<int> order(E);
                    for (int e = 0; e < E; e++) order[e] = e;
                    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return p[a] > p[b]; });
                    double sel = 0;
                    for (int j = 0; j < k; j++) sel += p[order[j]] / s;
                    for (int j = 0; j < k; j++) {
                        want_ids[m * k + j] = order[j];
                        want_w[m * k + j] = p[order[j]] / s / (renorm ? sel : 1.0);
                    }
                }
                std::vector<double> tol(M * k, 1e-6);
                std::ostringstream tag;
                tag << "route_topk E=" << E << " k=" << k << (renorm ? " renorm" : "");
                std::vector<Bk *> all;
                for (auto & bk : bks) all.push_back(&bk);
                for (Backend * b : [&] { std::vector<Backend *> v{&ref}; for (auto * bk : all) v.push_back(bk->b.get()); return v; }()) {
                    Act a = b->new_act(M, E);
                    b->from_host(a, logits.data());
                    std::vector<int32_t> ids(M * k, -1);
                    std::vector<float> w(M * k);
                    b->route_topk(a, k, renorm, ids.data(), w.data());
                    b->free_act(a);
                    check(ids == want_ids, std::string(b->isa()) + ": " + tag.str() + " ids");
                    check_close(std::string(b->isa()) + ": " + tag.str() + " weights", w, want_w, tol);
                }
            }
}

void test_gather_scatter(std::vector<Bk> & bks, Backend & ref) {
    const int64_t M = 11, D = 37, n = 4;
    const std::vector<float> src = rand_vec(M * D), y = rand_vec(n * D), base = rand_vec(M * D);
    const int32_t rows[n] = {7, 0, 10, 3};
    const float w[n] = {0.25f, 0.5f, 1.0f, 0.125f}; // exact products: only one rounding in the add
    std::vector<double> want(n * D), tol(n * D, 0.0);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < D; j++) want[i * D + j] = src[rows[i] * D + j];
    compare_all(bks, ref, "gather_rows", [&](Backend & b) {
        Act s = b.new_act(M, D), d = b.new_act(n, D);
        b.from_host(s, src.data());
        b.gather_rows(s, rows, n, d);
        std::vector<float> out = read(b, d);
        b.free_act(s);
        b.free_act(d);
        return out;
    }, want, tol);
    std::vector<double> want2(base.begin(), base.end()), tol2(M * D, 0.0);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < D; j++) want2[rows[i] * D + j] = (double)(base[rows[i] * D + j] + w[i] * y[i * D + j]);
    compare_all(bks, ref, "scatter_add_rows", [&](Backend & b) {
        Act d = b.new_act(M, D), s = b.new_act(n, D);
        b.from_host(d, base.data());
        b.from_host(s, y.data());
        b.scatter_add_rows(d, rows, w, n, s);
        std::vector<float> out = read(b, d);
        b.free_act(s);
        b.free_act(d);
        return out;
    }, want2, tol2);
    bool threw = false;
    Act s = ref.new_act(M, D), d = ref.new_act(n, D);
    const int32_t bad[1] = {(int32_t)M};
    try { ref.gather_rows(s, bad, 1, d); } catch (const Error & e) { threw = e.status == SHOAL_ERR_INVALID_ARG; }
    ref.free_act(s);
    ref.free_act(d);
    check(threw, "gather_rows: row out of range → SHOAL_ERR_INVALID_ARG");
}

// Sliding window: row m (position P = n_past + m) sees max(0, P−W+1)..P. Stored the
// way a session stores them (chunks of up to `chunk` rows), in a cache made with that
// max_rows: a ring of W + chunk − 1 slots whenever that is smaller than n_ctx.
void test_window_attention(std::vector<Bk> & bks, Backend & ref) {
    struct C { int W, n_ctx, chunk, n_past; int64_t M; };
    const C cases[] = {{4, 64, 1, 0, 1},  {4, 64, 1, 9, 1},   {4, 64, 4, 30, 4},  {8, 64, 4, 13, 3},  {16, 200, 8, 150, 8},
                       {16, 200, 8, 151, 5}, {5, 64, 3, 40, 1}, {64, 64, 8, 20, 8}, {3, 300, 16, 283, 16}, {100, 300, 16, 250, 16},
                       {40, 400, 1, 333, 1}};
    for (KvType kt : {KvType::F32, KvType::F16, KvType::Q8})
    for (const C & c : cases) {
        const int Hkv = 2, H = 4, hd = 16, kv_dim = Hkv * hd, layers = 2, layer = 1;
        const int n_pos = c.n_past + (int)c.M;
        const std::vector<float> kc = rand_vec(n_pos * kv_dim, -2, 2), vc = rand_vec(n_pos * kv_dim);
        const std::vector<float> q = rand_vec(c.M * H * hd, -2, 2);
        // what the cache holds: f16-rounded, or q8 with one scale per (position, head) (kernels.h)
        std::vector<double> kh(kc.size()), vh(vc.size());
        for (int p = 0; p < n_pos; p++)
            for (int g = 0; g < Hkv; g++) {
                const float * kr = &kc[p * kv_dim + g * hd], * vr = &vc[p * kv_dim + g * hd];
                int8_t qk[16], qv[16];
                const float dk = kt == KvType::Q8 ? kv_quantize_q8(kr, hd, qk) : 0, dv = kt == KvType::Q8 ? kv_quantize_q8(vr, hd, qv) : 0;
                for (int i = 0; i < hd; i++) {
                    const size_t j = (size_t)p * kv_dim + g * hd + i;
                    kh[j] = kt == KvType::F32 ? kr[i] : kt == KvType::F16 ? f16_to_f32(f32_to_f16(kr[i])) : (double)qk[i] * dk;
                    vh[j] = kt == KvType::F32 ? vr[i] : kt == KvType::F16 ? f16_to_f32(f32_to_f16(vr[i])) : (double)qv[i] * dv;
                }
            }
        const float scale = 1.0f / std::sqrt((float)hd);
        std::vector<double> want(c.M * H * hd), tol(c.M * H * hd);
        for (int64_t m = 0; m < c.M; m++)
            for (int h = 0; h < H; h++) {
                const int kvh = h / (H / Hkv), P = c.n_past + (int)m, lo = std::max(0, P - c.W + 1);
                std::vector<double> s(P + 1);
                double mx = -1e300, sum = 0;
                for (int j = lo; j <= P; j++) {
                    double d = 0;
                    for (int i = 0; i < hd; i++) d += (double)q[(m * H + h) * hd + i] * kh[j * kv_dim + kvh * hd + i];
                    mx = std::max(mx, s[j] = d * scale);
                }
                for (int j = lo; j <= P; j++) sum += (s[j] = std::exp(s[j] - mx));
                for (int i = 0; i < hd; i++) {
                    double o = 0;
                    for (int j = lo; j <= P; j++) o += s[j] / sum * vh[j * kv_dim + kvh * hd + i];
                    want[(m * H + h) * hd + i] = o;
                    tol[(m * H + h) * hd + i] = kt == KvType::Q8 ? 1e-4 : 2e-5;
                }
            }
        std::ostringstream tag;
        tag << "window attention kv " << kv_type_name(kt) << " W=" << c.W << " n_ctx=" << c.n_ctx << " chunk=" << c.chunk
            << " n_past=" << c.n_past << " M=" << c.M;
        compare_all(bks, ref, tag.str(), [&](Backend & b) {
            auto kv = b.new_kv_cache(layers, c.n_ctx, kv_dim, hd, kt, c.W, c.chunk);
            check(kv->n_slots >= std::min(c.W + c.chunk - 1, c.n_ctx) && kv->n_slots <= c.n_ctx, tag.str() + ": " + b.isa() + " slots");
            for (int j = 0; j < c.n_past; j += c.chunk) {
                const int r = std::min(c.chunk, c.n_past - j);
                Act ka = b.new_act(r, kv_dim), va = b.new_act(r, kv_dim);
                b.from_host(ka, &kc[j * kv_dim]);
                b.from_host(va, &vc[j * kv_dim]);
                b.kv_store(*kv, layer, j, ka, va);
                b.free_act(ka);
                b.free_act(va);
            }
            Act ka = b.new_act(c.M, kv_dim), va = b.new_act(c.M, kv_dim), qa = b.new_act(c.M, H * hd), o = b.new_act(c.M, H * hd);
            b.from_host(ka, &kc[c.n_past * kv_dim]);
            b.from_host(va, &vc[c.n_past * kv_dim]);
            b.kv_store(*kv, layer, c.n_past, ka, va);
            b.from_host(qa, q.data());
            b.attention(qa, *kv, layer, c.n_past, H, Hkv, hd, scale, o);
            std::vector<float> y = read(b, o);
            for (Act * a : {&ka, &va, &qa, &o}) b.free_act(*a);
            return y;
        }, want, tol);
    }
    // the ring's memory is bounded by the window, not the context
    auto full = ref.new_kv_cache(2, 4096, 64, 64, KvType::F16, 0, 128);
    auto ring = ref.new_kv_cache(2, 4096, 64, 64, KvType::F16, 256, 128);
    check(ring->ring() && ring->bytes() * 4 < full->bytes(), "a window of 256 in a 4096 context: ring < 1/4 of the full cache");
    std::printf("KV bytes n_ctx=4096 f16: full %zu, window 256 ring %zu\n", full->bytes(), ring->bytes());
}

} // namespace

int main() {
    auto ref = make_cpu_backend("scalar", 1);
    std::vector<Bk> bks;
    std::istringstream is(cpu_isas());
    for (std::string isa; is >> isa;)
        for (int th : {1, 2}) {
            if (isa == "scalar" && th == 1) continue;
            bks.push_back({isa + "/t" + std::to_string(th), make_cpu_backend(isa, th)});
        }
    test_layernorm(bks, *ref);
    test_activations(bks, *ref);
    test_positions_and_cols(bks, *ref);
    test_routing(bks, *ref);
    test_gather_scatter(bks, *ref);
    test_window_attention(bks, *ref);
    std::printf("%d passed, %d failed\n", g_pass, g_fail);
    return g_fail == 0 ? 0 : 1;
}
