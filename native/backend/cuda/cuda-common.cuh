// cuda-common.cuh — what every CUDA op file shares: the error check that turns
// a CUDA status into shoal::Error(SHOAL_ERR_BACKEND), launch helpers and the
// f16/bf16 conversions used by the kernels. Host-and-device header; included
// by .cu files and by backend-cuda.cpp (host only).
#pragma once
#include "error.h"

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>

namespace shoal {
namespace cuda {

// Base name of a source path, so messages never carry build-machine paths.
inline const char * base_name(const char * path) {
    const char * b = path;
    for (const char * p = path; *p; p++)
        if (*p == '/' || *p == '\\') b = p + 1;
    return b;
}

[[noreturn]] inline void cuda_fail(cudaError_t e, const char * what, const char * file, int line) {
    fail(SHOAL_ERR_BACKEND, std::string("CUDA error in ") + what + " (" + base_name(file) + ":" + std::to_string(line) +
                                "): " + cudaGetErrorName(e) + ": " + cudaGetErrorString(e));
}

} // namespace cuda
} // namespace shoal

// Throws shoal::Error(SHOAL_ERR_BACKEND) naming the call when it fails.
#define CUDA_CHECK(call)                                                                  \
    do {                                                                                  \
        const cudaError_t shoal_cuda_e_ = (call);                                         \
        if (shoal_cuda_e_ != cudaSuccess) ::shoal::cuda::cuda_fail(shoal_cuda_e_, #call, __FILE__, __LINE__); \
    } while (0)

// Shape assertion in a launcher: a violated precondition is a caller bug.
#define SHOAL_CUDA_ASSERT(cond, msg) SHOAL_CHECK((cond), SHOAL_ERR_INVALID_ARG, std::string("cuda: ") + (msg))

namespace shoal {
namespace cuda {

inline unsigned ceil_div(int64_t a, int64_t b) { return (unsigned)((a + b - 1) / b); }

// Weight / table element types as stored on the device (same bytes as the checkpoint).
enum class WType : int { F32 = 0, F16 = 1, BF16 = 2 };

#ifdef __CUDACC__
__device__ __forceinline__ float bf16_bits_to_f32(uint16_t b) { return __uint_as_float((uint32_t)b << 16); }

template <WType T> __device__ __forceinline__ float load_w(const void * p, int64_t i);
template <> __device__ __forceinline__ float load_w<WType::F32>(const void * p, int64_t i) {
    return __ldg(static_cast<const float *>(p) + i);
}
template <> __device__ __forceinline__ float load_w<WType::F16>(const void * p, int64_t i) {
    return __half2float(__ldg(static_cast<const __half *>(p) + i));
}
template <> __device__ __forceinline__ float load_w<WType::BF16>(const void * p, int64_t i) {
    return bf16_bits_to_f32(__ldg(static_cast<const unsigned short *>(p) + i));
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
#endif

} // namespace cuda
} // namespace shoal
