// test-huge-pages.cpp — the weight allocator of backend/cpu/huge-pages.h:
// buffers of 2 MiB and more start on a 2 MiB boundary, hold what is written,
// and (where the kernel offers transparent huge pages to madvise) are backed by
// huge pages in their whole 2 MiB units; smaller ones come from the heap.
#include "huge-pages.h"
#include "test-helpers.h"

#include <cstdint>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

using namespace shoal;
using shoal_test::check;

namespace {

// The first line of a sysfs file, "" when absent.
std::string read_line(const char * path) {
    std::ifstream f(path);
    std::string s;
    std::getline(f, s);
    return s;
}

// AnonHugePages (kB) of the mapping of /proc/self/smaps that contains p; -1 when not found.
long anon_huge_kb(const void * p) {
    std::ifstream f("/proc/self/smaps");
    std::string line;
    const uintptr_t a = reinterpret_cast<uintptr_t>(p);
    bool in = false;
    while (std::getline(f, line)) {
        uintptr_t lo = 0, hi = 0;
        char dash = 0;
        std::istringstream ls(line);
        if (line.find(':') > line.find(' ') && (ls >> std::hex >> lo >> dash >> hi) && dash == '-') {
            in = a >= lo && a < hi;
            continue;
        }
        if (in && line.rfind("AnonHugePages:", 0) == 0) return std::atol(line.c_str() + 14);
    }
    return -1;
}

void test_alloc() {
    const size_t bytes = 5 * kHugePage + 123;
    auto * p = static_cast<uint8_t *>(huge_alloc(bytes));
    check(p != nullptr, "huge_alloc(5 MiB + 123) returns memory");
    if (!p) return;
    check(reinterpret_cast<uintptr_t>(p) % kHugePage == 0, "a huge_alloc buffer starts on a 2 MiB boundary");
    for (size_t i = 0; i < bytes; i++) p[i] = (uint8_t)(i * 31 + 7);
    bool same = true;
    for (size_t i = 0; i < bytes; i++) same = same && p[i] == (uint8_t)(i * 31 + 7);
    check(same, "every byte of a huge_alloc buffer holds what was written, the tail past the last 2 MiB unit too");

    // Where THP is offered to madvise and the kernel may compact for it, the whole
    // units are huge pages. ("never", or defrag "never"/"defer", cannot promise it.)
    const std::string en = read_line("/sys/kernel/mm/transparent_hugepage/enabled");
    const std::string df = read_line("/sys/kernel/mm/transparent_hugepage/defrag");
    const bool offered = en.find("[always]") != std::string::npos || en.find("[madvise]") != std::string::npos;
    const bool compacts = df.find("[always]") != std::string::npos || df.find("[madvise]") != std::string::npos ||
                          df.find("[defer+madvise]") != std::string::npos;
    if (offered && compacts) {
        const long kb = anon_huge_kb(p);
        check(kb >= 2048, "the buffer's whole 2 MiB units are transparent huge pages (AnonHugePages " +
                              std::to_string(kb) + " kB)");
        check(kb <= 5 * 2048, "the tail past the last whole 2 MiB unit is not a huge page (AnonHugePages " +
                                  std::to_string(kb) + " kB)");
    } else {
        std::printf("skip: transparent huge pages are not offered to madvise here (enabled '%s', defrag '%s')\n",
                    en.c_str(), df.c_str());
    }
    huge_free(p, bytes);
}

void test_vectors() {
    WeightVector<uint8_t> big(3 * kHugePage, 1);
    check(reinterpret_cast<uintptr_t>(big.data()) % kHugePage == 0, "a WeightVector of 6 MiB starts on a 2 MiB boundary");
    WeightVector<uint16_t> small(1000, 2);
    check(reinterpret_cast<uintptr_t>(small.data()) % 64 == 0, "a small WeightVector is 64-byte aligned (heap)");
    WeightVector<uint8_t> moved = std::move(big);
    check(moved.size() == 3 * kHugePage && moved[3 * kHugePage - 1] == 1, "a moved WeightVector keeps its bytes");
    moved.assign(7, 9);
    check(moved.size() == 7 && moved[6] == 9, "a WeightVector shrinks and refills");
}

} // namespace

int main() {
    test_alloc();
    test_vectors();
    return shoal_test::finish();
}
