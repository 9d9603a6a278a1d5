// addon-session.h — AddonSession: one JS object per shoal_session.
#pragma once
#include "addon-model.h"

#include <atomic>

namespace shoal_addon {

// Owned jointly by the JS object and any worker in flight, so dispose() during
// a generation frees the session only when the worker is done.
struct SessionHolder {
    ModelPtr        model;
    shoal_session * session = nullptr;
    std::atomic<bool> busy{false};
    volatile int    cancel = 0;
    shoal_sampler * sampler = nullptr; // for step(); replaced by setSampler()
    ~SessionHolder() {
        shoal_sampler_free(sampler);
        shoal_session_free(session);
    }
};

class AddonSession : public Napi::ObjectWrap<AddonSession> {
public:
    static Napi::Function Init(Napi::Env env);
    AddonSession(const Napi::CallbackInfo & info); // new AddonSession(model, nCtx)

private:
    std::shared_ptr<SessionHolder> acquire(Napi::Env env); // marks busy or throws
    Napi::Value Eval(const Napi::CallbackInfo & info);
    Napi::Value Generate(const Napi::CallbackInfo & info);
    Napi::Value SetSampler(const Napi::CallbackInfo & info);
    Napi::Value Step(const Napi::CallbackInfo & info);
    Napi::Value Cancel(const Napi::CallbackInfo & info);
    Napi::Value Truncate(const Napi::CallbackInfo & info);
    Napi::Value Position(const Napi::CallbackInfo & info);
    Napi::Value ContextSize(const Napi::CallbackInfo & info);
    Napi::Value Dispose(const Napi::CallbackInfo & info);
    std::shared_ptr<SessionHolder> h_;
};

} // namespace shoal_addon
