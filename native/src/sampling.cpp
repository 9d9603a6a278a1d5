// sampling.cpp — see sampling.h. Order as llama.cpp's default chain:
// penalties → top-k → top-p → min-p → temperature → draw.
#include "sampling.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <unordered_set>

#include "error.h"

namespace shoal {

static uint64_t splitmix64(uint64_t & x) {
    uint64_t z = (x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

Sampler::Sampler(const shoal_sampling_params & p) : p_(p) {
    uint64_t s = p.seed;
    for (auto & w : state_) w = splitmix64(s);
}

double Sampler::next_uniform() { // xoshiro256**
    auto rotl = [](uint64_t x, int k) { return (x << k) | (x >> (64 - k)); };
    const uint64_t result = rotl(state_[1] * 5, 7) * 9;
    const uint64_t t = state_[1] << 17;
    state_[2] ^= state_[0];
    state_[3] ^= state_[1];
    state_[1] ^= state_[2];
    state_[0] ^= state_[3];
    state_[2] ^= t;
    state_[3] = rotl(state_[3], 45);
    return (double)(result >> 11) * (1.0 / 9007199254740992.0);
}

int32_t Sampler::sample(const float * logits, int vocab, const int32_t * history, int n_history) {
    work_.assign(logits, logits + vocab);
    repetition_penalty(vocab, history, n_history);
    return draw(vocab);
}

void Sampler::repetition_penalty(int vocab, const int32_t * history, int n_history) {
    // Repetition penalty over the last repeat_last_n tokens (each token once):
    // positive logits are divided, negative ones multiplied (CTRL paper rule).
    if (p_.repeat_penalty != 1.0f && n_history > 0 && history) {
        const int window = p_.repeat_last_n < 0 ? n_history : std::min(n_history, p_.repeat_last_n);
        std::unordered_set<int32_t> seen;
        for (int i = n_history - window; i < n_history; i++) {
            const int32_t t = history[i];
            if (t < 0 || t >= vocab || !seen.insert(t).second) continue;
            work_[t] = work_[t] > 0 ? work_[t] / p_.repeat_penalty : work_[t] * p_.repeat_penalty;
        }
    }
}

void Sampler::sample_ex(const float * logits, int vocab, const int32_t * history, int n_history,
                        const shoal_sample_controls & c, shoal_sample_result & out) {
    SHOAL_CHECK(c.n_top_logprobs >= 0 && c.n_top_logprobs <= SHOAL_MAX_TOP_LOGPROBS, SHOAL_ERR_INVALID_ARG,
                "top_logprobs must be in [0, " + std::to_string(SHOAL_MAX_TOP_LOGPROBS) + "], got " +
                    std::to_string(c.n_top_logprobs));
    SHOAL_CHECK(c.n_bias >= 0 && (c.n_bias == 0 || (c.bias_ids && c.bias_values)), SHOAL_ERR_INVALID_ARG,
                "logit bias: ids and values are required");
    SHOAL_CHECK(c.n_counted >= 0 && (c.n_counted == 0 || c.counted), SHOAL_ERR_INVALID_ARG,
                "penalties: counted tokens are required");
    work_.assign(logits, logits + vocab);
    repetition_penalty(vocab, history, n_history);

    // OpenAI's rule: mu[j] -= c[j] * frequency + (c[j] > 0) * presence, c[j]
    // = how often j was generated so far.
    if ((c.presence_penalty != 0.0f || c.frequency_penalty != 0.0f) && c.n_counted > 0) {
        counts_.clear();
        for (int i = 0; i < c.n_counted; i++)
            if (c.counted[i] >= 0 && c.counted[i] < vocab) counts_[c.counted[i]]++;
        for (const auto & [t, n] : counts_) work_[t] -= (float)n * c.frequency_penalty + c.presence_penalty;
    }
    for (int i = 0; i < c.n_bias; i++) {
        const int32_t t = c.bias_ids[i];
        SHOAL_CHECK(t >= 0 && t < vocab, SHOAL_ERR_INVALID_ARG,
                    "logit bias names token " + std::to_string(t) + " outside the vocabulary of " + std::to_string(vocab));
        SHOAL_CHECK(std::isfinite(c.bias_values[i]), SHOAL_ERR_INVALID_ARG, "logit bias values must be finite");
        work_[t] += c.bias_values[i];
    }
    if (c.allowed) {
        bool any = false;
        const float ninf = -std::numeric_limits<float>::infinity();
        for (int t = 0; t < vocab; t++) {
            if ((c.allowed[t >> 5] >> (t & 31)) & 1u) any = true;
            else work_[t] = ninf;
        }
        SHOAL_CHECK(any, SHOAL_ERR_INVALID_ARG, "the allowed-token mask allows no token");
    }
    out.token = draw(vocab);

    // Log-softmax of the raw logits: lp[t] = x[t] - max - log(sum exp(x - max)).
    double mx = -std::numeric_limits<double>::infinity();
    for (int t = 0; t < vocab; t++) mx = std::max(mx, (double)logits[t]);
    double sum = 0;
    for (int t = 0; t < vocab; t++) sum += std::exp((double)logits[t] - mx);
    const double lse = mx + std::log(sum);
    out.logprob = (float)((double)logits[out.token] - lse);
    out.n_top = std::min(c.n_top_logprobs, vocab);
    if (out.n_top > 0) {
        cand_.resize(vocab);
        for (int i = 0; i < vocab; i++) cand_[i] = {logits[i], i};
        std::partial_sort(cand_.begin(), cand_.begin() + out.n_top, cand_.end(),
                          [](const std::pair<float, int32_t> & a, const std::pair<float, int32_t> & b) {
                              return a.first > b.first || (a.first == b.first && a.second < b.second);
                          });
        for (int i = 0; i < out.n_top; i++) out.top[i] = {cand_[i].second, (float)((double)cand_[i].first - lse)};
    }
}

int32_t Sampler::draw(int vocab) {
    if (p_.temperature <= 0.0f) { // greedy; ties go to the lowest id
        return (int32_t)(std::max_element(work_.begin(), work_.end()) - work_.begin());
    }

    cand_.resize(vocab);
    for (int i = 0; i < vocab; i++) cand_[i] = {work_[i], i};
    auto by_logit = [](const std::pair<float, int32_t> & a, const std::pair<float, int32_t> & b) {
        return a.first > b.first || (a.first == b.first && a.second < b.second);
    };
    size_t n = cand_.size();
    if (p_.top_k > 0 && (size_t)p_.top_k < n) {
        std::partial_sort(cand_.begin(), cand_.begin() + p_.top_k, cand_.end(), by_logit);
        n = (size_t)p_.top_k;
    } else {
        std::sort(cand_.begin(), cand_.end(), by_logit);
    }
    cand_.resize(n);

    // Probabilities at temperature 1 for the nucleus and min-p cuts.
    auto softmax = [&](float temp) {
        const double mx = cand_[0].first;
        std::vector<double> pr(cand_.size());
        double sum = 0;
        for (size_t i = 0; i < cand_.size(); i++) sum += pr[i] = std::exp((cand_[i].first - mx) / temp);
        for (auto & x : pr) x /= sum;
        return pr;
    };
    std::vector<double> pr = softmax(1.0f);
    if (p_.top_p < 1.0f) {
        double cum = 0;
        size_t keep = cand_.size();
        for (size_t i = 0; i < cand_.size(); i++) {
            cum += pr[i];
            if (cum >= p_.top_p) { keep = i + 1; break; }
        }
        cand_.resize(keep);
        pr.resize(keep);
    }
    if (p_.min_p > 0.0f) {
        const double cut = pr[0] * p_.min_p;
        size_t keep = 1;
        while (keep < cand_.size() && pr[keep] >= cut) keep++;
        cand_.resize(keep);
    }

    pr = softmax(p_.temperature);
    double u = next_uniform(), cum = 0;
    for (size_t i = 0; i < pr.size(); i++) {
        cum += pr[i];
        if (u < cum) return cand_[i].second;
    }
    return cand_.back().second;
}

} // namespace shoal
