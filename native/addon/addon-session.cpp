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

class EvalWorker : public Napi::AsyncWorker {
public:
    EvalWorker(Napi::Env env, std::shared_ptr<SessionHolder> h, std::vector<int32_t> tokens, bool all)
        : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), h_(std::move(h)),
          tokens_(std::move(tokens)), all_(all) {}
    Napi::Promise promise() { return deferred_.Promise(); }

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
        h_->busy = false;
        Napi::Env env = Env();
        if (status_ != SHOAL_OK) return deferred_.Reject(make_error(env, status_, message_).Value());
        Napi::Float32Array out = Napi::Float32Array::New(env, logits_.size());
        std::copy(logits_.begin(), logits_.end(), out.Data());
        deferred_.Resolve(out);
    }
    void OnError(const Napi::Error & e) override {
        h_->busy = false;
        deferred_.Reject(e.Value());
    }

private:
    Napi::Promise::Deferred deferred_;
    std::shared_ptr<SessionHolder> h_;
    std::vector<int32_t> tokens_;
    bool all_;
    std::vector<float> logits_;
    shoal_status status_ = SHOAL_OK;
    std::string message_;
};

class GenerateWorker : public Napi::AsyncProgressQueueWorker<int32_t> {
public:
    GenerateWorker(Napi::Env env, Napi::Function on_token, std::shared_ptr<SessionHolder> h, std::vector<int32_t> prompt,
                   shoal_sampling_params sp, int max_tokens, std::vector<int32_t> stop)
        : Napi::AsyncProgressQueueWorker<int32_t>(env), deferred_(Napi::Promise::Deferred::New(env)),
          h_(std::move(h)), prompt_(std::move(prompt)), sp_(sp), max_tokens_(max_tokens), stop_(std::move(stop)) {
        on_token_ = Napi::Persistent(on_token);
    }
    Napi::Promise promise() { return deferred_.Promise(); }

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
        h_->busy = false;
        Napi::Env env = Env();
        if (status_ != SHOAL_OK) return deferred_.Reject(make_error(env, status_, message_).Value());
        Napi::Object r = Napi::Object::New(env);
        r.Set("promptTokens", result_.n_prompt);
        r.Set("generatedTokens", result_.n_generated);
        r.Set("stopReason", result_.stop_reason);
        r.Set("prefillSeconds", result_.prefill_seconds);
        r.Set("decodeSeconds", result_.decode_seconds);
        deferred_.Resolve(r);
    }
    void OnError(const Napi::Error & e) override {
        h_->busy = false;
        deferred_.Reject(e.Value());
    }

private:
    Napi::Promise::Deferred deferred_;
    Napi::FunctionReference on_token_;
    std::shared_ptr<SessionHolder> h_;
    std::vector<int32_t> prompt_;
    shoal_sampling_params sp_;
    int max_tokens_;
    std::vector<int32_t> stop_;
    shoal_generate_result result_{};
    shoal_status status_ = SHOAL_OK;
    std::string message_;
};

double num(Napi::Object o, const char * key, double def) {
    Napi::Value v = o.Get(key);
    return v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : def;
}

} // namespace

Napi::Function AddonSession::Init(Napi::Env env) {
    return DefineClass(env, "AddonSession",
                       {InstanceMethod("eval", &AddonSession::Eval),
                        InstanceMethod("generate", &AddonSession::Generate),
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
    Napi::Object o = info[1].As<Napi::Object>();
    shoal_sampling_params sp = shoal_sampling_default_params();
    sp.temperature = (float)num(o, "temperature", sp.temperature);
    sp.top_k = (int)num(o, "topK", sp.top_k);
    sp.top_p = (float)num(o, "topP", sp.top_p);
    sp.min_p = (float)num(o, "minP", sp.min_p);
    sp.repeat_penalty = (float)num(o, "repeatPenalty", sp.repeat_penalty);
    sp.repeat_last_n = (int)num(o, "repeatLastN", sp.repeat_last_n);
    sp.seed = (uint64_t)num(o, "seed", 0);
    auto h = acquire(env);
    h->cancel = 0;
    auto * w = new GenerateWorker(env, info[4].As<Napi::Function>(), h, std::move(prompt), sp,
                                  info[2].As<Napi::Number>().Int32Value(), std::move(stop));
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
