// cpu-features.cpp — run-time CPU feature detection. The only file outside the
// per-ISA kernels that knows the architecture, because it must ask the CPU.
#include "cpu-features.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#elif defined(__aarch64__)
#include <sys/auxv.h>
#include <asm/hwcap.h>
#endif

namespace shoal {
namespace {

CpuFeatures detect() {
    CpuFeatures f;
#if defined(__x86_64__) || defined(_M_X64)
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
    const bool osxsave = c & (1u << 27);
    const bool fma = c & (1u << 12), f16c = c & (1u << 29), avx = c & (1u << 28);
    unsigned long long xcr0 = 0;
    if (osxsave) {
        unsigned lo, hi;
        __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
        xcr0 = ((unsigned long long)hi << 32) | lo;
    }
    const bool os_avx = (xcr0 & 0x6) == 0x6;         // XMM + YMM state
    const bool os_avx512 = (xcr0 & 0xe6) == 0xe6;    // + opmask, ZMM_Hi256, Hi16_ZMM
    if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
        f.avx2 = os_avx && avx && (b & (1u << 5));
        f.fma = os_avx && fma;
        f.f16c = os_avx && f16c;
        f.avx512f = os_avx512 && (b & (1u << 16));
        f.avx512dq = os_avx512 && (b & (1u << 17));
        f.avx512bw = os_avx512 && (b & (1u << 30));
        f.avx512vl = os_avx512 && (b & (1u << 31));
        f.avx512vnni = os_avx512 && (c & (1u << 11));
        // leaf 7 subleaf 1 exists when subleaf 0 reports max subleaf >= 1 (EAX)
        unsigned a1, b1, c1, d1;
        if (a >= 1 && __get_cpuid_count(7, 1, &a1, &b1, &c1, &d1)) f.avx512bf16 = os_avx512 && (a1 & (1u << 5));
    }
#elif defined(__aarch64__)
    const unsigned long hw = getauxval(AT_HWCAP);
    f.neon = hw & HWCAP_ASIMD;
    f.dotprod = hw & HWCAP_ASIMDDP;
    f.fp16 = (hw & HWCAP_FPHP) && (hw & HWCAP_ASIMDHP);
#endif
    return f;
}

} // namespace

const CpuFeatures & cpu_features() {
    static const CpuFeatures f = detect();
    return f;
}

const std::string & cpu_feature_string() {
    static const std::string s = [] {
        const CpuFeatures & f = cpu_features();
        const std::pair<bool, const char *> names[] = {
            {f.avx2, "avx2"}, {f.fma, "fma"}, {f.f16c, "f16c"}, {f.avx512f, "avx512f"},
            {f.avx512bw, "avx512bw"}, {f.avx512vl, "avx512vl"}, {f.avx512dq, "avx512dq"},
            {f.avx512vnni, "avx512vnni"}, {f.avx512bf16, "avx512bf16"}, {f.neon, "neon"}, {f.dotprod, "dotprod"}, {f.fp16, "fp16"}};
        std::string out;
        for (const auto & n : names)
            if (n.first) out += (out.empty() ? "" : " ") + std::string(n.second);
        return out;
    }();
    return s;
}

void cpu_relax() {
#if defined(__x86_64__) || defined(_M_X64)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield");
#endif
}

} // namespace shoal
