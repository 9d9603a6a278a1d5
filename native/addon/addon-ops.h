// addon-ops.h — thin entries that run single backend ops (matmul, attention)
// on caller-provided f32 arrays, for tools that need the engine's kernels
// without a model (the AWQ quantizer's calibration forward passes).
#pragma once
#include "addon.h"

namespace shoal_addon {

// Returns {matmul, attention, info}; addon.cpp exports it as `ops`.
Napi::Object OpsInit(Napi::Env env);

} // namespace shoal_addon
