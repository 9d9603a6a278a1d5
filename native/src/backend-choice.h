// backend-choice.h — what each backend can run (a capability table) and the choice
// behind `--backend auto`: the GPU only when every linear's format, every optional
// op and the attention shape of the checkpoint are in its table and the weights fit
// in its free memory; otherwise the CPU, with a note saying why. The table is data,
// so the policy is tested on machines without a GPU by passing a made-up table.
#pragma once
#include "model-source.h"

#include <cstdint>
#include <string>
#include <vector>

namespace shoal {

// One quantized layout a backend runs, with the shape limits of its kernels.
struct QuantCap {
    QFormat fmt = QFormat::None;
    int     bits = 4;
    bool    f16_scales_only = false; // scales must be F16 (not BF16/F32)
    int     k_multiple = 1;          // in_features % k_multiple == 0
    int     group_multiple = 1;      // group % group_multiple == 0, and group divides in_features
    int     n_multiple = 1;          // out_features % n_multiple == 0
};

struct BackendCaps {
    std::string name;                    // "cuda"
    std::vector<QuantCap> quant;         // quantized layouts it runs
    bool    f32 = true, f16 = true, bf16 = true; // unquantized weights (linears, embedding)
    std::vector<std::string> ops;        // optional ops it implements: "head_rmsnorm" (Qwen3), "layernorm",
                                         // "activation" (ReLU/GELU), "learned_positions", "copy_cols" (fused
                                         // qkv), "moe" (routing, gather/scatter), "sliding_window"
    int     max_head_dim = 0;            // attention kernel limit; 0 = none
    int64_t memory_bytes = -1;           // free memory for the weights; -1 = not limited
};

// What the CUDA backend runs (its load_linear and ops), without memory_bytes: declared here,
// beside the rules that read it, so that builds without CUDA test the same table.
BackendCaps cuda_declared_caps();

// The backend's copy of the weights of src, in bytes, as the CUDA backend holds them
// (INT4: 0.5 B per weight + 4 B per (row, group); floats as stored; a tied lm_head once).
int64_t gpu_weight_bytes(const ModelSource & src);

// "" when caps runs everything src needs and its weights fit in caps.memory_bytes
// (with 5 % + 64 MiB left for activations and the KV cache); otherwise the first
// reason, naming the linear, op or size, e.g. "linear 'model.layers.0.self_attn.q_proj'
// is gptq-v2-w4g128, which the cuda backend does not run".
std::string backend_cannot_run(const ModelSource & src, const BackendCaps & caps);

struct BackendChoice {
    std::string name;  // "cpu" | "cuda"
    std::string note;  // why auto chose the CPU ("" when it chose the GPU or the caller named a backend)
};

// requested "auto": gpu (null when no GPU backend is usable, gpu_why then says why) if
// backend_cannot_run is "", else "cpu" with the note. "cpu" / "cuda": as requested
// (the caller reports a GPU that cannot run the checkpoint).
BackendChoice choose_backend(const std::string & requested, const ModelSource & src, const BackendCaps * gpu,
                             const std::string & gpu_why);

} // namespace shoal
