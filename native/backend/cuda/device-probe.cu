// device-probe.cu — see device-probe.cuh.
#include "device-probe.cuh"

namespace shoal {
namespace cuda {
namespace {

__global__ void probe_kernel(int * sink) {
    if (sink) *sink = 1;
}

} // namespace

cudaError_t probe_kernel_launch(int device) {
    cudaError_t e = cudaSetDevice(device);
    if (e != cudaSuccess) return e;
    probe_kernel<<<1, 1>>>(nullptr);
    e = cudaGetLastError();
    if (e != cudaSuccess) return e;
    return cudaDeviceSynchronize();
}

} // namespace cuda
} // namespace shoal
