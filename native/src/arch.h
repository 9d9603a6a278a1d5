// arch.h — architectures as data. Every supported Hugging Face architecture is
// one row of a table (arch.cpp): which norm and where, which activation, which
// positions, how attention and the MLP are laid out, and the tensor names. The
// loader (model-source.cpp) reads the names, the one forward pass (forward.cpp)
// reads the kinds; adding a family is a row plus whatever op is truly new.
#pragma once

namespace shoal {

enum class NormKind { Rms, Layer };              // RMSNorm(w) | LayerNorm(w, b)
enum class ActKind { Silu, GeluErf, GeluTanh, Relu }; // activation of the MLP
enum class PosKind { Rope, Learned };            // rotary | a learned table added to the embedding
enum class QkvKind { Split, Fused };             // q/k/v projections | one [q; k; v] projection
enum class FfnKind { Dense, Moe };               // one MLP | routed experts

// One family. Fields a config.json can change (biases, pre/post norm, the
// sliding window, expert counts) live in ModelConfig; these are fixed per family.
struct ArchDesc {
    const char * hf_arch;          // architectures[0], e.g. "MixtralForCausalLM"
    const char * family;           // short name for model info: "llama", "mixtral", "opt", ...
    NormKind norm;
    bool     gated;                // SwiGLU-style act(gate)·up, or up → act → down
    ActKind  act;                  // default activation (config may name another of the same family)
    PosKind  pos;
    int      pos_offset;           // learned positions: row pos + offset (OPT: 2)
    QkvKind  qkv;
    bool     qk_norm;              // per-head RMSNorm of q and k before RoPE (Qwen3)
    FfnKind  ffn;
    bool     tie_default;          // tie_word_embeddings when config.json does not say

    // Tensor names; "%d" is the layer, "%e" the expert. Empty: the family has none.
    const char * embed;            // token embedding [V, D]
    const char * pos_embed;        // learned positions [P, D]
    const char * final_norm;       // final norm (".weight" / ".bias" appended)
    const char * lm_head;          // [V, D]
    const char * attn_norm;        // per layer, before (or after, post-norm) attention
    const char * q, * k, * v;      // split projections
    const char * qkv_fused;        // fused projection [H·hd + 2·Hkv·hd, D]
    const char * o;                // output projection
    const char * q_norm, * k_norm; // per-head norms [hd]
    const char * ffn_norm;         // before (or after) the MLP
    const char * gate, * up, * down; // dense MLP (ungated: up = fc1/c_fc, down = fc2/c_proj)
    const char * router;           // MoE router [E, D]
    const char * e_gate, * e_up, * e_down; // expert e of layer d
};

// The row for an architectures[0] name, or nullptr.
const ArchDesc * find_arch(const char * hf_arch);
// Comma-separated list of supported architectures (for error messages).
const char * supported_archs();

} // namespace shoal
