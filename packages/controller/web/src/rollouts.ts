// Rollouts view: start a rollout from a stored package, follow its waves device by
// device (status, OTA phase and download progress), the failure threshold, and
// pause / resume / abort.
import { ApiError, api } from './api.js';
import { ago, bytes, h, setText, time } from './dom.js';
import { store, type EventRow, type Rollout } from './store.js';

interface Pkg { name: string; version: string; files: number; totalBytes: number; createdAt: number }

/** Failures tolerated in a wave of `n` devices (the controller's rule: a count, or a percentage rounded down). */
export function allowedFailures(maxFailures: string, n: number): number {
  const m = /^(\d+(?:\.\d+)?)%$/.exec(maxFailures.trim());
  if (m) return Math.floor((Number(m[1]) / 100) * n);
  return Number(maxFailures) || 0;
}

const ACTIVE = new Set(['running', 'paused']);
/** Devices listed per wave; big waves list the ones that need attention first, then a count. */
const MAX_LISTED = 100;
const ORDER: Record<string, number> = { failed: 0, timeout: 0, 'rolled-back': 1, updating: 2, pending: 3, active: 4 };
function shown<T extends { id: string; status: string }>(devs: T[]): T[] {
  if (devs.length <= MAX_LISTED) return devs;
  return [...devs].sort((a, b) => (ORDER[a.status] ?? 5) - (ORDER[b.status] ?? 5) || a.id.localeCompare(b.id)).slice(0, MAX_LISTED);
}
function countBy(devs: { status: string }[]): string {
  const c = new Map<string, number>();
  for (const d of devs) c.set(d.status, (c.get(d.status) ?? 0) + 1);
  return [...c].map(([k, v]) => `${v} ${k}`).join(', ');
}

export function rolloutsView(root: HTMLElement, query: URLSearchParams): () => void {
  let selected: string | null = query.get('id');
  let frame = 0;

  // ---- start form
  const pkgSel = h('select', { id: 'r-pkg', required: true });
  const target = h('input', { id: 'r-to', value: 'all', required: true, list: 'r-to-list', autocomplete: 'off' }) as HTMLInputElement;
  const targetList = h('datalist', { id: 'r-to-list' });
  const waves = h('input', { id: 'r-waves', value: '1,50%,100%', required: true, pattern: '[0-9%, ]+' }) as HTMLInputElement;
  const maxFailures = h('input', { id: 'r-maxf', value: '0', required: true, pattern: '[0-9]+(\\.[0-9]+)?%?' }) as HTMLInputElement;
  const timeout = h('input', { id: 'r-timeout', type: 'number', min: 5, max: 86400, value: 300, required: true }) as HTMLInputElement;
  const startBtn = h('button', { type: 'submit', class: 'primary' }, 'Start rollout');
  const formMsg = h('p', { class: 'form-msg', role: 'alert' });
  const form = h('form', { class: 'start', 'aria-labelledby': 'start-h', onsubmit: (e: Event) => { e.preventDefault(); void start(); } },
    h('div', { class: 'field' }, h('label', { for: 'r-pkg' }, 'Package'), pkgSel),
    h('div', { class: 'field' }, h('label', { for: 'r-to' }, 'Target'), target, targetList),
    h('div', { class: 'field' }, h('label', { for: 'r-waves' }, 'Waves'), waves),
    h('div', { class: 'field' }, h('label', { for: 'r-maxf' }, 'Max failures per wave'), maxFailures),
    h('div', { class: 'field' }, h('label', { for: 'r-timeout' }, 'Timeout (s)'), timeout),
    h('div', { class: 'field' }, startBtn), formMsg);

  // ---- controls (kept across renders so a click never lands on a replaced node)
  const pauseBtn = h('button', { type: 'button', onclick: () => selected && void control(selected, 'pause') }, 'Pause');
  const resumeBtn = h('button', { type: 'button', onclick: () => selected && void control(selected, 'resume') }, 'Resume');
  const abortBtn = h('button', {
    type: 'button', class: 'danger',
    onclick: () => { if (selected && confirm(`Abort ${selected}? The current wave goes back to its previous version.`)) void control(selected, 'abort'); },
  }, 'Abort');
  const ctlMsg = h('span', { class: 'ctl-msg', role: 'alert' });
  const controls = h('div', { class: 'controls', role: 'group', 'aria-label': 'Rollout controls' }, pauseBtn, resumeBtn, abortBtn, ctlMsg);

  // ---- list and detail
  const listBody = h('tbody');
  const detail = h('section', { class: 'card detail', 'aria-labelledby': 'detail-h', 'aria-live': 'off' });

  root.replaceChildren(h('section', { class: 'rollouts-view', 'aria-labelledby': 'ro-h' },
    h('div', { class: 'bar' }, h('h1', { id: 'ro-h' }, 'Rollouts')),
    h('section', { class: 'card', 'aria-labelledby': 'start-h' }, h('h2', { id: 'start-h' }, 'Start a rollout'), form),
    h('div', { class: 'cols2' },
      h('section', { class: 'card', 'aria-labelledby': 'list-h' }, h('h2', { id: 'list-h' }, 'Recent'),
        h('div', { class: 'hscroll' }, h('table', { class: 'small rollouts', 'aria-labelledby': 'list-h' },
          h('thead', {}, h('tr', {}, ...['Rollout', 'Model', 'Target', 'Status', 'Wave', 'Started'].map((t) => h('th', { scope: 'col' }, t)))), listBody))),
      detail)));

  async function loadPackages(): Promise<void> {
    try {
      const { packages } = await api<{ packages: Pkg[] }>('GET', '/api/packages');
      const cur = pkgSel.value;
      packages.sort((a, b) => b.createdAt - a.createdAt);
      pkgSel.replaceChildren(...(packages.length ? packages.map((p) => h('option', { value: `${p.name}@${p.version}` }, `${p.name}@${p.version} (${p.files} files, ${bytes(p.totalBytes)})`))
        : [h('option', { value: '' }, 'no packages: shoal fleet package add PKG')]));
      if (cur && packages.some((p) => `${p.name}@${p.version}` === cur)) pkgSel.value = cur;
    } catch (e) { setText(formMsg, (e as Error).message); }
  }

  function refreshTargets(): void {
    const opts = new Set<string>(['all']);
    for (const d of store.devices.values()) {
      if (d.group) opts.add(`group:${d.group}`);
      for (const [k, v] of Object.entries(d.labels)) opts.add(`${k}=${v}`);
    }
    const want = [...opts].join('\n');
    if (targetList.dataset.values !== want) {
      targetList.dataset.values = want;
      targetList.replaceChildren(...[...opts].map((o) => h('option', { value: o })));
    }
  }

  async function start(): Promise<void> {
    setText(formMsg, '');
    if (!pkgSel.value) { setText(formMsg, 'no stored package to roll out; add one with `shoal fleet package add PKG`'); return; }
    startBtn.disabled = true;
    try {
      const { rollout } = await api<{ rollout: Rollout }>('POST', '/api/rollouts', {
        model: pkgSel.value, to: target.value.trim(), waves: waves.value.replace(/\s+/g, ''), maxFailures: maxFailures.value.trim(), timeoutSec: Number(timeout.value),
      });
      store.setRollout(rollout);
      select(rollout.id);
    } catch (e) {
      setText(formMsg, e instanceof ApiError ? `${e.message} [${e.code}]` : String(e));
    } finally {
      startBtn.disabled = false;
    }
  }

  async function control(id: string, action: 'pause' | 'resume' | 'abort'): Promise<void> {
    try {
      const { rollout } = await api<{ rollout: Rollout }>('POST', `/api/rollouts/${encodeURIComponent(id)}/${action}`);
      store.setRollout(rollout);
      setText(ctlMsg, '');
    } catch (e) {
      setText(ctlMsg, e instanceof ApiError ? `${e.message} [${e.code}]` : String(e));
    }
  }

  function select(id: string): void {
    selected = id;
    history.replaceState(null, '', `#/rollouts?id=${encodeURIComponent(id)}`);
    schedule();
  }

  function sorted(): Rollout[] {
    return [...store.rollouts.values()].sort((a, b) => b.createdAt - a.createdAt).slice(0, 20);
  }

  function renderList(rs: Rollout[]): void {
    listBody.replaceChildren(...rs.map((r) => h('tr', { class: r.id === selected ? 'sel' : null, 'data-rollout': r.id },
      h('td', {}, h('button', { type: 'button', class: 'link', 'aria-pressed': r.id === selected ? 'true' : 'false', onclick: () => select(r.id) }, r.id)),
      h('td', {}, `${r.name}@${r.version}`), h('td', {}, r.target),
      h('td', {}, h('span', { class: `status s-${r.status}` }, r.status)),
      h('td', {}, `${Math.min(r.currentWave + 1, r.waves.length)}/${r.waves.length}`), h('td', {}, ago(r.createdAt)))));
  }

  function renderDetail(r: Rollout | undefined): void {
    if (!r) { detail.replaceChildren(h('h2', { id: 'detail-h' }, 'Rollout'), h('p', { class: 'muted' }, 'No rollout yet. Start one above.')); return; }
    const active = ACTIVE.has(r.status);
    const waveCount = Math.max(...r.devices.map((d) => d.wave), -1) + 1;
    const failedTotal = r.devices.filter((d) => d.status === 'failed' || d.status === 'timeout' || d.status === 'rolled-back').length;
    const waveEls: HTMLElement[] = [];
    for (let w = 0; w < waveCount; w++) {
      const devs = r.devices.filter((d) => d.wave === w);
      const failures = devs.filter((d) => d.status === 'failed' || d.status === 'timeout').length;
      const done = devs.filter((d) => d.status === 'active').length;
      const wstate = w < r.currentWave ? 'done' : w === r.currentWave ? (r.status === 'running' || r.status === 'paused' ? 'current' : r.status) : 'waiting';
      waveEls.push(h('section', { class: `wave w-${wstate}`, 'data-wave': w, 'aria-label': `Wave ${w + 1}` },
        h('h3', {}, `Wave ${w + 1} `, h('span', { class: 'muted' }, `(${r.waves[w] ?? ''}: ${devs.length} device${devs.length === 1 ? '' : 's'}) — ${done} active, ${failures} failed of ${allowedFailures(r.maxFailures, devs.length)} allowed — ${wstate}`)),
        h('ul', { class: 'wave-devices' }, ...shown(devs).map((d) => {
          const dev = store.devices.get(d.id);
          const p = store.progress.get(`${d.id} ${r.name}@${r.version}`);
          const pct = d.status === 'active' ? 100 : p?.percent ?? 0;
          const phase = d.status === 'updating' && dev?.phase ? dev.phase : '';
          return h('li', { 'data-device': d.id, 'data-status': d.status },
            h('a', { href: `#/device/${encodeURIComponent(d.id)}` }, d.id),
            h('span', { class: `status s-${d.status}` }, d.status),
            h('progress', { max: 100, value: pct.toFixed(0), 'aria-label': `${d.id} download` }),
            h('span', { class: 'muted' }, `${pct.toFixed(0)}%${p?.totalBytes ? ` of ${bytes(p.totalBytes)}` : ''}${phase ? ` · ${phase}` : ''}${d.error ? ` · ${d.error}` : ''}`));
        }), devs.length > MAX_LISTED ? h('li', { class: 'more muted' }, `… and ${devs.length - MAX_LISTED} more (${countBy(devs)})`) : null)));
    }
    detail.replaceChildren(
      h('h2', { id: 'detail-h' }, `Rollout ${r.id}`),
      h('p', { class: 'summary' }, h('span', { class: `status s-${r.status}`, id: 'rollout-status' }, r.status), ` ${r.name}@${r.version} → ${r.target}`),
      h('dl', { class: 'facts' },
        h('div', {}, h('dt', {}, 'Waves'), h('dd', {}, r.waves.join(', '))),
        h('div', {}, h('dt', {}, 'Failure threshold'), h('dd', { id: 'threshold' }, `max ${r.maxFailures} per wave (${failedTotal} failed so far)`)),
        h('div', {}, h('dt', {}, 'Timeout'), h('dd', {}, `${r.timeoutSec} s per device`)),
        h('div', {}, h('dt', {}, 'Started'), h('dd', {}, time(r.createdAt))),
        h('div', {}, h('dt', {}, 'Message'), h('dd', {}, r.message ?? '—'))),
      controls,
      ...waveEls);
    pauseBtn.disabled = r.status !== 'running';
    resumeBtn.disabled = r.status !== 'paused';
    abortBtn.disabled = !active;
  }

  function render(): void {
    frame = 0;
    const rs = sorted();
    if (!selected && rs[0]) selected = rs[0].id;
    renderList(rs);
    renderDetail(selected ? store.rollouts.get(selected) : undefined);
    refreshTargets();
  }
  function schedule(): void { if (!frame) frame = requestAnimationFrame(render); }

  const offR = store.on('rollout', (r: Rollout) => { if (r.status === 'succeeded' || !selected) void loadPackages(); schedule(); });
  const offE = store.on('event', (e: EventRow) => { if (e.type.startsWith('ota.')) schedule(); });
  // device phases matter only while the selected rollout moves
  const offD = store.on('devices', () => { const r = selected ? store.rollouts.get(selected) : undefined; if (r && ACTIVE.has(r.status)) schedule(); });

  void (async () => {
    await loadPackages();
    try {
      const [{ rollouts }, { events }] = await Promise.all([
        api<{ rollouts: Rollout[] }>('GET', '/api/rollouts?limit=20'),
        api<{ events: EventRow[] }>('GET', '/api/events?type=ota.progress&limit=2000'),
      ]);
      for (const r of rollouts) if (!store.rollouts.has(r.id) || store.rollouts.get(r.id)!.updatedAt <= r.updatedAt) store.rollouts.set(r.id, r);
      for (const e of events) {
        const k = `${e.deviceId} ${e.data.name}@${e.data.version}`;
        if (!store.progress.has(k) || store.progress.get(k)!.ts <= e.ts) store.progress.set(k, { percent: e.data.percent, bytes: e.data.bytes, totalBytes: e.data.totalBytes, ts: e.ts });
      }
    } catch (e) { setText(formMsg, (e as Error).message); }
    schedule();
  })();
  const tick = setInterval(schedule, 5000);

  return () => { offR(); offE(); offD(); clearInterval(tick); if (frame) cancelAnimationFrame(frame); };
}
