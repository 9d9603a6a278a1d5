import t from 'tap';
import { StopMatcher } from '../src/stop-matcher.js';

/** Feeds pieces; returns everything emitted and whether it stopped. */
function run(stops: string[], pieces: string[]): { out: string; emitted: string[]; stopped: boolean } {
  const m = new StopMatcher(stops);
  const emitted: string[] = [];
  let stopped = false;
  for (const p of pieces) {
    const r = m.push(p);
    emitted.push(r.text);
    if (r.stopped) { stopped = true; break; }
  }
  if (!stopped) emitted.push(m.flush());
  return { out: emitted.join(''), emitted, stopped };
}

t.test('a stop string inside one piece', async (t) => {
  t.same(run(['END'], ['abc', 'dENDef']), { out: 'abcd', emitted: ['abc', 'd'], stopped: true });
});

t.test('across token boundaries, never emitting a partial match', async (t) => {
  const r = run(['\n\nUser:'], ['Hi', '.\n', '\nUs', 'er', ':', ' more']);
  t.equal(r.out, 'Hi.');
  t.ok(r.stopped);
  t.same(r.emitted, ['Hi', '.', '', '', '']);
  for (const e of r.emitted) t.notMatch(e, /\n/, 'no piece of the stop string streamed');
});

t.test('a false start is released once it cannot match', async (t) => {
  const r = run(['STOP'], ['ST', 'OX', 'Y']);
  t.same(r.emitted, ['', 'STOX', 'Y', '']);
  t.notOk(r.stopped);
});

t.test('held text is flushed at the end', async (t) => {
  t.same(run(['###'], ['a#', '#']), { out: 'a##', emitted: ['a', '', '##'], stopped: false });
});

t.test('earliest of several stops; up to 4', async (t) => {
  t.equal(run(['c', 'ab', 'xyz', 'q'], ['zzab', 'c']).out, 'zz');
});

t.test('every split of a text gives the same result as a whole-text search', async (t) => {
  const text = 'one two <|end|> three';
  const stops = ['<|end|>', 'thr'];
  for (let i = 0; i <= text.length; i++)
    for (let j = i; j <= text.length; j++) {
      const r = run(stops, [text.slice(0, i), text.slice(i, j), text.slice(j)]);
      if (r.out !== 'one two ' || !r.stopped) t.fail(`split at ${i},${j}: ${JSON.stringify(r)}`);
    }
  t.pass('all splits');
});

t.test('no stops: pass-through', async (t) => {
  t.same(run([], ['a', 'b']), { out: 'ab', emitted: ['a', 'b', ''], stopped: false });
});
