// `shoal up` (= `make demo`) as a user runs it: a child process that quantizes the
// shipped stories260K to INT4 with AWQ, brings the fleet up, prints the rollout, a
// story from every device through MQTT and through its OpenAI API, the table and
// what to try next, keeps running, and stops every child on Ctrl-C (SIGINT).
// Every printed story must be exactly the engine's own greedy continuation of its
// prompt on the quantized model the demo wrote (so real text, not noise). Real
// device daemons when the engine is built, simulated devices otherwise (--sim).
import t from 'tap';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { tmpDir, waitFor } from '@shoal/testkit/fleet';
import { CLI_MAIN, engine, repoRoot as repo, storiesPath } from '@shoal/testkit';
import { STORY_PROMPTS, STORY_TOKENS } from '@shoal/devkit';

const CLI = CLI_MAIN;
const engineBuilt = ['Release', 'Debug'].some((b) => fs.existsSync(path.join(repo, 'native', 'build', b, 'shoal.node')));

t.test(`shoal up (${engineBuilt ? 'device daemons' : 'simulated devices'}) runs until SIGINT`, async (t) => {
  const dir = tmpDir('shoal-up-');
  const conn = path.join(dir, 'connection.json');
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const child = spawn(process.execPath, [CLI, 'up', '--devices', '3', '--dir', path.join(dir, 'up'), ...(engineBuilt ? [] : ['--sim'])], {
    env: { ...process.env, SHOAL_CONNECTION: conn }, stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (d) => { out += d; });
  child.stderr.on('data', (d) => { out += d; });
  const exited = new Promise<number | null>((res) => child.once('exit', (c) => res(c)));
  t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL'); });
  await waitFor('the demo is up', () => out.includes('Ctrl-C stops') || child.exitCode !== null, 240_000, 100); // quantizing, rolling out and six stories: ~25 s idle, minutes on a loaded 2-core machine
  t.equal(child.exitCode, null, `still running\n${out}`);
  t.match(out, /SUCCEEDED/);
  if (engineBuilt) t.match(out, /robot-1 via MQTT \(controller -> broker -> device\)/);
  t.match(out, /robot-3/);
  t.match(out, /fleet deploy stories260K@2\.0\.0/);
  if (engineBuilt) {
    t.match(out, /stories260K \(models\/stories260K, pretrained, F32\) → INT4 AWQ w4 g32: 35 linears/);
    const curl = /curl -s (http:\/\/127\.0\.0\.1:\d+)\/v1\/completions/.exec(out);
    t.ok(curl, 'a curl to robot-1\'s OpenAI API is printed');
    // the printed stories are the engine's greedy output on the model the demo quantized
    const model = await engine!.loadModel(path.join(dir, 'up', 'stories260K-awq-w4g32'), { threads: 1 });
    t.teardown(() => model.dispose());
    const greedy = async (prompt: string, maxTokens = STORY_TOKENS) => {
      const s = model.createSession({ contextSize: 256 });
      let text = '';
      for await (const c of s.generate(prompt, { temperature: 0, maxTokens })) text += c.text;
      s.dispose();
      return prompt + text;
    };
    // and INT4 keeps the pretrained model's story: the first sentence of the F32 float64 reference
    const ref = JSON.parse(fs.readFileSync(storiesPath('reference_greedy.json'), 'utf8')) as { cases: { prompt: string; text: string }[] };
    const f32 = ref.cases.find((c) => c.prompt === 'Once upon a time')!.text;
    t.ok(out.includes('  ' + f32.slice(0, f32.indexOf('.') + 1)), `the INT4 story starts as the F32 model's: "${f32.slice(0, f32.indexOf('.') + 1)}"`);
    for (let i = 0; i < 6; i++) {
      const prompt = STORY_PROMPTS[i]!;
      const want = await greedy(prompt);
      t.ok(want.split(/\s+/).length > 40 && /[a-z]+ [a-z]+ [a-z]+/.test(want), `"${prompt}": the model writes words`);
      const printed = '  ' + want.replace(/\n/g, '\n  ') + '\n';
      t.ok(out.includes(printed), `robot-${Math.floor(i / 2) + 1} ${i % 2 ? 'via its OpenAI API' : 'via MQTT'}: "${prompt}" printed as the engine's greedy story\n${printed}`);
    }
    // the printed curl works against the running device
    const res = await fetch(`${curl![1]}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: 'The little cat', max_tokens: 32, temperature: 0 }) });
    const body = await res.json() as { choices: { text: string }[] };
    t.equal('The little cat' + body.choices[0]!.text, await greedy('The little cat', 32), 'the curl hint answers with the engine\'s greedy story');
  }
  const c = JSON.parse(fs.readFileSync(conn, 'utf8')) as { api: string; token: string };
  t.equal(fs.statSync(conn).mode & 0o777, 0o600, 'connection file is private');
  // the printed next step works against the running fleet
  const ls = spawn(process.execPath, [CLI, 'fleet', 'ls', '--json'], { env: { ...process.env, SHOAL_CONNECTION: conn } });
  let lsOut = '';
  ls.stdout.on('data', (d) => { lsOut += d; });
  await new Promise((res) => ls.once('exit', res));
  const devices = JSON.parse(lsOut) as { id: string; online: boolean; model: { version: string } }[];
  t.same(devices.map((d) => [d.id, d.online, d.model?.version]), [['robot-1', true, '1.0.0'], ['robot-2', true, '1.0.0'], ['robot-3', true, '1.0.0']]);
  t.ok(c.api.startsWith('http://127.0.0.1:'));
  child.kill('SIGINT');
  t.equal(await exited, 0, 'exits 0 on SIGINT');
  t.match(out, /stopped: broker, controller and all devices/);
  t.notOk(fs.existsSync(conn), 'connection file removed');
  if (engineBuilt) {
    // every daemon logged a clean stop
    for (let i = 1; i <= 3; i++) {
      const log = fs.readFileSync(path.join(dir, 'up', 'devices', `robot-${i}`, 'daemon.log'), 'utf8');
      t.match(log, /"msg":"stopped"/, `robot-${i} stopped cleanly`);
    }
  }
});
