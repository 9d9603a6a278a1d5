// Checks a Prometheus text exposition (format 0.0.4) against the naming rules that
// `promtool check metrics` enforces, for tests of the daemon's and the controller's
// /metrics. promtool is a Go binary not installed on the CI machine, and no maintained
// npm package lints expositions, so the rules are written out here, each one a line:
// https://prometheus.io/docs/practices/naming/ and .../instrumenting/writing_exporters/.
export interface PromFamily {
  name: string;
  type: string;
  help: string;
  samples: Array<{ name: string; labels: Record<string, string>; value: number }>;
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const TYPES = new Set(['counter', 'gauge', 'histogram', 'summary', 'untyped']);
/** Unit words that are not base units (seconds, bytes, ratios as 0..1, …), and abbreviations. */
const NON_BASE_UNITS = [
  'milliseconds', 'microseconds', 'nanoseconds', 'minutes', 'hours', 'days', 'weeks',
  'kilobytes', 'megabytes', 'gigabytes', 'kibibytes', 'mebibytes', 'gibibytes', 'bits', 'percent',
  'ms', 'us', 'ns', 'sec', 'secs', 'msec', 'usec', 'kb', 'mb', 'gb', 'kib', 'mib', 'gib',
];
const hasWord = (name: string, word: string) => name.split('_').includes(word);

/** Series names a family of this type owns (histograms and summaries add suffixes). */
function seriesNames(f: { name: string; type: string }): string[] {
  if (f.type === 'histogram') return [`${f.name}_bucket`, `${f.name}_sum`, `${f.name}_count`];
  if (f.type === 'summary') return [f.name, `${f.name}_sum`, `${f.name}_count`];
  return [f.name];
}

function parseLabels(s: string, problems: string[], line: string): Record<string, string> {
  const labels: Record<string, string> = {};
  // name="value" pairs; values escape \\, \" and \n
  const re = /\s*([^=\s]+)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(,|$)/y;
  let at = 0;
  while (at < s.length) {
    re.lastIndex = at;
    const m = re.exec(s);
    if (!m) { problems.push(`unparsable labels in: ${line}`); break; }
    if (m[1]! in labels) problems.push(`label ${m[1]} repeated in: ${line}`);
    labels[m[1]!] = m[2]!.replace(/\\(.)/g, (_x, c: string) => (c === 'n' ? '\n' : c));
    at = re.lastIndex;
  }
  return labels;
}

/** A sample value as Prometheus reads it (Go's ParseFloat: NaN and Inf in any case); null if none. */
function parseValue(v: string): number | null {
  const special = /^([+-]?)(inf|infinity|nan)$/i.exec(v);
  if (special) return special[2]!.toLowerCase() === 'nan' ? NaN : special[1] === '-' ? -Infinity : Infinity;
  const n = Number(v);
  return v.trim() !== '' && !Number.isNaN(n) ? n : null;
}

/** Parses the exposition; malformed lines are reported in `problems`. */
export function parseExposition(text: string): { families: PromFamily[]; problems: string[] } {
  const problems: string[] = [];
  const families: PromFamily[] = [];
  const byName = new Map<string, PromFamily>();
  const owner = new Map<string, PromFamily>();
  const declare = (name: string): PromFamily => {
    let f = byName.get(name);
    if (!f) { f = { name, type: '', help: '', samples: [] }; byName.set(name, f); families.push(f); }
    return f;
  };
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    let m = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(line);
    if (m) {
      const f = declare(m[2]!);
      if (m[1] === 'HELP') {
        if (f.help) problems.push(`${f.name}: HELP given twice`);
        f.help = m[3]!.trim();
      } else {
        if (f.type) problems.push(`${f.name}: TYPE given twice`);
        if (f.samples.length) problems.push(`${f.name}: TYPE after its samples`);
        f.type = m[3]!.trim();
        for (const s of seriesNames(f)) owner.set(s, f);
      }
      continue;
    }
    if (line.startsWith('#')) continue; // a comment
    m = /^([^\s{]+)(?:\{(.*)\})?\s+(\S+)(?:\s+(-?\d+))?$/.exec(line);
    if (!m) { problems.push(`unparsable sample line: ${line}`); continue; }
    const value = parseValue(m[3]!);
    if (value === null) { problems.push(`not a number: ${line}`); continue; }
    const f = owner.get(m[1]!);
    if (!f) { problems.push(`${m[1]}: sample without a TYPE line before it`); continue; }
    f.samples.push({ name: m[1]!, labels: m[2] ? parseLabels(m[2], problems, line) : {}, value });
  }
  return { families, problems };
}

/** Every rule broken by the exposition, as readable sentences; [] when it passes. */
export function lintExposition(text: string): string[] {
  const { families, problems } = parseExposition(text);
  for (const f of families) {
    const n = f.name;
    if (!TYPES.has(f.type)) problems.push(`${n}: TYPE '${f.type}' is not counter, gauge, histogram, summary or untyped`);
    if (!f.help) problems.push(`${n}: no HELP text`);
    if (!NAME.test(n)) problems.push(`${n}: not a valid metric name`);
    else if (n.includes(':')) problems.push(`${n}: ':' is reserved for recording rules`);
    else if (/[A-Z]/.test(n)) problems.push(`${n}: not snake_case`);
    if (f.type === 'counter' && !n.endsWith('_total')) problems.push(`${n}: a counter's name ends in _total`);
    if (f.type !== 'counter' && n.endsWith('_total')) problems.push(`${n}: only counters end in _total (this is a ${f.type})`);
    if (f.type !== 'histogram' && f.type !== 'summary' && /_(bucket|count|sum)$/.test(n)) {
      problems.push(`${n}: _bucket, _count and _sum are reserved for histograms and summaries`);
    }
    for (const t of ['counter', 'gauge', 'histogram', 'summary']) if (hasWord(n, t)) problems.push(`${n}: the name repeats the type '${t}'`);
    for (const u of NON_BASE_UNITS) if (hasWord(n, u)) problems.push(`${n}: '${u}' is not a base unit (use seconds, bytes, ratios)`);
    const series = new Set<string>();
    for (const s of f.samples) {
      for (const l of Object.keys(s.labels)) {
        if (!LABEL.test(l) || l.startsWith('__')) problems.push(`${n}: bad label name '${l}'`);
        else if (/[A-Z]/.test(l)) problems.push(`${n}: label '${l}' is not snake_case`);
        if (l === 'le' && f.type !== 'histogram') problems.push(`${n}: label 'le' is reserved for histogram buckets`);
        if (l === 'quantile' && f.type !== 'summary') problems.push(`${n}: label 'quantile' is reserved for summaries`);
      }
      const key = `${s.name}${JSON.stringify(Object.entries(s.labels).sort())}`;
      if (series.has(key)) problems.push(`${n}: series ${key} repeated`);
      series.add(key);
      if (f.type === 'counter' && !(s.value >= 0)) problems.push(`${n}: counter value ${s.value} is negative or NaN`);
    }
    if (f.type === 'histogram') problems.push(...histogramProblems(f));
  }
  return problems;
}

/** Buckets cumulative, a +Inf bucket per series, _count equal to it. */
function histogramProblems(f: PromFamily): string[] {
  const out: string[] = [];
  const groups = new Map<string, { buckets: Array<[number, number]>; count?: number }>();
  for (const s of f.samples) {
    const { le, ...rest } = s.labels;
    const key = JSON.stringify(Object.entries(rest).sort());
    const g = groups.get(key) ?? { buckets: [] };
    groups.set(key, g);
    if (s.name.endsWith('_bucket')) {
      if (le === undefined) out.push(`${f.name}: a bucket without 'le'`);
      else g.buckets.push([le === '+Inf' ? Infinity : Number(le), s.value]);
    } else if (s.name.endsWith('_count')) g.count = s.value;
  }
  for (const [key, g] of groups) {
    const b = g.buckets.sort((x, y) => x[0] - y[0]);
    if (b.at(-1)?.[0] !== Infinity) out.push(`${f.name}${key}: no le="+Inf" bucket`);
    for (let i = 1; i < b.length; i++) if (b[i]![1] < b[i - 1]![1]) out.push(`${f.name}${key}: buckets not cumulative at le=${b[i]![0]}`);
    if (g.count !== undefined && b.length && b.at(-1)![1] !== g.count) out.push(`${f.name}${key}: _count ${g.count} differs from the +Inf bucket ${b.at(-1)![1]}`);
  }
  return out;
}
