// Gives memory back to the system after a model operation (a deployment, an activation, a
// rollback). A deployment leaves tens of MB of garbage: downloaded chunks and hashing buffers
// are ArrayBuffers whose backing stores live in the C heap, and V8 only collects for them once
// external memory has grown by about 64 MB, so the daemon's RSS would carry them (and glibc
// would keep the pages even after they are freed). Once per model operation, a full
// collection and then malloc_trim return them: RSS after a deployment is the live memory
// (docs/reliability.md, memory). A full collection of the daemon's heap takes milliseconds.
import v8 from 'node:v8';
import vm from 'node:vm';

let gc: (() => void) | null | undefined;

/** A full V8 collection; false when the runtime does not allow one. */
export function fullGc(): boolean {
  if (gc === undefined) {
    const exposed = (globalThis as { gc?: () => void }).gc;
    if (typeof exposed === 'function') gc = exposed;
    else {
      // the flag applies to contexts created after it is set: take gc from a fresh one, then
      // turn the flag off again so no other context sees it
      try {
        v8.setFlagsFromString('--expose-gc');
        gc = vm.runInNewContext('gc') as () => void;
      } catch {
        gc = null;
      } finally {
        v8.setFlagsFromString('--no-expose-gc');
      }
    }
  }
  if (!gc) return false;
  gc();
  return true;
}

/** Full collection, then the C heap's free pages back to the system (trim: engine.trimNativeHeap). */
export function releaseMemory(trim?: () => boolean): void {
  fullGc();
  trim?.();
}
