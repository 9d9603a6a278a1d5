// forward.cpp — the LLaMA-family forward pass, top to bottom, on any backend.
// Shapes: D = hidden, F = intermediate, H / Hkv = query / kv heads, hd = head
// dim, V = vocab, n = tokens in this chunk.
#include "session.h"
#include "error.h"

#include <cmath>
#include <string>

namespace shoal {

static constexpr int kPrefillChunk = 128; // tokens per prefill step (bounds scratch memory)

Session::Session(Model * m, int ctx) : model(m), n_ctx(ctx) {
    const ModelConfig & c = m->cfg;
    Backend & be = *m->backend;
    n_chunk = std::min(kPrefillChunk, ctx);
    const int64_t D = c.hidden_size, F = c.intermediate_size, V = c.vocab_size;
    const int64_t qd = (int64_t)c.n_heads * c.head_dim, kvd = (int64_t)c.n_kv_heads * c.head_dim;
    kv = be.new_kv_cache(c.n_layers, ctx, (int)kvd, c.head_dim, m->kv_type);
    x = be.new_act(n_chunk, D);
    h = be.new_act(n_chunk, D);
    q = be.new_act(n_chunk, qd);
    k = be.new_act(n_chunk, kvd);
    v = be.new_act(n_chunk, kvd);
    att = be.new_act(n_chunk, qd);
    proj = be.new_act(n_chunk, D);
    gate = be.new_act(n_chunk, F);
    up = be.new_act(n_chunk, F);
    last = be.new_act(1, D);
    out = be.new_act(n_chunk, V);
    logits.assign((size_t)V, 0.0f);
}

Session::~Session() {
    Backend & be = *model->backend;
    for (Act * a : {&x, &h, &q, &k, &v, &att, &proj, &gate, &up, &last, &out}) be.free_act(*a);
}

void Session::eval(const int32_t * tokens, int n, float * dst, bool all_logits) {
    const ModelConfig & c = model->cfg;
    SHOAL_CHECK(n > 0, SHOAL_ERR_INVALID_ARG, "eval needs at least one token");
    if ((int64_t)n_past + n > n_ctx)
        fail(SHOAL_ERR_CONTEXT_FULL,
             std::to_string(n) + " tokens do not fit in the context: " + std::to_string(n_past) + " of " +
                 std::to_string(n_ctx) + " positions are used; start a new session, truncate it, or use a larger context");
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= c.vocab_size)
            fail(SHOAL_ERR_INVALID_ARG, "token id " + std::to_string(tokens[i]) + " at index " + std::to_string(i) +
                                            " is outside the vocabulary [0, " + std::to_string(c.vocab_size) + ")");

    std::lock_guard<std::mutex> lock(model->compute_mutex);
    for (int done = 0; done < n; done += n_chunk) {
        const int m = std::min(n_chunk, n - done);
        const bool is_last = done + m == n;
        float * rows = all_logits && dst ? dst + (size_t)done * c.vocab_size : nullptr;
        forward_chunk(tokens + done, m, rows, is_last);
    }
    has_logits = true;
    if (dst && !all_logits) std::copy(logits.begin(), logits.end(), dst);
}

void Session::forward_chunk(const int32_t * tokens, int n, float * dst_rows, bool want_last) {
    const ModelConfig & c = model->cfg;
    Backend & be = *model->backend;
    const int pos0 = n_past;
    const float attn_scale = 1.0f / std::sqrt((float)c.head_dim);

    Act X = chunk_view(x, n), Hn = chunk_view(h, n);                    // [n, D]
    Act Q = chunk_view(q, n), K = chunk_view(k, n), Vv = chunk_view(v, n); // [n, H*hd], [n, Hkv*hd] ×2
    Act A = chunk_view(att, n), P = chunk_view(proj, n);                // [n, H*hd], [n, D]
    Act G = chunk_view(gate, n), U = chunk_view(up, n);                 // [n, F] ×2

    be.embed(*model->embed, tokens, n, X);                              // X = E[tokens]
    for (int l = 0; l < c.n_layers; l++) {
        const LayerWeights & w = model->layers[l];
        // attention block
        be.rmsnorm(X, *w.attn_norm, c.rms_norm_eps, Hn);
        {   // Q = Hn·Wqᵀ, K = Hn·Wkᵀ, V = Hn·Wvᵀ (one pass where the backend can)
            const Linear * ws[3] = {w.q.get(), w.k.get(), w.v.get()};
            Act * ys[3] = {&Q, &K, &Vv};
            be.matmul_shared(ws, ys, 3, Hn);
        }
        be.rope(Q, K, c.n_heads, c.n_kv_heads, pos0, model->rope);
        be.kv_store(*kv, l, pos0, K, Vv);
        be.attention(Q, *kv, l, pos0, c.n_heads, c.n_kv_heads, c.head_dim, attn_scale, A);
        be.matmul(*w.o, A, P);
        be.add(X, P);                                                   // X += o(attn)
        // MLP block (SwiGLU)
        be.rmsnorm(X, *w.ffn_norm, c.rms_norm_eps, Hn);
        {   // G = Hn·Wgateᵀ, U = Hn·Wupᵀ
            const Linear * ws[2] = {w.gate.get(), w.up.get()};
            Act * ys[2] = {&G, &U};
            be.matmul_shared(ws, ys, 2, Hn);
        }
        be.silu_mul(G, U);                                              // G = silu(G) * U
        be.matmul(*w.down, G, P);
        be.add(X, P);                                                   // X += down(G)
    }
    n_past += n;

    if (dst_rows) {                                                     // logits for every row
        Act O = chunk_view(out, n);                                     // [n, V]
        be.rmsnorm(X, *model->final_norm, c.rms_norm_eps, Hn);
        be.matmul(*model->lm_head, Hn, O);
        be.to_host(O, 0, n, dst_rows);
        if (want_last) std::copy(dst_rows + (size_t)(n - 1) * c.vocab_size, dst_rows + (size_t)n * c.vocab_size, logits.begin());
    } else if (want_last) {                                             // only the last row
        Act O = chunk_view(out, 1);                                     // [1, V]
        be.copy_rows(X, n - 1, 1, last);                                // last = X[n-1]
        be.rmsnorm(last, *model->final_norm, c.rms_norm_eps, last);
        be.matmul(*model->lm_head, last, O);
        be.to_host(O, 0, 1, logits.data());
    }
}

} // namespace shoal
