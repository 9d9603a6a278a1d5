// `shoal up` as a user runs it: a child process that brings the fleet up, prints
// the rollout, the prompt's answer, the table and what to try next, keeps running,
// and stops every child on Ctrl-C (SIGINT). Real device daemons when the engine
// is built, simulated devices otherwise (--sim).
import t from 'tap';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { tmpDir, waitFor } from '@shoal/testkit/fleet';
import { CLI_MAIN, repoRoot as repo } from '@shoal/testkit';

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
  await waitFor('the demo is up', () => out.includes('Ctrl-C stops') || child.exitCode !== null, 80_000, 100);
  t.equal(child.exitCode, null, `still running\n${out}`);
  t.match(out, /SUCCEEDED/);
  t.match(out, /prompt on robot-1/);
  t.match(out, /robot-3/);
  t.match(out, /fleet deploy tiny@2\.0\.0/);
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
