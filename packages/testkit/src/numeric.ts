// numeric.ts — small array helpers shared by the numeric tests (engine ops, quantizers).
import { Rng } from '@shoal/modelkit';

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

export function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!));
  return m;
}

/** n uniform values in [-0.5, 0.5) from a seeded generator. */
export function rand(n: number, seed: number): Float32Array {
  const rng = new Rng(seed);
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = rng.nextU32() / 2 ** 32 - 0.5;
  return a;
}
