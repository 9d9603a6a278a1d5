// test-model-source.cpp — the checkpoint loader: JSON parser, safetensors
// validation, config parsing and model directories. Writes tiny checkpoints
// into a temp dir; each bad input must give its exact shoal_status.
// Usage: test-model-source [stories260K-dir]   (default: $SHOAL_STORIES_DIR, else <repo>/models/stories260K)
#include "error.h"
#include "json.h"
#include "model-source.h"
#include "safetensors.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <functional>
#include <string>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

using namespace shoal;

// ---- tiny test harness ---------------------------------------------------------------

static int g_pass = 0, g_fail = 0;

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (cond) {                                                                  \
            g_pass++;                                                                \
        } else {                                                                     \
            g_fail++;                                                                \
            std::fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);     \
        }                                                                            \
    } while (0)

// Runs fn; it must throw shoal::Error with status want and a message containing needle.
static void expect_status(const char * what, shoal_status want, const std::function<void()> & fn,
                          const std::string & needle = "") {
    try {
        fn();
        g_fail++;
        std::fprintf(stderr, "FAIL %s: no error, expected status %d\n", what, int(want));
    } catch (const Error & e) {
        bool ok = e.status == want && std::string(e.what()).find(needle) != std::string::npos;
        if (std::getenv("SHOAL_TEST_VERBOSE")) std::printf("%-40s -> %d %s\n", what, int(e.status), e.what());
        if (ok) {
            g_pass++;
        } else {
            g_fail++;
            std::fprintf(stderr, "FAIL %s: got status %d \"%s\", expected %d containing \"%s\"\n", what, int(e.status),
                         e.what(), int(want), needle.c_str());
        }
    } catch (const std::exception & e) {
        g_fail++;
        std::fprintf(stderr, "FAIL %s: non-shoal exception %s\n", what, e.what());
    }
}

static void expect_ok(const char * what, const std::function<void()> & fn) {
    try {
        fn();
        g_pass++;
    } catch (const std::exception & e) {
        g_fail++;
        std::fprintf(stderr, "FAIL %s: unexpected error: %s\n", what, e.what());
    }
}

// ---- files and a tiny safetensors writer ----------------------------------------------

static std::string g_tmp; // temp root, removed at exit

static void write_file(const std::string & path, const std::string & bytes) {
    FILE * f = std::fopen(path.c_str(), "wb");
    if (!f) { std::perror(path.c_str()); std::exit(2); }
    if (!bytes.empty() && std::fwrite(bytes.data(), 1, bytes.size(), f) != bytes.size()) { std::perror(path.c_str()); std::exit(2); }
    std::fclose(f);
}

static std::string read_file(const std::string & path) {
    std::string s;
    FILE * f = std::fopen(path.c_str(), "rb");
    if (!f) return s;
    char buf[65536];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) s.append(buf, n);
    std::fclose(f);
    return s;
}

static void remove_tree(const std::string & path) {
    if (DIR * d = opendir(path.c_str())) {
        while (dirent * e = readdir(d)) {
            std::string n = e->d_name;
            if (n == "." || n == "..") continue;
            std::string p = path + "/" + n;
            struct stat st;
            if (lstat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) remove_tree(p);
            else unlink(p.c_str());
        }
        closedir(d);
    }
    rmdir(path.c_str());
}

static int g_dir_counter = 0;
static std::string new_dir(const char * tag) {
    std::string d = g_tmp + "/" + tag + "-" + std::to_string(g_dir_counter++);
    mkdir(d.c_str(), 0755);
    return d;
}

struct Entry {
    std::string name, dtype;
    std::vector<int64_t> shape;
    std::string bytes; // raw little-endian data
};

static size_t dsize(const std::string & dt) {
    if (dt == "F64" || dt == "I64") return 8;
    if (dt == "F32" || dt == "I32") return 4;
    if (dt == "F16" || dt == "BF16" || dt == "I16") return 2;
    return 1;
}

static uint32_t g_rng = 12345;
static uint32_t rnd() { g_rng = g_rng * 1664525u + 1013904223u; return g_rng; }

// An entry filled with deterministic bytes that are valid numbers of its dtype.
static Entry entry(const std::string & name, const std::string & dtype, std::vector<int64_t> shape) {
    Entry e{name, dtype, shape, {}};
    size_t n = 1;
    for (int64_t d : shape) n *= size_t(d);
    for (size_t i = 0; i < n; i++) {
        if (dtype == "F32") {
            float v = float(int(rnd() % 2001) - 1000) / 1000.0f;
            e.bytes.append(reinterpret_cast<const char *>(&v), 4);
        } else if (dtype == "F16" || dtype == "BF16") {
            uint16_t h = uint16_t(dtype == "F16" ? 0x3000 + rnd() % 0x0C00 : 0x3D00 + rnd() % 0x0100);
            e.bytes.append(reinterpret_cast<const char *>(&h), 2);
        } else {
            for (size_t b = 0; b < dsize(dtype); b++) e.bytes += char(rnd() & 0xFF);
        }
    }
    return e;
}

static std::string shape_json(const std::vector<int64_t> & s) {
    std::string r = "[";
    for (size_t i = 0; i < s.size(); i++) r += (i ? "," : "") + std::to_string(s[i]);
    return r + "]";
}

static std::string u64le(uint64_t n) {
    std::string r;
    for (int i = 0; i < 8; i++) r += char((n >> (8 * i)) & 0xFF);
    return r;
}

// A complete safetensors image with tensors packed back to back.
static std::string st_image(const std::vector<Entry> & es, const std::string & metadata = "") {
    std::string h = "{", data;
    if (!metadata.empty()) h += "\"__metadata__\":" + metadata;
    for (const Entry & e : es) {
        if (h.size() > 1) h += ",";
        h += "\"" + e.name + "\":{\"dtype\":\"" + e.dtype + "\",\"shape\":" + shape_json(e.shape) +
             ",\"data_offsets\":[" + std::to_string(data.size()) + "," + std::to_string(data.size() + e.bytes.size()) + "]}";
        data += e.bytes;
    }
    h += "}";
    while (h.size() % 8) h += ' '; // the reference writer pads the header with spaces
    return u64le(h.size()) + h + data;
}

// An image with a hand-written header and data region.
static std::string st_raw(const std::string & header, const std::string & data) { return u64le(header.size()) + header + data; }

// ---- tiny LLaMA checkpoints -----------------------------------------------------------

struct Tiny {
    std::string arch = "LlamaForCausalLM";
    int D = 32, F = 64, L = 2, H = 4, Hkv = 2, V = 48;
    std::string dtype = "F32";
    bool tie = true;
    bool lm_head = false;        // store lm_head.weight
    bool bias = false;           // q/k/v biases (Qwen2)
    int  awq_group = 0;          // > 0: AWQ gemm tensors with this group size
    std::string not_convert;     // e.g. "\"down_proj\"" for modules_to_not_convert
    std::string quant;           // raw quantization_config, overrides the AWQ default
    std::string extra;           // raw ",\"key\": value" added to config.json
    int hd() const { return D / H; }
};

static std::string config_json(const Tiny & t) {
    std::string c = "{\"architectures\": [\"" + t.arch + "\"], \"model_type\": \"llama\", \"hidden_size\": " +
                    std::to_string(t.D) + ", \"intermediate_size\": " + std::to_string(t.F) +
                    ", \"num_hidden_layers\": " + std::to_string(t.L) + ", \"num_attention_heads\": " + std::to_string(t.H) +
                    ", \"num_key_value_heads\": " + std::to_string(t.Hkv) + ", \"vocab_size\": " + std::to_string(t.V) +
                    ", \"max_position_embeddings\": 128, \"rms_norm_eps\": 1e-05, \"rope_theta\": 10000.0, \"rope_scaling\": null"
                    ", \"hidden_act\": \"silu\", \"tie_word_embeddings\": " + (t.tie ? "true" : "false") +
                    ", \"bos_token_id\": 1, \"eos_token_id\": 2, \"torch_dtype\": \"float32\"";
    if (!t.quant.empty()) {
        c += ", \"quantization_config\": " + t.quant;
    } else if (t.awq_group > 0) {
        c += ", \"quantization_config\": {\"quant_method\": \"awq\", \"zero_point\": true, \"group_size\": " +
             std::to_string(t.awq_group) + ", \"bits\": 4, \"version\": \"gemm\", \"modules_to_not_convert\": " +
             (t.not_convert.empty() ? std::string("null") : "[" + t.not_convert + "]") + "}";
    }
    return c + t.extra + "}";
}

static void add_linear(std::vector<Entry> & es, const Tiny & t, const std::string & p, int64_t out, int64_t in, bool bias) {
    bool awq = t.awq_group > 0 && (t.not_convert.empty() || t.not_convert.find(p.substr(p.rfind('.') + 1)) == std::string::npos);
    if (awq) {
        int64_t g = t.awq_group;
        es.push_back(entry(p + ".qweight", "I32", {in, out / 8}));
        es.push_back(entry(p + ".qzeros", "I32", {in / g, out / 8}));
        es.push_back(entry(p + ".scales", "F16", {in / g, out}));
    } else {
        es.push_back(entry(p + ".weight", t.awq_group > 0 ? "F16" : t.dtype, {out, in}));
    }
    if (bias) es.push_back(entry(p + ".bias", t.awq_group > 0 ? "F16" : t.dtype, {out}));
}

static std::vector<Entry> tiny_tensors(const Tiny & t) {
    std::vector<Entry> es;
    const std::string fd = t.awq_group > 0 ? "F16" : t.dtype;
    es.push_back(entry("model.embed_tokens.weight", fd, {t.V, t.D}));
    for (int i = 0; i < t.L; i++) {
        std::string p = "model.layers." + std::to_string(i);
        es.push_back(entry(p + ".input_layernorm.weight", fd, {t.D}));
        add_linear(es, t, p + ".self_attn.q_proj", t.H * t.hd(), t.D, t.bias);
        add_linear(es, t, p + ".self_attn.k_proj", t.Hkv * t.hd(), t.D, t.bias);
        add_linear(es, t, p + ".self_attn.v_proj", t.Hkv * t.hd(), t.D, t.bias);
        add_linear(es, t, p + ".self_attn.o_proj", t.D, t.H * t.hd(), false);
        es.push_back(entry(p + ".post_attention_layernorm.weight", fd, {t.D}));
        add_linear(es, t, p + ".mlp.gate_proj", t.F, t.D, false);
        add_linear(es, t, p + ".mlp.up_proj", t.F, t.D, false);
        add_linear(es, t, p + ".mlp.down_proj", t.D, t.F, false);
    }
    es.push_back(entry("model.norm.weight", fd, {t.D}));
    if (t.lm_head) es.push_back(entry("lm_head.weight", fd, {t.V, t.D}));
    return es;
}

static Entry * find_entry(std::vector<Entry> & es, const std::string & name) {
    for (Entry & e : es) {
        if (e.name == name) return &e;
    }
    std::fprintf(stderr, "test bug: no entry %s\n", name.c_str());
    std::exit(2);
}

static void remove_entry(std::vector<Entry> & es, const std::string & name) {
    for (size_t i = 0; i < es.size(); i++) {
        if (es[i].name == name) { es.erase(es.begin() + long(i)); return; }
    }
    std::fprintf(stderr, "test bug: no entry %s\n", name.c_str());
    std::exit(2);
}

// Writes config.json + model.safetensors (or the given image) into a new dir.
static std::string write_model(const Tiny & t, const std::string & image, const char * tag) {
    std::string d = new_dir(tag);
    write_file(d + "/config.json", config_json(t));
    write_file(d + "/generation_config.json", "{\"bos_token_id\": 1, \"eos_token_id\": [2, 3], \"max_length\": 128}");
    write_file(d + "/model.safetensors", image);
    return d;
}
static std::string write_model(const Tiny & t, const char * tag) { return write_model(t, st_image(tiny_tensors(t)), tag); }

// ---- JSON ---------------------------------------------------------------------------------

static json::Value pj(const std::string & s) { return json::parse(s.data(), s.size(), SHOAL_ERR_CONFIG, "t"); }

static void test_json() {
    json::Value v = pj(" {\"a\": [1, -2.5, true, false, null], \"b\": \"x\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\ud83d\\ude00\"} ");
    CHECK(v.is_object() && v.keys.size() == 2);
    const json::Value * a = v.get("a");
    CHECK(a && a->is_array() && a->items.size() == 5);
    CHECK(a && a->items[0].is_int && a->items[0].integer == 1);
    CHECK(a && !a->items[1].is_int && a->items[1].number == -2.5);
    CHECK(a && a->items[2].is_bool() && a->items[2].boolean && a->items[4].is_null());
    const json::Value * b = v.get("b");
    CHECK(b && b->str == std::string("x\"\\/\b\f\n\r\t\xC3\xA9\xF0\x9F\x98\x80"));
    CHECK(v.get("missing") == nullptr);

    json::Value big = pj("[9007199254740993, -9223372036854775808, 9223372036854775808, 1e2, 2.0, -0, 1.5e-3]");
    CHECK(big.items[0].is_int && big.items[0].integer == 9007199254740993LL); // exact beyond 2^53
    CHECK(big.items[1].is_int && big.items[1].integer == INT64_MIN);
    CHECK(!big.items[2].is_int && big.items[2].number > 9.2e18);            // does not fit int64
    CHECK(big.items[3].is_int && big.items[3].integer == 100);
    CHECK(big.items[4].is_int && big.items[4].integer == 2);
    CHECK(big.items[5].is_int && big.items[5].integer == 0);
    CHECK(!big.items[6].is_int && std::fabs(big.items[6].number - 0.0015) < 1e-12);
    CHECK(pj("\"\xE2\x82\xAC\"").str == "\xE2\x82\xAC"); // raw UTF-8 passes through

    const char * bad[] = {
        "", "   ", "{", "[1,]", "{\"a\":1,}", "01", "1.", ".5", "-", "1e", "+1", "NaN", "Infinity", "[1 2]",
        "{\"a\" 1}", "{1:2}", "\"abc", "\"a\\x\"", "\"\\u12\"", "\"\\ud83d\"", "\"\\ude00\"", "\"\\ud83d\\u0041\"",
        "\"a\nb\"", "\"\xC3\x28\"", "\"\xC0\xAF\"", "\"\xE0\x80\xAF\"", "\"\xF0\x80\x80\xAF\"", "\"\xED\xA0\x80\"", "\"\xF4\x90\x80\x80\"", "\"\xE2\x82\"",
        "{\"a\":1,\"a\":2}", "[1] x", "tru", "nul", "1e999", "{\"a\":1}}", "//c\n1", "'a'", "[\"\\u0000\"]x",
    };
    for (const char * s : bad) {
        std::string what = std::string("json bad input: ") + s;
        expect_status(what.c_str(), SHOAL_ERR_CONFIG, [&] { pj(s); }, "invalid JSON at byte");
    }
    // NUL inside the text is not whitespace
    expect_status("json embedded NUL", SHOAL_ERR_CONFIG, [] { pj(std::string("1\0", 2)); });
    // the error names the byte offset
    expect_status("json offset", SHOAL_ERR_CONFIG, [] { pj("[1, 2, x]"); }, "byte 7");

    // depth limit: 64 levels parse, 65 fail; a deep attack input fails cleanly
    std::string ok_depth = std::string(64, '[') + std::string(64, ']');
    expect_ok("json depth 64", [&] { pj(ok_depth); });
    std::string deep = std::string(65, '[') + std::string(65, ']');
    expect_status("json depth 65", SHOAL_ERR_CONFIG, [&] { pj(deep); }, "nesting");
    std::string very_deep(1 << 20, '[');
    expect_status("json depth 1M", SHOAL_ERR_CONFIG, [&] { pj(very_deep); }, "nesting");

    json::Limits lim;
    lim.max_bytes = 10;
    expect_status("json length limit", SHOAL_ERR_ST_HEADER_JSON,
                  [&] { json::parse("[1,2,3,4,5,6]", 13, SHOAL_ERR_ST_HEADER_JSON, "t", lim); }, "exceeds the limit");
    lim = json::Limits();
    lim.max_values = 100;
    std::string many = "[";
    for (int i = 0; i < 200; i++) many += i ? ",0" : "0";
    many += "]";
    expect_status("json value limit", SHOAL_ERR_ST_HEADER_JSON,
                  [&] { json::parse(many.data(), many.size(), SHOAL_ERR_ST_HEADER_JSON, "t", lim); }, "too many values");
}

// ---- safetensors ----------------------------------------------------------------------------

static SafetensorsFile pst(const std::string & img) {
    return parse_safetensors(reinterpret_cast<const uint8_t *>(img.data()), img.size(), "mem.safetensors");
}

static void test_safetensors() {
    std::vector<Entry> es = {entry("a", "F32", {2, 3}), entry("b", "BF16", {4}), entry("c", "BOOL", {5}),
                             entry("d", "I64", {1}), entry("e", "F64", {}), entry("empty", "F16", {0, 7}),
                             entry("f", "I8", {3}), entry("g", "U8", {1, 1, 1, 1, 2})};
    std::string img = st_image(es, "{\"format\":\"pt\"}");
    expect_ok("st valid", [&] {
        SafetensorsFile f = pst(img);
        CHECK(f.tensors.size() == es.size());
        CHECK(f.metadata.size() == 1 && f.metadata["format"] == "pt");
        const StTensor * a = f.find("a");
        CHECK(a && a->dtype == DType::F32 && a->shape.size() == 2 && a->nbytes() == 24);
        CHECK(a && std::memcmp(a->data, es[0].bytes.data(), 24) == 0);
        const StTensor * c = f.find("c");
        CHECK(c && c->dtype_str == "BOOL" && c->dtype == DType::U8 && c->nbytes() == 5);
        const StTensor * e = f.find("e");
        CHECK(e && e->shape.empty() && e->nbytes() == 8); // a scalar has one element
        TensorView v = f.view(*a);
        CHECK(v.n_dims == 2 && v.shape[0] == 2 && v.shape[1] == 3 && v.nbytes == 24 && v.data == a->data);
        CHECK(f.find("nope") == nullptr);
        const StTensor * g = f.find("g");
        expect_status("st view of rank 5", SHOAL_ERR_SHAPE, [&] { f.view(*g); }, "tensor g");
    });
    // an empty header and no data is a valid (empty) file
    expect_ok("st empty", [] { CHECK(pst(st_raw("{}", "")).tensors.empty()); });

    // truncated: shorter than 8 bytes, or the data region cut off
    expect_status("st 0 bytes", SHOAL_ERR_ST_TRUNCATED, [] { pst(""); }, "mem.safetensors");
    expect_status("st 5 bytes", SHOAL_ERR_ST_TRUNCATED, [&] { pst(img.substr(0, 5)); });
    expect_status("st data cut", SHOAL_ERR_ST_TRUNCATED, [&] { pst(img.substr(0, img.size() - 3)); }, "truncated");
    // header length past the end / over the limit
    std::string hl = img;
    hl.replace(0, 8, u64le(img.size()));
    expect_status("st header length past end", SHOAL_ERR_ST_HEADER_LEN, [&] { pst(hl); }, "past the end");
    hl.replace(0, 8, u64le(~uint64_t(0)));
    expect_status("st header length 2^64-1", SHOAL_ERR_ST_HEADER_LEN, [&] { pst(hl); });
    expect_status("st header length > 100MB", SHOAL_ERR_ST_HEADER_LEN, [] { pst(u64le(200000000) + std::string(16, ' ')); }, "limit");
    // not JSON / wrong structure
    expect_status("st header not JSON", SHOAL_ERR_ST_HEADER_JSON, [] { pst(st_raw("{\"a\": {\"dtype\": F32}}", "")); }, "mem.safetensors");
    expect_status("st header array", SHOAL_ERR_ST_HEADER_JSON, [] { pst(st_raw("[]", "")); }, "not an object");
    expect_status("st entry not object", SHOAL_ERR_ST_HEADER_JSON, [] { pst(st_raw("{\"a\": 3}", "")); }, "tensor a");
    expect_status("st missing dtype", SHOAL_ERR_ST_HEADER_JSON,
                  [] { pst(st_raw("{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", "0000")); }, "dtype");
    expect_status("st negative dim", SHOAL_ERR_ST_HEADER_JSON,
                  [] { pst(st_raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", "0000")); }, "shape");
    expect_status("st fractional dim", SHOAL_ERR_ST_HEADER_JSON,
                  [] { pst(st_raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", "0000")); });
    expect_status("st offsets one number", SHOAL_ERR_ST_HEADER_JSON,
                  [] { pst(st_raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", "0000")); });
    expect_status("st metadata non-string", SHOAL_ERR_ST_HEADER_JSON,
                  [] { pst(st_raw("{\"__metadata__\":{\"k\":1}}", "")); }, "__metadata__");
    expect_status("st duplicate tensor", SHOAL_ERR_ST_HEADER_JSON, [] {
        pst(st_raw("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}", "xy"));
    }, "duplicate");
    // unknown dtype
    expect_status("st unknown dtype", SHOAL_ERR_ST_DTYPE,
                  [] { pst(st_raw("{\"w\":{\"dtype\":\"Q4_K\",\"shape\":[1],\"data_offsets\":[0,4]}}", "0000")); }, "tensor w");
    // offsets: out of range, overlapping, size != shape*dtype, begin > end, negative, huge shapes
    expect_status("st offsets out of range", SHOAL_ERR_ST_OFFSETS, [] {
        pst(st_raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                   "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[1000,1008]}}", std::string(16, 'x')));
    }, "tensor b");
    expect_status("st overlap", SHOAL_ERR_ST_OFFSETS, [] {
        pst(st_raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                   "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", std::string(16, 'x')));
    }, "overlap");
    expect_status("st same range twice", SHOAL_ERR_ST_OFFSETS, [] {
        pst(st_raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                   "\"b\":{\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[0,8]}}", std::string(8, 'x')));
    }, "overlap");
    expect_status("st size mismatch", SHOAL_ERR_ST_OFFSETS,
                  [] { pst(st_raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", std::string(12, 'x'))); },
                  "needs 12");
    expect_status("st begin > end", SHOAL_ERR_ST_OFFSETS,
                  [] { pst(st_raw("{\"a\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[8,4]}}", std::string(12, 'x'))); });
    expect_status("st negative offset", SHOAL_ERR_ST_OFFSETS,
                  [] { pst(st_raw("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[-4,0]}}", std::string(4, 'x'))); });
    expect_status("st shape overflow", SHOAL_ERR_ST_OFFSETS, [] {
        pst(st_raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,0]}}", ""));
    }, "overflows");
    expect_status("st huge end", SHOAL_ERR_ST_OFFSETS, [] {
        pst(st_raw("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[9223372036854775806,9223372036854775807]}}", "x"));
    });
    // an empty tensor anywhere inside the region is fine
    expect_ok("st empty tensor inside another's range", [] {
        pst(st_raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                   "\"z\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]}}", std::string(8, 'x')));
    });

    // through a real file mapping
    std::string d = new_dir("st");
    write_file(d + "/ok.safetensors", img);
    expect_ok("st open file", [&] {
        SafetensorsFile f = open_safetensors(d + "/ok.safetensors");
        CHECK(f.file && f.file->size == img.size() && f.tensors.size() == es.size());
        CHECK(std::memcmp(f.find("b")->data, es[1].bytes.data(), 8) == 0);
        // released pages read back from the file
        const StTensor * a = f.find("a");
        release_pages(f.file->data, f.file->size);
        CHECK(std::memcmp(a->data, es[0].bytes.data(), 24) == 0);
    });
    expect_status("st missing file", SHOAL_ERR_IO, [&] { open_safetensors(d + "/nope.safetensors"); }, "nope.safetensors");
    expect_status("st directory", SHOAL_ERR_IO, [&] { open_safetensors(d); }, "not a regular file");
    write_file(d + "/empty.safetensors", "");
    expect_status("st empty file", SHOAL_ERR_ST_TRUNCATED, [&] { open_safetensors(d + "/empty.safetensors"); }, "empty.safetensors");
}

// ---- config.json ----------------------------------------------------------------------------

static ModelConfig pc(const Tiny & t, const std::string & gen = "") { return parse_model_config(config_json(t), gen, "dir"); }

static void test_config() {
    expect_ok("config tiny", [] {
        ModelConfig c = pc(Tiny(), "{\"eos_token_id\": [2, 5], \"bos_token_id\": 3}");
        CHECK(c.arch == "LlamaForCausalLM" && c.hidden_size == 32 && c.intermediate_size == 64 && c.n_layers == 2);
        CHECK(c.n_heads == 4 && c.n_kv_heads == 2 && c.head_dim == 8 && c.vocab_size == 48 && c.max_position_embeddings == 128);
        CHECK(std::fabs(c.rms_norm_eps - 1e-5f) < 1e-9f && c.rope_theta == 10000.0f && c.rope_scaling == RopeScaling::None);
        CHECK(c.tie_word_embeddings && !c.qkv_bias && c.quant == QuantMethod::None && c.torch_dtype == "float32");
        CHECK(c.bos_token_id == 3 && c.eos_token_ids == std::vector<int>({2, 5})); // generation_config wins
    });
    expect_ok("config defaults", [] {
        ModelConfig c = parse_model_config("{\"architectures\":[\"MistralForCausalLM\"],\"hidden_size\":64,\"intermediate_size\":128,"
                                           "\"num_hidden_layers\":1,\"num_attention_heads\":8,\"vocab_size\":10,"
                                           "\"max_position_embeddings\":32,\"eos_token_id\":[1,2]}", "", "d");
        CHECK(c.n_kv_heads == 8 && c.head_dim == 8 && !c.tie_word_embeddings && c.bos_token_id == -1);
        CHECK(c.eos_token_ids == std::vector<int>({1, 2}));
    });
    Tiny t;
    t.extra = ", \"head_dim\": 16, \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 1.0,"
              " \"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 8192}";
    {
        std::string cj = config_json(t); // drop the default "rope_scaling": null, extra sets it
        cj.erase(cj.find(", \"rope_scaling\": null"), std::strlen(", \"rope_scaling\": null"));
        expect_ok("config llama3 rope + head_dim", [&] {
            ModelConfig c = parse_model_config(cj, "", "d");
            CHECK(c.head_dim == 16 && c.rope_scaling == RopeScaling::Llama3 && c.rope_factor == 8.0f);
            CHECK(c.rope_low_freq_factor == 1.0f && c.rope_high_freq_factor == 4.0f && c.rope_original_max_position == 8192);
        });
        std::string lin = config_json(Tiny());
        lin.replace(lin.find("\"rope_scaling\": null"), std::strlen("\"rope_scaling\": null"),
                    "\"rope_scaling\": {\"type\": \"linear\", \"factor\": 2}");
        expect_ok("config linear rope", [&] {
            ModelConfig c = parse_model_config(lin, "", "d");
            CHECK(c.rope_scaling == RopeScaling::Linear && c.rope_factor == 2.0f);
        });
        std::string yarn = config_json(Tiny());
        yarn.replace(yarn.find("\"rope_scaling\": null"), std::strlen("\"rope_scaling\": null"),
                     "\"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4}");
        expect_status("config yarn rope", SHOAL_ERR_CONFIG, [&] { parse_model_config(yarn, "", "d"); },
                      "unsupported rope_scaling type \"yarn\"");
    }
    t = Tiny();
    t.arch = "GPT2LMHeadModel";
    expect_status("config unsupported arch", SHOAL_ERR_UNSUPPORTED_ARCH, [&] { pc(t); }, "GPT2LMHeadModel");
    expect_status("config unsupported arch lists", SHOAL_ERR_UNSUPPORTED_ARCH, [&] { pc(t); }, "Qwen2ForCausalLM");
    expect_status("config missing key", SHOAL_ERR_CONFIG, [] {
        parse_model_config("{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":64}", "", "d");
    }, "intermediate_size");
    t = Tiny();
    t.Hkv = 3;
    expect_status("config kv heads", SHOAL_ERR_CONFIG, [&] { pc(t); }, "num_key_value_heads");
    t = Tiny();
    t.D = 0;
    expect_status("config zero hidden", SHOAL_ERR_CONFIG, [&] { pc(t); }, "hidden_size");
    std::string gelu = config_json(Tiny());
    gelu.replace(gelu.find("\"silu\""), 6, "\"gelu\"");
    expect_status("config gelu", SHOAL_ERR_CONFIG, [&] { parse_model_config(gelu, "", "d"); }, "hidden_act \"gelu\" is not supported");
    expect_status("config eos out of vocab", SHOAL_ERR_CONFIG, [] { pc(Tiny(), "{\"eos_token_id\": 48}"); }, "generation_config.json");
    expect_status("config not JSON", SHOAL_ERR_CONFIG, [] { parse_model_config("{nope", "", "d"); }, "d/config.json");
    t = Tiny();
    t.extra = ", \"attention_bias\": true, \"mlp_bias\": true";
    expect_ok("config attention_bias", [&] { ModelConfig c = pc(t); CHECK(c.qkv_bias && c.o_bias && c.mlp_bias); });
    t = Tiny();
    t.arch = "Qwen2ForCausalLM";
    expect_ok("config qwen2 bias", [&] { ModelConfig c = pc(t); CHECK(c.qkv_bias && !c.o_bias); });

    // quantization_config
    t = Tiny();
    t.awq_group = 32;
    t.not_convert = "\"down_proj\", \"lm_head\"";
    expect_ok("config awq", [&] {
        ModelConfig c = pc(t);
        CHECK(c.quant == QuantMethod::Awq && c.quant_bits == 4 && c.group_size == 32);
        CHECK(c.modules_to_not_convert == std::vector<std::string>({"down_proj", "lm_head"}));
    });
    struct QCase { const char * q; shoal_status st; const char * needle; };
    const QCase cases[] = {
        {"{\"quant_method\":\"awq\",\"bits\":3,\"group_size\":128,\"zero_point\":true,\"version\":\"gemm\"}", SHOAL_ERR_UNSUPPORTED_QUANT, "bits 3 is not supported, only 4"},
        {"{\"quant_method\":\"awq\",\"bits\":4,\"group_size\":128,\"version\":\"gemv_faster\"}", SHOAL_ERR_UNSUPPORTED_QUANT, "gemv_faster"},
        {"{\"quant_method\":\"gptq\",\"bits\":5,\"group_size\":128}", SHOAL_ERR_UNSUPPORTED_QUANT, "bits 5 is not supported for GPTQ"},
        {"{\"quant_method\":\"gptq\",\"group_size\":128}", SHOAL_ERR_UNSUPPORTED_QUANT, "needs \"bits\""},
        {"{\"quant_method\":\"gptq\",\"bits\":4,\"group_size\":-2}", SHOAL_ERR_UNSUPPORTED_QUANT, "group_size -2"},
        {"{\"quant_method\":\"gptq\",\"bits\":4,\"checkpoint_format\":\"marlin\"}", SHOAL_ERR_UNSUPPORTED_QUANT, "marlin"},
        {"{\"quant_method\":\"gptq\",\"bits\":4,\"sym\":1}", SHOAL_ERR_CONFIG, "sym must be true or false"},
        {"{\"quant_method\":\"efficientqat\",\"bits\":1}", SHOAL_ERR_UNSUPPORTED_QUANT, "bits 1"},
        {"{\"quant_method\":\"bitnet\",\"bits\":2}", SHOAL_ERR_UNSUPPORTED_QUANT, "bitnet"},
        {"{\"quant_method\":\"awq\",\"bits\":4,\"group_size\":128,\"version\":\"marlin\"}", SHOAL_ERR_UNSUPPORTED_QUANT, "marlin"},
        {"{\"quant_method\":\"awq\",\"bits\":4,\"group_size\":-1}", SHOAL_ERR_UNSUPPORTED_QUANT, "group_size -1"},
        {"{\"quant_method\":\"awq\",\"bits\":4,\"zero_point\":false}", SHOAL_ERR_UNSUPPORTED_QUANT, "zero_point"},
        {"{\"quant_method\":\"awq\",\"modules_to_not_convert\":[1]}", SHOAL_ERR_CONFIG, "modules_to_not_convert"},
    };
    for (const QCase & qc : cases) {
        t = Tiny();
        t.quant = qc.q;
        expect_status(qc.q, qc.st, [&] { pc(t); }, qc.needle);
    }
    t = Tiny();
    t.quant = "{\"quant_method\":\"gptq\",\"bits\":3,\"group_size\":-1,\"desc_act\":true,\"sym\":false,\"checkpoint_format\":\"gptq_v2\"}";
    expect_ok("config gptq v2", [&] {
        ModelConfig c = pc(t);
        CHECK(c.quant == QuantMethod::Gptq && c.quant_format == QFormat::Gptq && c.quant_bits == 3 && c.group_size == -1);
        CHECK(c.desc_act && !c.gptq_sym && c.zero_offset == 0 && quant_name(c) == "gptq-v2-w3g-1-act");
    });
    t.quant = "{\"quant_method\":\"gptq\",\"bits\":8,\"group_size\":64}";
    expect_ok("config gptq v1", [&] { ModelConfig c = pc(t); CHECK(c.zero_offset == 1 && c.quant_bits == 8 && c.gptq_sym && !c.desc_act); });
    t.quant = "{\"quant_method\":\"awq\",\"version\":\"gemv_fast\",\"group_size\":64}";
    expect_ok("config awq gemv_fast", [&] { ModelConfig c = pc(t); CHECK(c.quant_format == QFormat::AwqGemvFast && c.group_size == 64); });
    t = Tiny();
    t.quant = "{\"quant_method\":\"awq\",\"version\":\"GEMM\"}";
    expect_ok("config awq defaults", [&] { ModelConfig c = pc(t); CHECK(c.group_size == 128 && c.quant_bits == 4); });
}

// ---- model directories ------------------------------------------------------------------

static bool same_bytes(const TensorView & v, const Entry & e) {
    return v.data && v.nbytes == e.bytes.size() && std::memcmp(v.data, e.bytes.data(), v.nbytes) == 0;
}


// ---- low-bit checkpoints: GPTQ v1/v2, EfficientQAT native, AutoAWQ gemv / gemv_fast ----------

struct LowbitSpec {
    std::string fmt;   // "gptq" | "eqat" | "gemv" | "gemv_fast"
    int bits = 4;
    int64_t G = 32;    // resolved group (-1 in the config → in_features)
    bool g_idx = true;
};

// Replaces every decoder linear's .weight by the format's tensors (valid g_idx = k / G).
static std::vector<Entry> lowbit_tensors(const Tiny & t, const LowbitSpec & q) {
    std::vector<Entry> es = tiny_tensors(t), out;
    auto cdiv = [](int64_t a, int64_t b) { return (a + b - 1) / b; };
    for (const Entry & e : es) {
        const std::string & n = e.name;
        const bool lin = n.size() > 7 && n.compare(n.size() - 7, 7, ".weight") == 0 && n.find("_proj") != std::string::npos;
        if (!lin) { out.push_back(e); continue; }
        const std::string p = n.substr(0, n.size() - 7);
        const int64_t N = e.shape[0], K = e.shape[1], G = q.G > 0 ? q.G : K, ng = cdiv(K, G), b = q.bits;
        if (q.fmt == "gptq" || q.fmt == "eqat") {
            const bool gptq = q.fmt == "gptq";
            const int64_t per = 32 / b;
            out.push_back(entry(p + ".qweight", "I32", {gptq ? cdiv(K * b, 32) : cdiv(K, per), N}));
            out.push_back(entry(p + ".qzeros", "I32", {ng, gptq ? cdiv(N * b, 32) : cdiv(N, per)}));
            out.push_back(entry(p + ".scales", "F16", {ng, N}));
            if (q.g_idx) {
                Entry gi{p + ".g_idx", "I32", {K}, {}};
                for (int64_t k = 0; k < K; k++) {
                    const int32_t v = int32_t(k / G);
                    gi.bytes.append(reinterpret_cast<const char *>(&v), 4);
                }
                out.push_back(gi);
            }
        } else if (q.fmt == "gemv") {
            const int64_t mult = G >= 128 ? 1 : G == 64 ? 2 : 4, W = cdiv(cdiv(K / G, 8), mult) * mult;
            out.push_back(entry(p + ".qweight", "I32", {N, K / 8}));
            out.push_back(entry(p + ".qzeros", "I32", {N, W}));
            out.push_back(entry(p + ".scales", "F16", {N, 8 * W}));
        } else {
            const int64_t mult = G >= 128 ? 1 : G == 64 ? 2 : 4, W = cdiv(cdiv(K / G, 8), mult) * mult;
            out.push_back(entry(p + ".qweight", "I16", {N / 4, K}));
            out.push_back(entry(p + ".scales", "F16", {8 * W, N}));
            out.push_back(entry(p + ".scaled_zeros", "F16", {8 * W, N}));
        }
    }
    return out;
}

static Entry g_idx_entry(const std::string & name, std::vector<int32_t> v) {
    Entry e{name, "I32", {int64_t(v.size())}, {}};
    e.bytes.assign(reinterpret_cast<const char *>(v.data()), v.size() * 4);
    return e;
}

static void test_lowbit_models() {
    Tiny t; // D 32, F 64: q [32, 32], k/v [16, 32], gate/up [64, 32], down [32, 64]
    t.dtype = "F16";
    // GPTQ v1 4-bit g32 through quantize_config.json (no quantization_config in config.json)
    {
        std::vector<Entry> es = lowbit_tensors(t, {"gptq", 4, 32, true});
        std::string d = write_model(t, st_image(es), "gptq4");
        write_file(d + "/quantize_config.json", "{\"bits\": 4, \"group_size\": 32, \"desc_act\": false, \"sym\": true}");
        expect_ok("model gptq 4-bit quantize_config.json", [&] {
            ModelSource ms = load_model_source(d);
            const LinearSource & q = ms.layers[0].q;
            CHECK(ms.cfg.quant == QuantMethod::Gptq && q.qfmt == QFormat::Gptq && q.bits == 4 && q.group_size == 32);
            CHECK(q.zero_offset == 1 && q.has_g_idx && q.qweight.shape[0] == 4 && q.qweight.shape[1] == 32);
            CHECK(ms.layers[1].down.qzeros.shape[0] == 2 && ms.layers[1].down.qzeros.shape[1] == 4);
            CHECK(same_bytes(ms.layers[1].up.qweight, *find_entry(es, "model.layers.1.mlp.up_proj.qweight")));
            CHECK(quant_name(ms.cfg) == "gptq-w4g32");
        });
        // mixed-up metadata: the config claims 2 bits for 4-bit tensors
        std::string d2 = write_model(t, st_image(es), "gptq-bits");
        write_file(d2 + "/quantize_config.json", "{\"bits\": 2, \"group_size\": 32}");
        expect_status("model gptq bits vs shapes", SHOAL_ERR_SHAPE, [&] { load_model_source(d2); },
                      "model.layers.0.self_attn.q_proj.qweight has shape [4, 32] but gptq-w2g32 (bits 2, group 32) implies [2, 32]");
        // g_idx out of range
        std::vector<Entry> bad = es;
        std::vector<int32_t> gi(32, 0);
        gi[7] = 1; // only group 0 exists for in_features 32, group 32
        *find_entry(bad, "model.layers.1.self_attn.k_proj.g_idx") = g_idx_entry("model.layers.1.self_attn.k_proj.g_idx", gi);
        std::string d3 = write_model(t, st_image(bad), "gptq-gidx");
        write_file(d3 + "/quantize_config.json", "{\"bits\": 4, \"group_size\": 32}");
        expect_status("model gptq g_idx out of range", SHOAL_ERR_QUANT_METADATA, [&] { load_model_source(d3); },
                      "model.layers.1.self_attn.k_proj.g_idx[7] = 1 is outside [0, 1)");
        // zeros of the wrong width
        bad = es;
        *find_entry(bad, "model.layers.0.mlp.gate_proj.qzeros") = entry("model.layers.0.mlp.gate_proj.qzeros", "I32", {1, 4});
        std::string d4 = write_model(t, st_image(bad), "gptq-zeros");
        write_file(d4 + "/quantize_config.json", "{\"bits\": 4, \"group_size\": 32}");
        expect_status("model gptq zeros width", SHOAL_ERR_SHAPE, [&] { load_model_source(d4); },
                      "model.layers.0.mlp.gate_proj.qzeros has shape [1, 4] but gptq-w4g32 (bits 4, group 32) implies [1, 8]");
        // g_idx of the wrong dtype / length
        bad = es;
        *find_entry(bad, "model.layers.0.mlp.up_proj.g_idx") = entry("model.layers.0.mlp.up_proj.g_idx", "I64", {32});
        std::string d5 = write_model(t, st_image(bad), "gptq-gidx-dtype");
        write_file(d5 + "/quantize_config.json", "{\"bits\": 4, \"group_size\": 32}");
        expect_status("model gptq g_idx dtype", SHOAL_ERR_ST_DTYPE, [&] { load_model_source(d5); }, "up_proj.g_idx has dtype I64");
        // desc_act without g_idx
        std::vector<Entry> nog = lowbit_tensors(t, {"gptq", 4, 32, false});
        std::string d6 = write_model(t, st_image(nog), "gptq-noact");
        write_file(d6 + "/quantize_config.json", "{\"bits\": 4, \"group_size\": 32, \"desc_act\": true}");
        expect_status("model gptq desc_act without g_idx", SHOAL_ERR_MISSING_TENSOR, [&] { load_model_source(d6); },
                      "model.layers.0.self_attn.q_proj.g_idx is missing but quantization_config has desc_act true");
        // scales F32 are accepted (any float dtype)
        bad = es;
        *find_entry(bad, "model.layers.0.mlp.up_proj.scales") = entry("model.layers.0.mlp.up_proj.scales", "F32", {1, 64});
        std::string d7 = write_model(t, st_image(bad), "gptq-f32-scales");
        write_file(d7 + "/quantize_config.json", "{\"bits\": 4, \"group_size\": 32}");
        expect_ok("model gptq f32 scales", [&] { load_model_source(d7); });
        // qweight of the wrong dtype
        bad = es;
        *find_entry(bad, "model.layers.0.mlp.up_proj.qweight") = entry("model.layers.0.mlp.up_proj.qweight", "I16", {4, 64});
        std::string d8 = write_model(t, st_image(bad), "gptq-qw-dtype");
        write_file(d8 + "/quantize_config.json", "{\"bits\": 4, \"group_size\": 32}");
        expect_status("model gptq qweight dtype", SHOAL_ERR_ST_DTYPE, [&] { load_model_source(d8); }, "up_proj.qweight has dtype I16");
    }
    // GPTQ v2 3-bit, one group over all inputs, quantization_config in config.json; mixed:
    // a module left as .weight (GPTQModel skips) loads unquantized
    for (int bits : {2, 3, 8}) {
        Tiny g = t;
        g.quant = "{\"quant_method\":\"gptq\",\"bits\":" + std::to_string(bits) + ",\"group_size\":-1,\"checkpoint_format\":\"gptq_v2\",\"sym\":false}";
        std::vector<Entry> es = lowbit_tensors(g, {"gptq", bits, -1, true});
        remove_entry(es, "model.layers.1.mlp.down_proj.qweight");
        remove_entry(es, "model.layers.1.mlp.down_proj.qzeros");
        remove_entry(es, "model.layers.1.mlp.down_proj.scales");
        remove_entry(es, "model.layers.1.mlp.down_proj.g_idx");
        es.push_back(entry("model.layers.1.mlp.down_proj.weight", "F16", {32, 64}));
        std::string d = write_model(g, st_image(es), "gptq-v2");
        expect_ok(("model gptq v2 w" + std::to_string(bits)).c_str(), [&] {
            ModelSource ms = load_model_source(d);
            const LinearSource & dn = ms.layers[0].down;
            CHECK(dn.qfmt == QFormat::Gptq && dn.bits == bits && dn.group_size == 64 && dn.zero_offset == 0);
            CHECK(dn.qweight.shape[0] == 64 * bits / 32 && dn.scales.shape[0] == 1);
            CHECK(ms.layers[1].down.qfmt == QFormat::None && ms.layers[1].down.weight.dtype == DType::F16);
        });
    }
    // EfficientQAT native: 3-bit packs 10 values per word; bits/group from shoal-quant.json
    {
        std::vector<Entry> es = lowbit_tensors(t, {"eqat", 3, 32, false});
        std::string d = write_model(t, st_image(es), "eqat3");
        write_file(d + "/shoal-quant.json", "{\"quant_method\": \"efficientqat\", \"bits\": 3, \"group_size\": 32}");
        expect_ok("model efficientqat native w3g32", [&] {
            ModelSource ms = load_model_source(d);
            const LinearSource & k = ms.layers[0].k;
            CHECK(ms.cfg.quant == QuantMethod::EfficientQat && k.qfmt == QFormat::EqatNative && k.bits == 3);
            CHECK(k.qweight.shape[0] == 4 && k.qzeros.shape[1] == 2 && !k.has_g_idx);
        });
        std::string d2 = write_model(t, st_image(es), "eqat-nosidecar");
        expect_status("model efficientqat without sidecar", SHOAL_ERR_MISSING_TENSOR, [&] { load_model_source(d2); },
                      "model.layers.0.self_attn.q_proj.weight is missing");
        std::string d3 = write_model(t, st_image(es), "eqat-bad-sidecar");
        write_file(d3 + "/shoal-quant.json", "{\"quant_method\": \"efficientqat\", \"bits\": 3, \"group_size\": \"32\"}");
        expect_status("model efficientqat bad sidecar", SHOAL_ERR_CONFIG, [&] { load_model_source(d3); }, "shoal-quant.json");
    }
    // AutoAWQ gemv (G 32 → zeros width 4) and gemv_fast (in_features % 64: only gate/up here)
    {
        Tiny g = t;
        g.quant = "{\"quant_method\":\"awq\",\"bits\":4,\"group_size\":32,\"zero_point\":true,\"version\":\"gemv\"}";
        std::vector<Entry> es = lowbit_tensors(g, {"gemv", 4, 32, false});
        std::string d = write_model(g, st_image(es), "gemv");
        expect_ok("model awq gemv", [&] {
            ModelSource ms = load_model_source(d);
            const LinearSource & q = ms.layers[0].q;
            CHECK(q.qfmt == QFormat::AwqGemv && !q.awq && q.qzeros.shape[1] == 4 && q.scales.shape[1] == 32);
        });
        Tiny f = t;
        f.D = 64; f.F = 128; f.H = 4; f.Hkv = 4;
        f.quant = "{\"quant_method\":\"awq\",\"bits\":4,\"group_size\":64,\"zero_point\":true,\"version\":\"gemv_fast\"}";
        std::vector<Entry> ef = lowbit_tensors(f, {"gemv_fast", 4, 64, false});
        std::string d2 = write_model(f, st_image(ef), "gemv-fast");
        expect_ok("model awq gemv_fast", [&] {
            ModelSource ms = load_model_source(d2);
            const LinearSource & u = ms.layers[1].up;
            CHECK(u.qfmt == QFormat::AwqGemvFast && u.qweight.dtype == DType::I16 && u.qweight.shape[0] == 32 && u.scales.shape[0] == 16);
        });
        std::vector<Entry> bad = ef;
        *find_entry(bad, "model.layers.0.mlp.up_proj.scaled_zeros") = entry("model.layers.0.mlp.up_proj.scaled_zeros", "F16", {8, 128});
        std::string d3 = write_model(f, st_image(bad), "gemv-fast-bad");
        expect_status("model awq gemv_fast zeros", SHOAL_ERR_SHAPE, [&] { load_model_source(d3); }, "up_proj.scaled_zeros has shape [8, 128]");
    }
}

// ---- compressed-tensors pack-quantized --------------------------------------------------

struct CtSpec {
    int bits = 4;
    int64_t G = 32;            // -1: strategy channel
    bool sym = true;
    bool g_idx = false;        // weight_g_idx (valid: k / G)
    std::vector<std::string> keep; // linear names (suffix match) left as .weight
};

// Replaces every decoder linear's .weight by weight_packed / weight_scale /
// weight_zero_point / weight_shape (/ weight_g_idx), shapes as pack_quantized.py writes them.
static std::vector<Entry> ct_tensors(const Tiny & t, const CtSpec & q) {
    std::vector<Entry> es = tiny_tensors(t), out;
    auto cdiv = [](int64_t a, int64_t b) { return (a + b - 1) / b; };
    for (const Entry & e : es) {
        const std::string & n = e.name;
        const bool lin = n.size() > 7 && n.compare(n.size() - 7, 7, ".weight") == 0 && n.find("_proj") != std::string::npos;
        bool keep = false;
        for (const std::string & k : q.keep) keep = keep || n.find(k + ".weight") != std::string::npos;
        if (!lin || keep) { out.push_back(e); continue; }
        const std::string p = n.substr(0, n.size() - 7);
        const int64_t N = e.shape[0], K = e.shape[1], G = q.G > 0 ? q.G : K, ng = cdiv(K, G), pf = 32 / q.bits;
        out.push_back(entry(p + ".weight_packed", "I32", {N, cdiv(K, pf)}));
        out.push_back(entry(p + ".weight_scale", "F16", {N, ng}));
        if (!q.sym) out.push_back(entry(p + ".weight_zero_point", "I32", {cdiv(N, pf), ng}));
        Entry ws{p + ".weight_shape", "I64", {2}, {}};
        for (int64_t v : {N, K}) ws.bytes.append(reinterpret_cast<const char *>(&v), 8);
        out.push_back(ws);
        if (q.g_idx) {
            Entry gi{p + ".weight_g_idx", "I32", {K}, {}};
            for (int64_t k = 0; k < K; k++) {
                const int32_t v = int32_t(k / G);
                gi.bytes.append(reinterpret_cast<const char *>(&v), 4);
            }
            out.push_back(gi);
        }
    }
    return out;
}

// quantization_config of one group: weights args as JSON (without braces), targets, ignore.
static std::string ct_config(const std::string & weights, const std::string & targets = "[\"Linear\"]",
                             const std::string & ignore = "[\"lm_head\"]", const std::string & extra = "") {
    return "{\"quant_method\": \"compressed-tensors\", \"format\": \"pack-quantized\", \"quantization_status\": \"compressed\","
           " \"config_groups\": {\"group_0\": {\"targets\": " + targets + ", \"weights\": {" + weights +
           "}, \"input_activations\": null, \"output_activations\": null, \"format\": \"pack-quantized\"}},"
           " \"ignore\": " + ignore + ", \"kv_cache_scheme\": null, \"sparsity_config\": {}, \"version\": \"0.12.2\"" + extra + "}";
}

static const char * const kW4G32 = "\"num_bits\": 4, \"type\": \"int\", \"symmetric\": true, \"group_size\": 32, \"strategy\": \"group\", \"dynamic\": false, \"actorder\": null, \"observer\": \"minmax\", \"observer_kwargs\": {}, \"block_structure\": null";

static void test_ct_models() {
    Tiny t; // D 32, F 64: q [32, 32], k/v [16, 32], gate/up [64, 32], down [32, 64]
    t.dtype = "F16";
    t.tie = false;
    t.lm_head = true;
    // W4A16 symmetric g32, lm_head ignored (stored as .weight)
    {
        Tiny c = t;
        c.quant = ct_config(kW4G32);
        std::vector<Entry> es = ct_tensors(c, {});
        std::string d = write_model(c, st_image(es), "ct-w4");
        expect_ok("model compressed-tensors w4a16 sym g32", [&] {
            ModelSource ms = load_model_source(d);
            const LinearSource & q = ms.layers[0].q;
            CHECK(ms.cfg.quant == QuantMethod::CompressedTensors && q.qfmt == QFormat::CtPacked && q.bits == 4 && q.group_size == 32);
            CHECK(q.ct_symmetric && q.qweight.shape[0] == 32 && q.qweight.shape[1] == 4 && q.scales.shape[1] == 1 && !q.qzeros.data);
            CHECK(ms.layers[1].down.group_size == 32 && ms.layers[1].down.scales.shape[1] == 2 && ms.layers[1].down.qweight.shape[1] == 8);
            CHECK(same_bytes(ms.layers[1].up.qweight, *find_entry(es, "model.layers.1.mlp.up_proj.weight_packed")));
            CHECK(ms.lm_head.qfmt == QFormat::None && ms.lm_head.weight.dtype == DType::F16);
            CHECK(quant_name(ms.cfg) == "ct-w4g32" && ms.cfg.group_size == 32);
        });
    }
    // asymmetric with act-order g_idx; down_proj ignored by a pattern
    {
        Tiny c = t;
        c.quant = ct_config("\"num_bits\": 4, \"symmetric\": false, \"group_size\": 32, \"strategy\": \"group\", \"actorder\": \"group\"",
                            "[\"Linear\"]", "[\"lm_head\", \"re:.*mlp\\\\.down_proj$\"]");
        std::vector<Entry> es = ct_tensors(c, {4, 32, false, true, {"down_proj"}});
        std::string d = write_model(c, st_image(es), "ct-asym");
        expect_ok("model compressed-tensors w4a16 asym act-order, down_proj ignored by re:", [&] {
            ModelSource ms = load_model_source(d);
            const LinearSource & k = ms.layers[1].k;
            CHECK(!k.ct_symmetric && k.qzeros.shape[0] == 2 && k.qzeros.shape[1] == 1 && k.has_g_idx);
            CHECK(ms.layers[0].gate.qzeros.shape[0] == 8 && ms.layers[0].down.qfmt == QFormat::None);
            CHECK(quant_name(ms.cfg) == "ct-w4g32-asym-act");
        });
        // missing zero point
        std::vector<Entry> bad = es;
        remove_entry(bad, "model.layers.0.self_attn.v_proj.weight_zero_point");
        std::string d2 = write_model(c, st_image(bad), "ct-nozp");
        expect_status("ct asym without zero point", SHOAL_ERR_MISSING_TENSOR, [&] { load_model_source(d2); },
                      "model.layers.0.self_attn.v_proj.weight_zero_point is missing but compressed-tensors group group_0 (4 bits, group 32, asymmetric) needs zero points");
        // zero points packed along the wrong axis ([N, ceil(ng/8)] instead of [ceil(N/8), ng])
        bad = es;
        *find_entry(bad, "model.layers.0.mlp.up_proj.weight_zero_point") = entry("model.layers.0.mlp.up_proj.weight_zero_point", "I32", {64, 1});
        std::string d3 = write_model(c, st_image(bad), "ct-zp-axis");
        expect_status("ct zero point packed along in", SHOAL_ERR_SHAPE, [&] { load_model_source(d3); },
                      "model.layers.0.mlp.up_proj.weight_zero_point has shape [64, 1] but compressed-tensors group group_0 (4 bits, group 32, asymmetric) implies [8, 1]");
        // compressed-tensors < 0.10 saved asymmetric zero points unpacked: I8 [N, ng]
        bad = es;
        for (Entry & e : bad) {
            if (e.name.size() > 18 && e.name.compare(e.name.size() - 18, 18, ".weight_zero_point") == 0) {
                const int64_t N = e.shape[0] * 8, ng = e.shape[1];
                e = entry(e.name, "I8", {N, ng});
            }
        }
        std::string d3b = write_model(c, st_image(bad), "ct-zp-i8");
        expect_ok("ct zero points unpacked I8 (compressed-tensors < 0.10)", [&] {
            ModelSource ms = load_model_source(d3b);
            CHECK(ms.layers[0].k.ct_zp_unpacked && ms.layers[0].k.qzeros.shape[0] == 16 && ms.layers[1].up.qzeros.dtype == DType::I8);
        });
        *find_entry(bad, "model.layers.1.mlp.gate_proj.weight_zero_point") = entry("model.layers.1.mlp.gate_proj.weight_zero_point", "I8", {8, 1});
        std::string d3c = write_model(c, st_image(bad), "ct-zp-i8-shape");
        expect_status("ct unpacked I8 zero points of the wrong shape", SHOAL_ERR_SHAPE, [&] { load_model_source(d3c); },
                      "model.layers.1.mlp.gate_proj.weight_zero_point has shape [8, 1] but compressed-tensors group group_0 (4 bits, group 32, asymmetric) implies [64, 1]");
        // g_idx: out of range, mixed with −1, missing under actorder group
        bad = es;
        std::vector<int32_t> gi(32, 0);
        gi[3] = 1;
        *find_entry(bad, "model.layers.1.self_attn.q_proj.weight_g_idx") = g_idx_entry("model.layers.1.self_attn.q_proj.weight_g_idx", gi);
        std::string d4 = write_model(c, st_image(bad), "ct-gidx");
        expect_status("ct g_idx out of range", SHOAL_ERR_QUANT_METADATA, [&] { load_model_source(d4); },
                      "model.layers.1.self_attn.q_proj.weight_g_idx[3] = 1 is outside [0, 1)");
        gi.assign(32, -1);
        gi[0] = 0;
        *find_entry(bad, "model.layers.1.self_attn.q_proj.weight_g_idx") = g_idx_entry("model.layers.1.self_attn.q_proj.weight_g_idx", gi);
        std::string d5 = write_model(c, st_image(bad), "ct-gidx-mixed");
        expect_status("ct g_idx mixing -1", SHOAL_ERR_QUANT_METADATA, [&] { load_model_source(d5); }, "31 of 32 entries are −1");
        gi.assign(32, -1); // all −1: column order, as forward.py reads it
        *find_entry(bad, "model.layers.1.self_attn.q_proj.weight_g_idx") = g_idx_entry("model.layers.1.self_attn.q_proj.weight_g_idx", gi);
        std::string d6 = write_model(c, st_image(bad), "ct-gidx-unset");
        expect_ok("ct g_idx all -1 is column order", [&] { CHECK(!load_model_source(d6).layers[1].q.has_g_idx); });
        bad = es;
        remove_entry(bad, "model.layers.0.mlp.gate_proj.weight_g_idx");
        std::string d7 = write_model(c, st_image(bad), "ct-gidx-missing");
        expect_status("ct actorder group without g_idx", SHOAL_ERR_MISSING_TENSOR, [&] { load_model_source(d7); },
                      "model.layers.0.mlp.gate_proj.weight_g_idx is missing but compressed-tensors group group_0 (4 bits, group 32, asymmetric) has actorder group");
    }
    // W8A16 preset (channel, symmetric) given as {"W8A16": ["Linear"]}
    {
        Tiny c = t;
        c.quant = "{\"quant_method\": \"compressed-tensors\", \"format\": \"pack-quantized\", \"config_groups\": {\"W8A16\": [\"Linear\"]}, \"ignore\": [\"lm_head\"]}";
        std::vector<Entry> es = ct_tensors(c, {8, -1, true, false, {}});
        std::string d = write_model(c, st_image(es), "ct-w8");
        expect_ok("model compressed-tensors W8A16 preset (channel)", [&] {
            ModelSource ms = load_model_source(d);
            const LinearSource & dn = ms.layers[0].down;
            CHECK(dn.bits == 8 && dn.group_size == 64 && dn.qweight.shape[1] == 16 && dn.scales.shape[1] == 1);
            CHECK(quant_name(ms.cfg) == "ct-w8ch" && ms.cfg.group_size == -1);
        });
    }
    // two groups: a pattern beats the class target (mlp 8-bit channel, attention 4-bit g32)
    {
        Tiny c = t;
        c.quant = "{\"quant_method\": \"compressed-tensors\", \"format\": \"mixed-precision\", \"config_groups\": {"
                  "\"group_0\": {\"targets\": [\"Linear\"], \"weights\": {" + std::string(kW4G32) + "}, \"format\": \"pack-quantized\"},"
                  "\"group_1\": {\"targets\": [\"re:.*mlp.*\"], \"weights\": {\"num_bits\": 8, \"strategy\": \"channel\"}, \"format\": \"pack-quantized\"}},"
                  " \"ignore\": [\"lm_head\"]}";
        std::vector<Entry> es;
        for (const Entry & e : ct_tensors(c, {4, 32, true, false, {}}))
            if (e.name.find(".mlp.") == std::string::npos) es.push_back(e);
        for (const Entry & e : ct_tensors(c, {8, -1, true, false, {}}))
            if (e.name.find(".mlp.") != std::string::npos) es.push_back(e);
        std::string d = write_model(c, st_image(es), "ct-mixed");
        expect_ok("model compressed-tensors two groups, pattern beats Linear", [&] {
            ModelSource ms = load_model_source(d);
            CHECK(ms.layers[0].q.bits == 4 && ms.layers[0].q.group_size == 32);
            CHECK(ms.layers[1].up.bits == 8 && ms.layers[1].up.group_size == 32 && ms.layers[1].down.group_size == 64);
            CHECK(quant_name(ms.cfg) == "ct-w4g32+1");
        });
    }
    // bad metadata
    {
        Tiny c = t;
        c.quant = ct_config(kW4G32);
        std::vector<Entry> es = ct_tensors(c, {});
        std::vector<Entry> bad = es;
        *find_entry(bad, "model.layers.0.self_attn.o_proj.weight_packed") = entry("model.layers.0.self_attn.o_proj.weight_packed", "I32", {4, 32});
        std::string d = write_model(c, st_image(bad), "ct-packed-shape");
        expect_status("ct wrong packed shape", SHOAL_ERR_SHAPE, [&] { load_model_source(d); },
                      "model.layers.0.self_attn.o_proj.weight_packed has shape [4, 32] but compressed-tensors group group_0 (4 bits, group 32, symmetric) implies [32, 4]");
        bad = es;
        Entry ws{"model.layers.1.mlp.up_proj.weight_shape", "I64", {2}, {}};
        for (int64_t v : {int64_t(32), int64_t(64)}) ws.bytes.append(reinterpret_cast<const char *>(&v), 8);
        *find_entry(bad, "model.layers.1.mlp.up_proj.weight_shape") = ws;
        std::string d1 = write_model(c, st_image(bad), "ct-wshape");
        expect_status("ct weight_shape transposed", SHOAL_ERR_SHAPE, [&] { load_model_source(d1); },
                      "model.layers.1.mlp.up_proj.weight_shape is [32, 64] but config implies [64, 32]");
        bad = es;
        remove_entry(bad, "model.layers.1.mlp.up_proj.weight_shape");
        std::string d1b = write_model(c, st_image(bad), "ct-noshape");
        expect_status("ct weight_shape missing", SHOAL_ERR_MISSING_TENSOR, [&] { load_model_source(d1b); }, "model.layers.1.mlp.up_proj.weight_shape is missing");
        // a targeted module stored unquantized
        std::vector<Entry> part = ct_tensors(c, {4, 32, true, false, {"layers.1.self_attn.v_proj"}});
        std::string d2 = write_model(c, st_image(part), "ct-unquantized-target");
        expect_status("ct targeted module stored as .weight", SHOAL_ERR_MISSING_TENSOR, [&] { load_model_source(d2); },
                      "model.layers.1.self_attn.v_proj.weight_packed is missing: quantization_config group group_0 targets model.layers.1.self_attn.v_proj but the checkpoint stores it unquantized (.weight); add it to ignore");
        auto cfg_err = [&](const char * what, const std::string & quant, shoal_status st, const std::string & needle) {
            Tiny b = t;
            b.quant = quant;
            std::string dd = write_model(b, st_image(es), "ct-cfg");
            expect_status(what, st, [&] { load_model_source(dd); }, needle);
        };
        cfg_err("ct group not dividing in_features", ct_config("\"num_bits\": 4, \"group_size\": 24, \"strategy\": \"group\""),
                SHOAL_ERR_GROUP_SIZE, "model.layers.0.self_attn.q_proj: group_size 24 of compressed-tensors group group_0 (4 bits, group 24, symmetric) does not divide in_features 32");
        cfg_err("ct unknown strategy", ct_config("\"num_bits\": 4, \"group_size\": 32, \"strategy\": \"rowwise\""),
                SHOAL_ERR_QUANT_METADATA, "config_groups.group_0.weights.strategy \"rowwise\" is not a compressed-tensors strategy");
        cfg_err("ct tensor strategy", ct_config("\"num_bits\": 4, \"strategy\": \"tensor\""),
                SHOAL_ERR_UNSUPPORTED_QUANT, "strategy \"tensor\" is not supported for weights (group or channel)");
        cfg_err("ct group without group_size", ct_config("\"num_bits\": 4, \"strategy\": \"group\""),
                SHOAL_ERR_QUANT_METADATA, "strategy group needs a positive group_size");
        cfg_err("ct channel with group_size", ct_config("\"num_bits\": 4, \"strategy\": \"channel\", \"group_size\": 32"),
                SHOAL_ERR_QUANT_METADATA, "group_size 32 requires strategy group, not channel");
        cfg_err("ct 3 bits", ct_config("\"num_bits\": 3, \"group_size\": 32"), SHOAL_ERR_UNSUPPORTED_QUANT, "num_bits 3 is not supported (4 or 8)");
        cfg_err("ct float weights", ct_config("\"num_bits\": 8, \"type\": \"float\", \"strategy\": \"channel\""),
                SHOAL_ERR_UNSUPPORTED_QUANT, "weights.type \"float\" is not supported");
        cfg_err("ct ignore names a missing module", ct_config(kW4G32, "[\"Linear\"]", "[\"lm_head\", \"model.layers.7.mlp.down_proj\"]"),
                SHOAL_ERR_QUANT_METADATA, "ignore names \"model.layers.7.mlp.down_proj\", which is not a linear module of this LlamaForCausalLM (model.layers.0..1");
        cfg_err("ct target names a missing module", ct_config(kW4G32, "[\"model.embed_tokens\"]"),
                SHOAL_ERR_QUANT_METADATA, "targets \"model.embed_tokens\", which is not a linear module");
        cfg_err("ct bad pattern", ct_config(kW4G32, "[\"Linear\"]", "[\"re:(?P<x>lm_head)\"]"),
                SHOAL_ERR_QUANT_METADATA, "pattern \"re:(?P<x>lm_head)\" cannot be compiled");
        cfg_err("ct activation quantization", "{\"quant_method\": \"compressed-tensors\", \"format\": \"pack-quantized\", \"config_groups\": {\"g\": {\"targets\": [\"Linear\"], \"weights\": {" +
                    std::string(kW4G32) + "}, \"input_activations\": {\"num_bits\": 8, \"strategy\": \"token\", \"dynamic\": true}}}}",
                SHOAL_ERR_UNSUPPORTED_QUANT, "config_groups.g.input_activations: activation quantization is not supported");
        cfg_err("ct naive-quantized format", "{\"quant_method\": \"compressed-tensors\", \"format\": \"naive-quantized\", \"config_groups\": {\"W8A16\": [\"Linear\"]}}",
                SHOAL_ERR_UNSUPPORTED_QUANT, "format \"naive-quantized\" is not supported (pack-quantized)");
        std::string frozen = ct_config(kW4G32);
        frozen.replace(frozen.find("\"compressed\""), 12, "\"frozen\"");
        cfg_err("ct not compressed", frozen, SHOAL_ERR_UNSUPPORTED_QUANT, "quantization_status \"frozen\": only compressed checkpoints are supported");
        cfg_err("ct transform_config", ct_config(kW4G32, "[\"Linear\"]", "[\"lm_head\"]", ", \"transform_config\": {\"config_groups\": {}}"),
                SHOAL_ERR_UNSUPPORTED_QUANT, "transform_config");
        cfg_err("ct no config_groups", "{\"quant_method\": \"compressed-tensors\", \"format\": \"pack-quantized\"}",
                SHOAL_ERR_QUANT_METADATA, "config_groups must be a non-empty object");
        cfg_err("ct unknown preset", "{\"quant_method\": \"compressed-tensors\", \"format\": \"pack-quantized\", \"config_groups\": {\"FP8\": [\"Linear\"]}}",
                SHOAL_ERR_UNSUPPORTED_QUANT, "preset \"FP8\" is not supported (W4A16, W4A16_ASYM, W8A16)");
    }
    // Qwen3: per-head q/k norms [hd], no q/k/v bias
    {
        Tiny q = t;
        q.arch = "Qwen3ForCausalLM";
        q.extra = ", \"head_dim\": 16, \"attention_bias\": false, \"use_sliding_window\": false";
        // head_dim 16 with 4 heads: q_proj [64, 32], o_proj [32, 64]
        std::vector<Entry> es = tiny_tensors(q);
        for (Entry & e : es) {
            if (e.name.find("q_proj.weight") != std::string::npos) e = entry(e.name, e.dtype, {64, 32});
            if (e.name.find("k_proj.weight") != std::string::npos || e.name.find("v_proj.weight") != std::string::npos) e = entry(e.name, e.dtype, {32, 32});
            if (e.name.find("o_proj.weight") != std::string::npos) e = entry(e.name, e.dtype, {32, 64});
        }
        for (int l = 0; l < 2; l++) {
            es.push_back(entry("model.layers." + std::to_string(l) + ".self_attn.q_norm.weight", "F16", {16}));
            es.push_back(entry("model.layers." + std::to_string(l) + ".self_attn.k_norm.weight", "F16", {16}));
        }
        std::string d = write_model(q, st_image(es), "qwen3");
        expect_ok("model qwen3 q/k norms", [&] {
            ModelSource ms = load_model_source(d);
            CHECK(ms.cfg.qk_norm && !ms.cfg.qkv_bias && ms.cfg.head_dim == 16 && ms.layers[1].k_norm.shape[0] == 16 && ms.layers[0].q.out == 64);
        });
        std::vector<Entry> bad = es;
        remove_entry(bad, "model.layers.1.self_attn.k_norm.weight");
        std::string d2 = write_model(q, st_image(bad), "qwen3-nonorm");
        expect_status("qwen3 without k_norm", SHOAL_ERR_MISSING_TENSOR, [&] { load_model_source(d2); }, "model.layers.1.self_attn.k_norm.weight is missing");
        bad = es;
        *find_entry(bad, "model.layers.0.self_attn.q_norm.weight") = entry("model.layers.0.self_attn.q_norm.weight", "F16", {32});
        std::string d3 = write_model(q, st_image(bad), "qwen3-badnorm");
        expect_status("qwen3 q_norm of hidden size", SHOAL_ERR_SHAPE, [&] { load_model_source(d3); }, "model.layers.0.self_attn.q_norm.weight has shape [32] but config implies [16]");
    }
}

static void test_models() {
    // F32, tied, with a stray rotary inv_freq tensor that must be ignored
    {
        Tiny t;
        std::vector<Entry> es = tiny_tensors(t);
        es.push_back(entry("model.layers.0.self_attn.rotary_emb.inv_freq", "F32", {4}));
        std::string d = write_model(t, st_image(es), "f32");
        expect_ok("model f32 tied", [&] {
            ModelSource ms = load_model_source(d);
            CHECK(ms.cfg.n_layers == 2 && ms.layers.size() == 2 && ms.files.size() == 1);
            CHECK(ms.cfg.eos_token_ids == std::vector<int>({2, 3}));
            CHECK(same_bytes(ms.embed, *find_entry(es, "model.embed_tokens.weight")));
            CHECK(ms.embed.dtype == DType::F32 && ms.embed.shape[0] == 48 && ms.embed.shape[1] == 32);
            CHECK(ms.lm_head.weight.data == ms.embed.data && ms.lm_head.in == 32 && ms.lm_head.out == 48);
            const LayerSource & L = ms.layers[1];
            CHECK(same_bytes(L.k.weight, *find_entry(es, "model.layers.1.self_attn.k_proj.weight")));
            CHECK(L.k.in == 32 && L.k.out == 16 && !L.k.awq && !L.k.has_bias);
            CHECK(L.down.in == 64 && L.down.out == 32 && L.o.in == 32 && L.o.out == 32);
            CHECK(same_bytes(L.ffn_norm, *find_entry(es, "model.layers.1.post_attention_layernorm.weight")));
            CHECK(same_bytes(ms.final_norm, *find_entry(es, "model.norm.weight")));
            // 48*32 + 2*(32 + 32*32 + 2*16*32 + 32*32 + 32 + 3*64*32) + 32
            CHECK(ms.n_params == 48 * 32 + 2 * (32 + 1024 + 1024 + 1024 + 32 + 6144) + 32);
            CHECK(ms.file_bytes == int64_t(4) * (ms.n_params + 4));
        });
    }
    // F16, untied lm_head
    {
        Tiny t;
        t.dtype = "F16";
        t.tie = false;
        t.lm_head = true;
        std::vector<Entry> es = tiny_tensors(t);
        std::string d = write_model(t, st_image(es), "f16");
        expect_ok("model f16 untied", [&] {
            ModelSource ms = load_model_source(d);
            CHECK(ms.embed.dtype == DType::F16 && ms.lm_head.weight.dtype == DType::F16);
            CHECK(ms.lm_head.name == "lm_head" && ms.lm_head.weight.data != ms.embed.data);
            CHECK(same_bytes(ms.lm_head.weight, *find_entry(es, "lm_head.weight")));
            CHECK(ms.n_params == 48 * 32 * 2 + 2 * (32 + 1024 + 1024 + 1024 + 32 + 6144) + 32);
        });
        t.lm_head = false;
        std::string d2 = write_model(t, "nohead");
        expect_status("model untied without lm_head", SHOAL_ERR_MISSING_TENSOR, [&] { load_model_source(d2); }, "lm_head.weight");
    }
    // AWQ gemm, group 32, down_proj left unquantized via modules_to_not_convert
    {
        Tiny t;
        t.awq_group = 32;
        t.not_convert = "\"down_proj\"";
        std::vector<Entry> es = tiny_tensors(t);
        std::string d = write_model(t, st_image(es), "awq");
        expect_ok("model awq", [&] {
            ModelSource ms = load_model_source(d);
            const LayerSource & L = ms.layers[0];
            CHECK(L.q.awq && L.q.group_size == 32 && L.q.in == 32 && L.q.out == 32);
            CHECK(L.q.qweight.dtype == DType::I32 && L.q.qweight.shape[0] == 32 && L.q.qweight.shape[1] == 4);
            CHECK(L.gate.qzeros.shape[0] == 1 && L.gate.qzeros.shape[1] == 8);
            CHECK(L.gate.scales.dtype == DType::F16 && L.gate.scales.shape[0] == 1 && L.gate.scales.shape[1] == 64);
            CHECK(same_bytes(L.up.qweight, *find_entry(es, "model.layers.0.mlp.up_proj.qweight")));
            CHECK(!L.down.awq && L.down.weight.dtype == DType::F16 && L.down.weight.shape[1] == 64);
            CHECK(!ms.lm_head.awq && ms.embed.dtype == DType::F16);
            CHECK(ms.n_params == 48 * 32 + 2 * (32 + 1024 + 1024 + 1024 + 32 + 6144) + 32);
        });
        // scales of the wrong shape / dtype, qweight missing
        std::vector<Entry> bad = es;
        *find_entry(bad, "model.layers.1.mlp.up_proj.scales") = entry("model.layers.1.mlp.up_proj.scales", "F16", {2, 64});
        std::string d2 = write_model(t, st_image(bad), "awq-scales");
        expect_status("model awq scales shape", SHOAL_ERR_SHAPE, [&] { load_model_source(d2); },
                      "model.layers.1.mlp.up_proj.scales has shape [2, 64] but config implies [1, 64]");
        bad = es;
        *find_entry(bad, "model.layers.0.self_attn.v_proj.scales") = entry("model.layers.0.self_attn.v_proj.scales", "F32", {1, 16});
        std::string d3 = write_model(t, st_image(bad), "awq-dtype");
        expect_status("model awq scales dtype", SHOAL_ERR_ST_DTYPE, [&] { load_model_source(d3); }, "v_proj.scales has dtype F32");
        bad = es;
        remove_entry(bad, "model.layers.0.self_attn.o_proj.qweight");
        remove_entry(bad, "model.layers.0.self_attn.o_proj.qzeros");
        remove_entry(bad, "model.layers.0.self_attn.o_proj.scales");
        std::string d4 = write_model(t, st_image(bad), "awq-missing");
        expect_status("model awq missing qweight", SHOAL_ERR_MISSING_TENSOR, [&] { load_model_source(d4); },
                      "model.layers.0.self_attn.o_proj.qweight is missing");
        // group size that does not divide in_features
        Tiny g = t;
        g.quant = "{\"quant_method\":\"awq\",\"bits\":4,\"group_size\":24,\"zero_point\":true,\"version\":\"gemm\"}";
        std::string d5 = write_model(g, st_image(es), "awq-g24");
        expect_status("model group size", SHOAL_ERR_GROUP_SIZE, [&] { load_model_source(d5); },
                      "model.layers.0.self_attn.q_proj: in_features 32 is not a multiple of group_size 24");
        Tiny b3 = t;
        b3.quant = "{\"quant_method\":\"awq\",\"bits\":3,\"group_size\":32,\"zero_point\":true,\"version\":\"gemm\"}";
        std::string d6 = write_model(b3, st_image(es), "awq-b3");
        expect_status("model bits 3", SHOAL_ERR_UNSUPPORTED_QUANT, [&] { load_model_source(d6); }, "bits 3 is not supported, only 4");
    }
    // Qwen2: q/k/v biases
    {
        Tiny t;
        t.arch = "Qwen2ForCausalLM";
        t.bias = true;
        std::vector<Entry> es = tiny_tensors(t);
        std::string d = write_model(t, st_image(es), "qwen2");
        expect_ok("model qwen2 biases", [&] {
            ModelSource ms = load_model_source(d);
            CHECK(ms.layers[0].q.has_bias && ms.layers[0].k.has_bias && ms.layers[0].v.has_bias && !ms.layers[0].o.has_bias);
            CHECK(same_bytes(ms.layers[1].v.bias, *find_entry(es, "model.layers.1.self_attn.v_proj.bias")));
        });
        remove_entry(es, "model.layers.1.self_attn.k_proj.bias");
        std::string d2 = write_model(t, st_image(es), "qwen2-nobias");
        expect_status("model qwen2 missing bias", SHOAL_ERR_MISSING_TENSOR, [&] { load_model_source(d2); },
                      "model.layers.1.self_attn.k_proj.bias");
    }
    // Llama attention_bias: q/k/v and o biases; BF16 weights
    {
        Tiny t;
        t.dtype = "BF16";
        t.bias = true;
        t.extra = ", \"attention_bias\": true";
        std::vector<Entry> es = tiny_tensors(t);
        for (int i = 0; i < t.L; i++) es.push_back(entry("model.layers." + std::to_string(i) + ".self_attn.o_proj.bias", "BF16", {t.D}));
        std::string d = write_model(t, st_image(es), "attn-bias");
        expect_ok("model llama attention_bias", [&] {
            ModelSource ms = load_model_source(d);
            CHECK(ms.layers[1].o.has_bias && ms.layers[1].q.has_bias && !ms.layers[1].gate.has_bias);
            CHECK(ms.embed.dtype == DType::BF16 && same_bytes(ms.layers[1].o.bias, es.back()));
        });
        es.pop_back();
        std::string d2 = write_model(t, st_image(es), "attn-bias-missing");
        expect_status("model missing o bias", SHOAL_ERR_MISSING_TENSOR, [&] { load_model_source(d2); }, "model.layers.1.self_attn.o_proj.bias");
    }
    // bad checkpoints: each gives its exact status through load_model_source
    {
        Tiny t;
        std::vector<Entry> es = tiny_tensors(t);
        std::string img = st_image(es);
        expect_status("model truncated", SHOAL_ERR_ST_TRUNCATED, [&] { load_model_source(write_model(t, img.substr(0, img.size() - 100), "cut")); },
                      "model.safetensors");
        expect_status("model 4-byte file", SHOAL_ERR_ST_TRUNCATED, [&] { load_model_source(write_model(t, img.substr(0, 4), "cut4")); });
        std::string hl = img;
        hl.replace(0, 8, u64le(uint64_t(img.size()) * 2));
        expect_status("model header length", SHOAL_ERR_ST_HEADER_LEN, [&] { load_model_source(write_model(t, hl, "hlen")); });
        std::string nj = img;
        nj[8] = '[';
        expect_status("model header not JSON", SHOAL_ERR_ST_HEADER_JSON, [&] { load_model_source(write_model(t, nj, "notjson")); },
                      "model.safetensors");
        std::vector<Entry> bad = es;
        find_entry(bad, "model.norm.weight")->dtype = "F8_E4M3";
        expect_status("model unknown dtype", SHOAL_ERR_ST_DTYPE, [&] { load_model_source(write_model(t, st_image(bad), "dtype")); },
                      "model.norm.weight");
        bad = es;
        find_entry(bad, "model.norm.weight")->shape = {33}; // 4 bytes short of its data_offsets span
        expect_status("model size != shape*dtype", SHOAL_ERR_ST_OFFSETS, [&] { load_model_source(write_model(t, st_image(bad), "size")); });
        bad = es;
        *find_entry(bad, "model.layers.1.mlp.down_proj.weight") = entry("model.layers.1.mlp.down_proj.weight", "F32", {32, 50});
        expect_status("model shape vs config", SHOAL_ERR_SHAPE, [&] { load_model_source(write_model(t, st_image(bad), "shape")); },
                      "model.layers.1.mlp.down_proj.weight has shape [32, 50] but config implies [32, 64]");
        bad = es;
        *find_entry(bad, "model.layers.0.input_layernorm.weight") = entry("model.layers.0.input_layernorm.weight", "I32", {32});
        expect_status("model int norm", SHOAL_ERR_ST_DTYPE, [&] { load_model_source(write_model(t, st_image(bad), "intnorm")); },
                      "F32, F16 or BF16");
        bad = es;
        remove_entry(bad, "model.layers.1.mlp.gate_proj.weight");
        expect_status("model missing tensor", SHOAL_ERR_MISSING_TENSOR, [&] { load_model_source(write_model(t, st_image(bad), "missing")); },
                      "model.layers.1.mlp.gate_proj.weight is missing (looked in ");
        Tiny a = t;
        a.arch = "FalconForCausalLM";
        expect_status("model unsupported arch", SHOAL_ERR_UNSUPPORTED_ARCH, [&] { load_model_source(write_model(a, img, "arch")); },
                      "FalconForCausalLM");
        // offsets out of range / overlapping in a real file
        std::string hdr = "{\"model.norm.weight\":{\"dtype\":\"F32\",\"shape\":[32],\"data_offsets\":[0,128]},"
                          "\"model.embed_tokens.weight\":{\"dtype\":\"F32\",\"shape\":[48,32],\"data_offsets\":[4096,10240]}}";
        expect_status("model offsets out of range", SHOAL_ERR_ST_OFFSETS,
                      [&] { load_model_source(write_model(t, st_raw(hdr, std::string(6272, 'x')), "range")); }, "model.embed_tokens.weight");
        hdr = "{\"model.norm.weight\":{\"dtype\":\"F32\",\"shape\":[32],\"data_offsets\":[0,128]},"
              "\"model.embed_tokens.weight\":{\"dtype\":\"F32\",\"shape\":[48,32],\"data_offsets\":[64,6208]}}";
        expect_status("model overlapping offsets", SHOAL_ERR_ST_OFFSETS,
                      [&] { load_model_source(write_model(t, st_raw(hdr, std::string(6272, 'x')), "overlap")); }, "overlap");

        // directory problems
        std::string nocfg = new_dir("nocfg");
        write_file(nocfg + "/model.safetensors", img);
        expect_status("model no config.json", SHOAL_ERR_CONFIG, [&] { load_model_source(nocfg); }, "config.json");
        std::string noweights = new_dir("noweights");
        write_file(noweights + "/config.json", config_json(t));
        expect_status("model no weights", SHOAL_ERR_IO, [&] { load_model_source(noweights); }, noweights);
        expect_status("model dir missing", SHOAL_ERR_IO, [&] { load_model_source(g_tmp + "/does-not-exist"); }, "does-not-exist");
        std::string badgen = write_model(t, img, "badgen");
        write_file(badgen + "/generation_config.json", "{\"eos_token_id\": }");
        expect_status("model bad generation_config", SHOAL_ERR_CONFIG, [&] { load_model_source(badgen); }, "generation_config.json");
    }
    // sharded checkpoints
    {
        Tiny t;
        std::vector<Entry> es = tiny_tensors(t);
        std::vector<Entry> s1(es.begin(), es.begin() + 10), s2(es.begin() + 10, es.end());
        auto index_json = [&](const std::string & name2) {
            std::string j = "{\"metadata\": {\"total_size\": 1}, \"weight_map\": {";
            for (size_t i = 0; i < es.size(); i++) {
                j += (i ? ", \"" : "\"") + es[i].name + "\": \"" + (i < 10 ? "model-00001-of-00002.safetensors" : name2) + "\"";
            }
            return j + "}}";
        };
        std::string d = new_dir("sharded");
        write_file(d + "/config.json", config_json(t));
        write_file(d + "/model-00001-of-00002.safetensors", st_image(s1));
        write_file(d + "/model-00002-of-00002.safetensors", st_image(s2));
        write_file(d + "/model.safetensors.index.json", index_json("model-00002-of-00002.safetensors"));
        expect_ok("model sharded", [&] {
            ModelSource ms = load_model_source(d);
            CHECK(ms.files.size() == 2 && ms.cfg.eos_token_ids == std::vector<int>({2}));
            CHECK(same_bytes(ms.embed, es[0]) && same_bytes(ms.final_norm, *find_entry(es, "model.norm.weight")));
            CHECK(same_bytes(ms.layers[1].up.weight, *find_entry(es, "model.layers.1.mlp.up_proj.weight")));
        });
        write_file(d + "/model.safetensors.index.json", index_json("model-00003-of-00002.safetensors"));
        expect_status("model shard missing", SHOAL_ERR_IO, [&] { load_model_source(d); }, "model-00003-of-00002.safetensors");
        // the index places a tensor in a shard that does not hold it
        std::string j = index_json("model-00002-of-00002.safetensors");
        std::string key = "\"model.norm.weight\": \"model-00002-of-00002.safetensors\"";
        j.replace(j.find(key), key.size(), "\"model.norm.weight\": \"model-00001-of-00002.safetensors\"");
        write_file(d + "/model.safetensors.index.json", j);
        expect_status("model index wrong shard", SHOAL_ERR_MISSING_TENSOR, [&] { load_model_source(d); }, "model.norm.weight");
        write_file(d + "/model.safetensors.index.json", index_json("../model-00002-of-00002.safetensors"));
        expect_status("model shard path escape", SHOAL_ERR_ST_HEADER_JSON, [&] { load_model_source(d); }, "plain file name");
        write_file(d + "/model.safetensors.index.json", "{\"weight_map\": []}");
        expect_status("model index structure", SHOAL_ERR_ST_HEADER_JSON, [&] { load_model_source(d); }, "weight_map");
        // the same tensor in two shards is ambiguous
        std::vector<Entry> s2dup = s2;
        s2dup.push_back(es[0]);
        write_file(d + "/model-00002-of-00002.safetensors", st_image(s2dup));
        write_file(d + "/model.safetensors.index.json", index_json("model-00002-of-00002.safetensors"));
        expect_status("model tensor in two shards", SHOAL_ERR_ST_HEADER_JSON, [&] { load_model_source(d); }, "appears in both");
    }
}

// ---- the real stories260K checkpoint -------------------------------------------------------

// the copy shipped in the repository (models/stories260K), or the folder given
static std::string stories_dir(int argc, char ** argv) {
    if (argc > 1) return argv[1];
    if (const char * e = std::getenv("SHOAL_STORIES_DIR")) return e;
#ifdef SHOAL_SOURCE_DIR
    return std::string(SHOAL_SOURCE_DIR) + "/../models/stories260K"; // native/ -> repo
#else
    return "models/stories260K";
#endif
}

static void test_stories(const std::string & dir) {
    struct stat st;
    if (stat((dir + "/model.safetensors").c_str(), &st) != 0) {
        std::printf("SKIP stories260K: %s not found (pass the model folder or set SHOAL_STORIES_DIR)\n", dir.c_str());
        return;
    }
    expect_ok("stories260K", [&] {
        ModelSource ms = load_model_source(dir);
        const ModelConfig & c = ms.cfg;
        CHECK(c.arch == "LlamaForCausalLM" && c.hidden_size == 64 && c.intermediate_size == 172 && c.n_layers == 5);
        CHECK(c.n_heads == 8 && c.n_kv_heads == 4 && c.head_dim == 8 && c.vocab_size == 512 && c.max_position_embeddings == 512);
        CHECK(c.tie_word_embeddings && c.bos_token_id == 1 && c.eos_token_ids == std::vector<int>({2}));
        CHECK(std::fabs(c.rms_norm_eps - 1e-5f) < 1e-10f && c.quant == QuantMethod::None);
        CHECK(ms.layers.size() == 5 && ms.layers[4].down.in == 172 && ms.layers[4].k.out == 32);
        CHECK(ms.lm_head.weight.data == ms.embed.data);
        CHECK(ms.n_params == 260032 && ms.file_bytes == 260032 * 4);
        // the embedding view holds the bytes the file holds at its offset
        std::string raw = read_file(dir + "/model.safetensors");
        const uint8_t * base = ms.files[0]->data;
        size_t off = size_t(static_cast<const uint8_t *>(ms.embed.data) - base);
        CHECK(off + ms.embed.nbytes <= raw.size() && std::memcmp(raw.data() + off, ms.embed.data, ms.embed.nbytes) == 0);
        const float * e = static_cast<const float *>(ms.embed.data);
        double norm = 0;
        for (int i = 0; i < 64; i++) norm += double(e[64 * 5 + i]) * e[64 * 5 + i];
        CHECK(std::sqrt(norm) > 0.5 && std::sqrt(norm) < 10.0); // trained rows have norms around 1.4..3.2
    });
    expect_ok("stories260K with a trailing slash", [&] { CHECK(load_model_source(dir + "/").layers.size() == 5); });
}

int main(int argc, char ** argv) {
    const char * tmp = std::getenv("TMPDIR");
    std::string templ = std::string(tmp && *tmp ? tmp : "/tmp") + "/shoal-test-model-source-XXXXXX";
    std::vector<char> buf(templ.begin(), templ.end());
    buf.push_back('\0');
    if (!mkdtemp(buf.data())) { std::perror("mkdtemp"); return 2; }
    g_tmp = buf.data();

    test_json();
    test_safetensors();
    test_config();
    test_models();
    test_lowbit_models();
    test_ct_models();
    test_stories(stories_dir(argc, argv));

    remove_tree(g_tmp);
    std::printf("%d passed, %d failed\n", g_pass, g_fail);
    return g_fail == 0 ? 0 : 1;
}
