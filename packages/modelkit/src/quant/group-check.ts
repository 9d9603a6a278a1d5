// group-check.ts — which linears a group size can quantize, for every
// quantizer and layout. A group that fits no linear is an error naming the
// linears and the groups that would work (a model with nothing quantized is
// never written); a group that fits some is a note naming the ones left in
// floating point.
import { LINEAR_KINDS, linearDims, type LinearKind, type ModelShape } from '../arch/model-shapes.js';
import { ShoalError } from '@shoal/common';

/** Whether a [out, in] linear can be quantized with this group in the layout. */
export type GroupFits = (out: number, inFeatures: number, group: number) => boolean;

export interface GroupCoverage {
  /** linear kinds left unquantized */
  skipped: LinearKind[];
  /** a line for the user when some are skipped, else null */
  note: string | null;
}

const CANDIDATES = [16, 32, 64, 96, 128, 192, 256, 512, 1024];

function describe(shape: ModelShape, kinds: readonly LinearKind[]): string {
  const byShape = new Map<string, string[]>();
  for (const k of kinds) {
    const d = linearDims(shape, k);
    const key = `in_features ${d.in}, out_features ${d.out}`;
    byShape.set(key, [...(byShape.get(key) ?? []), k.split('.')[1]!]);
  }
  return [...byShape].map(([key, ks]) => `${ks.join(', ')} (${key})`).join('; ');
}

/**
 * Checks `group` against every linear of the shape (`layout` names the format
 * in messages); throws SHOAL_ERR_GROUP_SIZE when it fits none.
 */
export function checkGroupCoverage(shape: ModelShape, group: number, fits: GroupFits, layout: string): GroupCoverage {
  const ok = (g: number) => LINEAR_KINDS.filter((k) => {
    const d = linearDims(shape, k);
    return fits(d.out, d.in, g);
  });
  const covered = ok(group);
  const skipped = LINEAR_KINDS.filter((k) => !covered.includes(k));
  const gName = group === -1 ? '-1 (one group per row)' : String(group);
  if (covered.length === 0) {
    const alternatives = CANDIDATES
      .map((g) => ({ g, n: ok(g).length }))
      .filter((a) => a.n > 0)
      .sort((a, b) => b.n - a.n || b.g - a.g)
      .slice(0, 4)
      .map((a) => `${a.g} (${a.n === LINEAR_KINDS.length ? 'all linears' : `${a.n} of ${LINEAR_KINDS.length} kinds`})`);
    throw new ShoalError('SHOAL_ERR_GROUP_SIZE',
      `--group ${gName} fits none of the linears in ${layout}: ${describe(shape, LINEAR_KINDS)}; nothing would be quantized. `
      + (alternatives.length ? `Groups that would work: ${alternatives.join(', ')}.` : 'No usual group size works for this model.'));
  }
  return {
    skipped,
    note: skipped.length
      ? `note: --group ${gName} does not fit ${describe(shape, skipped)} in ${layout}; ${skipped.length === 1 ? 'it stays' : 'they stay'} in floating point (listed in modules_to_not_convert)`
      : null,
  };
}
