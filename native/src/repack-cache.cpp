// repack-cache.cpp — the cache file of repacked weights (repack-cache.h).
#include "repack-cache.h"
#include "error.h"
#include "safetensors.h"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace shoal {

namespace {
constexpr char     kMagic[8] = {'S', 'H', 'O', 'A', 'L', 'R', 'P', 'C'};
constexpr uint32_t kVersion = 1;
constexpr uint64_t kHeader = 64;
constexpr uint64_t kAlign = 4096;
constexpr uint32_t kMaxBlobs = 16;

template <typename T> void put(std::vector<uint8_t> & out, T v) {
    const uint8_t * p = reinterpret_cast<const uint8_t *>(&v);
    out.insert(out.end(), p, p + sizeof(T));
}
template <typename T> T get(const uint8_t * p) {
    T v;
    std::memcpy(&v, p, sizeof(T));
    return v;
}
} // namespace

uint64_t fnv1a64(const void * p, size_t n, uint64_t h) {
    const uint8_t * b = static_cast<const uint8_t *>(p);
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

RepackCacheWriter::RepackCacheWriter(const std::string & path, uint64_t key)
    : path_(path), tmp_(path + "." + std::to_string(::getpid()) + ".tmp"), key_(key) {
    fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) fail(SHOAL_ERR_IO, tmp_ + ": cannot create: " + std::strerror(errno));
}

RepackCacheWriter::~RepackCacheWriter() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(tmp_.c_str());
}

void RepackCacheWriter::write_at(uint64_t off, const void * p, size_t n) {
    const uint8_t * b = static_cast<const uint8_t *>(p);
    while (n > 0) {
        const ssize_t w = ::pwrite(fd_, b, n, (off_t)off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) fail(SHOAL_ERR_IO, tmp_ + ": write failed: " + std::strerror(w < 0 ? errno : EIO));
        b += w;
        off += (uint64_t)w;
        n -= (size_t)w;
    }
}

void RepackCacheWriter::add(const std::string & name, const std::vector<CacheBlob> & blobs) {
    SHOAL_CHECK(blobs.size() <= kMaxBlobs, SHOAL_ERR_INTERNAL, "repack cache: too many blobs for " + name);
    put<uint64_t>(table_, fnv1a64(name.data(), name.size()));
    put<uint32_t>(table_, (uint32_t)blobs.size());
    put<uint32_t>(table_, 0);
    for (size_t i = 0; i < blobs.size(); i++) {
        const CacheBlob & b = blobs[i];
        const uint64_t a = i == 0 ? kAlign : 64; // an entry starts on its own page
        const uint64_t off = (end_ + a - 1) / a * a;
        if (b.size) write_at(off, b.data, b.size);
        put<uint64_t>(table_, off);
        put<uint64_t>(table_, b.size);
        end_ = off + b.size;
    }
    n_entries_++;
}

void RepackCacheWriter::commit() {
    const uint64_t table_off = (end_ + 7) / 8 * 8;
    write_at(table_off, table_.data(), table_.size());
    std::vector<uint8_t> h(kMagic, kMagic + 8);
    put<uint32_t>(h, kVersion);
    put<uint32_t>(h, n_entries_);
    put<uint64_t>(h, key_);
    put<uint64_t>(h, table_off + table_.size());
    put<uint64_t>(h, table_off);
    put<uint64_t>(h, table_.size());
    put<uint64_t>(h, fnv1a64(table_.data(), table_.size()));
    put<uint64_t>(h, 0);
    write_at(0, h.data(), h.size());
    if (::fsync(fd_) != 0) fail(SHOAL_ERR_IO, tmp_ + ": fsync failed: " + std::strerror(errno));
    ::close(fd_);
    fd_ = -1;
    if (::rename(tmp_.c_str(), path_.c_str()) != 0) fail(SHOAL_ERR_IO, path_ + ": rename failed: " + std::strerror(errno));
    committed_ = true;
}

std::shared_ptr<const RepackCache> RepackCache::open(const std::string & path, uint64_t key, std::string * why) {
    auto say = [&](const std::string & w) {
        if (why) *why = w;
        return std::shared_ptr<const RepackCache>();
    };
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) return say("no cache file yet");
    std::shared_ptr<MappedFile> f;
    try {
        f = std::make_shared<MappedFile>(path);
    } catch (const Error & e) {
        return say(e.what());
    }
    const uint8_t * d = f->data;
    const uint64_t size = f->size;
    if (size < kHeader || std::memcmp(d, kMagic, 8) != 0) return say("not a repack cache file");
    if (get<uint32_t>(d + 8) != kVersion) return say("written by another layout version");
    if (get<uint64_t>(d + 16) != key) return say("written for another checkpoint or an older copy of it");
    const uint32_t n = get<uint32_t>(d + 12);
    const uint64_t table_off = get<uint64_t>(d + 32), table_bytes = get<uint64_t>(d + 40);
    if (get<uint64_t>(d + 24) != size) return say("truncated or extended (size differs from its header)");
    if (table_off < kHeader || table_off > size || table_bytes > size - table_off)
        return say("table out of the file");
    if (fnv1a64(d + table_off, table_bytes) != get<uint64_t>(d + 48)) return say("table checksum mismatch");
    auto c = std::shared_ptr<RepackCache>(new RepackCache());
    c->entries_.reserve(n);
    const uint8_t * t = d + table_off;
    uint64_t left = table_bytes;
    for (uint32_t i = 0; i < n; i++) {
        if (left < 16) return say("table shorter than its entries");
        Entry e;
        e.name_fnv = get<uint64_t>(t);
        const uint32_t nb = get<uint32_t>(t + 8);
        t += 16;
        left -= 16;
        if (nb > kMaxBlobs || left < (uint64_t)nb * 16) return say("entry " + std::to_string(i) + " malformed");
        for (uint32_t b = 0; b < nb; b++) {
            const uint64_t off = get<uint64_t>(t), len = get<uint64_t>(t + 8);
            t += 16;
            left -= 16;
            if (off < kHeader || off > table_off || len > table_off - off)
                return say("entry " + std::to_string(i) + " points out of the blob area");
            e.blobs.push_back(CacheBlob{d + off, (size_t)len});
        }
        c->entries_.push_back(std::move(e));
    }
    if (left != 0) return say("table longer than its entries");
    c->file_ = std::move(f);
    return c;
}

const RepackCache::Entry * RepackCache::entry(size_t i, const std::string & name) const {
    if (i >= entries_.size() || entries_[i].name_fnv != fnv1a64(name.data(), name.size())) return nullptr;
    return &entries_[i];
}

size_t RepackCache::file_bytes() const { return file_ ? file_->size : 0; }
const uint8_t * RepackCache::base() const { return file_ ? file_->data : nullptr; }

} // namespace shoal
