// threadpool.cpp — see threadpool.h.
#include "threadpool.h"

#include "cpu-features.h"

namespace shoal {

// Spin iterations before a worker sleeps: long enough to bridge the gaps
// between the ops of one decode step, short enough not to burn a core when idle.
static constexpr int kSpinIters = 20000;

ThreadPool::ThreadPool(int n_threads) {
    if (n_threads <= 0) n_threads = (int)std::thread::hardware_concurrency();
    n_threads_ = n_threads < 1 ? 1 : n_threads;
    for (int i = 1; i < n_threads_; i++) workers_.emplace_back([this, i] { worker(i); });
}

ThreadPool::~ThreadPool() {
    {
        std::lock_guard<std::mutex> lk(mu_);
        stop_.store(true);
    }
    cv_.notify_all();
    for (auto & t : workers_) t.join();
}

uint64_t ThreadPool::work(int id) {
    constexpr uint64_t idx_mask = (uint64_t(1) << kIdxBits) - 1, n_mask = (uint64_t(1) << kNBits) - 1;
    for (;;) {
        // acq_rel: a ticket of a new job makes fn_/ctx_ of that job visible.
        const uint64_t t = ticket_.fetch_add(1, std::memory_order_acq_rel);
        const int64_t idx = (int64_t)(t & idx_mask), n = (int64_t)((t >> kIdxBits) & n_mask);
        if (idx >= n) return t >> (kIdxBits + kNBits);
        // The job cannot finish (nor fn_/ctx_ change) before this claimed task is done.
        fn_(ctx_, idx, id);
        completed_.fetch_add(1, std::memory_order_release);
    }
}

void ThreadPool::run(int64_t n_tasks, TaskFn fn, void * ctx) {
    // Every task of the previous job is complete, so no thread reads fn_/ctx_ now;
    // late workers only bump the spent ticket's index (it has room: idx <
    // n_tasks + threads < 2^22).
    const uint64_t gen = (ticket_.load(std::memory_order_relaxed) >> (kIdxBits + kNBits)) + 1;
    fn_ = fn;
    ctx_ = ctx;
    completed_.store(0, std::memory_order_relaxed);
    {
        // Under the mutex so a worker about to sleep either sees the new
        // ticket or is already waiting when we notify.
        std::lock_guard<std::mutex> lk(mu_);
        ticket_.store((gen << (kIdxBits + kNBits)) | ((uint64_t)n_tasks << kIdxBits), std::memory_order_release);
    }
    if (sleepers_.load() > 0) cv_.notify_all();
    work(0);
    // Spin for the other threads' last tasks, then yield: on a machine with more
    // runnable threads than cores, a worker that was preempted mid-task needs a
    // core, and spinning on it only delays the task we wait for.
    for (int i = 0; completed_.load(std::memory_order_acquire) < n_tasks; i++) {
        if (i < kSpinIters) cpu_relax();
        else std::this_thread::yield();
    }
}

void ThreadPool::worker(int id) {
    uint64_t seen = 0; // generation whose tasks this worker has run out of
    auto current = [&] { return ticket_.load(std::memory_order_acquire) >> (kIdxBits + kNBits); };
    for (;;) {
        uint64_t g = current();
        for (int i = 0; g == seen && i < kSpinIters && !stop_.load(std::memory_order_relaxed); i++) {
            cpu_relax();
            g = current();
        }
        if (g == seen) {
            std::unique_lock<std::mutex> lk(mu_);
            sleepers_.fetch_add(1);
            cv_.wait(lk, [&] { return current() != seen || stop_.load(); });
            sleepers_.fetch_sub(1);
        }
        if (stop_.load()) return;
        seen = work(id);
    }
}

} // namespace shoal
