// `shoal bench` on the shipped stories260K with default options, as a new user runs it:
// real numbers in the table (not 0.00), and the JSON a script reads.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { CLI_MAIN, STORIES_DIR } from '@shoal/testkit';

t.test('shoal bench on stories260K: every number of the table is real', async (t) => {
  const text = execFileSync(process.execPath, [CLI_MAIN, 'bench', '--model', STORIES_DIR, '--threads', '1'], { encoding: 'utf8', env: { ...process.env, NO_COLOR: '1', FORCE_COLOR: '0' } });
  const row = (name: string) => new RegExp(`${name}\\s*│\\s*([^│]+)│`).exec(text)?.[1]?.trim() ?? '';
  t.match(row('decode'), /^[1-9][\d.]* tok\/s \(128 tokens\)/, `decode: ${row('decode')}`);
  t.match(row('prefill'), /^[1-9][\d.]* tok\/s \(384 tokens\)/, `prefill: ${row('prefill')}`);
  // about 1 MB of weights: shown in a unit where it is not rounded to zero
  t.match(row('weights read / token'), /^[1-9][\d.]* (kB|MB)$/, `weights read / token: ${row('weights read / token')}`);
  t.notMatch(text, /\b0\.00 (GB|tok\/s)/);
});

t.test('shoal bench --json gives the same measures to scripts', async (t) => {
  const r = JSON.parse(execFileSync(process.execPath, [CLI_MAIN, 'bench', '--model', STORIES_DIR, '--threads', '1', '--decode-tokens', '32', '--json'], { encoding: 'utf8' })) as
    { decodeTokens: number; decodeTokensPerSecond: number; prefillTokensPerSecond: number; model: { bytesPerToken: number } };
  t.equal(r.decodeTokens, 32);
  t.ok(r.decodeTokensPerSecond > 0 && r.prefillTokensPerSecond > 0);
  t.ok(r.model.bytesPerToken > 100_000 && r.model.bytesPerToken < 10_000_000, `bytes per token ${r.model.bytesPerToken}`);
});
