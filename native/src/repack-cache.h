// repack-cache.h — a file of repacked weights, written once and memory-mapped
// read-only on every later load.
//
// Why: a MoE model's experts are read only when routed, but a repacked copy in
// anonymous memory makes every expert resident. Mapped from this file, an
// expert's pages come in when it is first routed and the kernel may drop them
// again under memory pressure (they are clean file pages), like the checkpoint's
// own f16 tensors.
//
// Layout (little-endian, every offset checked against the file size on open):
//   [0, 64)     header: magic "SHOALRPC", u32 version, u32 n_entries, u64 key,
//               u64 file_size, u64 table_off, u64 table_bytes, u64 table_fnv, u64 0
//   blobs       an entry's first at a 4096-byte aligned offset (its pages are its own), the
//               others 64-byte aligned after it
//   table       per entry: u64 name_fnv, u32 n_blobs, u32 0, n_blobs × (u64 off, u64 len)
// The key identifies the source (file paths, sizes, mtimes, the layout version):
// a cache of another checkpoint or an older layout is never used. The file is
// written to a temporary name, fsynced and renamed: a crash leaves no half file.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace shoal {

struct MappedFile;

uint64_t fnv1a64(const void * p, size_t n, uint64_t h = 0xcbf29ce484222325ull);

struct CacheBlob {
    const uint8_t * data = nullptr;
    size_t          size = 0;
};

// Appends entries to <path>.<pid>.tmp (swept by the daemon's store recovery like
// every *.tmp); commit() renames it to path.
class RepackCacheWriter {
public:
    RepackCacheWriter(const std::string & path, uint64_t key); // throws shoal::Error (SHOAL_ERR_IO)
    ~RepackCacheWriter();                                      // removes the temporary file unless committed
    void add(const std::string & name, const std::vector<CacheBlob> & blobs);
    void commit();
    RepackCacheWriter(const RepackCacheWriter &) = delete;
    RepackCacheWriter & operator=(const RepackCacheWriter &) = delete;

private:
    void write_at(uint64_t off, const void * p, size_t n);
    std::string path_, tmp_;
    uint64_t key_;
    int fd_ = -1;
    uint64_t end_ = 64;
    std::vector<uint8_t> table_;
    uint32_t n_entries_ = 0;
    bool committed_ = false;
};

// A validated, read-only mapping of a cache file.
class RepackCache {
public:
    struct Entry {
        uint64_t name_fnv = 0;
        std::vector<CacheBlob> blobs;
    };
    // nullptr (and *why set) when the file is missing, of another key or version, or malformed.
    static std::shared_ptr<const RepackCache> open(const std::string & path, uint64_t key, std::string * why);
    size_t size() const { return entries_.size(); }
    // The entry at position i when it was written for linear `name`, else nullptr.
    const Entry * entry(size_t i, const std::string & name) const;
    size_t file_bytes() const;
    const uint8_t * base() const;

private:
    std::shared_ptr<MappedFile> file_;
    std::vector<Entry> entries_;
};

} // namespace shoal
