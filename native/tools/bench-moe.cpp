// bench-moe.cpp — decode on a Mixtral-8x7B-shaped AutoAWQ INT4 model with its
// layers cut to fit this machine: does a token read only the routed experts?
//
//   bench-moe [--dir D] [--layers L] [--tokens N] [--threads T] [--json]
//
// Writes (once) a checkpoint with Mixtral-8x7B's shapes and real tensor names
// (hidden 4096, 8 experts of 14336, top-2, 32/8 heads, vocab 32000; AutoAWQ
// gemm w4 g128 for attention and experts, the router in f16 as AutoAWQ leaves
// it) and random weights into D (default .bench/mixtral-8x7b-L<L>), loads it on
// the CPU and decodes N tokens. Reports per token:
//   - weight bytes the backend's matmuls read (Backend::weight_bytes_read),
//     against the model's total weight bytes and its active bytes (top-2 of 8);
//   - decode time, the bytes/s that implies, and the machine's read bandwidth
//     measured in the same run (the roofline of batch-1 decode), alternating
//     bandwidth and decode A B A B; medians and spread.
#include "json.h"
#include "model-source.h"
#include "model.h"
#include "session.h"
#include "shoal.h"
#include "tensor.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

extern "C" double shoal_measure_read_bandwidth(int n_threads, size_t bytes, int reps);

namespace {

struct Shape {
    int D = 4096, F = 14336, H = 32, Hkv = 8, hd = 128, V = 32000, E = 8, k = 2, G = 128;
};

struct Writer {
    std::string hdr = "{";
    std::vector<std::pair<std::string, size_t>> order; // name, bytes
    size_t off = 0;
    void add(const std::string & name, const char * dt, std::vector<int64_t> shape, size_t esz) {
        size_t n = esz;
        for (int64_t d : shape) n *= (size_t)d;
        hdr += (hdr.size() > 1 ? "," : "") + std::string("\"") + name + "\":{\"dtype\":\"" + dt + "\",\"shape\":[";
        for (size_t i = 0; i < shape.size(); i++) hdr += (i ? "," : "") + std::to_string(shape[i]);
        hdr += "],\"data_offsets\":[" + std::to_string(off) + "," + std::to_string(off + n) + "]}";
        off += n;
        order.push_back({name, n});
    }
};

bool exists(const std::string & p) {
    struct stat st;
    return ::stat(p.c_str(), &st) == 0;
}

// AutoAWQ gemm tensors of one linear [out, in]: random codes and zero points, scales ~0.01.
void awq(Writer & w, const std::string & p, int64_t out, int64_t in, int G) {
    w.add(p + ".qweight", "I32", {in, out / 8}, 4);
    w.add(p + ".qzeros", "I32", {in / G, out / 8}, 4);
    w.add(p + ".scales", "F16", {in / G, out}, 2);
}

void generate(const std::string & dir, int L, const Shape & s) {
    ::mkdir(dir.c_str(), 0755);
    Writer w;
    w.add("model.embed_tokens.weight", "F16", {s.V, s.D}, 2);
    for (int l = 0; l < L; l++) {
        const std::string p = "model.layers." + std::to_string(l) + ".";
        w.add(p + "input_layernorm.weight", "F16", {s.D}, 2);
        awq(w, p + "self_attn.q_proj", s.H * s.hd, s.D, s.G);
        awq(w, p + "self_attn.k_proj", s.Hkv * s.hd, s.D, s.G);
        awq(w, p + "self_attn.v_proj", s.Hkv * s.hd, s.D, s.G);
        awq(w, p + "self_attn.o_proj", s.D, s.H * s.hd, s.G);
        w.add(p + "post_attention_layernorm.weight", "F16", {s.D}, 2);
        w.add(p + "block_sparse_moe.gate.weight", "F16", {s.E, s.D}, 2);
        for (int e = 0; e < s.E; e++) {
            const std::string x = p + "block_sparse_moe.experts." + std::to_string(e) + ".";
            awq(w, x + "w1", s.F, s.D, s.G);
            awq(w, x + "w3", s.F, s.D, s.G);
            awq(w, x + "w2", s.D, s.F, s.G);
        }
    }
    w.add("model.norm.weight", "F16", {s.D}, 2);
    w.add("lm_head.weight", "F16", {s.V, s.D}, 2);
    w.hdr += "}";
    while (w.hdr.size() % 8) w.hdr += ' ';
    const std::string tmp = dir + "/model.safetensors.tmp";
    std::FILE * f = std::fopen(tmp.c_str(), "wb");
    if (!f) { std::perror(tmp.c_str()); std::exit(1); }
    const uint64_t n = w.hdr.size();
    std::fwrite(&n, 8, 1, f);
    std::fwrite(w.hdr.data(), 1, w.hdr.size(), f);
    std::mt19937_64 rng(8);
    std::vector<uint8_t> buf;
    size_t done = 0, total = w.off;
    for (auto & [name, bytes] : w.order) {
        buf.resize(bytes);
        const bool f16 = name.find(".scales") != std::string::npos || name.find("weight") != std::string::npos;
        if (f16) { // f16 values: norms 1, scales ~0.01, embeddings / router / head ~±0.02
            const bool norm = name.find("layernorm") != std::string::npos || name.find("model.norm") != std::string::npos;
            const bool scale = name.find(".scales") != std::string::npos;
            std::uniform_real_distribution<float> u(-0.02f, 0.02f);
            for (size_t i = 0; i + 1 < bytes; i += 2) {
                const uint16_t h = shoal::f32_to_f16(norm ? 1.0f : scale ? 0.004f + std::fabs(u(rng)) * 0.2f : u(rng));
                std::memcpy(&buf[i], &h, 2);
            }
        } else {
            for (size_t i = 0; i + 8 <= bytes; i += 8) {
                const uint64_t r = rng();
                std::memcpy(&buf[i], &r, 8);
            }
        }
        std::fwrite(buf.data(), 1, bytes, f);
        const int before = (int)(100.0 * done / total);
        done += bytes;
        if ((int)(100.0 * done / total) != before) std::fprintf(stderr, "\rwriting %s: %d%%", dir.c_str(), (int)(100.0 * done / total));
    }
    std::fclose(f);
    std::fprintf(stderr, "\n");
    std::rename(tmp.c_str(), (dir + "/model.safetensors").c_str());
    std::ofstream(dir + "/config.json")
        << "{\"architectures\": [\"MixtralForCausalLM\"], \"model_type\": \"mixtral\", \"hidden_size\": " << s.D
        << ", \"intermediate_size\": " << s.F << ", \"num_hidden_layers\": " << L << ", \"num_attention_heads\": " << s.H
        << ", \"num_key_value_heads\": " << s.Hkv << ", \"vocab_size\": " << s.V
        << ", \"max_position_embeddings\": 32768, \"rms_norm_eps\": 1e-5, \"rope_theta\": 1000000.0, \"hidden_act\": \"silu\", "
           "\"sliding_window\": null, \"num_local_experts\": "
        << s.E << ", \"num_experts_per_tok\": " << s.k
        << ", \"tie_word_embeddings\": false, \"bos_token_id\": 1, \"eos_token_id\": 2, \"torch_dtype\": \"float16\", "
           "\"quantization_config\": {\"quant_method\": \"awq\", \"bits\": 4, \"group_size\": "
        << s.G << ", \"zero_point\": true, \"version\": \"gemm\", \"modules_to_not_convert\": [\"gate\"]}}";
}

// Resident set of this process in bytes (/proc/self/statm), 0 where unavailable.
double rss_bytes() {
    long pages = 0, resident = 0;
    FILE * f = std::fopen("/proc/self/statm", "r");
    if (!f) return 0;
    const int n = std::fscanf(f, "%ld %ld", &pages, &resident);
    std::fclose(f);
    return n == 2 ? (double)resident * (double)::sysconf(_SC_PAGESIZE) : 0;
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0 : v[v.size() / 2];
}

} // namespace

int main(int argc, char ** argv) {
    int L = 2, N = 32, threads = 0, rounds = 3;
    bool json = false;
    std::string dir, cache;
    for (int i = 1; i < argc; i++) {
        const std::string a = argv[i];
        auto next = [&]() -> const char * {
            if (i + 1 >= argc) { std::fprintf(stderr, "%s needs a value\n", a.c_str()); std::exit(2); }
            return argv[++i];
        };
        if (a == "--dir") dir = next();
        else if (a == "--layers") L = std::atoi(next());
        else if (a == "--tokens") N = std::atoi(next());
        else if (a == "--threads") threads = std::atoi(next());
        else if (a == "--rounds") rounds = std::atoi(next());
        else if (a == "--json") json = true;
        else if (a == "--expert-cache") cache = next();
        else {
            std::fprintf(stderr, "usage: bench-moe [--dir D] [--layers L] [--tokens N] [--threads T] [--rounds R] [--expert-cache FILE] [--json]\n");
            return 2;
        }
    }
    if (L < 1 || L > 32 || N < 1 || rounds < 1) { std::fprintf(stderr, "--layers 1..32, --tokens >= 1, --rounds >= 1\n"); return 2; }
    const Shape s;
    if (dir.empty()) dir = ".bench/mixtral-8x7b-L" + std::to_string(L);
    if (!exists(dir + "/model.safetensors")) generate(dir, L, s);

    try {
        auto be = shoal::make_cpu_backend("auto", threads);
        shoal::Backend * bep = be.get();
        shoal::LoadOptions lo;
        lo.expert_cache = cache;
        const double rss0 = rss_bytes();
        auto m = shoal::build_model(shoal::load_model_source(dir), std::move(be), lo);
        const double rss_load = rss_bytes() - rss0;
        const int nt = bep->n_threads();
        std::vector<double> bw, tps, bpt;
        for (int r = 0; r < rounds; r++) {
            bw.push_back(shoal_measure_read_bandwidth(nt, size_t(1) << 30, 3));
            shoal::Session sess(m.get(), N + 8);
            std::vector<int32_t> prompt = {1, 415, 2936, 9060, 285, 1142, 754, 28723};
            sess.eval(prompt.data(), (int)prompt.size(), nullptr, false);
            int32_t tok = 1000 + r;
            const uint64_t b0 = bep->weight_bytes_read;
            const auto t0 = std::chrono::steady_clock::now();
            for (int i = 0; i < N; i++) {
                sess.eval(&tok, 1, nullptr, false);
                tok = (int32_t)(std::max_element(sess.logits.begin(), sess.logits.end()) - sess.logits.begin());
            }
            const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            tps.push_back(N / dt);
            bpt.push_back((double)(bep->weight_bytes_read - b0) / N);
        }
        const double rss_decode = rss_bytes() - rss0;
        const double total = (double)m->weight_bytes, active = (double)m->bytes_per_token, read = median(bpt);
        const double t = median(tps), b = median(bw);
        const double gbs = read * t / 1e9;
        auto mm = [](const std::vector<double> & v) {
            return std::make_pair(*std::min_element(v.begin(), v.end()), *std::max_element(v.begin(), v.end()));
        };
        if (json) {
            std::printf("{\"model\":\"mixtral-8x7b-shape\",\"layers\":%d,\"threads\":%d,\"isa\":\"%s\",\"tokens\":%d,\"rounds\":%d,"
                        "\"weight_bytes\":%.0f,\"active_bytes_per_token\":%.0f,\"read_bytes_per_token\":%.0f,"
                        "\"decode_tok_s\":%.3f,\"read_gb_s\":%.2f,\"membw_gb_s\":%.2f,\"roofline_pct\":%.1f,"
                        "\"expert_cache\":\"%s\",\"build_seconds\":%.3f,\"rss_after_load\":%.0f,\"rss_after_decode\":%.0f}\n",
                        L, nt, bep->isa(), N, rounds, total, active, read, t, gbs, b, 100 * gbs / b,
                        m->expert_cache_state.c_str(), m->repack_seconds, rss_load, rss_decode);
        } else {
            std::printf("Mixtral-8x7B shape, %d of 32 layers, AutoAWQ w4g128, %s, %d threads, %d decode tokens x %d rounds\n", L,
                        bep->isa(), nt, N, rounds);
            std::printf("  weights held            %9.1f MiB\n", total / 1048576);
            std::printf("  active per token        %9.1f MiB  (attention, router, 2 of 8 experts, lm_head)\n", active / 1048576);
            std::printf("  read per decode token   %9.1f MiB  = %.3f x active, %.3f x total (matmul byte counter)\n", read / 1048576,
                        read / active, read / total);
            std::printf("  decode                  %9.2f tok/s (median; min %.2f max %.2f)\n", t, mm(tps).first, mm(tps).second);
            std::printf("  bytes read / time       %9.2f GB/s = %.0f%% of the measured read bandwidth %.2f GB/s (min %.2f max %.2f)\n",
                        gbs, 100 * gbs / b, b, mm(bw).first, mm(bw).second);
            std::printf("  reading every expert would need %.2f tok/s or less at that bandwidth\n", b * 1e9 / total);
            std::printf("  expert cache            %s; model built in %.2f s\n", m->expert_cache_state.c_str(), m->repack_seconds);
            std::printf("  resident after load     %9.1f MiB, after decoding %9.1f MiB (process RSS growth from the load)\n",
                        rss_load / 1048576, rss_decode / 1048576);
        }
    } catch (const shoal::Error & e) {
        std::fprintf(stderr, "bench-moe: %s\n", e.what());
        return 1;
    }
    return 0;
}
