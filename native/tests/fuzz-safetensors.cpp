// fuzz-safetensors.cpp — a standalone mutation fuzzer for the checkpoint loader
// (no libFuzzer needed). Seeds are valid safetensors images and config.json
// texts generated here; each input gets 1-4 mutations (bit flips, byte sets,
// truncation, header-length edits, JSON token splices, big numbers, deep
// nesting) and goes through parse_safetensors and build_model_source, or
// parse_model_config. Built with ASan+UBSan (make fuzz). Exits non-zero only if
// something other than shoal::Error escapes or a view points outside its input.
// Usage: fuzz-safetensors [--iterations N] [--seed S] [--verbose]
#include "error.h"
#include "json.h"
#include "model-source.h"
#include "safetensors.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

using namespace shoal;

namespace {

// ---- deterministic RNG (splitmix64) --------------------------------------------------

struct Rng {
    uint64_t s;
    uint64_t next() {
        uint64_t z = (s += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }
    size_t below(size_t n) { return n ? size_t(next() % n) : 0; }
    bool coin(int one_in) { return below(size_t(one_in)) == 0; }
};

// ---- seeds ---------------------------------------------------------------------------------

struct T {
    std::string name, dtype;
    std::vector<int64_t> shape;
    std::string bytes; // the data; empty: random small values
};

size_t esize(const std::string & d) {
    if (d == "F64" || d == "I64") return 8;
    if (d == "F32" || d == "I32") return 4;
    if (d == "F16" || d == "BF16" || d == "I16") return 2;
    return 1;
}

std::string image(const std::vector<T> & ts, Rng & r, const std::string & meta = "") {
    std::string h = "{", data;
    if (!meta.empty()) h += "\"__metadata__\":" + meta;
    for (const T & t : ts) {
        size_t n = esize(t.dtype);
        std::string shape = "[";
        for (size_t i = 0; i < t.shape.size(); i++) {
            n *= size_t(t.shape[i]);
            shape += (i ? "," : "") + std::to_string(t.shape[i]);
        }
        if (h.size() > 1) h += ",";
        h += "\"" + t.name + "\":{\"dtype\":\"" + t.dtype + "\",\"shape\":" + shape + "],\"data_offsets\":[" +
             std::to_string(data.size()) + "," + std::to_string(data.size() + n) + "]}";
        if (!t.bytes.empty() && t.bytes.size() == n) data += t.bytes;
        else for (size_t i = 0; i < n; i++) data += char(r.next() & 0x3F); // small f16/f32 bit patterns
    }
    h += "}";
    while (h.size() % 8) h += ' ';
    std::string len;
    for (int i = 0; i < 8; i++) len += char((uint64_t(h.size()) >> (8 * i)) & 0xFF);
    return len + h + data;
}

// A tiny LLaMA: D=16, F=32, 1 layer, H=2, Hkv=1, V=16; AWQ with G=16 when awq.
const int D = 16, F = 32, H = 2, HKV = 1, V = 16, HD = D / H;

std::vector<T> tiny(bool awq, bool f16) {
    const std::string fd = f16 || awq ? "F16" : "F32";
    std::vector<T> ts = {{"model.embed_tokens.weight", fd, {V, D}}, {"model.layers.0.input_layernorm.weight", fd, {D}}};
    auto lin = [&](const std::string & p, int64_t out, int64_t in) {
        if (awq) {
            ts.push_back({p + ".qweight", "I32", {in, out / 8}});
            ts.push_back({p + ".qzeros", "I32", {in / 16, out / 8}});
            ts.push_back({p + ".scales", "F16", {in / 16, out}});
        } else {
            ts.push_back({p + ".weight", fd, {out, in}});
        }
    };
    lin("model.layers.0.self_attn.q_proj", H * HD, D);
    lin("model.layers.0.self_attn.k_proj", HKV * HD, D);
    lin("model.layers.0.self_attn.v_proj", HKV * HD, D);
    lin("model.layers.0.self_attn.o_proj", D, H * HD);
    ts.push_back({"model.layers.0.post_attention_layernorm.weight", fd, {D}});
    lin("model.layers.0.mlp.gate_proj", F, D);
    lin("model.layers.0.mlp.up_proj", F, D);
    lin("model.layers.0.mlp.down_proj", D, F);
    ts.push_back({"model.norm.weight", fd, {D}});
    return ts;
}

std::string tiny_config(const std::string & extra) {
    return "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":16,\"intermediate_size\":32,"
           "\"num_hidden_layers\":1,\"num_attention_heads\":2,\"num_key_value_heads\":1,\"vocab_size\":16,"
           "\"max_position_embeddings\":64,\"rms_norm_eps\":1e-5,\"rope_theta\":10000.0,\"tie_word_embeddings\":true,"
           "\"bos_token_id\":1,\"eos_token_id\":[2,3]" + extra + "}";
}

// compressed-tensors pack-quantized W4 g16 asymmetric with act-order g_idx (= k / 16),
// down_proj W8A16 through a second group
std::vector<T> tiny_ct() {
    std::vector<T> ts = {{"model.embed_tokens.weight", "F16", {V, D}, {}}, {"model.layers.0.input_layernorm.weight", "F16", {D}, {}}};
    auto i64s = [](std::initializer_list<int64_t> v) {
        std::string b;
        for (int64_t x : v) b.append(reinterpret_cast<const char *>(&x), 8);
        return b;
    };
    auto lin = [&](const std::string & p, int64_t out, int64_t in) {
        ts.push_back({p + ".weight_packed", "I32", {out, in / 8}, {}});
        ts.push_back({p + ".weight_scale", "F16", {out, in / 16}, {}});
        ts.push_back({p + ".weight_zero_point", "I32", {(out + 7) / 8, in / 16}, {}});
        ts.push_back({p + ".weight_shape", "I64", {2}, i64s({out, in})});
        std::string g;
        for (int64_t k = 0; k < in; k++) {
            const int32_t v = int32_t(k / 16);
            g.append(reinterpret_cast<const char *>(&v), 4);
        }
        ts.push_back({p + ".weight_g_idx", "I32", {in}, g});
    };
    lin("model.layers.0.self_attn.q_proj", H * HD, D);
    lin("model.layers.0.self_attn.k_proj", HKV * HD, D);
    lin("model.layers.0.self_attn.v_proj", HKV * HD, D);
    lin("model.layers.0.self_attn.o_proj", D, H * HD);
    ts.push_back({"model.layers.0.post_attention_layernorm.weight", "F16", {D}, {}});
    lin("model.layers.0.mlp.gate_proj", F, D);
    lin("model.layers.0.mlp.up_proj", F, D);
    // down_proj: the W8A16 preset (8-bit, channel, symmetric)
    ts.push_back({"model.layers.0.mlp.down_proj.weight_packed", "I32", {D, F / 4}, {}});
    ts.push_back({"model.layers.0.mlp.down_proj.weight_scale", "F16", {D, 1}, {}});
    ts.push_back({"model.layers.0.mlp.down_proj.weight_shape", "I64", {2}, i64s({D, F})});
    ts.push_back({"model.norm.weight", "F16", {D}, {}});
    return ts;
}

const char * const CT_Q = ",\"quantization_config\":{\"quant_method\":\"compressed-tensors\",\"format\":\"pack-quantized\","
                          "\"quantization_status\":\"compressed\",\"config_groups\":{\"group_0\":{\"targets\":[\"Linear\"],"
                          "\"weights\":{\"num_bits\":4,\"type\":\"int\",\"symmetric\":false,\"strategy\":\"group\",\"group_size\":16,"
                          "\"actorder\":\"group\"}},\"W8A16\":[\"re:.*mlp\\\\.down_proj$\"]},\"ignore\":[\"lm_head\"]}";

const char * const AWQ_Q = ",\"quantization_config\":{\"quant_method\":\"awq\",\"bits\":4,\"group_size\":16,"
                           "\"zero_point\":true,\"version\":\"gemm\",\"modules_to_not_convert\":null}";

// ---- mutations -----------------------------------------------------------------------------

const char * const TOKENS[] = {
    "{", "}", "[", "]", ",", ":", "\"", "\\", "null", "true", "false", "-1", "0", "1e400", "-0.0", "1.5",
    "18446744073709551616", "9223372036854775807", "-9223372036854775808", "4294967296", "\"\\ud800\"",
    "\"\\u0000\"", "\"dtype\"", "\"shape\"", "\"data_offsets\"", "\"F32\"", "\"BOOL\"", "\"F8_E5M2\"", "\"I32\"",
    "\"__metadata__\"", "\"data_offsets\":[0,4]", "\"shape\":[4294967296,4294967296]", "\"shape\":[]",
    "\"data_offsets\":[8,4]", "\"x\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}", "\xC0\xAF",
    "\xF4\x90\x80\x80", "\"architectures\":[\"Qwen2ForCausalLM\"]", "\"rope_scaling\":{\"rope_type\":\"llama3\"}",
    "\"num_hidden_layers\":4096", "\"group_size\":7", "\"bits\":3", "\"head_dim\":0", "\"tie_word_embeddings\":false",
    "\"strategy\":\"channel\"", "\"symmetric\":true", "\"num_bits\":8", "\"re:(a|b)*c\"", "\"re:[\"", "\"actorder\":\"weight\"",
    "\"architectures\":[\"Qwen3ForCausalLM\"]", "\"ignore\":[\"model.layers.0.mlp.up_proj\"]",
    "\"architectures\":[\"MixtralForCausalLM\"]", "\"architectures\":[\"OPTForCausalLM\"]", "\"sliding_window\":1",
    "\"num_local_experts\":0", "\"num_experts_per_tok\":9", "\"mlp_only_layers\":[-1,99]", "\"decoder_sparse_step\":0",
    "\"do_layer_norm_before\":false", "\"multi_query\":false", "\"n_inner\":null", "\"activation_function\":\"gelu\"",
};

size_t header_len(const std::string & s) {
    if (s.size() < 8) return 0;
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | uint8_t(s[size_t(i)]);
    return n > s.size() - 8 ? s.size() - 8 : size_t(n);
}

void set_len(std::string & s, uint64_t n) {
    if (s.size() < 8) return;
    for (int i = 0; i < 8; i++) s[size_t(i)] = char((n >> (8 * i)) & 0xFF);
}

// Position inside the JSON part: the header of an image, or anywhere in a config.
size_t json_pos(const std::string & s, bool is_image, Rng & r) {
    if (!is_image || s.size() < 8) return r.below(s.size() + 1);
    size_t n = header_len(s);
    return 8 + r.below(n + 1);
}

void mutate(std::string & s, bool is_image, Rng & r) {
    switch (r.below(11)) {
    case 0: // bit flip
        if (!s.empty()) s[r.below(s.size())] ^= char(1u << r.below(8));
        break;
    case 1: { // byte set to an interesting value
        static const char vals[] = {0, '\xFF', '"', '{', '}', '[', ']', ',', ':', '-', '9', '0', ' ', '\\', 'e', '.'};
        if (!s.empty()) s[r.below(s.size())] = vals[r.below(sizeof vals)];
        break;
    }
    case 2: // truncation
        s.resize(r.below(s.size() + 1));
        break;
    case 3: { // header length field edits
        if (!is_image || s.size() < 8) { s.insert(json_pos(s, is_image, r), "9999999999999999999999"); break; }
        uint64_t n = header_len(s);
        const uint64_t choices[] = {0, n + 1, n - 1, n + 8, uint64_t(s.size()), uint64_t(s.size()) - 8, ~uint64_t(0),
                                    ST_MAX_HEADER_BYTES, ST_MAX_HEADER_BYTES + 1, r.next(), r.below(64)};
        set_len(s, choices[r.below(sizeof choices / sizeof choices[0])]);
        break;
    }
    case 4:
    case 5: { // JSON token splice, keeping the length field consistent most of the time
        const char * tok = TOKENS[r.below(sizeof TOKENS / sizeof TOKENS[0])];
        size_t at = json_pos(s, is_image, r), len = std::strlen(tok);
        if (r.coin(2) && at < s.size()) s.erase(at, r.below(std::min<size_t>(16, s.size() - at) + 1));
        s.insert(at, tok, len);
        if (is_image && !r.coin(4) && s.size() >= 8) set_len(s, std::min<size_t>(header_len(s) + len, s.size() - 8));
        break;
    }
    case 6: { // replace a digit run by a big or odd number
        static const char * const nums[] = {"18446744073709551615", "9223372036854775807", "99999999999999999999999",
                                            "4294967295", "-1", "0", "1e19", "2.5", "1E+308", "65536", "123456789"};
        size_t at = json_pos(s, is_image, r);
        while (at < s.size() && !(s[at] >= '0' && s[at] <= '9')) at++;
        size_t e = at;
        while (e < s.size() && s[e] >= '0' && s[e] <= '9') e++;
        if (at < s.size()) s.replace(at, e - at, nums[r.below(sizeof nums / sizeof nums[0])]);
        break;
    }
    case 7: { // deep nesting
        size_t depth = 32 + r.below(200);
        size_t at = json_pos(s, is_image, r);
        s.insert(at, std::string(depth, r.coin(2) ? '[' : '{'));
        if (r.coin(2)) s.insert(std::min(s.size(), at + depth), std::string(depth, ']'));
        break;
    }
    case 8: { // duplicate a chunk
        if (s.empty()) break;
        size_t a = r.below(s.size()), n = r.below(std::min<size_t>(64, s.size() - a) + 1);
        s.insert(r.below(s.size() + 1), s.substr(a, n));
        break;
    }
    case 9: { // delete a chunk
        if (s.empty()) break;
        size_t a = r.below(s.size());
        s.erase(a, r.below(std::min<size_t>(64, s.size() - a) + 1));
        break;
    }
    default: { // random bytes over a short span
        if (s.empty()) break;
        size_t a = r.below(s.size()), n = std::min<size_t>(1 + r.below(8), s.size() - a);
        for (size_t i = 0; i < n; i++) s[a + i] = char(r.next());
        break;
    }
    }
}

// Reads every byte of every view so ASan sees any view outside the input.
uint64_t touch(const TensorView & v) {
    uint64_t sum = 0;
    const uint8_t * p = static_cast<const uint8_t *>(v.data);
    for (size_t i = 0; i < v.nbytes; i++) sum += p[i];
    return sum;
}

uint64_t touch(const LinearSource & l) {
    if (l.qfmt != QFormat::None) return touch(l.qweight) + touch(l.qzeros) + touch(l.scales) + (l.has_g_idx ? touch(l.g_idx) : 0);
    return touch(l.weight) + (l.has_bias ? touch(l.bias) : 0);
}

const char * status_name(int s) {
    static const char * const names[] = {
        "SHOAL_OK", "SHOAL_ERR_IO", "SHOAL_ERR_ST_TRUNCATED", "SHOAL_ERR_ST_HEADER_LEN", "SHOAL_ERR_ST_HEADER_JSON",
        "SHOAL_ERR_ST_OFFSETS", "SHOAL_ERR_ST_DTYPE", "SHOAL_ERR_CONFIG", "SHOAL_ERR_SHAPE", "SHOAL_ERR_MISSING_TENSOR",
        "SHOAL_ERR_UNSUPPORTED_ARCH", "SHOAL_ERR_UNSUPPORTED_QUANT", "SHOAL_ERR_GROUP_SIZE", "SHOAL_ERR_CONTEXT_FULL",
        "SHOAL_ERR_INVALID_ARG", "SHOAL_ERR_OOM", "SHOAL_ERR_CANCELLED", "SHOAL_ERR_BACKEND", "SHOAL_ERR_INTERNAL",
        "SHOAL_ERR_QUANT_METADATA"};
    return s >= 0 && s < int(sizeof names / sizeof names[0]) ? names[s] : "?";
}

} // namespace

int main(int argc, char ** argv) {
    long iterations = 10000;
    uint64_t seed = 1;
    bool verbose = false;
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        if (a == "--iterations" && i + 1 < argc) iterations = std::strtol(argv[++i], nullptr, 10);
        else if (a == "--seed" && i + 1 < argc) seed = std::strtoull(argv[++i], nullptr, 10);
        else if (a == "--verbose") verbose = true;
        else {
            std::fprintf(stderr, "usage: %s [--iterations N] [--seed S] [--verbose]\n", argv[0]);
            return 2;
        }
    }
    Rng r{seed};

    // seeds: images with the configs they match
    struct Seed { std::string img; ModelConfig cfg; };
    std::vector<Seed> seeds;
    std::vector<std::string> configs = {tiny_config(""), tiny_config(AWQ_Q),
                                        tiny_config(",\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8.0,\"low_freq_factor\":1.0,"
                                                    "\"high_freq_factor\":4.0,\"original_max_position_embeddings\":8192}"),
                                        tiny_config(CT_Q),
                                        // the other families of the architecture table (configs only)
                                        "{\"architectures\":[\"MixtralForCausalLM\"],\"hidden_size\":16,\"intermediate_size\":32,"
                                        "\"num_hidden_layers\":2,\"num_attention_heads\":2,\"num_key_value_heads\":1,\"vocab_size\":16,"
                                        "\"max_position_embeddings\":64,\"num_local_experts\":4,\"num_experts_per_tok\":2,\"sliding_window\":8}",
                                        "{\"architectures\":[\"Qwen3MoeForCausalLM\"],\"hidden_size\":16,\"intermediate_size\":32,"
                                        "\"num_hidden_layers\":3,\"num_attention_heads\":2,\"num_key_value_heads\":1,\"head_dim\":8,\"vocab_size\":16,"
                                        "\"max_position_embeddings\":64,\"num_experts\":8,\"num_experts_per_tok\":2,\"moe_intermediate_size\":8,"
                                        "\"norm_topk_prob\":true,\"decoder_sparse_step\":2,\"mlp_only_layers\":[0]}",
                                        "{\"architectures\":[\"OPTForCausalLM\"],\"hidden_size\":16,\"ffn_dim\":32,\"num_hidden_layers\":1,"
                                        "\"num_attention_heads\":2,\"vocab_size\":16,\"max_position_embeddings\":64,\"do_layer_norm_before\":true,"
                                        "\"word_embed_proj_dim\":16,\"activation_function\":\"relu\",\"enable_bias\":true}",
                                        "{\"architectures\":[\"GPTBigCodeForCausalLM\"],\"n_embd\":16,\"n_inner\":null,\"n_layer\":1,"
                                        "\"n_head\":2,\"n_positions\":64,\"vocab_size\":16,\"multi_query\":true,"
                                        "\"activation_function\":\"gelu_pytorch_tanh\",\"layer_norm_epsilon\":1e-5}"};
    for (size_t i = 4; i < configs.size(); i++) (void)parse_model_config(configs[i], "", "seed"); // valid seeds
    ModelConfig plain = parse_model_config(configs[0], "", "seed");
    ModelConfig awq = parse_model_config(configs[1], "", "seed");
    ModelConfig ct = parse_model_config(configs[3], "", "seed");
    seeds.push_back({image(tiny(false, false), r), plain});
    seeds.push_back({image(tiny(false, true), r, "{\"format\":\"pt\"}"), plain});
    seeds.push_back({image(tiny(true, false), r), awq});
    seeds.push_back({image(tiny_ct(), r), ct});
    seeds.push_back({image({{"a", "BOOL", {3}}, {"b", "F64", {}}, {"c", "BF16", {2, 0}}, {"d", "I64", {1, 1, 1, 1, 1}},
                            {"e", "I8", {5}}, {"f", "U8", {2}}, {"g", "I16", {2}}},
                           r, "{\"k\":\"v\",\"\\u00e9\":\"\\ud83d\\ude00\"}"),
                     plain});
    for (const Seed & s : seeds) { // the seeds themselves must be valid
        SafetensorsFile f = parse_safetensors(reinterpret_cast<const uint8_t *>(s.img.data()), s.img.size(), "seed");
        (void)f;
    }
    { // and the compressed-tensors seed a loadable model
        SafetensorsFile f = parse_safetensors(reinterpret_cast<const uint8_t *>(seeds[3].img.data()), seeds[3].img.size(), "seed");
        ModelSource ms = build_model_source(ct, {&f});
        if (ms.layers[0].down.bits != 8 || ms.layers[0].q.bits != 4 || !ms.layers[0].q.has_g_idx) {
            std::fprintf(stderr, "BUG: compressed-tensors seed loaded with the wrong schemes\n");
            return 1;
        }
    }

    std::map<std::string, long> outcomes;
    long escaped = 0, bad_views = 0;
    auto t0 = std::chrono::steady_clock::now();
    for (long it = 0; it < iterations; it++) {
        const bool config_case = it % 4 == 3;
        const Seed & sd = seeds[r.below(seeds.size())];
        std::string in = config_case ? configs[r.below(configs.size())] : sd.img;
        int n_mut = 1 + int(r.below(4));
        for (int m = 0; m < n_mut; m++) mutate(in, !config_case, r);
        // exact-size heap copy: ASan flags any read past the end
        std::vector<uint8_t> buf(in.begin(), in.end());
        const uint8_t * base = buf.data();
        std::string label = config_case ? "config " : "image ";
        try {
            if (config_case) {
                ModelConfig c = parse_model_config(in, r.coin(3) ? "{\"eos_token_id\":[1]}" : "", "fuzz");
                label += "parsed, ";
                SafetensorsFile f = parse_safetensors(reinterpret_cast<const uint8_t *>(sd.img.data()), sd.img.size(), "seed");
                ModelSource ms = build_model_source(c, {&f});
                (void)ms;
                label += "model ok";
            } else {
                SafetensorsFile f = parse_safetensors(base, buf.size(), "fuzz");
                for (const StTensor & t : f.tensors) {
                    if (t.data < base || t.nbytes() > buf.size() || size_t(t.data - base) > buf.size() - t.nbytes()) {
                        bad_views++;
                        std::fprintf(stderr, "BUG: tensor %s points outside the input (iteration %ld)\n",
                                     json::printable(t.name).c_str(), it);
                    }
                }
                label += "parsed, ";
                ModelSource ms = build_model_source(sd.cfg, {&f});
                uint64_t sum = touch(ms.embed) + touch(ms.final_norm) + touch(ms.lm_head);
                for (const LayerSource & L : ms.layers) {
                    sum += touch(L.attn_norm) + touch(L.ffn_norm) + touch(L.q) + touch(L.k) + touch(L.v) + touch(L.o) +
                           touch(L.gate) + touch(L.up) + touch(L.down);
                }
                if (sum == 0xFFFFFFFFFFFFFFFFull) std::printf(" "); // keep the reads
                label += "model ok";
            }
        } catch (const Error & e) {
            label += status_name(int(e.status));
            if (verbose) std::printf("%ld: %s: %s\n", it, label.c_str(), e.what());
        } catch (const std::exception & e) {
            escaped++;
            label += "ESCAPED std::exception";
            std::fprintf(stderr, "BUG: iteration %ld: non-shoal exception escaped: %s\n", it, e.what());
        } catch (...) {
            escaped++;
            label += "ESCAPED unknown";
            std::fprintf(stderr, "BUG: iteration %ld: unknown exception escaped\n", it);
        }
        outcomes[label]++;
    }
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

    std::printf("fuzz-safetensors: %ld iterations, seed %llu, %.2f s\n", iterations, (unsigned long long)seed, secs);
    for (const auto & o : outcomes) std::printf("  %-48s %ld\n", o.first.c_str(), o.second);
    if (escaped || bad_views) {
        std::printf("FAILED: %ld escaped exceptions, %ld views outside the input\n", escaped, bad_views);
        return 1;
    }
    std::printf("ok: every input ended in success or shoal::Error\n");
    return 0;
}
