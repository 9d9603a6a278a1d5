// quant/seeded-random.ts — the small seeded generator (mulberry32) behind the
// quantizers' reproducible draws: the AWQ search-block subsample and the
// calibration shuffle of the perplexity table. Not for anything that needs
// statistical quality; it only has to give the same draw for the same seed.

/** A generator of floats in [0, 1) from a 32-bit seed. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
