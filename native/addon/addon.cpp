// addon.cpp — module registration: the table of what the addon exports.
#include "addon-model.h"
#include "addon-session.h"

#include <string>
#include "addon-ops.h"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace shoal_addon {

static Napi::Value CpuFeatures(const Napi::CallbackInfo & info) {
    return Napi::String::New(info.Env(), shoal_cpu_features());
}

// measureBandwidth(threads, bytes, reps) → GB/s. Runs on the calling thread
// for a second or two; the benchmark calls it before loading a model.
static Napi::Value MeasureBandwidth(const Napi::CallbackInfo & info) {
    const int threads = info.Length() > 0 && info[0].IsNumber() ? info[0].As<Napi::Number>().Int32Value() : 0;
    const double bytes = info.Length() > 1 && info[1].IsNumber() ? info[1].As<Napi::Number>().DoubleValue() : 1 << 30;
    const int reps = info.Length() > 2 && info[2].IsNumber() ? info[2].As<Napi::Number>().Int32Value() : 5;
    return Napi::Number::New(info.Env(), shoal_measure_read_bandwidth(threads, (size_t)bytes, reps));
}

// trimNativeHeap() → true when memory went back to the system. glibc keeps freed
// memory in its arenas: after large buffers are freed (a model replaced, a download
// hashed) the main arena can hold tens of MB the process no longer uses, and RSS
// depends on what happened to be freed last. malloc_trim(0) returns every free page
// of every arena (glibc >= 2.8); other C libraries: no-op.
static Napi::Value TrimNativeHeap(const Napi::CallbackInfo & info) {
#if defined(__GLIBC__)
    return Napi::Boolean::New(info.Env(), malloc_trim(0) != 0);
#else
    return Napi::Boolean::New(info.Env(), false);
#endif
}

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
    env.SetInstanceData(new AddonData());
    exports.Set("loadModel", Napi::Function::New(env, LoadModel));
    exports.Set("AddonModel", AddonModel::Init(env));
    exports.Set("AddonSession", AddonSession::Init(env));
    exports.Set("cpuFeatures", Napi::Function::New(env, CpuFeatures));
    exports.Set("measureBandwidth", Napi::Function::New(env, MeasureBandwidth));
    exports.Set("trimNativeHeap", Napi::Function::New(env, TrimNativeHeap));
    Napi::Object codes = Napi::Object::New(env);
    // every status the header defines (the enum only grows; unknown names end the list)
    for (int s = SHOAL_OK; std::string(shoal_status_name((shoal_status)s)) != "SHOAL_ERR_UNKNOWN"; s++)
        codes.Set(shoal_status_name((shoal_status)s), s);
    exports.Set("statusCodes", codes);
    exports.Set("ops", OpsInit(env));
    return exports;
}

NODE_API_MODULE(shoal, Init)

} // namespace shoal_addon
