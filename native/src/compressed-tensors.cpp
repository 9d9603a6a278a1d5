// compressed-tensors.cpp — quantization_config of llm-compressor checkpoints
// (quant_method "compressed-tensors", format "pack-quantized") into CtScheme
// groups, and the per-module scheme lookup (targets / ignore) the loader uses.
//
// Read from the format's source (neuralmagic/compressed-tensors, not copied):
// quantization/quant_args.py (defaults: num_bits 8, type int, symmetric true;
// strategy inferred from group_size: none → tensor, > 0 → group, −1 → channel;
// actorder only with strategy group), quantization/quant_scheme.py (presets
// W4A16, W4A16_ASYM, W8A16; a group given as a list of targets names a preset),
// quantization/quant_config.py (config_groups, ignore, format, quantization_status),
// utils/match.py (name targets: exact string, or "re:" + Python re.match; class
// targets: "Linear"; priority exact > regex > class), lifecycle/apply.py (the
// first of the sorted matching targets picks the scheme).
#include "error.h"
#include "json.h"
#include "model-source.h"

#include <algorithm>
#include <cctype>
#include <regex>

namespace shoal {

namespace {

struct CtReader {
    std::string where; // "<dir>/config.json: quantization_config"

    [[noreturn]] void bad(const std::string & what, shoal_status s = SHOAL_ERR_QUANT_METADATA) const {
        fail(s, where + ": " + what);
    }
    const json::Value * opt(const json::Value & obj, const char * key) const {
        const json::Value * v = obj.get(key);
        return v && !v->is_null() ? v : nullptr;
    }
    const std::string & str(const json::Value & v, const std::string & key) const {
        if (!v.is_string()) bad(key + " must be a string");
        return v.str;
    }
    std::vector<std::string> strings(const json::Value & v, const std::string & key) const {
        if (!v.is_array()) bad(key + " must be an array of strings");
        std::vector<std::string> out;
        for (const json::Value & s : v.items) out.push_back(str(s, key + "[]"));
        return out;
    }
};

std::string lower(std::string s) {
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return char(std::tolower(c)); });
    return s;
}

// quant_args.py QuantizationArgs for weights → bits, strategy, group, symmetry, actorder.
void parse_weight_args(const CtReader & r, const json::Value & w, const std::string & key, CtScheme & s) {
    if (!w.is_object()) r.bad(key + " must be an object");
    int bits = 8; // QuantizationArgs default
    if (const json::Value * v = r.opt(w, "num_bits")) {
        if (!v->is_number() || !v->is_int) r.bad(key + ".num_bits must be an integer");
        bits = int(std::max<int64_t>(-1, std::min<int64_t>(v->integer, 1 << 20)));
    }
    std::string type = "int";
    if (const json::Value * v = r.opt(w, "type")) type = lower(r.str(*v, key + ".type"));
    if (type != "int") {
        r.bad(key + ".type \"" + json::printable(type) + "\" is not supported (Shoal loads int weights: W4A16, W8A16)",
              SHOAL_ERR_UNSUPPORTED_QUANT);
    }
    if (bits != 4 && bits != 8) {
        r.bad(key + ".num_bits " + std::to_string(bits) + " is not supported (4 or 8)", SHOAL_ERR_UNSUPPORTED_QUANT);
    }
    s.bits = bits;
    if (const json::Value * v = r.opt(w, "symmetric")) {
        if (!v->is_bool()) r.bad(key + ".symmetric must be true or false");
        s.symmetric = v->boolean;
    }
    if (const json::Value * v = r.opt(w, "dynamic")) {
        if (!(v->is_bool() && !v->boolean)) {
            r.bad(key + ".dynamic must be false for stored weights", SHOAL_ERR_UNSUPPORTED_QUANT);
        }
    }
    if (r.opt(w, "block_structure")) r.bad(key + ".block_structure: block quantization is not supported", SHOAL_ERR_UNSUPPORTED_QUANT);
    bool has_group = false;
    int64_t group = 0;
    if (const json::Value * v = r.opt(w, "group_size")) {
        if (!v->is_number() || !v->is_int) r.bad(key + ".group_size must be an integer or null");
        has_group = true;
        group = v->integer;
        if (group < -1 || group == 0) r.bad(key + ".group_size " + std::to_string(group) + " is invalid (> 0 for group, −1 for channel)");
        if (group > (1 << 24)) r.bad(key + ".group_size " + std::to_string(group) + " is too large");
    }
    std::string strategy;
    if (const json::Value * v = r.opt(w, "strategy")) {
        strategy = lower(r.str(*v, key + ".strategy"));
    } else {
        // quant_args.py validate_model_after: inferred from group_size
        strategy = !has_group ? "tensor" : group > 0 ? "group" : "channel";
    }
    static const char * const known[] = {"tensor", "channel", "group", "block", "token", "tensor_group", "attn_head"};
    if (std::find_if(std::begin(known), std::end(known), [&](const char * k) { return strategy == k; }) == std::end(known)) {
        r.bad(key + ".strategy \"" + json::printable(strategy) +
              "\" is not a compressed-tensors strategy (tensor, channel, group, block, token, tensor_group, attn_head)");
    }
    if (strategy == "group") {
        if (!has_group || group <= 0) r.bad(key + ": strategy group needs a positive group_size");
        s.channel = false;
        s.group_size = int(group);
    } else if (strategy == "channel") {
        if (has_group && group > 0) r.bad(key + ": group_size " + std::to_string(group) + " requires strategy group, not channel");
        s.channel = true;
    } else {
        r.bad(key + ".strategy \"" + strategy + "\" is not supported for weights (group or channel)", SHOAL_ERR_UNSUPPORTED_QUANT);
    }
    if (const json::Value * v = r.opt(w, "actorder")) {
        std::string a;
        if (v->is_bool()) a = v->boolean ? "group" : "";
        else a = lower(r.str(*v, key + ".actorder"));
        if (a == "dynamic") a = "group"; // ActivationOrdering aliases
        if (a == "static") a = "weight";
        if (!a.empty() && a != "group" && a != "weight") r.bad(key + ".actorder \"" + json::printable(a) + "\" is not group, weight, dynamic or static");
        if (!a.empty() && s.channel) r.bad(key + ": actorder needs strategy group");
        s.actorder_group = a == "group";
    }
}

// quant_scheme.py presets that are weight-only int (others are not supported)
bool preset(const std::string & name, CtScheme & s) {
    const std::string n = lower(name);
    if (n == "w4a16" || n == "w4a16_asym") {
        s.bits = 4;
        s.group_size = 128;
        s.symmetric = n == "w4a16";
        return true;
    }
    if (n == "w8a16") {
        s.bits = 8;
        s.channel = true;
        return true;
    }
    return false;
}

} // namespace

void parse_compressed_tensors(const json::Value & q, ModelConfig & c, const std::string & where) {
    CtReader r{where + ": quantization_config"};
    c.quant = QuantMethod::CompressedTensors;
    c.quant_format = QFormat::CtPacked;
    std::string top_format = "fakequant"; // quant_config.py default: not a stored integer format
    if (const json::Value * f = r.opt(q, "format")) top_format = lower(r.str(*f, "format"));
    if (const json::Value * st = r.opt(q, "quantization_status")) {
        const std::string status = lower(r.str(*st, "quantization_status"));
        if (status != "compressed") {
            r.bad("quantization_status \"" + json::printable(status) + "\": only compressed checkpoints are supported",
                  SHOAL_ERR_UNSUPPORTED_QUANT);
        }
    }
    if (const json::Value * sp = r.opt(q, "sparsity_config")) {
        const json::Value * f = sp->is_object() ? r.opt(*sp, "format") : nullptr;
        if (!(sp->is_object() && (sp->keys.empty() || (f && f->is_string() && lower(f->str) == "dense")))) {
            r.bad("sparsity_config: sparse compressed-tensors checkpoints are not supported", SHOAL_ERR_UNSUPPORTED_QUANT);
        }
    }
    if (const json::Value * t = r.opt(q, "transform_config")) {
        if (!(t->is_object() && t->keys.empty())) {
            r.bad("transform_config (rotations such as SpinQuant/QuIP) is not supported", SHOAL_ERR_UNSUPPORTED_QUANT);
        }
    }
    const json::Value * groups = r.opt(q, "config_groups");
    if (!groups || !groups->is_object() || groups->keys.empty()) r.bad("config_groups must be a non-empty object");
    for (size_t i = 0; i < groups->keys.size(); i++) {
        const std::string & name = groups->keys[i];
        const json::Value & g = groups->items[i];
        const std::string key = "config_groups." + json::printable(name);
        CtScheme s;
        s.name = name;
        std::string fmt = top_format;
        if (g.is_array()) {
            // a preset: {"W4A16": ["Linear"]}
            s.targets = r.strings(g, key);
            if (!preset(name, s)) {
                r.bad(key + ": preset \"" + json::printable(name) + "\" is not supported (W4A16, W4A16_ASYM, W8A16)",
                      SHOAL_ERR_UNSUPPORTED_QUANT);
            }
        } else if (g.is_object()) {
            const json::Value * t = r.opt(g, "targets");
            if (!t) r.bad(key + " has no targets");
            s.targets = r.strings(*t, key + ".targets");
            for (const char * act : {"input_activations", "output_activations"}) {
                if (r.opt(g, act)) {
                    r.bad(key + "." + act + ": activation quantization is not supported (weight-only W4A16 / W8A16)",
                          SHOAL_ERR_UNSUPPORTED_QUANT);
                }
            }
            const json::Value * w = r.opt(g, "weights");
            if (!w) r.bad(key + " quantizes no weights (weights is null)", SHOAL_ERR_UNSUPPORTED_QUANT);
            parse_weight_args(r, *w, key + ".weights", s);
            if (const json::Value * f = r.opt(g, "format")) fmt = lower(r.str(*f, key + ".format"));
        } else {
            r.bad(key + " must be an object or an array of targets");
        }
        if (s.targets.empty()) r.bad(key + ".targets is empty");
        if (fmt != "pack-quantized") {
            r.bad((fmt == top_format ? std::string("format") : key + ".format") + " \"" + json::printable(fmt) +
                      "\" is not supported (pack-quantized)",
                  SHOAL_ERR_UNSUPPORTED_QUANT);
        }
        c.ct_schemes.push_back(s);
    }
    if (const json::Value * ig = r.opt(q, "ignore")) c.ct_ignore = r.strings(*ig, "ignore");
    // the model's summary group size (info.group_size): that of the first group
    const CtScheme & s0 = c.ct_schemes.front();
    c.quant_bits = s0.bits;
    c.group_size = s0.channel ? -1 : s0.group_size;
}

namespace {

// utils/match.py _match_name: "re:" → Python re.match (anchored at the start only),
// otherwise string equality. std::regex ECMAScript covers the patterns checkpoints use
// (".*", "\d", classes, alternation, "$"); Python-only syntax is rejected.
bool name_matches(const std::string & name, const std::string & target) {
    if (target.compare(0, 3, "re:") != 0) return name == target;
    if (target.size() > 1024) {
        fail(SHOAL_ERR_QUANT_METADATA, "quantization_config: a pattern of " + std::to_string(target.size()) + " characters is over the limit of 1024");
    }
    try {
        const std::regex re(target.substr(3), std::regex::ECMAScript);
        return std::regex_search(name, re, std::regex_constants::match_continuous);
    } catch (const std::regex_error & e) {
        fail(SHOAL_ERR_QUANT_METADATA, "quantization_config: pattern \"" + json::printable(target) +
                                           "\" cannot be compiled (" + e.what() + "); Shoal reads ECMAScript regular expressions");
    }
}

// _match_class: every module Shoal quantizes is an nn.Linear
bool class_matches(const std::string & target) { return target == "Linear"; }

} // namespace

const CtScheme * ct_scheme_for(const ModelConfig & c, const std::string & name) {
    for (const std::string & ig : c.ct_ignore) {
        if (name_matches(name, ig) || class_matches(ig)) return nullptr;
    }
    // apply.py: target → scheme of the last group listing it; match.py: matching targets
    // sorted by ("re:" in t, t), name matches first, then class matches.
    const CtScheme * best = nullptr;
    std::string best_target;
    int best_rank = 3; // 0 exact, 1 regex, 2 class
    for (const CtScheme & s : c.ct_schemes) {
        for (const std::string & t : s.targets) {
            const bool re = t.compare(0, 3, "re:") == 0;
            int rank = 3;
            if (name_matches(name, t)) rank = re ? 1 : 0;
            else if (class_matches(t)) rank = 2;
            if (rank == 3) continue;
            if (rank < best_rank || (rank == best_rank && t <= best_target)) {
                best = &s;
                best_rank = rank;
                best_target = t;
            }
        }
    }
    return best;
}

} // namespace shoal
