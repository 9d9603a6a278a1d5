// The α grid walks of the AWQ scale search (search.ts walkAlphaGrid): the
// coarse-fine walk picks the full grid's α for every unimodal loss curve with
// at most 11 evaluations, and can differ from it only on a curve with several
// minima.
import t from 'tap';
import { walkAlphaGrid } from '../../../src/quant/awq/search.js';
import { N_GRID } from '../../../src/quant/awq/layer.js';
import { mulberry32 } from '../../../src/quant/seeded-random.js';

async function walk(mode: 'grid' | 'coarse-fine', curve: number[]) {
  const seen: number[] = [];
  const r = await walkAlphaGrid(mode, async (i) => {
    seen.push(i);
    return curve[i]!;
  });
  return { ...r, seen };
}

t.test('grid: every α once, in order; the first of equal minima', async (t) => {
  const curve = [5, 4, 3, 2, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17];
  const r = await walk('grid', curve);
  t.same(r.seen, Array.from({ length: N_GRID }, (_, i) => i));
  t.equal(r.best, 3);
  t.equal(r.loss, 2);
});

t.test('coarse-fine: the same α as the grid on 2,000 random unimodal curves, ≤ 11 evaluations', async (t) => {
  const rnd = mulberry32(7);
  let same = 0;
  let maxEvals = 0;
  let repeats = 0;
  for (let trial = 0; trial < 2000; trial++) {
    // strictly decreasing to a random minimum, then strictly increasing, random slopes (some plateaus near zero)
    const m = Math.floor(rnd() * N_GRID);
    const curve = new Array<number>(N_GRID);
    curve[m] = rnd();
    for (let i = m - 1; i >= 0; i--) curve[i] = curve[i + 1]! + 1e-9 + rnd() * rnd();
    for (let i = m + 1; i < N_GRID; i++) curve[i] = curve[i - 1]! + 1e-9 + rnd() * rnd();
    const g = await walk('grid', curve);
    const c = await walk('coarse-fine', curve);
    if (g.best === c.best && g.loss === c.loss) same++;
    maxEvals = Math.max(maxEvals, c.seen.length);
    repeats += c.seen.length - new Set(c.seen).size;
  }
  t.equal(repeats, 0, 'no α evaluated twice');
  t.equal(same, 2000, 'the same α in every trial');
  t.ok(maxEvals <= 11, `at most 11 evaluations (${maxEvals})`);
});

t.test('coarse-fine: the first evaluations are the coarse points, then only neighbours of the best', async (t) => {
  const curve = Array.from({ length: N_GRID }, (_, i) => Math.abs(i - 17));
  const c = await walk('coarse-fine', curve);
  t.same(c.seen, [0, 4, 8, 12, 16, 13, 14, 15, 17, 18, 19]);
  t.equal(c.best, 17);
  const atZero = await walk('coarse-fine', Array.from({ length: N_GRID }, (_, i) => i));
  t.same(atZero.seen, [0, 4, 8, 12, 16, 1, 2, 3]);
  t.equal(atZero.best, 0);
});

t.test('coarse-fine can miss a narrow minimum away from the best coarse point (several minima)', async (t) => {
  const curve = Array.from({ length: N_GRID }, (_, i) => (i === 10 ? 0 : 1 + Math.abs(i - 4) / 100));
  t.equal((await walk('grid', curve)).best, 10);
  t.equal((await walk('coarse-fine', curve)).best, 4);
});

t.test('NaN losses are never picked; all NaN → −1', async (t) => {
  const curve = Array.from({ length: N_GRID }, (_, i) => (i % 2 ? NaN : 20 - i));
  t.equal((await walk('grid', curve)).best, 18);
  const nan = await walk('coarse-fine', new Array<number>(N_GRID).fill(NaN));
  t.equal(nan.best, -1);
  t.equal(nan.seen.length, 5, 'no fine pass without a finite coarse loss');
});
