// addon-session.cpp — eval and generate run on worker threads; generated
// tokens stream back through the worker's thread-safe progress queue.
#include "addon-session.h"

#include <vector>

namespace shoal_addon {

namespace {

std::vector<int32_t> int32_array(Napi::Env env, const Napi::Value & v, const char * what) {
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
        throw_type(env, std::string(what) + " must be an Int32Array");
    Napi::Int32Array a = v.As<Napi::Int32Array>();
    return std::vector<int32_t>(a.Data(), a.Data() + a.ElementLength());
}

// What every session worker shares: the promise it settles, the session it holds
// busy while it runs, and the engine's status and message of that run.
template <typename Base> class SessionWorker : public Base {
public:
    SessionWorker(Napi::Env env, std::shared_ptr<SessionHolder> h)
        : Base(env), deferred_(Napi::Promise::Deferred::New(env)), h_(std::move(h)) {}
    Napi::Promise promise() { return deferred_.Promise(); }
    void OnError(const Napi::Error & e) override {
        h_->busy = false;
        deferred_.Reject(e.Value());
    }

protected:
    // Frees the session; rejects the promise with the engine's error and returns true when it failed.
    bool rejected() {
        h_->busy = false;
        if (status_ == SHOAL_OK) return false;
        deferred_.Reject(make_error(this->Env(), status_, message_).Value());
        return true;
    }
    Napi::Promise::Deferred deferred_;
    std::shared_ptr<SessionHolder> h_;
    shoal_status status_ = SHOAL_OK;
    std::string message_;
};

class EvalWorker : public SessionWorker<Napi::AsyncWorker> {
public:
    EvalWorker(Napi::Env env, std::shared_ptr<SessionHolder> h, std::vector<int32_t> tokens, bool all)
        : SessionWorker(env, std::move(h)), tokens_(std::move(tokens)), all_(all) {}

    void Execute() override {
        shoal_model_info mi;
        shoal_model_get_info(h_->model.get(), &mi);
        logits_.resize((size_t)mi.vocab_size * (all_ ? tokens_.size() : 1));
        char err[kErrLen];
        status_ = shoal_session_eval(h_->session, tokens_.data(), (int)tokens_.size(), logits_.data(), all_ ? 1 : 0,
                                     err, sizeof err);
        if (status_ != SHOAL_OK) message_ = err;
    }
    void OnOK() override {
        if (rejected()) return;
        Napi::Float32Array out = Napi::Float32Array::New(Env(), logits_.size());
        std::copy(logits_.begin(), logits_.end(), out.Data());
        deferred_.Resolve(out);
    }

private:
    std::vector<int32_t> tokens_;
    bool all_;
    std::vector<float> logits_;
};

class GenerateWorker : public SessionWorker<Napi::AsyncProgressQueueWorker<int32_t>> {
public:
    GenerateWorker(Napi::Env env, Napi::Function on_token, std::shared_ptr<SessionHolder> h, std::vector<int32_t> prompt,
                   shoal_sampling_params sp, int max_tokens, std::vector<int32_t> stop)
        : SessionWorker(env, std::move(h)), prompt_(std::move(prompt)), sp_(sp), max_tokens_(max_tokens),
          stop_(std::move(stop)) {
        on_token_ = Napi::Persistent(on_token);
    }

    void Execute(const ExecutionProgress & progress) override {
        struct Ctx { const ExecutionProgress * p; } ctx{&progress};
        auto cb = [](int32_t tok, void * user) -> int {
            static_cast<Ctx *>(user)->p->Send(&tok, 1);
            return 0;
        };
        char err[kErrLen];
        status_ = shoal_generate(h_->session, prompt_.data(), (int)prompt_.size(), &sp_, max_tokens_, stop_.data(),
                                 (int)stop_.size(), cb, &ctx, &h_->cancel, &result_, err, sizeof err);
        if (status_ != SHOAL_OK) message_ = err;
    }
    void OnProgress(const int32_t * data, size_t count) override {
        Napi::Env env = Env();
        Napi::HandleScope scope(env);
        Napi::Array a = Napi::Array::New(env, count);
        for (size_t i = 0; i < count; i++) a.Set((uint32_t)i, data[i]);
        on_token_.Call({a});
    }
    void OnOK() override {
        if (rejected()) return;
        Napi::Object r = Napi::Object::New(Env());
        r.Set("promptTokens", result_.n_prompt);
        r.Set("generatedTokens", result_.n_generated);
        r.Set("stopReason", result_.stop_reason);
        r.Set("prefillSeconds", result_.prefill_seconds);
        r.Set("decodeSeconds", result_.decode_seconds);
        deferred_.Resolve(r);
    }

private:
    Napi::FunctionReference on_token_;
    std::vector<int32_t> prompt_;
    shoal_sampling_params sp_;
    int max_tokens_;
    std::vector<int32_t> stop_;
    shoal_generate_result result_{};
};

double num(Napi::Object o, const char * key, double def) {
    Napi::Value v = o.Get(key);
    return v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : def;
}

shoal_sampling_params sampling_params(Napi::Object o) {
    shoal_sampling_params sp = shoal_sampling_default_params();
    sp.temperature = (float)num(o, "temperature", sp.temperature);
    sp.top_k = (int)num(o, "topK", sp.top_k);
    sp.top_p = (float)num(o, "topP", sp.top_p);
    sp.min_p = (float)num(o, "minP", sp.min_p);
    sp.repeat_penalty = (float)num(o, "repeatPenalty", sp.repeat_penalty);
    sp.repeat_last_n = (int)num(o, "repeatLastN", sp.repeat_last_n);
    sp.seed = (uint64_t)num(o, "seed", 0);
    return sp;
}

// One step: eval the fed tokens, draw with controls (everything copied, so the
// JS arrays may change while the worker runs).
class StepWorker : public SessionWorker<Napi::AsyncWorker> {
public:
    StepWorker(Napi::Env env, std::shared_ptr<SessionHolder> h) : SessionWorker(env, std::move(h)) {}

    std::vector<int32_t> tokens, history, counted, bias_ids;
    std::vector<float> bias_values;
    std::vector<uint32_t> allowed;
    bool has_mask = false;
    shoal_sample_controls ctl = shoal_sample_controls_default();

    void Execute() override {
        ctl.counted = counted.data();
        ctl.n_counted = (int)counted.size();
        ctl.bias_ids = bias_ids.data();
        ctl.bias_values = bias_values.data();
        ctl.n_bias = (int)bias_ids.size();
        ctl.allowed = has_mask ? allowed.data() : nullptr;
        char err[kErrLen];
        status_ = shoal_session_step(h_->session, tokens.data(), (int)tokens.size(), h_->sampler, history.data(),
                                     (int)history.size(), &ctl, &r_, err, sizeof err);
        if (status_ != SHOAL_OK) message_ = err;
    }
    void OnOK() override {
        if (rejected()) return;
        Napi::Env env = Env();
        Napi::Object o = Napi::Object::New(env);
        o.Set("token", r_.token);
        o.Set("logprob", r_.logprob);
        Napi::Int32Array ids = Napi::Int32Array::New(env, r_.n_top);
        Napi::Float32Array lps = Napi::Float32Array::New(env, r_.n_top);
        for (int i = 0; i < r_.n_top; i++) {
            ids[i] = r_.top[i].token;
            lps[i] = r_.top[i].logprob;
        }
        o.Set("topIds", ids);
        o.Set("topLogprobs", lps);
        deferred_.Resolve(o);
    }

private:
    shoal_sample_result r_{};
};

template <typename T, typename A> std::vector<T> typed(Napi::Env env, Napi::Object o, const char * key, napi_typedarray_type type) {
    Napi::Value v = o.Get(key);
    if (v.IsUndefined() || v.IsNull()) return {};
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != type)
        throw_type(env, std::string("step controls: ") + key + " has the wrong array type");
    A a = v.As<A>();
    return std::vector<T>(a.Data(), a.Data() + a.ElementLength());
}

} // namespace

Napi::Function AddonSession::Init(Napi::Env env) {
    return DefineClass(env, "AddonSession",
                       {InstanceMethod("eval", &AddonSession::Eval),
                        InstanceMethod("generate", &AddonSession::Generate),
                        InstanceMethod("setSampler", &AddonSession::SetSampler),
                        InstanceMethod("step", &AddonSession::Step),
                        InstanceMethod("cancel", &AddonSession::Cancel),
                        InstanceMethod("truncate", &AddonSession::Truncate),
                        InstanceMethod("position", &AddonSession::Position),
                        InstanceMethod("contextSize", &AddonSession::ContextSize),
                        InstanceMethod("dispose", &AddonSession::Dispose)});
}

AddonSession::AddonSession(const Napi::CallbackInfo & info) : Napi::ObjectWrap<AddonSession>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2 || !info[0].IsObject() || !info[1].IsNumber())
        throw_type(env, "new AddonSession(model, contextSize)");
    AddonModel * m = AddonModel::Unwrap(info[0].As<Napi::Object>());
    if (!m->model()) throw make_error(env, SHOAL_ERR_INVALID_ARG, "model is disposed");
    char err[kErrLen];
    shoal_session * s = nullptr;
    shoal_status st = shoal_session_new(m->model().get(), info[1].As<Napi::Number>().Int32Value(), &s, err, sizeof err);
    if (st != SHOAL_OK) throw make_error(env, st, err);
    h_ = std::make_shared<SessionHolder>();
    h_->model = m->model();
    h_->session = s;
}

std::shared_ptr<SessionHolder> AddonSession::acquire(Napi::Env env) {
    if (!h_) throw make_error(env, SHOAL_ERR_INVALID_ARG, "session is disposed");
    bool expected = false;
    if (!h_->busy.compare_exchange_strong(expected, true))
        throw make_error(env, SHOAL_ERR_INVALID_ARG, "session is busy: wait for the previous eval or generate to finish");
    return h_;
}

Napi::Value AddonSession::Eval(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    std::vector<int32_t> tokens = int32_array(env, info[0], "tokens");
    const bool all = info.Length() > 1 && info[1].ToBoolean();
    auto h = acquire(env);
    auto * w = new EvalWorker(env, h, std::move(tokens), all);
    Napi::Promise p = w->promise();
    w->Queue();
    return p;
}

// generate(prompt: Int32Array, sampling: object, maxTokens: number, stop: Int32Array, onToken: (ids) => void)
Napi::Value AddonSession::Generate(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (info.Length() < 5 || !info[1].IsObject() || !info[2].IsNumber() || !info[4].IsFunction())
        throw_type(env, "generate(prompt, sampling, maxTokens, stopIds, onToken)");
    std::vector<int32_t> prompt = int32_array(env, info[0], "prompt");
    std::vector<int32_t> stop = int32_array(env, info[3], "stopIds");
    shoal_sampling_params sp = sampling_params(info[1].As<Napi::Object>());
    auto h = acquire(env);
    h->cancel = 0;
    auto * w = new GenerateWorker(env, info[4].As<Napi::Function>(), h, std::move(prompt), sp,
                                  info[2].As<Napi::Number>().Int32Value(), std::move(stop));
    Napi::Promise p = w->promise();
    w->Queue();
    return p;
}

// setSampler(sampling): a fresh sampler (seeded RNG) for the following step() calls.
Napi::Value AddonSession::SetSampler(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsObject()) throw_type(env, "setSampler(sampling)");
    if (!h_) throw make_error(env, SHOAL_ERR_INVALID_ARG, "session is disposed");
    if (h_->busy) throw make_error(env, SHOAL_ERR_INVALID_ARG, "session is busy");
    shoal_sampling_params sp = sampling_params(info[0].As<Napi::Object>());
    shoal_sampler * smp = shoal_sampler_new(&sp);
    if (!smp) throw make_error(env, SHOAL_ERR_OOM, "cannot allocate a sampler");
    shoal_sampler_free(h_->sampler);
    h_->sampler = smp;
    return env.Undefined();
}

// step(tokens: Int32Array, history: Int32Array, controls) -> Promise<{token, logprob, topIds, topLogprobs}>
Napi::Value AddonSession::Step(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (info.Length() < 3 || !info[2].IsObject()) throw_type(env, "step(tokens, history, controls)");
    std::vector<int32_t> tokens = int32_array(env, info[0], "tokens");
    std::vector<int32_t> history = int32_array(env, info[1], "history");
    Napi::Object o = info[2].As<Napi::Object>();
    if (h_ && !h_->sampler) throw make_error(env, SHOAL_ERR_INVALID_ARG, "step: call setSampler() first");
    auto h = acquire(env);
    auto * w = new StepWorker(env, h);
    try {
        w->tokens = std::move(tokens);
        w->history = std::move(history);
        w->counted = typed<int32_t, Napi::Int32Array>(env, o, "counted", napi_int32_array);
        w->bias_ids = typed<int32_t, Napi::Int32Array>(env, o, "biasIds", napi_int32_array);
        w->bias_values = typed<float, Napi::Float32Array>(env, o, "biasValues", napi_float32_array);
        Napi::Value m = o.Get("allowed");
        w->has_mask = !(m.IsUndefined() || m.IsNull());
        w->allowed = typed<uint32_t, Napi::Uint32Array>(env, o, "allowed", napi_uint32_array);
        if (w->bias_ids.size() != w->bias_values.size()) throw_type(env, "step controls: biasIds and biasValues differ in length");
        shoal_model_info mi;
        shoal_model_get_info(h->model.get(), &mi);
        if (w->has_mask && w->allowed.size() * 32 < (size_t)mi.vocab_size)
            throw_type(env, "step controls: allowed needs ceil(vocab / 32) words");
        w->ctl.presence_penalty = (float)num(o, "presencePenalty", 0);
        w->ctl.frequency_penalty = (float)num(o, "frequencyPenalty", 0);
        w->ctl.n_top_logprobs = (int)num(o, "topLogprobs", 0);
    } catch (...) {
        h->busy = false;
        delete w;
        throw;
    }
    Napi::Promise p = w->promise();
    w->Queue();
    return p;
}

Napi::Value AddonSession::Cancel(const Napi::CallbackInfo & info) {
    if (h_) h_->cancel = 1;
    return info.Env().Undefined();
}

Napi::Value AddonSession::Truncate(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (!h_) throw make_error(env, SHOAL_ERR_INVALID_ARG, "session is disposed");
    if (h_->busy) throw make_error(env, SHOAL_ERR_INVALID_ARG, "session is busy");
    if (info.Length() < 1 || !info[0].IsNumber()) throw_type(env, "truncate(keep)");
    shoal_status st = shoal_session_truncate(h_->session, info[0].As<Napi::Number>().Int32Value());
    if (st != SHOAL_OK) throw make_error(env, st, "truncate: keep must be >= 0");
    return env.Undefined();
}

Napi::Value AddonSession::Position(const Napi::CallbackInfo & info) {
    return Napi::Number::New(info.Env(), h_ ? shoal_session_n_past(h_->session) : 0);
}

Napi::Value AddonSession::ContextSize(const Napi::CallbackInfo & info) {
    return Napi::Number::New(info.Env(), h_ ? shoal_session_n_ctx(h_->session) : 0);
}

Napi::Value AddonSession::Dispose(const Napi::CallbackInfo & info) {
    if (h_) h_->cancel = 1;
    h_.reset();
    return info.Env().Undefined();
}

} // namespace shoal_addon
