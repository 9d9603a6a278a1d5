// session.h — one conversation: its KV cache, position and scratch activations.
#pragma once
#include "model.h"

#include <vector>

namespace shoal {

struct Session {
    Model * model = nullptr;
    int     n_ctx = 0;
    int     n_past = 0;                 // positions filled in the KV cache
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

    Session(Model * m, int n_ctx);
    ~Session();
    Session(const Session &) = delete;
    Session & operator=(const Session &) = delete;

    // Evaluates tokens at positions n_past..; all_logits: write n rows of [V]
    // into dst (may be null to only advance); otherwise the last row goes to
    // this->logits (and dst when given).
    void eval(const int32_t * tokens, int n, float * dst, bool all_logits);

private:
    void forward_chunk(const int32_t * tokens, int n, float * dst_rows, bool want_last);
    Act chunk_view(const Act & a, int n) const { Act r = a; r.rows = n; return r; }
};

} // namespace shoal
