// shoal-run.cpp — run a model without Node (debugging, qemu, profiling):
//   shoal-run MODEL_DIR [-n tokens] [-t threads] [-i isa] [-T temperature] [-s seed] [id ...]
// Prompt and output are token ids (the tokenizer lives in TypeScript).
#include "shoal.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

static int print_token(int32_t tok, void *) {
    std::printf("%d ", tok);
    std::fflush(stdout);
    return 0;
}

int main(int argc, char ** argv) {
    if (argc < 2 || !std::strcmp(argv[1], "-h") || !std::strcmp(argv[1], "--help")) {
        std::fprintf(stderr, "usage: %s MODEL_DIR [-n tokens] [-t threads] [-i isa] [-T temp] [-s seed] [token ids...]\n", argv[0]);
        return 2;
    }
    shoal_model_params mp = shoal_model_default_params();
    shoal_sampling_params sp = shoal_sampling_default_params();
    int n_gen = 64;
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
        else prompt.push_back((int32_t)std::atoi(a.c_str()));
    }
    char err[1024];
    shoal_model * model = nullptr;
    shoal_status st = shoal_model_load(argv[1], &mp, &model, err, sizeof err);
    if (st != SHOAL_OK) {
        std::fprintf(stderr, "error %s: %s\n", shoal_status_name(st), err);
        return 1;
    }
    shoal_model_info info;
    shoal_model_get_info(model, &info);
    if (prompt.empty()) prompt.push_back(info.bos_token_id >= 0 ? info.bos_token_id : 1);
    std::fprintf(stderr, "%s %s on %s/%s × %d threads, load %.2f s\n", info.arch, info.quant, info.backend, info.isa,
                 info.n_threads, info.load_seconds);
    shoal_session * s = nullptr;
    if ((st = shoal_session_new(model, 0, &s, err, sizeof err)) != SHOAL_OK) {
        std::fprintf(stderr, "error %s: %s\n", shoal_status_name(st), err);
        return 1;
    }
    shoal_generate_result r;
    st = shoal_generate(s, prompt.data(), (int)prompt.size(), &sp, n_gen, nullptr, 0, print_token, nullptr, nullptr, &r,
                        err, sizeof err);
    std::printf("\n");
    if (st != SHOAL_OK) {
        std::fprintf(stderr, "error %s: %s\n", shoal_status_name(st), err);
        return 1;
    }
    std::fprintf(stderr, "prefill %d tokens %.1f tok/s, decode %d tokens %.2f tok/s\n", r.n_prompt,
                 r.n_prompt / std::max(1e-9, r.prefill_seconds), r.n_generated,
                 r.n_generated / std::max(1e-9, r.decode_seconds));
    shoal_session_free(s);
    shoal_model_free(model);
    return 0;
}
