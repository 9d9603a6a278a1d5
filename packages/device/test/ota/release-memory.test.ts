// Memory is released (full GC, C heap trimmed) after every model operation, whether it
// succeeded or failed, and a failing release never fails the operation.
import t from 'tap';
import { createLogger } from '@shoal/common';
import { OtaManager, type OtaDeps } from '../../src/ota/manager.js';

function manager(trim: () => void, inStore: boolean): OtaManager {
  const ref = { name: 'm', version: '1' };
  const deps = {
    cfg: {}, store: { has: () => inStore }, loader: {}, scheduler: {},
    active: { ref, pointer: { current: ref, previous: null } },
    log: createLogger('silent'), emit: () => {}, changed: () => {}, releaseMemory: trim,
  } as unknown as OtaDeps;
  return new OtaManager(deps);
}

t.test('releaseMemory runs after each model operation', async (t) => {
  let n = 0;
  const ok = manager(() => { n++; }, true);
  t.same(await ok.activate({ name: 'm', version: '1' }), { active: { name: 'm', version: '1' }, previous: null });
  t.equal(n, 1, 'after a command that succeeded');
  const missing = manager(() => { n++; }, false);
  await t.rejects(missing.activate({ name: 'm', version: '2' }), { code: 'NOT_FOUND' });
  t.equal(n, 2, 'after a command that failed');
  await t.rejects(missing.rollback(), { code: 'NO_PREVIOUS' });
  t.equal(n, 3);
  const broken = manager(() => { throw new Error('no gc here'); }, true);
  t.same(await broken.activate({ name: 'm', version: '1' }), { active: { name: 'm', version: '1' }, previous: null }, 'a failing release does not fail the operation');
});

t.test('fullGc collects without --expose-gc and leaves gc unexposed', async (t) => {
  const { fullGc, releaseMemory } = await import('../../src/model/release-memory.js');
  const ref = new WeakRef({ big: new Array(1000).fill(0) });
  await new Promise((r) => setImmediate(r)); // a WeakRef target lives until the end of the job that made it
  t.equal(fullGc(), true);
  t.equal(ref.deref(), undefined, 'an unreachable object is gone');
  t.equal(typeof (globalThis as { gc?: unknown }).gc, 'undefined', 'gc stays hidden from this context');
  let trimmed = 0;
  releaseMemory(() => { trimmed++; return true; });
  t.equal(trimmed, 1);
});
