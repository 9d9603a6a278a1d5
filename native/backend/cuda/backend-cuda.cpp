// backend-cuda.cpp — the CUDA implementation of Backend (backend.h).
//
// Memory: every weight lives in device memory — INT4 linears repacked on the GPU
// into q4-layout.cuh, unquantized linears and the embedding in their checkpoint
// dtype, norm gains and biases as f32. Activations (Act) are f16 device
// buffers; the KV cache is f16 [layer][pos][kv_dim] for K and V.
// Load path: each tensor is streamed from the mapped file through two small
// pinned staging buffers (double-buffered cudaMemcpyAsync) into device memory,
// then release_pages() drops its file pages from RSS, so the host never holds
// a second full copy (on Jetson, host and GPU share DRAM). INT4 tensors land
// in a reusable device scratch in AutoAWQ layout and are repacked by a kernel.
// Execution: one non-blocking stream per backend; ops only enqueue work. The
// host waits only in to_host (the logits copy) and when a pinned staging buffer
// is about to be reused while its previous copy may still be in flight.
#include "backend-cuda.h"

#include "activation.cuh"
#include "add.cuh"
#include "attention.cuh"
#include "convert.cuh"
#include "cuda-common.cuh"
#include "device-probe.cuh"
#include "embed.cuh"
#include "fw-matvec.cuh"
#include "gemm.cuh"
#include "layernorm.cuh"
#include "model-source.h"
#include "q4-matvec.cuh"
#include "q4-repack.cuh"
#include "rmsnorm.cuh"
#include "rope.cuh"
#include "route.h"
#include "rows.cuh"
#include "silu-mul.cuh"

#include <cstdlib>
#include <cstring>
#include <map>
#include <vector>

namespace shoal {

using cuda::WType;

namespace {

// ---- device / pinned memory owners -------------------------------------------
struct DevBuf {
    void * p = nullptr;
    size_t n = 0;
    DevBuf() = default;
    explicit DevBuf(size_t bytes, const std::string & what) { alloc(bytes, what); }
    DevBuf(const DevBuf &) = delete;
    DevBuf & operator=(const DevBuf &) = delete;
    ~DevBuf() { release(); }
    void alloc(size_t bytes, const std::string & what) {
        release();
        if (bytes == 0) return;
        const cudaError_t e = cudaMalloc(&p, bytes);
        if (e != cudaSuccess) {
            (void)cudaGetLastError();
            p = nullptr;
            size_t fr = 0, tot = 0;
            cudaMemGetInfo(&fr, &tot);
            fail(e == cudaErrorMemoryAllocation ? SHOAL_ERR_OOM : SHOAL_ERR_BACKEND,
                 "cudaMalloc of " + std::to_string(bytes) + " bytes for " + what + " failed (" + cudaGetErrorString(e) +
                     "; " + std::to_string(fr >> 20) + " MiB of " + std::to_string(tot >> 20) + " MiB free on the device)");
        }
        n = bytes;
    }
    // Grows (never shrinks) to at least bytes; contents are not kept.
    void reserve(size_t bytes, const std::string & what) {
        if (bytes > n) alloc(bytes, what);
    }
    void release() {
        if (p) cudaFree(p);
        p = nullptr;
        n = 0;
    }
    template <class T> T * as() const { return static_cast<T *>(p); }
};

struct PinnedBuf {
    void * p = nullptr;
    size_t n = 0;
    cudaEvent_t done = nullptr; // recorded after the last copy that reads/writes p
    PinnedBuf() = default;
    PinnedBuf(const PinnedBuf &) = delete;
    PinnedBuf & operator=(const PinnedBuf &) = delete;
    ~PinnedBuf() {
        if (done) cudaEventSynchronize(done), cudaEventDestroy(done);
        if (p) cudaFreeHost(p);
    }
    void reserve(size_t bytes) {
        if (!done) CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
        if (bytes <= n) return;
        CUDA_CHECK(cudaEventSynchronize(done));
        if (p) CUDA_CHECK(cudaFreeHost(p));
        p = nullptr;
        n = 0;
        CUDA_CHECK(cudaHostAlloc(&p, bytes, cudaHostAllocDefault));
        n = bytes;
    }
    void wait() { CUDA_CHECK(cudaEventSynchronize(done)); } // before the host touches p
};

WType wtype_of(DType t, const std::string & what) {
    switch (t) {
        case DType::F32: return WType::F32;
        case DType::F16: return WType::F16;
        case DType::BF16: return WType::BF16;
        default: fail(SHOAL_ERR_ST_DTYPE, what + ": dtype " + dtype_name(t) + " is not F32/F16/BF16");
    }
}
const char * wtype_name(WType t) { return t == WType::F16 ? "f16" : t == WType::BF16 ? "bf16" : "f32"; }

float host_to_f32(DType dt, const void * p, int64_t i) {
    switch (dt) {
        case DType::F16: return f16_to_f32(static_cast<const uint16_t *>(p)[i]);
        case DType::BF16: return bf16_to_f32(static_cast<const uint16_t *>(p)[i]);
        default: return static_cast<const float *>(p)[i];
    }
}

// ---- backend objects ------------------------------------------------------------
struct CudaLinear : Linear {
    bool q4 = false;
    // INT4 (q4-layout.cuh): qs u32 [N][K/8] (pack factor 8), sz half2 [N][K/G] (s, 1024+z); group G.
    DevBuf qs, sz;
    int group = 0;
    // Unquantized: w [N][K] in dtype wt (shared with the embedding when tied).
    WType wt = WType::F32;
    std::shared_ptr<DevBuf> w;
    DevBuf bias; // f32 [N] or empty
    size_t bytes() const override {
        return (q4 ? qs.n + sz.n : w->n) + bias.n;
    }
    const char * kind() const override { return q4 ? "q4" : wtype_name(wt); }
    cuda::Q4Weights q4view() const {
        return cuda::Q4Weights{out, in, group, qs.as<const uint32_t>(), sz.as<const __half2>()};
    }
};

struct CudaEmbedding : Embedding {
    WType wt = WType::F32;
    std::shared_ptr<DevBuf> table; // [vocab][dim] in dtype wt
    size_t bytes() const override { return table->n; }
};

struct CudaVec : Vec {
    DevBuf w; // f32 [n]
};

struct CudaKv : KvCache {
    DevBuf k, v; // f16 [n_layers][n_slots][kv_dim] each (a ring when n_slots < n_ctx: the kernel
                 // addresses each position, so no mirrored copy as on the CPU)
    size_t bytes() const override { return k.n + v.n; }
    __half * kl(int layer) const { return k.as<__half>() + (size_t)layer * n_slots * kv_dim; }
    __half * vl(int layer) const { return v.as<__half>() + (size_t)layer * n_slots * kv_dim; }
};

__half * hp(const Act & a) { return static_cast<__half *>(a.data); }

constexpr size_t kStageBytes = 16u << 20; // each of the two pinned weight-staging buffers

class CudaBackend : public Backend {
public:
    explicit CudaBackend(int device) : dev_(device) {
        CUDA_CHECK(cudaSetDevice(dev_));
        int major = 0, minor = 0, sms = 0;
        CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev_));
        CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev_));
        CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev_));
        isa_ = "sm_" + std::to_string(major) + std::to_string(minor);
        target_blocks_ = 2 * std::max(1, sms);
        CUDA_CHECK(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking));
    }
    ~CudaBackend() override {
        if (s_) {
            cudaStreamSynchronize(s_);
            cudaStreamDestroy(s_);
        }
    }

    const char * name() const override { return "cuda"; }
    const char * isa() const override { return isa_.c_str(); }
    int n_threads() const override { return 1; }

    // ---- weights ------------------------------------------------------------------
    std::unique_ptr<Linear> load_linear(const LinearSource & src) override {
        bind();
        auto l = std::make_unique<CudaLinear>();
        l->in = src.in;
        l->out = src.out;
        const int64_t K = src.in, N = src.out;
        SHOAL_CHECK(src.qfmt == QFormat::None || (src.qfmt == QFormat::AwqGemm && (src.bits == 0 || src.bits == 4)),
                    SHOAL_ERR_UNSUPPORTED_QUANT,
                    "linear '" + src.name + "': the CUDA backend runs AutoAWQ gemm INT4 and unquantized weights only; "
                    "use --backend cpu for this checkpoint's format");
        if (src.awq) {
            const int G = src.group_size;
            SHOAL_CHECK(G > 0 && K % 32 == 0 && G % 32 == 0 && K % G == 0 && N % 8 == 0, SHOAL_ERR_GROUP_SIZE,
                        "linear '" + src.name + "': the CUDA INT4 kernels need in_features % 32 == 0, group size % 32 == 0, " +
                            "in % group == 0 and out % 8 == 0 (in=" + std::to_string(K) + ", out=" + std::to_string(N) +
                            ", group=" + std::to_string(G) + ")");
            SHOAL_CHECK(src.qweight.nbytes == (size_t)(K * N / 2) && src.qzeros.nbytes == (size_t)(K / G * N / 2) &&
                            src.scales.nbytes == (size_t)(K / G * N * 2) && src.scales.dtype == DType::F16,
                        SHOAL_ERR_SHAPE, "linear '" + src.name + "': AWQ tensor sizes do not match in/out/group");
            l->q4 = true;
            l->group = G;
            // raw AutoAWQ tensors → device scratch [qweight | qzeros | scales], then repack on the GPU
            const size_t a = src.qweight.nbytes, b = src.qzeros.nbytes, c = src.scales.nbytes;
            load_scratch_.reserve(a + b + c + 512, "AWQ staging");
            char * base = load_scratch_.as<char>();
            const size_t ob = (a + 255) / 256 * 256, oc = ob + (b + 255) / 256 * 256;
            upload(src.qweight.data, a, base);
            upload(src.qzeros.data, b, base + ob);
            upload(src.scales.data, c, base + oc);
            l->qs.alloc((size_t)N * (K / 8) * sizeof(uint32_t), "INT4 weights of " + src.name);
            l->sz.alloc((size_t)N * (K / G) * sizeof(__half2), "INT4 scales of " + src.name);
            cuda::q4_repack_awq(reinterpret_cast<const int32_t *>(base), reinterpret_cast<const int32_t *>(base + ob),
                                reinterpret_cast<const __half *>(base + oc), K, N, G, l->qs.as<uint32_t>(),
                                l->sz.as<__half2>(), s_);
            CUDA_CHECK(cudaStreamSynchronize(s_)); // the scratch is reused by the next tensor
            if (!src.transient) {
                release_pages(src.qweight.data, a);
                release_pages(src.qzeros.data, b);
                release_pages(src.scales.data, c);
            }
        } else {
            const TensorView & w = src.weight;
            l->wt = wtype_of(w.dtype, "linear '" + src.name + "'");
            SHOAL_CHECK(w.numel() == K * N, SHOAL_ERR_SHAPE,
                        "linear '" + src.name + "': weight has " + std::to_string(w.numel()) + " elements, expected " +
                            std::to_string(N) + " x " + std::to_string(K));
            auto it = src.transient ? shared_.end() : shared_.find(w.data); // tied lm_head: reuse the embedding's copy
            if (it != shared_.end() && it->second->n == w.nbytes) {
                l->w = it->second;
            } else {
                l->w = std::make_shared<DevBuf>(w.nbytes, "weight " + src.name);
                upload(w.data, w.nbytes, l->w->p);
                if (!src.transient) { // upload() has copied the bytes to pinned staging: the caller may reuse them
                    shared_[w.data] = l->w;
                    release_pages(w.data, w.nbytes);
                }
            }
        }
        if (src.has_bias) {
            SHOAL_CHECK(src.bias.numel() == N, SHOAL_ERR_SHAPE, "linear '" + src.name + "': bias must have " + std::to_string(N) + " elements");
            wtype_of(src.bias.dtype, "bias of '" + src.name + "'");
            upload_f32(src.bias, l->bias, "bias of " + src.name);
        }
        return l;
    }

    std::unique_ptr<Embedding> load_embedding(const TensorView & w) override {
        bind();
        SHOAL_CHECK(w.n_dims == 2, SHOAL_ERR_SHAPE, "embedding '" + w.name + "' must be 2-D");
        auto e = std::make_unique<CudaEmbedding>();
        e->vocab = w.shape[0];
        e->dim = w.shape[1];
        e->wt = wtype_of(w.dtype, "embedding '" + w.name + "'");
        auto it = shared_.find(w.data);
        if (it != shared_.end() && it->second->n == w.nbytes) {
            e->table = it->second;
        } else {
            e->table = std::make_shared<DevBuf>(w.nbytes, "embedding " + w.name);
            upload(w.data, w.nbytes, e->table->p);
            shared_[w.data] = e->table;
            release_pages(w.data, w.nbytes);
        }
        return e;
    }

    std::unique_ptr<Vec> load_vec(const TensorView & w) override {
        bind();
        wtype_of(w.dtype, "vector '" + w.name + "'");
        auto v = std::make_unique<CudaVec>();
        v->n = w.numel();
        upload_f32(w, v->w, "vector " + w.name);
        return v;
    }

    // ---- memory ---------------------------------------------------------------------
    Act new_act(int64_t rows, int64_t cols) override {
        bind();
        done_loading();
        Act a;
        a.rows = rows;
        a.cols = cols;
        const size_t bytes = std::max<size_t>(256, (size_t)(rows * cols) * sizeof(__half));
        void * p = nullptr;
        const cudaError_t e = cudaMalloc(&p, bytes);
        if (e != cudaSuccess) {
            (void)cudaGetLastError();
            fail(SHOAL_ERR_OOM, "activation [" + std::to_string(rows) + ", " + std::to_string(cols) + "] on the GPU: " +
                                    cudaGetErrorString(e));
        }
        CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, s_));
        a.data = p;
        return a;
    }
    void free_act(Act & a) override {
        if (a.data) {
            bind();
            cudaStreamSynchronize(s_);
            cudaFree(a.data);
        }
        a = Act{};
    }

    std::unique_ptr<KvCache> new_kv_cache(int n_layers, int n_ctx, int kv_dim, int head_dim, KvType type, int window,
                                          int max_rows) override {
        SHOAL_CHECK(type == KvType::F16, SHOAL_ERR_INVALID_ARG,
                    std::string("the CUDA backend keeps its KV cache in f16; kv_cache ") + kv_type_name(type) +
                        " is available on the CPU backend only");
        bind();
        done_loading();
        SHOAL_CHECK(n_layers > 0 && n_ctx > 0 && kv_dim > 0 && window >= 0 && max_rows > 0, SHOAL_ERR_INVALID_ARG, "new_kv_cache: sizes");
        auto kv = std::make_unique<CudaKv>();
        kv->n_layers = n_layers;
        kv->n_ctx = n_ctx;
        kv->kv_dim = kv_dim;
        kv->head_dim = head_dim;
        kv->type = type;
        kv->window = window;
        kv->n_slots = n_ctx;
        if (window > 0 && (int64_t)window + max_rows - 1 < n_ctx) kv->n_slots = window + max_rows - 1;
        const size_t bytes = (size_t)n_layers * kv->n_slots * kv_dim * sizeof(__half);
        kv->k.alloc(bytes, "KV cache (K)");
        kv->v.alloc(bytes, "KV cache (V)");
        CUDA_CHECK(cudaMemsetAsync(kv->k.p, 0, bytes, s_));
        CUDA_CHECK(cudaMemsetAsync(kv->v.p, 0, bytes, s_));
        return kv;
    }

    void to_host(const Act & a, int64_t row0, int64_t n, float * dst) override {
        bind();
        SHOAL_CHECK(row0 >= 0 && n >= 0 && row0 + n <= a.rows, SHOAL_ERR_INVALID_ARG, "to_host: rows out of range");
        const int64_t cnt = n * a.cols;
        if (cnt == 0) return;
        const size_t bytes = (size_t)cnt * sizeof(float);
        f32_.reserve(bytes, "to_host staging");
        cuda::f16_to_f32(hp(a) + row0 * a.cols, cnt, f32_.as<float>(), s_);
        down_.reserve(bytes);
        CUDA_CHECK(cudaMemcpyAsync(down_.p, f32_.p, bytes, cudaMemcpyDeviceToHost, s_));
        CUDA_CHECK(cudaEventRecord(down_.done, s_));
        down_.wait(); // the one host sync of a step: the logits (or the row) are needed now
        std::memcpy(dst, down_.p, bytes);
    }

    void from_host(Act & a, const float * src) override {
        bind();
        const int64_t cnt = a.rows * a.cols;
        if (cnt == 0) return;
        const size_t bytes = (size_t)cnt * sizeof(float);
        up_.reserve(bytes);
        up_.wait(); // the previous upload from this buffer has completed
        std::memcpy(up_.p, src, bytes);
        f32_in_.reserve(bytes, "from_host staging");
        CUDA_CHECK(cudaMemcpyAsync(f32_in_.p, up_.p, bytes, cudaMemcpyHostToDevice, s_));
        CUDA_CHECK(cudaEventRecord(up_.done, s_));
        cuda::f32_to_f16(f32_in_.as<float>(), cnt, hp(a), s_);
    }

    void copy_rows(const Act & src, int64_t row0, int64_t n, Act & dst) override {
        bind();
        SHOAL_CHECK(row0 >= 0 && n >= 0 && row0 + n <= src.rows && n <= dst.rows && src.cols == dst.cols,
                    SHOAL_ERR_INVALID_ARG, "copy_rows: shapes");
        if (n == 0) return;
        CUDA_CHECK(cudaMemcpyAsync(hp(dst), hp(src) + row0 * src.cols, (size_t)(n * src.cols) * sizeof(__half),
                                   cudaMemcpyDeviceToDevice, s_));
    }

    // ---- ops ------------------------------------------------------------------------------
    void embed(const Embedding & table, const int32_t * tokens, int64_t n, Act & out) override {
        bind();
        const auto & e = static_cast<const CudaEmbedding &>(table);
        SHOAL_CHECK(out.cols == e.dim && out.rows >= n, SHOAL_ERR_INVALID_ARG, "embed: output shape");
        for (int64_t m = 0; m < n; m++)
            SHOAL_CHECK(tokens[m] >= 0 && tokens[m] < e.vocab, SHOAL_ERR_INVALID_ARG,
                        "token id " + std::to_string(tokens[m]) + " out of range [0, " + std::to_string(e.vocab) + ")");
        cuda::embed(e.wt, e.table->p, e.vocab, e.dim, tokens, n, hp(out), s_);
    }

    void rmsnorm(const Act & x, const Vec & w, float eps, Act & out) override {
        bind();
        const auto & v = static_cast<const CudaVec &>(w);
        SHOAL_CHECK(v.n == x.cols && out.cols == x.cols && out.rows >= x.rows, SHOAL_ERR_INVALID_ARG, "rmsnorm: shapes");
        if (x.rows == 0) return;
        cuda::rmsnorm(hp(x), v.w.as<float>(), x.rows, x.cols, eps, hp(out), s_);
    }

    void head_rmsnorm(Act & x, const Vec & w, int n_heads, float eps) override {
        bind();
        const auto & v = static_cast<const CudaVec &>(w);
        SHOAL_CHECK(n_heads > 0 && v.n > 0 && x.cols == (int64_t)n_heads * v.n, SHOAL_ERR_INVALID_ARG, "head_rmsnorm: shapes");
        if (x.rows == 0) return;
        // [M, H·hd] is [M·H, hd] contiguous: the row kernel, in place (out may alias x)
        cuda::rmsnorm(hp(x), v.w.as<float>(), x.rows * n_heads, v.n, eps, hp(x), s_);
    }

    // Linear::bf16_products is ignored here: f32 (f16 activations) as always.
    void matmul(const Linear & wl, const Act & x, Act & y) override {
        bind();
        const auto & w = static_cast<const CudaLinear &>(wl);
        const int64_t M = x.rows, K = w.in, N = w.out;
        SHOAL_CHECK(x.cols == K && y.cols == N && y.rows >= M, SHOAL_ERR_INVALID_ARG,
                    "matmul: x [" + std::to_string(M) + ", " + std::to_string(x.cols) + "] · W[" + std::to_string(N) +
                        ", " + std::to_string(K) + "]ᵀ → y [" + std::to_string(y.rows) + ", " + std::to_string(y.cols) + "]");
        if (M == 0) return;
        const float * bias = w.bias.p ? w.bias.as<float>() : nullptr;
        weight_bytes_read += w.bytes();
        if (M <= cuda::kMatvecMaxRows) {
            if (w.q4) cuda::q4_matvec(w.q4view(), hp(x), (int)M, bias, hp(y), s_);
            else cuda::fw_matvec(w.wt, w.w->p, N, K, hp(x), (int)M, bias, hp(y), s_);
        } else {
            if (w.q4) cuda::q4_gemm(w.q4view(), hp(x), M, bias, hp(y), s_);
            else cuda::fw_gemm(w.wt, w.w->p, N, K, hp(x), M, bias, hp(y), s_);
        }
    }

    void rope(Act & q, Act & k, int n_heads, int n_kv_heads, int pos0, const RopeParams & p) override {
        bind();
        const int hd = p.head_dim;
        SHOAL_CHECK(p.n_rot % 2 == 0 && p.n_rot > 0 && p.n_rot <= hd && q.cols == (int64_t)n_heads * hd &&
                        k.cols == (int64_t)n_kv_heads * hd && q.rows == k.rows && p.inv_freq,
                    SHOAL_ERR_INVALID_ARG, "rope: shapes");
        if (q.rows == 0) return;
        // The inv_freq table is uploaded once and re-sent only when its contents change.
        const size_t half = (size_t)p.n_rot / 2;
        if (inv_freq_host_.size() != half || std::memcmp(inv_freq_host_.data(), p.inv_freq, half * sizeof(float)) != 0) {
            inv_freq_host_.assign(p.inv_freq, p.inv_freq + half);
            CUDA_CHECK(cudaStreamSynchronize(s_)); // kernels queued earlier may still read the old table
            inv_freq_.reserve(half * sizeof(float), "rope inv_freq");
            CUDA_CHECK(cudaMemcpyAsync(inv_freq_.p, inv_freq_host_.data(), half * sizeof(float), cudaMemcpyHostToDevice, s_));
        }
        cuda::rope(hp(q), hp(k), q.rows, n_heads, n_kv_heads, hd, p.n_rot, pos0, inv_freq_.as<float>(), p.attn_factor, s_);
    }

    void kv_store(KvCache & kvc, int layer, int pos0, const Act & k, const Act & v) override {
        bind();
        auto & kv = static_cast<CudaKv &>(kvc);
        SHOAL_CHECK(pos0 >= 0 && pos0 + k.rows <= kv.n_ctx, SHOAL_ERR_CONTEXT_FULL,
                    "KV cache full: positions " + std::to_string(pos0) + ".." + std::to_string(pos0 + k.rows) +
                        " past n_ctx " + std::to_string(kv.n_ctx));
        SHOAL_CHECK(k.cols == kv.kv_dim && v.cols == kv.kv_dim && v.rows == k.rows && layer >= 0 && layer < kv.n_layers,
                    SHOAL_ERR_INVALID_ARG, "kv_store: shapes");
        SHOAL_CHECK(!kv.ring() || k.rows <= (int64_t)kv.n_slots - kv.window + 1, SHOAL_ERR_INVALID_ARG,
                    "kv_store: chunk larger than the ring allows");
        // K/V rows of consecutive positions are contiguous in the cache (a ring: up to
        // two runs, before and after the wrap): one copy per run.
        for (int64_t m = 0; m < k.rows;) {
            const int64_t p = pos0 + m, row = kv.ring() ? p % kv.n_slots : p;
            const int64_t run = std::min<int64_t>(k.rows - m, kv.n_slots - row);
            const size_t off = (size_t)row * kv.kv_dim, src = (size_t)m * kv.kv_dim, bytes = (size_t)(run * k.cols) * sizeof(__half);
            CUDA_CHECK(cudaMemcpyAsync(kv.kl(layer) + off, hp(k) + src, bytes, cudaMemcpyDeviceToDevice, s_));
            CUDA_CHECK(cudaMemcpyAsync(kv.vl(layer) + off, hp(v) + src, bytes, cudaMemcpyDeviceToDevice, s_));
            m += run;
        }
    }

    void attention(const Act & q, const KvCache & kvc, int layer, int pos0, int n_heads, int n_kv_heads, int head_dim,
                   float scale, Act & out) override {
        bind();
        const auto & kv = static_cast<const CudaKv &>(kvc);
        SHOAL_CHECK(n_kv_heads > 0 && n_heads % n_kv_heads == 0 && kv.kv_dim == n_kv_heads * head_dim &&
                        q.cols == (int64_t)n_heads * head_dim && out.cols == q.cols && out.rows >= q.rows &&
                        pos0 >= 0 && pos0 + q.rows <= kv.n_ctx && layer >= 0 && layer < kv.n_layers,
                    SHOAL_ERR_INVALID_ARG, "attention: shapes");
        SHOAL_CHECK(head_dim % 2 == 0 && head_dim <= 256, SHOAL_ERR_BACKEND,
                    "attention: the CUDA kernel supports even head_dim <= 256, got " + std::to_string(head_dim));
        if (q.rows == 0) return;
        const size_t parts = cuda::attention_scratch_floats(q.rows, n_heads, head_dim);
        if (parts) attn_part_.reserve(parts * sizeof(float), "attention split scratch");
        cuda::attention(hp(q), kv.kl(layer), kv.vl(layer), q.rows, pos0, n_heads, n_kv_heads, head_dim, scale, hp(out),
                        parts ? attn_part_.as<float>() : nullptr, target_blocks_, s_, kv.window, kv.ring() ? kv.n_slots : 0);
    }

    void silu_mul(Act & gate, const Act & up) override {
        bind();
        SHOAL_CHECK(gate.cols == up.cols && gate.rows == up.rows, SHOAL_ERR_INVALID_ARG, "silu_mul: shapes");
        cuda::silu_mul(hp(gate), hp(up), gate.rows * gate.cols, s_);
    }

    void add(Act & x, const Act & y) override {
        bind();
        SHOAL_CHECK(x.cols == y.cols && x.rows == y.rows, SHOAL_ERR_INVALID_ARG, "add: shapes");
        cuda::add(hp(x), hp(y), x.rows * x.cols, s_);
    }

    void layernorm(const Act & x, const Vec & w, const Vec & b, float eps, Act & out) override {
        bind();
        const auto & vw = static_cast<const CudaVec &>(w);
        const auto & vb = static_cast<const CudaVec &>(b);
        SHOAL_CHECK(vw.n == x.cols && vb.n == x.cols && out.cols == x.cols && out.rows >= x.rows, SHOAL_ERR_INVALID_ARG, "layernorm: shapes");
        if (x.rows == 0) return;
        cuda::layernorm(hp(x), vw.w.as<float>(), vb.w.as<float>(), x.rows, x.cols, eps, hp(out), s_);
    }

    void activation(Act & x, ActKind kind) override {
        bind();
        SHOAL_CHECK(kind != ActKind::Silu, SHOAL_ERR_INVALID_ARG, "activation: SiLU is only fused with the gate (silu_mul)");
        cuda::activation(hp(x), x.rows * x.cols, kind == ActKind::Relu ? 0 : kind == ActKind::GeluErf ? 1 : 2, s_);
    }

    void add_positions(Act & x, const Embedding & table, int pos0, int offset) override {
        bind();
        const auto & e = static_cast<const CudaEmbedding &>(table);
        SHOAL_CHECK(x.cols == e.dim && pos0 >= 0 && offset >= 0 && (int64_t)pos0 + offset + x.rows <= e.vocab, SHOAL_ERR_INVALID_ARG,
                    "add_positions: positions outside the table of " + std::to_string(e.vocab));
        cuda::add_table_rows(hp(x), x.rows, e.wt, e.table->p, e.dim, (int64_t)pos0 + offset, s_);
    }

    void copy_cols(const Act & src, int64_t col0, Act & dst) override {
        bind();
        SHOAL_CHECK(col0 >= 0 && col0 + dst.cols <= src.cols && dst.rows <= src.rows, SHOAL_ERR_INVALID_ARG, "copy_cols: shapes");
        if (dst.rows == 0 || dst.cols == 0) return;
        CUDA_CHECK(cudaMemcpy2DAsync(dst.data, (size_t)dst.cols * sizeof(__half), hp(src) + col0, (size_t)src.cols * sizeof(__half),
                                     (size_t)dst.cols * sizeof(__half), (size_t)dst.rows, cudaMemcpyDeviceToDevice, s_));
    }

    void route_topk(const Act & logits, int k, bool renorm, int32_t * ids, float * weights) override {
        SHOAL_CHECK(k >= 1 && k <= logits.cols, SHOAL_ERR_INVALID_ARG, "route_topk: k outside 1..E");
        // [M, E] is small: the host picks the experts (route.h), as on the CPU
        route_host_.resize((size_t)(logits.rows * logits.cols));
        to_host(logits, 0, logits.rows, route_host_.data());
        route_topk_host(route_host_.data(), logits.rows, (int)logits.cols, k, renorm, ids, weights);
    }

    void gather_rows(const Act & src, const int32_t * rows, int64_t n, Act & dst) override {
        bind();
        SHOAL_CHECK(src.cols == dst.cols && n <= dst.rows, SHOAL_ERR_INVALID_ARG, "gather_rows: shapes");
        for (int64_t i = 0; i < n; i++)
            SHOAL_CHECK(rows[i] >= 0 && rows[i] < src.rows, SHOAL_ERR_INVALID_ARG, "gather_rows: row out of range");
        cuda::gather_rows(hp(src), src.cols, rows, n, hp(dst), s_);
    }

    void scatter_add_rows(Act & dst, const int32_t * rows, const float * w, int64_t n, const Act & src) override {
        bind();
        SHOAL_CHECK(src.cols == dst.cols && n <= src.rows, SHOAL_ERR_INVALID_ARG, "scatter_add_rows: shapes");
        for (int64_t i = 0; i < n; i++)
            SHOAL_CHECK(rows[i] >= 0 && rows[i] < dst.rows, SHOAL_ERR_INVALID_ARG, "scatter_add_rows: row out of range");
        cuda::scatter_add_rows(hp(dst), dst.cols, rows, w, n, hp(src), s_);
    }

private:
    // Ops may run on any host thread (Node worker threads): make this backend's device current.
    void bind() const {
        if (dev_ != 0) CUDA_CHECK(cudaSetDevice(dev_));
    }

    // Host → device through the two pinned staging buffers: while chunk i is copied
    // to the device, the host fills the other buffer with chunk i+1.
    void upload(const void * host, size_t bytes, void * dev) {
        for (auto & s : stage_) s.reserve(kStageBytes);
        const char * src = static_cast<const char *>(host);
        char * dst = static_cast<char *>(dev);
        for (size_t off = 0, i = 0; off < bytes; off += kStageBytes, i++) {
            PinnedBuf & s = stage_[i % 2];
            const size_t n = std::min(kStageBytes, bytes - off);
            s.wait();
            std::memcpy(s.p, src + off, n);
            CUDA_CHECK(cudaMemcpyAsync(dst + off, s.p, n, cudaMemcpyHostToDevice, s_));
            CUDA_CHECK(cudaEventRecord(s.done, s_));
        }
    }

    // A small float vector (norm gain, bias) converted to f32 on the host, then uploaded.
    void upload_f32(const TensorView & t, DevBuf & dst, const std::string & what) {
        std::vector<float> f((size_t)t.numel());
        for (int64_t i = 0; i < t.numel(); i++) f[i] = host_to_f32(t.dtype, t.data, i);
        dst.alloc(std::max<size_t>(4, f.size() * sizeof(float)), what);
        if (!f.empty()) upload(f.data(), f.size() * sizeof(float), dst.p);
        CUDA_CHECK(cudaStreamSynchronize(s_)); // f is freed on return
    }

    // Weights are all in place once a session allocates: free the load-time buffers.
    void done_loading() {
        if (load_scratch_.p || stage_[0].p) {
            CUDA_CHECK(cudaStreamSynchronize(s_));
            load_scratch_.release();
            for (auto & s : stage_) {
                if (s.p) cudaFreeHost(s.p);
                s.p = nullptr;
                s.n = 0;
            }
        }
    }

    int dev_ = 0;
    std::string isa_;
    int target_blocks_ = 1;
    cudaStream_t s_ = nullptr;
    DevBuf load_scratch_;                 // raw AutoAWQ tensors of one linear during load
    PinnedBuf stage_[2];                  // weight upload staging, kStageBytes each
    std::map<const void *, std::shared_ptr<DevBuf>> shared_; // host view → device copy (tied embeddings)
    PinnedBuf up_, down_;                 // from_host / to_host staging
    DevBuf f32_, f32_in_;                 // f32 device staging for to_host / from_host
    DevBuf inv_freq_;                     // f32 [n_rot/2]
    std::vector<float> inv_freq_host_;
    std::vector<float> route_host_; // [M, E] router logits on the host
    DevBuf attn_part_;                    // attention split-key partials
};

int device_index() {
    const char * e = std::getenv("SHOAL_CUDA_DEVICE");
    return e && *e ? std::atoi(e) : 0;
}

} // namespace

bool cuda_usable(std::string * why) {
    auto no = [&](const std::string & s) {
        if (why) *why = s;
        (void)cudaGetLastError();
        return false;
    };
    int drv = 0, rt = 0;
    cudaDriverGetVersion(&drv);
    cudaRuntimeGetVersion(&rt);
    if (drv == 0) return no("no CUDA driver: libcuda was not found (install the NVIDIA driver, or JetPack on Jetson)");
    int count = 0;
    const cudaError_t e = cudaGetDeviceCount(&count);
    if (e == cudaErrorInsufficientDriver)
        return no("CUDA driver " + std::to_string(drv / 1000) + "." + std::to_string(drv % 1000 / 10) +
                  " is older than this build's runtime " + std::to_string(rt / 1000) + "." + std::to_string(rt % 1000 / 10));
    if (e != cudaSuccess) return no(std::string("no CUDA device: ") + cudaGetErrorName(e) + ": " + cudaGetErrorString(e));
    if (count == 0) return no("no CUDA device: the driver reports 0 devices");
    const int dev = device_index();
    if (dev < 0 || dev >= count)
        return no("no CUDA device: SHOAL_CUDA_DEVICE=" + std::to_string(dev) + " but " + std::to_string(count) + " device(s) present");
    int major = 0, minor = 0;
    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
    cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev);
    const std::string sm = "sm_" + std::to_string(major) + std::to_string(minor);
    if (major < 8) return no("CUDA device " + std::to_string(dev) + " is " + sm + "; the CUDA backend needs sm_80 or newer");
    const cudaError_t pe = cuda::probe_kernel_launch(dev);
    if (pe == cudaErrorNoKernelImageForDevice || pe == cudaErrorInvalidDeviceFunction)
        return no("this build has no kernels for " + sm + " (rebuild with CMAKE_CUDA_ARCHITECTURES including " +
                  std::to_string(major) + std::to_string(minor) + ")");
    if (pe != cudaSuccess) return no(std::string("CUDA device ") + std::to_string(dev) + " unusable: " + cudaGetErrorString(pe));
    return true;
}

BackendCaps cuda_caps() {
    BackendCaps c = cuda_declared_caps(); // backend-choice.cpp: keep it in step with load_linear and the ops
    size_t fr = 0, tot = 0;
    CUDA_CHECK(cudaSetDevice(device_index()));
    CUDA_CHECK(cudaMemGetInfo(&fr, &tot));
    c.memory_bytes = (int64_t)fr;
    return c;
}

std::unique_ptr<Backend> make_cuda_backend() {
    std::string why;
    SHOAL_CHECK(cuda_usable(&why), SHOAL_ERR_BACKEND, "backend 'cuda' is not available: " + why);
    return std::make_unique<CudaBackend>(device_index());
}

} // namespace shoal
