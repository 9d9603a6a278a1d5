// test-helpers.h — tiny check macros and data location for the native tests.
// Each test binary ends with the line "N passed, N failed".
#pragma once
#include <cstdio>
#include <cstdlib>
#include <string>
#include <sys/stat.h>

namespace shoal_test {

inline int g_passed = 0, g_failed = 0;

inline void check(bool ok, const std::string & what) {
    if (ok) g_passed++;
    else {
        g_failed++;
        std::fprintf(stderr, "FAIL: %s\n", what.c_str());
    }
}

inline int finish() {
    std::printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed == 0 ? 0 : 1;
}

// ../shared beside the repository, or $SHOAL_SHARED.
inline std::string shared_dir() {
    if (const char * e = std::getenv("SHOAL_SHARED")) return e;
#ifdef SHOAL_SOURCE_DIR
    return std::string(SHOAL_SOURCE_DIR) + "/../../shared";
#else
    return "../shared";
#endif
}

// The pretrained stories260K shipped in the repository (models/stories260K),
// or $SHOAL_STORIES_DIR.
inline std::string stories_dir() {
    if (const char * e = std::getenv("SHOAL_STORIES_DIR")) return e;
#ifdef SHOAL_SOURCE_DIR
    return std::string(SHOAL_SOURCE_DIR) + "/../models/stories260K";
#else
    return "models/stories260K";
#endif
}

inline bool exists(const std::string & p) {
    struct stat st;
    return ::stat(p.c_str(), &st) == 0;
}

} // namespace shoal_test
