// bench-cuda.cpp — CUDA backend benchmarks (docs/cuda.md has the commands).
//
//   bench-cuda kernels            W4A16 matvec effective bandwidth at the Llama-2-7B /
//                                 Llama-3-8B layer shapes and the f16 lm_head, against
//                                 the measured device copy bandwidth (cudaMemcpy D2D,
//                                 bytes read + bytes written).
//   bench-cuda model DIR [--prompts 512,2048] [--gen 128]
//                                 end to end on the CUDA backend: load time, TTFT per
//                                 prompt length, decode tok/s, peak host RSS and device
//                                 memory in use.
// Times are medians of repeated runs measured with CUDA events (kernels) or
// steady_clock around calls that end in a host sync (end to end). Weight sets
// rotate so that repeated runs do not read from L2.
#include "backend.h"
#include "cuda-common.cuh"
#include "fw-matvec.cuh"
#include "q4-matvec.cuh"
#include "q4-repack.cuh"
#include "shoal.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <sys/resource.h>
#include <vector>

using namespace shoal;
using namespace shoal::cuda;

namespace {

template <class F> double median_ms(int reps, cudaStream_t s, F && fn) {
    cudaEvent_t a, b;
    CUDA_CHECK(cudaEventCreate(&a));
    CUDA_CHECK(cudaEventCreate(&b));
    std::vector<float> t;
    for (int i = 0; i < reps + 3; i++) {
        CUDA_CHECK(cudaEventRecord(a, s));
        fn(i);
        CUDA_CHECK(cudaEventRecord(b, s));
        CUDA_CHECK(cudaEventSynchronize(b));
        float ms = 0;
        CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
        if (i >= 3) t.push_back(ms); // 3 warm-up runs
    }
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
}

size_t device_used() {
    size_t fr = 0, tot = 0;
    cudaMemGetInfo(&fr, &tot);
    return tot - fr;
}

int kernels() {
    int dev = 0;
    CUDA_CHECK(cudaSetDevice(dev));
    cudaDeviceProp p;
    CUDA_CHECK(cudaGetDeviceProperties(&p, dev));
    int l2 = 0;
    CUDA_CHECK(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, dev));
    std::printf("device: %s, sm_%d%d, %d SMs, L2 %d MiB, %.1f GiB\n", p.name, p.major, p.minor, p.multiProcessorCount,
                l2 >> 20, p.totalGlobalMem / 1073741824.0);
    cudaStream_t s;
    CUDA_CHECK(cudaStreamCreate(&s));

    // device copy bandwidth: 512 MiB (64 MiB if memory is short), read + write counted
    size_t cb = (size_t)512 << 20;
    if (p.totalGlobalMem < ((size_t)8 << 30)) cb = (size_t)64 << 20;
    void *src = nullptr, *dst = nullptr;
    CUDA_CHECK(cudaMalloc(&src, cb));
    CUDA_CHECK(cudaMalloc(&dst, cb));
    CUDA_CHECK(cudaMemset(src, 1, cb));
    const double copy_ms = median_ms(20, s, [&](int) { CUDA_CHECK(cudaMemcpyAsync(dst, src, cb, cudaMemcpyDeviceToDevice, s)); });
    const double copy_gbs = 2.0 * cb / (copy_ms * 1e-3) / 1e9;
    std::printf("device copy (D2D %zu MiB): %.1f GB/s (read + write)\n\n", cb >> 20, copy_gbs);
    cudaFree(src);
    cudaFree(dst);

    std::mt19937 rng(1);
    std::printf("%-22s %4s %10s %10s %9s %8s\n", "shape (K -> N)", "M", "bytes", "time us", "GB/s", "% copy");
    struct S { const char * what; int64_t K, N; };
    const S shapes[] = {{"4096x4096", 4096, 4096},   {"4096x11008", 4096, 11008}, {"11008x4096", 11008, 4096},
                        {"4096x14336", 4096, 14336}, {"14336x4096", 14336, 4096}};
    const int G = 128;
    for (const S & sh : shapes) {
        const int64_t K = sh.K, N = sh.N;
        // random AutoAWQ tensors on the host, repacked on the device (as at load)
        std::vector<int32_t> qw(K * N / 8), qz(K / G * N / 8);
        std::vector<uint16_t> sc(K / G * N);
        for (auto & v : qw) v = (int32_t)rng();
        for (auto & v : qz) v = (int32_t)rng();
        for (auto & v : sc) v = 0x2000 + (uint16_t)(rng() % 0x800); // small positive f16
        void *dqw, *dqz, *dsc;
        CUDA_CHECK(cudaMalloc(&dqw, qw.size() * 4));
        CUDA_CHECK(cudaMalloc(&dqz, qz.size() * 4));
        CUDA_CHECK(cudaMalloc(&dsc, sc.size() * 2));
        CUDA_CHECK(cudaMemcpy(dqw, qw.data(), qw.size() * 4, cudaMemcpyHostToDevice));
        CUDA_CHECK(cudaMemcpy(dqz, qz.data(), qz.size() * 4, cudaMemcpyHostToDevice));
        CUDA_CHECK(cudaMemcpy(dsc, sc.data(), sc.size() * 2, cudaMemcpyHostToDevice));
        const size_t wbytes = (size_t)N * K / 2 + (size_t)N * (K / G) * 4;
        const int copies = (int)std::max<size_t>(2, (4 * (size_t)l2 + wbytes - 1) / wbytes);
        std::vector<void *> qs(copies), sz(copies);
        for (int c = 0; c < copies; c++) {
            CUDA_CHECK(cudaMalloc(&qs[c], (size_t)N * K / 2));
            CUDA_CHECK(cudaMalloc(&sz[c], (size_t)N * (K / G) * 4));
            q4_repack_awq((const int32_t *)dqw, (const int32_t *)dqz, (const __half *)dsc, K, N, G, (uint32_t *)qs[c],
                          (__half2 *)sz[c], s);
        }
        cudaFree(dqw);
        cudaFree(dqz);
        cudaFree(dsc);
        __half *x, *y;
        CUDA_CHECK(cudaMalloc(&x, 8 * K * 2));
        CUDA_CHECK(cudaMalloc(&y, 8 * N * 2));
        CUDA_CHECK(cudaMemset(x, 0x31, 8 * K * 2)); // small nonzero f16 values
        for (int M : {1, 4, 8}) {
            const double ms = median_ms(50, s, [&](int i) {
                Q4Weights w{N, K, G, (const uint32_t *)qs[i % copies], (const __half2 *)sz[i % copies]};
                q4_matvec(w, x, M, nullptr, y, s);
            });
            const double bytes = (double)wbytes + 2.0 * M * (K + N);
            std::printf("%-22s %4d %10.0f %10.1f %9.1f %7.1f%%\n", sh.what, M, bytes, ms * 1e3, bytes / (ms * 1e-3) / 1e9,
                        100.0 * bytes / (ms * 1e-3) / 1e9 / copy_gbs);
        }
        for (int c = 0; c < copies; c++) cudaFree(qs[c]), cudaFree(sz[c]);
        cudaFree(x);
        cudaFree(y);
    }
    // f16 lm_head 32000 x 4096 (Llama-2) and 128256 x 4096 (Llama-3)
    for (int64_t N : {32000, 128256}) {
        const int64_t K = 4096;
        const size_t wbytes = (size_t)N * K * 2;
        const int copies = (int)std::max<size_t>(2, (4 * (size_t)l2 + wbytes - 1) / wbytes);
        std::vector<void *> w(copies);
        for (auto & p : w) {
            CUDA_CHECK(cudaMalloc(&p, wbytes));
            CUDA_CHECK(cudaMemset(p, 0x21, wbytes));
        }
        __half *x, *y;
        CUDA_CHECK(cudaMalloc(&x, 8 * K * 2));
        CUDA_CHECK(cudaMalloc(&y, 8 * N * 2));
        CUDA_CHECK(cudaMemset(x, 0x31, 8 * K * 2));
        for (int M : {1, 8}) {
            const double ms = median_ms(30, s, [&](int i) { fw_matvec(WType::F16, w[i % copies], N, K, x, M, nullptr, y, s); });
            const double bytes = (double)wbytes + 2.0 * M * (K + N);
            char name[40];
            std::snprintf(name, sizeof name, "lm_head f16 %lldx4096", (long long)N);
            std::printf("%-22s %4d %10.0f %10.1f %9.1f %7.1f%%\n", name, M, bytes, ms * 1e3, bytes / (ms * 1e-3) / 1e9,
                        100.0 * bytes / (ms * 1e-3) / 1e9 / copy_gbs);
        }
        for (auto p : w) cudaFree(p);
        cudaFree(x);
        cudaFree(y);
    }
    cudaStreamDestroy(s);
    return 0;
}

double now_s() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

int model(const std::string & dir, std::vector<int> prompts, int gen) {
    size_t peak_dev = device_used();
    const size_t dev0 = peak_dev;
    shoal_model_params mp = shoal_model_default_params();
    mp.backend = "cuda";
    char err[1024];
    shoal_model * m = nullptr;
    if (shoal_model_load(dir.c_str(), &mp, &m, err, sizeof err) != SHOAL_OK) {
        std::fprintf(stderr, "load %s: %s\n", dir.c_str(), err);
        return 1;
    }
    peak_dev = std::max(peak_dev, device_used());
    shoal_model_info info;
    shoal_model_get_info(m, &info);
    std::printf("model %s: %s %s, %d layers, D %d, F %d, H %d/%d, V %d on %s %s\n", dir.c_str(), info.arch, info.quant,
                info.n_layers, info.hidden_size, info.intermediate_size, info.n_heads, info.n_kv_heads, info.vocab_size,
                info.backend, info.isa);
    std::printf("weights %.2f GB on the device, %.2f GB read per token, load %.2f s\n", info.weight_bytes / 1e9,
                info.bytes_per_token / 1e9, info.load_seconds);
    std::mt19937 rng(7);
    const int V = info.vocab_size;
    for (int n : prompts) {
        shoal_session * s = nullptr;
        if (shoal_session_new(m, n + gen + 1, &s, err, sizeof err) != SHOAL_OK) {
            std::fprintf(stderr, "session: %s\n", err);
            return 1;
        }
        std::vector<int32_t> toks(n);
        for (auto & t : toks) t = (int32_t)(rng() % V);
        const double t0 = now_s();
        if (shoal_session_eval(s, toks.data(), n, nullptr, 0, err, sizeof err) != SHOAL_OK) {
            std::fprintf(stderr, "prefill: %s\n", err);
            return 1;
        }
        const double ttft = now_s() - t0;
        peak_dev = std::max(peak_dev, device_used());
        // greedy decode without stopping at EOS (random weights), one token per eval
        std::vector<double> step;
        for (int i = 0; i < gen; i++) {
            const float * lg = shoal_session_logits(s);
            int32_t best = (int32_t)(std::max_element(lg, lg + V) - lg);
            const double a = now_s();
            if (shoal_session_eval(s, &best, 1, nullptr, 0, err, sizeof err) != SHOAL_OK) {
                std::fprintf(stderr, "decode: %s\n", err);
                return 1;
            }
            step.push_back(now_s() - a);
        }
        std::sort(step.begin(), step.end());
        const double med = step.empty() ? 0 : step[step.size() / 2];
        std::printf("prompt %5d: TTFT %.3f s (%.0f tok/s prefill); decode %d tokens: median %.2f ms/token = %.1f tok/s "
                    "(%.1f GB/s of weights)\n",
                    n, ttft, n / ttft, gen, med * 1e3, med > 0 ? 1.0 / med : 0.0,
                    med > 0 ? info.bytes_per_token / med / 1e9 : 0.0);
        shoal_session_free(s);
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    std::printf("peak host RSS %.2f GB; device memory in use at peak %.2f GB (%.2f GB before load)\n",
                ru.ru_maxrss / 1048576.0, peak_dev / 1e9, dev0 / 1e9);
    shoal_model_free(m);
    return 0;
}

} // namespace

int main(int argc, char ** argv) {
    try {
        std::string why;
        if (!cuda_backend_usable(&why)) {
            std::fprintf(stderr, "bench-cuda: the CUDA backend is not usable here: %s\n", why.c_str());
            return 2;
        }
        const std::string mode = argc > 1 ? argv[1] : "kernels";
        if (mode == "kernels") return kernels();
        if (mode == "model" && argc > 2) {
            std::vector<int> prompts = {512, 2048};
            int gen = 128;
            for (int i = 3; i + 1 < argc; i += 2) {
                if (!std::strcmp(argv[i], "--gen")) gen = std::atoi(argv[i + 1]);
                if (!std::strcmp(argv[i], "--prompts")) {
                    prompts.clear();
                    for (const char * p = argv[i + 1]; *p;) {
                        prompts.push_back(std::atoi(p));
                        while (*p && *p != ',') p++;
                        if (*p) p++;
                    }
                }
            }
            return model(argv[2], prompts, gen);
        }
        std::fprintf(stderr, "usage: bench-cuda kernels | bench-cuda model DIR [--prompts 512,2048] [--gen 128]\n");
        return 2;
    } catch (const std::exception & e) {
        std::fprintf(stderr, "bench-cuda: %s\n", e.what());
        return 1;
    }
}
