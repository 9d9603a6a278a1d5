// addon-ops.cpp — backend ops on caller-provided f32 arrays, run on a worker
// thread (AsyncWorker) through the Backend interface (backend.h), so the
// quantizer uses the engine's kernels (CUDA when usable, else CPU; g_backend below).
//
//   ops.matmul(x, rows, w, out, in, precision?) → Promise<Float32Array [rows, out]>   y = x · wᵀ
//       precision 'f32' (default) or 'bf16': inputs rounded to bf16, f32 sums
//       (Linear::bf16_products; CUDA ignores it and multiplies in f32)
//   ops.attention(q, k, v, rows, seqlen, heads, kvHeads, headDim, invFreq)
//                                            → Promise<Float32Array [rows, heads*headDim]>
//       rows = blocks × seqlen; each block of seqlen rows is one causal
//       sequence at positions 0..seqlen-1 (RoPE rotate_half, then attention).
//   ops.init(backend)                        → {backend, isa, threads, bf16Native}   "auto" | "cpu" | "cuda"
//   ops.info()                               → {backend, isa, threads, bf16Native}
//   ops.fakeQuant(w, rows, cols, group, bits, colScale|null) → Promise<Float32Array [rows, cols]>
//       Q(w·diag(s))·diag(s)⁻¹ (fake-quant.h), on the host's cores
//   ops.clipDeltas(w, rows, cols, group, g, bits, steps, nGrid) → Promise<Float32Array [rows, steps, group]>
//   ops.siluMul(gate, up)                    → Promise; gate ← silu(gate)·up in place
//   ops.hessian(x, rows, K, H, scale, precision?) → Promise; H [K, K] f64 += scale · XᵀX (backend GEMM;
//       'bf16': each panel product as ops.matmul 'bf16', the sums across row blocks in f64)
//   ops.gptq(w, N, K, H, options)            → Promise<{q, scales, zeros, gIdx, loss, …}> (gptq.h)
//
// The input arrays are referenced (not copied) until the promise settles.
#include "addon-ops.h"

#include "backend.h"
#include "error.h"
#include "fake-quant.h"
#include "gptq.h"
#include "host-threads.h"

#include <cmath>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

namespace shoal_addon {

namespace {

// One backend for all ops; ops are serialized (the backend's pool is not reentrant).
// ops.init(kind) picks it (default "auto": CUDA when usable, else CPU). Weights
// are passed to load_linear as transient: they are JavaScript arrays whose
// addresses get reused, so the CUDA backend must neither cache its device
// copies by address nor release the host pages.
std::mutex g_mu;
std::unique_ptr<shoal::Backend> g_backend;
std::string g_kind = "auto";

shoal::Backend & backend_locked() {
    if (!g_backend) g_backend = shoal::make_backend(g_kind, "auto", 0);
    return *g_backend;
}

// Rows per backend call: bounds the activation copies the backend holds.
constexpr int64_t kChunkRows = 8192;

// A typed-array argument, referenced (not copied) until the worker settles.
template <class T, napi_typedarray_type kType> struct TypedArg {
    static constexpr napi_typedarray_type kind = kType;
    const T * data = nullptr;
    size_t n = 0;
    Napi::Reference<Napi::Value> ref;
};
using F32Arg = TypedArg<float, napi_float32_array>;
using F64Arg = TypedArg<double, napi_float64_array>;

template <class Arg> Arg typed_arg(Napi::Env env, const Napi::Value & v, const char * what, const char * type_name) {
    using T = std::remove_const_t<std::remove_pointer_t<decltype(Arg::data)>>;
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != Arg::kind)
        throw_type(env, std::string(what) + " must be a " + type_name);
    Napi::TypedArrayOf<T> a = v.As<Napi::TypedArrayOf<T>>();
    Arg r;
    r.data = a.Data();
    r.n = a.ElementLength();
    r.ref = Napi::Persistent(v);
    return r;
}

F32Arg f32_arg(Napi::Env env, const Napi::Value & v, const char * what) { return typed_arg<F32Arg>(env, v, what, "Float32Array"); }
F64Arg f64_arg(Napi::Env env, const Napi::Value & v, const char * what) { return typed_arg<F64Arg>(env, v, what, "Float64Array"); }

int64_t int_arg(Napi::Env env, const Napi::CallbackInfo & info, size_t i, const char * what, int64_t min) {
    if (info.Length() <= i || !info[i].IsNumber()) throw_type(env, std::string(what) + " must be a number");
    const double d = info[i].As<Napi::Number>().DoubleValue();
    if (!(d >= (double)min) || d != std::floor(d) || d > 9.0e15)
        throw_type(env, std::string(what) + " must be an integer >= " + std::to_string(min));
    return (int64_t)d;
}

// Base: promise, status capture, result array allocated on the JS thread.
class OpWorker : public Napi::AsyncWorker {
public:
    OpWorker(Napi::Env env, size_t out_n)
        : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)),
          out_(Napi::Persistent(Napi::Float32Array::New(env, out_n))) {
        out_data_ = out_.Value().Data();
    }
    Napi::Promise promise() { return deferred_.Promise(); }

    void Execute() override {
        guarded([&] {
            std::lock_guard<std::mutex> lk(g_mu);
            run(backend_locked());
        });
    }
    // Runs fn, turning exceptions into the promise's rejection.
    template <class F> void guarded(F && fn) {
        try {
            fn();
        } catch (const shoal::Error & e) {
            status_ = e.status;
            message_ = e.what();
        } catch (const std::bad_alloc &) {
            status_ = SHOAL_ERR_OOM;
            message_ = "out of memory in a backend op";
        } catch (const std::exception & e) {
            status_ = SHOAL_ERR_INTERNAL;
            message_ = e.what();
        }
    }
    void OnOK() override {
        Napi::Env env = Env();
        if (status_ != SHOAL_OK) return deferred_.Reject(make_error(env, status_, message_).Value());
        deferred_.Resolve(out_.Value());
    }
    void OnError(const Napi::Error & e) override { deferred_.Reject(e.Value()); }

protected:
    virtual void run(shoal::Backend & be) = 0;
    float * out_data_ = nullptr;

private:
    Napi::Promise::Deferred deferred_;
    Napi::Reference<Napi::Float32Array> out_;
    shoal_status status_ = SHOAL_OK;
    std::string message_;
};

// RAII for backend activations.
struct ActGuard {
    shoal::Backend & be;
    shoal::Act a;
    ActGuard(shoal::Backend & b, int64_t rows, int64_t cols) : be(b), a(b.new_act(rows, cols)) {}
    ~ActGuard() { be.free_act(a); }
};

// A backend linear over the caller's f32 weights w [out, in] (not copied, not cached).
std::unique_ptr<shoal::Linear> transient_linear(shoal::Backend & be, const float * w, int64_t out, int64_t in) {
    shoal::LinearSource src;
    src.name = "ops.matmul";
    src.in = in;
    src.out = out;
    src.weight.name = "ops.matmul.weight";
    src.weight.dtype = shoal::DType::F32;
    src.weight.n_dims = 2;
    src.weight.shape[0] = out;
    src.weight.shape[1] = in;
    src.weight.data = w;
    src.weight.nbytes = (size_t)(out * in) * sizeof(float);
    src.transient = true;
    return be.load_linear(src);
}

// y [rows, out] = x [rows, in] · wᵀ through the backend, rows in chunks of kChunkRows.
void host_matmul(shoal::Backend & be, const float * x, int64_t rows, const float * w, int64_t out, int64_t in, float * y,
                 bool bf16 = false) {
    std::unique_ptr<shoal::Linear> lin = transient_linear(be, w, out, in);
    lin->bf16_products = bf16;
    if (be.host_acts()) {
        // host memory: the caller's arrays are the activations (no copies, no chunks)
        shoal::Act xa{const_cast<float *>(x), rows, in}, ya{y, rows, out};
        be.matmul(*lin, xa, ya);
        return;
    }
    const int64_t chunk = std::min<int64_t>(rows, kChunkRows);
    ActGuard xa(be, chunk, in), ya(be, chunk, out);
    for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
        const int64_t n = std::min(chunk, rows - r0);
        if (n != chunk) {
            // last partial chunk: backend ops work on x.rows rows
            ActGuard xl(be, n, in), yl(be, n, out);
            be.from_host(xl.a, x + r0 * in);
            be.matmul(*lin, xl.a, yl.a);
            be.to_host(yl.a, 0, n, y + r0 * out);
        } else {
            be.from_host(xa.a, x + r0 * in);
            be.matmul(*lin, xa.a, ya.a);
            be.to_host(ya.a, 0, n, y + r0 * out);
        }
    }
}

class MatmulWorker : public OpWorker {
public:
    MatmulWorker(Napi::Env env, F32Arg x, int64_t rows, F32Arg w, int64_t out, int64_t in, bool bf16)
        : OpWorker(env, (size_t)(rows * out)), x_(std::move(x)), w_(std::move(w)), rows_(rows), out_n_(out), in_(in),
          bf16_(bf16) {}

protected:
    void run(shoal::Backend & be) override { host_matmul(be, x_.data, rows_, w_.data, out_n_, in_, out_data_, bf16_); }

private:
    F32Arg x_, w_;
    int64_t rows_, out_n_, in_;
    bool bf16_;
};

// Rows [0, n) split over the host's cores; fn(n0, n1, &err) → ok. Host-side
// element-wise work: it does not touch the backend (no lock needed).
void host_parallel_rows(int64_t n, const std::function<bool(int64_t, int64_t, std::string *)> & fn) {
    const int64_t nt = host_threads(n);
    std::vector<std::string> errs((size_t)nt);
    std::vector<char> ok((size_t)nt, 1);
    std::vector<std::thread> th;
    const int64_t step = (n + nt - 1) / nt;
    for (int64_t t = 1; t < nt; t++)
        th.emplace_back([&, t] { ok[t] = fn(t * step, std::min(n, (t + 1) * step), &errs[t]); });
    ok[0] = fn(0, std::min(n, step), &errs[0]);
    for (auto & x : th) x.join();
    for (int64_t t = 0; t < nt; t++)
        if (!ok[t]) shoal::fail(SHOAL_ERR_INVALID_ARG, errs[t]);
}

// H [K, K] += scale · XᵀX for x [rows, K] (GPTQ's Hessian 2·XᵀX/T, AWQ's input
// Gram): blocks of rows are transposed here and multiplied through the backend
// (XᵀX = Xᵀ·(Xᵀ)ᵀ), each block's f32 product accumulated in double. XᵀX is
// symmetric, so only its upper triangle is formed, a panel of kPanel rows of Xᵀ
// at a time against the rows of Xᵀ from the panel's first row on (about
// 1/2 + kPanel/2K of the full product), and mirrored into the lower triangle at
// the end. H must be symmetric on entry (zeros, or what this op accumulated).
class HessianWorker : public OpWorker {
public:
    HessianWorker(Napi::Env env, F32Arg x, int64_t rows, int64_t k, Napi::Float64Array h, double scale, bool bf16)
        : OpWorker(env, 0), x_(std::move(x)), rows_(rows), k_(k), h_(h.Data()), href_(Napi::Persistent(h)), scale_(scale), bf16_(bf16) {}

protected:
    void run(shoal::Backend & be) override {
        constexpr int64_t kBlock = 2048;
        constexpr int64_t kPanel = 512;
        const int64_t K = k_;
        std::vector<float> xt((size_t)(K * std::min(rows_, kBlock))), y((size_t)(std::min(K, kPanel) * K));
        // Host-memory backends (CPU) multiply xt and y in place. Others get
        // activations per panel shape, kept for the whole call (a fresh [512, K]
        // pair per panel and block cost an allocation and a memset of tens of MiB
        // each time); key: rows of the block (n) and panel index.
        struct PanelActs { int64_t n = -1; std::unique_ptr<ActGuard> x, y; };
        std::vector<PanelActs> acts((size_t)((K + kPanel - 1) / kPanel));
        for (int64_t r0 = 0; r0 < rows_; r0 += kBlock) {
            const int64_t n = std::min(kBlock, rows_ - r0);
            // xt [K, n] = the block transposed, in 16 × 16 tiles through a local buffer
            // (16 whole 64-byte lines read, 16 written: xt's rows are n floats apart,
            // often a multiple of 4 KiB, and a wider tile's stores thrashed one L1
            // set), columns of xt split over the cores
            host_parallel_rows(K / 16 + (K % 16 != 0), [&](int64_t c0, int64_t c1, std::string *) {
                float tile[16][16];
                for (int64_t rb = 0; rb < n; rb += 16) {
                    const int64_t nr = std::min<int64_t>(16, n - rb);
                    for (int64_t k0 = c0 * 16; k0 < std::min(K, c1 * 16); k0 += 16) {
                        const int64_t nk = std::min<int64_t>(16, K - k0);
                        for (int64_t r = 0; r < nr; r++) {
                            const float * xr = x_.data + (r0 + rb + r) * K + k0;
                            for (int64_t k = 0; k < nk; k++) tile[k][r] = xr[k];
                        }
                        for (int64_t k = 0; k < nk; k++) {
                            float * d = xt.data() + (k0 + k) * n + rb;
                            for (int64_t r = 0; r < nr; r++) d[r] = tile[k][r];
                        }
                    }
                }
                return true;
            });
            for (int64_t i0 = 0; i0 < K; i0 += kPanel) {
                const int64_t p = std::min(kPanel, K - i0);
                const int64_t m = K - i0;
                // y [p, m]: rows i0..i0+p of XᵀX, columns i0..K
                std::unique_ptr<shoal::Linear> lin = transient_linear(be, xt.data() + i0 * n, m, n);
                lin->bf16_products = bf16_; // each panel product in bf16 (the f64 sums across blocks stay)
                if (be.host_acts()) {
                    shoal::Act xa{xt.data() + i0 * n, p, n}, ya{y.data(), p, m};
                    be.matmul(*lin, xa, ya);
                } else {
                    PanelActs & pa = acts[(size_t)(i0 / kPanel)];
                    if (pa.n != n) {
                        pa.x.reset();
                        pa.y.reset();
                        pa.x = std::make_unique<ActGuard>(be, p, n);
                        pa.y = std::make_unique<ActGuard>(be, p, m);
                        pa.n = n;
                    }
                    be.from_host(pa.x->a, xt.data() + i0 * n);
                    be.matmul(*lin, pa.x->a, pa.y->a);
                    be.to_host(pa.y->a, 0, p, y.data());
                }
                host_parallel_rows(p, [&](int64_t a0, int64_t a1, std::string *) {
                    for (int64_t a = a0; a < a1; a++) {
                        double * hr = h_ + (i0 + a) * K + i0;
                        const float * yr = y.data() + a * m;
                        for (int64_t b = a; b < m; b++) hr[b] += scale_ * (double)yr[b];
                    }
                    return true;
                });
            }
        }
        // lower triangle ← upper, in tiles (cache-friendly transpose), row tiles over the cores
        constexpr int64_t kTile = 64;
        host_parallel_rows((K + kTile - 1) / kTile, [&](int64_t t0, int64_t t1, std::string *) {
            for (int64_t i0 = t0 * kTile; i0 < std::min(K, t1 * kTile); i0 += kTile) {
                for (int64_t j0 = 0; j0 <= i0; j0 += kTile) {
                    for (int64_t i = i0; i < std::min(i0 + kTile, K); i++) {
                        for (int64_t j = j0; j < std::min(j0 + kTile, i); j++) h_[i * K + j] = h_[j * K + i];
                    }
                }
            }
            return true;
        });
    }

private:
    F32Arg x_;
    int64_t rows_, k_;
    double * h_;
    Napi::Reference<Napi::Float64Array> href_;
    double scale_;
    bool bf16_;
};

// GPTQ of one linear (gptq.h) on the host's cores; resolves with
// { q: Uint8Array [K, N], scales: Uint16Array (f16 bits) [groups, N], zeros: Uint8Array [groups, N],
//   gIdx: Int32Array [K], loss, dead, errGptq, errRtn, norm }.
class GptqWorker : public Napi::AsyncWorker {
public:
    GptqWorker(Napi::Env env, const GptqParams & p, F32Arg w, Napi::Float64Array h)
        : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), p_(p), w_(std::move(w)), h_(h.Data()),
          href_(Napi::Persistent(h)) {}
    Napi::Promise promise() { return deferred_.Promise(); }
    void Execute() override {
        try {
            ok_ = gptq_quantize(p_, h_, w_.data, &out_, &msg_);
        } catch (const std::bad_alloc &) {
            ok_ = false;
            oom_ = true;
            msg_ = "out of memory in the GPTQ solver";
        }
    }
    void OnOK() override {
        Napi::Env env = Env();
        if (!ok_) return deferred_.Reject(make_error(env, oom_ ? SHOAL_ERR_OOM : SHOAL_ERR_INVALID_ARG, msg_).Value());
        Napi::Object o = Napi::Object::New(env);
        auto q = Napi::Uint8Array::New(env, out_.q.size());
        std::copy(out_.q.begin(), out_.q.end(), q.Data());
        auto sc = Napi::Uint16Array::New(env, out_.scales.size());
        std::copy(out_.scales.begin(), out_.scales.end(), sc.Data());
        auto z = Napi::Uint8Array::New(env, out_.zeros.size());
        std::copy(out_.zeros.begin(), out_.zeros.end(), z.Data());
        auto gi = Napi::Int32Array::New(env, out_.g_idx.size());
        std::copy(out_.g_idx.begin(), out_.g_idx.end(), gi.Data());
        o.Set("q", q);
        o.Set("scales", sc);
        o.Set("zeros", z);
        o.Set("gIdx", gi);
        o.Set("loss", out_.loss);
        o.Set("dead", (double)out_.dead);
        if (p_.errors) {
            o.Set("errGptq", out_.err_gptq);
            o.Set("errRtn", out_.err_rtn);
            o.Set("norm", out_.norm);
        }
        deferred_.Resolve(o);
    }
    void OnError(const Napi::Error & e) override { deferred_.Reject(e.Value()); }

private:
    Napi::Promise::Deferred deferred_;
    GptqParams p_;
    F32Arg w_;
    double * h_;
    Napi::Reference<Napi::Float64Array> href_;
    GptqOutput out_;
    std::string msg_;
    bool ok_ = false, oom_ = false;
};

class AttentionWorker : public OpWorker {
public:
    AttentionWorker(Napi::Env env, F32Arg q, F32Arg k, F32Arg v, F32Arg inv_freq, int64_t rows, int seqlen, int heads,
                    int kv_heads, int head_dim)
        : OpWorker(env, (size_t)rows * heads * head_dim), q_(std::move(q)), k_(std::move(k)), v_(std::move(v)),
          inv_(std::move(inv_freq)), rows_(rows), seqlen_(seqlen), heads_(heads), kv_heads_(kv_heads), hd_(head_dim) {}

protected:
    void run(shoal::Backend & be) override {
        const int64_t qd = (int64_t)heads_ * hd_, kd = (int64_t)kv_heads_ * hd_;
        // f32 where the backend has it (the quantizer wants exact attention); CUDA holds f16 only
        const shoal::KvType kt = std::string(be.name()) == "cuda" ? shoal::KvType::F16 : shoal::KvType::F32;
        std::unique_ptr<shoal::KvCache> kv = be.new_kv_cache(1, seqlen_, (int)kd, hd_, kt);
        ActGuard qa(be, seqlen_, qd), ka(be, seqlen_, kd), va(be, seqlen_, kd), oa(be, seqlen_, qd);
        shoal::RopeParams rp;
        rp.head_dim = hd_;
        rp.n_rot = hd_;
        rp.inv_freq = inv_.data;
        const float scale = 1.0f / std::sqrt((float)hd_);
        for (int64_t r0 = 0; r0 < rows_; r0 += seqlen_) {
            be.from_host(qa.a, q_.data + r0 * qd);
            be.from_host(ka.a, k_.data + r0 * kd);
            be.from_host(va.a, v_.data + r0 * kd);
            be.rope(qa.a, ka.a, heads_, kv_heads_, 0, rp);
            be.kv_store(*kv, 0, 0, ka.a, va.a);
            be.attention(qa.a, *kv, 0, 0, heads_, kv_heads_, hd_, scale, oa.a);
            be.to_host(oa.a, 0, seqlen_, out_data_ + r0 * qd);
        }
    }

private:
    F32Arg q_, k_, v_, inv_;
    int64_t rows_;
    int seqlen_, heads_, kv_heads_, hd_;
};

class FakeQuantWorker : public OpWorker {
public:
    FakeQuantWorker(Napi::Env env, F32Arg w, F64Arg s, bool has_s, int64_t rows, int64_t cols, int group, int bits)
        : OpWorker(env, (size_t)(rows * cols)), w_(std::move(w)), s_(std::move(s)), has_s_(has_s), rows_(rows), cols_(cols),
          group_(group), bits_(bits) {}
    void Execute() override { guarded([&] { host_parallel_rows(rows_, [&](int64_t n0, int64_t n1, std::string * err) {
        return fake_quant_rows(w_.data, has_s_ ? s_.data : nullptr, cols_, group_, bits_, n0, n1, out_data_, err);
    }); }); }

protected:
    void run(shoal::Backend &) override {}

private:
    F32Arg w_;
    F64Arg s_;
    bool has_s_;
    int64_t rows_, cols_;
    int group_, bits_;
};

class ClipDeltasWorker : public OpWorker {
public:
    ClipDeltasWorker(Napi::Env env, F32Arg w, int64_t rows, int64_t cols, int group, int g, int bits, int steps, int n_grid)
        : OpWorker(env, (size_t)rows * steps * group), w_(std::move(w)), rows_(rows), cols_(cols), group_(group), g_(g),
          bits_(bits), steps_(steps), n_grid_(n_grid) {}
    void Execute() override { guarded([&] { host_parallel_rows(rows_, [&](int64_t n0, int64_t n1, std::string * err) {
        return clip_deltas_rows(w_.data, cols_, group_, g_, bits_, steps_, n_grid_, n0, n1, out_data_, err);
    }); }); }

protected:
    void run(shoal::Backend &) override {}

private:
    F32Arg w_;
    int64_t rows_, cols_;
    int group_, g_, bits_, steps_, n_grid_;
};

// gate ← silu(gate)·up in place (the quantizer's MLP), on the host's cores.
class SiluMulWorker : public OpWorker {
public:
    SiluMulWorker(Napi::Env env, F32Arg g, F32Arg u) : OpWorker(env, 0), g_(std::move(g)), u_(std::move(u)) {}
    void Execute() override { guarded([&] { host_parallel_rows((int64_t)g_.n, [&](int64_t i0, int64_t i1, std::string *) {
        float * g = const_cast<float *>(g_.data);
        for (int64_t i = i0; i < i1; i++) {
            const double x = g[i];
            g[i] = (float)((x / (1.0 + std::exp(-x))) * (double)u_.data[i]);
        }
        return true;
    }); }); }

protected:
    void run(shoal::Backend &) override {}

private:
    F32Arg g_, u_;
};

// Queues a worker; its promise settles with the result.
Napi::Value queue(OpWorker * wk) {
    Napi::Promise p = wk->promise();
    wk->Queue();
    return p;
}

// The leading (w, rows, cols, group) arguments of the quantize-dequantize ops.
struct GroupedWeight {
    F32Arg w;
    int64_t rows, cols, group;
};

GroupedWeight grouped_weight(Napi::Env env, const Napi::CallbackInfo & info, const char * op) {
    GroupedWeight a{f32_arg(env, info[0], "w"), int_arg(env, info, 1, "rows", 1), int_arg(env, info, 2, "cols", 1),
                    int_arg(env, info, 3, "group", 1)};
    if (a.group > 1024 || a.cols % a.group != 0 || (int64_t)a.w.n != a.rows * a.cols)
        throw make_error(env, SHOAL_ERR_INVALID_ARG,
                         std::string(op) + ": w must be [rows, cols] and group (<= 1024) must divide cols");
    return a;
}

// ops.siluMul(gate, up) → Promise<void>; gate holds silu(gate)·up afterwards.
Napi::Value SiluMul(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    F32Arg g = f32_arg(env, info[0], "gate");
    F32Arg u = f32_arg(env, info[1], "up");
    if (g.n != u.n) throw make_error(env, SHOAL_ERR_INVALID_ARG, "ops.siluMul: gate and up differ in length");
    return queue(new SiluMulWorker(env, std::move(g), std::move(u)));
}

// ops.fakeQuant(w, rows, cols, group, bits, colScale | null) → Promise<Float32Array [rows, cols]>
Napi::Value FakeQuant(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    GroupedWeight a = grouped_weight(env, info, "ops.fakeQuant");
    const int64_t bits = int_arg(env, info, 4, "bits", 2);
    const bool has_s = info.Length() > 5 && !info[5].IsNull() && !info[5].IsUndefined();
    F64Arg s = has_s ? f64_arg(env, info[5], "colScale") : F64Arg{};
    if (bits > 8 || (has_s && (int64_t)s.n != a.cols))
        throw make_error(env, SHOAL_ERR_INVALID_ARG, "ops.fakeQuant: bits must be 2..8 and colScale [cols]");
    return queue(new FakeQuantWorker(env, std::move(a.w), std::move(s), has_s, a.rows, a.cols, (int)a.group, (int)bits));
}

// ops.clipDeltas(w, rows, cols, group, g, bits, steps, nGrid) → Promise<Float32Array [rows, steps, group]>
Napi::Value ClipDeltas(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    GroupedWeight a = grouped_weight(env, info, "ops.clipDeltas");
    const int64_t g = int_arg(env, info, 4, "g", 0);
    const int64_t bits = int_arg(env, info, 5, "bits", 2);
    const int64_t steps = int_arg(env, info, 6, "steps", 1);
    const int64_t n_grid = int_arg(env, info, 7, "nGrid", 1);
    if (bits > 8 || g >= a.cols / a.group || steps > n_grid)
        throw make_error(env, SHOAL_ERR_INVALID_ARG, "ops.clipDeltas: g must be < cols/group, steps <= nGrid, bits 2..8");
    return queue(new ClipDeltasWorker(env, std::move(a.w), a.rows, a.cols, (int)a.group, (int)g, (int)bits, (int)steps,
                                      (int)n_grid));
}

Napi::Float64Array f64_array(Napi::Env env, const Napi::Value & v, const char * what, size_t n) {
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float64_array)
        throw_type(env, std::string(what) + " must be a Float64Array");
    auto a = v.As<Napi::Float64Array>();
    if (a.ElementLength() != n)
        throw make_error(env, SHOAL_ERR_INVALID_ARG, std::string(what) + " has " + std::to_string(a.ElementLength()) + " values, expected " + std::to_string(n));
    return a;
}

// Optional precision argument i: 'f32' (default) → false, 'bf16' → true, anything else throws.
static bool bf16_arg(Napi::Env env, const Napi::CallbackInfo & info, size_t i, const char * op) {
    if (info.Length() <= i || info[i].IsUndefined()) return false;
    const std::string prec = info[i].IsString() ? info[i].As<Napi::String>().Utf8Value() : std::string("(not a string)");
    if (prec != "f32" && prec != "bf16")
        throw make_error(env, SHOAL_ERR_INVALID_ARG, std::string(op) + ": precision must be 'f32' or 'bf16', got " + prec);
    return prec == "bf16";
}

// ops.hessian(x, rows, K, H, scale, precision?) → Promise; H [K, K] += scale · XᵀX
Napi::Value Hessian(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    F32Arg x = f32_arg(env, info[0], "x");
    const int64_t rows = int_arg(env, info, 1, "rows", 1);
    const int64_t k = int_arg(env, info, 2, "K", 1);
    if (k > 65536 || (int64_t)x.n != rows * k) throw make_error(env, SHOAL_ERR_INVALID_ARG, "ops.hessian: x must be [rows, K], K <= 65536");
    Napi::Float64Array h = f64_array(env, info[3], "H", (size_t)(k * k));
    if (info.Length() < 5 || !info[4].IsNumber()) throw_type(env, "scale must be a number");
    const bool bf16 = bf16_arg(env, info, 5, "ops.hessian");
    auto * wk = new HessianWorker(env, std::move(x), rows, k, h, info[4].As<Napi::Number>().DoubleValue(), bf16);
    return queue(wk);
}

// ops.gptq(w, N, K, H, {bits, group, damp, actOrder, staticGroups, sym, minZero, block, errors}) → Promise<result>
// H [K, K] (f64) is overwritten.
Napi::Value Gptq(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    F32Arg w = f32_arg(env, info[0], "w");
    GptqParams p;
    p.N = int_arg(env, info, 1, "N", 1);
    p.K = int_arg(env, info, 2, "K", 1);
    if (p.K > 65536 || (int64_t)w.n != p.N * p.K) throw make_error(env, SHOAL_ERR_INVALID_ARG, "ops.gptq: w must be [N, K], K <= 65536");
    Napi::Float64Array h = f64_array(env, info[3], "H", (size_t)(p.K * p.K));
    if (info.Length() < 5 || !info[4].IsObject()) throw_type(env, "options must be an object");
    Napi::Object o = info[4].As<Napi::Object>();
    auto num = [&](const char * key, double def) { return o.Has(key) && o.Get(key).IsNumber() ? o.Get(key).As<Napi::Number>().DoubleValue() : def; };
    auto flag = [&](const char * key) { return o.Has(key) && o.Get(key).ToBoolean().Value(); };
    p.bits = (int)num("bits", 4);
    p.group = (int64_t)num("group", 128);
    p.damp = num("damp", 0.01);
    p.block = (int64_t)num("block", 128);
    p.min_zero = (int)num("minZero", 0);
    p.act_order = flag("actOrder");
    p.static_groups = flag("staticGroups");
    p.sym = flag("sym");
    p.errors = flag("errors");
    if (p.bits < 2 || p.bits > 8 || p.group < 1 || p.K % p.group != 0 || !(p.damp >= 0) || p.block < 1 || p.min_zero < 0 || p.min_zero > 1)
        throw make_error(env, SHOAL_ERR_INVALID_ARG, "ops.gptq: bits 2..8, a group dividing K, damp >= 0, block >= 1, minZero 0 or 1");
    auto * wk = new GptqWorker(env, p, std::move(w), h);
    Napi::Promise pr = wk->promise();
    wk->Queue();
    return pr;
}

Napi::Value Matmul(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    F32Arg x = f32_arg(env, info[0], "x");
    const int64_t rows = int_arg(env, info, 1, "rows", 1);
    F32Arg w = f32_arg(env, info[2], "w");
    const int64_t out = int_arg(env, info, 3, "out", 1);
    const int64_t in = int_arg(env, info, 4, "in", 1);
    if ((int64_t)x.n != rows * in)
        throw make_error(env, SHOAL_ERR_INVALID_ARG, "ops.matmul: x has " + std::to_string(x.n) + " values, expected rows*in = " + std::to_string(rows * in));
    if ((int64_t)w.n != out * in)
        throw make_error(env, SHOAL_ERR_INVALID_ARG, "ops.matmul: w has " + std::to_string(w.n) + " values, expected out*in = " + std::to_string(out * in));
    const bool bf16 = bf16_arg(env, info, 5, "ops.matmul");
    auto * wk = new MatmulWorker(env, std::move(x), rows, std::move(w), out, in, bf16);
    Napi::Promise p = wk->promise();
    wk->Queue();
    return p;
}

Napi::Value Attention(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    F32Arg q = f32_arg(env, info[0], "q");
    F32Arg k = f32_arg(env, info[1], "k");
    F32Arg v = f32_arg(env, info[2], "v");
    const int64_t rows = int_arg(env, info, 3, "rows", 1);
    const int64_t seqlen = int_arg(env, info, 4, "seqlen", 1);
    const int64_t heads = int_arg(env, info, 5, "heads", 1);
    const int64_t kv_heads = int_arg(env, info, 6, "kvHeads", 1);
    const int64_t hd = int_arg(env, info, 7, "headDim", 2);
    F32Arg inv = f32_arg(env, info[8], "invFreq");
    if (rows % seqlen != 0 || heads % kv_heads != 0 || hd % 2 != 0 || hd > 2048 || (int64_t)inv.n != hd / 2 ||
        (int64_t)q.n != rows * heads * hd || (int64_t)k.n != rows * kv_heads * hd || (int64_t)v.n != rows * kv_heads * hd)
        throw make_error(env, SHOAL_ERR_INVALID_ARG,
                         "ops.attention: shapes do not match (rows must be a multiple of seqlen, heads of kvHeads, "
                         "q [rows, heads*headDim], k/v [rows, kvHeads*headDim], invFreq [headDim/2])");
    auto * wk = new AttentionWorker(env, std::move(q), std::move(k), std::move(v), std::move(inv), rows, (int)seqlen,
                                    (int)heads, (int)kv_heads, (int)hd);
    Napi::Promise p = wk->promise();
    wk->Queue();
    return p;
}

Napi::Object info_object(Napi::Env env, shoal::Backend & be) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("backend", be.name());
    o.Set("isa", be.isa());
    o.Set("threads", be.n_threads());
    o.Set("bf16Native", be.bf16_native());
    return o;
}

Napi::Value Info(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    std::lock_guard<std::mutex> lk(g_mu);
    try {
        return info_object(env, backend_locked());
    } catch (const shoal::Error & e) {
        throw make_error(env, e.status, e.what());
    }
}

// ops.init("auto" | "cpu" | "cuda") → info. Waits for running ops (the mutex).
Napi::Value Init(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsString()) throw_type(env, "backend must be a string: auto, cpu or cuda");
    const std::string kind = info[0].As<Napi::String>().Utf8Value();
    if (kind != "auto" && kind != "cpu" && kind != "cuda")
        throw make_error(env, SHOAL_ERR_BACKEND, "unknown backend '" + kind + "' (expected auto, cpu or cuda)");
    std::lock_guard<std::mutex> lk(g_mu);
    try {
        if (!g_backend || kind != g_kind) {
            g_backend.reset();
            g_kind = kind;
            g_backend = shoal::make_backend(kind, "auto", 0);
        }
        return info_object(env, *g_backend);
    } catch (const shoal::Error & e) {
        g_kind = "auto";
        throw make_error(env, e.status, e.what());
    }
}

} // namespace

Napi::Object OpsInit(Napi::Env env) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("matmul", Napi::Function::New(env, Matmul));
    o.Set("attention", Napi::Function::New(env, Attention));
    o.Set("info", Napi::Function::New(env, Info));
    o.Set("init", Napi::Function::New(env, Init));
    o.Set("fakeQuant", Napi::Function::New(env, FakeQuant));
    o.Set("clipDeltas", Napi::Function::New(env, ClipDeltas));
    o.Set("siluMul", Napi::Function::New(env, SiluMul));
    o.Set("hessian", Napi::Function::New(env, Hessian));
    o.Set("gptq", Napi::Function::New(env, Gptq));
    return o;
}

} // namespace shoal_addon
