// safetensors.cpp — mapping and validating safetensors files. Every number in
// the header is untrusted: sizes use overflow-checked arithmetic and a view's
// data pointer is set only after the whole header has been validated.
#include "safetensors.h"

#include "error.h"
#include "json.h"
#include "model-source.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace shoal {

// ---- file mapping ------------------------------------------------------------------

MappedFile::MappedFile(const std::string & p) : path(p) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) fail(SHOAL_ERR_IO, path + ": cannot open: " + std::strerror(errno));
    struct stat st;
    if (::fstat(fd, &st) != 0) {
        int e = errno;
        ::close(fd);
        fail(SHOAL_ERR_IO, path + ": cannot stat: " + std::strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        ::close(fd);
        fail(SHOAL_ERR_IO, path + ": not a regular file");
    }
    if (st.st_size < 0 || uint64_t(st.st_size) > uint64_t(SIZE_MAX)) {
        ::close(fd);
        fail(SHOAL_ERR_IO, path + ": file too large to map");
    }
    size = size_t(st.st_size);
    if (size > 0) {
        void * m = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            int e = errno;
            ::close(fd);
            fail(SHOAL_ERR_IO, path + ": mmap of " + std::to_string(size) + " bytes failed: " + std::strerror(e));
        }
        data = static_cast<const uint8_t *>(m);
    }
    ::close(fd); // the mapping stays valid without the descriptor
}

MappedFile::~MappedFile() {
    if (data) ::munmap(const_cast<uint8_t *>(data), size);
}

void release_pages(const void * p, size_t n) {
    if (!p || n == 0) return;
    long ps = ::sysconf(_SC_PAGESIZE);
    if (ps <= 0) return;
    uintptr_t page = uintptr_t(ps);
    uintptr_t b = uintptr_t(p);
    if (b > UINTPTR_MAX - n) return;
    uintptr_t e = b + n;
    uintptr_t first = (b + page - 1) / page * page; // only pages entirely inside [b, e)
    uintptr_t last = e / page * page;
    // advisory: on a private read-only file mapping the pages reload from the file if touched again
    if (last > first) ::madvise(reinterpret_cast<void *>(first), last - first, MADV_DONTNEED);
}

// ---- header ------------------------------------------------------------------------

size_t st_dtype_size(const std::string & d) {
    if (d == "F64" || d == "I64") return 8;
    if (d == "F32" || d == "I32") return 4;
    if (d == "F16" || d == "BF16" || d == "I16") return 2;
    if (d == "I8" || d == "U8" || d == "BOOL") return 1;
    return 0;
}

static DType st_dtype(const std::string & d) {
    if (d == "F64") return DType::F64;
    if (d == "F32") return DType::F32;
    if (d == "F16") return DType::F16;
    if (d == "BF16") return DType::BF16;
    if (d == "I64") return DType::I64;
    if (d == "I32") return DType::I32;
    if (d == "I16") return DType::I16;
    if (d == "I8") return DType::I8;
    return DType::U8; // U8, BOOL
}

static std::string shape_str(const std::vector<int64_t> & s) {
    std::string r = "[";
    for (size_t i = 0; i < s.size(); i++) r += (i ? ", " : "") + std::to_string(s[i]);
    return r + "]";
}

const StTensor * SafetensorsFile::find(const std::string & name) const {
    auto it = by_name.find(name);
    return it == by_name.end() ? nullptr : &tensors[it->second];
}

TensorView SafetensorsFile::view(const StTensor & t) const {
    if (t.shape.size() > 4) {
        fail(SHOAL_ERR_SHAPE, path + ": tensor " + t.name + " has " + std::to_string(t.shape.size()) +
                                  " dimensions, at most 4 are supported");
    }
    TensorView v;
    v.name = t.name;
    v.dtype = t.dtype;
    v.n_dims = int(t.shape.size());
    for (size_t i = 0; i < t.shape.size(); i++) v.shape[i] = t.shape[i];
    v.data = t.data;
    v.nbytes = size_t(t.nbytes());
    return v;
}

// One tensor entry: {"dtype": "F32", "shape": [..], "data_offsets": [b, e]}.
static StTensor parse_entry(const std::string & name, const json::Value & e, const std::string & where) {
    const std::string tn = where + ": tensor " + json::printable(name);
    if (!e.is_object()) fail(SHOAL_ERR_ST_HEADER_JSON, tn + ": entry is a " + json::type_name(e.type) + ", not an object");
    const json::Value * dt = e.get("dtype");
    const json::Value * sh = e.get("shape");
    const json::Value * off = e.get("data_offsets");
    if (!dt || !dt->is_string()) fail(SHOAL_ERR_ST_HEADER_JSON, tn + ": missing or non-string \"dtype\"");
    if (!sh || !sh->is_array()) fail(SHOAL_ERR_ST_HEADER_JSON, tn + ": missing or non-array \"shape\"");
    if (!off || !off->is_array() || off->items.size() != 2) {
        fail(SHOAL_ERR_ST_HEADER_JSON, tn + ": \"data_offsets\" must be an array [begin, end]");
    }
    StTensor t;
    t.name = name;
    t.dtype_str = dt->str;
    size_t esize = st_dtype_size(dt->str);
    if (esize == 0) fail(SHOAL_ERR_ST_DTYPE, tn + ": unknown dtype \"" + json::printable(dt->str) + "\"");
    t.dtype = st_dtype(dt->str);

    uint64_t nbytes = esize;
    for (const json::Value & d : sh->items) {
        if (!d.is_number() || !d.is_int || d.integer < 0) {
            fail(SHOAL_ERR_ST_HEADER_JSON, tn + ": shape entries must be non-negative integers");
        }
        t.shape.push_back(d.integer);
        if (__builtin_mul_overflow(nbytes, uint64_t(d.integer), &nbytes)) {
            fail(SHOAL_ERR_ST_OFFSETS, tn + ": shape " + shape_str(t.shape) + "... overflows the byte size");
        }
    }
    uint64_t be[2];
    for (int i = 0; i < 2; i++) {
        const json::Value & o = off->items[size_t(i)];
        if (!o.is_number()) fail(SHOAL_ERR_ST_HEADER_JSON, tn + ": data_offsets must be numbers");
        if (!o.is_int || o.integer < 0) fail(SHOAL_ERR_ST_OFFSETS, tn + ": data_offsets entry is not a non-negative integer");
        be[i] = uint64_t(o.integer);
    }
    t.begin = be[0];
    t.end = be[1];
    const std::string range = "data_offsets [" + std::to_string(t.begin) + ", " + std::to_string(t.end) + "]";
    if (t.begin > t.end) fail(SHOAL_ERR_ST_OFFSETS, tn + ": " + range + " has begin > end");
    if (t.end - t.begin != nbytes) {
        fail(SHOAL_ERR_ST_OFFSETS, tn + ": " + range + " span " + std::to_string(t.end - t.begin) + " bytes but shape " +
                                       shape_str(t.shape) + " of " + t.dtype_str + " needs " + std::to_string(nbytes));
    }
    return t;
}

SafetensorsFile parse_safetensors(const uint8_t * data, size_t size, const std::string & where) {
    if (size < 8) {
        fail(SHOAL_ERR_ST_TRUNCATED, where + ": file is " + std::to_string(size) +
                                         " bytes, shorter than the 8-byte header length");
    }
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | data[i]; // little-endian on any host
    if (n > ST_MAX_HEADER_BYTES) {
        fail(SHOAL_ERR_ST_HEADER_LEN, where + ": header length " + std::to_string(n) + " exceeds the limit of " +
                                          std::to_string(ST_MAX_HEADER_BYTES) + " bytes");
    }
    if (n > uint64_t(size) - 8) {
        fail(SHOAL_ERR_ST_HEADER_LEN, where + ": header length " + std::to_string(n) +
                                          " points past the end of the file (" + std::to_string(size) + " bytes)");
    }
    SafetensorsFile f;
    f.path = where;
    f.header_len = n;
    f.data_bytes = uint64_t(size) - 8 - n;

    json::Limits lim;
    lim.max_bytes = size_t(ST_MAX_HEADER_BYTES);
    json::Value root = json::parse(reinterpret_cast<const char *>(data + 8), size_t(n), SHOAL_ERR_ST_HEADER_JSON,
                                   where + " (safetensors header)", lim);
    if (!root.is_object()) {
        fail(SHOAL_ERR_ST_HEADER_JSON, where + ": header is a JSON " + json::type_name(root.type) + ", not an object");
    }
    f.tensors.reserve(root.keys.size());
    for (size_t i = 0; i < root.keys.size(); i++) {
        const std::string & key = root.keys[i];
        const json::Value & val = root.items[i];
        if (key == "__metadata__") {
            if (!val.is_object()) fail(SHOAL_ERR_ST_HEADER_JSON, where + ": __metadata__ is not an object");
            for (size_t j = 0; j < val.keys.size(); j++) {
                if (!val.items[j].is_string()) {
                    fail(SHOAL_ERR_ST_HEADER_JSON, where + ": __metadata__ value \"" + json::printable(val.keys[j]) +
                                                       "\" is not a string");
                }
                f.metadata[val.keys[j]] = val.items[j].str;
            }
            continue;
        }
        f.by_name[key] = f.tensors.size(); // keys are unique: the JSON parser rejects duplicates
        f.tensors.push_back(parse_entry(key, val, where));
    }

    // overlap: sort non-empty ranges by begin; each must start at or after the previous end
    std::vector<size_t> order;
    for (size_t i = 0; i < f.tensors.size(); i++) {
        if (f.tensors[i].nbytes() > 0) order.push_back(i);
    }
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
        return f.tensors[a].begin != f.tensors[b].begin ? f.tensors[a].begin < f.tensors[b].begin
                                                        : f.tensors[a].end < f.tensors[b].end;
    });
    bool contiguous = true; // normal writers pack tensors back to back from offset 0
    uint64_t cursor = 0, max_end = 0;
    for (size_t k = 0; k < order.size(); k++) {
        const StTensor & t = f.tensors[order[k]];
        if (k > 0 && t.begin < f.tensors[order[k - 1]].end) {
            const StTensor & prev = f.tensors[order[k - 1]];
            fail(SHOAL_ERR_ST_OFFSETS, where + ": tensors " + json::printable(prev.name) + " [" +
                                           std::to_string(prev.begin) + ", " + std::to_string(prev.end) + ") and " +
                                           json::printable(t.name) + " [" + std::to_string(t.begin) + ", " +
                                           std::to_string(t.end) + ") overlap");
        }
        if (t.begin != cursor) contiguous = false;
        cursor = t.end;
        max_end = std::max(max_end, t.end);
    }
    for (const StTensor & t : f.tensors) {
        if (t.nbytes() == 0 && t.end > cursor) contiguous = false; // an empty tensor placed beyond the data
        max_end = std::max(max_end, t.end);
    }

    if (max_end > f.data_bytes) {
        // a back-to-back layout that runs past the end is a cut-off file; anything else bad offsets
        if (contiguous) {
            fail(SHOAL_ERR_ST_TRUNCATED, where + ": truncated: the tensors need " + std::to_string(max_end) +
                                             " data bytes but the file holds " + std::to_string(f.data_bytes));
        }
        for (const StTensor & t : f.tensors) {
            if (t.end > f.data_bytes) {
                fail(SHOAL_ERR_ST_OFFSETS, where + ": tensor " + json::printable(t.name) + ": data_offsets [" +
                                               std::to_string(t.begin) + ", " + std::to_string(t.end) +
                                               "] lie past the end of the data region (" +
                                               std::to_string(f.data_bytes) + " bytes)");
            }
        }
    }
    // validated: point the tensors at their bytes
    const uint8_t * region = data + 8 + n;
    for (StTensor & t : f.tensors) t.data = region + t.begin;
    return f;
}

SafetensorsFile open_safetensors(const std::string & path) {
    auto m = std::make_shared<MappedFile>(path);
    SafetensorsFile f = parse_safetensors(m->data, m->size, path);
    f.file = std::move(m);
    return f;
}

} // namespace shoal
