// model.cpp — turns a validated checkpoint into backend weights.
#include "model.h"
#include "error.h"
#include "safetensors.h"

#include <cctype>
#include <chrono>
#include <sys/stat.h>
#include <unistd.h>

namespace shoal {

static bool is_float_kind(const std::string & k) { return k == "f32" || k == "f16" || k == "bf16"; }

// The source a repack cache belongs to: every checkpoint file's path, size, mtime and
// inode, the backend and the experts' names. Any change to them makes a new key.
static uint64_t cache_key(const ModelSource & src, const Backend & be, const std::vector<const LinearSource *> & ls) {
    std::string id = std::string("shoal-expert-cache ") + be.name();
    for (const auto & f : src.files) {
        struct stat st{};
        ::stat(f->path.c_str(), &st);
        id += "\n" + f->path + " " + std::to_string(f->size) + " " + std::to_string((long long)st.st_mtim.tv_sec) + "." +
              std::to_string((long long)st.st_mtim.tv_nsec) + " " + std::to_string((unsigned long long)st.st_ino);
    }
    for (const LinearSource * l : ls) id += "\n" + l->name + " " + std::to_string(l->out) + "x" + std::to_string(l->in);
    return fnv1a64(id.data(), id.size());
}

static bool cache_fits(const RepackCache & c, const std::vector<const LinearSource *> & ls) {
    if (c.size() != ls.size()) return false;
    for (size_t i = 0; i < ls.size(); i++)
        if (!c.entry(i, ls[i]->name)) return false;
    return true;
}

// Opens the expert cache at path, or (re)builds it when missing or stale. nullptr when it
// cannot be written (read-only folder, full disk): the experts are then repacked in memory.
static std::shared_ptr<const RepackCache> open_expert_cache(Backend & be, const std::string & path, uint64_t key,
                                                            const std::vector<const LinearSource *> & ls,
                                                            std::string & state) {
    std::string why;
    auto c = RepackCache::open(path, key, &why);
    if (c && cache_fits(*c, ls)) {
        state = "reused";
        return c;
    }
    if (c) why = "its entries do not match the checkpoint";
    const bool existed = ::access(path.c_str(), F_OK) == 0; // stale, damaged or foreign: rebuilt
    c.reset();
    try {
        RepackCacheWriter w(path, key);
        for (const LinearSource * l : ls) be.write_cached(*l, w);
        w.commit();
    } catch (const Error & e) {
        state = std::string("off: ") + e.what();
        return nullptr;
    }
    std::string why2;
    c = RepackCache::open(path, key, &why2);
    if (!c || !cache_fits(*c, ls)) {
        state = "off: the cache just written does not read back (" + why2 + ")";
        return nullptr;
    }
    state = existed ? "rebuilt (" + why + ")" : "created";
    return c;
}

static std::unique_ptr<Linear> load(Backend & be, const LinearSource & src, int64_t & bytes) {
    auto l = be.load_linear(src);
    bytes += (int64_t)l->bytes();
    return l;
}

std::unique_ptr<Model> build_model(ModelSource && src, std::unique_ptr<Backend> backend, const LoadOptions & opt) {
    auto t0 = std::chrono::steady_clock::now();
    auto m = std::make_unique<Model>();
    m->cfg = src.cfg;
    m->files = src.files;
    m->n_params = src.n_params;
    m->file_bytes = src.file_bytes;
    m->backend = std::move(backend);
    Backend & be = *m->backend;
    const ModelConfig & c = m->cfg;

    if (c.quant != QuantMethod::None) m->quant_name = quant_name(c);
    m->dtype_name = dtype_name(src.embed.dtype);
    for (char & ch : m->dtype_name) ch = (char)std::tolower((unsigned char)ch); // "f16", as the TS API reports dtypes

    // Per decode step every dense linear and the lm_head are read once, of a MoE
    // layer the router and top_k of its E experts (all experts have one shape);
    // of the embeddings one row each, and norms are noise.
    int64_t linear_bytes = 0, active_bytes = 0;
    int64_t expert_params = 0, active_expert_params = 0;
    auto load_vec_opt = [&](const TensorView & t) { return t.data ? be.load_vec(t) : nullptr; };
    // MoE experts from a mapped repack cache when asked for and the backend holds them so
    std::shared_ptr<const RepackCache> cache;
    size_t cache_next = 0, cache_damaged = 0;
    if (!opt.expert_cache.empty() && c.n_experts > 0) {
        std::vector<const LinearSource *> ls;
        bool all = true;
        for (int i = 0; i < c.n_layers; i++)
            for (const ExpertSource & e : src.layers[i].experts)
                for (const LinearSource * l : {&e.gate, &e.up, &e.down}) {
                    all = all && be.cacheable(*l);
                    ls.push_back(l);
                }
        if (all && !ls.empty())
            cache = open_expert_cache(be, opt.expert_cache, cache_key(src, be, ls), ls, m->expert_cache_state);
        else
            m->expert_cache_state = "off: the " + std::string(be.name()) + " backend keeps these experts in memory";
    }
    auto load_expert = [&](const LinearSource & l, int64_t & bytes) {
        if (cache) {
            const RepackCache::Entry * e = cache->entry(cache_next++, l.name);
            auto lin = e ? be.load_cached(l, *e, cache) : nullptr;
            if (lin) {
                bytes += (int64_t)lin->bytes();
                return lin;
            }
            cache_damaged++; // a damaged entry: this expert in memory, the file rebuilt next time
        }
        return load(be, l, bytes);
    };

    m->embed = be.load_embedding(src.embed);
    if (src.pos_embed.data) m->pos_embed = be.load_embedding(src.pos_embed);
    m->layers.resize(c.n_layers);
    for (int i = 0; i < c.n_layers; i++) {
        LayerSource & ls = src.layers[i];
        LayerWeights & lw = m->layers[i];
        int64_t dense = 0;
        lw.attn_norm = be.load_vec(ls.attn_norm);
        lw.attn_norm_b = load_vec_opt(ls.attn_norm_b);
        if (c.desc->qkv == QkvKind::Fused) {
            lw.qkv = load(be, ls.qkv, dense);
        } else {
            lw.q = load(be, ls.q, dense);
            lw.k = load(be, ls.k, dense);
            lw.v = load(be, ls.v, dense);
        }
        lw.o = load(be, ls.o, dense);
        if (c.qk_norm) {
            lw.q_norm = be.load_vec(ls.q_norm);
            lw.k_norm = be.load_vec(ls.k_norm);
        }
        lw.ffn_norm = be.load_vec(ls.ffn_norm);
        lw.ffn_norm_b = load_vec_opt(ls.ffn_norm_b);
        if (c.is_moe_layer(i)) {
            lw.router = load(be, ls.router, dense);
            int64_t experts = 0;
            lw.experts.resize(ls.experts.size());
            for (size_t e = 0; e < ls.experts.size(); e++) {
                lw.experts[e].gate = load_expert(ls.experts[e].gate, experts);
                lw.experts[e].up = load_expert(ls.experts[e].up, experts);
                lw.experts[e].down = load_expert(ls.experts[e].down, experts);
            }
            linear_bytes += experts;
            active_bytes += experts / c.n_experts * c.n_experts_used;
            const int64_t per_expert = 3 * (int64_t)c.hidden_size * c.moe_intermediate_size;
            expert_params += per_expert * c.n_experts;
            active_expert_params += per_expert * c.n_experts_used;
        } else {
            if (ls.gate.in) lw.gate = load(be, ls.gate, dense);
            lw.up = load(be, ls.up, dense);
            lw.down = load(be, ls.down, dense);
        }
        linear_bytes += dense;
        active_bytes += dense;
    }
    if (cache_damaged) {
        ::unlink(opt.expert_cache.c_str());
        m->expert_cache_state = "off: " + std::to_string(cache_damaged) + " damaged entries in " + opt.expert_cache +
                                " (removed; rebuilt on the next load)";
    }
    if (c.final_norm) {
        m->final_norm = be.load_vec(src.final_norm);
        m->final_norm_b = load_vec_opt(src.final_norm_b);
    }
    int64_t head_bytes = 0;
    // The output matrix is read whole every decode step: int8 with a scale per
    // 128 inputs halves its bytes against f16 (opt.lm_head_q8; lm_head "auto" sets it
    // from 2^22 weights on, api.cpp). Read
    // with f32 activations it keeps stories260K's greedy output and moves its
    // perplexity by +0.06% (docs/engine.md).
    if (opt.lm_head_q8) m->lm_head = be.load_linear_int8(src.lm_head);
    if (m->lm_head) {
        head_bytes += (int64_t)m->lm_head->bytes();
        // an untied f16/f32 output matrix is no longer read: drop its pages
        if (!c.tie_word_embeddings) release_pages(src.lm_head.weight.data, src.lm_head.weight.nbytes);
    } else {
        m->lm_head = load(be, src.lm_head, head_bytes);
    }

    const int64_t row_bytes = (int64_t)(m->embed->bytes() / (size_t)std::max<int64_t>(1, m->embed->vocab));
    m->bytes_per_token = active_bytes + head_bytes + row_bytes * (m->pos_embed ? 2 : 1);
    m->n_active_params = m->n_params - expert_params + active_expert_params;
    // With tied embeddings a float lm_head shares the embedding's memory; an int8 one is its own copy.
    const bool head_shared = c.tie_word_embeddings && is_float_kind(m->lm_head->kind());
    m->weight_bytes = linear_bytes + (head_shared ? 0 : head_bytes) + (int64_t)m->embed->bytes() +
                      (m->pos_embed ? (int64_t)m->pos_embed->bytes() : 0);

    m->kv_type = opt.kv_type;
    {   // a small cache tells the backend's bytes per position (and refuses a type it lacks)
        auto probe = be.new_kv_cache(c.n_layers, 32, c.n_kv_heads * c.head_dim, c.head_dim, opt.kv_type);
        m->kv_bytes_per_position = (int64_t)(probe->bytes() / 32);
    }

    if (c.desc->pos == PosKind::Rope) m->inv_freq = rope_inv_freq(c);
    m->rope.head_dim = c.head_dim;
    m->rope.n_rot = c.head_dim;
    m->rope.inv_freq = m->inv_freq.data();
    m->repack_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return m;
}

} // namespace shoal
