// fake-quant.h — AutoAWQ group quantize-dequantize on the host, for the AWQ
// quantizer's candidate weights (native/ts/awq/fake-quant.ts is the reference:
// the results are bit-identical, tested in test/quant/fake-quant-native.test.ts).
#pragma once

#include <cstdint>
#include <string>

namespace shoal_addon {

// v rounded to the nearest f16 value (ties to even), as a double (±inf above f16's range).
double round_to_f16(double v);

// out [N, K] = Q(w·diag(s))·diag(s)⁻¹ with groups of G along K, b bits,
// asymmetric with zero point (scale = max(max − min, 1e-5)/(2^b − 1) rounded
// to f16, round half to even). s == nullptr: plain Q(w). Rows [n0, n1) only.
// Returns false and sets *err for a non-finite weight or a scale outside f16.
bool fake_quant_rows(const float * w, const double * s, int64_t K, int G, int bits, int64_t n0, int64_t n1, float * out,
                     std::string * err);

// Clip candidates of group g (llm-awq auto_clip): for every row n and shrink i
// in [0, steps), d[(n·steps + i)·G + j] = Q(clamp(w, ±max|w|·(1 − i/n_grid))) − w
// over the group's G weights. Rows [n0, n1).
bool clip_deltas_rows(const float * w, int64_t K, int G, int g, int bits, int steps, int n_grid, int64_t n0, int64_t n1,
                      float * d, std::string * err);

} // namespace shoal_addon
