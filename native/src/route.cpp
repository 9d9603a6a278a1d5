// route.cpp — see route.h.
#include "route.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace shoal {

void route_topk_host(const float * logits, int64_t M, int E, int k, bool renorm, int32_t * ids, float * weights) {
    std::vector<float> p((size_t)E);
    std::vector<uint8_t> taken((size_t)E);
    for (int64_t m = 0; m < M; m++) {
        const float * l = logits + m * E;
        float mx = -INFINITY;
        for (int e = 0; e < E; e++) mx = std::fmax(mx, l[e]);
        float sum = 0.0f;
        for (int e = 0; e < E; e++) sum += p[(size_t)e] = std::exp(l[e] - mx);
        for (int e = 0; e < E; e++) p[(size_t)e] /= sum;
        // k passes of arg-max: k ≤ 8 in every released model, E ≤ 128
        std::fill(taken.begin(), taken.end(), 0);
        float sel = 0.0f;
        for (int j = 0; j < k; j++) {
            int best = -1;
            for (int e = 0; e < E; e++)
                if (!taken[(size_t)e] && (best < 0 || p[(size_t)e] > p[(size_t)best])) best = e;
            taken[(size_t)best] = 1;
            ids[m * k + j] = best;
            weights[m * k + j] = p[(size_t)best];
            sel += p[(size_t)best];
        }
        if (renorm)
            for (int j = 0; j < k; j++) weights[m * k + j] /= sel;
    }
}

} // namespace shoal
