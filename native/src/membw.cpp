// membw.cpp — measures the machine's memory read bandwidth, the ceiling of
// batch-1 decode (every weight byte is read once per token). The buffer sits on
// huge pages where the kernel gives them (huge-pages.h), as the CPU backend's
// weights do, so the roofline is the best stream this machine offers, not one
// slowed by page walks the engine does not pay.
#include "huge-pages.h"
#include "shoal.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

namespace {

// 64-byte GCC vectors (ISA-neutral: the compiler emits the widest loads the
// baseline target allows) with 4 independent accumulators, so the loop is
// bound by memory, not by the add chain.
typedef uint64_t v8 __attribute__((vector_size(64)));

uint64_t read_sum(const v8 * p, size_t n) {
    v8 a = {0}, b = {0}, c = {0}, d = {0};
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        a += p[i];
        b += p[i + 1];
        c += p[i + 2];
        d += p[i + 3];
    }
    for (; i < n; i++) a += p[i];
    const v8 s = a + b + c + d;
    return s[0] + s[7];
}

} // namespace

extern "C" double shoal_measure_read_bandwidth(int n_threads, size_t bytes, int reps) {
    if (n_threads <= 0) n_threads = (int)std::max(1u, std::thread::hardware_concurrency());
    if (bytes < (1u << 20)) bytes = 1u << 20;
    if (reps <= 0) reps = 5;
    const size_t n = bytes / sizeof(v8);
    v8 * buf = static_cast<v8 *>(shoal::huge_alloc(n * sizeof(v8)));
    if (!buf) return 0;
    std::memset(buf, 1, n * sizeof(v8)); // fault every page in before timing
    volatile uint64_t sink = 0;
    double best = 0;
    for (int r = 0; r < reps; r++) {
        std::vector<uint64_t> sums((size_t)n_threads);
        auto t0 = std::chrono::steady_clock::now();
        std::vector<std::thread> ts;
        for (int t = 0; t < n_threads; t++) {
            ts.emplace_back([&, t] {
                const size_t lo = n * t / n_threads, hi = n * (t + 1) / n_threads;
                sums[t] = read_sum(buf + lo, hi - lo);
            });
        }
        for (auto & th : ts) th.join();
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        for (uint64_t v : sums) sink = sink + v;
        best = std::max(best, (double)(n * sizeof(v8)) / s / 1e9);
    }
    shoal::huge_free(buf, n * sizeof(v8));
    (void)sink;
    return best;
}
