// logits.ts — comparing engine logits with a float64 reference or with another
// engine run (precision 'fast' against 'exact'), and greedy decoding on both sides.
import { loadReferenceModel, referenceForward } from '@shoal/modelkit';
import type { Model } from '@shoal/engine';

export interface LogitsComparison {
  /** max |got − want| / max |want| over the compared rows */
  rel: number;
  abs: number;
  scale: number;
  rows: number;
  /** rows whose argmax is want's */
  argmaxSame: number;
  /** rows whose argmax differs where want's best two logits are within 2·abs (an error of abs can swap them) */
  nearTies: number;
  /** rows whose argmax differs although want separates its best two by more than 2·abs */
  argmaxWrong: number;
}

const argmaxOf = (a: ArrayLike<number>, off: number, n: number): number => {
  let b = 0;
  for (let i = 1; i < n; i++) if (a[off + i]! > a[off + b]!) b = i;
  return b;
};

/** got [rows·V] (rows from `from` on) against want (rows of V values). */
export function compareLogits(got: ArrayLike<number>, want: readonly ArrayLike<number>[], V: number, from = 0): LogitsComparison {
  let abs = 0;
  let scale = 0;
  for (let p = from; p < want.length; p++) {
    for (let i = 0; i < V; i++) {
      abs = Math.max(abs, Math.abs(got[p * V + i]! - want[p]![i]!));
      scale = Math.max(scale, Math.abs(want[p]![i]!));
    }
  }
  let argmaxSame = 0;
  let nearTies = 0;
  let argmaxWrong = 0;
  for (let p = from; p < want.length; p++) {
    const w = argmaxOf(want[p]!, 0, V);
    const g = argmaxOf(got, p * V, V);
    if (w === g) argmaxSame++;
    else if (want[p]![w]! - want[p]![g]! <= 2 * abs) nearTies++;
    else argmaxWrong++;
  }
  return { rel: scale > 0 ? abs / scale : abs, abs, scale, rows: want.length - from, argmaxSame, nearTies, argmaxWrong };
}

/** One line for a test message: "rel 1.2e-7, argmax 12/12". */
export function describeComparison(c: LogitsComparison): string {
  return `rel ${c.rel.toExponential(2)}, argmax ${c.argmaxSame}/${c.rows}${c.nearTies ? ` (+${c.nearTies} near-ties)` : ''}`;
}

/** Greedy continuation of the float64 reference forward (full recompute per step), stopping at EOS. */
export function referenceGreedy(dir: string, prompt: readonly number[], steps: number): number[] {
  const m = loadReferenceModel(dir);
  const eos = m.shape.eosTokenIds;
  const seq = [...prompt];
  const out: number[] = [];
  for (let i = 0; i < steps; i++) {
    const row = referenceForward(m, seq).at(-1)!;
    const tok = argmaxOf(row, 0, row.length);
    if (eos.includes(tok)) break;
    out.push(tok);
    seq.push(tok);
  }
  return out;
}

/** The engine's greedy tokens (temperature 0) after prompt, at most `steps`, EOS not included. */
export async function engineGreedy(model: Model, prompt: readonly number[], steps: number, contextSize = 128): Promise<number[]> {
  const s = model.createSession({ contextSize });
  try {
    const got: number[] = [];
    for await (const c of s.generate([...prompt], { maxTokens: steps, temperature: 0 })) if (c.token >= 0) got.push(c.token);
    return got;
  } finally {
    s.dispose();
  }
}
