// host-threads.h — how many threads the addon's host-side work (quantizer
// element-wise ops, the GPTQ solve) starts: the host's cores, at most one per
// piece of work, at least one.
#pragma once

#include <algorithm>
#include <cstdint>
#include <thread>

namespace shoal_addon {

inline int64_t host_threads(int64_t n) {
    return std::max<int64_t>(1, std::min<int64_t>(n, (int64_t)std::max(1u, std::thread::hardware_concurrency())));
}

} // namespace shoal_addon
