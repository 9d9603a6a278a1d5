// addon-model.h — AddonModel: one JS object per shoal_model.
#pragma once
#include "addon.h"

#include <memory>

namespace shoal_addon {

// Per-environment data (the addon may be loaded by several worker threads).
struct AddonData {
    Napi::FunctionReference model_ctor;
};

// Shared so sessions keep the model alive after AddonModel.dispose().
using ModelPtr = std::shared_ptr<shoal_model>;

class AddonModel : public Napi::ObjectWrap<AddonModel> {
public:
    static Napi::Function Init(Napi::Env env);
    AddonModel(const Napi::CallbackInfo & info);
    ModelPtr model() const { return model_; }
    void set(ModelPtr m) { model_ = std::move(m); }

private:
    Napi::Value Info(const Napi::CallbackInfo & info);
    Napi::Value Dispose(const Napi::CallbackInfo & info);
    ModelPtr model_;
};

// loadModel(dir, {threads, backend, isa}) → Promise<AddonModel>
Napi::Value LoadModel(const Napi::CallbackInfo & info);

} // namespace shoal_addon
