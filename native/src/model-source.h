// model-source.h — a Hugging Face checkpoint directory, parsed and validated:
// the config and a view of every tensor the architecture needs. Nothing is
// converted here; the backend decides how to hold the weights.
#pragma once
#include "arch.h"
#include "tensor.h"

#include <memory>
#include <string>
#include <vector>

namespace shoal {

enum class RopeScaling { None, Linear, Llama3 };
enum class QuantMethod { None, Awq, Gptq, EfficientQat, CompressedTensors };

// One compressed-tensors config group (quantization_config.config_groups), weight-only
// int, format pack-quantized. docs/formats.md has the layout and the matching rules.
struct CtScheme {
    std::string name;                    // the group's key, e.g. "group_0" or "W4A16"
    std::vector<std::string> targets;    // module names, "re:" patterns, or the class "Linear"
    int  bits = 0;                       // 4 or 8
    bool channel = false;                // strategy channel (one scale per output row) or group
    int  group_size = 0;                 // strategy group: inputs per scale (> 0)
    bool symmetric = true;               // false: packed weight_zero_point
    bool actorder_group = false;         // actorder group/dynamic: weight_g_idx is saved
};

struct ModelConfig {
    std::string arch;                // architectures[0]
    const ArchDesc * desc = nullptr; // its row of the architecture table (arch.h)
    int     hidden_size = 0;         // D
    int     intermediate_size = 0;   // F
    int     n_layers = 0;
    int     n_heads = 0;             // H
    int     n_kv_heads = 0;          // Hkv (defaults to H)
    int     head_dim = 0;            // from config or D / H
    int     vocab_size = 0;          // V
    int     max_position_embeddings = 0;
    float   rms_norm_eps = 1e-6f;            // the eps of every norm (LayerNorm families: layer_norm_eps)
    ActKind act = ActKind::Silu;             // hidden_act / activation_function
    bool    norm_before = true;              // pre-norm blocks (OPT do_layer_norm_before false: post-norm)
    bool    final_norm = true;               // a norm before lm_head (OPT post-norm has none)
    int     sliding_window = 0;              // Mistral/Mixtral: attend to the last W positions (0: all)
    // MoE (desc->ffn == Moe): E experts of width moe_intermediate_size, top_k routed per token
    int     n_experts = 0;
    int     n_experts_used = 0;              // num_experts_per_tok
    int     moe_intermediate_size = 0;       // Mixtral: intermediate_size
    bool    norm_topk_prob = true;           // renormalise the selected probabilities (Mixtral always)
    std::vector<uint8_t> moe_layers;         // [n_layers] 1 where the layer routes (Qwen3-MoE mlp_only_layers, decoder_sparse_step)
    bool    is_moe_layer(int l) const { return l >= 0 && l < (int)moe_layers.size() && moe_layers[(size_t)l]; }
    float   rope_theta = 10000.0f;
    RopeScaling rope_scaling = RopeScaling::None;
    float   rope_factor = 1.0f;                  // linear and llama3
    float   rope_low_freq_factor = 1.0f;         // llama3
    float   rope_high_freq_factor = 4.0f;        // llama3
    int     rope_original_max_position = 8192;   // llama3
    bool    tie_word_embeddings = false;
    bool    qkv_bias = false;                    // Qwen2 (always), Llama with attention_bias
    bool    o_bias = false;                      // Llama/Mistral attention_bias: o_proj has a bias too
    bool    mlp_bias = false;                    // Llama mlp_bias: gate/up/down have biases
    bool    qk_norm = false;                     // Qwen3: RMSNorm over each head of q and k before RoPE
    int     bos_token_id = -1;
    std::vector<int> eos_token_ids;              // generation_config.json first, then config.json
    std::string torch_dtype;                     // informational
    // quantization_config
    QuantMethod quant = QuantMethod::None;
    int     quant_bits = 0;
    int     group_size = 0;              // -1 (GPTQ): one group over all inputs
    QFormat quant_format = QFormat::None; // on-disk layout of the quantized linears
    bool    gptq_sym = true;              // informational (zeros are always read from qzeros)
    bool    desc_act = false;             // GPTQ act-order: g_idx permutes the groups
    int     zero_offset = 0;              // 1 for GPTQ checkpoint_format "gptq" (zeros stored − 1)
    std::vector<std::string> modules_to_not_convert; // substring match on linear names
    // compressed-tensors (quant == CompressedTensors): the weight schemes and the ignore list
    std::vector<CtScheme> ct_schemes;
    std::vector<std::string> ct_ignore;          // module names or "re:" patterns (Python re.match)
};

struct ExpertSource {
    LinearSource gate, up, down;     // gate/up [Fe, D], down [D, Fe]
};

struct LayerSource {
    TensorView   attn_norm;          // [D]
    TensorView   attn_norm_b;        // [D] LayerNorm bias (NormKind::Layer)
    LinearSource q, k, v, o;         // q [H*hd, D], k/v [Hkv*hd, D], o [D, H*hd]
    LinearSource qkv;                // fused [H*hd + 2*Hkv*hd, D] (QkvKind::Fused; q/k/v unused)
    TensorView   q_norm, k_norm;     // [hd] each, Qwen3 only (cfg.qk_norm)
    TensorView   ffn_norm;           // [D]
    TensorView   ffn_norm_b;         // [D] LayerNorm bias
    LinearSource gate, up, down;     // gate/up [F, D], down [D, F]; ungated MLPs: up = fc1, down = fc2
    LinearSource router;             // MoE: [E, D]
    std::vector<ExpertSource> experts; // MoE: [E]
};

struct MappedFile; // defined in safetensors.h

struct ModelSource {
    ModelConfig cfg;
    TensorView  embed;               // [V, D]
    TensorView  final_norm;          // [D]
    TensorView  final_norm_b;        // [D] LayerNorm bias
    TensorView  pos_embed;           // [P, D] learned positions (PosKind::Learned)
    LinearSource lm_head;            // [V, D]; the embedding view when tied
    std::vector<LayerSource> layers;
    int64_t     n_params = 0;        // logical parameter count (INT4 weights counted unpacked)
    int64_t     file_bytes = 0;      // bytes of tensor data across all files
    std::vector<std::shared_ptr<MappedFile>> files; // keep the mappings alive
};

// Reads and validates config.json, generation_config.json and the safetensors
// files of dir. Throws shoal::Error with a status and a message naming the file
// or tensor on any problem.
ModelSource load_model_source(const std::string & dir);

// Parses a config.json text (exposed for tests). gen_json may be empty.
// where names the model (its directory) in messages.
ModelConfig parse_model_config(const std::string & config_json, const std::string & gen_json,
                               const std::string & where);

// Applies a quantization sidecar to cfg when config.json has no
// quantization_config: quantize_config.json (AutoGPTQ / GPTQModel) or
// shoal-quant.json (EfficientQAT native checkpoints, which carry no metadata:
// {"quant_method": "efficientqat", "bits": 2, "group_size": 64}). path names
// the file in messages.
void apply_quant_sidecar(ModelConfig & cfg, const std::string & json_text, const std::string & path);

namespace json { struct Value; }
// quantization_config with quant_method "compressed-tensors" → cfg.ct_schemes / ct_ignore
// (compressed-tensors.cpp). where names config.json in messages.
void parse_compressed_tensors(const json::Value & q, ModelConfig & cfg, const std::string & where);

// The compressed-tensors scheme that quantizes the linear module `name`, or null when
// no target matches or `ignore` does, resolved as compressed-tensors does: an exact
// name beats a "re:" pattern (the alphabetically first matching pattern wins), which
// beats the class target "Linear"; a target listed by several groups belongs to the
// last. Throws SHOAL_ERR_QUANT_METADATA for a pattern std::regex cannot compile.
const CtScheme * ct_scheme_for(const ModelConfig & cfg, const std::string & name);

// Short name of cfg's quantization for model info: "none", "awq-w4g128",
// "awq-gemv-w4g128", "gptq-w3g128", "gptq-w4g-1", "eqat-w2g64", ...
std::string quant_name(const ModelConfig & cfg);

struct SafetensorsFile; // safetensors.h

// Builds the views of every tensor cfg needs from already parsed safetensors
// files (a tensor is taken from the first file holding it) and validates their
// shapes and dtypes. The result does not own the files. Exposed for the fuzzer;
// load_model_source uses it.
ModelSource build_model_source(const ModelConfig & cfg, const std::vector<const SafetensorsFile *> & files);

// Tells the OS that the pages fully inside [p, p+n) of a read-only file mapping
// are no longer needed (after repacking), so they leave the resident set.
void release_pages(const void * p, size_t n);

} // namespace shoal
