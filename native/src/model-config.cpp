// model-config.cpp — config.json (+ generation_config.json) of a LLaMA-family
// model into a ModelConfig. Numbers are bounded so that later products
// (heads × head_dim, vocab × hidden) stay far from overflow.
#include "error.h"
#include "json.h"
#include "model-source.h"

#include <algorithm>
#include <cctype>
#include <cmath>

namespace shoal {

namespace {

struct Reader {
    const json::Value & root;
    std::string where; // "<dir>/config.json"

    [[noreturn]] void bad(const std::string & what, shoal_status s = SHOAL_ERR_CONFIG) const { fail(s, where + ": " + what); }

    // member or nullptr; JSON null counts as absent
    const json::Value * opt(const json::Value & obj, const char * key) const {
        const json::Value * v = obj.get(key);
        return v && !v->is_null() ? v : nullptr;
    }

    int64_t int_in(const json::Value & v, const std::string & key, int64_t lo, int64_t hi) const {
        if (!v.is_number() || !v.is_int) bad(key + " must be an integer");
        if (v.integer < lo || v.integer > hi) {
            bad(key + " is " + std::to_string(v.integer) + ", expected " + std::to_string(lo) + ".." + std::to_string(hi));
        }
        return v.integer;
    }

    int required_int(const char * key, int64_t hi) const {
        const json::Value * v = opt(root, key);
        if (!v) bad(std::string("missing required key \"") + key + "\"");
        return int(int_in(*v, key, 1, hi));
    }

    // The first of several names a family may use for one setting (GPTBigCode: n_embd).
    int required_int_any(std::initializer_list<const char *> keys, int64_t hi) const {
        for (const char * k : keys)
            if (opt(root, k)) return required_int(k, hi);
        return required_int(*keys.begin(), hi);
    }

    double positive(const json::Value & v, const std::string & key) const {
        if (!v.is_number() || !(v.number > 0.0) || !std::isfinite(v.number)) bad(key + " must be a positive number");
        return v.number;
    }

    bool boolean(const json::Value & v, const std::string & key) const {
        if (!v.is_bool()) bad(key + " must be true or false");
        return v.boolean;
    }

    const std::string & string(const json::Value & v, const std::string & key) const {
        if (!v.is_string()) bad(key + " must be a string");
        return v.str;
    }
};

void parse_rope_scaling(const Reader & r, const json::Value & rs, ModelConfig & c) {
    if (!rs.is_object()) r.bad("rope_scaling must be null or an object");
    const json::Value * t = r.opt(rs, "rope_type");
    if (!t) t = r.opt(rs, "type");
    if (!t) r.bad("rope_scaling has no \"rope_type\" or \"type\"");
    const std::string & type = r.string(*t, "rope_scaling.rope_type");
    auto num = [&](const char * k) -> double {
        const json::Value * v = r.opt(rs, k);
        if (!v) r.bad(std::string("rope_scaling of type ") + type + " needs \"" + k + "\"");
        return r.positive(*v, std::string("rope_scaling.") + k);
    };
    if (type == "default") {
        c.rope_scaling = RopeScaling::None;
    } else if (type == "linear") {
        c.rope_scaling = RopeScaling::Linear;
        c.rope_factor = float(num("factor"));
    } else if (type == "llama3") {
        c.rope_scaling = RopeScaling::Llama3;
        c.rope_factor = float(num("factor"));
        c.rope_low_freq_factor = float(num("low_freq_factor"));
        c.rope_high_freq_factor = float(num("high_freq_factor"));
        const json::Value * om = r.opt(rs, "original_max_position_embeddings");
        if (!om) r.bad("rope_scaling of type llama3 needs \"original_max_position_embeddings\"");
        c.rope_original_max_position = int(r.int_in(*om, "rope_scaling.original_max_position_embeddings", 1, 1 << 26));
        // the smoothing between the two wavelengths divides by (high - low)
        if (!(c.rope_high_freq_factor > c.rope_low_freq_factor)) r.bad("rope_scaling.high_freq_factor must exceed low_freq_factor");
    } else {
        r.bad("unsupported rope_scaling type \"" + json::printable(type) + "\" (supported: linear, llama3)");
    }
}

// eos_token_id: an int or an array of ints
std::vector<int> parse_eos(const Reader & r, const json::Value & v, int vocab) {
    std::vector<int> ids;
    if (v.is_array()) {
        if (v.items.size() > 64) r.bad("eos_token_id has more than 64 entries");
        for (const json::Value & e : v.items) ids.push_back(int(r.int_in(e, "eos_token_id", 0, vocab - 1)));
    } else {
        ids.push_back(int(r.int_in(v, "eos_token_id", 0, vocab - 1)));
    }
    return ids;
}

int parse_group_size(const Reader & r, const json::Value & q, int dflt, bool allow_minus_one) {
    const json::Value * g = r.opt(q, "group_size");
    if (!g) return dflt;
    if (!g->is_number() || !g->is_int) r.bad("quantization_config.group_size must be an integer");
    if (allow_minus_one && g->integer == -1) return -1;
    if (g->integer <= 0) {
        r.bad("group_size " + std::to_string(g->integer) + " is not supported (per-channel or invalid), "
              "a positive group size is required", SHOAL_ERR_UNSUPPORTED_QUANT);
    }
    if (g->integer > (1 << 20)) r.bad("group_size " + std::to_string(g->integer) + " is too large", SHOAL_ERR_UNSUPPORTED_QUANT);
    return int(g->integer);
}

std::string lowercase(std::string s) {
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char ch) { return char(std::tolower(ch)); });
    return s;
}

// AutoAWQ: bits 4, zero_point, version gemm | gemv | gemv_fast.
void parse_awq(const Reader & r, const json::Value & q, ModelConfig & c) {
    c.quant = QuantMethod::Awq;
    // AutoAWQ defaults: bits 4, zero_point true, group_size 128, version gemm
    c.quant_bits = 4;
    if (const json::Value * b = r.opt(q, "bits")) {
        c.quant_bits = int(r.int_in(*b, "quantization_config.bits", -1024, 1024));
        if (c.quant_bits != 4) {
            r.bad("bits " + std::to_string(c.quant_bits) + " is not supported, only 4 for AWQ", SHOAL_ERR_UNSUPPORTED_QUANT);
        }
    }
    if (const json::Value * z = r.opt(q, "zero_point")) {
        if (!r.boolean(*z, "quantization_config.zero_point")) {
            r.bad("AWQ without zero_point is not supported", SHOAL_ERR_UNSUPPORTED_QUANT);
        }
    }
    std::string version = "gemm";
    if (const json::Value * v = r.opt(q, "version")) version = r.string(*v, "quantization_config.version");
    const std::string lower = lowercase(version);
    if (lower == "gemm") c.quant_format = QFormat::AwqGemm;
    else if (lower == "gemv") c.quant_format = QFormat::AwqGemv;
    else if (lower == "gemv_fast") c.quant_format = QFormat::AwqGemvFast;
    else {
        r.bad("AWQ version \"" + json::printable(version) + "\" is not supported (gemm, gemv, gemv_fast)", SHOAL_ERR_UNSUPPORTED_QUANT);
    }
    c.group_size = parse_group_size(r, q, 128, false);
}

int parse_bits(const Reader & r, const json::Value & q, const char * what) {
    const json::Value * b = r.opt(q, "bits");
    if (!b) r.bad(std::string(what) + " quantization needs \"bits\"", SHOAL_ERR_UNSUPPORTED_QUANT);
    const int bits = int(r.int_in(*b, "quantization_config.bits", -1024, 1024));
    if (bits != 2 && bits != 3 && bits != 4 && bits != 8) {
        r.bad("bits " + std::to_string(bits) + " is not supported for " + what + " (2, 3, 4 or 8)", SHOAL_ERR_UNSUPPORTED_QUANT);
    }
    return bits;
}

// AutoGPTQ / GPTQModel (also EfficientQAT's GPTQ exports, checkpoint_format gptq_v2).
void parse_gptq(const Reader & r, const json::Value & q, ModelConfig & c) {
    c.quant = QuantMethod::Gptq;
    c.quant_format = QFormat::Gptq;
    c.quant_bits = parse_bits(r, q, "GPTQ");
    c.group_size = parse_group_size(r, q, 128, true);
    if (const json::Value * v = r.opt(q, "sym")) c.gptq_sym = r.boolean(*v, "quantization_config.sym");
    if (const json::Value * v = r.opt(q, "desc_act")) c.desc_act = r.boolean(*v, "quantization_config.desc_act");
    std::string fmt = "gptq";
    const json::Value * f = r.opt(q, "checkpoint_format");
    if (!f) f = r.opt(q, "format"); // older GPTQModel
    if (f) fmt = lowercase(r.string(*f, "quantization_config.checkpoint_format"));
    if (fmt == "gptq") c.zero_offset = 1;
    else if (fmt == "gptq_v2") c.zero_offset = 0;
    else {
        r.bad("GPTQ checkpoint_format \"" + json::printable(fmt) + "\" is not supported (gptq, gptq_v2)", SHOAL_ERR_UNSUPPORTED_QUANT);
    }
}

// EfficientQAT native checkpoints (shoal-quant.json sidecar).
void parse_eqat(const Reader & r, const json::Value & q, ModelConfig & c) {
    c.quant = QuantMethod::EfficientQat;
    c.quant_format = QFormat::EqatNative;
    c.quant_bits = parse_bits(r, q, "EfficientQAT");
    c.group_size = parse_group_size(r, q, 128, true);
}

void parse_quant(const Reader & r, const json::Value & q, ModelConfig & c) {
    if (!q.is_object()) r.bad("quantization_config must be an object");
    const json::Value * m = r.opt(q, "quant_method");
    if (!m) r.bad("quantization_config has no quant_method", SHOAL_ERR_UNSUPPORTED_QUANT);
    const std::string & method = r.string(*m, "quantization_config.quant_method");
    const std::string lower = lowercase(method);
    if (lower == "awq") parse_awq(r, q, c);
    else if (lower == "gptq") parse_gptq(r, q, c);
    else if (lower == "efficientqat" || lower == "eqat") parse_eqat(r, q, c);
    else if (lower == "compressed-tensors") {
        parse_compressed_tensors(q, c, r.where);
        return; // its own ignore list; modules_to_not_convert is AutoAWQ's
    } else {
        r.bad("quantization method \"" + json::printable(method) + "\" is not supported (awq, gptq, efficientqat, compressed-tensors)",
              SHOAL_ERR_UNSUPPORTED_QUANT);
    }
    if (const json::Value * mn = r.opt(q, "modules_to_not_convert")) {
        if (!mn->is_array()) r.bad("quantization_config.modules_to_not_convert must be null or an array of strings");
        for (const json::Value & s : mn->items) {
            c.modules_to_not_convert.push_back(r.string(s, "quantization_config.modules_to_not_convert[]"));
        }
    }
}

} // namespace

ModelConfig parse_model_config(const std::string & config_json, const std::string & gen_json, const std::string & where) {
    const std::string cfg_where = where + "/config.json";
    json::Limits lim;
    lim.max_bytes = size_t(16) << 20;
    json::Value root = json::parse(config_json.data(), config_json.size(), SHOAL_ERR_CONFIG, cfg_where, lim);
    Reader r{root, cfg_where};
    if (!root.is_object()) r.bad("the top level is not a JSON object");

    ModelConfig c;
    const json::Value * archs = r.opt(root, "architectures");
    if (!archs || !archs->is_array() || archs->items.empty() || !archs->items[0].is_string()) {
        r.bad("\"architectures\" must be a non-empty array of strings");
    }
    c.arch = archs->items[0].str;
    c.desc = find_arch(c.arch.c_str());
    if (!c.desc) {
        r.bad("architecture \"" + json::printable(c.arch) + "\" is not supported (supported: " + supported_archs() + ")",
              SHOAL_ERR_UNSUPPORTED_ARCH);
    }
    const ArchDesc & a = *c.desc;
    const std::string fam = a.family;
    const bool qwen2 = fam == "qwen2", qwen3 = fam == "qwen3" || fam == "qwen3_moe";
    const bool opt = fam == "opt", bigcode = fam == "gpt_bigcode";
    c.qk_norm = a.qk_norm; // Qwen3Attention: q_norm / k_norm over head_dim, before RoPE
    c.act = a.act;
    c.tie_word_embeddings = a.tie_default;

    // GPTBigCodeConfig names its sizes as GPT-2 does; OPT calls the MLP width ffn_dim
    c.hidden_size = r.required_int_any({"hidden_size", "n_embd"}, 1 << 20);
    if (opt) {
        c.intermediate_size = r.required_int("ffn_dim", 1 << 22);
    } else if (bigcode) {
        c.intermediate_size = 4 * c.hidden_size; // n_inner null: 4·n_embd
        if (const json::Value * v = r.opt(root, "n_inner")) c.intermediate_size = int(r.int_in(*v, "n_inner", 1, 1 << 22));
    } else if (a.ffn == FfnKind::Moe && qwen3 && !r.opt(root, "intermediate_size")) {
        c.intermediate_size = 0; // only needed by mlp_only_layers, checked below
    } else {
        c.intermediate_size = r.required_int("intermediate_size", 1 << 22);
    }
    c.n_layers = r.required_int_any({"num_hidden_layers", "n_layer"}, 4096);
    c.n_heads = r.required_int_any({"num_attention_heads", "n_head"}, 4096);
    c.vocab_size = r.required_int("vocab_size", 1 << 24);
    c.max_position_embeddings = r.required_int_any({"max_position_embeddings", "n_positions"}, 1 << 26);
    c.n_kv_heads = c.n_heads;
    if (bigcode) {
        const json::Value * mq = r.opt(root, "multi_query");
        if (!mq || r.boolean(*mq, "multi_query")) c.n_kv_heads = 1; // multi_query defaults to true
    } else if (const json::Value * v = r.opt(root, "num_key_value_heads")) {
        c.n_kv_heads = int(r.int_in(*v, "num_key_value_heads", 1, c.n_heads));
    }
    if (c.n_heads % c.n_kv_heads != 0) {
        r.bad("num_key_value_heads " + std::to_string(c.n_kv_heads) + " does not divide num_attention_heads " +
              std::to_string(c.n_heads));
    }
    if (const json::Value * v = r.opt(root, "head_dim")) {
        c.head_dim = int(r.int_in(*v, "head_dim", 1, 1 << 16));
    } else {
        if (c.hidden_size % c.n_heads != 0) {
            r.bad("hidden_size " + std::to_string(c.hidden_size) + " is not a multiple of num_attention_heads " +
                  std::to_string(c.n_heads) + " and no head_dim is given");
        }
        c.head_dim = c.hidden_size / c.n_heads;
    }
    if (int64_t(c.n_heads) * c.head_dim > (1 << 20)) r.bad("num_attention_heads × head_dim is too large");
    if (a.pos == PosKind::Rope && c.head_dim % 2 != 0) r.bad("head_dim " + std::to_string(c.head_dim) + " must be even for RoPE");
    if (a.pos == PosKind::Learned && c.head_dim != c.hidden_size / c.n_heads) r.bad("head_dim must be hidden_size / num_attention_heads");

    if (a.norm == NormKind::Layer) {
        c.rms_norm_eps = 1e-5f; // nn.LayerNorm's default, which OPT uses
        if (const json::Value * v = r.opt(root, "layer_norm_epsilon")) c.rms_norm_eps = float(r.positive(*v, "layer_norm_epsilon"));
        if (const json::Value * v = r.opt(root, "layer_norm_eps")) c.rms_norm_eps = float(r.positive(*v, "layer_norm_eps"));
    } else if (const json::Value * v = r.opt(root, "rms_norm_eps")) {
        c.rms_norm_eps = float(r.positive(*v, "rms_norm_eps"));
    }
    if (a.pos == PosKind::Rope) {
        if (const json::Value * v = r.opt(root, "rope_theta")) c.rope_theta = float(r.positive(*v, "rope_theta"));
        if (const json::Value * v = r.opt(root, "rope_scaling")) parse_rope_scaling(r, *v, c);
    }
    const char * act_key = opt || bigcode ? "activation_function" : "hidden_act";
    if (const json::Value * v = r.opt(root, act_key)) {
        const std::string & act = r.string(*v, act_key);
        if (a.gated) {
            if (act != "silu") r.bad(std::string(act_key) + " \"" + json::printable(act) + "\" is not supported (only silu)");
        } else if (act == "relu") c.act = ActKind::Relu;
        else if (act == "gelu") c.act = ActKind::GeluErf;
        else if (act == "gelu_new" || act == "gelu_pytorch_tanh" || act == "gelu_fast") c.act = ActKind::GeluTanh;
        else r.bad(std::string(act_key) + " \"" + json::printable(act) + "\" is not supported (relu, gelu, gelu_new, gelu_pytorch_tanh, gelu_fast)");
    }
    if (const json::Value * v = r.opt(root, "tie_word_embeddings")) c.tie_word_embeddings = r.boolean(*v, "tie_word_embeddings");
    if (qwen2 || qwen3) {
        if (const json::Value * v = r.opt(root, "use_sliding_window")) {
            if (r.boolean(*v, "use_sliding_window")) r.bad("use_sliding_window true is not supported");
        }
    }
    if (qwen2) {
        c.qkv_bias = true; // Qwen2 always has q/k/v biases
    } else if (opt) {
        bool bias = true; // enable_bias: every linear and nothing else
        if (const json::Value * v = r.opt(root, "enable_bias")) bias = r.boolean(*v, "enable_bias");
        c.qkv_bias = c.o_bias = c.mlp_bias = bias;
        if (const json::Value * v = r.opt(root, "do_layer_norm_before")) c.norm_before = r.boolean(*v, "do_layer_norm_before");
        // OPTDecoder: final_layer_norm only for pre-norm models (_remove_final_layer_norm is an OPT-350m quirk)
        c.final_norm = c.norm_before;
        if (const json::Value * v = r.opt(root, "_remove_final_layer_norm"))
            if (r.boolean(*v, "_remove_final_layer_norm")) c.final_norm = false;
        if (const json::Value * v = r.opt(root, "layer_norm_elementwise_affine"))
            if (!r.boolean(*v, "layer_norm_elementwise_affine")) r.bad("layer_norm_elementwise_affine false is not supported");
        if (const json::Value * v = r.opt(root, "word_embed_proj_dim")) {
            if (r.int_in(*v, "word_embed_proj_dim", 1, 1 << 20) != c.hidden_size)
                r.bad("word_embed_proj_dim different from hidden_size (project_in/project_out) is not supported");
        }
    } else if (bigcode) {
        c.qkv_bias = c.o_bias = c.mlp_bias = true; // GPTBigCode: nn.Linear with bias everywhere
        if (const json::Value * v = r.opt(root, "scale_attn_weights"))
            if (!r.boolean(*v, "scale_attn_weights")) r.bad("scale_attn_weights false is not supported");
    } else {
        // Llama/Mistral/Qwen3 attention_bias: q/k/v and o_proj biases together
        if (const json::Value * v = r.opt(root, "attention_bias")) {
            c.qkv_bias = c.o_bias = r.boolean(*v, "attention_bias");
        }
        if (const json::Value * v = r.opt(root, "mlp_bias")) c.mlp_bias = r.boolean(*v, "mlp_bias");
    }
    // Mistral/Mixtral sliding_window (null: full attention)
    if (fam == "mistral" || fam == "mixtral") {
        if (const json::Value * v = r.opt(root, "sliding_window")) c.sliding_window = int(r.int_in(*v, "sliding_window", 1, 1 << 26));
    }
    if (a.ffn == FfnKind::Moe) {
        const char * ne = fam == "mixtral" ? "num_local_experts" : "num_experts";
        c.n_experts = r.required_int(ne, 1024);
        c.n_experts_used = r.required_int("num_experts_per_tok", 1024);
        if (c.n_experts_used > c.n_experts)
            r.bad("num_experts_per_tok " + std::to_string(c.n_experts_used) + " exceeds " + ne + " " + std::to_string(c.n_experts));
        c.moe_layers.assign((size_t)c.n_layers, 1);
        if (fam == "mixtral") {
            c.moe_intermediate_size = c.intermediate_size;
        } else {
            c.moe_intermediate_size = r.required_int("moe_intermediate_size", 1 << 22);
            c.norm_topk_prob = false; // Qwen3MoeConfig default
            if (const json::Value * v = r.opt(root, "norm_topk_prob")) c.norm_topk_prob = r.boolean(*v, "norm_topk_prob");
            int step = 1;
            if (const json::Value * v = r.opt(root, "decoder_sparse_step")) step = int(r.int_in(*v, "decoder_sparse_step", 1, 4096));
            for (int l = 0; l < c.n_layers; l++) c.moe_layers[(size_t)l] = (l + 1) % step == 0;
            if (const json::Value * v = r.opt(root, "mlp_only_layers")) {
                if (!v->is_array()) r.bad("mlp_only_layers must be an array of layer indices");
                for (const json::Value & e : v->items) c.moe_layers[(size_t)r.int_in(e, "mlp_only_layers[]", 0, c.n_layers - 1)] = 0;
            }
            for (int l = 0; l < c.n_layers; l++)
                if (!c.moe_layers[(size_t)l] && c.intermediate_size <= 0)
                    r.bad("layer " + std::to_string(l) + " has a dense MLP but \"intermediate_size\" is missing");
        }
    }
    if (const json::Value * v = r.opt(root, "torch_dtype")) c.torch_dtype = r.string(*v, "torch_dtype");

    if (const json::Value * v = r.opt(root, "bos_token_id")) c.bos_token_id = int(r.int_in(*v, "bos_token_id", 0, c.vocab_size - 1));
    if (const json::Value * v = r.opt(root, "eos_token_id")) c.eos_token_ids = parse_eos(r, *v, c.vocab_size);

    if (const json::Value * v = r.opt(root, "quantization_config")) parse_quant(r, *v, c);

    // generation_config.json: its bos/eos take precedence
    if (!gen_json.empty()) {
        const std::string gen_where = where + "/generation_config.json";
        json::Value g = json::parse(gen_json.data(), gen_json.size(), SHOAL_ERR_CONFIG, gen_where, lim);
        Reader gr{g, gen_where};
        if (!g.is_object()) gr.bad("the top level is not a JSON object");
        if (const json::Value * v = gr.opt(g, "bos_token_id")) c.bos_token_id = int(gr.int_in(*v, "bos_token_id", 0, c.vocab_size - 1));
        if (const json::Value * v = gr.opt(g, "eos_token_id")) c.eos_token_ids = parse_eos(gr, *v, c.vocab_size);
    }
    return c;
}

void apply_quant_sidecar(ModelConfig & c, const std::string & text, const std::string & path) {
    json::Limits lim;
    lim.max_bytes = size_t(1) << 20;
    json::Value root = json::parse(text.data(), text.size(), SHOAL_ERR_CONFIG, path, lim);
    Reader r{root, path};
    if (!root.is_object()) r.bad("the top level is not a JSON object");
    // quantize_config.json of AutoGPTQ often has no quant_method: it is GPTQ by its name
    if (!r.opt(root, "quant_method")) {
        const std::string name = "quantize_config.json";
        if (path.size() >= name.size() && path.compare(path.size() - name.size(), name.size(), name) == 0) {
            parse_gptq(r, root, c);
            return;
        }
    }
    parse_quant(r, root, c);
}

std::string quant_name(const ModelConfig & c) {
    const std::string wg = "-w" + std::to_string(c.quant_bits) + "g" + std::to_string(c.group_size);
    switch (c.quant_format) {
    case QFormat::None: return "none";
    case QFormat::AwqGemm: return "awq" + wg;
    case QFormat::AwqGemv: return "awq-gemv" + wg;
    case QFormat::AwqGemvFast: return "awq-gemv-fast" + wg;
    case QFormat::Gptq: return std::string(c.zero_offset ? "gptq" : "gptq-v2") + wg + (c.desc_act ? "-act" : "");
    case QFormat::EqatNative: return "eqat" + wg;
    case QFormat::CtPacked: {
        // "ct-w4g128", "ct-w4g128-asym-act", "ct-w8ch"; several groups: the first, then "+N"
        const CtScheme & s = c.ct_schemes.front();
        std::string n = "ct-w" + std::to_string(s.bits) + (s.channel ? std::string("ch") : "g" + std::to_string(s.group_size));
        if (!s.symmetric) n += "-asym";
        if (s.actorder_group) n += "-act";
        if (c.ct_schemes.size() > 1) n += "+" + std::to_string(c.ct_schemes.size() - 1);
        return n;
    }
    }
    return "?";
}

} // namespace shoal
