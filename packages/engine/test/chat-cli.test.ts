// `shoal run --chat`: the history is trimmed (system prompt kept, oldest turns
// dropped, and the user is told) instead of overflowing the context, and the
// KV cache is reused between turns.
import t from 'tap';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { CLI_MAIN, sharedPath, skipUnlessShared } from '@shoal/testkit';
import { HfModelTokenizer } from '../src/tokenizer.js';
import { fitHistory } from '../src/commands.js';
import type { ChatMessage } from '../src/types.js';

const STORIES = ['models', 'stories260K'] as const;

t.test('fitHistory keeps the system prompt and drops whole exchanges', { skip: skipUnlessShared(...STORIES) }, async (t) => {
  const tok = (await HfModelTokenizer.load(sharedPath(...STORIES), { bos: 1, eos: [2] }))!;
  const history: ChatMessage[] = [{ role: 'system', content: 'Tell stories.' }];
  for (let i = 0; i < 6; i++) history.push({ role: 'user', content: `Once upon a time there was a cat number ${i}.` }, { role: 'assistant', content: 'The cat was happy and played all day long.' });
  history.push({ role: 'user', content: 'What happened next?' });
  const { ids, dropped } = fitHistory(tok, history, 96, 16);
  t.ok(ids && ids.length + 16 <= 96, `fits: ${ids?.length} + 16 <= 96`);
  t.ok(dropped >= 2 && dropped % 2 === 0, `${dropped} messages dropped, whole exchanges`);
  t.equal(history[0]!.role, 'system');
  t.equal(history[1]!.role, 'user');
  t.equal(history[history.length - 1]!.content, 'What happened next?');
  const none = fitHistory(tok, [{ role: 'user', content: 'word '.repeat(200) }], 64, 16);
  t.equal(none.ids, null, 'a message that cannot fit is reported, not sent');
});

t.test('shoal run --chat survives a long conversation on a small context', { skip: skipUnlessShared(...STORIES) || (existsSync(CLI_MAIN) ? false : 'CLI not built'), timeout: 60_000 }, async (t) => {
  const p = spawn(process.execPath, [CLI_MAIN, 'run', '--model', sharedPath(...STORIES), '--chat', '--system', 'Tell stories.', '--ctx', '96', '--max-tokens', '16', '--threads', '1'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let err = '';
  let out = '';
  p.stderr.on('data', (d: Buffer) => { err += d.toString(); });
  p.stdout.on('data', (d: Buffer) => { out += d.toString(); });
  const turns = Array.from({ length: 8 }, (_, i) => `Once upon a time a little dog number ${i} ran`);
  p.stdin.write(turns.join('\n') + '\n/exit\n');
  const code = await new Promise<number | null>((r) => p.on('close', r));
  t.equal(code, 0, `exit 0 (stderr: ${err.slice(-300)})`);
  t.match(err, /history trimmed/, 'the user is told the history was trimmed');
  t.equal((err.match(/decode \d+ tokens/g) ?? []).length, 8, 'all 8 turns answered');
  t.ok(out.length > 0);
});
