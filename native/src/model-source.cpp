// model-source.cpp — a Hugging Face checkpoint directory into a ModelSource:
// the config, the mapped safetensors file(s) and a checked view of every tensor
// a LLaMA-family decoder needs. No weight is converted here.
#include "error.h"
#include "json.h"
#include "model-source.h"
#include "safetensors.h"

#include <cctype>
#include <map>
#include <sys/stat.h>
#include <unordered_map>
#include <unordered_set>

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

    // A checkpoint saved from the base model (OPTModel, LlamaModel: Transformers'
    // base_model_prefix "model") names its tensors without "model."; Transformers
    // loads both, and so do we.
    std::unordered_map<std::string, Found>::const_iterator lookup(const std::string & name) const {
        auto it = index.find(name);
        if (it == index.end() && name.compare(0, 6, "model.") == 0) it = index.find(name.substr(6));
        return it;
    }

    bool has(const std::string & name) const { return lookup(name) != index.end(); }

    Found find(const std::string & name) const {
        auto it = lookup(name);
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
        case QFormat::CtPacked: fail(SHOAL_ERR_INTERNAL, prefix + ": compressed-tensors goes through ct_quantized");
        case QFormat::None: fail(SHOAL_ERR_INTERNAL, prefix + ": no quantization format");
        }
        ms.n_params += in * out;
    }

    // compressed-tensors pack-quantized (compressors/quantized_compressors/pack_quantized.py):
    // weight_packed i32 [out, ceil(in/pf)], pf = 32/b, value k at bits b·(k mod pf) of word
    // k/pf, stored q + 2^(b−1); weight_scale [out, in/G] ([out, 1] for channel) in the
    // model's float dtype; weight_zero_point i32 [ceil(out/pf), in/G] packed along out
    // (pack_to_int32 packed_dim=0), asymmetric only; weight_g_idx i32 [in] (actorder
    // group); weight_shape [2] = [out, in] (I64 as torch.tensor(shape) saves it, or I32).
    void ct_quantized(LinearSource & l, const std::string & prefix, int64_t out, int64_t in, const CtScheme & s) {
        const std::string file = find(prefix + ".weight_packed").file->path;
        const int b = s.bits;
        const int64_t pf = 32 / b;
        const int64_t G = s.channel ? in : s.group_size;
        const std::string fmt = "compressed-tensors group " + json::printable(s.name) + " (" + std::to_string(b) + " bits, " +
                                (s.channel ? std::string("channel") : "group " + std::to_string(G)) +
                                (s.symmetric ? ", symmetric" : ", asymmetric") + ")";
        if (in % G != 0) {
            fail(SHOAL_ERR_GROUP_SIZE, prefix + ": group_size " + std::to_string(G) + " of " + fmt + " does not divide in_features " +
                                           std::to_string(in) + " (in " + file + ")");
        }
        const int64_t ng = in / G;
        l.qfmt = QFormat::CtPacked;
        l.bits = b;
        l.group_size = int(G);
        l.ct_symmetric = s.symmetric;
        l.qweight = qtensor(prefix + ".weight_packed", {out, cdiv(in, pf)}, DType::I32, fmt);
        l.scales = qtensor(prefix + ".weight_scale", {out, ng}, DType::F16, fmt);
        if (!s.symmetric) {
            if (!has(prefix + ".weight_zero_point")) {
                fail(SHOAL_ERR_MISSING_TENSOR, "tensor " + prefix + ".weight_zero_point is missing but " + fmt +
                                                   " needs zero points (looked in " + file_list + ")");
            }
            const std::string zn = prefix + ".weight_zero_point";
            Found zf = find(zn);
            if (zf.file->view(*zf.tensor).dtype == DType::I8) {
                // compressed-tensors < 0.10: the int8 zero points as they were, [out, in/G]
                l.qzeros = qtensor(zn, {out, ng}, DType::I8, fmt);
                l.ct_zp_unpacked = true;
            } else {
                l.qzeros = qtensor(zn, {cdiv(out, pf), ng}, DType::I32, fmt);
            }
        }
        // weight_shape: what decompress_weight unpacks to
        const std::string ws = prefix + ".weight_shape";
        if (!has(ws)) fail(SHOAL_ERR_MISSING_TENSOR, "tensor " + ws + " is missing (looked in " + file_list + ")");
        {
            Found f = find(ws);
            TensorView v = f.file->view(*f.tensor);
            if (v.n_dims != 1 || v.shape[0] != 2 || (v.dtype != DType::I64 && v.dtype != DType::I32)) {
                fail(SHOAL_ERR_SHAPE, ws + " must be I64 or I32 [2], got " + dtype_name(v.dtype) + " " + shape_str(v.shape, v.n_dims) +
                                          " (in " + f.file->path + ")");
            }
            int64_t d[2];
            for (int i = 0; i < 2; i++) {
                d[i] = v.dtype == DType::I64 ? static_cast<const int64_t *>(v.data)[i] : static_cast<const int32_t *>(v.data)[i];
            }
            if (d[0] != out || d[1] != in) {
                fail(SHOAL_ERR_SHAPE, ws + " is [" + std::to_string(d[0]) + ", " + std::to_string(d[1]) + "] but config implies [" +
                                          std::to_string(out) + ", " + std::to_string(in) + "] (in " + f.file->path + ")");
            }
        }
        const std::string gn = prefix + ".weight_g_idx";
        if (has(gn)) {
            TensorView gv = qtensor(gn, {in}, DType::I32, fmt);
            const int32_t * gi = static_cast<const int32_t *>(gv.data);
            // forward.py: "-1 in g_idx" means column order (g_idx initialised, never filled)
            int64_t unset = 0;
            for (int64_t k = 0; k < in; k++) unset += gi[k] == -1;
            if (unset != 0 && unset != in) {
                fail(SHOAL_ERR_QUANT_METADATA, gn + " mixes −1 (column order) with group indices: " + std::to_string(unset) + " of " +
                                                   std::to_string(in) + " entries are −1 (in " + find(gn).file->path + ")");
            }
            if (unset == 0) {
                for (int64_t k = 0; k < in; k++) {
                    if (gi[k] < 0 || gi[k] >= ng) {
                        fail(SHOAL_ERR_QUANT_METADATA, gn + "[" + std::to_string(k) + "] = " + std::to_string(gi[k]) + " is outside [0, " +
                                                           std::to_string(ng) + ") for " + fmt + " (in " + find(gn).file->path + ")");
                    }
                }
                l.g_idx = gv;
                l.has_g_idx = true;
            }
        } else if (s.actorder_group) {
            fail(SHOAL_ERR_MISSING_TENSOR, "tensor " + gn + " is missing but " + fmt + " has actorder group (looked in " + file_list + ")");
        }
        ms.n_params += in * out;
    }

    // prefix.weight [out, in], or the quantized tensors of cfg's format; optional prefix.bias [out]
    LinearSource linear(const std::string & prefix, int64_t out, int64_t in, bool bias) {
        LinearSource l;
        l.name = prefix;
        l.in = in;
        l.out = out;
        if (c.quant == QuantMethod::CompressedTensors) {
            // the config decides, not the tensors present: targeted and not ignored → quantized
            if (const CtScheme * s = ct_scheme_for(c, prefix)) {
                if (!has(prefix + ".weight_packed")) {
                    fail(SHOAL_ERR_MISSING_TENSOR, "tensor " + prefix + ".weight_packed is missing: quantization_config group " +
                                                       json::printable(s->name) + " targets " + prefix +
                                                       (has(prefix + ".weight") ? " but the checkpoint stores it unquantized (.weight); add it to ignore" : "") +
                                                       " (looked in " + file_list + ")");
                }
                ct_quantized(l, prefix, out, in, *s);
            } else {
                if (!has(prefix + ".weight") && has(prefix + ".weight_packed")) {
                    fail(SHOAL_ERR_MISSING_TENSOR, "tensor " + prefix + ".weight is missing: " + prefix +
                                                       " is ignored or matches no config_groups target, but the checkpoint stores it quantized (" +
                                                       prefix + ".weight_packed)");
                }
                l.weight = floats(prefix + ".weight", {out, in});
            }
            if (bias) {
                l.has_bias = true;
                l.bias = floats(prefix + ".bias", {out});
            }
            return l;
        }
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

// compressed-tensors: a plain name in ignore or targets must name a linear module of this
// model (a typo or a config written for another model would otherwise pass silently);
// "re:" patterns are rules and may match nothing; "Linear" is the class of them all.
// A tensor name of the architecture table: "%d" → layer, "%e" → expert.
std::string tname(const char * pattern, int layer, int expert = -1) {
    std::string out;
    for (const char * p = pattern; *p; p++) {
        if (p[0] == '%' && p[1] == 'd') { out += std::to_string(layer); p++; }
        else if (p[0] == '%' && p[1] == 'e') { out += std::to_string(expert); p++; }
        else out += *p;
    }
    return out;
}


// Every linear module of the architecture, by name (lm_head included).
std::unordered_set<std::string> linear_names(const ModelConfig & c) {
    const ArchDesc & a = *c.desc;
    std::unordered_set<std::string> s{a.lm_head};
    for (int l = 0; l < c.n_layers; l++) {
        for (const char * p : {a.q, a.k, a.v, a.qkv_fused, a.o})
            if (*p) s.insert(tname(p, l));
        if (c.is_moe_layer(l)) {
            s.insert(tname(a.router, l));
            for (int e = 0; e < c.n_experts; e++)
                for (const char * p : {a.e_gate, a.e_up, a.e_down}) s.insert(tname(p, l, e));
        } else {
            for (const char * p : {a.gate, a.up, a.down})
                if (*p) s.insert(tname(p, l));
        }
    }
    return s;
}

void check_ct_names(const ModelConfig & c) {
    const std::unordered_set<std::string> names = linear_names(c);
    auto known = [&](const std::string & n) { return names.count(n) != 0; };
    // "model.layers.0..N-1.self_attn.q_proj, ..., lm_head"
    std::string range;
    auto ranged = [&](const char * p) {
        std::string r;
        for (; *p; p++) {
            if (p[0] == '%' && p[1] == 'd') { r += "0.." + std::to_string(c.n_layers - 1); p++; }
            else if (p[0] == '%' && p[1] == 'e') { r += "0.." + std::to_string(c.n_experts - 1); p++; }
            else r += *p;
        }
        return r;
    };
    const ArchDesc & a = *c.desc;
    for (const char * p : {a.q, a.k, a.v, a.qkv_fused, a.o, a.gate, a.up, a.down, a.router, a.e_gate, a.e_up, a.e_down})
        if (*p) range += ranged(p) + ", ";
    range += a.lm_head;
    for (const std::string & n : c.ct_ignore) {
        if (n.compare(0, 3, "re:") == 0 || n == "Linear" || known(n)) continue;
        fail(SHOAL_ERR_QUANT_METADATA, "quantization_config.ignore names \"" + json::printable(n) +
                                           "\", which is not a linear module of this " + c.arch + " (" + range + ")");
    }
    for (const CtScheme & s : c.ct_schemes) {
        for (const std::string & n : s.targets) {
            if (n.compare(0, 3, "re:") == 0 || n == "Linear" || known(n)) continue;
            fail(SHOAL_ERR_QUANT_METADATA, "quantization_config group " + json::printable(s.name) + " targets \"" + json::printable(n) +
                                               "\", which is not a linear module of this " + c.arch + " (" + range +
                                               "; Shoal quantizes Linear modules only)");
        }
    }
}

} // namespace

ModelSource build_model_source(const ModelConfig & c, const std::vector<const SafetensorsFile *> & files) {
    ModelSource ms;
    ms.cfg = c;
    SHOAL_CHECK(c.desc, SHOAL_ERR_INTERNAL, "model config without an architecture row");
    const ArchDesc & a = *c.desc;
    Builder b(c, files, ms);
    const int64_t D = c.hidden_size, F = c.intermediate_size, V = c.vocab_size, Fe = c.moe_intermediate_size;
    const int64_t q_dim = int64_t(c.n_heads) * c.head_dim, kv_dim = int64_t(c.n_kv_heads) * c.head_dim;
    const bool layer_norm = a.norm == NormKind::Layer;
    if (c.quant == QuantMethod::CompressedTensors) check_ct_names(c);

    ms.embed = b.floats(a.embed, {V, D});
    if (a.pos == PosKind::Learned) {
        ms.pos_embed = b.floats(a.pos_embed, {int64_t(c.max_position_embeddings) + a.pos_offset, D});
    }
    ms.layers.resize(size_t(c.n_layers));
    for (int i = 0; i < c.n_layers; i++) {
        LayerSource & L = ms.layers[size_t(i)];
        L.attn_norm = b.floats(tname(a.attn_norm, i) + ".weight", {D});
        if (layer_norm) L.attn_norm_b = b.floats(tname(a.attn_norm, i) + ".bias", {D});
        if (a.qkv == QkvKind::Fused) {
            L.qkv = b.linear(tname(a.qkv_fused, i), q_dim + 2 * kv_dim, D, c.qkv_bias);
        } else {
            L.q = b.linear(tname(a.q, i), q_dim, D, c.qkv_bias);
            L.k = b.linear(tname(a.k, i), kv_dim, D, c.qkv_bias);
            L.v = b.linear(tname(a.v, i), kv_dim, D, c.qkv_bias);
        }
        L.o = b.linear(tname(a.o, i), D, q_dim, c.o_bias);
        if (c.qk_norm) {
            L.q_norm = b.floats(tname(a.q_norm, i) + ".weight", {c.head_dim});
            L.k_norm = b.floats(tname(a.k_norm, i) + ".weight", {c.head_dim});
        }
        L.ffn_norm = b.floats(tname(a.ffn_norm, i) + ".weight", {D});
        if (layer_norm) L.ffn_norm_b = b.floats(tname(a.ffn_norm, i) + ".bias", {D});
        if (c.is_moe_layer(i)) {
            L.router = b.linear(tname(a.router, i), c.n_experts, D, false);
            L.experts.resize(size_t(c.n_experts));
            for (int e = 0; e < c.n_experts; e++) {
                ExpertSource & E = L.experts[size_t(e)];
                E.gate = b.linear(tname(a.e_gate, i, e), Fe, D, false);
                E.up = b.linear(tname(a.e_up, i, e), Fe, D, false);
                E.down = b.linear(tname(a.e_down, i, e), D, Fe, false);
            }
        } else {
            if (a.gated) L.gate = b.linear(tname(a.gate, i), F, D, c.mlp_bias);
            L.up = b.linear(tname(a.up, i), F, D, c.mlp_bias);
            L.down = b.linear(tname(a.down, i), D, F, c.mlp_bias);
        }
    }
    if (c.final_norm) {
        ms.final_norm = b.floats(std::string(a.final_norm) + ".weight", {D});
        if (layer_norm) ms.final_norm_b = b.floats(std::string(a.final_norm) + ".bias", {D});
    }
    if (c.tie_word_embeddings) {
        // as Transformers does: a tied head is the embedding, even if lm_head.weight is stored too
        ms.lm_head.name = a.lm_head;
        ms.lm_head.in = D;
        ms.lm_head.out = V;
        ms.lm_head.weight = ms.embed;
    } else {
        ms.lm_head = b.linear(a.lm_head, V, D, false);
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
