// gguf-writer.cpp — see gguf-writer.h.
#include "gguf-writer.h"

#include "tensor.h" // f32_to_f16 / f16_to_f32

#include <cmath>
#include <cstdio>
#include <cstring>
#include <stdexcept>

namespace shoal {
namespace gguf {

namespace {

template <class T> void put(std::vector<uint8_t> & b, T v) {
    uint8_t tmp[sizeof(T)];
    std::memcpy(tmp, &v, sizeof(T)); // little-endian hosts only (x86-64, aarch64)
    b.insert(b.end(), tmp, tmp + sizeof(T));
}

void put_str(std::vector<uint8_t> & b, const std::string & s) {
    put<uint64_t>(b, s.size());
    b.insert(b.end(), s.begin(), s.end());
}

uint64_t pad_to(uint64_t n, uint64_t a) { return (n + a - 1) / a * a; }

} // namespace

uint64_t tensor_bytes(TensorType t, uint64_t n) {
    switch (t) {
        case TensorType::F32: return 4 * n;
        case TensorType::F16: return 2 * n;
        case TensorType::Q4_0: return n / kQ4Block * kQ4BlockBytes;
    }
    return 0;
}

void quantize_q4_0(const float * x, int64_t n, uint8_t * out) {
    for (int64_t b = 0; b < n / kQ4Block; b++) {
        const float * v = x + b * kQ4Block;
        float m = 0.0f; // the value of largest magnitude, with its sign
        for (int i = 0; i < kQ4Block; i++)
            if (std::fabs(v[i]) > std::fabs(m)) m = v[i];
        const uint16_t dh = f32_to_f16(m / -8.0f);
        const float d = f16_to_f32(dh), id = d != 0.0f ? 1.0f / d : 0.0f;
        uint8_t * o = out + b * kQ4BlockBytes;
        std::memcpy(o, &dh, 2);
        for (int j = 0; j < kQ4Block / 2; j++) {
            auto q = [&](float f) {
                const float r = std::nearbyint(f * id) + 8.0f;
                return (uint8_t)(r < 0.0f ? 0 : r > 15.0f ? 15 : (int)r);
            };
            o[2 + j] = (uint8_t)(q(v[j]) | (q(v[j + kQ4Block / 2]) << 4));
        }
    }
}

void dequantize_q4_0(const uint8_t * in, int64_t n, float * x) {
    for (int64_t b = 0; b < n / kQ4Block; b++) {
        const uint8_t * o = in + b * kQ4BlockBytes;
        uint16_t dh;
        std::memcpy(&dh, o, 2);
        const float d = f16_to_f32(dh);
        for (int j = 0; j < kQ4Block / 2; j++) {
            x[b * kQ4Block + j] = (float)((o[2 + j] & 15) - 8) * d;
            x[b * kQ4Block + j + kQ4Block / 2] = (float)((o[2 + j] >> 4) - 8) * d;
        }
    }
}

void Writer::key(const std::string & k, ValueType t) {
    put_str(kv_, k);
    put<uint32_t>(kv_, (uint32_t)t);
    n_kv_++;
}

void Writer::add_u32(const std::string & k, uint32_t v) { key(k, ValueType::U32); put(kv_, v); }
void Writer::add_i32(const std::string & k, int32_t v) { key(k, ValueType::I32); put(kv_, v); }
void Writer::add_f32(const std::string & k, float v) { key(k, ValueType::F32); put(kv_, v); }
void Writer::add_bool(const std::string & k, bool v) { key(k, ValueType::BOOL); put<uint8_t>(kv_, v ? 1 : 0); }
void Writer::add_string(const std::string & k, const std::string & v) { key(k, ValueType::STRING); put_str(kv_, v); }

void Writer::add_strings(const std::string & k, const std::vector<std::string> & v) {
    key(k, ValueType::ARRAY);
    put<uint32_t>(kv_, (uint32_t)ValueType::STRING);
    put<uint64_t>(kv_, v.size());
    for (const auto & s : v) put_str(kv_, s);
}
void Writer::add_f32s(const std::string & k, const std::vector<float> & v) {
    key(k, ValueType::ARRAY);
    put<uint32_t>(kv_, (uint32_t)ValueType::F32);
    put<uint64_t>(kv_, v.size());
    for (float f : v) put(kv_, f);
}
void Writer::add_i32s(const std::string & k, const std::vector<int32_t> & v) {
    key(k, ValueType::ARRAY);
    put<uint32_t>(kv_, (uint32_t)ValueType::I32);
    put<uint64_t>(kv_, v.size());
    for (int32_t i : v) put(kv_, i);
}

uint64_t Writer::Tensor::bytes() const {
    uint64_t n = 1;
    for (uint64_t d : ne) n *= d;
    return tensor_bytes(type, n);
}

void Writer::add_tensor(const std::string & name, const std::vector<uint64_t> & ne, TensorType type, Fill fill) {
    if (ne.empty() || ne.size() > 4) throw std::runtime_error("gguf: tensor '" + name + "' needs 1 to 4 dimensions");
    if (type == TensorType::Q4_0 && ne[0] % kQ4Block != 0)
        throw std::runtime_error("gguf: Q4_0 tensor '" + name + "' has ne[0] not a multiple of 32");
    tensors_.push_back(Tensor{name, ne, type, std::move(fill)});
}

uint64_t Writer::data_bytes() const {
    uint64_t n = 0;
    for (const auto & t : tensors_) n += t.bytes();
    return n;
}

void Writer::write(const std::string & path) const {
    std::vector<uint8_t> head;
    head.insert(head.end(), {'G', 'G', 'U', 'F'});
    put<uint32_t>(head, kVersion);
    put<uint64_t>(head, tensors_.size());
    put<uint64_t>(head, n_kv_);
    head.insert(head.end(), kv_.begin(), kv_.end());
    uint64_t off = 0;
    for (const auto & t : tensors_) {
        put_str(head, t.name);
        put<uint32_t>(head, (uint32_t)t.ne.size());
        for (uint64_t d : t.ne) put<uint64_t>(head, d);
        put<uint32_t>(head, (uint32_t)t.type);
        put<uint64_t>(head, off);
        off = pad_to(off + t.bytes(), kAlignment);
    }
    head.resize(pad_to(head.size(), kAlignment), 0);

    const std::string tmp = path + ".tmp";
    FILE * f = std::fopen(tmp.c_str(), "wb");
    if (!f) throw std::runtime_error("gguf: cannot create " + tmp);
    bool ok = std::fwrite(head.data(), 1, head.size(), f) == head.size();
    std::vector<uint8_t> buf;
    for (const auto & t : tensors_) {
        if (!ok) break;
        buf.assign(pad_to(t.bytes(), kAlignment), 0);
        t.fill(buf.data(), t.bytes());
        ok = std::fwrite(buf.data(), 1, buf.size(), f) == buf.size();
    }
    ok = std::fclose(f) == 0 && ok;
    if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
        std::remove(tmp.c_str());
        throw std::runtime_error("gguf: writing " + path + " failed (disk full?)");
    }
}

} // namespace gguf
} // namespace shoal
