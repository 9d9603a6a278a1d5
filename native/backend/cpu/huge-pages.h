// huge-pages.h — memory for the weights decode streams from DRAM, on 2 MiB
// transparent huge pages where the kernel allows them.
//
// Why: batch-1 decode reads every weight byte once per token, so it runs at the
// speed of the memory system. On 4 KiB pages a 3.7 GB model is 900k pages, and
// the page walks they cost hold back the stream: on the dev VM the AVX-512 INT4
// matvec reads 11008×4096 weights at 28.3 GB/s from huge pages against 21.7–23.0
// GB/s from 4 KiB pages (`bench-q4-ab --huge`, 21 alternating reps).
// Debian's and JetPack's kernels default to THP "madvise", where heap memory gets
// huge pages only when asked, so a buffer of at least 2 MiB is mapped here at a
// 2 MiB boundary and its whole 2 MiB units are marked MADV_HUGEPAGE. The tail
// past the last whole unit stays on small pages, so no buffer grows in resident
// memory. Smaller buffers use the ordinary heap. Where THP is "never", or the
// kernel has no huge page free, the pages are ordinary ones and nothing else
// changes.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <vector>

namespace shoal {

constexpr size_t kHugePage = size_t{2} << 20;

// Bytes of anonymous memory, 2 MiB aligned, whole 2 MiB units advised as huge
// pages; nullptr when the mapping fails. Free with huge_free(p, bytes).
void * huge_alloc(size_t bytes);
void huge_free(void * p, size_t bytes);

// A std::allocator for weight arrays: huge_alloc from kHugePage bytes on,
// the heap (64-byte aligned) below.
template <class T>
struct HugePageAllocator {
    using value_type = T;
    HugePageAllocator() = default;
    template <class U>
    HugePageAllocator(const HugePageAllocator<U> &) {}
    T * allocate(size_t n) {
        const size_t bytes = n * sizeof(T);
        void * p = bytes >= kHugePage ? huge_alloc(bytes) : ::operator new(bytes, std::align_val_t{64});
        if (!p) throw std::bad_alloc();
        return static_cast<T *>(p);
    }
    void deallocate(T * p, size_t n) {
        const size_t bytes = n * sizeof(T);
        if (bytes >= kHugePage) huge_free(p, bytes);
        else ::operator delete(p, std::align_val_t{64});
    }
    template <class U>
    bool operator==(const HugePageAllocator<U> &) const { return true; }
    template <class U>
    bool operator!=(const HugePageAllocator<U> &) const { return false; }
};

template <class T>
using WeightVector = std::vector<T, HugePageAllocator<T>>;

} // namespace shoal
