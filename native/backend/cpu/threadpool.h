// threadpool.h — persistent workers with a low-overhead fork/join. Decode calls
// parallel_for ~10 times per layer per token, so dispatch must cost
// microseconds: idle workers spin on the job ticket for a while (~50 µs)
// before blocking on a condition variable. The caller only waits for the
// tasks, never for a worker to show up: on a busy machine a descheduled worker
// simply claims nothing and the other threads do its share.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

namespace shoal {

class ThreadPool {
public:
    // n_threads includes the calling thread; 0 = online cores.
    explicit ThreadPool(int n_threads);
    ~ThreadPool();
    ThreadPool(const ThreadPool &) = delete;
    ThreadPool & operator=(const ThreadPool &) = delete;

    int size() const { return n_threads_; }

    // Runs fn(task, thread) for task in [0, n_tasks) across all threads (the
    // caller included) and returns when all are done. thread is in [0, size()).
    // Not reentrant: one parallel_for at a time per pool.
    template <class Fn> void parallel_for(int64_t n_tasks, Fn && fn) {
        if (n_tasks <= 0) return;
        if (n_tasks == 1 || n_threads_ == 1) {
            for (int64_t t = 0; t < n_tasks; t++) fn(t, 0);
            return;
        }
        for (int64_t base = 0; base < n_tasks; base += kMaxTasks) {
            struct Ctx { Fn * fn; int64_t base; } c{&fn, base};
            const int64_t n = n_tasks - base < kMaxTasks ? n_tasks - base : kMaxTasks;
            run(n, [](void * ctx, int64_t t, int th) {
                const Ctx * c = static_cast<const Ctx *>(ctx);
                (*c->fn)(c->base + t, th);
            }, &c);
        }
    }

private:
    using TaskFn = void (*)(void * ctx, int64_t task, int thread);
    // The job ticket packs generation | n_tasks | next index into one 64-bit
    // word, so one fetch_add both claims a task and tells which job it is from.
    static constexpr int kIdxBits = 22, kNBits = 21;
    static constexpr int64_t kMaxTasks = int64_t(1) << kNBits;
    void run(int64_t n_tasks, TaskFn fn, void * ctx);
    void worker(int id);
    // Claims and runs tasks while the ticket has some; returns the ticket's generation.
    uint64_t work(int id);

    int n_threads_ = 1;
    std::vector<std::thread> workers_;
    TaskFn fn_ = nullptr;                          // current job, stable while it has unfinished tasks
    void * ctx_ = nullptr;
    alignas(64) std::atomic<uint64_t> ticket_{0};  // gen (21 bits) | n_tasks (21) | next index (22)
    alignas(64) std::atomic<int64_t> completed_{0}; // tasks of the current job finished
    std::atomic<int> sleepers_{0};
    std::atomic<bool> stop_{false};
    std::mutex mu_;
    std::condition_variable cv_;
};

} // namespace shoal
