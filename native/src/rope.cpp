// rope.cpp — rotary embedding frequencies, with the scaling types of HF
// transformers' _compute_default/linear/llama3_parameters.
#include "model.h"

#include <cmath>

namespace shoal {

std::vector<float> rope_inv_freq(const ModelConfig & cfg) {
    const int half = cfg.head_dim / 2;
    std::vector<float> inv(half);
    for (int i = 0; i < half; i++) {
        // computed in double, as the reference does, then rounded once
        double f = 1.0 / std::pow((double)cfg.rope_theta, (2.0 * i) / cfg.head_dim);
        switch (cfg.rope_scaling) {
        case RopeScaling::None: break;
        case RopeScaling::Linear: f /= cfg.rope_factor; break;
        case RopeScaling::Llama3: {
            // Long wavelengths are slowed by `factor`, short ones kept, and the
            // band between them interpolated smoothly.
            const double old_ctx = cfg.rope_original_max_position;
            const double low_wavelen = old_ctx / cfg.rope_low_freq_factor;
            const double high_wavelen = old_ctx / cfg.rope_high_freq_factor;
            const double wavelen = 2.0 * M_PI / f;
            if (wavelen < high_wavelen) {
                // unchanged
            } else if (wavelen > low_wavelen) {
                f /= cfg.rope_factor;
            } else {
                const double smooth = (old_ctx / wavelen - cfg.rope_low_freq_factor) /
                                      (cfg.rope_high_freq_factor - cfg.rope_low_freq_factor);
                f = (1.0 - smooth) * f / cfg.rope_factor + smooth * f;
            }
            break;
        }
        }
        inv[i] = (float)f;
    }
    return inv;
}

} // namespace shoal
