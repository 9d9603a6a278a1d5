// forward.cpp — the decoder forward pass of every supported family, top to
// bottom, on any backend. The architecture's row (arch.h) picks the ops: the
// norm (RMSNorm / LayerNorm with bias) and its placement (pre / post), the
// positions (RoPE / learned), the attention's projections (split / fused) and
// per-head norms, and the MLP (gated SwiGLU / act(fc1) → fc2 / routed experts).
// Shapes: D = hidden, F = intermediate, H / Hkv = query / kv heads, hd = head
// dim, V = vocab, E / k / Fe = experts / experts per token / expert width,
// n = tokens in this chunk.
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
    kv = be.new_kv_cache(c.n_layers, ctx, (int)kvd, c.head_dim, m->kv_type, c.sliding_window, n_chunk);
    x = be.new_act(n_chunk, D);
    h = be.new_act(n_chunk, D);
    q = be.new_act(n_chunk, qd);
    k = be.new_act(n_chunk, kvd);
    v = be.new_act(n_chunk, kvd);
    att = be.new_act(n_chunk, qd);
    proj = be.new_act(n_chunk, D);
    if (F > 0) {
        gate = be.new_act(n_chunk, F);
        up = be.new_act(n_chunk, F);
    }
    last = be.new_act(1, D);
    out = be.new_act(n_chunk, V);
    if (c.desc->qkv == QkvKind::Fused) qkv = be.new_act(n_chunk, qd + 2 * kvd);
    if (c.n_experts > 0) {
        const int64_t Fe = c.moe_intermediate_size;
        router = be.new_act(n_chunk, c.n_experts);
        eh = be.new_act(n_chunk, D);
        eg = be.new_act(n_chunk, Fe);
        eu = be.new_act(n_chunk, Fe);
        ed = be.new_act(n_chunk, D);
        route_ids.resize((size_t)n_chunk * c.n_experts_used);
        route_w.resize((size_t)n_chunk * c.n_experts_used);
        expert_rows.resize((size_t)n_chunk);
        expert_w.resize((size_t)n_chunk);
    }
    logits.assign((size_t)V, 0.0f);
}

Session::~Session() {
    Backend & be = *model->backend;
    for (Act * a : {&x, &h, &q, &k, &v, &att, &proj, &gate, &up, &last, &out, &qkv, &router, &eh, &eg, &eu, &ed})
        if (a->data) be.free_act(*a);
}

bool Session::can_truncate_to(int n_keep) const {
    if (n_keep <= 0 || n_keep >= n_past || !kv->ring()) return true;
    // the next query (position n_keep) sees n_keep−W+1..; position p is intact
    // while no later position of its slot was written: p + n_slots > kv_high
    const int lo = std::max(0, n_keep - kv->window + 1);
    return (int64_t)lo + kv->n_slots > kv_high;
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

void Session::norm(const Act & in, const Vec & w, const Vec * b, Act & dst) {
    const ModelConfig & c = model->cfg;
    if (c.desc->norm == NormKind::Layer) model->backend->layernorm(in, w, *b, c.rms_norm_eps, dst);
    else model->backend->rmsnorm(in, w, c.rms_norm_eps, dst);
}

void Session::forward_chunk(const int32_t * tokens, int n, float * dst_rows, bool want_last) {
    const ModelConfig & c = model->cfg;
    const ArchDesc & a = *c.desc;
    Backend & be = *model->backend;
    const int pos0 = n_past;

    Act X = chunk_view(x, n), Hn = chunk_view(h, n);                    // [n, D]
    be.embed(*model->embed, tokens, n, X);                              // X = E[tokens]
    if (a.pos == PosKind::Learned) be.add_positions(X, *model->pos_embed, pos0, a.pos_offset); // X += P[pos0 + offset + m]
    for (int l = 0; l < c.n_layers; l++) {
        const LayerWeights & w = model->layers[l];
        if (c.norm_before) {                                            // pre-norm: X += block(norm(X))
            norm(X, *w.attn_norm, w.attn_norm_b.get(), Hn);
            attention_block(l, Hn, n, pos0);
            norm(X, *w.ffn_norm, w.ffn_norm_b.get(), Hn);
            if (c.is_moe_layer(l)) moe_block(l, Hn, n);
            else mlp_block(l, Hn, n);
        } else {                                                        // post-norm (OPT-350m): X = norm(X + block(X))
            attention_block(l, X, n, pos0);
            norm(X, *w.attn_norm, w.attn_norm_b.get(), X);
            mlp_block(l, X, n);
            norm(X, *w.ffn_norm, w.ffn_norm_b.get(), X);
        }
    }
    n_past += n;
    kv_high = std::max(kv_high, n_past - 1);

    if (dst_rows) {                                                     // logits for every row
        Act O = chunk_view(out, n);                                     // [n, V]
        const Act * fin = &X;
        if (c.final_norm) {
            norm(X, *model->final_norm, model->final_norm_b.get(), Hn);
            fin = &Hn;
        }
        be.matmul(*model->lm_head, *fin, O);
        be.to_host(O, 0, n, dst_rows);
        if (want_last) std::copy(dst_rows + (size_t)(n - 1) * c.vocab_size, dst_rows + (size_t)n * c.vocab_size, logits.begin());
    } else if (want_last) {                                             // only the last row
        Act O = chunk_view(out, 1);                                     // [1, V]
        be.copy_rows(X, n - 1, 1, last);                                // last = X[n-1]
        if (c.final_norm) norm(last, *model->final_norm, model->final_norm_b.get(), last);
        be.matmul(*model->lm_head, last, O);
        be.to_host(O, 0, 1, logits.data());
    }
}

// X += o(attention(q, k, v of `in`)), then (post-norm) the caller normalises X.
void Session::attention_block(int l, const Act & in, int n, int pos0) {
    const ModelConfig & c = model->cfg;
    const ArchDesc & a = *c.desc;
    const LayerWeights & w = model->layers[l];
    Backend & be = *model->backend;
    const int64_t qd = (int64_t)c.n_heads * c.head_dim, kvd = (int64_t)c.n_kv_heads * c.head_dim;
    const float attn_scale = 1.0f / std::sqrt((float)c.head_dim);
    Act X = chunk_view(x, n);                                           // [n, D]
    Act Q = chunk_view(q, n), K = chunk_view(k, n), Vv = chunk_view(v, n); // [n, H*hd], [n, Hkv*hd] ×2
    Act A = chunk_view(att, n), P = chunk_view(proj, n);                // [n, H*hd], [n, D]

    if (a.qkv == QkvKind::Fused) {                                      // GPTBigCode c_attn: [q | k | v]
        Act QKV = chunk_view(qkv, n);                                   // [n, H*hd + 2*Hkv*hd]
        be.matmul(*w.qkv, in, QKV);
        be.copy_cols(QKV, 0, Q);
        be.copy_cols(QKV, qd, K);
        be.copy_cols(QKV, qd + kvd, Vv);
    } else {   // Q = in·Wqᵀ, K = in·Wkᵀ, V = in·Wvᵀ (one pass where the backend can)
        const Linear * ws[3] = {w.q.get(), w.k.get(), w.v.get()};
        Act * ys[3] = {&Q, &K, &Vv};
        be.matmul_shared(ws, ys, 3, in);
    }
    if (c.qk_norm) {                                                    // Qwen3: RMSNorm per head, before RoPE
        be.head_rmsnorm(Q, *w.q_norm, c.n_heads, c.rms_norm_eps);       // Q [n, H*hd], gains [hd]
        be.head_rmsnorm(K, *w.k_norm, c.n_kv_heads, c.rms_norm_eps);    // K [n, Hkv*hd]
    }
    if (a.pos == PosKind::Rope) be.rope(Q, K, c.n_heads, c.n_kv_heads, pos0, model->rope);
    be.kv_store(*kv, l, pos0, K, Vv);                                   // ring slot pos mod n_slots with a window
    be.attention(Q, *kv, l, pos0, c.n_heads, c.n_kv_heads, c.head_dim, attn_scale, A); // GQA/MQA by head index
    be.matmul(*w.o, A, P);
    be.add(X, P);                                                       // X += o(attn)
}

// X += down(act(gate(in)) · up(in)) (gated) or X += fc2(act(fc1(in))).
void Session::mlp_block(int l, const Act & in, int n) {
    const ModelConfig & c = model->cfg;
    const LayerWeights & w = model->layers[l];
    Backend & be = *model->backend;
    Act X = chunk_view(x, n), P = chunk_view(proj, n);                  // [n, D]
    Act G = chunk_view(gate, n), U = chunk_view(up, n);                 // [n, F] ×2
    if (c.desc->gated) {
        {   // G = in·Wgateᵀ, U = in·Wupᵀ (one pass where the backend can)
            const Linear * ws[2] = {w.gate.get(), w.up.get()};
            Act * ys[2] = {&G, &U};
            be.matmul_shared(ws, ys, 2, in);
        }
        be.silu_mul(G, U);                                              // G = silu(G) * U
        be.matmul(*w.down, G, P);
    } else {
        be.matmul(*w.up, in, U);                                        // fc1 / c_fc
        be.activation(U, c.act);                                        // U = relu(U) | gelu(U)
        be.matmul(*w.down, U, P);                                       // fc2 / c_proj
    }
    be.add(X, P);                                                       // X += mlp
}

// X += Σ_j w_j · expert_{id_j}(in): the router picks k of E experts per row;
// rows are grouped by expert so each expert's weights are read once per chunk
// and experts no row chose are not read at all.
void Session::moe_block(int l, const Act & in, int n) {
    const ModelConfig & c = model->cfg;
    const LayerWeights & w = model->layers[l];
    Backend & be = *model->backend;
    const int E = c.n_experts, topk = c.n_experts_used;
    Act X = chunk_view(x, n);                                           // [n, D]
    Act RL = chunk_view(router, n);                                     // [n, E]
    be.matmul(*w.router, in, RL);
    be.route_topk(RL, topk, c.norm_topk_prob, route_ids.data(), route_w.data()); // host [n·k] ids, weights
    for (int e = 0; e < E; e++) {
        int cnt = 0;                                                    // rows routed to e (each at most once)
        for (int m = 0; m < n; m++)
            for (int j = 0; j < topk; j++)
                if (route_ids[(size_t)m * topk + j] == e) {
                    expert_rows[(size_t)cnt] = m;
                    expert_w[(size_t)cnt++] = route_w[(size_t)m * topk + j];
                }
        if (cnt == 0) continue;
        const ExpertWeights & ex = w.experts[(size_t)e];
        Act EH = chunk_view(eh, cnt), ED = chunk_view(ed, cnt);         // [cnt, D]
        Act EG = chunk_view(eg, cnt), EU = chunk_view(eu, cnt);         // [cnt, Fe]
        be.gather_rows(in, expert_rows.data(), cnt, EH);                // EH = in[rows]
        {
            const Linear * ws[2] = {ex.gate.get(), ex.up.get()};
            Act * ys[2] = {&EG, &EU};
            be.matmul_shared(ws, ys, 2, EH);
        }
        be.silu_mul(EG, EU);                                            // EG = silu(EG) * EU
        be.matmul(*ex.down, EG, ED);
        be.scatter_add_rows(X, expert_rows.data(), expert_w.data(), cnt, ED); // X[rows] += w · ED
    }
}

} // namespace shoal
