// session.h — one conversation: its KV cache, position and scratch activations.
#pragma once
#include "model.h"

#include <vector>

namespace shoal {

struct Session {
    Model * model = nullptr;
    int     n_ctx = 0;
    int     n_past = 0;                 // positions filled in the KV cache
    int     kv_high = -1;               // highest position written since the cache was cleared (ring reuse)
    int     n_chunk = 0;                // rows of the scratch activations (prefill chunk)
    std::unique_ptr<KvCache> kv;        // [layer][pos < n_ctx][Hkv*hd] for K and V
    std::vector<float> logits;          // [V] logits of the last evaluated token
    bool    has_logits = false;

    // Scratch activations, [n_chunk, width] each (backend memory).
    Act x;      // [n, D]      residual stream
    Act h;      // [n, D]      normed input of a block
    Act q;      // [n, H*hd]
    Act k, v;   // [n, Hkv*hd]
    Act att;    // [n, H*hd]   attention output
    Act proj;   // [n, D]      o_proj / down_proj output
    Act gate;   // [n, F]
    Act up;     // [n, F]
    Act last;   // [1, D]      final-normed last row, for last-token logits
    Act out;    // [n, V]      logits rows (all-logits mode) or [1, V]
    Act qkv;    // [n, (H + 2·Hkv)·hd] fused projection output (QkvKind::Fused only)
    // MoE layers (empty otherwise)
    Act router; // [n, E]      router logits
    Act eh;     // [n, D]      the rows routed to one expert, gathered
    Act eg, eu; // [n, Fe]     that expert's gate / up
    Act ed;     // [n, D]      its down projection, scattered back into x
    std::vector<int32_t> route_ids;   // [n·k] experts chosen per row
    std::vector<float>   route_w;     // [n·k] their weights
    std::vector<int32_t> expert_rows; // [n] rows of the expert being computed
    std::vector<float>   expert_w;    // [n] their weights

    Session(Model * m, int n_ctx);
    ~Session();
    Session(const Session &) = delete;
    Session & operator=(const Session &) = delete;

    // Evaluates tokens at positions n_past..; all_logits: write n rows of [V]
    // into dst (may be null to only advance); otherwise the last row goes to
    // this->logits (and dst when given).
    void eval(const int32_t * tokens, int n, float * dst, bool all_logits);

    // Whether the KV cache still holds what a query at position n_keep needs (a
    // sliding-window ring overwrites old positions).
    bool can_truncate_to(int n_keep) const;

private:
    void forward_chunk(const int32_t * tokens, int n, float * dst_rows, bool want_last);
    void attention_block(int l, const Act & in, int n, int pos0);
    void mlp_block(int l, const Act & in, int n);
    void moe_block(int l, const Act & in, int n);
    // out = norm(x) with the architecture's norm (RMSNorm, or LayerNorm with bias)
    void norm(const Act & x, const Vec & w, const Vec * b, Act & out);
    Act chunk_view(const Act & a, int n) const { Act r = a; r.rows = n; return r; }
};

} // namespace shoal
