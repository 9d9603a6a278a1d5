// make-gguf.cpp — writes a random-weight LLaMA-family GGUF in Q4_0 (every
// matrix, the output matrix and token embedding included; norms f32) with a
// synthetic SentencePiece-style vocabulary, for `make bench-peer`: llama.cpp
// reads it, and it has exactly the shape of the model Shoal runs beside it.
//   make-gguf --shape tinyllama-1.1b|llama-2-7b|tiny --out FILE.gguf [--seed N]
// Prints one JSON line: shape, bytes of tensor data, bytes read per decoded
// token (every matrix once, one embedding row).
#include "gguf-writer.h"
#include "tensor.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

using namespace shoal;

namespace {

struct Shape {
    const char * name;
    uint32_t vocab, hidden, ffn, layers, heads, kv_heads, ctx;
};

const Shape kShapes[] = {
    {"tinyllama-1.1b", 32000, 2048, 5632, 22, 32, 4, 2048},
    {"llama-2-7b", 32000, 4096, 11008, 32, 32, 32, 4096},
    {"tiny", 512, 64, 192, 2, 8, 4, 256},
};

// xorshift64*: fast, seeded, reproducible (the weights only need a plausible scale).
struct Rng {
    uint64_t s;
    explicit Rng(uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 1) {}
    uint64_t next() {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        return s * 0x2545F4914F6CDD1Dull;
    }
};

// Random Q4_0 blocks for a matrix with fan-in `in`: nibbles uniform in 0..15,
// d so that the weights' standard deviation is about 1/sqrt(in).
gguf::Writer::Fill random_q4(uint64_t seed, uint32_t in) {
    return [seed, in](uint8_t * dst, uint64_t bytes) {
        Rng r(seed);
        const float base = 1.0f / std::sqrt((float)in) / 4.6f; // sd of (q − 8) is ~4.6
        for (uint64_t b = 0; b + gguf::kQ4BlockBytes <= bytes; b += gguf::kQ4BlockBytes) {
            const uint64_t v = r.next();
            const uint16_t d = f32_to_f16(base * (0.75f + 0.5f * (float)(v & 1023) / 1023.0f));
            std::memcpy(dst + b, &d, 2);
            for (int j = 0; j < 16; j += 8) {
                const uint64_t w = r.next();
                std::memcpy(dst + b + 2 + j, &w, 8);
            }
        }
    };
}

gguf::Writer::Fill ones() {
    return [](uint8_t * dst, uint64_t bytes) {
        const float one = 1.0f;
        for (uint64_t i = 0; i + 4 <= bytes; i += 4) std::memcpy(dst + i, &one, 4);
    };
}

} // namespace

int main(int argc, char ** argv) {
    std::string shape_name, out;
    uint64_t seed = 0;
    for (int i = 1; i < argc; i++) {
        const std::string a = argv[i];
        if (i + 1 < argc && a == "--shape") shape_name = argv[++i];
        else if (i + 1 < argc && a == "--out") out = argv[++i];
        else if (i + 1 < argc && a == "--seed") seed = std::strtoull(argv[++i], nullptr, 10);
        else {
            std::fprintf(stderr, "usage: make-gguf --shape tinyllama-1.1b|llama-2-7b|tiny --out FILE.gguf [--seed N]\n");
            return 2;
        }
    }
    const Shape * s = nullptr;
    for (const Shape & sh : kShapes)
        if (shape_name == sh.name) s = &sh;
    if (!s || out.empty()) {
        std::fprintf(stderr, "make-gguf: --shape (tinyllama-1.1b, llama-2-7b or tiny) and --out are required\n");
        return 2;
    }
    const uint32_t hd = s->hidden / s->heads, kvd = s->kv_heads * hd;
    gguf::Writer w;
    w.add_string("general.architecture", "llama");
    w.add_string("general.name", std::string("shoal-random-") + s->name);
    w.add_u32("general.file_type", 2); // mostly Q4_0
    w.add_u32("general.alignment", (uint32_t)gguf::kAlignment);
    w.add_u32("llama.context_length", s->ctx);
    w.add_u32("llama.embedding_length", s->hidden);
    w.add_u32("llama.block_count", s->layers);
    w.add_u32("llama.feed_forward_length", s->ffn);
    w.add_u32("llama.rope.dimension_count", hd);
    w.add_u32("llama.attention.head_count", s->heads);
    w.add_u32("llama.attention.head_count_kv", s->kv_heads);
    w.add_f32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
    w.add_f32("llama.rope.freq_base", 10000.0f);
    w.add_u32("llama.vocab_size", s->vocab);
    // Vocabulary: <unk> <s> </s>, the 256 byte tokens, then plain pieces.
    std::vector<std::string> tokens = {"<unk>", "<s>", "</s>"};
    std::vector<int32_t> types = {2, 3, 3}; // unknown, control, control
    for (int b = 0; b < 256; b++) {
        char t[8];
        std::snprintf(t, sizeof t, "<0x%02X>", b);
        tokens.push_back(t);
        types.push_back(6); // byte
    }
    while (tokens.size() < s->vocab) {
        tokens.push_back("\xE2\x96\x81t" + std::to_string(tokens.size())); // "▁t<n>"
        types.push_back(1); // normal
    }
    w.add_string("tokenizer.ggml.model", "llama");
    w.add_strings("tokenizer.ggml.tokens", tokens);
    w.add_f32s("tokenizer.ggml.scores", std::vector<float>(tokens.size(), 0.0f));
    w.add_i32s("tokenizer.ggml.token_type", types);
    w.add_u32("tokenizer.ggml.unknown_token_id", 0);
    w.add_u32("tokenizer.ggml.bos_token_id", 1);
    w.add_u32("tokenizer.ggml.eos_token_id", 2);

    uint64_t sd = seed * 1000003ull;
    auto q4 = [&](const std::string & name, uint32_t in, uint32_t outd) {
        w.add_tensor(name, {in, outd}, gguf::TensorType::Q4_0, random_q4(++sd, in));
    };
    q4("token_embd.weight", s->hidden, s->vocab);
    for (uint32_t l = 0; l < s->layers; l++) {
        const std::string p = "blk." + std::to_string(l) + ".";
        w.add_tensor(p + "attn_norm.weight", {s->hidden}, gguf::TensorType::F32, ones());
        q4(p + "attn_q.weight", s->hidden, s->hidden);
        q4(p + "attn_k.weight", s->hidden, kvd);
        q4(p + "attn_v.weight", s->hidden, kvd);
        q4(p + "attn_output.weight", s->hidden, s->hidden);
        w.add_tensor(p + "ffn_norm.weight", {s->hidden}, gguf::TensorType::F32, ones());
        q4(p + "ffn_gate.weight", s->hidden, s->ffn);
        q4(p + "ffn_up.weight", s->hidden, s->ffn);
        q4(p + "ffn_down.weight", s->ffn, s->hidden);
    }
    w.add_tensor("output_norm.weight", {s->hidden}, gguf::TensorType::F32, ones());
    q4("output.weight", s->hidden, s->vocab);
    try {
        w.write(out);
    } catch (const std::exception & e) {
        std::fprintf(stderr, "make-gguf: %s\n", e.what());
        return 1;
    }
    const uint64_t embd = gguf::tensor_bytes(gguf::TensorType::Q4_0, (uint64_t)s->hidden * s->vocab);
    const uint64_t per_token = w.data_bytes() - embd + embd / s->vocab;
    std::printf("{\"shape\":\"%s\",\"file\":\"%s\",\"data_bytes\":%llu,\"bytes_per_token\":%llu}\n", s->name, out.c_str(),
                (unsigned long long)w.data_bytes(), (unsigned long long)per_token);
    return 0;
}
