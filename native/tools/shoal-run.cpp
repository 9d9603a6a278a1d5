// shoal-run.cpp — run a model without Node (debugging, qemu, profiling, the
// peer benchmark, option A/B tests). Prompt and output are token ids (the
// tokenizer lives in TypeScript).
//   shoal-run MODEL_DIR [options] [id ...]          generate from the ids
//   shoal-run MODEL_DIR --bench P,D [options]       P random prompt tokens, then D decoded (EOS ignored)
//   shoal-run MODEL_DIR --ppl IDS_FILE [options]    perplexity of whitespace-separated ids
//   shoal-run --membw THREADS                       memory read bandwidth (JSON)
// Options: -n tokens, -t threads, -i isa, -T temperature, -s seed, -c context,
//   --kv-cache f32|f16|q8, --lm-head auto|q8|native, --json (bench/ppl result as one JSON line)
#include "shoal.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

static int print_token(int32_t tok, void *) {
    std::printf("%d ", tok);
    std::fflush(stdout);
    return 0;
}

static double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

// Peak resident set of this process in bytes (VmHWM), 0 where /proc is absent.
static long long peak_rss() {
    std::ifstream f("/proc/self/status");
    std::string line;
    while (std::getline(f, line))
        if (line.rfind("VmHWM:", 0) == 0) return std::atoll(line.c_str() + 6) * 1024;
    return 0;
}

static int die(shoal_status st, const char * err) {
    std::fprintf(stderr, "error %s: %s\n", shoal_status_name(st), err);
    return 1;
}

int main(int argc, char ** argv) {
    if (argc == 3 && !std::strcmp(argv[1], "--membw")) {
        // the read-bandwidth roofline: streaming read of 1 GiB, best of 5
        const int t = std::atoi(argv[2]);
        std::printf("{\"threads\":%d,\"read_gbps\":%.3f}\n", t, shoal_measure_read_bandwidth(t, (size_t)1 << 30, 5));
        return 0;
    }
    if (argc < 2 || !std::strcmp(argv[1], "-h") || !std::strcmp(argv[1], "--help")) {
        std::fprintf(stderr,
                     "usage: %s MODEL_DIR [-n tokens] [-t threads] [-i isa] [-T temp] [-s seed] [-c ctx]\n"
                     "       [--kv-cache f32|f16|q8] [--lm-head auto|q8|native] [--bench P,D | --ppl IDS_FILE] [--json] [ids...]\n",
                     argv[0]);
        return 2;
    }
    shoal_model_params mp = shoal_model_default_params();
    shoal_sampling_params sp = shoal_sampling_default_params();
    int n_gen = 64, n_ctx = 0, bench_p = 0, bench_d = 0;
    bool json = false;
    std::string ppl_file;
    std::vector<int32_t> prompt;
    for (int i = 2; i < argc; i++) {
        const std::string a = argv[i];
        auto next = [&]() -> const char * {
            if (i + 1 >= argc) { std::fprintf(stderr, "%s needs a value\n", a.c_str()); std::exit(2); }
            return argv[++i];
        };
        if (a == "-n") n_gen = std::atoi(next());
        else if (a == "-t") mp.n_threads = std::atoi(next());
        else if (a == "-i") mp.isa = next();
        else if (a == "-T") sp.temperature = (float)std::atof(next());
        else if (a == "-s") sp.seed = std::strtoull(next(), nullptr, 10);
        else if (a == "-c") n_ctx = std::atoi(next());
        else if (a == "--kv-cache") mp.kv_cache = next();
        else if (a == "--lm-head") mp.lm_head = next();
        else if (a == "--json") json = true;
        else if (a == "--ppl") ppl_file = next();
        else if (a == "--bench") {
            if (std::sscanf(next(), "%d,%d", &bench_p, &bench_d) != 2 || bench_p < 1 || bench_d < 1) {
                std::fprintf(stderr, "--bench needs PROMPT,DECODE token counts, e.g. 512,128\n");
                return 2;
            }
        } else if (!a.empty() && a[0] == '-') {
            std::fprintf(stderr, "unknown option %s (see --help)\n", a.c_str());
            return 2;
        } else prompt.push_back((int32_t)std::atoi(a.c_str()));
    }
    char err[1024];
    shoal_model * model = nullptr;
    shoal_status st = shoal_model_load(argv[1], &mp, &model, err, sizeof err);
    if (st != SHOAL_OK) return die(st, err);
    shoal_model_info info;
    shoal_model_get_info(model, &info);
    std::fprintf(stderr, "%s %s on %s/%s × %d threads, kv %s, lm_head %s, load %.2f s\n", info.arch, info.quant,
                 info.backend, info.isa, info.n_threads, info.kv_cache, info.lm_head, info.load_seconds);
    shoal_session * s = nullptr;
    if (!ppl_file.empty()) {
        // Perplexity over windows of n_ctx (default 256) tokens, each scored
        // from its second token: the same windows for every option set.
        std::ifstream f(ppl_file);
        std::vector<int32_t> ids;
        for (long long v; f >> v;) ids.push_back((int32_t)v);
        const int ctx = n_ctx > 0 ? n_ctx : 256;
        if ((st = shoal_session_new(model, ctx, &s, err, sizeof err)) != SHOAL_OK) return die(st, err);
        std::vector<float> logits;
        double nll = 0;
        long long n = 0;
        for (size_t w0 = 0; w0 + 2 <= ids.size(); w0 += ctx) {
            const int len = (int)std::min<size_t>(ctx, ids.size() - w0);
            logits.resize((size_t)len * info.vocab_size);
            shoal_session_truncate(s, 0);
            if ((st = shoal_session_eval(s, &ids[w0], len, logits.data(), 1, err, sizeof err)) != SHOAL_OK) return die(st, err);
            for (int t = 0; t + 1 < len; t++) {
                const float * row = &logits[(size_t)t * info.vocab_size];
                double mx = row[0];
                for (int j = 1; j < info.vocab_size; j++) mx = std::max<double>(mx, row[j]);
                double sum = 0;
                for (int j = 0; j < info.vocab_size; j++) sum += std::exp(row[j] - mx);
                nll += std::log(sum) + mx - row[ids[w0 + t + 1]];
                n++;
            }
        }
        const double ppl = std::exp(nll / std::max<long long>(1, n));
        if (json) std::printf("{\"ppl\":%.6f,\"tokens\":%lld,\"kv_cache\":\"%s\",\"lm_head\":\"%s\"}\n", ppl, n, info.kv_cache, info.lm_head);
        else std::printf("perplexity %.6f over %lld tokens (kv %s, lm_head %s)\n", ppl, n, info.kv_cache, info.lm_head);
        shoal_session_free(s);
        shoal_model_free(model);
        return 0;
    }
    if (bench_p > 0) {
        // Random prompt ids (fixed seed) and decoded tokens that ignore EOS: the
        // exact token counts the peer benchmark gives llama.cpp.
        const int ctx = n_ctx > 0 ? n_ctx : bench_p + bench_d;
        if ((st = shoal_session_new(model, ctx, &s, err, sizeof err)) != SHOAL_OK) return die(st, err);
        std::mt19937 rng(1234);
        std::vector<int32_t> ids(bench_p);
        for (auto & t : ids) t = (int32_t)(3 + rng() % (uint32_t)(info.vocab_size - 3));
        std::vector<float> logits(info.vocab_size);
        const double t0 = now();
        if ((st = shoal_session_eval(s, ids.data(), bench_p, logits.data(), 0, err, sizeof err)) != SHOAL_OK) return die(st, err);
        const double t1 = now();
        for (int i = 0; i < bench_d; i++) {
            const int32_t tok = (int32_t)(std::max_element(logits.begin(), logits.end()) - logits.begin());
            if ((st = shoal_session_eval(s, &tok, 1, logits.data(), 0, err, sizeof err)) != SHOAL_OK) return die(st, err);
        }
        const double t2 = now();
        const double pf = bench_p / (t1 - t0), dc = bench_d / (t2 - t1);
        if (json)
            std::printf("{\"engine\":\"shoal\",\"threads\":%d,\"isa\":\"%s\",\"kv_cache\":\"%s\",\"lm_head\":\"%s\","
                        "\"prompt_tokens\":%d,\"decode_tokens\":%d,\"prefill_tps\":%.3f,\"decode_tps\":%.3f,"
                        "\"bytes_per_token\":%lld,\"weight_bytes\":%lld,\"kv_bytes_per_position\":%lld,\"peak_rss\":%lld}\n",
                        info.n_threads, info.isa, info.kv_cache, info.lm_head, bench_p, bench_d, pf, dc,
                        (long long)info.bytes_per_token, (long long)info.weight_bytes,
                        (long long)info.kv_bytes_per_position, peak_rss());
        else
            std::printf("prefill %d tokens %.2f tok/s, decode %d tokens %.2f tok/s, %.1f MB/token, peak RSS %.0f MB\n",
                        bench_p, pf, bench_d, dc, info.bytes_per_token / 1e6, peak_rss() / 1e6);
        shoal_session_free(s);
        shoal_model_free(model);
        return 0;
    }
    if (prompt.empty()) prompt.push_back(info.bos_token_id >= 0 ? info.bos_token_id : 1);
    if ((st = shoal_session_new(model, n_ctx, &s, err, sizeof err)) != SHOAL_OK) return die(st, err);
    shoal_generate_result r;
    st = shoal_generate(s, prompt.data(), (int)prompt.size(), &sp, n_gen, nullptr, 0, print_token, nullptr, nullptr, &r,
                        err, sizeof err);
    std::printf("\n");
    if (st != SHOAL_OK) return die(st, err);
    std::fprintf(stderr, "prefill %d tokens %.1f tok/s, decode %d tokens %.2f tok/s\n", r.n_prompt,
                 r.n_prompt / std::max(1e-9, r.prefill_seconds), r.n_generated,
                 r.n_generated / std::max(1e-9, r.decode_seconds));
    shoal_session_free(s);
    shoal_model_free(model);
    return 0;
}
