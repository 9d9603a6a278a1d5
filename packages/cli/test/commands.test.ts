// The cli's command table against the packages' own declarations, and the lazy
// loading it exists for: `shoal --help` resolves no package module.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Command, Help } from 'commander';
import { CLI_MAIN } from '@shoal/testkit';
import { COMMAND_GROUPS, groupOf } from '../src/commands.js';

t.test('every summary matches the command its package declares', async (t) => {
  const help = new Help();
  for (const g of COMMAND_GROUPS) {
    const program = new Command();
    (await g.load())(program);
    const real = program.commands.map((c) => ({ name: c.name(), term: help.subcommandTerm(c), summary: c.description() }));
    t.same(real, g.commands, `${g.pkg}: names, terms and summaries`);
    for (const c of g.commands) t.equal(groupOf(c.name), g, `${c.name} dispatches to ${g.pkg}`);
  }
});

/** Runs the built shoal with a resolve hook that records every ES module URL it loads. */
function modulesLoaded(args: string[]): { urls: string[]; stdout: string; status: number | null } {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'shoal-cli-'));
  const log = path.join(dir, 'urls.txt');
  const hooks = `import { appendFileSync } from 'node:fs';
export async function resolve(s, c, next) { const r = await next(s, c); appendFileSync(${JSON.stringify(log)}, r.url + '\\n'); return r; }`;
  const register = `import { register } from 'node:module'; register(${JSON.stringify(`data:text/javascript,${encodeURIComponent(hooks)}`)});`;
  try {
    const r = spawnSync(process.execPath, ['--import', `data:text/javascript,${encodeURIComponent(register)}`, CLI_MAIN, ...args], { encoding: 'utf8' });
    let urls: string[] = [];
    try { urls = readFileSync(log, 'utf8').trim().split('\n'); } catch { /* nothing resolved */ }
    return { urls, stdout: r.stdout, status: r.status };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

t.test('shoal --help loads no package: no addon, SQLite or MQTT', async (t) => {
  const r = modulesLoaded(['--help']);
  t.equal(r.status, 0);
  for (const c of COMMAND_GROUPS.flatMap((g) => g.commands)) t.match(r.stdout, `  ${c.term} `, `lists ${c.name}`);
  t.ok(r.urls.some((u) => u.includes('commander')), 'the hook saw the modules');
  const heavy = r.urls.filter((u) => /packages\/(engine|modelkit|device|controller|devkit)\/|better-sqlite3|\/mqtt\/|systeminformation|aedes|@huggingface/.test(u));
  t.same(heavy, [], 'nothing beyond commander and the cli');
});

t.test('a command loads its own package only', async (t) => {
  const r = modulesLoaded(['keygen', '--help']);
  t.equal(r.status, 0);
  t.match(r.stdout, '--out <dir>');
  t.ok(r.urls.some((u) => u.includes('packages/controller/')), 'the controller package is loaded');
  t.same(r.urls.filter((u) => /packages\/(engine|modelkit|device|devkit)\//.test(u)), [], 'no other command package');
});
