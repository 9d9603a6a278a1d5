// test-stories.cpp — the real pretrained stories260K on every CPU kernel set:
// greedy generations equal reference_greedy.json token for token and the
// next-token logits match the float64 reference within 1e-4 relative.
#include "json.h"
#include "shoal.h"
#include "test-helpers.h"

#include <cmath>
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

    std::istringstream isas(shoal_cpu_features());
    std::string isa;
    while (isas >> isa) {
        shoal_model_params mp = shoal_model_default_params();
        mp.isa = isa.c_str();
        char err[1024];
        shoal_model * model = nullptr;
        shoal_status st = shoal_model_load(dir.c_str(), &mp, &model, err, sizeof err);
        check(st == SHOAL_OK, isa + ": load stories260K: " + err);
        if (st != SHOAL_OK) continue;

        // logits at every position of "Once upon a time"
        const shoal::json::Value & lg = *ref.get("logits");
        std::vector<int32_t> in = ints(*lg.get("input_ids"));
        shoal_session * s = nullptr;
        shoal_session_new(model, 0, &s, err, sizeof err);
        std::vector<float> out(in.size() * 512);
        st = shoal_session_eval(s, in.data(), (int)in.size(), out.data(), 1, err, sizeof err);
        check(st == SHOAL_OK, isa + ": eval: " + err);
        double worst = 0;
        const auto & rows = lg.get("values")->items;
        for (size_t r = 0; r < rows.size(); r++)
            for (size_t j = 0; j < rows[r].items.size(); j++) {
                const double want = rows[r].items[j].number, got = out[r * 512 + j];
                worst = std::max(worst, std::fabs(got - want) / std::max(1.0, std::fabs(want)));
            }
        char msg[200];
        std::snprintf(msg, sizeof msg, "%s: logits max relative error %.2e <= 1e-4", isa.c_str(), worst);
        check(worst <= 1e-4, msg);
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
            check(st == SHOAL_OK, isa + ": generate: " + err);
            size_t first_diff = 0;
            while (first_diff < want.size() && first_diff < got.ids.size() && want[first_diff] == got.ids[first_diff]) first_diff++;
            const std::string prompt_text = c.get("prompt")->str;
            check(got.ids == want, isa + ": greedy tokens for '" + prompt_text + "' equal the reference (first difference at " +
                                       std::to_string(first_diff) + " of " + std::to_string(want.size()) + ")");
            shoal_session_free(s);
        }
        shoal_model_free(model);
    }
    return finish();
}
