// addon-model.cpp — model loading (AsyncWorker, off the event loop) and info.
#include "addon-model.h"

namespace shoal_addon {

Napi::Function AddonModel::Init(Napi::Env env) {
    Napi::Function f = DefineClass(env, "AddonModel",
                                   {InstanceMethod("info", &AddonModel::Info),
                                    InstanceMethod("dispose", &AddonModel::Dispose)});
    env.GetInstanceData<AddonData>()->model_ctor = Napi::Persistent(f);
    return f;
}

AddonModel::AddonModel(const Napi::CallbackInfo & info) : Napi::ObjectWrap<AddonModel>(info) {}

Napi::Value AddonModel::Info(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (!model_) throw make_error(env, SHOAL_ERR_INVALID_ARG, "model is disposed");
    shoal_model_info mi;
    shoal_model_get_info(model_.get(), &mi);
    Napi::Object o = Napi::Object::New(env);
    o.Set("arch", mi.arch);
    o.Set("quant", mi.quant);
    o.Set("dtype", mi.dtype);
    o.Set("backend", mi.backend);
    o.Set("isa", mi.isa);
    o.Set("threads", mi.n_threads);
    o.Set("kvCache", mi.kv_cache);
    o.Set("kvBytesPerPosition", (double)mi.kv_bytes_per_position);
    o.Set("lmHead", mi.lm_head);
    o.Set("precision", mi.precision);
    o.Set("vocabSize", mi.vocab_size);
    o.Set("hiddenSize", mi.hidden_size);
    o.Set("intermediateSize", mi.intermediate_size);
    o.Set("layers", mi.n_layers);
    o.Set("heads", mi.n_heads);
    o.Set("kvHeads", mi.n_kv_heads);
    o.Set("headDim", mi.head_dim);
    o.Set("contextLength", mi.max_position_embeddings);
    o.Set("bosTokenId", mi.bos_token_id >= 0 ? Napi::Value(Napi::Number::New(env, mi.bos_token_id)) : env.Null());
    Napi::Array eos = Napi::Array::New(env, mi.n_eos);
    for (int i = 0; i < mi.n_eos; i++) eos.Set((uint32_t)i, mi.eos_token_ids[i]);
    o.Set("eosTokenIds", eos);
    o.Set("tiedEmbeddings", mi.tied_embeddings != 0);
    o.Set("groupSize", mi.group_size);
    o.Set("parameters", (double)mi.n_params);
    o.Set("fileBytes", (double)mi.file_bytes);
    o.Set("weightBytes", (double)mi.weight_bytes);
    o.Set("bytesPerToken", (double)mi.bytes_per_token);
    o.Set("loadSeconds", mi.load_seconds);
    o.Set("repackSeconds", mi.repack_seconds);
    o.Set("backendNote", mi.backend_note ? mi.backend_note : "");
    o.Set("family", mi.family ? mi.family : "");
    o.Set("slidingWindow", mi.sliding_window);
    o.Set("experts", mi.n_experts);
    o.Set("expertsUsed", mi.n_experts_used);
    o.Set("activeParameters", (double)mi.n_active_params);
    o.Set("expertCache", mi.expert_cache ? mi.expert_cache : "off");
    return o;
}

Napi::Value AddonModel::Dispose(const Napi::CallbackInfo & info) {
    model_.reset(); // freed when the last session lets go
    return info.Env().Undefined();
}

namespace {

class LoadWorker : public Napi::AsyncWorker {
public:
    LoadWorker(Napi::Env env, std::string dir, int threads, std::string backend, std::string isa, std::string kv_cache,
               std::string lm_head, std::string expert_cache, std::string precision)
        : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), dir_(std::move(dir)),
          threads_(threads), backend_(std::move(backend)), isa_(std::move(isa)), kv_cache_(std::move(kv_cache)),
          lm_head_(std::move(lm_head)), expert_cache_(std::move(expert_cache)), precision_(std::move(precision)) {}
    Napi::Promise promise() { return deferred_.Promise(); }

    void Execute() override {
        shoal_model_params p = shoal_model_default_params();
        p.n_threads = threads_;
        p.backend = backend_.c_str();
        p.isa = isa_.c_str();
        p.kv_cache = kv_cache_.c_str();
        p.lm_head = lm_head_.c_str();
        p.expert_cache = expert_cache_.c_str();
        p.precision = precision_.c_str();
        char err[kErrLen];
        shoal_model * m = nullptr;
        status_ = shoal_model_load(dir_.c_str(), &p, &m, err, sizeof err);
        if (status_ != SHOAL_OK) message_ = err;
        else model_ = ModelPtr(m, shoal_model_free);
    }
    void OnOK() override {
        Napi::Env env = Env();
        if (status_ != SHOAL_OK) {
            deferred_.Reject(make_error(env, status_, message_).Value());
            return;
        }
        Napi::Object obj = env.GetInstanceData<AddonData>()->model_ctor.New({});
        AddonModel::Unwrap(obj)->set(model_);
        deferred_.Resolve(obj);
    }
    void OnError(const Napi::Error & e) override { deferred_.Reject(e.Value()); }

private:
    Napi::Promise::Deferred deferred_;
    std::string dir_;
    int threads_;
    std::string backend_, isa_, kv_cache_, lm_head_, expert_cache_, precision_; // "" = the engine's defaults
    shoal_status status_ = SHOAL_OK;
    std::string message_;
    ModelPtr model_;
};

} // namespace

Napi::Value LoadModel(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsString()) throw_type(env, "loadModel(dir, options): dir must be a string");
    int threads = 0;
    std::string backend = "auto", isa = "auto", kv_cache, lm_head, expert_cache, precision;
    if (info.Length() > 1 && info[1].IsObject()) {
        Napi::Object o = info[1].As<Napi::Object>();
        if (o.Has("threads") && o.Get("threads").IsNumber()) threads = o.Get("threads").As<Napi::Number>().Int32Value();
        if (o.Has("backend") && o.Get("backend").IsString()) backend = o.Get("backend").As<Napi::String>();
        if (o.Has("isa") && o.Get("isa").IsString()) isa = o.Get("isa").As<Napi::String>();
        if (o.Has("kvCache") && o.Get("kvCache").IsString()) kv_cache = o.Get("kvCache").As<Napi::String>();
        if (o.Has("lmHead") && o.Get("lmHead").IsString()) lm_head = o.Get("lmHead").As<Napi::String>();
        if (o.Has("expertCache") && o.Get("expertCache").IsString()) expert_cache = o.Get("expertCache").As<Napi::String>();
        if (o.Has("precision") && o.Get("precision").IsString()) precision = o.Get("precision").As<Napi::String>();
    }
    auto * w = new LoadWorker(env, info[0].As<Napi::String>(), threads, backend, isa, kv_cache, lm_head, expert_cache, precision);
    Napi::Promise p = w->promise();
    w->Queue();
    return p;
}

} // namespace shoal_addon
