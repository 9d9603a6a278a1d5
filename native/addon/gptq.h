// gptq.h — GPTQ (Frantar et al. 2022, "GPTQ: Accurate Post-Training
// Quantization for Generative Pre-trained Transformers", Algorithm 1) on the
// host, in double precision: the quantizer's hot loops (Cholesky of the
// inverse Hessian, the column-by-column quantization with error feedback in
// lazy blocks). The TypeScript driver (packages/modelkit/src/quant/gptq/) owns
// the policy; test/quant/gptq-solver.test.ts checks this against a plain
// float64 implementation of the same algorithm written in the test.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace shoal_addon {

struct GptqParams {
    int64_t N = 0;          // out_features (rows of W)
    int64_t K = 0;          // in_features (columns of W, size of H)
    int bits = 4;           // 2..8
    int64_t group = 128;    // G; K for one group over all inputs (GPTQ -1)
    double damp = 0.01;     // dampening, a fraction of mean(diag(H))
    bool act_order = false; // columns in order of decreasing diag(H) (desc_act)
    bool static_groups = false; // group grids from the original W, before any update
    bool sym = false;       // zero = 2^(b−1) (AutoGPTQ sym=True)
    int min_zero = 0;       // 1 for checkpoint_format gptq (zeros stored minus one)
    int64_t block = 128;    // lazy-batch block size
    bool errors = false;    // also measure tr(ΔW H ΔWᵀ) for GPTQ and RTN, and tr(W H Wᵀ)
};

struct GptqOutput {
    std::vector<uint8_t> q;       // codes [K, N] (GPTQ orientation), original input order
    std::vector<uint16_t> scales; // f16 bits [groups, N]
    std::vector<uint8_t> zeros;   // true zero points [groups, N]
    std::vector<int32_t> g_idx;   // group of each input [K]
    double loss = 0;              // Σ (w − q)² / d² (GPTQ's proxy, per the paper ½ of it is the error)
    int64_t dead = 0;             // inputs with diag(H) == 0 (weights zeroed)
    // with params.errors: undamped quadratic errors Σ_n δ_nᵀ H δ_n
    double err_gptq = 0, err_rtn = 0, norm = 0;
};

// H [K, K] (row-major, symmetric, = 2/T · XᵀX) is overwritten. W [N, K] row-major.
// Returns false with *err for a bad shape or a Hessian that is not positive
// definite after dampening (the message says to raise --damp).
bool gptq_quantize(const GptqParams & p, double * H, const float * W, GptqOutput * out, std::string * err);

} // namespace shoal_addon
