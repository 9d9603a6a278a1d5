// awq/fallback.ts — AWQ never worse than RTN, layer by layer: the AWQ layer
// (folded scales, clipped, quantized) and the RTN layer (original weights,
// quantized) are both run on held-out calibration tokens that the searches did
// not see, against the FP layer; the one with the lower output MSE is written.
// The FP function of the AWQ layer equals the original's (folding is exact), so
// both are compared against the same FP output.
import type { LayerWeights } from './layer.js';
import { mse } from './ops.js';

export interface FallbackReport {
  /** which quantized layer was kept */
  choice: 'awq' | 'rtn';
  /** output MSE vs the FP layer on the held-out tokens */
  awqMse: number;
  rtnMse: number;
}

export function cloneLayer(lw: LayerWeights): LayerWeights {
  const w = {} as LayerWeights['w'];
  for (const [k, v] of Object.entries(lw.w)) w[k as keyof LayerWeights['w']] = v.slice();
  const bias: LayerWeights['bias'] = {};
  for (const [k, v] of Object.entries(lw.bias)) bias[k as keyof LayerWeights['bias']] = v!.slice();
  return { attnNorm: lw.attnNorm.slice(), ffnNorm: lw.ffnNorm.slice(), w, bias };
}

/**
 * run(lw, x) → the layer's output on x; qdq(lw) → lw with its quantized linears
 * replaced by their quantize-dequantize weights. Returns the decision and the
 * chosen quantized layer's output on the held-out tokens and the FP layer's (one of them is the next layer's input).
 */
export async function awqOrRtn(run: (lw: LayerWeights, x: Float32Array) => Promise<Float32Array>, qdq: (lw: LayerWeights) => Promise<LayerWeights>,
  original: LayerWeights, awq: LayerWeights, xHeld: Float32Array): Promise<{ report: FallbackReport; out: Float32Array; fp: Float32Array }> {
  const fp = await run(original, xHeld);
  const a = await run(await qdq(awq), xHeld);
  const r = await run(await qdq(original), xHeld);
  const awqMse = mse(a, fp);
  const rtnMse = mse(r, fp);
  // ties (e.g. every α = 0 and no clip) keep AWQ: the same weights
  return awqMse <= rtnMse ? { report: { choice: 'awq', awqMse, rtnMse }, out: a, fp } : { report: { choice: 'rtn', awqMse, rtnMse }, out: r, fp };
}
