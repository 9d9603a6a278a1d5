// shoal.h — the one public C API of the Shoal inference engine.
//
// Objects are opaque. Every call that can fail returns a shoal_status and, where
// it takes an err buffer, writes a message naming the file, tensor or argument.
// No C++ exception crosses this boundary.
#ifndef SHOAL_H
#define SHOAL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// Stable status codes. The Node addon exposes them as Error.code = the enum name
// (for example "SHOAL_ERR_ST_TRUNCATED"). Never renumber; append only.
typedef enum shoal_status {
    SHOAL_OK = 0,
    SHOAL_ERR_IO = 1,                 // file missing, unreadable, mmap failed
    SHOAL_ERR_ST_TRUNCATED = 2,       // safetensors shorter than its 8-byte prefix or its data
    SHOAL_ERR_ST_HEADER_LEN = 3,      // header length points past the end of the file / too large
    SHOAL_ERR_ST_HEADER_JSON = 4,     // header is not valid JSON or not the expected structure
    SHOAL_ERR_ST_OFFSETS = 5,         // data_offsets out of range, overlapping, or not matching shape*dtype
    SHOAL_ERR_ST_DTYPE = 6,           // unknown or unsupported dtype
    SHOAL_ERR_CONFIG = 7,             // config.json / generation_config.json missing or invalid
    SHOAL_ERR_SHAPE = 8,              // tensor shape does not match the config
    SHOAL_ERR_MISSING_TENSOR = 9,     // a tensor the architecture needs is absent
    SHOAL_ERR_UNSUPPORTED_ARCH = 10,  // architectures[] names an unsupported model
    SHOAL_ERR_UNSUPPORTED_QUANT = 11, // quantization_config not supported (bits != 4, method, ...)
    SHOAL_ERR_GROUP_SIZE = 12,        // group size does not divide in_features
    SHOAL_ERR_CONTEXT_FULL = 13,      // the tokens would pass the session's context limit
    SHOAL_ERR_INVALID_ARG = 14,       // bad argument to an API call
    SHOAL_ERR_OOM = 15,               // allocation failed
    SHOAL_ERR_CANCELLED = 16,         // generation cancelled by the caller
    SHOAL_ERR_BACKEND = 17,           // requested backend / ISA not available on this machine
    SHOAL_ERR_INTERNAL = 18,
    SHOAL_ERR_QUANT_METADATA = 19,    // quantized tensors contradict their metadata (g_idx out of range, ...)
} shoal_status;

// Name of a status as a static string, e.g. "SHOAL_ERR_IO".
const char * shoal_status_name(shoal_status s);

typedef struct shoal_model   shoal_model;
typedef struct shoal_session shoal_session;

typedef struct shoal_model_params {
    int          n_threads;  // 0 = number of online cores
    const char * backend;    // "auto" | "cpu" (| "cuda" when built)
    const char * isa;        // CPU kernels: "auto" | "scalar" | "avx2" | "avx512" | "neon" | "neon-dotprod"
    const char * kv_cache;   // KV cache element type of its sessions: "f16" (default; NULL or "" too) |
                             // "f32" | "q8" (int8, one scale per position and KV head; CPU only)
    const char * lm_head;    // output matrix: "auto" (default; NULL or "" too): "q8" for a float matrix of at
                             // least 2^22 weights (vocab × hidden), else (and with precision "exact") as stored
                             // | "q8": a float (f32/f16/bf16) one held as int8, one f16 scale per 128 inputs (per
                             // row when fewer), read with f32 activations (CPU; other backends and quantized
                             // output matrices keep it as stored) | "native": as stored
    const char * expert_cache; // MoE: path of a file for the experts' repacked weights, mapped read-only so
                             // an expert is resident only once routed; built on the first load, reused
                             // while the checkpoint is unchanged. NULL or "": experts repacked in memory
    const char * precision;  // quantized (2/3/4/8-bit) linears: "fast" (default; NULL or "" too): f16 −s·z and
                             // int8 activations per 32-block (docs/engine.md) | "exact": f32 (q − z)·s and f32
                             // activations, for checks against a float64 forward (CPU only: backend "cuda" fails
                             // with SHOAL_ERR_BACKEND, "auto" takes the CPU; lm_head "q8" is refused)
} shoal_model_params;

shoal_model_params shoal_model_default_params(void);

// Loads a Hugging Face model directory (config.json, generation_config.json,
// model.safetensors or model.safetensors.index.json + shards).
shoal_status shoal_model_load(const char * dir, const shoal_model_params * params,
                              shoal_model ** out, char * err, size_t err_len);
void shoal_model_free(shoal_model * model);

typedef struct shoal_model_info {
    const char * arch;          // architectures[0]: "LlamaForCausalLM", "MixtralForCausalLM", "OPTForCausalLM", ...
    const char * quant;         // "none" | "awq-w4g<G>" | "gptq-w<b>g<G>" | ... (docs/lowbit.md)
    const char * dtype;         // storage dtype of unquantized weights: "f32" | "f16" | "bf16"
    const char * backend;       // "cpu" | "cuda"
    const char * isa;           // kernels in use, e.g. "avx512"
    int          n_threads;
    int          vocab_size;
    int          hidden_size;
    int          intermediate_size;
    int          n_layers;
    int          n_heads;
    int          n_kv_heads;
    int          head_dim;
    int          max_position_embeddings;
    int          bos_token_id;  // -1 when absent
    int          n_eos;         // number of entries in eos_token_ids
    int          eos_token_ids[8];
    int          tied_embeddings;
    int          group_size;    // 0 when unquantized
    int64_t      n_params;      // parameters as in the checkpoint (unpacked count)
    int64_t      file_bytes;    // bytes of tensor data in the checkpoint
    int64_t      weight_bytes;  // bytes the backend holds for weights after repacking
    int64_t      bytes_per_token; // weight bytes read for one decode step (batch 1; MoE: the routed experts only)
    const char * kv_cache;      // "f32" | "f16" | "q8"
    int64_t      kv_bytes_per_position; // KV cache bytes per position, all layers (K and V)
    const char * lm_head;       // storage of the output matrix as the backend holds it: "q8" | "f16" | "q4" | ...
    double       load_seconds;
    double       repack_seconds;
    const char * backend_note;  // why `auto` chose the CPU over a GPU ("" otherwise)
    const char * family;        // "llama" | "mistral" | "qwen2" | "qwen3" | "mixtral" | "qwen3_moe" | "opt" | "gpt_bigcode"
    int          sliding_window; // attention window in positions (0: full attention)
    int          n_experts;     // MoE experts per layer (0: dense)
    int          n_experts_used; // experts routed per token
    int64_t      n_active_params; // parameters used per token (MoE: top_k of E experts)
    const char * expert_cache;  // "off" | "created" | "reused" | "rebuilt (<why>)" | "off: <why it could not be used>"
    const char * precision;     // arithmetic of the quantized linears: "fast" | "exact"
} shoal_model_info;

void shoal_model_get_info(const shoal_model * model, shoal_model_info * info);

// A session is one conversation with its own KV cache of n_ctx positions.
shoal_status shoal_session_new(shoal_model * model, int n_ctx, shoal_session ** out,
                               char * err, size_t err_len);
void shoal_session_free(shoal_session * s);
int  shoal_session_n_past(const shoal_session * s);
int  shoal_session_n_ctx(const shoal_session * s);
// Drops positions >= n_keep from the KV cache (0 clears it). SHOAL_ERR_INVALID_ARG when a
// sliding-window cache (a ring bounded by the window) has already overwritten positions the
// next token would attend to: keep n_keep ≥ n_past − (ring slots − window + 1), or clear with 0.
shoal_status shoal_session_truncate(shoal_session * s, int n_keep);

// Feeds n tokens at positions n_past.. (prefill in chunks internally).
// logits: NULL, or room for vocab floats (logits of the last token), or, when
// all_logits != 0, room for n * vocab floats (one row per token).
shoal_status shoal_session_eval(shoal_session * s, const int32_t * tokens, int n,
                                float * logits, int all_logits, char * err, size_t err_len);

// Logits of the last evaluated token (vocab floats), NULL before the first eval.
const float * shoal_session_logits(const shoal_session * s);

typedef struct shoal_sampling_params {
    float    temperature;    // 0 = greedy
    int      top_k;          // 0 = off
    float    top_p;          // 1 = off
    float    min_p;          // 0 = off
    float    repeat_penalty; // 1 = off
    int      repeat_last_n;  // window for the penalty; -1 = whole history
    uint64_t seed;
} shoal_sampling_params;

shoal_sampling_params shoal_sampling_default_params(void);

typedef struct shoal_sampler shoal_sampler;
shoal_sampler * shoal_sampler_new(const shoal_sampling_params * p);
void shoal_sampler_free(shoal_sampler * smp);
// Samples from logits (vocab floats; not modified). history: tokens seen so far
// (for the repetition penalty), may be NULL when n_history == 0.
int32_t shoal_sampler_sample(shoal_sampler * smp, const float * logits, int vocab,
                             const int32_t * history, int n_history);

// OpenAI-style controls for one draw, on top of shoal_sampling_params. Order:
// repetition penalty -> presence/frequency penalties -> logit bias -> allowed
// mask -> top-k / top-p / min-p / temperature -> draw (greedy: argmax of what
// is left). Logprobs are of the model itself: log-softmax of the raw logits,
// before any penalty, bias, mask or temperature (as OpenAI reports them).
#define SHOAL_MAX_TOP_LOGPROBS 20
typedef struct shoal_sample_controls {
    float           presence_penalty;  // subtracted once from each token in `counted`
    float           frequency_penalty; // subtracted per occurrence in `counted`
    const int32_t * counted;           // tokens the two penalties count (the generated ones), may be NULL
    int             n_counted;
    const int32_t * bias_ids;          // logit_bias: added to the logits of these ids
    const float *   bias_values;
    int             n_bias;
    const uint32_t * allowed;          // NULL, or a bit per token (bit t%32 of word t/32): only set bits may be drawn
    int             n_top_logprobs;    // 0..SHOAL_MAX_TOP_LOGPROBS most likely tokens to report
} shoal_sample_controls;

typedef struct shoal_token_logprob {
    int32_t token;
    float   logprob;
} shoal_token_logprob;

typedef struct shoal_sample_result {
    int32_t             token;    // the drawn token
    float               logprob;  // its log-softmax under the raw logits
    int                 n_top;    // entries filled in top, most likely first (ties: lower id first)
    shoal_token_logprob top[SHOAL_MAX_TOP_LOGPROBS];
} shoal_sample_result;

shoal_sample_controls shoal_sample_controls_default(void);

// Draws one token with controls. SHOAL_ERR_INVALID_ARG for a bias id outside
// the vocabulary, n_top_logprobs out of range, or a mask that allows nothing.
shoal_status shoal_sampler_sample_ex(shoal_sampler * smp, const float * logits, int vocab, const int32_t * history,
                                     int n_history, const shoal_sample_controls * ctl, shoal_sample_result * out,
                                     char * err, size_t err_len);

// One decode step for hosts that drive generation themselves (constrained
// decoding, logprobs, stop strings): evaluates `tokens` (n may be 0 to draw
// again from the last logits), then draws from the new last logits.
// SHOAL_ERR_CONTEXT_FULL when the tokens do not fit.
shoal_status shoal_session_step(shoal_session * s, const int32_t * tokens, int n, shoal_sampler * smp,
                                const int32_t * history, int n_history, const shoal_sample_controls * ctl,
                                shoal_sample_result * out, char * err, size_t err_len);

// Callback for shoal_generate: return non-zero to stop.
typedef int (*shoal_token_cb)(int32_t token, void * user);

typedef struct shoal_generate_result {
    int    n_prompt;
    int    n_generated;
    int    stop_reason;     // 0 = eos, 1 = max_tokens, 2 = callback stopped, 3 = cancelled, 4 = context full
    double prefill_seconds; // time to evaluate the prompt (time to first token minus sampling)
    double decode_seconds;
} shoal_generate_result;

// Evaluates prompt, then samples up to max_tokens, calling cb for each token
// (EOS tokens are not passed). cancel: polled between steps when non-NULL.
shoal_status shoal_generate(shoal_session * s, const int32_t * prompt, int n_prompt,
                            const shoal_sampling_params * sp, int max_tokens,
                            const int32_t * stop_ids, int n_stop,
                            shoal_token_cb cb, void * user, volatile int * cancel,
                            shoal_generate_result * result, char * err, size_t err_len);

// Best-of-reps memory read bandwidth in GB/s (10^9 bytes/s) over a buffer of
// `bytes` (use several times the last-level cache) with n_threads readers.
double shoal_measure_read_bandwidth(int n_threads, size_t bytes, int reps);

// CPU feature report, e.g. "avx2 fma f16c avx512f" (static string).
const char * shoal_cpu_features(void);

#ifdef __cplusplus
}
#endif
#endif // SHOAL_H
