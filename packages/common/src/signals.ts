// signals.ts — the long-running commands' shutdown: the first SIGINT/SIGTERM runs stop() once, then exits.
export function onSignals(stop: () => Promise<void>): void {
  let stopping = false;
  const handler = () => {
    if (stopping) return;
    stopping = true;
    stop().then(() => process.exit(0), (e) => { process.stderr.write(`shoal: ${(e as Error).message}\n`); process.exit(1); });
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
}
