// backend-cpu.cpp — the CPU implementation of Backend (backend.h): weights
// held as mmapped float views or repacked INT4, f32 activations, and ops that
// split their work across the thread pool and call the kernel table of the
// ISA chosen at run time.
#include "backend.h"
#include "cpu-features.h"
#include "error.h"
#include "kernels.h"
#include "model-source.h"
#include "lowbit-repack.h"
#include "exact-repack.h"
#include "q4-repack.h"
#include "route.h"
#include "threadpool.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace shoal {

// The only place that names ISAs: a table is returned only when its file was
// compiled for this architecture (CMake defines SHOAL_HAVE_*_KERNELS) and the
// CPU reports every feature its flags assume.
const Kernels * cpu_kernels(const std::string & isa) {
    const CpuFeatures & f = cpu_features();
    (void)f;
    if (isa == "scalar") return &kernels_ref();
#if defined(SHOAL_HAVE_X86_KERNELS)
    if (isa == "avx2" && f.avx2 && f.fma && f.f16c) return &kernels_avx2();
    if (isa == "avx512" && f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq && f.avx512vnni && f.avx2 && f.fma && f.f16c)
        return &kernels_avx512();
#endif
#if defined(SHOAL_HAVE_ARM_KERNELS)
    if (isa == "neon" && f.neon) return &kernels_neon();
    if (isa == "neon-dotprod" && f.neon && f.dotprod && f.fp16) return &kernels_neon_dotprod();
#endif
    return nullptr;
}

std::string cpu_isas() {
    std::string out;
    for (const char * name : {"scalar", "avx2", "avx512", "neon", "neon-dotprod"})
        if (cpu_kernels(name)) out += (out.empty() ? "" : " ") + std::string(name);
    return out;
}

namespace {

// Decode-sized batches (M < this) use the int8-activation matvec, which reads
// each weight once per token; larger ones a GEMM: int8 on INT4 panels
// (q4_gemm), f32 on dequantized panels for the other formats.
constexpr int64_t kGemmMinRows = 4;
// Output rows per prefill task: a multiple of every GEMM column block (NR =
// 2 registers: 32/16/8 floats); the f32 panel [32][K] stays in L2.
constexpr int64_t kPanelRows = 32;
constexpr int64_t kGemmRowBlock = 512;
// Weight rows per prefill task on float (and dequantized low-bit) weights: a few
// panels, so one slice of the block of x serves many columns (gemm_f32).
constexpr int64_t kFloatTaskRows = 8 * kPanelRows;
// Inputs per scale of the int8 lm_head (load_linear_int8).
// 128: 3% more bytes than one scale per row; on stories260K perplexity +0.01%
// at 32, +0.06% per row (K = 64 there, so 128 is per row).
constexpr int64_t kHeadGroup = 128; // > the engine's prefill chunk (128): one block there

bool is_float(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; }

const char * float_kind(DType t) { return t == DType::F16 ? "f16" : t == DType::BF16 ? "bf16" : "f32"; }

struct CpuLinear : Linear {
    bool q4 = false;
    Q4Buffer qw;                   // INT4 repacked (q4-repack.h / lowbit-repack.h)
    bool qx = false;
    QxBuffer qxw;                  // 2/3/8-bit repacked (lowbit-repack.h)
    bool f32_acts = false;         // qxw (8-bit) read with f32 activations in decode: the int8 lm_head
    bool exact = false;
    ExactBuffer ew;                // any bits, precision exact (exact-repack.h)
    std::vector<int32_t> perm;     // GPTQ desc_act: x'[j] = x[perm[j]], empty when none
    DType dt = DType::F32;         // float weights: dtype of w
    const void * w = nullptr;      // float weights [out][in], in the mapped checkpoint
    std::vector<float> bias;       // [out] or empty
    std::shared_ptr<const RepackCache> cache; // keeps the mapped file of qw's ext_* arrays alive
    size_t bytes() const override {
        const size_t wb = q4 ? qw.bytes() : qx ? qxw.bytes() : exact ? ew.bytes() : (size_t)(in * out) * dtype_size(dt);
        return wb + bias.size() * sizeof(float) + perm.size() * sizeof(int32_t);
    }
    const char * kind() const override {
        if (q4) return "q4";
        if (qx) return qxw.bits == 2 ? "q2" : qxw.bits == 3 ? "q3" : "q8";
        if (exact) return ew.bits == 2 ? "q2" : ew.bits == 3 ? "q3" : ew.bits == 4 ? "q4" : "q8";
        return float_kind(dt);
    }
};

struct CpuEmbedding : Embedding {
    DType dt = DType::F32;
    const void * data = nullptr;   // [vocab][dim], in the mapped checkpoint
    size_t bytes() const override { return (size_t)(vocab * dim) * dtype_size(dt); }
};

struct CpuVec : Vec {
    std::vector<float> w;          // [n]
};

// K and V of every (layer, KV head) in the kernels' layout (KvHead, kernels.h):
// per head a key block [ceil(n_ctx/32)][hd][32], values [n_ctx][hd] and, for
// q8, the per-position scales. Allocated zeroed with calloc, so pages of
// positions never written cost no resident memory.
struct CpuKv : KvCache {
    int n_kv_heads = 0;
    int64_t rows = 0;              // slot rows per head, a multiple of the key tile: n_ctx rounded up,
                                   // or, for a ring, 2·n_slots (each position also in its mirror slot
                                   // + n_slots, so any n_slots consecutive positions are consecutive rows)
    size_t esize = 4;              // bytes per element
    size_t head_bytes = 0;         // one (layer, head): K + V (+ scales)
    uint8_t * mem = nullptr;       // [n_layers][n_kv_heads][head_bytes]
    ~CpuKv() override { std::free(mem); }
    size_t bytes() const override { return (size_t)n_layers * n_kv_heads * head_bytes; }
    uint8_t * head(int layer, int h) const { return mem + ((size_t)layer * n_kv_heads + h) * head_bytes; }
    // Slot of position p: p, or p mod n_slots in a ring.
    int64_t slot_of(int64_t p) const { return ring() ? p % n_slots : p; }
    // The head's cache seen from slot `first` on: the view starts at first's key tile and
    // masks the first % 32 slots of it (KvHead::lo), so slot first is the view's position lo.
    KvHead view(int layer, int h, int64_t first = 0) const {
        uint8_t * p = head(layer, h);
        const size_t kvb = (size_t)rows * head_dim * esize;
        const int64_t t0 = first / kKvTile * kKvTile; // first slot of first's tile
        KvHead v;
        v.type = type;
        v.hd = head_dim;
        v.k = p + (size_t)t0 * head_dim * esize;
        v.v = p + kvb + (size_t)t0 * head_dim * esize;
        v.ks = type == KvType::Q8 ? reinterpret_cast<const float *>(p + 2 * kvb) + t0 : nullptr;
        v.vs = type == KvType::Q8 ? reinterpret_cast<const float *>(p + 2 * kvb) + rows + t0 : nullptr;
        v.lo = (int)(first - t0);
        return v;
    }
};

float * fp(const Act & a) { return static_cast<float *>(a.data); }

class CpuBackend : public Backend {
public:
    CpuBackend(const Kernels & k, int n_threads, Precision prec) : k_(k), pool_(n_threads), prec_(prec) {}

    const char * name() const override { return "cpu"; }
    const char * precision() const override { return precision_name(prec_); }
    const char * isa() const override { return k_.isa; }
    bool bf16_native() const override { return k_.gemm_bf16_native; }
    int n_threads() const override { return pool_.size(); }

    std::unique_ptr<Linear> load_linear(const LinearSource & src) override {
        auto l = std::make_unique<CpuLinear>();
        l->in = src.in;
        l->out = src.out;
        if (prec_ == Precision::Exact && (src.awq || src.qfmt != QFormat::None)) {
            // precision exact: f32 s and z, f32 activations (kernels.h ExactRows)
            l->exact = true;
            l->ew = exact_repack(src, pool_);
            l->perm = std::move(l->ew.perm);
            for (const TensorView * t : {&src.qweight, &src.qzeros, &src.scales}) release_pages(t->data, t->nbytes);
        } else if (src.awq) {
            l->q4 = true;
            l->qw = q4_repack(src, pool_);
            // The repacked copy replaces the checkpoint bytes: drop them from RSS.
            release_pages(src.qweight.data, src.qweight.nbytes);
            release_pages(src.qzeros.data, src.qzeros.nbytes);
            release_pages(src.scales.data, src.scales.nbytes);
        } else if (src.qfmt != QFormat::None) {
            LowbitWeights lw = lowbit_repack(src, pool_);
            if (lw.bits == 4) {
                l->q4 = true;
                l->qw = std::move(lw.q4);
            } else {
                l->qx = true;
                l->qxw = std::move(lw.qx);
            }
            l->perm = std::move(lw.perm);
            for (const TensorView * t : {&src.qweight, &src.qzeros, &src.scales}) release_pages(t->data, t->nbytes);
        } else {
            const TensorView & w = src.weight;
            SHOAL_CHECK(is_float(w.dtype), SHOAL_ERR_ST_DTYPE,
                        "linear '" + src.name + "': weight dtype " + dtype_name(w.dtype) + " is not F32/F16/BF16");
            SHOAL_CHECK(w.numel() == src.in * src.out, SHOAL_ERR_SHAPE,
                        "linear '" + src.name + "': weight has " + std::to_string(w.numel()) + " elements, expected " +
                        std::to_string(src.out) + " x " + std::to_string(src.in));
            l->dt = w.dtype;
            l->w = w.data; // no copy: f16/bf16 are converted in the kernels
        }
        load_bias(src, *l);
        return l;
    }

    void load_bias(const LinearSource & src, CpuLinear & l) {
        if (!src.has_bias) return;
        SHOAL_CHECK(is_float(src.bias.dtype) && src.bias.numel() == src.out, SHOAL_ERR_SHAPE,
                    "linear '" + src.name + "': bias must be a float vector of " + std::to_string(src.out));
        l.bias.resize(src.out);
        k_.to_f32(src.bias.dtype, src.bias.data, src.out, l.bias.data());
    }

    // INT4 linears (AWQ and the 4-bit low-bit formats) are served from the repack cache:
    // an entry is [meta: i64 n, i64 k, i64 group][qs][scale][szero][perm].
    bool cacheable(const LinearSource & src) const override {
        // precision exact keeps its own f32-scale layout in memory (verification only)
        return prec_ == Precision::Fast && (src.awq || (src.qfmt != QFormat::None && src.bits == 4));
    }

    void write_cached(const LinearSource & src, RepackCacheWriter & w) override {
        Q4Buffer q;
        std::vector<int32_t> perm;
        if (src.awq) {
            q = q4_repack(src, pool_);
        } else {
            LowbitWeights lw = lowbit_repack(src, pool_);
            SHOAL_CHECK(lw.bits == 4, SHOAL_ERR_INTERNAL, "linear '" + src.name + "': not INT4, cannot be cached");
            q = std::move(lw.q4);
            perm = std::move(lw.perm);
        }
        const int64_t meta[3] = {q.n, q.k, q.group};
        auto blob = [](const void * p, size_t n) { return CacheBlob{static_cast<const uint8_t *>(p), n}; };
        w.add(src.name, {blob(meta, sizeof meta), blob(q.qs.data(), q.qs.size()),
                         blob(q.scale.data(), 2 * q.scale.size()), blob(q.szero.data(), 2 * q.szero.size()),
                         blob(perm.data(), 4 * perm.size())});
        for (const TensorView * t : {&src.qweight, &src.qzeros, &src.scales}) release_pages(t->data, t->nbytes);
    }

    std::unique_ptr<Linear> load_cached(const LinearSource & src, const RepackCache::Entry & e,
                                        std::shared_ptr<const RepackCache> keep) override {
        if (e.blobs.size() != 5 || e.blobs[0].size != 3 * sizeof(int64_t)) return nullptr;
        int64_t meta[3];
        std::memcpy(meta, e.blobs[0].data, sizeof meta);
        const int64_t N = meta[0], K = meta[1], G = meta[2];
        if (N != src.out || K != src.in || G <= 0 || G % 32 != 0 || K % G != 0) return nullptr;
        const uint64_t ng = (uint64_t)N * (uint64_t)(K / G);
        if (e.blobs[1].size != (uint64_t)N * (uint64_t)K / 2 || e.blobs[2].size != 2 * ng || e.blobs[3].size != 2 * ng ||
            (e.blobs[4].size != 0 && e.blobs[4].size != 4 * (uint64_t)K))
            return nullptr;
        auto l = std::make_unique<CpuLinear>();
        l->in = K;
        l->out = N;
        l->q4 = true;
        l->qw.n = N;
        l->qw.k = K;
        l->qw.group = (int)G;
        l->qw.ext_qs = e.blobs[1].data;
        l->qw.ext_scale = reinterpret_cast<const uint16_t *>(e.blobs[2].data); // 64-byte aligned in the file
        l->qw.ext_szero = reinterpret_cast<const uint16_t *>(e.blobs[3].data);
        if (e.blobs[4].size) {
            l->perm.resize((size_t)K);
            std::memcpy(l->perm.data(), e.blobs[4].data, e.blobs[4].size);
            for (int32_t v : l->perm)
                if (v < 0 || v >= K) return nullptr;
        }
        l->cache = std::move(keep);
        load_bias(src, *l);
        // the checkpoint's INT4 tensors are not read again
        for (const TensorView * t : {&src.qweight, &src.qzeros, &src.scales}) release_pages(t->data, t->nbytes);
        return l;
    }

    std::unique_ptr<Linear> load_linear_int8(const LinearSource & src) override {
        const TensorView & w = src.weight;
        const int64_t N = src.out, K = src.in;
        if (prec_ == Precision::Exact) return nullptr; // the output matrix as stored
        // the 8-bit QxRows layout: 32 | K, groups of kHeadGroup inputs (or the whole row)
        if (src.awq || src.qfmt != QFormat::None || src.has_bias || !is_float(w.dtype) || w.numel() != N * K || K % 32 != 0)
            return nullptr;
        const int64_t G = K % kHeadGroup == 0 ? kHeadGroup : K, ng = K / G;
        if (ng > 1024) return nullptr;
        auto l = std::make_unique<CpuLinear>();
        l->in = K;
        l->out = N;
        l->qx = true;
        l->f32_acts = true; // prefill dequantizes to f32 anyway; decode must not round x to int8 either
        QxBuffer & b = l->qxw;
        b.n = N;
        b.k = K;
        b.group = (int)G;
        b.bits = 8;
        b.qs.resize((size_t)(N * K));
        b.scale.resize(N * ng);
        b.szero.resize(N * ng);
        std::atomic<bool> fits{true};
        pool_.parallel_for((N + 63) / 64, [&](int64_t t, int) {
            std::vector<float> row(K);
            for (int64_t n = t * 64; n < std::min(N, t * 64 + 64); n++) {
                k_.to_f32(w.dtype, static_cast<const uint8_t *>(w.data) + (size_t)(n * K) * dtype_size(w.dtype), K, row.data());
                for (int64_t g = 0; g < ng; g++) {
                    float amax = 0.0f;
                    for (int64_t i = g * G; i < (g + 1) * G; i++) amax = std::max(amax, std::fabs(row[i]));
                    if (!(amax / 127.0f * 128.0f < 65504.0f)) { fits = false; continue; } // also NaN
                    // the scale is rounded to f16 first and q computed against it, so
                    // q·s reproduces w to int8 precision with no f16 scale error
                    const uint16_t sh = f32_to_f16(amax / 127.0f);
                    const float s = f16_to_f32(sh), id = s > 0.0f ? 1.0f / s : 0.0f;
                    int8_t * q = reinterpret_cast<int8_t *>(&b.qs[(size_t)(n * K)]);
                    for (int64_t i = g * G; i < (g + 1) * G; i++)
                        q[i] = (int8_t)std::max(-127.0f, std::min(127.0f, std::nearbyint(row[i] * id)));
                    // bits 8 stores q − 128 with zero term −s·z: z = 128 (exact in f16, a power-of-two multiple)
                    b.scale[n * ng + g] = sh;
                    b.szero[n * ng + g] = f32_to_f16(-128.0f * s);
                }
            }
        });
        if (!fits) return nullptr; // |w| past the f16 range of −128·s
        return l;
    }

    std::unique_ptr<Embedding> load_embedding(const TensorView & w) override {
        SHOAL_CHECK(is_float(w.dtype) && w.n_dims == 2, SHOAL_ERR_SHAPE,
                    "embedding '" + w.name + "' must be a 2-D F32/F16/BF16 tensor");
        auto e = std::make_unique<CpuEmbedding>();
        e->vocab = w.shape[0];
        e->dim = w.shape[1];
        e->dt = w.dtype;
        e->data = w.data;
        return e;
    }

    std::unique_ptr<Vec> load_vec(const TensorView & w) override {
        SHOAL_CHECK(is_float(w.dtype), SHOAL_ERR_ST_DTYPE, "vector '" + w.name + "' must be F32/F16/BF16");
        auto v = std::make_unique<CpuVec>();
        v->n = w.numel();
        v->w.resize(v->n);
        k_.to_f32(w.dtype, w.data, v->n, v->w.data());
        return v;
    }

    bool host_acts() const override { return true; }
    Act new_act(int64_t rows, int64_t cols) override {
        Act a;
        a.rows = rows;
        a.cols = cols;
        const size_t bytes = ((size_t)(rows * cols) * sizeof(float) + 63) / 64 * 64;
        a.data = std::aligned_alloc(64, bytes > 0 ? bytes : 64);
        SHOAL_CHECK(a.data, SHOAL_ERR_OOM, "activation [" + std::to_string(rows) + ", " + std::to_string(cols) + "]");
        std::memset(a.data, 0, bytes);
        return a;
    }
    void free_act(Act & a) override {
        std::free(a.data);
        a = Act{};
    }

    std::unique_ptr<KvCache> new_kv_cache(int n_layers, int n_ctx, int kv_dim, int head_dim, KvType type, int window,
                                          int max_rows) override {
        SHOAL_CHECK(n_layers > 0 && n_ctx > 0 && head_dim > 0 && kv_dim > 0 && kv_dim % head_dim == 0, SHOAL_ERR_INVALID_ARG,
                    "KV cache: kv_dim " + std::to_string(kv_dim) + " is not a multiple of head_dim " + std::to_string(head_dim));
        SHOAL_CHECK(window >= 0 && max_rows > 0, SHOAL_ERR_INVALID_ARG, "KV cache: window and max_rows");
        SHOAL_CHECK(type != KvType::Q8 || head_dim <= 4096, SHOAL_ERR_INVALID_ARG,
                    "KV cache q8: head_dim " + std::to_string(head_dim) + " is above 4096; use f16");
        auto kv = std::make_unique<CpuKv>();
        kv->n_layers = n_layers;
        kv->n_ctx = n_ctx;
        kv->kv_dim = kv_dim;
        kv->head_dim = head_dim;
        kv->type = type;
        kv->n_kv_heads = kv_dim / head_dim;
        kv->window = window;
        kv->n_slots = n_ctx;
        const int64_t ring_slots = ((int64_t)window + max_rows - 1 + kKvTile - 1) / kKvTile * kKvTile;
        if (window > 0 && ring_slots < n_ctx) kv->n_slots = (int)ring_slots;
        kv->rows = kv->ring() ? 2 * (int64_t)kv->n_slots : ((int64_t)n_ctx + kKvTile - 1) / kKvTile * kKvTile;
        kv->esize = type == KvType::F32 ? 4 : type == KvType::F16 ? 2 : 1;
        kv->head_bytes = (2 * (size_t)kv->rows * head_dim * kv->esize + (type == KvType::Q8 ? 2 * kv->rows * 4 : 0) + 63) / 64 * 64;
        kv->mem = static_cast<uint8_t *>(std::calloc(kv->bytes(), 1));
        SHOAL_CHECK(kv->mem, SHOAL_ERR_OOM, "KV cache of " + std::to_string(kv->bytes()) + " bytes");
        return kv;
    }

    void to_host(const Act & a, int64_t row0, int64_t n, float * dst) override {
        SHOAL_CHECK(row0 >= 0 && row0 + n <= a.rows, SHOAL_ERR_INVALID_ARG, "to_host: rows out of range");
        std::memcpy(dst, fp(a) + row0 * a.cols, (size_t)(n * a.cols) * sizeof(float));
    }
    void from_host(Act & a, const float * src) override {
        std::memcpy(a.data, src, (size_t)(a.rows * a.cols) * sizeof(float));
    }
    void copy_rows(const Act & src, int64_t row0, int64_t n, Act & dst) override {
        SHOAL_CHECK(row0 >= 0 && n >= 0 && row0 + n <= src.rows && n <= dst.rows && src.cols == dst.cols,
                    SHOAL_ERR_INVALID_ARG, "copy_rows: shapes");
        std::memmove(dst.data, fp(src) + row0 * src.cols, (size_t)(n * src.cols) * sizeof(float));
    }

    void embed(const Embedding & table, const int32_t * tokens, int64_t n, Act & out) override {
        const auto & e = static_cast<const CpuEmbedding &>(table);
        SHOAL_CHECK(out.cols == e.dim && out.rows >= n, SHOAL_ERR_INVALID_ARG, "embed: output shape");
        const size_t row_bytes = (size_t)e.dim * dtype_size(e.dt);
        for (int64_t m = 0; m < n; m++) {
            SHOAL_CHECK(tokens[m] >= 0 && tokens[m] < e.vocab, SHOAL_ERR_INVALID_ARG,
                        "token id " + std::to_string(tokens[m]) + " out of range [0, " + std::to_string(e.vocab) + ")");
            k_.to_f32(e.dt, static_cast<const uint8_t *>(e.data) + (size_t)tokens[m] * row_bytes, e.dim, fp(out) + m * e.dim);
        }
    }

    void rmsnorm(const Act & x, const Vec & w, float eps, Act & out) override {
        const auto & v = static_cast<const CpuVec &>(w);
        SHOAL_CHECK(v.n == x.cols && out.cols == x.cols, SHOAL_ERR_INVALID_ARG, "rmsnorm: shapes");
        rows_parallel(x.rows, x.cols, [&](int64_t m) {
            k_.rmsnorm(fp(x) + m * x.cols, v.w.data(), x.cols, eps, fp(out) + m * x.cols);
        });
    }

    void head_rmsnorm(Act & x, const Vec & w, int n_heads, float eps) override {
        const auto & v = static_cast<const CpuVec &>(w);
        SHOAL_CHECK(n_heads > 0 && v.n > 0 && x.cols == (int64_t)n_heads * v.n, SHOAL_ERR_INVALID_ARG, "head_rmsnorm: shapes");
        // [M, H·hd] is [M·H, hd]: one row per head, the rmsnorm kernel in place
        rows_parallel(x.rows * n_heads, v.n, [&](int64_t r) {
            float * p = fp(x) + r * v.n;
            k_.rmsnorm(p, v.w.data(), v.n, eps, p);
        });
    }

    void matmul(const Linear & wl, const Act & x, Act & y) override {
        const auto & w = static_cast<const CpuLinear &>(wl);
        const int64_t M = x.rows, K = w.in, N = w.out;
        weight_bytes_read += w.bytes();
        SHOAL_CHECK(x.cols == K && y.cols == N && y.rows >= M, SHOAL_ERR_INVALID_ARG,
                    "matmul: x [" + std::to_string(M) + ", " + std::to_string(x.cols) + "] · W[" + std::to_string(N) +
                    ", " + std::to_string(K) + "]ᵀ → y [" + std::to_string(y.rows) + ", " + std::to_string(y.cols) + "]");
        float * yp = fp(y);
        const float * xp = fp(x);
        if (!w.perm.empty()) {
            // desc_act: the weights' inputs are sorted by group; gather x to match
            xperm_.resize(M * K);
            for (int64_t m = 0; m < M; m++)
                for (int64_t j = 0; j < K; j++) xperm_[m * K + j] = xp[m * K + w.perm[j]];
            xp = xperm_.data();
        }
        // bf16 products on float weights: always the GEMM (gemm_bf16), whatever M
        const bool bf16 = w.bf16_products && !w.q4 && !w.qx && !w.exact;
        if (M < kGemmMinRows && !bf16) {
            // Decode: rows of W split into ~4 contiguous tasks per thread (row
            // counts a multiple of 4, the kernels' rows per pass).
            const int64_t n_tasks = std::max<int64_t>(1, std::min<int64_t>(N / 16, 4 * pool_.size()));
            const int64_t step = ((N + n_tasks - 1) / n_tasks + 3) / 4 * 4;
            if (w.exact) {
                const ExactRows e = w.ew.view();
                pool_.parallel_for((N + step - 1) / step, [&](int64_t t, int) {
                    const int64_t n0 = t * step, n1 = std::min(N, n0 + step);
                    for (int64_t m = 0; m < M; m++) k_.exact_matvec(e, xp + m * K, n0, n1, yp + m * N + n0);
                });
            } else if (w.q4 || w.qx) {
                const int group = w.q4 ? w.qw.group : w.qxw.group;
                const int64_t nb = K / 32, ng = K / group;
                quantize_input(xp, M, K, group);
                const Q4Rows q = w.qw.view();
                const QxRows qx = w.qxw.view();
                pool_.parallel_for((N + step - 1) / step, [&](int64_t t, int) {
                    const int64_t n0 = t * step, n1 = std::min(N, n0 + step);
                    for (int64_t m = 0; m < M; m++) {
                        const Q8Row r{&xq_[m * K], &xd_[m * nb], &xg_[m * ng]};
                        if (w.q4) k_.q4_matvec(q, r, n0, n1, yp + m * N + n0);
                        else if (w.f32_acts) k_.q8w_matvec(qx, xp + m * K, r.gsum, n0, n1, yp + m * N + n0);
                        else k_.qx_matvec(qx, r, n0, n1, yp + m * N + n0);
                    }
                });
            } else {
                pool_.parallel_for((N + step - 1) / step, [&](int64_t t, int) {
                    const int64_t n0 = t * step, n1 = std::min(N, n0 + step);
                    for (int64_t m = 0; m < M; m++) k_.fw_matvec(w.dt, w.w, K, xp + m * K, n0, n1, yp + m * N + n0);
                });
            }
        } else if (w.q4) {
            // Prefill on INT4: activations to int8 as in decode, then the ISA's
            // GEMM on panels of 32 weight rows (no f32 copy of the weights),
            // over blocks of kGemmRowBlock rows of x.
            quantize_input(xp, M, K, w.qw.group);
            const int64_t nb = K / 32, ng = K / w.qw.group;
            const Q4Rows q = w.qw.view();
            for (int64_t m0 = 0; m0 < M; m0 += kGemmRowBlock) {
                const int64_t mb = std::min(kGemmRowBlock, M - m0);
                const Q8Row x0{&xq_[m0 * K], &xd_[m0 * nb], &xg_[m0 * ng]};
                pool_.parallel_for((N + kPanelRows - 1) / kPanelRows, [&](int64_t t, int) {
                    const int64_t n0 = t * kPanelRows, n1 = std::min(N, n0 + kPanelRows);
                    k_.q4_gemm(q, x0, mb, n0, n1, yp + m0 * N + n0, N);
                });
            }
        } else {
            // Prefill: blocks of kGemmRowBlock rows of x (the quantizer multiplies
            // tens of thousands of rows at once); per block the output columns go in
            // tasks of up to kFloatTaskRows weight rows, converted (f16/bf16) or
            // dequantized to f32 in thread-local scratch [rows][K], then the
            // cache-blocked f32 GEMM (kernels-simd-gemm.h gemm_f32; gemm_bf16 on
            // float weights when the Linear asks), which reads the block of x
            // once per slice of K for all the task's columns. Tasks
            // shrink (in whole panels) until every thread has at least two.
            int64_t task_rows = kFloatTaskRows;
            while (task_rows > kPanelRows && (N + task_rows - 1) / task_rows < 2 * pool_.size()) task_rows -= kPanelRows;
            for (int64_t m0 = 0; m0 < M; m0 += kGemmRowBlock) {
            const int64_t mb = std::min(kGemmRowBlock, M - m0);
            pool_.parallel_for((N + task_rows - 1) / task_rows, [&](int64_t t, int) {
                const int64_t n0 = t * task_rows, n1 = std::min(N, n0 + task_rows);
                thread_local std::vector<float> panel; // [task_rows][K]
                const float * wp;
                if (w.qx) {
                    panel.resize((n1 - n0) * K);
                    k_.qx_dequant(w.qxw.view(), n0, n1, panel.data());
                    wp = panel.data();
                } else if (w.exact) {
                    panel.resize((n1 - n0) * K);
                    k_.exact_dequant(w.ew.view(), n0, n1, panel.data());
                    wp = panel.data();
                } else if (w.dt == DType::F32) {
                    wp = static_cast<const float *>(w.w) + n0 * K;
                } else {
                    panel.resize((n1 - n0) * K);
                    k_.to_f32(w.dt, static_cast<const uint8_t *>(w.w) + (size_t)(n0 * K) * 2, (n1 - n0) * K, panel.data());
                    wp = panel.data();
                }
                const auto gemm = bf16 ? k_.gemm_bf16 : k_.gemm_f32;
                gemm(xp + m0 * K, K, mb, wp, n1 - n0, K, yp + m0 * N + n0, N);
            });
            }
        }
        if (!w.bias.empty())
            for (int64_t m = 0; m < M; m++) k_.add(yp + m * N, w.bias.data(), N);
    }

    void matmul_shared(const Linear * const * ws, Act * const * ys, int n, const Act & x) override {
        // One pass for decode over INT4 linears of one group size: the rows of
        // all of them split into contiguous tasks of one fork/join.
        bool fused = x.rows < kGemmMinRows && n > 0 && n <= 8;
        for (int i = 0; fused && i < n; i++) {
            const auto & w = static_cast<const CpuLinear &>(*ws[i]);
            fused = w.q4 && w.perm.empty() && w.qw.group == static_cast<const CpuLinear &>(*ws[0]).qw.group && w.in == x.cols &&
                    ys[i]->cols == w.out && ys[i]->rows >= x.rows;
        }
        if (!fused) return Backend::matmul_shared(ws, ys, n, x);
        for (int i = 0; i < n; i++) weight_bytes_read += ws[i]->bytes();
        const int64_t M = x.rows, K = x.cols;
        const int group = static_cast<const CpuLinear &>(*ws[0]).qw.group;
        quantize_input(fp(x), M, K, group);
        int64_t total = 0;
        for (int i = 0; i < n; i++) total += ws[i]->out;
        const int64_t n_tasks = std::max<int64_t>(1, std::min<int64_t>(total / 16, 4 * pool_.size()));
        const int64_t step = ((total + n_tasks - 1) / n_tasks + 3) / 4 * 4;
        std::vector<SharedTask> & tasks = tasks_;
        tasks.clear();
        for (int i = 0; i < n; i++)
            for (int64_t n0 = 0; n0 < ws[i]->out; n0 += step) tasks.push_back({i, n0, std::min<int64_t>(ws[i]->out, n0 + step)});
        const int64_t nb = K / 32, ng = K / group;
        pool_.parallel_for((int64_t)tasks.size(), [&](int64_t t, int) {
            const SharedTask & tk = tasks[t];
            const auto & w = static_cast<const CpuLinear &>(*ws[tk.i]);
            float * yp = fp(*ys[tk.i]);
            for (int64_t m = 0; m < M; m++)
                k_.q4_matvec(w.qw.view(), Q8Row{&xq_[m * K], &xd_[m * nb], &xg_[m * ng]}, tk.n0, tk.n1, yp + m * w.out + tk.n0);
        });
        for (int i = 0; i < n; i++) {
            const auto & w = static_cast<const CpuLinear &>(*ws[i]);
            if (!w.bias.empty())
                for (int64_t m = 0; m < M; m++) k_.add(fp(*ys[i]) + m * w.out, w.bias.data(), w.out);
        }
    }

    void rope(Act & q, Act & k, int n_heads, int n_kv_heads, int pos0, const RopeParams & p) override {
        const int hd = p.head_dim, half = p.n_rot / 2;
        SHOAL_CHECK(p.n_rot % 2 == 0 && p.n_rot <= hd && p.n_rot <= 2048 && q.cols == (int64_t)n_heads * hd &&
                    k.cols == (int64_t)n_kv_heads * hd && q.rows == k.rows, SHOAL_ERR_INVALID_ARG, "rope: shapes");
        rows_parallel(q.rows, q.cols, [&](int64_t m) {
            float cs[1024], sn[1024]; // [n_rot/2] for position pos0 + m
            const float pos = (float)(pos0 + m);
            for (int i = 0; i < half; i++) {
                const float a = pos * p.inv_freq[i]; // f32 product, as HF computes freqs
                cs[i] = std::cos(a) * p.attn_factor;
                sn[i] = std::sin(a) * p.attn_factor;
            }
            for (int h = 0; h < n_heads; h++) k_.rope(fp(q) + m * q.cols + h * hd, p.n_rot, cs, sn);
            for (int h = 0; h < n_kv_heads; h++) k_.rope(fp(k) + m * k.cols + h * hd, p.n_rot, cs, sn);
        });
    }

    void kv_store(KvCache & kvc, int layer, int pos0, const Act & k, const Act & v) override {
        auto & kv = static_cast<CpuKv &>(kvc);
        SHOAL_CHECK(pos0 >= 0 && pos0 + k.rows <= kv.n_ctx, SHOAL_ERR_CONTEXT_FULL,
                    "KV cache full: positions " + std::to_string(pos0) + ".." + std::to_string(pos0 + k.rows) +
                    " past n_ctx " + std::to_string(kv.n_ctx));
        SHOAL_CHECK(k.cols == kv.kv_dim && v.cols == kv.kv_dim && v.rows == k.rows && layer >= 0 && layer < kv.n_layers,
                    SHOAL_ERR_INVALID_ARG, "kv_store: shapes");
        // a ring chunk may not overwrite a key its first query still sees
        SHOAL_CHECK(!kv.ring() || k.rows <= (int64_t)kv.n_slots - kv.window + 1, SHOAL_ERR_INVALID_ARG,
                    "kv_store: chunk larger than the ring allows");
        const int hd = kv.head_dim;
        for (int64_t m = 0; m < k.rows; m++) {
            const int64_t s0 = kv.slot_of(pos0 + m);
            for (int64_t s = s0; s < kv.rows; s += kv.ring() ? kv.n_slots : kv.rows) { // the slot (and its mirror)
                const int t = (int)(s / kKvTile), slot = (int)(s % kKvTile);
                for (int h = 0; h < kv.n_kv_heads; h++) {
                    const float * kr = fp(k) + m * k.cols + h * hd; // [hd]
                    const float * vr = fp(v) + m * v.cols + h * hd; // [hd]
                    const KvHead view = kv.view(layer, h);
                    const int64_t kat = (int64_t)t * hd * kKvTile + slot; // + i·32 for dim i
                    switch (kv.type) {
                        case KvType::F32: {
                            float * kd = static_cast<float *>(const_cast<void *>(view.k));
                            for (int i = 0; i < hd; i++) kd[kat + i * kKvTile] = kr[i];
                            std::memcpy(static_cast<float *>(const_cast<void *>(view.v)) + s * hd, vr, hd * sizeof(float));
                            break;
                        }
                        case KvType::F16: {
                            uint16_t * kd = static_cast<uint16_t *>(const_cast<void *>(view.k));
                            uint16_t * vd = static_cast<uint16_t *>(const_cast<void *>(view.v)) + s * hd;
                            for (int i = 0; i < hd; i++) kd[kat + i * kKvTile] = f32_to_f16(kr[i]);
                            for (int i = 0; i < hd; i++) vd[i] = f32_to_f16(vr[i]);
                            break;
                        }
                        case KvType::Q8: {
                            int8_t q[4096]; // hd <= 4096 for q8 (new_kv_cache)
                            const float dk = kv_quantize_q8(kr, hd, q);
                            int8_t * kd = static_cast<int8_t *>(const_cast<void *>(view.k));
                            for (int i = 0; i < hd; i++) kd[kat + i * kKvTile] = q[i];
                            const_cast<float *>(view.ks)[s] = dk;
                            const_cast<float *>(view.vs)[s] = kv_quantize_q8(vr, hd, static_cast<int8_t *>(const_cast<void *>(view.v)) + s * hd);
                            break;
                        }
                    }
                }
            }
        }
    }

    void attention(const Act & q, const KvCache & kvc, int layer, int pos0, int n_heads, int n_kv_heads, int head_dim,
                   float scale, Act & out) override {
        const auto & kv = static_cast<const CpuKv &>(kvc);
        SHOAL_CHECK(n_kv_heads > 0 && n_heads % n_kv_heads == 0 && kv.kv_dim == n_kv_heads * head_dim &&
                    q.cols == (int64_t)n_heads * head_dim && out.cols == q.cols && pos0 + q.rows <= kv.n_ctx,
                    SHOAL_ERR_INVALID_ARG, "attention: shapes");
        SHOAL_CHECK(kv.head_dim == head_dim && layer >= 0 && layer < kv.n_layers, SHOAL_ERR_INVALID_ARG, "attention: cache shape");
        const int group = n_heads / n_kv_heads;
        // One task per (query row, KV head): all `group` query heads of that KV
        // head together (their q rows are adjacent), so each K/V row is read once.
        // Causal: row m sees positions lo..pos0+m, lo = 0 or the window's start; they
        // are consecutive slots from slot_of(lo) on (in a ring, through the mirror).
        pool_.parallel_for(q.rows * n_kv_heads, [&](int64_t t, int) {
            const int64_t m = t / n_kv_heads;
            const int g = (int)(t % n_kv_heads);
            const int p = pos0 + (int)m;
            const int lo = kv.window > 0 ? std::max(0, p - kv.window + 1) : 0;
            const KvHead view = kv.view(layer, g, kv.slot_of(lo));
            const int n_kv = view.lo + p - lo + 1; // the view's positions 0..lo−1 are masked
            thread_local std::vector<float> scores; // [group][ceil(n_kv/32)·32]
            const size_t need = (size_t)group * ((n_kv + kKvTile - 1) / kKvTile * kKvTile);
            if (scores.size() < need) scores.resize(need);
            const int64_t off = m * q.cols + (int64_t)g * group * head_dim;
            k_.attn_group(view, fp(q) + off, group, n_kv, scale, scores.data(), fp(out) + off);
        });
    }

    void silu_mul(Act & gate, const Act & up) override {
        SHOAL_CHECK(gate.cols == up.cols && gate.rows == up.rows, SHOAL_ERR_INVALID_ARG, "silu_mul: shapes");
        elementwise(gate.rows * gate.cols, [&](int64_t i0, int64_t n) { k_.silu_mul(fp(gate) + i0, fp(up) + i0, n); });
    }

    void add(Act & x, const Act & y) override {
        SHOAL_CHECK(x.cols == y.cols && x.rows == y.rows, SHOAL_ERR_INVALID_ARG, "add: shapes");
        elementwise(x.rows * x.cols, [&](int64_t i0, int64_t n) { k_.add(fp(x) + i0, fp(y) + i0, n); });
    }

    void layernorm(const Act & x, const Vec & w, const Vec & b, float eps, Act & out) override {
        const auto & vw = static_cast<const CpuVec &>(w);
        const auto & vb = static_cast<const CpuVec &>(b);
        SHOAL_CHECK(vw.n == x.cols && vb.n == x.cols && out.cols == x.cols && out.rows >= x.rows, SHOAL_ERR_INVALID_ARG, "layernorm: shapes");
        rows_parallel(x.rows, x.cols, [&](int64_t m) {
            k_.layernorm(fp(x) + m * x.cols, vw.w.data(), vb.w.data(), x.cols, eps, fp(out) + m * x.cols);
        });
    }

    void activation(Act & x, ActKind kind) override {
        void (*f)(float *, int64_t) = kind == ActKind::Relu ? k_.relu : kind == ActKind::GeluErf ? k_.gelu_erf
                                    : kind == ActKind::GeluTanh ? k_.gelu_tanh : nullptr;
        SHOAL_CHECK(f, SHOAL_ERR_INVALID_ARG, "activation: SiLU is only fused with the gate (silu_mul)");
        elementwise(x.rows * x.cols, [&](int64_t i0, int64_t n) { f(fp(x) + i0, n); });
    }

    void add_positions(Act & x, const Embedding & table, int pos0, int offset) override {
        const auto & e = static_cast<const CpuEmbedding &>(table);
        SHOAL_CHECK(x.cols == e.dim && pos0 >= 0 && offset >= 0 && (int64_t)pos0 + offset + x.rows <= e.vocab, SHOAL_ERR_INVALID_ARG,
                    "add_positions: positions " + std::to_string(pos0) + ".." + std::to_string(pos0 + x.rows) + " + " +
                    std::to_string(offset) + " outside the table of " + std::to_string(e.vocab));
        const size_t row_bytes = (size_t)e.dim * dtype_size(e.dt);
        std::vector<float> row((size_t)e.dim);
        for (int64_t m = 0; m < x.rows; m++) {
            k_.to_f32(e.dt, static_cast<const uint8_t *>(e.data) + (size_t)(pos0 + offset + m) * row_bytes, e.dim, row.data());
            k_.add(fp(x) + m * x.cols, row.data(), e.dim);
        }
    }

    void copy_cols(const Act & src, int64_t col0, Act & dst) override {
        SHOAL_CHECK(col0 >= 0 && col0 + dst.cols <= src.cols && dst.rows <= src.rows, SHOAL_ERR_INVALID_ARG, "copy_cols: shapes");
        for (int64_t m = 0; m < dst.rows; m++)
            std::memcpy(fp(dst) + m * dst.cols, fp(src) + m * src.cols + col0, (size_t)dst.cols * sizeof(float));
    }

    void route_topk(const Act & logits, int k, bool renorm, int32_t * ids, float * weights) override {
        SHOAL_CHECK(k >= 1 && k <= logits.cols, SHOAL_ERR_INVALID_ARG, "route_topk: k outside 1..E");
        route_topk_host(fp(logits), logits.rows, (int)logits.cols, k, renorm, ids, weights);
    }

    void gather_rows(const Act & src, const int32_t * rows, int64_t n, Act & dst) override {
        SHOAL_CHECK(src.cols == dst.cols && n <= dst.rows, SHOAL_ERR_INVALID_ARG, "gather_rows: shapes");
        for (int64_t i = 0; i < n; i++) {
            SHOAL_CHECK(rows[i] >= 0 && rows[i] < src.rows, SHOAL_ERR_INVALID_ARG, "gather_rows: row out of range");
            std::memcpy(fp(dst) + i * dst.cols, fp(src) + rows[i] * src.cols, (size_t)src.cols * sizeof(float));
        }
    }

    void scatter_add_rows(Act & dst, const int32_t * rows, const float * w, int64_t n, const Act & src) override {
        SHOAL_CHECK(src.cols == dst.cols && n <= src.rows, SHOAL_ERR_INVALID_ARG, "scatter_add_rows: shapes");
        for (int64_t i = 0; i < n; i++) {
            SHOAL_CHECK(rows[i] >= 0 && rows[i] < dst.rows, SHOAL_ERR_INVALID_ARG, "scatter_add_rows: row out of range");
            float * d = fp(dst) + rows[i] * dst.cols;
            const float * s = fp(src) + i * src.cols;
            for (int64_t j = 0; j < dst.cols; j++) d[j] += w[i] * s[j];
        }
    }

private:
    // Decode activations → xq_, xd_, xg_ (Q8Row per row). Linears that share
    // their input (q/k/v, gate/up) quantize it once: the last input is kept.
    void quantize_input(const float * xp, int64_t M, int64_t K, int group) {
        const int64_t nb = K / 32, ng = K / group;
        const bool same = xq_group_ == group && xlast_.size() == (size_t)(M * K) &&
                          std::memcmp(xlast_.data(), xp, (size_t)(M * K) * sizeof(float)) == 0;
        if (same) return;
        xq_.resize(M * K);
        xd_.resize(M * nb);
        xg_.resize(M * ng);
        rows_parallel(M, K, [&](int64_t m) { k_.quantize_q8(xp + m * K, K, group, &xq_[m * K], &xd_[m * nb], &xg_[m * ng]); });
        xlast_.assign(xp, xp + M * K);
        xq_group_ = group;
    }

    // Per-row ops: a dispatch costs ~1 µs, so small batches stay on this thread.
    template <class Fn> void rows_parallel(int64_t rows, int64_t cols, Fn && fn) {
        if (rows * cols < 32768) {
            for (int64_t m = 0; m < rows; m++) fn(m);
        } else {
            pool_.parallel_for(rows, [&](int64_t m, int) { fn(m); });
        }
    }
    // Element-wise ops over n floats, in chunks of 16 Ki when large.
    template <class Fn> void elementwise(int64_t n, Fn && fn) {
        constexpr int64_t kChunk = 16384;
        if (n <= 4 * kChunk) {
            fn(0, n);
        } else {
            pool_.parallel_for((n + kChunk - 1) / kChunk, [&](int64_t t, int) {
                fn(t * kChunk, std::min(kChunk, n - t * kChunk));
            });
        }
    }

    const Kernels & k_;
    ThreadPool pool_;
    Precision prec_;
    // Decode activations quantized for the INT4 matvec: [M][K], [M][K/32], [M][K/G].
    std::vector<int8_t> xq_;
    std::vector<float> xd_, xg_;
    std::vector<float> xlast_; // [M][K] the f32 input xq_ was made from
    std::vector<float> xperm_; // [M][K] gathered input of a desc_act linear
    int xq_group_ = 0;
    struct SharedTask { int i; int64_t n0, n1; };
    std::vector<SharedTask> tasks_; // matmul_shared's task list (reused: no allocation per token)
};

} // namespace

std::unique_ptr<Backend> make_cpu_backend(const std::string & isa, int n_threads, Precision precision) {
    const std::string avail = cpu_isas();
    std::string pick = isa;
    if (isa.empty() || isa == "auto") pick = avail.substr(avail.rfind(' ') + 1); // best is last
    const Kernels * k = cpu_kernels(pick);
    SHOAL_CHECK(k, SHOAL_ERR_BACKEND, "CPU ISA '" + isa + "' is not supported by this CPU; available: " + avail);
    return std::make_unique<CpuBackend>(*k, n_threads, precision);
}

} // namespace shoal
