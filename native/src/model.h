// model.h — a loaded model: config, backend and the backend's copy of every
// weight. Sessions (KV cache + scratch) live in session.h.
#pragma once
#include "backend.h"
#include "model-source.h"

#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace shoal {

// lm_head "auto" holds the output matrix in int8 from this many weights on (8 MiB
// in f16): bigger than the L2 of any CPU this runs on, so decode streams it from
// DRAM every token and int8 halves that. Below it the matrix stays in cache and
// int8 would only add rounding: on the 64-wide stories260K (32,768 weights) INT4
// AWQ demo model it turned one greedy story of `make demo` into a repetition.
constexpr int64_t kAutoInt8HeadWeights = int64_t(1) << 22;

struct ExpertWeights {
    std::unique_ptr<Linear> gate, up, down;     // gate/up [Fe ← D], down [D ← Fe]
};

// Which pointers are set follows the architecture (arch.h): the forward pass
// reads only those its description names.
struct LayerWeights {
    std::unique_ptr<Vec>    attn_norm;          // [D]
    std::unique_ptr<Vec>    attn_norm_b;        // [D] LayerNorm bias
    std::unique_ptr<Linear> q, k, v, o;         // q [H*hd ← D], k/v [Hkv*hd ← D], o [D ← H*hd]
    std::unique_ptr<Linear> qkv;                // fused [(H + 2·Hkv)·hd ← D] (GPTBigCode c_attn)
    std::unique_ptr<Vec>    q_norm, k_norm;     // [hd] each, Qwen3 only
    std::unique_ptr<Vec>    ffn_norm;           // [D]
    std::unique_ptr<Vec>    ffn_norm_b;         // [D] LayerNorm bias
    std::unique_ptr<Linear> gate, up, down;     // gate/up [F ← D], down [D ← F]; ungated: up = fc1, down = fc2
    std::unique_ptr<Linear> router;             // MoE [E ← D]
    std::vector<ExpertWeights> experts;         // MoE [E]
};

struct Model {
    ModelConfig cfg;
    std::unique_ptr<Backend> backend;
    std::unique_ptr<Embedding> embed;           // [V, D]
    std::vector<LayerWeights> layers;
    std::unique_ptr<Embedding> pos_embed;       // [P, D] learned positions
    std::unique_ptr<Vec>    final_norm;         // [D] (none: OPT post-norm)
    std::unique_ptr<Vec>    final_norm_b;       // [D] LayerNorm bias
    std::unique_ptr<Linear> lm_head;            // [V ← D]
    std::vector<float>      inv_freq;           // [n_rot/2], rope scaling applied
    RopeParams              rope;
    std::vector<std::shared_ptr<MappedFile>> files; // mappings the weights may point into

    // Reported by shoal_model_get_info.
    std::string quant_name = "none";
    std::string dtype_name = "f32";
    std::string backend_note;                   // why `auto` chose the CPU over a GPU, or ""

    int64_t n_params = 0, file_bytes = 0, weight_bytes = 0, bytes_per_token = 0;
    int64_t n_active_params = 0;                // per token: MoE layers count top_k of E experts
    KvType  kv_type = KvType::F16;       // sessions' KV cache element type
    int64_t kv_bytes_per_position = 0;   // K and V, all layers
    double  load_seconds = 0, repack_seconds = 0;
    // "off" | "created" | "reused" | "rebuilt (<why>)" | "off: <why>" (shoal_model_info.expert_cache)
    std::string expert_cache_state = "off";

    // The backend's thread pool and scratch are shared: one forward pass at a time.
    std::mutex compute_mutex;
};

// Load-time choices (shoal_model_params).
struct LoadOptions {
    KvType kv_type = KvType::F16; // element type of the sessions' KV caches
    bool   lm_head_q8 = false;    // a float output matrix as int8 with per-row/group scales (else as stored)
    // MoE: a file of the experts' repacked weights (repack-cache.h), mapped read-only so that
    // experts are resident only once routed; built on the first load. Empty: experts in memory.
    std::string expert_cache;
};

// Builds a Model from a validated checkpoint on the chosen backend.
std::unique_ptr<Model> build_model(ModelSource && src, std::unique_ptr<Backend> backend, const LoadOptions & opt = {});

// RoPE inverse frequencies [head_dim/2] for a config (none | linear | llama3).
std::vector<float> rope_inv_freq(const ModelConfig & cfg);

} // namespace shoal
