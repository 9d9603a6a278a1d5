// test-gguf-writer.cpp — the peer benchmark's GGUF writer (tools/gguf-writer.h):
// a file written with metadata of every kind and F32 / F16 / Q4_0 tensors is
// read back by an independent parser here (header, every key and value,
// tensor descriptors, 32-byte aligned offsets, data bytes), and Q4_0 follows
// the format's block rule (nibble order, d = m / −8, error <= |d|/2 but for
// the clamped q = 16).
#include "gguf-writer.h"
#include "tensor.h"
#include "test-helpers.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <unistd.h>
#include <vector>

using namespace shoal;
using namespace shoal_test;

namespace {

// A minimal GGUF reader: bounds-checked cursor over the file bytes.
struct Reader {
    std::vector<uint8_t> b;
    size_t p = 0;
    bool ok = true;
    template <class T> T get() {
        T v{};
        if (p + sizeof(T) > b.size()) { ok = false; return v; }
        std::memcpy(&v, &b[p], sizeof(T));
        p += sizeof(T);
        return v;
    }
    std::string str() {
        const uint64_t n = get<uint64_t>();
        if (!ok || p + n > b.size()) { ok = false; return ""; }
        std::string s(reinterpret_cast<const char *>(&b[p]), n);
        p += n;
        return s;
    }
};

// A value rendered as text, so the test compares one map.
std::string read_value(Reader & r, uint32_t type) {
    std::ostringstream o;
    switch (type) {
        case 4: o << "u32:" << r.get<uint32_t>(); break;
        case 5: o << "i32:" << r.get<int32_t>(); break;
        case 6: o << "f32:" << r.get<float>(); break;
        case 7: o << "bool:" << (int)r.get<uint8_t>(); break;
        case 8: o << "str:" << r.str(); break;
        case 9: {
            const uint32_t et = r.get<uint32_t>();
            const uint64_t n = r.get<uint64_t>();
            o << "arr[" << n << "]:";
            for (uint64_t i = 0; i < n && r.ok; i++) o << read_value(r, et) << ",";
            break;
        }
        default: r.ok = false;
    }
    return o.str();
}

struct TensorInfo {
    std::vector<uint64_t> ne;
    uint32_t type = 0;
    uint64_t offset = 0;
};

} // namespace

int main() {
    // ---- Q4_0 blocks ----------------------------------------------------------
    {
        std::mt19937 rng(7);
        std::uniform_real_distribution<float> u(-3.0f, 3.0f);
        std::vector<float> x(32 * 64), y(x.size());
        for (auto & v : x) v = u(rng);
        for (int i = 0; i < 32; i++) x[32 * 5 + i] = 0.0f; // an all-zero block
        std::vector<uint8_t> q(gguf::tensor_bytes(gguf::TensorType::Q4_0, x.size()));
        check(q.size() == x.size() / 32 * 18, "Q4_0: 18 bytes per 32 values");
        gguf::quantize_q4_0(x.data(), (int64_t)x.size(), q.data());
        gguf::dequantize_q4_0(q.data(), (int64_t)x.size(), y.data());
        bool err_ok = true, m_exact = true, order_ok = true;
        for (size_t b = 0; b < x.size() / 32; b++) {
            uint16_t dh;
            std::memcpy(&dh, &q[b * 18], 2);
            const float d = f16_to_f32(dh);
            int im = 0;
            for (int i = 1; i < 32; i++)
                if (std::fabs(x[b * 32 + i]) > std::fabs(x[b * 32 + im])) im = i;
            const float m = x[b * 32 + im];
            // the largest-magnitude value is exactly −8·d (up to d's f16 rounding)
            m_exact = m_exact && std::fabs(y[b * 32 + im] - m) <= std::fabs(m) * 1e-3f + 1e-30f;
            for (int i = 0; i < 32; i++) {
                // within |d|/2, except values of the opposite sign near |m| whose
                // q = round(x/d) + 8 = 16 is clamped to 15: within |d|
                const bool clamped = d != 0.0f && std::nearbyint(x[b * 32 + i] / d) + 8.0f > 15.0f;
                const float bound = std::fabs(d) * (clamped ? 1.0f : 0.5f) * 1.002f + 1e-30f;
                err_ok = err_ok && std::fabs(y[b * 32 + i] - x[b * 32 + i]) <= bound;
                // element i lives in byte i % 16, low nibble for i < 16
                const uint8_t byte = q[b * 18 + 2 + i % 16];
                const int nib = i < 16 ? (byte & 15) : (byte >> 4);
                order_ok = order_ok && y[b * 32 + i] == (float)(nib - 8) * d;
            }
        }
        check(err_ok, "Q4_0: every value within |d|/2 of the input (|d| where q clamps at 15)");
        check(m_exact, "Q4_0: the block's largest-magnitude value maps to q = 0 (d = m / -8)");
        check(order_ok, "Q4_0: byte j holds element j (low nibble) and j + 16 (high nibble)");
        bool zero_ok = true;
        for (int i = 0; i < 32; i++) zero_ok = zero_ok && y[32 * 5 + i] == 0.0f;
        check(zero_ok, "Q4_0: an all-zero block decodes to zeros");
    }

    // ---- a whole file, read back ------------------------------------------------
    char tmpl[] = "/tmp/shoal-gguf-XXXXXX";
    const int fd = mkstemp(tmpl);
    check(fd >= 0, "temp file");
    close(fd);
    const std::string path = tmpl;

    std::vector<float> f32v = {1.5f, -2.0f, 3.25f};
    std::vector<float> qsrc(64 * 3);
    for (size_t i = 0; i < qsrc.size(); i++) qsrc[i] = std::sin((float)i);
    gguf::Writer w;
    w.add_string("general.architecture", "llama");
    w.add_u32("llama.block_count", 2);
    w.add_i32("test.neg", -5);
    w.add_f32("test.eps", 0.5f);
    w.add_bool("test.flag", true);
    w.add_strings("tokenizer.ggml.tokens", {"<unk>", "a", ""});
    w.add_f32s("tokenizer.ggml.scores", {0.0f, -1.0f, 2.0f});
    w.add_i32s("tokenizer.ggml.token_type", {2, 1, 1});
    w.add_tensor("norm", {3}, gguf::TensorType::F32, [&](uint8_t * d, uint64_t n) { std::memcpy(d, f32v.data(), n); });
    w.add_tensor("half", {5}, gguf::TensorType::F16, [&](uint8_t * d, uint64_t n) {
        for (uint64_t i = 0; i < n / 2; i++) {
            const uint16_t h = f32_to_f16((float)i);
            std::memcpy(d + 2 * i, &h, 2);
        }
    });
    w.add_tensor("mat", {64, 3}, gguf::TensorType::Q4_0,
                 [&](uint8_t * d, uint64_t) { gguf::quantize_q4_0(qsrc.data(), (int64_t)qsrc.size(), d); });
    w.write(path);

    Reader r;
    {
        std::ifstream f(path, std::ios::binary);
        r.b.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
    }
    check(r.b.size() > 4 && std::memcmp(r.b.data(), "GGUF", 4) == 0, "file starts with GGUF");
    r.p = 4;
    check(r.get<uint32_t>() == 3, "version 3");
    const uint64_t n_tensors = r.get<uint64_t>(), n_kv = r.get<uint64_t>();
    check(n_tensors == 3 && n_kv == 8, "3 tensors, 8 metadata pairs");
    std::map<std::string, std::string> kv;
    for (uint64_t i = 0; i < n_kv && r.ok; i++) {
        const std::string k = r.str();
        const uint32_t t = r.get<uint32_t>();
        kv[k] = read_value(r, t);
    }
    check(kv["general.architecture"] == "str:llama", "string value");
    check(kv["llama.block_count"] == "u32:2", "u32 value");
    check(kv["test.neg"] == "i32:-5", "i32 value");
    check(kv["test.eps"] == "f32:0.5", "f32 value");
    check(kv["test.flag"] == "bool:1", "bool value");
    check(kv["tokenizer.ggml.tokens"] == "arr[3]:str:<unk>,str:a,str:,", "string array (empty string included)");
    check(kv["tokenizer.ggml.scores"] == "arr[3]:f32:0,f32:-1,f32:2,", "f32 array");
    check(kv["tokenizer.ggml.token_type"] == "arr[3]:i32:2,i32:1,i32:1,", "i32 array");
    std::map<std::string, TensorInfo> ti;
    std::vector<std::string> order;
    for (uint64_t i = 0; i < n_tensors && r.ok; i++) {
        const std::string name = r.str();
        TensorInfo t;
        const uint32_t nd = r.get<uint32_t>();
        for (uint32_t d = 0; d < nd && d < 4; d++) t.ne.push_back(r.get<uint64_t>());
        t.type = r.get<uint32_t>();
        t.offset = r.get<uint64_t>();
        ti[name] = t;
        order.push_back(name);
    }
    check(r.ok, "header parses within the file");
    const size_t data0 = (r.p + 31) / 32 * 32;
    check(ti["norm"].ne == std::vector<uint64_t>{3} && ti["norm"].type == 0, "norm: ne {3}, F32");
    check(ti["half"].ne == std::vector<uint64_t>{5} && ti["half"].type == 1, "half: ne {5}, F16");
    check(ti["mat"].ne == (std::vector<uint64_t>{64, 3}) && ti["mat"].type == 2, "mat: ne {64, 3} (ne0 innermost), Q4_0");
    bool aligned = true;
    for (const auto & n : order) aligned = aligned && ti[n].offset % 32 == 0;
    check(aligned, "tensor offsets are multiples of the 32-byte alignment");
    check(ti["norm"].offset == 0 && ti["half"].offset == 32 && ti["mat"].offset == 64, "offsets in order, padded");
    const size_t mat_bytes = 6 * 18;
    check(r.b.size() >= data0 + 64 + mat_bytes, "file holds every tensor's data");
    if (r.b.size() >= data0 + 64 + mat_bytes) {
        check(std::memcmp(&r.b[data0], f32v.data(), 12) == 0, "F32 data at its offset");
        uint16_t h4;
        std::memcpy(&h4, &r.b[data0 + 32 + 8], 2);
        check(f16_to_f32(h4) == 4.0f, "F16 data at its offset");
        std::vector<float> y(qsrc.size());
        gguf::dequantize_q4_0(&r.b[data0 + 64], (int64_t)qsrc.size(), y.data());
        double worst = 0;
        for (size_t i = 0; i < y.size(); i++) worst = std::max(worst, (double)std::fabs(y[i] - qsrc[i]));
        check(worst <= 1.0 / 8 * 1.01, "Q4_0 data at its offset decodes to the source (|x| <= 1, error <= |d| <= 1/8)");
    }
    std::remove(path.c_str());

    // bad shapes are refused
    bool threw = false;
    try { w.add_tensor("bad", {33, 2}, gguf::TensorType::Q4_0, [](uint8_t *, uint64_t) {}); } catch (const std::exception &) { threw = true; }
    check(threw, "Q4_0 with ne0 % 32 != 0 is refused");
    threw = false;
    try { gguf::Writer().write("/nonexistent-dir/x.gguf"); } catch (const std::exception &) { threw = true; }
    check(threw, "an unwritable path throws");
    return finish();
}
