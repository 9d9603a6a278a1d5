// test-stories.cpp — the real pretrained stories260K on every CPU kernel set:
// greedy generations equal reference_greedy.json token for token with every
// KV cache type and lm_head storage, and the next-token logits match the
// float64 reference within 1e-4 relative on the exact path (f32 KV, lm_head as
// stored), within the rounding of f16 / int8 otherwise.
#include "json.h"
#include "shoal.h"
#include "test-helpers.h"

#include <cmath>
#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

using namespace shoal_test;

static std::string slurp(const std::string & path) {
    std::ifstream f(path, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

static std::vector<int32_t> ints(const shoal::json::Value & a) {
    std::vector<int32_t> out;
    for (const auto & v : a.items) out.push_back((int32_t)v.integer);
    return out;
}

struct Collect {
    std::vector<int32_t> ids;
};

static int on_token(int32_t tok, void * user) {
    static_cast<Collect *>(user)->ids.push_back(tok);
    return 0;
}

int main() {
    const std::string dir = stories_dir();
    if (!exists(dir + "/model.safetensors")) {
        std::printf("SKIP: %s not found (run from a checkout, or set SHOAL_STORIES_DIR)\n", dir.c_str());
        return finish();
    }
    const std::string ref_text = slurp(dir + "/reference_greedy.json");
    const shoal::json::Value ref = shoal::json::parse(ref_text.data(), ref_text.size(), SHOAL_ERR_IO, "reference_greedy.json");

    // Configurations: the exact path (f32 KV, lm_head as stored) against the
    // float64 logits within 1e-4; f16 KV, the int8 lm_head (f32 activations) and
    // the defaults (f16 KV, lm_head auto: as stored on a matrix this small) within
    // the looser bound their rounding allows. Greedy output must equal the
    // reference in all of them.
    // int8 KV is not greedy-exact on this 64-wide model (measured: first
    // difference after 116 tokens, perplexity +0.19%): there the first
    // difference must come no earlier than min_same tokens.
    struct Cfg { const char * kv; const char * head; double tol; size_t min_same; const char * held; };
    const Cfg cfgs[] = {{"f32", "native", 1e-4, SIZE_MAX, "f32"}, {"f16", "native", 2e-2, SIZE_MAX, "f32"},
                        {"q8", "native", 3e-1, 64, "f32"}, {"f32", "q8", 1.5e-1, SIZE_MAX, "q8"},
                        {"f16", "auto", 2e-2, SIZE_MAX, "f32"}};
    std::istringstream isas(shoal_cpu_features());
    std::string isa;
    while (isas >> isa)
      for (const Cfg & cf : cfgs) {
        const std::string tag = isa + " kv=" + cf.kv + " lm_head=" + cf.head;
        shoal_model_params mp = shoal_model_default_params();
        mp.isa = isa.c_str();
        mp.kv_cache = cf.kv;
        mp.lm_head = cf.head;
        char err[1024];
        shoal_model * model = nullptr;
        shoal_status st = shoal_model_load(dir.c_str(), &mp, &model, err, sizeof err);
        check(st == SHOAL_OK, tag + ": load stories260K: " + err);
        if (st != SHOAL_OK) continue;
        shoal_model_info info;
        shoal_model_get_info(model, &info);
        check(std::string(info.kv_cache) == cf.kv, tag + ": info.kv_cache");
        check(std::string(info.lm_head) == cf.held, tag + ": info.lm_head is " + cf.held);

        // logits at every position of "Once upon a time"
        const shoal::json::Value & lg = *ref.get("logits");
        std::vector<int32_t> in = ints(*lg.get("input_ids"));
        shoal_session * s = nullptr;
        shoal_session_new(model, 0, &s, err, sizeof err);
        std::vector<float> out(in.size() * 512);
        st = shoal_session_eval(s, in.data(), (int)in.size(), out.data(), 1, err, sizeof err);
        check(st == SHOAL_OK, tag + ": eval: " + err);
        double worst = 0;
        const auto & rows = lg.get("values")->items;
        for (size_t r = 0; r < rows.size(); r++)
            for (size_t j = 0; j < rows[r].items.size(); j++) {
                const double want = rows[r].items[j].number, got = out[r * 512 + j];
                worst = std::max(worst, std::fabs(got - want) / std::max(1.0, std::fabs(want)));
            }
        char msg[200];
        std::snprintf(msg, sizeof msg, "%s: logits max relative error %.2e <= %.0e", tag.c_str(), worst, cf.tol);
        check(worst <= cf.tol, msg);
        std::printf("%s\n", msg);
        shoal_session_free(s);

        // greedy generations, llama2.c semantics: stop on BOS (1) or after `steps` positions
        for (const auto & c : ref.get("cases")->items) {
            std::vector<int32_t> prompt = ints(*c.get("input_ids"));
            std::vector<int32_t> want = ints(*c.get("ids_after_bos"));
            const int steps = (int)c.get("steps")->integer;
            shoal_session_new(model, 0, &s, err, sizeof err);
            shoal_sampling_params sp = shoal_sampling_default_params();
            const int32_t stop[1] = {1};
            Collect got;
            got.ids.assign(prompt.begin() + 1, prompt.end());
            shoal_generate_result res;
            st = shoal_generate(s, prompt.data(), (int)prompt.size(), &sp, steps - (int)(prompt.size() - 1), stop, 1,
                                on_token, &got, nullptr, &res, err, sizeof err);
            check(st == SHOAL_OK, tag + ": generate: " + err);
            size_t first_diff = 0;
            while (first_diff < want.size() && first_diff < got.ids.size() && want[first_diff] == got.ids[first_diff]) first_diff++;
            const std::string prompt_text = c.get("prompt")->str;
            if (cf.min_same == SIZE_MAX)
                check(got.ids == want, tag + ": greedy tokens for '" + prompt_text + "' equal the reference (first difference at " +
                                           std::to_string(first_diff) + " of " + std::to_string(want.size()) + ")");
            else
                check(first_diff >= std::min(cf.min_same, want.size()),
                      tag + ": greedy tokens for '" + prompt_text + "' equal the reference for >= " + std::to_string(cf.min_same) +
                          " tokens (first difference at " + std::to_string(first_diff) + " of " + std::to_string(want.size()) + ")");
            shoal_session_free(s);
        }
        shoal_model_free(model);
    }
    // bad option values are refused with a clear error
    for (const char * bad : {"f8", "int8"}) {
        shoal_model_params mp = shoal_model_default_params();
        mp.kv_cache = bad;
        char err[1024] = "";
        shoal_model * model = nullptr;
        const shoal_status st = shoal_model_load(dir.c_str(), &mp, &model, err, sizeof err);
        check(st == SHOAL_ERR_INVALID_ARG && std::string(err).find("kv_cache must be f32, f16 or q8") != std::string::npos,
              std::string("kv_cache '") + bad + "' → SHOAL_ERR_INVALID_ARG");
        shoal_model_free(model);
    }
    return finish();
}
