// A time-series panel over uPlot: the last hour of one or more series, appended to
// live, redrawn at most once per animation frame, resized with its container.
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import { h } from './dom.js';

const WINDOW_SEC = 3600;
const PALETTE = ['#2563eb', '#dc2626', '#16a34a', '#d97706', '#7c3aed', '#0891b2', '#db2777', '#4b5563'];

/** Tick labels short enough for a narrow axis: 12, 1.5, 12.3k, 4.1M. */
export function compactTick(v: number): string {
  const a = Math.abs(v);
  if (a >= 1e6) return `${+(v / 1e6).toFixed(1)}M`;
  if (a >= 1e4) return `${+(v / 1e3).toFixed(1)}k`;
  return String(+v.toFixed(a >= 100 ? 0 : a >= 10 ? 1 : 2));
}

/**
 * The y axis is as wide as its longest tick label (measured on the plot's own canvas
 * font) so no label is clipped at the left edge; uPlot calls this again when the
 * labels change. The widths land in data-ylabel-px / data-yaxis-px for the tests.
 */
function yAxisSize(el: HTMLElement) {
  return (u: uPlot, values: string[] | null, axisIdx: number, cycleNum: number): number => {
    const axis = u.axes[axisIdx]!;
    const prev = (axis as { _size?: number })._size;
    if (cycleNum > 1 && prev) return prev; // converging: keep the size of the last pass
    let widest = 0;
    if (values?.length) {
      u.ctx.font = (axis.font as unknown as [string])[0] ?? u.ctx.font;
      for (const v of values) widest = Math.max(widest, u.ctx.measureText(v).width / devicePixelRatio);
    }
    // tick length + gap between tick and label (uPlot's defaults 10 and 5) + a margin at the left edge
    const size = Math.ceil(widest + (axis.ticks?.size ?? 10) + (axis.gap ?? 5) + 6);
    el.dataset.ylabelPx = String(Math.ceil(widest));
    el.dataset.yaxisPx = String(size);
    return size;
  };
}

export class TimeChart {
  readonly el: HTMLElement;
  private plot: uPlot | null = null;
  private xs: number[] = [];
  private ys = new Map<string, (number | null)[]>();
  private frame = 0;
  private readonly body: HTMLElement;
  private readonly note: HTMLElement;
  private readonly ro: ResizeObserver;

  constructor(readonly id: string, readonly title: string, readonly unit: string, private readonly range?: [number, number]) {
    this.body = h('div', { class: 'plot' });
    this.note = h('p', { class: 'nodata' }, 'not reported by this device');
    this.el = h('figure', { class: 'chart', id: `chart-${id}`, 'data-points': 0, 'aria-label': `${title} over the last hour` },
      h('figcaption', {}, `${title}`, h('span', { class: 'unit' }, unit ? ` (${unit})` : '')), this.body, this.note);
    this.ro = new ResizeObserver(() => this.resize());
    this.ro.observe(this.body);
  }

  /** Adds one sample; values keyed by series name (null = gap). */
  push(tsMs: number, values: Record<string, number | null | undefined>, redraw = true): void {
    const x = tsMs / 1000;
    if (this.xs.length && x <= this.xs[this.xs.length - 1]!) {
      if (x === this.xs[this.xs.length - 1]) return; // duplicate (history + live overlap)
      // out of order (history arriving after live points): insert in place
      const i = this.xs.findIndex((t) => t > x);
      if (this.xs[i - 1] === x) return;
      this.xs.splice(i, 0, x);
      for (const arr of this.ys.values()) arr.splice(i, 0, null);
      this.set(i, values);
    } else {
      this.xs.push(x);
      for (const arr of this.ys.values()) arr.push(null);
      this.set(this.xs.length - 1, values);
    }
    const cut = this.xs[this.xs.length - 1]! - WINDOW_SEC;
    let drop = 0;
    while (drop < this.xs.length && this.xs[drop]! < cut) drop++;
    if (drop) { this.xs.splice(0, drop); for (const arr of this.ys.values()) arr.splice(0, drop); }
    if (redraw) this.schedule();
  }

  private set(i: number, values: Record<string, number | null | undefined>): void {
    for (const [k, v] of Object.entries(values)) {
      if (v === undefined) continue;
      let arr = this.ys.get(k);
      if (!arr) {
        arr = new Array(this.xs.length).fill(null);
        this.ys.set(k, arr);
        this.plot?.destroy();
        this.plot = null; // new series: rebuild
      }
      arr[i] = v === null || !Number.isFinite(v) ? null : v;
    }
  }

  schedule(): void {
    if (!this.frame) this.frame = requestAnimationFrame(() => { this.frame = 0; this.draw(); });
  }

  private points(): number {
    let n = 0;
    for (const arr of this.ys.values()) for (const v of arr) if (v !== null) { n++; }
    return n;
  }

  private draw(): void {
    const pts = this.points();
    this.el.dataset.points = String(pts);
    this.el.dataset.samples = String(this.xs.length);
    this.note.hidden = pts > 0;
    this.body.hidden = pts === 0;
    if (pts === 0) return;
    const names = [...this.ys.keys()];
    const data = [this.xs, ...names.map((k) => this.ys.get(k)!)] as uPlot.AlignedData;
    if (!this.plot) {
      const w = Math.max(200, this.body.clientWidth || 400);
      this.plot = new uPlot({
        width: w, height: 170,
        cursor: { drag: { x: false, y: false } },
        legend: { live: true },
        scales: { x: { time: true }, y: this.range ? { range: (_u, min, max) => [Math.min(this.range![0], min), Math.max(this.range![1], max)] } : { auto: true } },
        axes: [
          { stroke: '#64748b', grid: { stroke: '#e2e8f0' } },
          { stroke: '#64748b', grid: { stroke: '#e2e8f0' }, values: (_u, splits) => splits.map(compactTick), size: yAxisSize(this.el) },
        ],
        series: [{}, ...names.map((k, i) => ({ label: k, stroke: PALETTE[i % PALETTE.length], width: 1.5, spanGaps: false, points: { show: false } }))],
      }, data, this.body);
    } else {
      this.plot.setData(data);
    }
  }

  private resize(): void {
    if (!this.plot) return;
    const w = Math.max(200, this.body.clientWidth);
    if (Math.abs(w - this.plot.width) > 2) this.plot.setSize({ width: w, height: 170 });
  }

  destroy(): void {
    if (this.frame) cancelAnimationFrame(this.frame);
    this.ro.disconnect();
    this.plot?.destroy();
  }
}
