// backend.h — the interface every compute backend implements (CPU now, CUDA
// later). Model code (forward.cpp) calls only these entries and never contains
// an ISA or CUDA #ifdef. A backend owns the memory of its weights, activations
// and KV cache; their layout is its own business.
#pragma once
#include "arch.h"
#include "repack-cache.h"
#include "tensor.h"

#include <cstdint>
#include <memory>
#include <string>

namespace shoal {

// A backend's activation matrix: rows = tokens, cols = features, contiguous.
// dtype is the backend's activation type (CPU: f32; CUDA: f16).
struct Act {
    void *  data = nullptr;
    int64_t rows = 0;
    int64_t cols = 0;
};

// A linear layer prepared (converted or repacked) for one backend.
struct Linear {
    int64_t in = 0, out = 0;
    // Opt-in for the quantizer (ops.matmul 'bf16'): the CPU backend multiplies
    // unquantized f32/f16/bf16 weights with its GEMM on bf16-rounded inputs and
    // f32 sums (kernels.h gemm_bf16), for any number of rows. Quantized weights
    // ignore it; so does the CUDA backend (f32 as before).
    bool bf16_products = false;
    virtual ~Linear() = default;
    // Bytes the backend holds for this layer (and reads per token at batch 1).
    virtual size_t bytes() const = 0;
    virtual const char * kind() const = 0; // "f32" | "f16" | "bf16" | "q4"
};

// Token embedding table [vocab, dim].
struct Embedding {
    int64_t vocab = 0, dim = 0;
    virtual ~Embedding() = default;
    virtual size_t bytes() const = 0;
};

// A per-feature vector (RMSNorm gains), always f32 on the host side of the load.
struct Vec {
    int64_t n = 0;
    virtual ~Vec() = default;
};

// Element type of a KV cache: f32, f16, or int8 with one f32 scale per
// (position, KV head) ("q8"). The CPU backend holds all three; CUDA holds f16.
enum class KvType : uint8_t { F32 = 0, F16 = 1, Q8 = 2 };
const char * kv_type_name(KvType t); // "f32" | "f16" | "q8"
// Parses "f32" | "f16" | "q8"; false for anything else.
bool parse_kv_type(const std::string & s, KvType * out);

// KV cache for all layers: K and V of every position of every layer, in the
// backend's own layout and element type. Full attention: n_slots = n_ctx, one
// slot per position. Sliding window W (Mistral): a ring of n_slots ≥ W +
// max_rows − 1 slots (every key a chunk of max_rows queries can see), position p
// in slot p mod n_slots: memory is bounded by the window, not the context.
struct KvCache {
    int n_layers = 0, n_ctx = 0, kv_dim = 0, head_dim = 0;
    KvType type = KvType::F32;
    int window = 0;                  // 0: full attention
    int n_slots = 0;                 // positions held; == n_ctx unless a ring
    bool ring() const { return n_slots < n_ctx; }
    virtual ~KvCache() = default;
    virtual size_t bytes() const = 0;
};

struct RopeParams {
    int          head_dim = 0;
    int          n_rot = 0;          // rotated dims (== head_dim for LLaMA)
    const float * inv_freq = nullptr; // [n_rot/2], scaling (linear, llama3) already applied
    float        attn_factor = 1.0f;  // multiplies cos/sin (yarn-style; 1 for llama)
};

class Backend {
public:
    virtual ~Backend() = default;
    virtual const char * name() const = 0;      // "cpu" | "cuda"
    virtual const char * isa() const = 0;       // kernels in use, e.g. "avx512"
    virtual int n_threads() const = 0;
    // Arithmetic of the quantized linears (Precision): "fast" | "exact".
    virtual const char * precision() const { return "fast"; }
    // Whether Linear::bf16_products runs on native bf16 dot products (else an
    // emulation with the same results, or ignored: CUDA).
    virtual bool bf16_native() const { return false; }

    // ---- weights (the source views point into the mapped checkpoint) -------
    virtual std::unique_ptr<Linear>    load_linear(const LinearSource & src) = 0;
    virtual std::unique_ptr<Embedding> load_embedding(const TensorView & w) = 0; // [vocab, dim]
    virtual std::unique_ptr<Vec>       load_vec(const TensorView & w) = 0;       // [n]
    // A float linear (F32/F16/BF16, no bias) stored as symmetric int8 with one
    // scale per output row, for the output matrix (half the bytes of f16 per
    // decode step). nullptr when the backend has no such layout or the shape
    // does not fit it; the caller then keeps load_linear's.
    virtual std::unique_ptr<Linear> load_linear_int8(const LinearSource & src) { (void)src; return nullptr; }
    // Repack cache (repack-cache.h): a linear the backend can serve straight from a
    // mapped file of its repacked layout (CPU: INT4). write_cached repacks src and
    // appends it to the file; load_cached builds the linear over the mapped entry
    // (nullptr when the entry does not fit src: the caller rebuilds the file). By
    // default nothing is cacheable and experts are loaded with load_linear.
    virtual bool cacheable(const LinearSource & src) const { (void)src; return false; }
    virtual void write_cached(const LinearSource & src, RepackCacheWriter & w) { (void)src; (void)w; }
    virtual std::unique_ptr<Linear> load_cached(const LinearSource & src, const RepackCache::Entry & e,
                                                std::shared_ptr<const RepackCache> keep) {
        (void)src; (void)e; (void)keep;
        return nullptr;
    }

    // ---- memory ------------------------------------------------------------
    // true: an Act is plain host f32 memory, data [rows, cols] row-major, so a
    // caller may wrap its own buffers as {data, rows, cols} and pass them to the
    // ops instead of copying through new_act / from_host / to_host (CPU).
    virtual bool host_acts() const { return false; }
    // Allocates an activation matrix [rows, cols]; free with free_act.
    virtual Act  new_act(int64_t rows, int64_t cols) = 0;
    virtual void free_act(Act & a) = 0;
    // A cache of n_ctx positions × kv_dim (= n_kv_heads · head_dim) per layer.
    // Throws SHOAL_ERR_INVALID_ARG for a type the backend does not hold. window > 0:
    // sliding-window attention over the last `window` positions, in a ring when that
    // is smaller than n_ctx (max_rows: the most query rows one attention call gets,
    // the prefill chunk).
    virtual std::unique_ptr<KvCache> new_kv_cache(int n_layers, int n_ctx, int kv_dim, int head_dim, KvType type,
                                                  int window = 0, int max_rows = 1) = 0;
    // Copies rows [row0, row0+n) of a to host f32 memory dst [n, cols].
    virtual void to_host(const Act & a, int64_t row0, int64_t n, float * dst) = 0;
    // Copies host f32 [rows, cols] into a (same shape).
    virtual void from_host(Act & a, const float * src) = 0;
    // Copies rows [row0, row0+n) of src into the first n rows of dst (same
    // cols), on the device: no host round trip.
    virtual void copy_rows(const Act & src, int64_t row0, int64_t n, Act & dst) = 0;

    // ---- ops: each works on the first x.rows rows ---------------------------
    // out[m, :] = table[tokens[m], :]
    virtual void embed(const Embedding & table, const int32_t * tokens, int64_t n, Act & out) = 0;
    // out = x / rms(x) * w, per row
    virtual void rmsnorm(const Act & x, const Vec & w, float eps, Act & out) = 0;
    // Qwen3 q/k norm: x [M, n_heads·hd] in place, each head's hd values divided by their
    // rms and multiplied by w [hd] (the same gains for every head).
    virtual void head_rmsnorm(Act & x, const Vec & w, int n_heads, float eps) = 0;
    // y[M, N] = x[M, K] · Wᵀ (+ bias)
    virtual void matmul(const Linear & w, const Act & x, Act & y) = 0;
    // ys[i] = x · ws[i]ᵀ for n linears that read the same input (q/k/v,
    // gate/up). A backend may run them as one pass (CPU decode: x quantized
    // once, one fork/join over the rows of all of them); by default, one by one.
    virtual void matmul_shared(const Linear * const * ws, Act * const * ys, int n, const Act & x) {
        for (int i = 0; i < n; i++) matmul(*ws[i], x, *ys[i]);
    }
    // Rotates q [M, n_heads*head_dim] and k [M, n_kv_heads*head_dim] in place
    // (HF rotate_half layout: pairs (i, i + n_rot/2)); row m is at position pos0 + m.
    virtual void rope(Act & q, Act & k, int n_heads, int n_kv_heads, int pos0, const RopeParams & p) = 0;
    // Writes k, v rows [M, kv_dim] into the cache at positions pos0..pos0+M-1 of layer.
    virtual void kv_store(KvCache & kv, int layer, int pos0, const Act & k, const Act & v) = 0;
    // Causal attention: query row m (position pos0 + m) attends to cache
    // positions 0..pos0+m of layer (sliding window W: max(0, pos0+m−W+1)..pos0+m). q, out: [M, n_heads*head_dim]. GQA: query
    // head h reads kv head h / (n_heads / n_kv_heads).
    virtual void attention(const Act & q, const KvCache & kv, int layer, int pos0,
                           int n_heads, int n_kv_heads, int head_dim, float scale, Act & out) = 0;
    // gate = silu(gate) * up
    virtual void silu_mul(Act & gate, const Act & up) = 0;
    // x += y
    virtual void add(Act & x, const Act & y) = 0;

    // ---- ops of the other families (arch.h) ---------------------------------
    // out = (x − mean(x)) / sqrt(var(x) + eps) · w + b, per row (OPT, GPTBigCode)
    virtual void layernorm(const Act & x, const Vec & w, const Vec & b, float eps, Act & out) = 0;
    // x = act(x) element-wise: ReLU, GELU (erf) or GELU (tanh approximation); not Silu
    virtual void activation(Act & x, ActKind kind) = 0;
    // Learned positions: x[m, :] += table[pos0 + offset + m, :]
    virtual void add_positions(Act & x, const Embedding & table, int pos0, int offset) = 0;
    // dst[m, :] = src[m, col0 .. col0 + dst.cols) for the first dst.rows rows (a fused
    // projection's q / k / v parts)
    virtual void copy_cols(const Act & src, int64_t col0, Act & dst) = 0;
    // MoE router: logits [M, E] → for each row the k experts of largest probability
    // (softmax over all E), ids [M·k] and weights [M·k] on the host, by decreasing
    // weight; renorm: the k weights divided by their sum (Mixtral's softmax over the
    // selected logits; Qwen3-MoE norm_topk_prob).
    virtual void route_topk(const Act & logits, int k, bool renorm, int32_t * ids, float * weights) = 0;
    // dst[i, :] = src[rows[i], :] for i < n (the tokens routed to one expert)
    virtual void gather_rows(const Act & src, const int32_t * rows, int64_t n, Act & dst) = 0;
    // dst[rows[i], :] += w[i] · src[i, :] for i < n (rows distinct)
    virtual void scatter_add_rows(Act & dst, const int32_t * rows, const float * w, int64_t n, const Act & src) = 0;

    // Weight bytes the matmuls have read since the backend was made (each call
    // counts its linear's bytes() once: at decode every weight is read once).
    uint64_t weight_bytes_read = 0;
};

// Arithmetic of the CPU backend's quantized (2/3/4/8-bit) linears; float weights and
// every other op are the same in both.
//   Fast (default): the kernels of the fast layouts (kernels.h Q4Rows / QxRows): f16
//     s and f16 −s·z per group, activations quantized to int8 per 32-block for decode
//     and INT4 prefill.
//   Exact: for verification against a float64 forward of the dequantized weights
//     (docs/engine.md): f32 s and z, w = (q − z)·s rounded once to f32, f32
//     activations (kernels.h ExactRows: the exact_* entries of the kernel table).
enum class Precision : uint8_t { Fast = 0, Exact = 1 };
const char * precision_name(Precision p); // "fast" | "exact"
// Parses "fast" | "exact"; false for anything else.
bool parse_precision(const std::string & s, Precision * out);

// Creates the CPU backend. isa: "auto" or a name from cpu_isas(); n_threads 0 = all cores.
std::unique_ptr<Backend> make_cpu_backend(const std::string & isa, int n_threads, Precision precision = Precision::Fast);
// Space-separated ISAs whose kernels are compiled in and supported by this CPU, best last.
std::string cpu_isas();

// Creates a backend by name (backend-registry.cpp): "cpu"; "cuda" (throws
// SHOAL_ERR_BACKEND saying why when CUDA is not compiled in, or there is no
// driver, no device or no kernels for it); "auto": CUDA when a usable GPU is
// present, else the CPU. isa and n_threads configure the CPU backend.
// precision Exact: the CPU only (SHOAL_ERR_BACKEND for "cuda"; "auto" takes the CPU).
std::unique_ptr<Backend> make_backend(const std::string & name, const std::string & isa, int n_threads,
                                      Precision precision = Precision::Fast);
// Whether the CUDA backend is compiled in and usable here; otherwise why not.
bool cuda_backend_usable(std::string * why);
struct BackendCaps; // backend-choice.h
// The GPU backend's capability table (its free memory measured now) when one is compiled
// in and usable; otherwise false with the reason in *why ("" in a build without CUDA).
bool gpu_backend_caps(BackendCaps * caps, std::string * why);

} // namespace shoal
