// safetensors.h — read-only file mapping and the safetensors container:
//   [u64 little-endian N][N bytes JSON header][data region]
// The header maps tensor names to {dtype, shape, data_offsets [begin, end)}
// relative to the data region. Everything in it is untrusted and checked.
// Status rules: < 8 bytes, or tensors packed back to back from 0 that run past
// the end (a cut-off file) -> ST_TRUNCATED; N past the end or > 100 MB ->
// ST_HEADER_LEN; bad JSON or structure -> ST_HEADER_JSON; unknown dtype ->
// ST_DTYPE; begin > end, span != numel x size, overlap, or a range past the end
// in any other layout -> ST_OFFSETS.
#pragma once
#include "tensor.h"

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace shoal {

// A whole file mapped read-only (MAP_PRIVATE). Throws SHOAL_ERR_IO on failure.
struct MappedFile {
    std::string     path;
    const uint8_t * data = nullptr; // [size] bytes; nullptr when size == 0
    size_t          size = 0;

    explicit MappedFile(const std::string & path);
    ~MappedFile();
    MappedFile(const MappedFile &) = delete;
    MappedFile & operator=(const MappedFile &) = delete;
};

constexpr uint64_t ST_MAX_HEADER_BYTES = 100u * 1000u * 1000u; // 100 MB, as the reference format

// One tensor entry of a safetensors header, validated.
struct StTensor {
    std::string name;
    std::string dtype_str;          // as in the header, e.g. "BF16", "BOOL"
    DType       dtype = DType::U8;  // BOOL is held as U8 (one byte per element)
    std::vector<int64_t> shape;     // any rank; a TensorView holds rank <= 4
    uint64_t    begin = 0, end = 0; // byte range within the data region
    const uint8_t * data = nullptr; // data region + begin, set once the whole header validated
    uint64_t nbytes() const { return end - begin; }
};

struct SafetensorsFile {
    std::string path;                                  // names the file in messages
    std::map<std::string, std::string> metadata;       // "__metadata__"
    std::vector<StTensor> tensors;                     // header order
    std::unordered_map<std::string, size_t> by_name;   // name -> index in tensors
    uint64_t header_len = 0;                           // N
    uint64_t data_bytes = 0;                           // size of the data region
    std::shared_ptr<MappedFile> file;                  // null for an in-memory parse

    const StTensor * find(const std::string & name) const;
    // A TensorView of t (rank <= 4, else SHOAL_ERR_SHAPE naming the tensor and file).
    TensorView view(const StTensor & t) const;
};

// Parses and validates a safetensors image held in memory; the views point into
// [data, data+size), which must outlive the result. where names it in messages.
SafetensorsFile parse_safetensors(const uint8_t * data, size_t size, const std::string & where);

// Maps path and parses it; the result keeps the mapping alive.
SafetensorsFile open_safetensors(const std::string & path);

// Size in bytes of one element of a safetensors dtype string, 0 when unknown.
size_t st_dtype_size(const std::string & dtype);

} // namespace shoal
