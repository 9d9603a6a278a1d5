// sampling.h — turns logits into a token: repetition penalty, temperature,
// top-k, top-p, min-p, then a draw from a seeded generator (same seed, same
// output).
#pragma once
#include "shoal.h"

#include <cstdint>
#include <unordered_map>
#include <vector>

namespace shoal {

class Sampler {
public:
    explicit Sampler(const shoal_sampling_params & p);
    int32_t sample(const float * logits, int vocab, const int32_t * history, int n_history);
    // With OpenAI-style controls and logprobs (shoal.h); throws shoal::Error.
    void sample_ex(const float * logits, int vocab, const int32_t * history, int n_history,
                   const shoal_sample_controls & c, shoal_sample_result & out);

private:
    void repetition_penalty(int vocab, const int32_t * history, int n_history); // on work_
    int32_t draw(int vocab);                   // from work_: greedy or the filtered, tempered draw
    double next_uniform(); // [0, 1)
    shoal_sampling_params p_;
    uint64_t state_[4];
    std::vector<float> work_;                  // [V] penalised logits
    std::vector<std::pair<float, int32_t>> cand_; // candidates (logit or prob, id)
    std::unordered_map<int32_t, int> counts_;     // generated-token counts for the penalties
};

} // namespace shoal
