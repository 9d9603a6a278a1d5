// cpu-features.h — what this CPU can run, detected once at run time
// (cpuid + xgetbv on x86-64, getauxval(AT_HWCAP) on AArch64).
#pragma once
#include <string>

namespace shoal {

struct CpuFeatures {
    // x86-64 (each also requires the OS to save the register state)
    bool avx2 = false, fma = false, f16c = false;
    bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false, avx512vnni = false;
    bool avx512bf16 = false;
    // AArch64
    bool neon = false, dotprod = false, fp16 = false;
};

const CpuFeatures & cpu_features();

// Space-separated feature names, e.g. "avx2 fma f16c avx512f ..." (for shoal_cpu_features).
const std::string & cpu_feature_string();

// A hint for spin-wait loops (pause / yield), cheap and ISA-neutral to call.
void cpu_relax();

} // namespace shoal
