// huge-pages.cpp — see huge-pages.h.
#include "huge-pages.h"

#include <sys/mman.h>

namespace shoal {

static size_t round_up(size_t v, size_t a) { return (v + a - 1) / a * a; }

void * huge_alloc(size_t bytes) {
    const size_t len = round_up(bytes, 4096);
    // Map one huge page more than needed and trim both ends, so the buffer starts
    // on a 2 MiB boundary (mmap itself only promises 4 KiB).
    const size_t reserve = len + kHugePage;
    void * m = ::mmap(nullptr, reserve, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return nullptr;
    const uintptr_t base = reinterpret_cast<uintptr_t>(m);
    const uintptr_t start = round_up(base, kHugePage);
    if (start > base) ::munmap(m, start - base);
    const uintptr_t end = base + reserve;
    if (end > start + len) ::munmap(reinterpret_cast<void *>(start + len), end - (start + len));
#ifdef MADV_HUGEPAGE
    // Only whole units: a partly used huge page would add up to 2 MiB of resident memory.
    // Failure (THP compiled out) leaves ordinary pages, which is correct, just slower.
    const size_t whole = len / kHugePage * kHugePage;
    if (whole) ::madvise(reinterpret_cast<void *>(start), whole, MADV_HUGEPAGE);
#endif
    return reinterpret_cast<void *>(start);
}

void huge_free(void * p, size_t bytes) {
    if (p) ::munmap(p, round_up(bytes, 4096));
}

} // namespace shoal
