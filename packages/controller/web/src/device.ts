// Device view: live plots of the last hour, reported state, the models in its
// store, recent events, and a prompt streamed from the device over MQTT through
// the controller's infer route.
import { ApiError, api, ndjson } from './api.js';
import { TimeChart } from './chart.js';
import { ago, bytes, h, labelsText, modelRef, num, setText, time } from './dom.js';
import { store, type DeviceSummary, type EventRow } from './store.js';

interface StoreEntry { name: string; version: string; bytes: number; active: boolean; previous: boolean }
type DeviceDetail = DeviceSummary & { state: Record<string, any> | null; telemetry: Record<string, any> | null };

/** Values of one telemetry sample for each chart (undefined = series not reported). */
export function chartValues(d: Record<string, any>): Record<string, Record<string, number | null | undefined>> {
  const temps: Record<string, number | null> = {};
  for (const [k, v] of Object.entries((d.temperatures ?? {}) as Record<string, number>)) temps[k] = v;
  for (const z of (d.jetson?.thermal ?? []) as { type: string; tempC: number }[]) temps[z.type] = z.tempC;
  const power: Record<string, number | null> = {};
  for (const r of (d.jetson?.power ?? []) as { name: string; powerMw?: number }[]) if (typeof r.powerMw === 'number') power[r.name] = r.powerMw / 1000;
  const mem = d.memory as { totalBytes: number; usedBytes: number } | undefined;
  const swap = d.swap as { totalBytes: number; usedBytes: number } | undefined;
  return {
    cpu: { cpu: d.cpu?.loadPct },
    memory: { memory: mem && mem.totalBytes > 0 ? (100 * mem.usedBytes) / mem.totalBytes : undefined, swap: swap && swap.totalBytes > 0 ? (100 * swap.usedBytes) / swap.totalBytes : undefined },
    temps,
    gpu: { gpu: d.jetson?.gpuLoadPct, emc: d.jetson?.emc?.loadPct },
    power,
    tokps: { decode: d.inference?.decodeTokPerSec ?? null },
    ttft: { ttft: d.inference?.ttftMs ?? null },
  };
}

export function deviceView(root: HTMLElement, id: string): () => void {
  const charts: Record<string, TimeChart> = {
    cpu: new TimeChart('cpu', 'CPU load', '%', [0, 100]),
    memory: new TimeChart('memory', 'Memory used', '%', [0, 100]),
    temps: new TimeChart('temps', 'Temperatures', '°C'),
    gpu: new TimeChart('gpu', 'GPU load', '%', [0, 100]),
    power: new TimeChart('power', 'Power', 'W'),
    tokps: new TimeChart('tokps', 'Decode speed', 'tok/s'),
    ttft: new TimeChart('ttft', 'Time to first token', 'ms'),
  };
  const push = (ts: number, data: Record<string, any>, redraw: boolean) => {
    const v = chartValues(data);
    for (const [k, c] of Object.entries(charts)) c.push(ts, v[k]!, redraw);
  };

  const title = h('h1', {}, id);
  const badge = h('span', { class: 'badge' });
  const facts = h('dl', { class: 'facts' });
  const storeBody = h('tbody');
  const eventsList = h('ol', { class: 'events', 'aria-label': 'Recent events' });
  const prompt = h('textarea', { id: 'prompt', rows: 3, required: true, placeholder: 'Once upon a time' }) as HTMLTextAreaElement;
  const maxTokens = h('input', { id: 'max-tokens', type: 'number', min: 1, max: 2048, value: 64 }) as HTMLInputElement;
  const temperature = h('input', { id: 'temperature', type: 'number', min: 0, max: 2, step: 0.1, value: 0 }) as HTMLInputElement;
  const go = h('button', { type: 'submit', class: 'primary' }, 'Generate');
  const stop = h('button', { type: 'button', disabled: true, onclick: () => ctrl?.abort() }, 'Stop');
  const answer = h('output', { id: 'answer', for: 'prompt', 'aria-live': 'polite', 'aria-label': 'Answer' });
  const answerStats = h('p', { class: 'muted', id: 'answer-stats', role: 'status' });
  let ctrl: AbortController | null = null;

  const form = h('form', {
    class: 'prompt', 'aria-label': `Prompt ${id}`, onsubmit: (e: Event) => { e.preventDefault(); void generate(); },
  },
  h('label', { for: 'prompt' }, 'Prompt'), prompt,
  h('div', { class: 'row' },
    h('label', { for: 'max-tokens' }, 'Max tokens'), maxTokens,
    h('label', { for: 'temperature' }, 'Temperature'), temperature,
    go, stop),
  answer, answerStats);

  root.replaceChildren(h('section', { class: 'device-view', 'aria-labelledby': 'dev-h' },
    h('div', { class: 'bar' }, h('a', { href: '#/fleet', class: 'back' }, '← Fleet'), Object.assign(title, { id: 'dev-h' }), badge),
    facts,
    h('div', { class: 'charts' }, ...Object.values(charts).map((c) => c.el)),
    h('div', { class: 'cols' },
      h('section', { 'aria-labelledby': 'prompt-h', class: 'card' }, h('h2', { id: 'prompt-h' }, 'Prompt'), form),
      h('section', { 'aria-labelledby': 'store-h', class: 'card' }, h('h2', { id: 'store-h' }, 'Models in store'),
        h('table', { class: 'small', 'aria-labelledby': 'store-h' },
          h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Model'), h('th', { scope: 'col' }, 'Size'), h('th', { scope: 'col' }, 'Status'))), storeBody)),
      h('section', { 'aria-labelledby': 'events-h', class: 'card' }, h('h2', { id: 'events-h' }, 'Recent events'), eventsList)),
  ));

  function renderFacts(d: DeviceDetail | DeviceSummary): void {
    badge.textContent = d.online ? 'online' : 'offline';
    badge.dataset.state = d.online ? 'online' : 'offline';
    const st = (d as DeviceDetail).state ?? detailState;
    const rows: [string, string][] = [
      ['Model', modelRef(d.model)], ['Phase', d.phase ?? '—'], ['Group', d.group ?? '—'], ['Labels', labelsText(d.labels) || '—'],
      ['Desired', d.desired ? `${d.desired.name}@${d.desired.version}` : '—'],
      ['Decode', num(d.tokPerSec, 1, ' tok/s')], ['Queue', num(d.queueDepth)], ['Max temp', num(d.maxTempC, 1, ' °C')],
      ['GPU', num(d.gpuLoadPct, 0, ' %')], ['Power', num(d.powerW, 1, ' W')], ['Last seen', ago(d.lastSeen)],
    ];
    if (st?.engine) rows.push(['Engine', `${st.engine.backend} ${st.engine.isa} ×${st.engine.threads}`]);
    if (st?.agentVersion) rows.push(['Agent', String(st.agentVersion)]);
    if (d.lastError) rows.push(['Last error', `${d.lastError.code}: ${d.lastError.message}`]);
    facts.replaceChildren(...rows.flatMap(([k, v]) => [h('div', {}, h('dt', {}, k), h('dd', {}, v))]));
  }

  function renderStore(entries: StoreEntry[]): void {
    if (entries.length === 0) { storeBody.replaceChildren(h('tr', {}, h('td', { colspan: 3, class: 'muted' }, 'empty'))); return; }
    storeBody.replaceChildren(...entries.map((e) => h('tr', { 'data-model': `${e.name}@${e.version}` },
      h('td', {}, `${e.name}@${e.version}`), h('td', { class: 'num' }, bytes(e.bytes)),
      h('td', {}, e.active ? 'active' : e.previous ? 'previous' : 'stored'))));
  }

  function eventItem(e: EventRow): HTMLElement {
    const d = e.data ?? {};
    const what = [d.name && d.version ? `${d.name}@${d.version}` : '', d.phase ?? '', typeof d.percent === 'number' ? `${d.percent.toFixed(0)}%` : '', d.error?.code ?? ''].filter(Boolean).join(' ');
    return h('li', { 'data-type': e.type }, h('time', { datetime: new Date(e.ts).toISOString() }, time(e.ts)), ' ', h('strong', {}, e.type), what ? ` ${what}` : '');
  }

  let detailState: Record<string, any> | null = null;
  let detailTimer = 0;
  let lastKey = '';
  async function loadDetail(): Promise<void> {
    try {
      const { device } = await api<{ device: DeviceDetail }>('GET', `/api/devices/${encodeURIComponent(id)}`);
      detailState = device.state;
      renderFacts(device);
      renderStore((device.state?.store ?? []) as StoreEntry[]);
    } catch (e) {
      facts.replaceChildren(h('p', { role: 'alert' }, e instanceof ApiError ? `${e.message} [${e.code}]` : String(e)));
    }
  }

  async function loadHistory(): Promise<void> {
    const [{ telemetry }, { events }] = await Promise.all([
      api<{ telemetry: { ts: number; data: Record<string, any> }[] }>('GET', `/api/telemetry?device=${encodeURIComponent(id)}&limit=3600`),
      api<{ events: EventRow[] }>('GET', `/api/events?device=${encodeURIComponent(id)}&limit=50`),
    ]);
    const since = Date.now() - 3600_000;
    for (const r of telemetry) if (r.ts >= since) push(r.ts, r.data, false);
    for (const c of Object.values(charts)) c.schedule();
    const seen = new Set([...eventsList.children].map((li) => (li as HTMLElement).dataset.id));
    for (const e of events) {
      if (seen.has(e.id)) continue;
      const li = eventItem(e);
      li.dataset.id = e.id;
      eventsList.prepend(li);
    }
  }

  const offT = store.on('telemetry', (s: { deviceId: string; ts: number; data: Record<string, any> }) => {
    if (s.deviceId === id) push(s.ts, s.data, true);
  });
  const offE = store.on('event', (e: EventRow) => {
    if (e.deviceId !== id) return;
    const li = eventItem(e);
    li.dataset.id = e.id;
    eventsList.prepend(li);
    while (eventsList.children.length > 50) eventsList.lastElementChild!.remove();
  });
  const offD = store.on('devices', () => {
    const d = store.devices.get(id);
    if (!d) return;
    const key = `${modelRef(d.model)} ${d.phase} ${d.online}`;
    if (key !== lastKey) {
      // the store listing is in the full state: fetch it again when the model or phase moved
      lastKey = key;
      clearTimeout(detailTimer);
      detailTimer = window.setTimeout(() => void loadDetail(), 150);
    } else renderFacts({ ...(d as DeviceDetail), state: null });
  });

  async function generate(): Promise<void> {
    const text = prompt.value.trim();
    if (!text) { prompt.focus(); return; }
    ctrl = new AbortController();
    go.disabled = true;
    stop.disabled = false;
    answer.textContent = '';
    answer.dataset.state = 'streaming';
    setText(answerStats, 'waiting for the device…');
    const t0 = performance.now();
    let chunks = 0;
    let firstMs: number | null = null;
    try {
      for await (const line of ndjson(`/api/devices/${encodeURIComponent(id)}/infer`, {
        prompt: text, maxTokens: Math.max(1, Number(maxTokens.value) || 64), temperature: Number(temperature.value) || 0,
      }, ctrl.signal)) {
        if (line.chunk) {
          if (firstMs === null) firstMs = performance.now() - t0;
          chunks++;
          answer.append(String(line.chunk.text));
          setText(answerStats, `${chunks} chunk(s)…`);
        }
        if (line.done) {
          if (!line.ok) throw new ApiError(502, line.error?.code ?? 'DEVICE_ERROR', line.error?.message ?? 'generation failed');
          const r = line.result ?? {};
          answer.dataset.state = 'done';
          setText(answerStats, `${r.usage?.completionTokens ?? chunks} tokens · ${num(r.timings?.decodeTokPerSec, 1, ' tok/s')} on the device · first chunk here after ${num(firstMs, 0, ' ms')} · ${r.stopReason ?? ''}`);
        }
      }
    } catch (e) {
      answer.dataset.state = 'error';
      setText(answerStats, (e as Error).name === 'AbortError' ? 'stopped' : e instanceof ApiError ? `${e.message} [${e.code}]` : String(e));
    } finally {
      go.disabled = false;
      stop.disabled = true;
      ctrl = null;
    }
  }

  const cached = store.devices.get(id);
  if (cached) renderFacts({ ...(cached as DeviceDetail), state: null });
  void loadDetail();
  void loadHistory().catch((e) => console.error(e));
  const tick = setInterval(() => { const d = store.devices.get(id); if (d) renderFacts({ ...(d as DeviceDetail), state: null }); }, 5000);

  return () => {
    offT(); offE(); offD();
    clearInterval(tick);
    clearTimeout(detailTimer);
    ctrl?.abort();
    for (const c of Object.values(charts)) c.destroy();
  };
}
