// random-quant.ts — deterministic random data for the quantized-format tests.

/** A seeded linear congruential generator: the same seed, the same numbers on every machine. */
export function seededRandom(seed: number): { rnd: () => number; rint: (n: number) => number } {
  let s = seed >>> 0;
  const rnd = (): number => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
  return { rnd, rint: (n: number) => Math.floor(rnd() * n) };
}

/** g_idx [K]: input k in group ⌊k / G⌋, or (act order) that assignment shuffled with rint. */
export function groupIndex(K: number, G: number, shuffled: boolean, rint: (n: number) => number): Int32Array {
  const gIdx = new Int32Array(K);
  for (let k = 0; k < K; k++) gIdx[k] = Math.floor(k / G);
  if (shuffled) {
    for (let k = K - 1; k > 0; k--) {
      const j = rint(k + 1);
      [gIdx[k], gIdx[j]] = [gIdx[j]!, gIdx[k]!];
    }
  }
  return gIdx;
}
