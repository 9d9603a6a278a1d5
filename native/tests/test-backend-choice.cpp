// test-backend-choice.cpp — `--backend auto` against injected capability tables: the GPU
// only when every linear's layout, every op and the weights' size fit it; otherwise the
// CPU with a note naming the reason. Runs on any machine (no GPU involved).
#include "backend-choice.h"
#include "test-helpers.h"

#include "shoal.h"

#include <cstring>

using namespace shoal;
using shoal_test::check;

namespace {

LinearSource lin(const std::string & name, int64_t out, int64_t in) {
    LinearSource l;
    l.name = name;
    l.in = in;
    l.out = out;
    l.weight.dtype = DType::F16;
    l.weight.nbytes = (size_t)(in * out * 2);
    return l;
}

void quantize(LinearSource & l, QFormat f, int bits, int group, DType scales = DType::F16) {
    l.qfmt = f;
    l.awq = f == QFormat::AwqGemm;
    l.bits = bits;
    l.group_size = group;
    l.scales.dtype = scales;
    l.weight = TensorView{};
}

// A Llama-shaped source: D 256, F 512, 2 layers, 8 heads of 32, vocab 1000, F16, untied.
ModelSource model(QFormat f = QFormat::None, int bits = 4, int group = 128) {
    ModelSource s;
    ModelConfig & c = s.cfg;
    c.arch = "LlamaForCausalLM";
    c.hidden_size = 256;
    c.intermediate_size = 512;
    c.n_layers = 2;
    c.n_heads = c.n_kv_heads = 8;
    c.head_dim = 32;
    c.vocab_size = 1000;
    s.embed.dtype = DType::F16;
    s.embed.nbytes = 1000 * 256 * 2;
    for (int i = 0; i < 2; i++) {
        LayerSource L;
        const std::string p = "model.layers." + std::to_string(i);
        L.q = lin(p + ".self_attn.q_proj", 256, 256);
        L.k = lin(p + ".self_attn.k_proj", 256, 256);
        L.v = lin(p + ".self_attn.v_proj", 256, 256);
        L.o = lin(p + ".self_attn.o_proj", 256, 256);
        L.gate = lin(p + ".mlp.gate_proj", 512, 256);
        L.up = lin(p + ".mlp.up_proj", 512, 256);
        L.down = lin(p + ".mlp.down_proj", 256, 512);
        if (f != QFormat::None)
            for (LinearSource * l : {&L.q, &L.k, &L.v, &L.o, &L.gate, &L.up, &L.down}) quantize(*l, f, bits, group);
        s.layers.push_back(L);
    }
    s.lm_head = lin("lm_head", 1000, 256);
    return s;
}

// What the CUDA backend declares (cuda_declared_caps), with a chosen amount of free memory.
BackendCaps cuda_like(int64_t free_bytes) {
    BackendCaps c = cuda_declared_caps();
    c.memory_bytes = free_bytes;
    return c;
}

const int64_t kGiB = int64_t(1) << 30;

void expect(const std::string & what, const ModelSource & s, const BackendCaps * caps, const std::string & want,
            const std::string & note_has) {
    const BackendChoice ch = choose_backend("auto", s, caps, "no CUDA driver");
    const bool ok = ch.name == want && (note_has.empty() ? ch.note.empty() : ch.note.find(note_has) != std::string::npos);
    check(ok, what + ": auto → " + ch.name + " (want " + want + "), note \"" + ch.note + "\" (want \"" + note_has + "\")");
}

} // namespace

int main() {
    const BackendCaps big = cuda_like(8 * kGiB);
    // supported: F16 weights, AutoAWQ gemm g128 with F16 scales
    expect("f16 model", model(), &big, "cuda", "");
    expect("awq gemm w4g128", model(QFormat::AwqGemm, 4, 128), &big, "cuda", "");
    // formats the CUDA table lacks
    expect("gptq", model(QFormat::Gptq, 4, 128), &big, "cpu",
           "backend auto: CPU, not cuda: linear 'model.layers.0.self_attn.q_proj' is GPTQ 4-bit, group 128, scales F16, which the cuda backend does not run");
    expect("efficientqat", model(QFormat::EqatNative, 2, 64), &big, "cpu", "is EfficientQAT 2-bit");
    expect("awq gemv", model(QFormat::AwqGemv, 4, 128), &big, "cpu", "is AutoAWQ gemv 4-bit");
    expect("awq gemv_fast", model(QFormat::AwqGemvFast, 4, 128), &big, "cpu", "is AutoAWQ gemv_fast 4-bit");
    expect("compressed-tensors", model(QFormat::CtPacked, 4, 128), &big, "cpu", "is compressed-tensors pack-quantized 4-bit");
    {
        ModelSource s = model(QFormat::AwqGemm, 4, 128);
        s.layers[1].up.scales.dtype = DType::BF16;
        expect("awq with bf16 scales", s, &big, "cpu", "linear 'model.layers.1.mlp.up_proj' is AutoAWQ gemm 4-bit, group 128, scales BF16; the cuda backend needs F16 scales");
    }
    {
        ModelSource s = model(QFormat::AwqGemm, 4, 128);
        s.layers[0].v.out = 252; // not a multiple of 8
        expect("awq out % 8", s, &big, "cpu", "linear 'model.layers.0.self_attn.v_proj' [252, 256]");
        ModelSource g = model(QFormat::AwqGemm, 4, 48);
        expect("awq group 48", g, &big, "cpu", "outside the cuda kernels' limits");
    }
    {
        ModelSource s = model(QFormat::AwqGemm, 4, 128);
        s.layers[0].down.has_g_idx = true;
        expect("act-order", s, &big, "cpu", "uses act-order (g_idx)");
    }
    {
        ModelSource s = model();
        s.lm_head.weight.dtype = DType::F32;
        BackendCaps no32 = big;
        no32.f32 = false;
        expect("f32 lm_head on a table without f32", s, &no32, "cpu", "linear 'lm_head' has F32 weights");
    }
    // ops and attention shape
    {
        ModelSource s = model();
        s.cfg.arch = "Qwen3ForCausalLM";
        s.cfg.qk_norm = true;
        expect("qwen3 with head_rmsnorm", s, &big, "cuda", "");
        BackendCaps old = big;
        old.ops.clear();
        expect("qwen3 without head_rmsnorm", s, &old, "cpu", "Qwen3ForCausalLM needs the q/k norm op (head_rmsnorm), which the cuda backend lacks");
        ModelSource h = model();
        h.cfg.head_dim = 512;
        expect("head_dim 512", h, &big, "cpu", "head_dim 512 exceeds the cuda attention kernel's 256");
    }
    // memory: the F16 model holds 2·(4·256·256 + 3·256·512)·2 + 2·1000·256·2 bytes of weights
    {
        const ModelSource s = model();
        const int64_t want = 2 * (4 * 256 * 256 + 3 * 256 * 512) * 2 + 2 * 1000 * 256 * 2 + (2 * 2 + 1) * 256 * 4;
        check(gpu_weight_bytes(s) == want, "gpu_weight_bytes of the f16 model = " + std::to_string(want) + " (got " +
                                               std::to_string(gpu_weight_bytes(s)) + ")");
        const ModelSource q = model(QFormat::AwqGemm, 4, 128);
        const int64_t wq = 2 * ((4 * 256 * 256 + 3 * 256 * 512) / 2 + (4 * 256 * 2 + 2 * 512 * 2 + 256 * 4) * 4) + 2 * 1000 * 256 * 2 + 5 * 256 * 4;
        check(gpu_weight_bytes(q) == wq, "gpu_weight_bytes of the w4g128 model = " + std::to_string(wq) + " (got " +
                                             std::to_string(gpu_weight_bytes(q)) + ")");
        const BackendCaps tight = cuda_like(want + (int64_t(64) << 20) + (want + (int64_t(64) << 20)) / 19 + 4096);
        expect("weights just fit", s, &tight, "cuda", "");
        const BackendCaps small = cuda_like(64 << 20);
        expect("weights do not fit", s, &small, "cpu", "MiB but cuda has 64.0 MiB free (");
        ModelSource tied = model();
        tied.cfg.tie_word_embeddings = true;
        check(gpu_weight_bytes(tied) == want - 1000 * 256 * 2, "a tied lm_head is counted once");
    }
    // no usable GPU; explicit names pass through
    expect("no gpu", model(), nullptr, "cpu", "backend auto: CPU (no usable GPU: no CUDA driver)");
    check(choose_backend("cpu", model(), &big, "").name == "cpu" && choose_backend("cpu", model(), &big, "").note.empty(), "cpu stays cpu");
    check(choose_backend("cuda", model(QFormat::Gptq, 4, 128), &big, "").name == "cuda", "an explicit cuda is not second-guessed");
    check(backend_cannot_run(model(QFormat::Gptq, 4, 128), big).find("GPTQ") != std::string::npos, "backend_cannot_run names the format");
    return shoal_test::finish();
}
