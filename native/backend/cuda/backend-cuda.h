// backend-cuda.h — the CUDA backend's two entry points. Only the backend
// registry (src/backend-registry.cpp) includes this, and only when the build
// has CUDA (SHOAL_HAVE_CUDA); model code never sees it.
#pragma once
#include "backend.h"
#include "backend-choice.h"

#include <memory>
#include <string>

namespace shoal {

// True when a CUDA driver and a device are present and this build's kernels run
// on it; otherwise false with the reason in *why ("no CUDA driver: ...",
// "no CUDA device: ...", "no kernels for sm_XY ...").
bool cuda_usable(std::string * why);

// What the CUDA backend runs (backend-choice.h): AutoAWQ gemm INT4 with F16 scales
// (in % 32, group % 32, out % 8), F32/F16/BF16 weights, head_rmsnorm, head_dim <= 256,
// and the device's free memory now. Call only when cuda_usable().
BackendCaps cuda_caps();

// The CUDA backend on device $SHOAL_CUDA_DEVICE (default 0). Throws
// shoal::Error(SHOAL_ERR_BACKEND) with the reason when CUDA is unusable.
std::unique_ptr<Backend> make_cuda_backend();

} // namespace shoal
