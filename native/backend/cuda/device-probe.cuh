// device-probe.cuh — can this process run this build's kernels on a device?
#pragma once
#include <cuda_runtime.h>

namespace shoal {
namespace cuda {

// Launches an empty kernel on `device` and waits for it. cudaErrorNoKernelImageForDevice
// (or cudaErrorInvalidDeviceFunction) means the fat binary has no code for this GPU.
cudaError_t probe_kernel_launch(int device);

} // namespace cuda
} // namespace shoal
