// arch.cpp — the table of architectures (arch.h). Names are Transformers'
// module paths (modeling_<family>.py); AutoAWQ keeps them, adding
// .qweight/.qzeros/.scales beside or instead of .weight.
#include "arch.h"

#include <cstring>
#include <string>
#include <vector>

namespace shoal {

namespace {

// Llama and the families that share its layout (Mistral, Qwen2).
ArchDesc llama(const char * hf_arch, const char * family) {
    ArchDesc a{};
    a.hf_arch = hf_arch;
    a.family = family;
    a.norm = NormKind::Rms;
    a.gated = true;
    a.act = ActKind::Silu;
    a.pos = PosKind::Rope;
    a.pos_offset = 0;
    a.qkv = QkvKind::Split;
    a.qk_norm = false;
    a.ffn = FfnKind::Dense;
    a.tie_default = false;
    a.embed = "model.embed_tokens.weight";
    a.pos_embed = "";
    a.final_norm = "model.norm";
    a.lm_head = "lm_head";
    a.attn_norm = "model.layers.%d.input_layernorm";
    a.q = "model.layers.%d.self_attn.q_proj";
    a.k = "model.layers.%d.self_attn.k_proj";
    a.v = "model.layers.%d.self_attn.v_proj";
    a.qkv_fused = "";
    a.o = "model.layers.%d.self_attn.o_proj";
    a.q_norm = "";
    a.k_norm = "";
    a.ffn_norm = "model.layers.%d.post_attention_layernorm";
    a.gate = "model.layers.%d.mlp.gate_proj";
    a.up = "model.layers.%d.mlp.up_proj";
    a.down = "model.layers.%d.mlp.down_proj";
    a.router = "";
    a.e_gate = a.e_up = a.e_down = "";
    return a;
}

ArchDesc qwen3(const char * hf_arch, const char * family) {
    ArchDesc a = llama(hf_arch, family);
    a.qk_norm = true; // Qwen3Attention: q_norm / k_norm over head_dim, before RoPE
    a.q_norm = "model.layers.%d.self_attn.q_norm";
    a.k_norm = "model.layers.%d.self_attn.k_norm";
    return a;
}

ArchDesc mixtral() {
    ArchDesc a = llama("MixtralForCausalLM", "mixtral");
    a.ffn = FfnKind::Moe; // MixtralSparseMoeBlock: w1 = gate, w3 = up, w2 = down
    a.gate = a.up = a.down = "";
    a.router = "model.layers.%d.block_sparse_moe.gate";
    a.e_gate = "model.layers.%d.block_sparse_moe.experts.%e.w1";
    a.e_up = "model.layers.%d.block_sparse_moe.experts.%e.w3";
    a.e_down = "model.layers.%d.block_sparse_moe.experts.%e.w2";
    return a;
}

ArchDesc qwen3_moe() {
    ArchDesc a = qwen3("Qwen3MoeForCausalLM", "qwen3_moe");
    a.ffn = FfnKind::Moe; // Qwen3MoeSparseMoeBlock; layers in mlp_only_layers keep the dense MLP
    a.router = "model.layers.%d.mlp.gate";
    a.e_gate = "model.layers.%d.mlp.experts.%e.gate_proj";
    a.e_up = "model.layers.%d.mlp.experts.%e.up_proj";
    a.e_down = "model.layers.%d.mlp.experts.%e.down_proj";
    return a;
}

// OPTForCausalLM: learned positions offset by 2, LayerNorm with bias, ReLU fc1/fc2.
ArchDesc opt() {
    ArchDesc a = llama("OPTForCausalLM", "opt");
    a.norm = NormKind::Layer;
    a.gated = false;
    a.act = ActKind::Relu;
    a.pos = PosKind::Learned;
    a.pos_offset = 2; // OPTLearnedPositionalEmbedding
    a.tie_default = true;
    a.embed = "model.decoder.embed_tokens.weight";
    a.pos_embed = "model.decoder.embed_positions.weight";
    a.final_norm = "model.decoder.final_layer_norm";
    a.attn_norm = "model.decoder.layers.%d.self_attn_layer_norm";
    a.q = "model.decoder.layers.%d.self_attn.q_proj";
    a.k = "model.decoder.layers.%d.self_attn.k_proj";
    a.v = "model.decoder.layers.%d.self_attn.v_proj";
    a.o = "model.decoder.layers.%d.self_attn.out_proj";
    a.ffn_norm = "model.decoder.layers.%d.final_layer_norm";
    a.gate = "";
    a.up = "model.decoder.layers.%d.fc1";
    a.down = "model.decoder.layers.%d.fc2";
    return a;
}

// GPTBigCodeForCausalLM (StarCoder, SantaCoder): fused c_attn, multi-query
// attention, learned positions, LayerNorm, GELU (tanh approximation).
ArchDesc gpt_bigcode() {
    ArchDesc a = llama("GPTBigCodeForCausalLM", "gpt_bigcode");
    a.norm = NormKind::Layer;
    a.gated = false;
    a.act = ActKind::GeluTanh;
    a.pos = PosKind::Learned;
    a.qkv = QkvKind::Fused;
    a.tie_default = true;
    a.embed = "transformer.wte.weight";
    a.pos_embed = "transformer.wpe.weight";
    a.final_norm = "transformer.ln_f";
    a.attn_norm = "transformer.h.%d.ln_1";
    a.q = a.k = a.v = "";
    a.qkv_fused = "transformer.h.%d.attn.c_attn";
    a.o = "transformer.h.%d.attn.c_proj";
    a.ffn_norm = "transformer.h.%d.ln_2";
    a.gate = "";
    a.up = "transformer.h.%d.mlp.c_fc";
    a.down = "transformer.h.%d.mlp.c_proj";
    return a;
}

const std::vector<ArchDesc> & table() {
    static const std::vector<ArchDesc> t = {
        llama("LlamaForCausalLM", "llama"),
        llama("MistralForCausalLM", "mistral"),
        llama("Qwen2ForCausalLM", "qwen2"),
        qwen3("Qwen3ForCausalLM", "qwen3"),
        mixtral(),
        qwen3_moe(),
        opt(),
        gpt_bigcode(),
    };
    return t;
}

} // namespace

const ArchDesc * find_arch(const char * hf_arch) {
    for (const ArchDesc & a : table())
        if (std::strcmp(a.hf_arch, hf_arch) == 0) return &a;
    return nullptr;
}

const char * supported_archs() {
    static const std::string list = [] {
        std::string s;
        for (const ArchDesc & a : table()) s += (s.empty() ? "" : ", ") + std::string(a.hf_arch);
        return s;
    }();
    return list.c_str();
}

} // namespace shoal
