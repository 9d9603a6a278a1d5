// json.cpp — strict recursive-descent JSON parser (RFC 8259): no comments, no
// trailing commas, no NaN/Infinity, UTF-8 validated, duplicate keys rejected.
#include "json.h"

#include <charconv>
#include <cmath>
#include <locale>
#include <sstream>
#include <unordered_set>

namespace shoal {
namespace json {

const Value * Value::get(const std::string & key) const {
    if (type != Type::Object) return nullptr;
    for (size_t i = 0; i < keys.size(); i++) {
        if (keys[i] == key) return &items[i];
    }
    return nullptr;
}

std::string printable(const std::string & s, size_t max_len) {
    std::string out;
    for (size_t i = 0; i < s.size() && i < max_len; i++) {
        unsigned char c = (unsigned char)s[i];
        out += (c >= 0x20 && c < 0x7F) ? char(c) : '?';
    }
    if (s.size() > max_len) out += "...";
    return out;
}

const char * type_name(Type t) {
    switch (t) {
    case Type::Null: return "null";
    case Type::Bool: return "boolean";
    case Type::Number: return "number";
    case Type::String: return "string";
    case Type::Array: return "array";
    case Type::Object: return "object";
    }
    return "?";
}

namespace {

struct Parser {
    const char * p;     // [p, p+n): the whole input
    size_t       n;
    size_t       pos = 0;
    size_t       n_values = 0;
    shoal_status status;
    const std::string & where;
    const Limits & lim;

    [[noreturn]] void error(const std::string & what) const {
        fail(status, where + ": invalid JSON at byte " + std::to_string(pos) + ": " + what);
    }
    bool at_end() const { return pos >= n; }
    unsigned char peek() const { return at_end() ? 0 : (unsigned char)p[pos]; }

    void skip_ws() {
        while (!at_end() && (p[pos] == ' ' || p[pos] == '\t' || p[pos] == '\n' || p[pos] == '\r')) pos++;
    }

    void expect_word(const char * w) {
        for (const char * c = w; *c; c++, pos++) {
            if (at_end() || p[pos] != *c) error(std::string("expected '") + w + "'");
        }
    }

    void parse_value(Value & v, int depth) {
        if (++n_values > lim.max_values) error("too many values");
        skip_ws();
        if (at_end()) error("unexpected end of input");
        switch (p[pos]) {
        case '{': parse_object(v, depth + 1); break;
        case '[': parse_array(v, depth + 1); break;
        case '"': v.type = Type::String; parse_string(v.str); break;
        case 't': expect_word("true"); v.type = Type::Bool; v.boolean = true; break;
        case 'f': expect_word("false"); v.type = Type::Bool; v.boolean = false; break;
        case 'n': expect_word("null"); v.type = Type::Null; break;
        default:
            if (p[pos] == '-' || (p[pos] >= '0' && p[pos] <= '9')) parse_number(v);
            else error("unexpected character");
        }
    }

    void parse_object(Value & v, int depth) {
        if (depth > lim.max_depth) error("nesting deeper than " + std::to_string(lim.max_depth));
        v.type = Type::Object;
        pos++; // '{'
        skip_ws();
        if (peek() == '}') { pos++; return; }
        std::unordered_set<std::string> seen; // hashed: headers can hold 100k+ keys
        for (;;) {
            skip_ws();
            if (peek() != '"') error("expected a string key");
            size_t key_pos = pos;
            std::string key;
            parse_string(key);
            if (!seen.insert(key).second) { pos = key_pos; error("duplicate key \"" + printable(key) + "\""); }
            skip_ws();
            if (peek() != ':') error("expected ':'");
            pos++;
            v.keys.push_back(std::move(key));
            v.items.emplace_back();
            parse_value(v.items.back(), depth);
            skip_ws();
            if (peek() == ',') { pos++; continue; }
            if (peek() == '}') { pos++; return; }
            error("expected ',' or '}'");
        }
    }

    void parse_array(Value & v, int depth) {
        if (depth > lim.max_depth) error("nesting deeper than " + std::to_string(lim.max_depth));
        v.type = Type::Array;
        pos++; // '['
        skip_ws();
        if (peek() == ']') { pos++; return; }
        for (;;) {
            v.items.emplace_back();
            parse_value(v.items.back(), depth);
            skip_ws();
            if (peek() == ',') { pos++; continue; }
            if (peek() == ']') { pos++; return; }
            error("expected ',' or ']'");
        }
    }

    unsigned hex4() {
        unsigned u = 0;
        for (int i = 0; i < 4; i++, pos++) {
            unsigned char c = peek();
            unsigned d;
            if (c >= '0' && c <= '9') d = c - '0';
            else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
            else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
            else error("bad \\u escape");
            u = u * 16 + d;
        }
        return u;
    }

    static void put_utf8(std::string & s, uint32_t cp) {
        if (cp < 0x80) {
            s += char(cp);
        } else if (cp < 0x800) {
            s += char(0xC0 | (cp >> 6));
            s += char(0x80 | (cp & 0x3F));
        } else if (cp < 0x10000) {
            s += char(0xE0 | (cp >> 12));
            s += char(0x80 | ((cp >> 6) & 0x3F));
            s += char(0x80 | (cp & 0x3F));
        } else {
            s += char(0xF0 | (cp >> 18));
            s += char(0x80 | ((cp >> 12) & 0x3F));
            s += char(0x80 | ((cp >> 6) & 0x3F));
            s += char(0x80 | (cp & 0x3F));
        }
    }

    // Copies one raw UTF-8 sequence starting at pos, rejecting overlong forms,
    // surrogates and code points past U+10FFFF.
    void copy_utf8(std::string & s) {
        unsigned char c = peek();
        int len;
        uint32_t cp, min;
        if (c >= 0xC2 && c <= 0xDF) { len = 2; cp = c & 0x1F; min = 0x80; }
        else if (c >= 0xE0 && c <= 0xEF) { len = 3; cp = c & 0x0F; min = 0x800; }
        else if (c >= 0xF0 && c <= 0xF4) { len = 4; cp = c & 0x07; min = 0x10000; }
        else error("invalid UTF-8");
        if (n - pos < size_t(len)) error("truncated UTF-8");
        for (int i = 1; i < len; i++) {
            unsigned char d = (unsigned char)p[pos + i];
            if ((d & 0xC0) != 0x80) error("invalid UTF-8");
            cp = (cp << 6) | (d & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) error("invalid UTF-8");
        s.append(p + pos, size_t(len));
        pos += size_t(len);
    }

    void parse_string(std::string & s) {
        pos++; // opening quote
        for (;;) {
            if (at_end()) error("unterminated string");
            unsigned char c = peek();
            if (c == '"') { pos++; return; }
            if (c < 0x20) error("control character in string");
            if (c >= 0x80) { copy_utf8(s); continue; }
            if (c != '\\') { s += char(c); pos++; continue; }
            pos++;
            if (at_end()) error("unterminated string");
            char e = p[pos++];
            switch (e) {
            case '"': s += '"'; break;
            case '\\': s += '\\'; break;
            case '/': s += '/'; break;
            case 'b': s += '\b'; break;
            case 'f': s += '\f'; break;
            case 'n': s += '\n'; break;
            case 'r': s += '\r'; break;
            case 't': s += '\t'; break;
            case 'u': {
                uint32_t cp = hex4();
                if (cp >= 0xDC00 && cp <= 0xDFFF) error("lone low surrogate");
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    // a high surrogate must be followed by \u + low surrogate
                    if (n - pos < 2 || p[pos] != '\\' || p[pos + 1] != 'u') error("lone high surrogate");
                    pos += 2;
                    uint32_t lo = hex4();
                    if (lo < 0xDC00 || lo > 0xDFFF) error("bad low surrogate");
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                }
                put_utf8(s, cp);
                break;
            }
            default: pos--; error("bad escape");
            }
        }
    }

    void parse_number(Value & v) {
        size_t start = pos;
        bool neg = false, integral_syntax = true;
        if (peek() == '-') { neg = true; pos++; }
        if (peek() == '0') {
            pos++;
        } else if (peek() >= '1' && peek() <= '9') {
            while (peek() >= '0' && peek() <= '9') pos++;
        } else {
            error("bad number");
        }
        if (peek() == '.') {
            integral_syntax = false;
            pos++;
            if (!(peek() >= '0' && peek() <= '9')) error("bad number: digit expected after '.'");
            while (peek() >= '0' && peek() <= '9') pos++;
        }
        if (peek() == 'e' || peek() == 'E') {
            integral_syntax = false;
            pos++;
            if (peek() == '+' || peek() == '-') pos++;
            if (!(peek() >= '0' && peek() <= '9')) error("bad number: digit expected in exponent");
            while (peek() >= '0' && peek() <= '9') pos++;
        }
        const char * b = p + start;
        const char * e = p + pos;
        v.type = Type::Number;
        v.number = to_double(b, e, start);
        if (integral_syntax) {
            // exact int64 from the digits; a value that does not fit stays a double only
            uint64_t mag = 0, limit = neg ? (uint64_t(1) << 63) : uint64_t(INT64_MAX);
            bool fits = true;
            for (const char * c = b + (neg ? 1 : 0); c < e; c++) {
                uint64_t d = uint64_t(*c - '0');
                if (mag > (limit - d) / 10) { fits = false; break; }
                mag = mag * 10 + d;
            }
            if (fits) {
                v.is_int = true;
                v.integer = neg ? (mag == (uint64_t(1) << 63) ? INT64_MIN : -int64_t(mag)) : int64_t(mag);
            }
        } else if (std::trunc(v.number) == v.number && std::fabs(v.number) < 9.2e18) {
            v.is_int = true;
            v.integer = int64_t(v.number);
        }
    }

    double to_double(const char * b, const char * e, size_t start) {
        double d = 0.0;
#if defined(__cpp_lib_to_chars) && __cpp_lib_to_chars >= 201611L
        auto r = std::from_chars(b, e, d);
        if (r.ec != std::errc() || r.ptr != e) { pos = start; error("number out of range"); }
#else
        // locale-independent fallback for toolchains without floating from_chars
        std::istringstream is(std::string(b, e));
        is.imbue(std::locale::classic());
        is >> d;
        if (is.fail() || !std::isfinite(d)) { pos = start; error("number out of range"); }
#endif
        return d;
    }
};

} // namespace

Value parse(const char * text, size_t n, shoal_status status, const std::string & where,
            const Limits & limits) {
    if (n > limits.max_bytes) {
        fail(status, where + ": JSON text of " + std::to_string(n) + " bytes exceeds the limit of " +
                         std::to_string(limits.max_bytes));
    }
    Parser ps{text, n, 0, 0, status, where, limits};
    Value v;
    ps.parse_value(v, 0);
    ps.skip_ws();
    if (!ps.at_end()) ps.error("trailing characters after the value");
    return v;
}

} // namespace json
} // namespace shoal
