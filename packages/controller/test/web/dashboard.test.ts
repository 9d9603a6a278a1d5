// The fleet dashboard in a real browser (Debian chromium, driven by playwright-core)
// against a real `shoal up` child process: device daemons when the engine is built,
// simulated devices otherwise. Covers the fleet table, live plots, a streamed
// prompt, a rollout started from the page, pause holding back the next wave, and
// 1,000 simulated devices (`shoal sim`) with update latency and frame time measured
// in the page. Screenshots and measurements go to packages/controller/dist/test-artifacts/web (or
// $SHOAL_TEST_ARTIFACTS); SHOAL_UPDATE_DOCS_IMG=1 also copies the screenshots to docs/img.
import t, { type Test } from 'tap';
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { CLI_MAIN, findSystemBinary, repoRoot as repo, skipUnlessInstalled } from '@shoal/testkit';

// functions passed to page.evaluate/waitForFunction run in the browser; this Node
// program is compiled without DOM types, so the few browser globals are declared here
declare const document: any;
declare const window: any;
declare const MutationObserver: any;
type HTMLElement = any;
type HTMLProgressElement = any;

const CLI = CLI_MAIN;
const CHROMIUM = process.env.SHOAL_CHROMIUM ?? findSystemBinary('chromium');
const WEB_INDEX = path.join(repo, 'packages', 'controller', 'dist', 'web', 'index.html');
const ARTIFACTS = process.env.SHOAL_TEST_ARTIFACTS ?? path.join(repo, 'packages', 'controller', 'dist', 'test-artifacts', 'web');
const engineBuilt = ['Release', 'Debug'].some((b) => fs.existsSync(path.join(repo, 'native', 'build', b, 'shoal.node')));
const SIM_DEVICES = Number(process.env.SHOAL_WEB_SIM_DEVICES ?? 1000);
const run = promisify(execFile);

const skip = !CHROMIUM || !fs.existsSync(CHROMIUM)
  ? (process.env.SHOAL_CHROMIUM ? `chromium not found at ${process.env.SHOAL_CHROMIUM} (SHOAL_CHROMIUM)` : skipUnlessInstalled('chromium', 'the dashboard browser test'))
  : !fs.existsSync(WEB_INDEX) ? `the dashboard is not built (${WEB_INDEX} missing): run \`make web\`` : null;

if (skip) {
  t.comment(`skipping the dashboard browser tests: ${skip}`);
  t.pass(`skipped: ${skip}`, { skip });
} else {
  t.test(`dashboard in chromium against \`shoal up\` (${engineBuilt ? 'device daemons' : 'simulated devices'})`, (tt) => main(tt));
}

async function waitOut(what: string, get: () => string, re: RegExp, child: ChildProcess, ms: number): Promise<RegExpExecArray> {
  const end = Date.now() + ms;
  for (;;) {
    const m = re.exec(get());
    if (m) return m;
    if (child.exitCode !== null) throw new Error(`${what}: process exited with ${child.exitCode}\n${get()}`);
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}\n${get()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

// The two widths the layout is checked at: a laptop and a tablet in portrait.
const WIDE = { width: 1280, height: 800 };
const NARROW = { width: 768, height: 1024 };

/**
 * Layout problems on the current page, measured in the browser: the page scrolling
 * sideways, a fleet model cell cut (ellipsis) or outside the viewport, a plot card
 * outside the viewport, a plot wider than its card, a y-axis narrower than its labels.
 */
async function layoutProblems(page: import('playwright-core').Page): Promise<string[]> {
  return page.evaluate(() => {
    const out: string[] = [];
    const W = window.innerWidth;
    if (document.documentElement.scrollWidth > W) out.push(`the page scrolls sideways (${document.documentElement.scrollWidth} > ${W})`);
    const inView = (r: { left: number; right: number }) => r.left >= 0 && r.right <= W + 0.5;
    for (const td of document.querySelectorAll('tr[data-device-id] td[data-col="model"]') as any) {
      const r = td.getBoundingClientRect();
      if (td.scrollWidth > td.clientWidth) out.push(`model cell "${td.textContent}" is cut (${td.scrollWidth} > ${td.clientWidth} px)`);
      if (!inView(r)) out.push(`model cell "${td.textContent}" is outside the viewport (${Math.round(r.left)}..${Math.round(r.right)} of ${W})`);
    }
    for (const fig of document.querySelectorAll('figure.chart') as any) {
      const r = fig.getBoundingClientRect();
      if (!inView(r)) out.push(`${fig.id} is outside the viewport (${Math.round(r.left)}..${Math.round(r.right)} of ${W})`);
      const plot = fig.querySelector('.uplot');
      if (plot && plot.getBoundingClientRect().right > r.right + 0.5) out.push(`${fig.id}: the plot is wider than its card`);
      const label = Number(fig.dataset.ylabelPx), axis = Number(fig.dataset.yaxisPx);
      if (plot && !(label > 0 && axis >= label + 15)) out.push(`${fig.id}: y-axis labels ${label} px do not fit the ${axis} px axis`);
    }
    return out;
  });
}

async function main(t: Test): Promise<void> {
  const { chromium } = await import('playwright-core');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'shoal-web-'));
  const conn = path.join(dir, 'connection.json');
  const env = { ...process.env, SHOAL_CONNECTION: conn };
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const children: ChildProcess[] = [];
  t.teardown(async () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  });

  // the fleet, exactly as a user starts it
  const up = spawn(process.execPath, [CLI, 'up', '--devices', '3', '--dir', path.join(dir, 'up'), ...(engineBuilt ? [] : ['--sim'])], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(up);
  let out = '';
  up.stdout!.on('data', (d) => { out += d; });
  up.stderr!.on('data', (d) => { out += d; });
  const upExited = new Promise<number | null>((res) => up.once('exit', (c) => res(c)));

  const browser = await chromium.launch({
    executablePath: CHROMIUM!,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  t.teardown(() => browser.close());
  const page = await browser.newPage({ viewport: WIDE });
  const pageErrors: string[] = [];
  const external: string[] = [];
  page.on('pageerror', (e) => pageErrors.push(e.message));
  page.on('console', (m) => { if (m.type() === 'error') pageErrors.push(m.text()); });
  page.on('request', (r) => { if (!/^http:\/\/127\.0\.0\.1:\d+\//.test(r.url()) && !r.url().startsWith('data:')) external.push(r.url()); });
  page.setDefaultTimeout(30_000);

  const urlMatch = await waitOut('the dashboard URL', () => out, /^dashboard (http:\/\/127\.0\.0\.1:\d+\/#token=[0-9a-f]+)$/m, up, 60_000);
  const dashboardUrl = urlMatch[1]!;
  const brokerUrl = (/^broker .* on (mqtt:\/\/\S+)$/m.exec(out) ?? [])[1]!;
  await waitOut('the demo to be up', () => out, /Ctrl-C stops/, up, 240_000); // as in up.test.ts: minutes on a loaded machine
  const { api, token } = JSON.parse(fs.readFileSync(conn, 'utf8')) as { api: string; token: string };
  const apiJson = async (p: string) => (await fetch(api + p, { headers: { Authorization: `Bearer ${token}` } })).json() as Promise<any>;

  // two more versions of the demo model, stored on the controller (as the printed next steps do)
  // the INT4 model `shoal up` quantized (the shipped F32 checkpoint with simulated devices)
  const modelDir = engineBuilt ? path.join(dir, 'up', 'stories260K-awq-w4g32') : path.join(repo, 'models', 'stories260K');
  const keyFile = path.join(dir, 'up', 'keys', 'fleet.key');
  const addPackages = (async () => {
    for (const v of ['2.0.0', '3.0.0']) {
      const pkg = path.join(dir, `pkg-${v}`);
      await run(process.execPath, [CLI, 'package', '--model', modelDir, '--name', 'stories260K', '--version', v, '--key', keyFile, '--out', pkg], { env });
      await run(process.execPath, [CLI, 'fleet', 'package', 'add', pkg], { env });
    }
  })();

  await t.test('the fleet table lists the three demo devices, live', async (t) => {
    await page.goto(dashboardUrl);
    t.notMatch(page.url(), /token=/, 'the token is dropped from the address bar');
    await page.locator('tr[data-device-id="robot-3"]').waitFor();
    const rows = page.locator('table.fleet tbody tr[data-device-id]');
    t.same(await rows.evaluateAll((trs) => trs.map((tr) => (tr as HTMLElement).dataset.deviceId)), ['robot-1', 'robot-2', 'robot-3']);
    for (let i = 1; i <= 3; i++) {
      const row = page.locator(`tr[data-device-id="robot-${i}"]`);
      t.equal(await row.locator('td[data-col="online"]').textContent(), 'online', `robot-${i} online`);
      t.equal(await row.locator('td[data-col="model"]').textContent(), 'stories260K@1.0.0', `robot-${i} runs stories260K@1.0.0`);
    }
    t.equal(await page.getByRole('status').filter({ hasText: 'devices' }).textContent(), '3 of 3 devices · 3 online');
    // live: new telemetry arrives over the stream and lands in the table without a reload
    await page.waitForFunction(() => (window as any).__shoal.metrics.latency.length > 0, null, { timeout: 15_000 });
    const cpuBefore = await page.locator('tr[data-device-id] td[data-col="lastSeen"]').allTextContents();
    await page.waitForTimeout(4000);
    const cpuAfter = await page.locator('tr[data-device-id] td[data-col="lastSeen"]').allTextContents();
    t.ok(cpuAfter.every((s) => /^[0-3]s ago$/.test(s)), `last seen keeps fresh without a reload (${cpuBefore.join(', ')} -> ${cpuAfter.join(', ')})`);
    // filters
    await page.getByLabel('Device', { exact: true }).fill('robot-2');
    await page.waitForFunction(() => document.querySelectorAll('tr[data-device-id]').length === 1);
    t.equal(await page.locator('tr[data-device-id]').getAttribute('data-device-id'), 'robot-2', 'id filter');
    await page.getByLabel('Device', { exact: true }).fill('');
    await page.waitForFunction(() => document.querySelectorAll('tr[data-device-id]').length === 3);
    await page.getByLabel('Label').selectOption('index=3');
    await page.waitForFunction(() => [...document.querySelectorAll('tr[data-device-id]')].map((tr: any) => tr.dataset.deviceId).join() === 'robot-3');
    t.equal(await page.locator('tr[data-device-id]').getAttribute('data-device-id'), 'robot-3', 'label filter');
    await page.getByLabel('Label').selectOption('');
    await page.getByLabel('Group').selectOption('demo');
    await page.waitForFunction(() => document.querySelectorAll('tr[data-device-id]').length === 3);
    t.match(page.url(), /#\/fleet\?group=demo/, 'filters are in the URL');
    await page.screenshot({ path: path.join(ARTIFACTS, 'fleet.png') });
    t.ok(await page.locator('tr[data-device-id]').count() === 3, 'three rows');
    t.ok(await page.locator('.scroller').evaluate((el, h) => el.clientHeight < h, WIDE.height), 'the table scrolls inside its own box');
    t.same(await layoutProblems(page), [], `fleet view at ${WIDE.width} px: nothing cut or outside the viewport`);
    // a tablet in portrait: no sideways scrolling of the page (the table scrolls in its box), model names whole
    await page.setViewportSize(NARROW);
    await page.waitForTimeout(200);
    t.same(await layoutProblems(page), [], `fleet view at ${NARROW.width} px: nothing cut or outside the viewport`);
    await page.screenshot({ path: path.join(ARTIFACTS, 'fleet-768.png') });
    await page.setViewportSize(WIDE);
  });

  await t.test('device view: live plots and a prompt streamed from the device', async (t) => {
    await page.getByRole('link', { name: 'robot-1', exact: true }).click();
    await page.waitForURL(/#\/device\/robot-1$/);
    const cpu = page.locator('#chart-cpu');
    await page.waitForFunction(() => Number(document.querySelector('#chart-cpu')?.dataset.points) > 0);
    const before = Number(await cpu.getAttribute('data-points'));
    await page.waitForFunction((n) => Number(document.querySelector('#chart-cpu')?.dataset.points) > n, before, { timeout: 15_000 });
    const after = Number(await cpu.getAttribute('data-points'));
    t.ok(after > before, `the CPU plot received new points (${before} -> ${after})`);
    t.ok(Number(await page.locator('#chart-memory').getAttribute('data-points')) > 0, 'memory plot has points');
    t.equal(await page.locator('table[aria-labelledby="store-h"] tr[data-model="stories260K@1.0.0"] td').last().textContent(), 'active', 'store lists the active model');
    t.ok(await page.locator('ol.events li[data-type="ota.activated"]').count() >= 1, 'recent events include the activation');

    // count how the answer grows: a streamed answer changes many times before it is done
    await page.evaluate(() => {
      const el = document.getElementById('answer')!;
      (window as any).__answerSteps = 0;
      new MutationObserver(() => { (window as any).__answerSteps++; }).observe(el, { childList: true, characterData: true, subtree: true });
    });
    await page.getByRole('textbox', { name: 'Prompt' }).fill('Once upon a time');
    await page.getByLabel('Max tokens').fill('24');
    await page.getByRole('button', { name: 'Generate' }).click();
    await page.waitForFunction(() => document.getElementById('answer')?.dataset.state === 'done', null, { timeout: 60_000 });
    const answer = (await page.locator('#answer').textContent()) ?? '';
    const steps = await page.evaluate(() => (window as any).__answerSteps as number);
    t.ok(answer.length > 0, `an answer arrived: ${JSON.stringify(answer.slice(0, 80))}`);
    t.ok(steps >= 3, `it streamed in ${steps} steps`);
    t.match(await page.locator('#answer-stats').textContent(), /tokens/);
    await page.screenshot({ path: path.join(ARTIFACTS, 'device.png'), fullPage: true });
    t.same(await layoutProblems(page), [], `device view at ${WIDE.width} px: plots inside their cards, y-axis labels whole`);
    await page.setViewportSize(NARROW);
    await page.waitForTimeout(300);
    t.same(await layoutProblems(page), [], `device view at ${NARROW.width} px (tablet, portrait): the same`);
    await page.screenshot({ path: path.join(ARTIFACTS, 'device-768.png'), fullPage: true });
    await page.setViewportSize(WIDE);
  });

  const rolloutDone = async (timeout: number) => page.waitForFunction(() => ['succeeded', 'failed', 'aborted'].includes(document.getElementById('rollout-status')?.textContent ?? ''), null, { timeout });
  const startRollout = async (model: string, waves: string) => {
    await page.getByLabel('Package').selectOption(model);
    await page.getByLabel('Target').fill('all');
    await page.getByLabel('Waves').fill(waves);
    await page.getByLabel('Max failures per wave').fill('0');
    await page.getByRole('button', { name: 'Start rollout' }).click();
    await page.waitForFunction((m) => document.querySelector('.detail h2')?.textContent?.startsWith('Rollout r-') && document.querySelector('.detail .summary')?.textContent?.includes(m), model);
  };

  await t.test('a rollout started from the page completes; the table shows the new version', async (t) => {
    await addPackages;
    await page.getByRole('link', { name: 'Rollouts', exact: true }).click();
    await page.locator('#r-pkg option[value="stories260K@2.0.0"]').waitFor({ state: 'attached' });
    await startRollout('stories260K@2.0.0', '1,100%');
    t.equal(await page.locator('#threshold').textContent().then((s) => s?.startsWith('max 0 per wave')), true, 'the failure threshold is shown');
    // wave 1 under way; a device that downloads and activates between two page refreshes shows "active" straight away
    await page.locator('.wave[data-wave="1"] li[data-status="updating"], .wave[data-wave="1"] li[data-status="active"]').first().waitFor({ timeout: 60_000 });
    await page.screenshot({ path: path.join(ARTIFACTS, 'rollout-running.png'), fullPage: true });
    await rolloutDone(120_000);
    t.equal(await page.locator('#rollout-status').textContent(), 'succeeded');
    t.equal(await page.locator('.wave li[data-status="active"]').count(), 3);
    t.same(await page.locator('.wave progress').evaluateAll((ps) => ps.map((p) => (p as HTMLProgressElement).value)), [100, 100, 100], 'download progress at 100 %');
    await page.screenshot({ path: path.join(ARTIFACTS, 'rollout.png'), fullPage: true });
    await page.getByRole('link', { name: 'Fleet', exact: true }).click();
    await page.waitForFunction(() => [...document.querySelectorAll('tr[data-device-id] td[data-col="model"]')].map((td) => td.textContent).join() === 'stories260K@2.0.0,stories260K@2.0.0,stories260K@2.0.0', null, { timeout: 15_000 });
    t.pass('the fleet table shows stories260K@2.0.0 on every device');
  });

  await t.test('pausing a rollout stops the next wave; resume finishes it', async (t) => {
    // The shipped stories260K updates within a rollout tick or two, faster than a click on the
    // page can land in wave 1, so the rollout is created and paused through the API back to
    // back; the page must show it paused, hold wave 2, and resume it from its button.
    const from = '2.0.0';
    const post = async (p: string) => (await fetch(api + p, {
      method: 'POST', headers: { Authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      ...(p === '/api/rollouts' ? { body: JSON.stringify({ model: 'stories260K@3.0.0', to: 'all', waves: '1,100%' }) } : {}),
    })).json() as Promise<any>;
    const id = (await post('/api/rollouts')).rollout.id as string;
    t.equal((await post(`/api/rollouts/${id}/pause`)).rollout.status, 'paused');
    await page.getByRole('link', { name: 'Rollouts', exact: true }).click();
    await page.evaluate((rid) => { (globalThis as unknown as { location: { hash: string } }).location.hash = `#/rollouts?id=${encodeURIComponent(rid)}`; }, id);
    await page.waitForFunction(() => document.getElementById('rollout-status')?.textContent === 'paused');
    const first = (await apiJson(`/api/rollouts/${id}`)).rollout;
    t.equal(first.status, 'paused');
    const canary = first.devices.find((d: any) => d.wave === 0);
    // a device already updating finishes; the next wave does not start
    if (canary.status === 'updating') await page.locator(`.wave[data-wave="0"] li[data-status="active"]`).waitFor({ timeout: 60_000 });
    await new Promise((r) => setTimeout(r, 3000)); // 15 rollout ticks
    const held = (await apiJson(`/api/rollouts/${id}`)).rollout;
    t.equal(held.status, 'paused');
    t.equal(held.currentWave, 0, 'still wave 1');
    t.same(held.devices.filter((d: any) => d.wave === 1).map((d: any) => d.status), ['pending', 'pending'], 'wave 2 not started');
    t.same(await page.locator('.wave[data-wave="1"] li').evaluateAll((lis) => lis.map((li) => (li as HTMLElement).dataset.status)), ['pending', 'pending'], 'the page shows wave 2 pending');
    const devs = (await apiJson('/api/devices')).devices as { id: string; model: { version: string } }[];
    t.same(devs.filter((d) => d.id !== canary.id).map((d) => d.model.version), [from, from], `wave 2 devices keep ${from}`);
    await page.getByRole('button', { name: 'Resume' }).click();
    await rolloutDone(120_000);
    t.equal(await page.locator('#rollout-status').textContent(), 'succeeded');
  });

  await t.test(`${SIM_DEVICES} simulated devices: update latency and frame time`, async (t) => {
    const sim = spawn(process.execPath, [CLI, 'sim', '--devices', String(SIM_DEVICES), '--broker', brokerUrl, '--interval', '1', '--groups', 'north,south'], { stdio: ['ignore', 'ignore', 'pipe'] });
    children.push(sim);
    let simErr = '';
    sim.stderr!.on('data', (d) => { simErr += d; });
    const simExited = new Promise((res) => sim.once('exit', res));
    await page.getByRole('link', { name: 'Fleet', exact: true }).click();
    await page.getByLabel('Group').selectOption('');
    const total = SIM_DEVICES + 3;
    const t0 = Date.now();
    await page.waitForFunction((n) => document.querySelector('.count')?.textContent === `${n} of ${n} devices · ${n} online`, total, { timeout: 60_000 });
    const onlineMs = Date.now() - t0;
    t.ok(true, `${total} devices online in the table ${onlineMs} ms after \`shoal sim\` started`);
    t.ok(await page.locator('tr[data-device-id]').count() < 80, 'only the rows in view are in the DOM');
    await new Promise((r) => setTimeout(r, 3000)); // settle
    await page.evaluate(() => (window as any).__shoal.metrics.reset());
    // 10 s of live updates, scrolling through the table meanwhile
    const scroller = page.locator('.scroller');
    for (let i = 0; i < 10; i++) {
      await scroller.evaluate((el, y) => { el.scrollTop = y; }, i * 3000);
      await new Promise((r) => setTimeout(r, 1000));
    }
    const m = await page.evaluate(() => (window as any).__shoal.metrics.summary()) as Record<string, number>;
    const stats = await apiJson('/api/stats');
    const result = { devices: total, telemetryHz: 1, engineDaemons: engineBuilt, onlineMs, ...m, controllerTelemetryStored: stats.stored?.telemetry, measuredAt: new Date().toISOString(), cpus: os.cpus().length };
    fs.writeFileSync(path.join(ARTIFACTS, 'dashboard-1000.json'), JSON.stringify(result, null, 2) + '\n');
    t.comment(JSON.stringify(result));
    t.ok(m.updates > SIM_DEVICES * 5, `the page applied ${m.updates} device updates in 10 s`);
    t.ok(m.latencyN > SIM_DEVICES * 3, `${m.latencyN} latency samples`);
    t.ok(m.latencyP50 < 2000, `update latency p50 ${m.latencyP50?.toFixed(0)} ms, p95 ${m.latencyP95?.toFixed(0)} ms`);
    t.ok(m.renderP95 < 50, `render pass p95 ${m.renderP95?.toFixed(1)} ms`);
    t.ok(m.frameP50 < 50, `frame time p50 ${m.frameP50?.toFixed(1)} ms, p95 ${m.frameP95?.toFixed(1)} ms`);
    await scroller.evaluate((el) => { el.scrollTop = 0; });
    await page.waitForTimeout(300);
    // the rows in view show live values, not the ones from when the row list was built
    const seen = await page.locator('tr[data-device-id] td[data-col="lastSeen"]').allTextContents();
    t.ok(seen.length > 10 && seen.every((s) => /^[0-4]s ago$/.test(s)), `every visible row was seen in the last 5 s: ${seen.slice(0, 5).join(', ')}…`);
    await page.screenshot({ path: path.join(ARTIFACTS, 'fleet-1000.png') });
    sim.kill('SIGINT');
    await Promise.race([simExited, new Promise((r) => setTimeout(r, 10_000))]);
    if (sim.exitCode === null) sim.kill('SIGKILL');
    t.notMatch(simErr, /Error/, 'sim ran cleanly');
  });

  await t.test('without the token in the URL the page asks for it once', async (t) => {
    const ctx = await browser.newContext({ viewport: { width: 1024, height: 768 } });
    const p2 = await ctx.newPage();
    await p2.goto(dashboardUrl.replace(/#.*$/, ''));
    await p2.getByLabel('API token').fill('wrong-token-wrong-token');
    await p2.getByRole('button', { name: 'Connect' }).click();
    await p2.getByRole('alert').filter({ hasText: 'not accepted' }).waitFor();
    t.pass('a wrong token is refused');
    await p2.getByLabel('API token').fill(token);
    await p2.getByRole('button', { name: 'Connect' }).click();
    await p2.locator('tr[data-device-id="robot-1"]').waitFor();
    await p2.reload();
    await p2.locator('tr[data-device-id="robot-1"]').waitFor();
    t.pass('the token is remembered across a reload');
    await p2.getByRole('button', { name: 'Forget token' }).click();
    await p2.getByLabel('API token').waitFor();
    t.pass('forget token returns to the form');
    await ctx.close();
  });

  await t.test('nothing left the machine, no page errors', async (t) => {
    t.same(external, [], 'every request went to the controller');
    t.same(pageErrors, [], 'no errors in the page');
  });

  up.kill('SIGINT');
  t.equal(await upExited, 0, '`shoal up` stops cleanly');
  if (process.env.SHOAL_UPDATE_DOCS_IMG === '1') {
    for (const f of ['fleet', 'fleet-768', 'device', 'device-768', 'rollout']) fs.copyFileSync(path.join(ARTIFACTS, `${f}.png`), path.join(repo, 'docs', 'img', `${f}.png`));
  }
}
