// @shoal/modelkit — checkpoints as files: safetensors I/O, architectures, quantized
// formats, quantizers, synthetic models, evaluation.
export * from './io/safetensors.js';
export * from './io/safetensors-write.js';
export * from './io/dtypes.js';
export * from './io/hf-folder.js';
export * from './arch/model-shapes.js';
export * from './formats/awq.js';
export * from './formats/gptq.js';
export * from './quant/grid.js';
export * from './quant/rtn.js';
export * from './quant/gptq.js';
export * from './quant/awq/quantize-awq.js';
export * from './synth/gen-model.js';
export * from './eval/ppl.js';
export * from './eval/reference-forward.js';
