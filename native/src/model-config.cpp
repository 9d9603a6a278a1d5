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

const char * const SUPPORTED_ARCHS[] = {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"};

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

void parse_quant(const Reader & r, const json::Value & q, ModelConfig & c) {
    if (!q.is_object()) r.bad("quantization_config must be an object");
    const json::Value * m = r.opt(q, "quant_method");
    if (!m) r.bad("quantization_config has no quant_method", SHOAL_ERR_UNSUPPORTED_QUANT);
    const std::string & method = r.string(*m, "quantization_config.quant_method");
    if (method != "awq") {
        r.bad("quantization method \"" + json::printable(method) + "\" is not supported (only awq)", SHOAL_ERR_UNSUPPORTED_QUANT);
    }
    c.quant = QuantMethod::Awq;
    // AutoAWQ defaults: bits 4, zero_point true, group_size 128, version gemm
    c.quant_bits = 4;
    if (const json::Value * b = r.opt(q, "bits")) {
        c.quant_bits = int(r.int_in(*b, "quantization_config.bits", -1024, 1024));
        if (c.quant_bits != 4) {
            r.bad("bits " + std::to_string(c.quant_bits) + " is not supported, only 4", SHOAL_ERR_UNSUPPORTED_QUANT);
        }
    }
    if (const json::Value * z = r.opt(q, "zero_point")) {
        if (!r.boolean(*z, "quantization_config.zero_point")) {
            r.bad("AWQ without zero_point is not supported", SHOAL_ERR_UNSUPPORTED_QUANT);
        }
    }
    std::string version = "gemm";
    if (const json::Value * v = r.opt(q, "version")) version = r.string(*v, "quantization_config.version");
    std::string lower = version;
    std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char ch) { return char(std::tolower(ch)); });
    if (lower != "gemm") {
        r.bad("AWQ version \"" + json::printable(version) + "\" is not supported (only gemm)", SHOAL_ERR_UNSUPPORTED_QUANT);
    }
    c.group_size = 128;
    if (const json::Value * g = r.opt(q, "group_size")) {
        if (!g->is_number() || !g->is_int) r.bad("quantization_config.group_size must be an integer");
        if (g->integer <= 0) {
            r.bad("group_size " + std::to_string(g->integer) + " is not supported (per-channel or invalid), "
                  "a positive group size is required", SHOAL_ERR_UNSUPPORTED_QUANT);
        }
        if (g->integer > (1 << 20)) r.bad("group_size " + std::to_string(g->integer) + " is too large", SHOAL_ERR_UNSUPPORTED_QUANT);
        c.group_size = int(g->integer);
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
    bool known = false;
    std::string list;
    for (const char * a : SUPPORTED_ARCHS) {
        known = known || c.arch == a;
        list += (list.empty() ? "" : ", ") + std::string(a);
    }
    if (!known) {
        r.bad("architecture \"" + json::printable(c.arch) + "\" is not supported (supported: " + list + ")",
              SHOAL_ERR_UNSUPPORTED_ARCH);
    }
    const bool qwen2 = c.arch == "Qwen2ForCausalLM";

    c.hidden_size = r.required_int("hidden_size", 1 << 20);
    c.intermediate_size = r.required_int("intermediate_size", 1 << 22);
    c.n_layers = r.required_int("num_hidden_layers", 4096);
    c.n_heads = r.required_int("num_attention_heads", 4096);
    c.vocab_size = r.required_int("vocab_size", 1 << 24);
    c.max_position_embeddings = r.required_int("max_position_embeddings", 1 << 26);
    c.n_kv_heads = c.n_heads;
    if (const json::Value * v = r.opt(root, "num_key_value_heads")) {
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
    if (c.head_dim % 2 != 0) r.bad("head_dim " + std::to_string(c.head_dim) + " must be even for RoPE");

    if (const json::Value * v = r.opt(root, "rms_norm_eps")) c.rms_norm_eps = float(r.positive(*v, "rms_norm_eps"));
    if (const json::Value * v = r.opt(root, "rope_theta")) c.rope_theta = float(r.positive(*v, "rope_theta"));
    if (const json::Value * v = r.opt(root, "rope_scaling")) parse_rope_scaling(r, *v, c);
    if (const json::Value * v = r.opt(root, "hidden_act")) {
        const std::string & act = r.string(*v, "hidden_act");
        if (act != "silu") r.bad("hidden_act \"" + json::printable(act) + "\" is not supported (only silu)");
    }
    if (const json::Value * v = r.opt(root, "tie_word_embeddings")) c.tie_word_embeddings = r.boolean(*v, "tie_word_embeddings");
    if (qwen2) {
        c.qkv_bias = true; // Qwen2 always has q/k/v biases
        if (const json::Value * v = r.opt(root, "use_sliding_window")) {
            if (r.boolean(*v, "use_sliding_window")) r.bad("use_sliding_window true is not supported");
        }
    } else {
        if (const json::Value * v = r.opt(root, "attention_bias")) {
            c.qkv_bias = c.o_bias = r.boolean(*v, "attention_bias");
        }
        if (const json::Value * v = r.opt(root, "mlp_bias")) c.mlp_bias = r.boolean(*v, "mlp_bias");
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

} // namespace shoal
