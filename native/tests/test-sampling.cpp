// test-sampling.cpp — the OpenAI-style sampling controls (shoal_sampler_sample_ex)
// on synthetic logits against hand-computed expectations, and the stepping API
// (shoal_session_step) on stories260K against shoal_generate and a float64
// log-softmax of the evaluated logits.
#include "shoal.h"
#include "test-helpers.h"

#include <cmath>
#include <string>
#include <vector>

using namespace shoal_test;

static std::vector<double> log_softmax(const float * x, int n) {
    double mx = x[0];
    for (int i = 1; i < n; i++) mx = std::max(mx, (double)x[i]);
    double s = 0;
    for (int i = 0; i < n; i++) s += std::exp((double)x[i] - mx);
    std::vector<double> out(n);
    for (int i = 0; i < n; i++) out[i] = (double)x[i] - mx - std::log(s);
    return out;
}

static void test_controls() {
    const int V = 8;
    // token 3 is best, 5 second (0.5 behind), 1 third
    const float logits[V] = {0.0f, 1.0f, -1.0f, 2.0f, -3.0f, 1.5f, 0.25f, -0.5f};
    shoal_sampling_params sp = shoal_sampling_default_params(); // greedy
    shoal_sampler * smp = shoal_sampler_new(&sp);
    char err[256];
    shoal_sample_result r{};
    shoal_sample_controls c = shoal_sample_controls_default();

    check(shoal_sampler_sample_ex(smp, logits, V, nullptr, 0, &c, &r, err, sizeof err) == SHOAL_OK && r.token == 3,
          "no controls: greedy picks the argmax");

    // presence 0.6 on token 3 (generated once) drops it to 1.4 < 1.5
    const int32_t gen1[] = {3};
    c.presence_penalty = 0.6f;
    c.counted = gen1;
    c.n_counted = 1;
    shoal_sampler_sample_ex(smp, logits, V, nullptr, 0, &c, &r, err, sizeof err);
    check(r.token == 5, "presence penalty 0.6 on token 3 -> 5");
    c.presence_penalty = 0.4f; // 1.6 > 1.5: stays
    shoal_sampler_sample_ex(smp, logits, V, nullptr, 0, &c, &r, err, sizeof err);
    check(r.token == 3, "presence penalty 0.4 keeps token 3");

    // frequency counts occurrences: 3 twice at 0.3 -> 1.4, 5 once at 0.3 -> 1.2, 1 stays 1.0
    const int32_t gen2[] = {3, 5, 3};
    c.presence_penalty = 0.0f;
    c.frequency_penalty = 0.3f;
    c.counted = gen2;
    c.n_counted = 3;
    shoal_sampler_sample_ex(smp, logits, V, nullptr, 0, &c, &r, err, sizeof err);
    check(r.token == 3, "frequency 0.3: 3 (1.4) still beats 5 (1.2)");
    c.frequency_penalty = 0.6f; // 3 -> 0.8, 5 -> 0.9, 1 -> 1.0
    shoal_sampler_sample_ex(smp, logits, V, nullptr, 0, &c, &r, err, sizeof err);
    check(r.token == 1, "frequency 0.6: token 1 wins");
    c = shoal_sample_controls_default();

    // logit bias
    const int32_t bid[] = {7};
    const float bval[] = {2.6f};
    c.bias_ids = bid;
    c.bias_values = bval;
    c.n_bias = 1;
    shoal_sampler_sample_ex(smp, logits, V, nullptr, 0, &c, &r, err, sizeof err);
    check(r.token == 7, "logit bias +2.6 makes token 7 (2.1) the argmax");
    const float bneg[] = {-100.0f};
    const int32_t b3[] = {3};
    c.bias_ids = b3;
    c.bias_values = bneg;
    shoal_sampler_sample_ex(smp, logits, V, nullptr, 0, &c, &r, err, sizeof err);
    check(r.token == 5, "logit bias -100 bans token 3");
    const int32_t bad[] = {V};
    c.bias_ids = bad;
    check(shoal_sampler_sample_ex(smp, logits, V, nullptr, 0, &c, &r, err, sizeof err) == SHOAL_ERR_INVALID_ARG &&
              std::string(err).find("outside the vocabulary") != std::string::npos,
          std::string("bias id outside the vocabulary is rejected: ") + err);
    c = shoal_sample_controls_default();

    // allowed mask: only 0, 2, 6 -> greedy picks 6 (0.25)
    uint32_t mask[1] = {(1u << 0) | (1u << 2) | (1u << 6)};
    c.allowed = mask;
    shoal_sampler_sample_ex(smp, logits, V, nullptr, 0, &c, &r, err, sizeof err);
    check(r.token == 6, "mask: greedy picks the best allowed token");
    uint32_t none[1] = {0};
    c.allowed = none;
    check(shoal_sampler_sample_ex(smp, logits, V, nullptr, 0, &c, &r, err, sizeof err) == SHOAL_ERR_INVALID_ARG,
          "an empty mask is an error, not a silent token");
    shoal_sampler_free(smp);

    // sampling with a mask never draws a banned token, over many seeds, with top-p/top-k on
    int banned = 0, seen[V] = {0};
    for (uint64_t seed = 0; seed < 2000; seed++) {
        shoal_sampling_params p2 = shoal_sampling_default_params();
        p2.temperature = 1.5f;
        p2.top_p = 0.95f;
        p2.top_k = (int)(seed % 3) * 2;
        p2.seed = seed;
        shoal_sampler * s2 = shoal_sampler_new(&p2);
        shoal_sample_controls c2 = shoal_sample_controls_default();
        c2.allowed = mask;
        shoal_sampler_sample_ex(s2, logits, V, nullptr, 0, &c2, &r, err, sizeof err);
        banned += !((mask[0] >> r.token) & 1u);
        seen[r.token]++;
        shoal_sampler_free(s2);
    }
    check(banned == 0, "2000 seeded draws with a mask: none banned (" + std::to_string(banned) + ")");
    check(seen[0] > 0 && seen[2] > 0 && seen[6] > 0, "every allowed token is drawn sometimes");

    // logprobs: log-softmax of the raw logits, whatever the controls did
    smp = shoal_sampler_new(&sp);
    c = shoal_sample_controls_default();
    c.allowed = mask;
    c.n_top_logprobs = 3;
    shoal_sampler_sample_ex(smp, logits, V, nullptr, 0, &c, &r, err, sizeof err);
    std::vector<double> lp = log_softmax(logits, V);
    check(std::fabs(r.logprob - lp[6]) < 1e-6, "logprob of the drawn token = raw log-softmax");
    check(r.n_top == 3 && r.top[0].token == 3 && r.top[1].token == 5 && r.top[2].token == 1, "top 3 in order");
    double worst = 0;
    for (int i = 0; i < r.n_top; i++) worst = std::max(worst, std::fabs(r.top[i].logprob - lp[r.top[i].token]));
    check(worst < 1e-6, "top logprobs = raw log-softmax");
    c.n_top_logprobs = SHOAL_MAX_TOP_LOGPROBS + 1;
    check(shoal_sampler_sample_ex(smp, logits, V, nullptr, 0, &c, &r, err, sizeof err) == SHOAL_ERR_INVALID_ARG,
          "top_logprobs above the maximum is rejected");
    shoal_sampler_free(smp);
}

struct Collect {
    std::vector<int32_t> ids;
};
static int on_token(int32_t tok, void * user) {
    static_cast<Collect *>(user)->ids.push_back(tok);
    return 0;
}

static void test_step(const std::string & dir) {
    shoal_model_params mp = shoal_model_default_params();
    char err[1024];
    shoal_model * model = nullptr;
    if (shoal_model_load(dir.c_str(), &mp, &model, err, sizeof err) != SHOAL_OK) {
        check(false, std::string("load stories260K: ") + err);
        return;
    }
    shoal_model_info mi;
    shoal_model_get_info(model, &mi);
    const int V = mi.vocab_size;
    const std::vector<int32_t> prompt = {1, 403, 407, 261, 378}; // BOS "Once upon a time"
    const int N = 40;

    // reference: the native loop, greedy, no stop ids
    shoal_session * s = nullptr;
    shoal_session_new(model, 0, &s, err, sizeof err);
    Collect ref;
    shoal_sampling_params sp = shoal_sampling_default_params();
    shoal_generate_result gr{};
    shoal_generate(s, prompt.data(), (int)prompt.size(), &sp, N, nullptr, 0, on_token, &ref, nullptr, &gr, err, sizeof err);
    shoal_session_free(s);

    // stepping: eval the prompt, then one token per step
    shoal_session_new(model, 0, &s, err, sizeof err);
    shoal_sampler * smp = shoal_sampler_new(&sp);
    shoal_sample_controls c = shoal_sample_controls_default();
    c.n_top_logprobs = 5;
    std::vector<int32_t> hist = prompt, got, feed = prompt;
    std::vector<float> lps;
    bool ok = true;
    for (int i = 0; i < N && ok; i++) {
        shoal_sample_result r{};
        ok = shoal_session_step(s, feed.data(), (int)feed.size(), smp, hist.data(), (int)hist.size(), &c, &r, err,
                                sizeof err) == SHOAL_OK;
        bool eos = false;
        for (int e = 0; e < mi.n_eos; e++) eos |= r.token == mi.eos_token_ids[e];
        if (eos) break;
        got.push_back(r.token);
        lps.push_back(r.logprob);
        hist.push_back(r.token);
        feed = {r.token};
    }
    check(ok, std::string("step: ") + err);
    check(got == ref.ids, "greedy stepping = shoal_generate token for token (" + std::to_string(got.size()) + " tokens)");
    check(shoal_session_n_past(s) == (int)(prompt.size() + got.size() - 1),
          "the last drawn token is not in the KV cache until fed");
    shoal_session_free(s);

    // logprobs against a float64 log-softmax of one all-logits pass over prompt + generated
    std::vector<int32_t> all = prompt;
    all.insert(all.end(), got.begin(), got.end());
    shoal_session_new(model, 0, &s, err, sizeof err);
    std::vector<float> rows(all.size() * V);
    shoal_session_eval(s, all.data(), (int)all.size(), rows.data(), 1, err, sizeof err);
    double worst = 0;
    for (size_t i = 0; i < got.size(); i++) {
        const std::vector<double> lp = log_softmax(&rows[(prompt.size() - 1 + i) * V], V);
        worst = std::max(worst, std::fabs(lps[i] - lp[got[i]]));
    }
    char msg[160];
    std::snprintf(msg, sizeof msg, "step logprobs vs float64 log-softmax of a batched pass: max |diff| %.2e <= 1e-3", worst);
    check(worst <= 1e-3, msg);
    std::printf("%s\n", msg);

    // context full: a step that does not fit fails cleanly
    shoal_session_free(s);
    shoal_session_new(model, 8, &s, err, sizeof err);
    std::vector<int32_t> nine(9, 403);
    shoal_sample_result r{};
    check(shoal_session_step(s, nine.data(), 9, smp, nullptr, 0, nullptr, &r, err, sizeof err) == SHOAL_ERR_CONTEXT_FULL,
          "step past the context -> SHOAL_ERR_CONTEXT_FULL");
    check(shoal_session_step(s, nullptr, 0, smp, nullptr, 0, nullptr, &r, err, sizeof err) == SHOAL_ERR_INVALID_ARG,
          "step with nothing evaluated -> SHOAL_ERR_INVALID_ARG");
    shoal_session_free(s);
    shoal_sampler_free(smp);
    shoal_model_free(model);
}

int main() {
    test_controls();
    const std::string dir = shared_dir() + "/models/stories260K";
    if (exists(dir + "/model.safetensors")) test_step(dir);
    else std::printf("SKIP: %s not found (set SHOAL_SHARED to the shared data folder)\n", dir.c_str());
    return finish();
}
