// api.cpp — the C API (shoal.h). Catches every exception and turns it into a
// status and a message; nothing below this file sees C types or error buffers.
#include "shoal.h"
#include "backend-choice.h"
#include "error.h"
#include "model.h"
#include "sampling.h"
#include "session.h"

#include <chrono>
#include <cstring>
#include <new>
#include <string>
#include <thread>

struct shoal_model {
    std::unique_ptr<shoal::Model> m;
};
struct shoal_session {
    std::unique_ptr<shoal::Session> s;
};
struct shoal_sampler {
    std::unique_ptr<shoal::Sampler> s;
};

namespace {

void write_err(char * err, size_t len, const std::string & msg) {
    if (!err || len == 0) return;
    const size_t n = std::min(len - 1, msg.size());
    std::memcpy(err, msg.data(), n);
    err[n] = '\0';
}

template <typename F> shoal_status guarded(char * err, size_t len, F && f) {
    try {
        f();
        write_err(err, len, "");
        return SHOAL_OK;
    } catch (const shoal::Error & e) {
        write_err(err, len, e.what());
        return e.status;
    } catch (const std::bad_alloc &) {
        write_err(err, len, "out of memory");
        return SHOAL_ERR_OOM;
    } catch (const std::exception & e) {
        write_err(err, len, std::string("internal error: ") + e.what());
        return SHOAL_ERR_INTERNAL;
    } catch (...) {
        write_err(err, len, "internal error");
        return SHOAL_ERR_INTERNAL;
    }
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

} // namespace

extern "C" {

const char * shoal_status_name(shoal_status s) {
    switch (s) {
#define X(name) case name: return #name;
        X(SHOAL_OK) X(SHOAL_ERR_IO) X(SHOAL_ERR_ST_TRUNCATED) X(SHOAL_ERR_ST_HEADER_LEN)
        X(SHOAL_ERR_ST_HEADER_JSON) X(SHOAL_ERR_ST_OFFSETS) X(SHOAL_ERR_ST_DTYPE) X(SHOAL_ERR_CONFIG)
        X(SHOAL_ERR_SHAPE) X(SHOAL_ERR_MISSING_TENSOR) X(SHOAL_ERR_UNSUPPORTED_ARCH)
        X(SHOAL_ERR_UNSUPPORTED_QUANT) X(SHOAL_ERR_GROUP_SIZE) X(SHOAL_ERR_CONTEXT_FULL)
        X(SHOAL_ERR_INVALID_ARG) X(SHOAL_ERR_OOM) X(SHOAL_ERR_CANCELLED) X(SHOAL_ERR_BACKEND)
        X(SHOAL_ERR_INTERNAL) X(SHOAL_ERR_QUANT_METADATA)
#undef X
    }
    return "SHOAL_ERR_UNKNOWN";
}

shoal_model_params shoal_model_default_params(void) {
    shoal_model_params p;
    p.n_threads = 0;
    p.backend = "auto";
    p.isa = "auto";
    p.kv_cache = "f16";
    p.lm_head = "auto";
    p.expert_cache = "";
    p.precision = "fast";
    return p;
}

shoal_status shoal_model_load(const char * dir, const shoal_model_params * params, shoal_model ** out,
                              char * err, size_t err_len) {
    if (out) *out = nullptr;
    return guarded(err, err_len, [&] {
        SHOAL_CHECK(dir && out, SHOAL_ERR_INVALID_ARG, "shoal_model_load: dir and out are required");
        const shoal_model_params p = params ? *params : shoal_model_default_params();
        std::string backend = p.backend ? p.backend : "auto";
        SHOAL_CHECK(p.n_threads >= 0 && p.n_threads <= 1024, SHOAL_ERR_INVALID_ARG,
                    "n_threads must be between 0 and 1024, got " + std::to_string(p.n_threads));
        const auto t0 = std::chrono::steady_clock::now();
        shoal::ModelSource src = shoal::load_model_source(dir);
        shoal::KvType kv_type = shoal::KvType::F16;
        const std::string kv_name = p.kv_cache && *p.kv_cache ? p.kv_cache : "f16";
        SHOAL_CHECK(shoal::parse_kv_type(kv_name, &kv_type), SHOAL_ERR_INVALID_ARG,
                    "kv_cache must be f32, f16 or q8, got '" + kv_name + "'");
        shoal::LoadOptions lo;
        lo.kv_type = kv_type;
        const std::string head = p.lm_head && *p.lm_head ? p.lm_head : "auto";
        SHOAL_CHECK(head == "auto" || head == "q8" || head == "native", SHOAL_ERR_INVALID_ARG,
                    "lm_head must be auto, q8 or native, got '" + head + "'");
        lo.lm_head_q8 = head == "q8";
        if (p.expert_cache) lo.expert_cache = p.expert_cache;
        shoal::Precision prec = shoal::Precision::Fast;
        const std::string prec_name = p.precision && *p.precision ? p.precision : "fast";
        SHOAL_CHECK(shoal::parse_precision(prec_name, &prec), SHOAL_ERR_INVALID_ARG,
                    "precision must be fast or exact, got '" + prec_name + "'");
        // auto: int8 where the output matrix is big enough for its bytes to matter, unless the
        // precision keeps it as stored
        if (head == "auto")
            lo.lm_head_q8 = prec != shoal::Precision::Exact && src.lm_head.in * src.lm_head.out >= shoal::kAutoInt8HeadWeights;
        if (prec == shoal::Precision::Exact) {
            SHOAL_CHECK(!lo.lm_head_q8, SHOAL_ERR_INVALID_ARG,
                        "precision 'exact' keeps the output matrix as stored: lm_head must be native or auto, not q8");
            // the exact kernels are the CPU's: no GPU choice to make
            SHOAL_CHECK(backend == "auto" || backend == "cpu", SHOAL_ERR_BACKEND,
                        "precision 'exact' runs on the CPU backend only; use backend cpu or auto, not '" + backend + "'");
            backend = "cpu";
        }
        // auto: the GPU only when its capability table covers the checkpoint (backend-choice.h)
        shoal::BackendCaps caps;
        std::string why;
        const bool gpu = (backend == "auto" || backend == "cuda") && shoal::gpu_backend_caps(&caps, &why);
        const shoal::BackendChoice choice = shoal::choose_backend(backend, src, gpu ? &caps : nullptr, why);
        if (backend == "cuda" && gpu) {
            const std::string cannot = shoal::backend_cannot_run(src, caps);
            SHOAL_CHECK(cannot.empty(), SHOAL_ERR_BACKEND,
                        "backend 'cuda' cannot run " + std::string(dir) + ": " + cannot + "; use --backend cpu or auto");
        }
        auto be = shoal::make_backend(choice.name, p.isa ? p.isa : "auto", p.n_threads, prec);
        auto m = shoal::build_model(std::move(src), std::move(be), lo);
        m->backend_note = choice.note;
        m->load_seconds = seconds_since(t0);
        *out = new shoal_model{std::move(m)};
    });
}

void shoal_model_free(shoal_model * model) { delete model; }

void shoal_model_get_info(const shoal_model * model, shoal_model_info * info) {
    if (!model || !info) return;
    const shoal::Model & m = *model->m;
    const shoal::ModelConfig & c = m.cfg;
    *info = shoal_model_info{};
    info->arch = c.arch.c_str();
    info->quant = m.quant_name.c_str();
    info->dtype = m.dtype_name.c_str();
    info->backend = m.backend->name();
    info->isa = m.backend->isa();
    info->n_threads = m.backend->n_threads();
    info->vocab_size = c.vocab_size;
    info->hidden_size = c.hidden_size;
    info->intermediate_size = c.intermediate_size;
    info->n_layers = c.n_layers;
    info->n_heads = c.n_heads;
    info->n_kv_heads = c.n_kv_heads;
    info->head_dim = c.head_dim;
    info->max_position_embeddings = c.max_position_embeddings;
    info->bos_token_id = c.bos_token_id;
    info->n_eos = (int)std::min<size_t>(8, c.eos_token_ids.size());
    for (int i = 0; i < info->n_eos; i++) info->eos_token_ids[i] = c.eos_token_ids[i];
    info->tied_embeddings = c.tie_word_embeddings ? 1 : 0;
    info->group_size = c.quant != shoal::QuantMethod::None ? c.group_size : 0;
    info->n_params = m.n_params;
    info->file_bytes = m.file_bytes;
    info->weight_bytes = m.weight_bytes;
    info->bytes_per_token = m.bytes_per_token;
    info->load_seconds = m.load_seconds;
    info->repack_seconds = m.repack_seconds;
    info->backend_note = m.backend_note.c_str();
    info->family = c.desc ? c.desc->family : "";
    info->sliding_window = c.sliding_window;
    info->n_experts = c.n_experts;
    info->n_experts_used = c.n_experts_used;
    info->n_active_params = m.n_active_params;
    info->expert_cache = m.expert_cache_state.c_str();
    info->kv_cache = shoal::kv_type_name(m.kv_type);
    info->kv_bytes_per_position = m.kv_bytes_per_position;
    info->lm_head = m.lm_head->kind();
    info->precision = m.backend->precision();
}

shoal_status shoal_session_new(shoal_model * model, int n_ctx, shoal_session ** out, char * err, size_t err_len) {
    if (out) *out = nullptr;
    return guarded(err, err_len, [&] {
        SHOAL_CHECK(model && out, SHOAL_ERR_INVALID_ARG, "shoal_session_new: model and out are required");
        const int max_ctx = model->m->cfg.max_position_embeddings;
        if (n_ctx <= 0) n_ctx = max_ctx;
        SHOAL_CHECK(n_ctx <= max_ctx, SHOAL_ERR_INVALID_ARG,
                    "context size " + std::to_string(n_ctx) + " exceeds the model's max_position_embeddings " +
                        std::to_string(max_ctx));
        *out = new shoal_session{std::make_unique<shoal::Session>(model->m.get(), n_ctx)};
    });
}

void shoal_session_free(shoal_session * s) { delete s; }
int shoal_session_n_past(const shoal_session * s) { return s ? s->s->n_past : 0; }
int shoal_session_n_ctx(const shoal_session * s) { return s ? s->s->n_ctx : 0; }

shoal_status shoal_session_truncate(shoal_session * s, int n_keep) {
    if (!s || n_keep < 0) return SHOAL_ERR_INVALID_ARG;
    if (n_keep < s->s->n_past) {
        // a sliding-window ring has overwritten positions this far back
        if (!s->s->can_truncate_to(n_keep)) return SHOAL_ERR_INVALID_ARG;
        s->s->n_past = n_keep;
        if (n_keep == 0) s->s->kv_high = -1;
        s->s->has_logits = false;
    }
    return SHOAL_OK;
}

shoal_status shoal_session_eval(shoal_session * s, const int32_t * tokens, int n, float * logits, int all_logits,
                                char * err, size_t err_len) {
    return guarded(err, err_len, [&] {
        SHOAL_CHECK(s && tokens, SHOAL_ERR_INVALID_ARG, "shoal_session_eval: session and tokens are required");
        s->s->eval(tokens, n, logits, all_logits != 0);
    });
}

const float * shoal_session_logits(const shoal_session * s) {
    return s && s->s->has_logits ? s->s->logits.data() : nullptr;
}

shoal_sampling_params shoal_sampling_default_params(void) {
    shoal_sampling_params p;
    p.temperature = 0.0f;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    p.repeat_penalty = 1.0f;
    p.repeat_last_n = 64;
    p.seed = 0;
    return p;
}

shoal_sampler * shoal_sampler_new(const shoal_sampling_params * p) {
    try {
        return new shoal_sampler{std::make_unique<shoal::Sampler>(p ? *p : shoal_sampling_default_params())};
    } catch (...) {
        return nullptr;
    }
}

void shoal_sampler_free(shoal_sampler * smp) { delete smp; }

int32_t shoal_sampler_sample(shoal_sampler * smp, const float * logits, int vocab, const int32_t * history,
                             int n_history) {
    if (!smp || !logits || vocab <= 0) return -1;
    return smp->s->sample(logits, vocab, history, n_history);
}

shoal_status shoal_generate(shoal_session * s, const int32_t * prompt, int n_prompt, const shoal_sampling_params * sp,
                            int max_tokens, const int32_t * stop_ids, int n_stop, shoal_token_cb cb, void * user,
                            volatile int * cancel, shoal_generate_result * result, char * err, size_t err_len) {
    shoal_generate_result r{};
    r.n_prompt = n_prompt;
    const shoal_status st = guarded(err, err_len, [&] {
        SHOAL_CHECK(s && (prompt || n_prompt == 0), SHOAL_ERR_INVALID_ARG, "shoal_generate: session and prompt are required");
        shoal::Session & ss = *s->s;
        const shoal::ModelConfig & c = ss.model->cfg;
        shoal::Sampler sampler(sp ? *sp : shoal_sampling_default_params());
        std::vector<int32_t> history(prompt, prompt + n_prompt);

        auto t0 = std::chrono::steady_clock::now();
        if (n_prompt > 0) ss.eval(prompt, n_prompt, nullptr, false);
        SHOAL_CHECK(ss.has_logits, SHOAL_ERR_INVALID_ARG, "shoal_generate: empty prompt and no previous tokens to continue from");
        r.prefill_seconds = seconds_since(t0);
        auto t1 = std::chrono::steady_clock::now();
        r.stop_reason = 1;
        for (int i = 0; max_tokens < 0 || i < max_tokens; i++) {
            if (cancel && *cancel) { r.stop_reason = 3; break; }
            const int32_t tok = sampler.sample(ss.logits.data(), c.vocab_size, history.data(), (int)history.size());
            bool stop = false;
            for (int e : c.eos_token_ids) stop |= tok == e;
            for (int j = 0; j < n_stop; j++) stop |= tok == stop_ids[j];
            if (stop) { r.stop_reason = 0; break; }
            r.n_generated++;
            history.push_back(tok);
            if (cb && cb(tok, user)) { r.stop_reason = 2; break; }
            if (max_tokens >= 0 && r.n_generated >= max_tokens) { r.stop_reason = 1; break; }
            if (ss.n_past >= ss.n_ctx) { r.stop_reason = 4; break; }
            ss.eval(&tok, 1, nullptr, false);
        }
        r.decode_seconds = seconds_since(t1);
    });
    if (result) *result = r;
    return st;
}

shoal_sample_controls shoal_sample_controls_default(void) {
    shoal_sample_controls c;
    std::memset(&c, 0, sizeof c);
    return c;
}

shoal_status shoal_sampler_sample_ex(shoal_sampler * smp, const float * logits, int vocab, const int32_t * history,
                                     int n_history, const shoal_sample_controls * ctl, shoal_sample_result * out,
                                     char * err, size_t err_len) {
    return guarded(err, err_len, [&] {
        SHOAL_CHECK(smp && logits && vocab > 0 && out && n_history >= 0 && (history || n_history == 0),
                    SHOAL_ERR_INVALID_ARG, "shoal_sampler_sample_ex: sampler, logits, vocab and out are required");
        const shoal_sample_controls c = ctl ? *ctl : shoal_sample_controls_default();
        smp->s->sample_ex(logits, vocab, history, n_history, c, *out);
    });
}

shoal_status shoal_session_step(shoal_session * s, const int32_t * tokens, int n, shoal_sampler * smp,
                                const int32_t * history, int n_history, const shoal_sample_controls * ctl,
                                shoal_sample_result * out, char * err, size_t err_len) {
    return guarded(err, err_len, [&] {
        SHOAL_CHECK(s && smp && out && n >= 0 && (tokens || n == 0) && n_history >= 0 && (history || n_history == 0),
                    SHOAL_ERR_INVALID_ARG, "shoal_session_step: session, sampler and out are required");
        shoal::Session & ss = *s->s;
        if (n > 0) ss.eval(tokens, n, nullptr, false);
        SHOAL_CHECK(ss.has_logits, SHOAL_ERR_INVALID_ARG, "shoal_session_step: no tokens evaluated yet to draw from");
        const shoal_sample_controls c = ctl ? *ctl : shoal_sample_controls_default();
        smp->s->sample_ex(ss.logits.data(), ss.model->cfg.vocab_size, history, n_history, c, *out);
    });
}

const char * shoal_cpu_features(void) {
    static const std::string s = shoal::cpu_isas();
    return s.c_str();
}

} // extern "C"
