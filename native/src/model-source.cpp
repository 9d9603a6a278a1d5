// model-source.cpp — a Hugging Face checkpoint directory into a ModelSource:
// the config, the mapped safetensors file(s) and a checked view of every tensor
// a LLaMA-family decoder needs. No weight is converted here.
#include "error.h"
#include "json.h"
#include "model-source.h"
#include "safetensors.h"

#include <map>
#include <sys/stat.h>
#include <unordered_map>

namespace shoal {

namespace {

std::string shape_str(const int64_t * s, int n) {
    std::string r = "[";
    for (int i = 0; i < n; i++) r += (i ? ", " : "") + std::to_string(s[i]);
    return r + "]";
}

bool is_float(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; }


struct Found {
    const SafetensorsFile * file;
    const StTensor *        tensor;
};

// Looks tensors up across the files and validates them against the config.
struct Builder {
    const ModelConfig & c;
    std::unordered_map<std::string, Found> index; // name -> where it lives
    std::string file_list;                        // for "missing" messages
    ModelSource & ms;

    Builder(const ModelConfig & cfg, const std::vector<const SafetensorsFile *> & files, ModelSource & out) : c(cfg), ms(out) {
        for (const SafetensorsFile * f : files) {
            file_list += (file_list.empty() ? "" : ", ") + f->path;
            for (const StTensor & t : f->tensors) {
                auto ins = index.emplace(t.name, Found{f, &t});
                if (!ins.second) {
                    fail(SHOAL_ERR_ST_HEADER_JSON, "tensor " + json::printable(t.name) + " appears in both " +
                                                       ins.first->second.file->path + " and " + f->path);
                }
                ms.file_bytes += int64_t(t.nbytes());
            }
        }
        if (file_list.empty()) file_list = "(no files)";
    }

    bool has(const std::string & name) const { return index.count(name) != 0; }

    Found find(const std::string & name) const {
        auto it = index.find(name);
        if (it == index.end()) fail(SHOAL_ERR_MISSING_TENSOR, "tensor " + name + " is missing (looked in " + file_list + ")");
        return it->second;
    }

    TensorView view(const std::string & name, std::initializer_list<int64_t> dims) const {
        Found f = find(name);
        TensorView v = f.file->view(*f.tensor);
        int64_t want[4] = {0, 0, 0, 0};
        int n = 0;
        for (int64_t d : dims) want[n++] = d;
        bool ok = v.n_dims == n;
        for (int i = 0; ok && i < n; i++) ok = v.shape[i] == want[i];
        if (!ok) {
            fail(SHOAL_ERR_SHAPE, name + " has shape " + shape_str(v.shape, v.n_dims) + " but config implies " +
                                      shape_str(want, n) + " (in " + f.file->path + ")");
        }
        return v;
    }

    TensorView typed(const std::string & name, std::initializer_list<int64_t> dims, DType want) const {
        TensorView v = view(name, dims);
        if (v.dtype != want) {
            fail(SHOAL_ERR_ST_DTYPE, name + " has dtype " + dtype_name(v.dtype) + " but " + dtype_name(want) + " is required (in " +
                                         find(name).file->path + ")");
        }
        return v;
    }

    // an unquantized weight, vector or bias: F32, F16 or BF16
    TensorView floats(const std::string & name, std::initializer_list<int64_t> dims) {
        TensorView v = view(name, dims);
        if (!is_float(v.dtype)) {
            fail(SHOAL_ERR_ST_DTYPE, name + " has dtype " + dtype_name(v.dtype) + " but F32, F16 or BF16 is required (in " +
                                         find(name).file->path + ")");
        }
        ms.n_params += v.numel();
        return v;
    }

    bool not_converted(const std::string & name) const {
        for (const std::string & m : c.modules_to_not_convert) {
            if (name.find(m) != std::string::npos) return true;
        }
        return false;
    }

    // A quantized tensor: dtype and shape as the format implies; the message
    // names the format, bits and group so mixed-up metadata is recognisable.
    TensorView qtensor(const std::string & name, std::initializer_list<int64_t> dims, DType want, const std::string & fmt) const {
        Found f = find(name);
        TensorView v = f.file->view(*f.tensor);
        int64_t w[4] = {0, 0, 0, 0};
        int n = 0;
        for (int64_t d : dims) w[n++] = d;
        bool ok = v.n_dims == n;
        for (int i = 0; ok && i < n; i++) ok = v.shape[i] == w[i];
        if (!ok) {
            fail(SHOAL_ERR_SHAPE, name + " has shape " + shape_str(v.shape, v.n_dims) + " but " + fmt + " implies " +
                                      shape_str(w, n) + " (in " + f.file->path + ")");
        }
        if (v.dtype != want && !(want == DType::F16 && is_float(v.dtype))) {
            fail(SHOAL_ERR_ST_DTYPE, name + " has dtype " + dtype_name(v.dtype) + " but " + fmt + " needs " + dtype_name(want) +
                                         (want == DType::F16 ? " (or F32/BF16)" : "") + " (in " + f.file->path + ")");
        }
        return v;
    }

    static int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

    // AutoAWQ gemv/gemv_fast zero-point width W (calculate_zeros_width): ceil(K/G/8)
    // rounded up to a multiple of 1/2/4 for G >= 128 / 64 / 32.
    int64_t awq_zeros_width(const std::string & prefix, int64_t in, int64_t g) const {
        int64_t mult = g >= 128 ? 1 : g == 64 ? 2 : g == 32 ? 4 : 0;
        if (mult == 0) {
            fail(SHOAL_ERR_GROUP_SIZE, prefix + ": AWQ gemv/gemv_fast group size " + std::to_string(g) + " is not supported (32, 64 or >= 128)");
        }
        const int64_t base = cdiv(in / g, 8);
        return cdiv(base, mult) * mult;
    }

    // The quantized tensors of prefix in cfg's format, checked against [out, in].
    void quantized(LinearSource & l, const std::string & prefix, int64_t out, int64_t in) {
        const std::string file = find(prefix + ".qweight").file->path;
        const int b = c.quant_bits;
        const int64_t g = c.group_size == -1 ? in : c.group_size;
        l.qfmt = c.quant_format;
        l.bits = b;
        l.group_size = int(g);
        const std::string fmt = quant_name(c) + " (bits " + std::to_string(b) + ", group " + std::to_string(g) + ")";
        switch (c.quant_format) {
        case QFormat::AwqGemm:
        case QFormat::AwqGemv:
        case QFormat::AwqGemvFast: {
            if (in % g != 0) {
                fail(SHOAL_ERR_GROUP_SIZE, prefix + ": in_features " + std::to_string(in) + " is not a multiple of group_size " +
                                               std::to_string(g) + " (in " + file + ")");
            }
            if (c.quant_format == QFormat::AwqGemm) {
                if (out % 8 != 0) {
                    fail(SHOAL_ERR_SHAPE, prefix + ": out_features " + std::to_string(out) + " is not a multiple of 8, as AWQ packing needs (in " +
                                              file + ")");
                }
                l.awq = true;
                l.qweight = typed(prefix + ".qweight", {in, out / 8}, DType::I32);
                l.qzeros = typed(prefix + ".qzeros", {in / g, out / 8}, DType::I32);
                l.scales = typed(prefix + ".scales", {in / g, out}, DType::F16);
            } else if (c.quant_format == QFormat::AwqGemv) {
                if (in % 8 != 0) fail(SHOAL_ERR_SHAPE, prefix + ": in_features " + std::to_string(in) + " is not a multiple of 8, as AWQ gemv packing needs");
                const int64_t W = awq_zeros_width(prefix, in, g);
                l.qweight = qtensor(prefix + ".qweight", {out, in / 8}, DType::I32, fmt);
                l.qzeros = qtensor(prefix + ".qzeros", {out, W}, DType::I32, fmt);
                l.scales = qtensor(prefix + ".scales", {out, 8 * W}, DType::F16, fmt);
            } else {
                if (in % 64 != 0 || out % 4 != 0) {
                    fail(SHOAL_ERR_SHAPE, prefix + ": shape [" + std::to_string(out) + ", " + std::to_string(in) +
                                              "] does not fit AWQ gemv_fast packing (in_features % 64, out_features % 4)");
                }
                const int64_t W = awq_zeros_width(prefix, in, g);
                l.qweight = qtensor(prefix + ".qweight", {out / 4, in}, DType::I16, fmt);
                l.scales = qtensor(prefix + ".scales", {8 * W, out}, DType::F16, fmt);
                const std::string zn = has(prefix + ".scaled_zeros") ? prefix + ".scaled_zeros" : prefix + ".qzeros";
                l.qzeros = qtensor(zn, {8 * W, out}, DType::F16, fmt);
            }
            break;
        }
        case QFormat::Gptq:
        case QFormat::EqatNative: {
            const int64_t ng = cdiv(in, g);
            const bool gptq = c.quant_format == QFormat::Gptq;
            const int64_t per = 32 / b; // EfficientQAT: whole values per word
            l.zero_offset = gptq ? c.zero_offset : 0;
            l.qweight = qtensor(prefix + ".qweight", {gptq ? cdiv(in * b, 32) : cdiv(in, per), out}, DType::I32, fmt);
            l.qzeros = qtensor(prefix + ".qzeros", {ng, gptq ? cdiv(out * b, 32) : cdiv(out, per)}, DType::I32, fmt);
            l.scales = qtensor(prefix + ".scales", {ng, out}, DType::F16, fmt);
            // g_idx: GPTQ only (EfficientQAT writes k / G and never reads it)
            if (gptq && has(prefix + ".g_idx")) {
                l.g_idx = qtensor(prefix + ".g_idx", {in}, DType::I32, fmt);
                l.has_g_idx = true;
                const int32_t * gi = static_cast<const int32_t *>(l.g_idx.data);
                for (int64_t k = 0; k < in; k++) {
                    if (gi[k] < 0 || gi[k] >= ng) {
                        fail(SHOAL_ERR_QUANT_METADATA, prefix + ".g_idx[" + std::to_string(k) + "] = " + std::to_string(gi[k]) +
                                                           " is outside [0, " + std::to_string(ng) + ") for " + fmt + " (in " +
                                                           find(prefix + ".g_idx").file->path + ")");
                    }
                }
            } else if (c.desc_act && gptq) {
                fail(SHOAL_ERR_MISSING_TENSOR, "tensor " + prefix + ".g_idx is missing but quantization_config has desc_act true (looked in " +
                                                   file_list + ")");
            }
            break;
        }
        case QFormat::None: fail(SHOAL_ERR_INTERNAL, prefix + ": no quantization format");
        }
        ms.n_params += in * out;
    }

    // prefix.weight [out, in], or the quantized tensors of cfg's format; optional prefix.bias [out]
    LinearSource linear(const std::string & prefix, int64_t out, int64_t in, bool bias) {
        LinearSource l;
        l.name = prefix;
        l.in = in;
        l.out = out;
        const bool has_q = has(prefix + ".qweight");
        const bool has_w = has(prefix + ".weight");
        // AutoAWQ leaves modules_to_not_convert as plain .weight (GPTQModel likewise for
        // skipped modules); take whichever form is present
        const bool quant = c.quant != QuantMethod::None;
        bool use_q = quant && has_q && (!has_w || !not_converted(prefix));
        if (!use_q && !has_w) {
            if (quant && !not_converted(prefix)) find(prefix + ".qweight"); // names the quantized tensor
            find(prefix + ".weight");
        }
        if (use_q) {
            quantized(l, prefix, out, in);
        } else {
            l.weight = floats(prefix + ".weight", {out, in});
        }
        if (bias) {
            l.has_bias = true;
            l.bias = floats(prefix + ".bias", {out});
        }
        return l;
    }
};

bool path_exists(const std::string & p, bool * is_dir = nullptr) {
    struct stat st;
    if (::stat(p.c_str(), &st) != 0) return false;
    if (is_dir) *is_dir = S_ISDIR(st.st_mode);
    return true;
}

// Whole text file, bounded in size.
std::string read_text(const std::string & path, size_t max_bytes) {
    MappedFile m(path);
    if (m.size > max_bytes) {
        fail(SHOAL_ERR_CONFIG, path + ": " + std::to_string(m.size) + " bytes exceeds the limit of " + std::to_string(max_bytes));
    }
    return std::string(reinterpret_cast<const char *>(m.data), m.size);
}

// model.safetensors.index.json: {"weight_map": {tensor: shard file}} -> shards
// opened once each; every tensor must be in the shard the index names.
std::vector<SafetensorsFile> open_sharded(const std::string & dir, const std::string & index_path) {
    json::Limits lim;
    lim.max_bytes = size_t(64) << 20;
    std::string text = read_text(index_path, lim.max_bytes);
    json::Value root = json::parse(text.data(), text.size(), SHOAL_ERR_ST_HEADER_JSON, index_path, lim);
    const json::Value * wm = root.get("weight_map");
    if (!wm || !wm->is_object()) fail(SHOAL_ERR_ST_HEADER_JSON, index_path + ": no \"weight_map\" object");
    if (wm->keys.empty()) fail(SHOAL_ERR_ST_HEADER_JSON, index_path + ": weight_map is empty");

    std::map<std::string, size_t> shard_of; // shard file name -> index in shards
    std::vector<std::string> names;
    for (size_t i = 0; i < wm->keys.size(); i++) {
        const json::Value & s = wm->items[i];
        if (!s.is_string()) fail(SHOAL_ERR_ST_HEADER_JSON, index_path + ": weight_map value of " + json::printable(wm->keys[i]) + " is not a string");
        // a shard is a plain file name inside dir: no paths that could leave it
        if (s.str.empty() || s.str == "." || s.str == ".." || s.str.find('/') != std::string::npos ||
            s.str.find('\\') != std::string::npos || s.str.find('\0') != std::string::npos) {
            fail(SHOAL_ERR_ST_HEADER_JSON, index_path + ": shard name \"" + json::printable(s.str) + "\" is not a plain file name");
        }
        if (shard_of.emplace(s.str, names.size()).second) names.push_back(s.str);
    }
    std::vector<SafetensorsFile> shards;
    for (const std::string & n : names) {
        std::string p = dir + "/" + n;
        if (!path_exists(p)) fail(SHOAL_ERR_IO, p + ": shard named by " + index_path + " does not exist");
        shards.push_back(open_safetensors(p));
    }
    for (size_t i = 0; i < wm->keys.size(); i++) {
        const SafetensorsFile & f = shards[shard_of[wm->items[i].str]];
        if (!f.find(wm->keys[i])) {
            fail(SHOAL_ERR_MISSING_TENSOR, "tensor " + json::printable(wm->keys[i]) + " is missing from " + f.path +
                                               ", where " + index_path + " places it");
        }
    }
    return shards;
}

} // namespace

ModelSource build_model_source(const ModelConfig & c, const std::vector<const SafetensorsFile *> & files) {
    ModelSource ms;
    ms.cfg = c;
    Builder b(c, files, ms);
    const int64_t D = c.hidden_size, F = c.intermediate_size, V = c.vocab_size;
    const int64_t q_dim = int64_t(c.n_heads) * c.head_dim, kv_dim = int64_t(c.n_kv_heads) * c.head_dim;

    ms.embed = b.floats("model.embed_tokens.weight", {V, D});
    ms.layers.resize(size_t(c.n_layers));
    for (int i = 0; i < c.n_layers; i++) {
        const std::string p = "model.layers." + std::to_string(i);
        LayerSource & L = ms.layers[size_t(i)];
        L.attn_norm = b.floats(p + ".input_layernorm.weight", {D});
        L.q = b.linear(p + ".self_attn.q_proj", q_dim, D, c.qkv_bias);
        L.k = b.linear(p + ".self_attn.k_proj", kv_dim, D, c.qkv_bias);
        L.v = b.linear(p + ".self_attn.v_proj", kv_dim, D, c.qkv_bias);
        L.o = b.linear(p + ".self_attn.o_proj", D, q_dim, c.o_bias);
        L.ffn_norm = b.floats(p + ".post_attention_layernorm.weight", {D});
        L.gate = b.linear(p + ".mlp.gate_proj", F, D, c.mlp_bias);
        L.up = b.linear(p + ".mlp.up_proj", F, D, c.mlp_bias);
        L.down = b.linear(p + ".mlp.down_proj", D, F, c.mlp_bias);
    }
    ms.final_norm = b.floats("model.norm.weight", {D});
    if (c.tie_word_embeddings) {
        // as Transformers does: a tied head is the embedding, even if lm_head.weight is stored too
        ms.lm_head.name = "lm_head";
        ms.lm_head.in = D;
        ms.lm_head.out = V;
        ms.lm_head.weight = ms.embed;
    } else {
        ms.lm_head = b.linear("lm_head", V, D, false);
    }
    return ms;
}

ModelSource load_model_source(const std::string & dir_arg) {
    std::string dir = dir_arg;
    while (dir.size() > 1 && dir.back() == '/') dir.pop_back(); // "m/" names files as "m/config.json"
    bool is_dir = false;
    if (!path_exists(dir, &is_dir) || !is_dir) fail(SHOAL_ERR_IO, dir + ": model directory not found");
    const std::string cfg_path = dir + "/config.json";
    const std::string gen_path = dir + "/generation_config.json";
    if (!path_exists(cfg_path)) fail(SHOAL_ERR_CONFIG, cfg_path + ": not found");
    const size_t max_cfg = size_t(16) << 20;
    std::string cfg_text = read_text(cfg_path, max_cfg);
    std::string gen_text = path_exists(gen_path) ? read_text(gen_path, max_cfg) : std::string();
    ModelConfig cfg = parse_model_config(cfg_text, gen_text, dir);
    if (cfg.quant == QuantMethod::None) {
        // GPTQ's quantize_config.json, or shoal-quant.json beside an EfficientQAT native checkpoint
        for (const char * side : {"/quantize_config.json", "/shoal-quant.json"}) {
            const std::string p = dir + side;
            if (path_exists(p)) {
                apply_quant_sidecar(cfg, read_text(p, size_t(1) << 20), p);
                break;
            }
        }
    }

    std::vector<SafetensorsFile> files;
    const std::string single = dir + "/model.safetensors";
    const std::string index = dir + "/model.safetensors.index.json";
    if (path_exists(single)) {
        files.push_back(open_safetensors(single));
    } else if (path_exists(index)) {
        files = open_sharded(dir, index);
    } else {
        fail(SHOAL_ERR_IO, dir + ": neither model.safetensors nor model.safetensors.index.json found");
    }
    std::vector<const SafetensorsFile *> ptrs;
    for (const SafetensorsFile & f : files) ptrs.push_back(&f);
    ModelSource ms = build_model_source(cfg, ptrs);
    for (SafetensorsFile & f : files) ms.files.push_back(f.file); // the views point into these mappings
    return ms;
}

} // namespace shoal
