// route.h — MoE top-k routing on the host: the router's logits are [tokens, E]
// (E ≤ a few hundred), so this is O(M·E) scalar work against the experts'
// O(M·k·D·F) matmuls. Every backend uses this one function (CUDA copies the
// logits to the host first): the choice of experts is bit-identical everywhere.
#pragma once
#include <cstdint>

namespace shoal {

// For each row m of logits [M, E]: p = softmax(logits[m]); the k largest p (ties: lower
// index first) → ids[m·k ..], weights[m·k ..] by decreasing p; renorm: weights divided by
// their sum (= softmax over the selected logits, Mixtral). Requires 1 ≤ k ≤ E.
void route_topk_host(const float * logits, int64_t M, int E, int k, bool renorm, int32_t * ids, float * weights);

} // namespace shoal
