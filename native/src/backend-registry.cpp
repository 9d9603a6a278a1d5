// backend-registry.cpp — creates a backend by name. The only non-CUDA file that
// knows whether the CUDA backend was compiled in (SHOAL_HAVE_CUDA, set by CMake
// on this file alone when -DSHOAL_CUDA=ON).
#include "backend.h"
#include "backend-choice.h"
#include "error.h"

#if defined(SHOAL_HAVE_CUDA)
#include "backend-cuda.h"
#endif

namespace shoal {

const char * kv_type_name(KvType t) { return t == KvType::F16 ? "f16" : t == KvType::Q8 ? "q8" : "f32"; }

bool parse_kv_type(const std::string & s, KvType * out) {
    for (KvType t : {KvType::F32, KvType::F16, KvType::Q8})
        if (s == kv_type_name(t)) {
            *out = t;
            return true;
        }
    return false;
}

const char * precision_name(Precision p) { return p == Precision::Exact ? "exact" : "fast"; }

bool parse_precision(const std::string & s, Precision * out) {
    for (Precision p : {Precision::Fast, Precision::Exact})
        if (s == precision_name(p)) {
            *out = p;
            return true;
        }
    return false;
}

bool cuda_backend_usable(std::string * why) {
#if defined(SHOAL_HAVE_CUDA)
    return cuda_usable(why);
#else
    if (why) *why = "this build was compiled without CUDA (configure with -DSHOAL_CUDA=ON)";
    return false;
#endif
}

bool gpu_backend_caps(BackendCaps * caps, std::string * why) {
#if defined(SHOAL_HAVE_CUDA)
    if (!cuda_usable(why)) return false;
    *caps = cuda_caps();
    return true;
#else
    // a CPU-only build has no choice to explain: no note on every load
    (void)caps;
    if (why) why->clear();
    return false;
#endif
}

std::unique_ptr<Backend> make_backend(const std::string & name, const std::string & isa, int n_threads,
                                      Precision precision) {
    if (name == "cpu") return make_cpu_backend(isa, n_threads, precision);
    if (precision == Precision::Exact) {
        // the exact kernels are the CPU's (kernels.h ExactRows): a verification mode
        SHOAL_CHECK(name == "auto", SHOAL_ERR_BACKEND,
                    "precision 'exact' runs on the CPU backend only; use backend cpu or auto, not '" + name + "'");
        return make_cpu_backend(isa, n_threads, precision);
    }
    if (name == "cuda" || name == "auto") {
        std::string why;
        if (cuda_backend_usable(&why)) {
#if defined(SHOAL_HAVE_CUDA)
            return make_cuda_backend();
#endif
        }
        if (name == "auto") return make_cpu_backend(isa, n_threads, precision);
        fail(SHOAL_ERR_BACKEND, "backend 'cuda' is not available: " + why);
    }
    fail(SHOAL_ERR_BACKEND, "unknown backend '" + name + "' (expected auto, cpu or cuda)");
}

} // namespace shoal
