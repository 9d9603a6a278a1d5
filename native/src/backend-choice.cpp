// backend-choice.cpp — capability check and the `auto` backend choice (backend-choice.h).
#include "backend-choice.h"

#include <cinttypes>
#include <cstdio>

namespace shoal {

namespace {

const char * layout_name(QFormat f) {
    switch (f) {
        case QFormat::None: return "unquantized";
        case QFormat::AwqGemm: return "AutoAWQ gemm";
        case QFormat::AwqGemv: return "AutoAWQ gemv";
        case QFormat::AwqGemvFast: return "AutoAWQ gemv_fast";
        case QFormat::Gptq: return "GPTQ";
        case QFormat::EqatNative: return "EfficientQAT";
        case QFormat::CtPacked: return "compressed-tensors pack-quantized";
    }
    return "?";
}

std::string linear_desc(const LinearSource & l) {
    return std::string(layout_name(l.qfmt)) + " " + std::to_string(l.bits) + "-bit, group " + std::to_string(l.group_size) +
           ", scales " + dtype_name(l.scales.dtype);
}

bool dtype_ok(const BackendCaps & c, DType t) {
    return (t == DType::F32 && c.f32) || (t == DType::F16 && c.f16) || (t == DType::BF16 && c.bf16);
}

// "" when caps runs the linear
std::string linear_problem(const LinearSource & l, const BackendCaps & c) {
    if (l.qfmt == QFormat::None) {
        if (!dtype_ok(c, l.weight.dtype)) {
            return "linear '" + l.name + "' has " + dtype_name(l.weight.dtype) + " weights, which the " + c.name + " backend does not run";
        }
        return "";
    }
    for (const QuantCap & q : c.quant) {
        if (q.fmt != l.qfmt || q.bits != l.bits) continue;
        if (q.f16_scales_only && l.scales.dtype != DType::F16) {
            return "linear '" + l.name + "' is " + linear_desc(l) + "; the " + c.name + " backend needs F16 scales";
        }
        const int64_t G = l.group_size;
        if (l.in % q.k_multiple != 0 || G <= 0 || G % q.group_multiple != 0 || l.in % G != 0 || l.out % q.n_multiple != 0) {
            return "linear '" + l.name + "' [" + std::to_string(l.out) + ", " + std::to_string(l.in) + "] " + linear_desc(l) +
                   " is outside the " + c.name + " kernels' limits (in % " + std::to_string(q.k_multiple) + ", group % " +
                   std::to_string(q.group_multiple) + ", out % " + std::to_string(q.n_multiple) + ")";
        }
        if (l.has_g_idx) return "linear '" + l.name + "' uses act-order (g_idx), which the " + c.name + " backend does not run";
        return "";
    }
    return "linear '" + l.name + "' is " + linear_desc(l) + ", which the " + c.name + " backend does not run";
}

// Every linear the architecture has (unused slots of LayerSource have in == 0).
template <class Fn> void each_linear(const ModelSource & s, Fn && fn) {
    for (const LayerSource & L : s.layers) {
        for (const LinearSource * l : {&L.q, &L.k, &L.v, &L.qkv, &L.o, &L.gate, &L.up, &L.down, &L.router})
            if (l->in > 0) fn(*l);
        for (const ExpertSource & e : L.experts)
            for (const LinearSource * l : {&e.gate, &e.up, &e.down}) fn(*l);
    }
    if (!s.cfg.tie_word_embeddings) fn(s.lm_head);
}

// The optional ops (BackendCaps::ops) the architecture's forward pass calls.
std::vector<std::string> required_ops(const ModelConfig & c) {
    std::vector<std::string> ops;
    if (c.qk_norm) ops.push_back("head_rmsnorm");
    if (c.desc && c.desc->norm == NormKind::Layer) ops.push_back("layernorm");
    if (c.desc && !c.desc->gated) ops.push_back("activation");
    if (c.desc && c.desc->pos == PosKind::Learned) ops.push_back("learned_positions");
    if (c.desc && c.desc->qkv == QkvKind::Fused) ops.push_back("copy_cols");
    if (c.n_experts > 0) ops.push_back("moe");
    if (c.sliding_window > 0) ops.push_back("sliding_window");
    return ops;
}

std::string mib(int64_t b) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.1f MiB", (double)b / (1 << 20));
    return buf;
}

} // namespace

int64_t gpu_weight_bytes(const ModelSource & s) {
    int64_t total = (int64_t)s.embed.nbytes;
    each_linear(s, [&](const LinearSource & l) {
        if (l.qfmt == QFormat::None) total += (int64_t)l.weight.nbytes;
        else total += l.out * l.in * l.bits / 8 + (l.group_size > 0 ? l.out * (l.in / l.group_size) * 4 : 0);
        if (l.has_bias) total += l.out * 4;
    });
    const int64_t D = s.cfg.hidden_size;
    total += (int64_t)(2 * s.layers.size() + 1) * D * 4 * (s.cfg.desc && s.cfg.desc->norm == NormKind::Layer ? 2 : 1); // norms as f32
    total += (int64_t)s.pos_embed.nbytes;
    return total;
}

std::string backend_cannot_run(const ModelSource & s, const BackendCaps & c) {
    if (!dtype_ok(c, s.embed.dtype)) return std::string("the embedding is ") + dtype_name(s.embed.dtype) + ", which the " + c.name + " backend does not hold";
    std::string why;
    each_linear(s, [&](const LinearSource & l) {
        if (why.empty()) why = linear_problem(l, c);
    });
    if (!why.empty()) return why;
    auto has_op = [&](const char * op) {
        for (const std::string & o : c.ops) if (o == op) return true;
        return false;
    };
    if (s.cfg.qk_norm && !has_op("head_rmsnorm")) return s.cfg.arch + " needs the q/k norm op (head_rmsnorm), which the " + c.name + " backend lacks";
    for (const std::string & op : required_ops(s.cfg))
        if (!has_op(op.c_str())) return s.cfg.arch + " needs the op " + op + ", which the " + c.name + " backend lacks";
    if (c.max_head_dim > 0 && s.cfg.head_dim > c.max_head_dim) {
        return "head_dim " + std::to_string(s.cfg.head_dim) + " exceeds the " + c.name + " attention kernel's " + std::to_string(c.max_head_dim);
    }
    if (c.memory_bytes >= 0) {
        const int64_t need = gpu_weight_bytes(s);
        const int64_t room = c.memory_bytes - c.memory_bytes / 20 - (int64_t(64) << 20);
        if (need > room) {
            return "the weights need " + mib(need) + " but " + c.name + " has " + mib(c.memory_bytes) + " free (" + mib(room) +
                   " after 5 % + 64 MiB for activations and the KV cache)";
        }
    }
    return "";
}

BackendChoice choose_backend(const std::string & requested, const ModelSource & s, const BackendCaps * gpu, const std::string & gpu_why) {
    if (requested != "auto") return {requested, ""};
    if (!gpu) return {"cpu", gpu_why.empty() ? "" : "backend auto: CPU (no usable GPU: " + gpu_why + ")"};
    const std::string why = backend_cannot_run(s, *gpu);
    if (why.empty()) return {gpu->name, ""};
    return {"cpu", "backend auto: CPU, not " + gpu->name + ": " + why};
}

BackendCaps cuda_declared_caps() {
    BackendCaps c;
    c.name = "cuda";
    // load_linear: AwqGemm 4-bit only, F16 scales, K % 32, G % 32, K % G, N % 8
    QuantCap awq;
    awq.fmt = QFormat::AwqGemm;
    awq.bits = 4;
    awq.f16_scales_only = true;
    awq.k_multiple = 32;
    awq.group_multiple = 32;
    awq.n_multiple = 8;
    c.quant.push_back(awq);
    c.f32 = c.f16 = c.bf16 = true; // wtype_of
    c.ops = {"head_rmsnorm", "layernorm", "activation", "learned_positions", "copy_cols", "moe", "sliding_window"};
    c.max_head_dim = 256;          // attention(): even head_dim <= 256
    return c;
}

} // namespace shoal
