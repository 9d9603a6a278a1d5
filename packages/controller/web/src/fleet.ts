// Fleet view: every device in one table, filtered by group / label / id, sortable,
// updated in place from the live stream. Only the rows in view are in the DOM
// (fixed row height), so 1,000 devices cost the same per frame as 30.
import { ago, h, labelsText, modelRef, num, setText } from './dom.js';
import { store, type DeviceSummary } from './store.js';

const ROW_H = 34;
const OVERSCAN = 8;

interface Col {
  key: string;
  label: string;
  /** fixed column width (table-layout: fixed keeps each update's layout cheap) */
  w: string;
  cls?: string;
  text: (d: DeviceSummary, now: number) => string;
  sort: (d: DeviceSummary) => string | number;
}

const n = (v: number | null) => (v === null ? -Infinity : v);
const COLS: Col[] = [
  { key: 'id', w: '9rem', label: 'Device', text: (d) => d.id, sort: (d) => d.id },
  { key: 'online', w: '6.5rem', label: 'State', text: (d) => (d.online ? 'online' : 'offline'), sort: (d) => (d.online ? 0 : 1) },
  { key: 'group', w: '6.5rem', label: 'Group', text: (d) => d.group ?? '—', sort: (d) => d.group ?? '' },
  { key: 'labels', w: '12rem', label: 'Labels', cls: 'labels', text: (d) => labelsText(d.labels) || '—', sort: (d) => labelsText(d.labels) },
  { key: 'model', w: '12rem', label: 'Model', text: (d) => modelRef(d.model), sort: (d) => modelRef(d.model) },
  { key: 'phase', w: '7.5rem', label: 'Phase', text: (d) => d.phase ?? '—', sort: (d) => d.phase ?? '' },
  { key: 'tokPerSec', w: '7.5rem', label: 'Decode tok/s', cls: 'num', text: (d) => num(d.tokPerSec, 1), sort: (d) => n(d.tokPerSec) },
  { key: 'queueDepth', w: '4.5rem', label: 'Queue', cls: 'num', text: (d) => num(d.queueDepth), sort: (d) => n(d.queueDepth) },
  { key: 'maxTempC', w: '5.5rem', label: 'Temp °C', cls: 'num', text: (d) => num(d.maxTempC, 1), sort: (d) => n(d.maxTempC) },
  { key: 'gpuLoadPct', w: '4.5rem', label: 'GPU %', cls: 'num', text: (d) => num(d.gpuLoadPct), sort: (d) => n(d.gpuLoadPct) },
  { key: 'powerW', w: '5.5rem', label: 'Power W', cls: 'num', text: (d) => num(d.powerW, 1), sort: (d) => n(d.powerW) },
  { key: 'cpuLoadPct', w: '4.5rem', label: 'CPU %', cls: 'num', text: (d) => num(d.cpuLoadPct), sort: (d) => n(d.cpuLoadPct) },
  { key: 'lastSeen', w: '6.5rem', label: 'Last seen', text: (d, now) => ago(d.lastSeen, now), sort: (d) => -d.lastSeen },
];

const collator = new Intl.Collator(undefined, { numeric: true });

export function fleetView(root: HTMLElement, query: URLSearchParams): () => void {
  const state = {
    group: query.get('group') ?? '',
    label: query.get('label') ?? '',
    q: query.get('q') ?? '',
    sort: query.get('sort') ?? 'id',
    desc: query.get('desc') === '1',
  };
  let rows: DeviceSummary[] = [];
  let needRows = true;
  let frame = 0;

  const groupSel = h('select', { id: 'f-group', onchange: () => { state.group = groupSel.value; filtersChanged(); } });
  const labelSel = h('select', { id: 'f-label', onchange: () => { state.label = labelSel.value; filtersChanged(); } });
  const search = h('input', { id: 'f-q', type: 'search', placeholder: 'robot-1', value: state.q, oninput: () => { state.q = search.value.trim(); filtersChanged(); } });
  const count = h('p', { class: 'count', role: 'status', 'aria-live': 'polite' });
  const thead = h('thead');
  const headRow = h('tr');
  const sortButtons = new Map<string, HTMLButtonElement>();
  for (const c of COLS) {
    const b = h('button', { type: 'button', class: 'sort', onclick: () => { if (state.sort === c.key) state.desc = !state.desc; else { state.sort = c.key; state.desc = false; } filtersChanged(); } }, c.label);
    sortButtons.set(c.key, b);
    headRow.append(h('th', { scope: 'col', class: c.cls ?? null, 'data-col': c.key }, b));
  }
  thead.append(headRow);
  const tbody = h('tbody');
  const padTop = h('tr', { class: 'pad', 'aria-hidden': 'true' }, h('td', { colspan: COLS.length }));
  const padBottom = h('tr', { class: 'pad', 'aria-hidden': 'true' }, h('td', { colspan: COLS.length }));
  tbody.append(padTop, padBottom);
  const colgroup = h('colgroup', {}, ...COLS.map((c) => h('col', { 'data-col': c.key, style: `width:${c.w}` })));
  const table = h('table', { class: 'fleet', 'aria-label': 'Devices', 'aria-rowcount': 0 }, colgroup, thead, tbody);
  const scroller = h('div', { class: 'scroller', tabindex: 0, 'aria-label': 'Device table, scrollable' }, table);
  const empty = h('p', { class: 'empty', hidden: true }, 'No devices match these filters.');

  root.replaceChildren(
    h('section', { class: 'fleet-view', 'aria-labelledby': 'fleet-h' },
      h('div', { class: 'bar' },
        h('h1', { id: 'fleet-h' }, 'Fleet'),
        h('div', { class: 'filters', role: 'search' },
          h('label', { for: 'f-group' }, 'Group'), groupSel,
          h('label', { for: 'f-label' }, 'Label'), labelSel,
          h('label', { for: 'f-q' }, 'Device'), search),
        count),
      scroller, empty),
  );

  const pool: HTMLTableRowElement[] = [];
  function makeRow(): HTMLTableRowElement {
    const tr = h('tr');
    for (const c of COLS) {
      const td = h('td', { class: c.cls ?? null, 'data-col': c.key });
      if (c.key === 'id') td.append(h('a', { href: '#' }));
      if (c.key === 'online') td.append(h('span', { class: 'dot', 'aria-hidden': 'true' }), h('span'));
      tr.append(td);
    }
    return tr;
  }
  function fillRow(tr: HTMLTableRowElement, d: DeviceSummary, now: number, index: number): void {
    if (tr.dataset.deviceId !== d.id) {
      tr.dataset.deviceId = d.id;
      const a = tr.cells[0]!.firstElementChild as HTMLAnchorElement;
      a.href = `#/device/${encodeURIComponent(d.id)}`;
    }
    tr.setAttribute('aria-rowindex', String(index + 2));
    tr.classList.toggle('offline', !d.online);
    tr.classList.toggle('failed', d.phase === 'failed' || d.phase === 'rolled-back');
    for (let i = 0; i < COLS.length; i++) {
      const c = COLS[i]!;
      const td = tr.cells[i]!;
      const text = c.text(d, now);
      if (c.key === 'id') setText(td.firstElementChild!, text);
      else if (c.key === 'online') { setText(td.lastElementChild!, text); td.dataset.state = text; }
      else setText(td, text);
    }
    if (d.lastError) tr.title = `${d.lastError.code}: ${d.lastError.message}`;
    else if (tr.title) tr.removeAttribute('title');
  }

  function refreshFilterOptions(): void {
    const groups = new Set<string>();
    const labels = new Set<string>();
    for (const d of store.devices.values()) {
      if (d.group) groups.add(d.group);
      for (const [k, v] of Object.entries(d.labels)) labels.add(`${k}=${v}`);
    }
    const fill = (sel: HTMLSelectElement, values: string[], any: string, cur: string) => {
      const want = ['', ...values].join('\n');
      if (sel.dataset.values !== want) {
        sel.dataset.values = want;
        sel.replaceChildren(h('option', { value: '' }, any), ...values.map((v) => h('option', { value: v }, v)));
      }
      if (cur && !values.includes(cur)) sel.append(h('option', { value: cur }, cur));
      sel.value = cur;
    };
    fill(groupSel, [...groups].sort(collator.compare), 'all groups', state.group);
    fill(labelSel, [...labels].sort(collator.compare), 'any label', state.label);
  }

  function computeRows(): void {
    const [lk, lv] = state.label ? [state.label.slice(0, state.label.indexOf('=')), state.label.slice(state.label.indexOf('=') + 1)] : ['', ''];
    const q = state.q.toLowerCase();
    rows = [...store.devices.values()].filter((d) =>
      (!state.group || d.group === state.group) && (!lk || d.labels[lk] === lv) && (!q || d.id.toLowerCase().includes(q)));
    const col = COLS.find((c) => c.key === state.sort) ?? COLS[0]!;
    const dir = state.desc ? -1 : 1;
    rows.sort((a, b) => {
      const x = col.sort(a), y = col.sort(b);
      const r = typeof x === 'number' && typeof y === 'number' ? x - y : collator.compare(String(x), String(y));
      return (r || collator.compare(a.id, b.id)) * dir;
    });
    for (const [k, b] of sortButtons) {
      const th = b.parentElement!;
      if (k === state.sort) th.setAttribute('aria-sort', state.desc ? 'descending' : 'ascending');
      else th.removeAttribute('aria-sort');
    }
  }

  function filtersChanged(): void {
    const p = new URLSearchParams();
    if (state.group) p.set('group', state.group);
    if (state.label) p.set('label', state.label);
    if (state.q) p.set('q', state.q);
    if (state.sort !== 'id') p.set('sort', state.sort);
    if (state.desc) p.set('desc', '1');
    const qs = p.toString();
    history.replaceState(null, '', `#/fleet${qs ? '?' + qs : ''}`);
    needRows = true;
    schedule();
  }

  function render(): void {
    frame = 0;
    const t0 = performance.now();
    const changed = store.changed;
    store.changed = new Set();
    if (store.structureChanged) { refreshFilterOptions(); store.structureChanged = false; needRows = true; }
    // a sort on a live column reorders on every update
    if (needRows || (state.sort !== 'id' && changed.size > 0)) { computeRows(); needRows = false; }
    const now = Date.now();
    const viewH = scroller.clientHeight || 600;
    const head = thead.offsetHeight || ROW_H;
    const first = Math.max(0, Math.floor((scroller.scrollTop - head) / ROW_H) - OVERSCAN);
    const last = Math.min(rows.length, Math.ceil((scroller.scrollTop + viewH) / ROW_H) + OVERSCAN);
    const want = Math.max(0, last - first);
    while (pool.length < want) { const tr = makeRow(); pool.push(tr); tbody.insertBefore(tr, padBottom); }
    while (pool.length > want) pool.pop()!.remove();
    // rows hold the order; the values are always the newest summaries
    for (let i = 0; i < want; i++) {
      const r = rows[first + i]!;
      fillRow(pool[i]!, store.devices.get(r.id) ?? r, now, first + i);
    }
    (padTop.firstElementChild as HTMLElement).style.height = `${first * ROW_H}px`;
    (padBottom.firstElementChild as HTMLElement).style.height = `${(rows.length - last) * ROW_H}px`;
    padTop.hidden = first === 0;
    padBottom.hidden = last >= rows.length;
    table.setAttribute('aria-rowcount', String(rows.length + 1));
    let online = 0;
    for (const d of store.devices.values()) if (d.online) online++;
    setText(count, `${rows.length} of ${store.devices.size} devices · ${online} online`);
    empty.hidden = rows.length > 0 || store.devices.size === 0;
    void tbody.offsetHeight; // include style and layout in the measured time
    const t1 = performance.now();
    if (changed.size > 0) {
      store.metrics.renderMs.push(t1 - t0);
      store.recordLatency(changed, Date.now());
    }
  }

  function schedule(): void {
    if (!frame) frame = requestAnimationFrame(render);
  }

  const off = store.on('devices', schedule);
  const onScroll = () => schedule();
  scroller.addEventListener('scroll', onScroll, { passive: true });
  window.addEventListener('resize', onScroll);
  const tick = setInterval(schedule, 1000); // "last seen" ages
  refreshFilterOptions();
  schedule();
  return () => {
    off();
    clearInterval(tick);
    window.removeEventListener('resize', onScroll);
    if (frame) cancelAnimationFrame(frame);
  };
}
