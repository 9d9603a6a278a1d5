// membw.cpp — measures the machine's memory read bandwidth, the ceiling of
// batch-1 decode (every weight byte is read once per token).
#include "shoal.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

namespace {

// Sums 64-bit words with 4 independent accumulators so the loop is bound by
// loads, not by the add chain.
uint64_t read_sum(const uint64_t * p, size_t n) {
    uint64_t a = 0, b = 0, c = 0, d = 0;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        a += p[i];
        b += p[i + 1];
        c += p[i + 2];
        d += p[i + 3];
    }
    for (; i < n; i++) a += p[i];
    return a + b + c + d;
}

} // namespace

extern "C" double shoal_measure_read_bandwidth(int n_threads, size_t bytes, int reps) {
    if (n_threads <= 0) n_threads = (int)std::max(1u, std::thread::hardware_concurrency());
    if (bytes < (1u << 20)) bytes = 1u << 20;
    if (reps <= 0) reps = 5;
    const size_t words = bytes / sizeof(uint64_t);
    std::vector<uint64_t> buf(words);
    // touch every page (and make the data non-trivial) before timing
    for (size_t i = 0; i < words; i++) buf[i] = i * 0x9E3779B97F4A7C15ull;
    const size_t per = (words + n_threads - 1) / n_threads;
    volatile uint64_t sink = 0;
    double best = 0;
    for (int r = 0; r < reps; r++) {
        std::vector<uint64_t> sums((size_t)n_threads);
        auto t0 = std::chrono::steady_clock::now();
        std::vector<std::thread> ts;
        for (int t = 0; t < n_threads; t++) {
            ts.emplace_back([&, t] {
                const size_t lo = std::min(words, (size_t)t * per), hi = std::min(words, lo + per);
                sums[t] = read_sum(buf.data() + lo, hi - lo);
            });
        }
        for (auto & th : ts) th.join();
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        for (uint64_t v : sums) sink = sink + v;
        best = std::max(best, (double)(words * sizeof(uint64_t)) / s / 1e9);
    }
    (void)sink;
    return best;
}
