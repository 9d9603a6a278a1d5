// json.h — a small strict JSON DOM parser for checkpoint headers and configs.
// Hand-written so the engine stays dependency-free; it parses untrusted bytes
// (safetensors headers) and is fuzzed, so every limit is explicit.
#pragma once
#include "error.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace shoal {
namespace json {

enum class Type { Null, Bool, Number, String, Array, Object };

struct Value {
    Type        type = Type::Null;
    bool        boolean = false;
    double      number = 0.0;
    bool        is_int = false;   // number is integral and fits int64 exactly
    int64_t     integer = 0;      // valid when is_int
    std::string str;              // String
    std::vector<Value> items;     // Array elements, or Object values (same order as keys)
    std::vector<std::string> keys; // Object keys (unique, in document order)

    bool is_null() const { return type == Type::Null; }
    bool is_bool() const { return type == Type::Bool; }
    bool is_number() const { return type == Type::Number; }
    bool is_string() const { return type == Type::String; }
    bool is_array() const { return type == Type::Array; }
    bool is_object() const { return type == Type::Object; }
    // Member of an object, nullptr when absent or when this is not an object.
    const Value * get(const std::string & key) const;
};

struct Limits {
    size_t max_bytes = size_t(100) << 20; // input length bound
    int    max_depth = 64;                // nesting of arrays/objects
    size_t max_values = size_t(2) << 20;  // bounds DOM memory (about 100 bytes per value)
};

// Parses exactly one JSON value (surrounded by optional whitespace) from
// [text, text+n). On any problem throws shoal::Error(status, "<where>: invalid
// JSON at byte <offset>: <what>").
Value parse(const char * text, size_t n, shoal_status status, const std::string & where,
            const Limits & limits = Limits());

// s clipped to max_len characters with non-printable bytes as '?', for error
// messages that quote untrusted names.
std::string printable(const std::string & s, size_t max_len = 120);

// Short name of a type for messages ("object", "string", ...).
const char * type_name(Type t);

} // namespace json
} // namespace shoal
