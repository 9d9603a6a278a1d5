// json-constraint.ts — a character-level JSON recognizer driven by a JSON
// schema, for constrained decoding: feed() says whether a character keeps the
// text a valid prefix of a document that matches the schema. States are
// immutable (a linked stack of small frames), so exploring a token trie shares
// every prefix's state for free, and key() names a state for the mask cache.
//
// Written by hand: the JS grammar libraries found (e.g. for llama.cpp GBNF) do
// not expose an incremental, shareable per-character state, which the trie
// walk needs. Supported schema subset (OpenAI structured outputs): type
// (incl. arrays of types / nullable), properties, required,
// additionalProperties, items, minItems/maxItems, enum, const, anyOf/oneOf
// whose branches start differently, $ref to #/$defs or #/definitions,
// minLength/maxLength, integer/number. Objects with properties accept only
// the listed keys (a subset of what the schema allows, so the output still
// validates). Whitespace: at most one space or newline between tokens, so a
// model cannot stall in blanks.
import { ShoalError } from '@shoal/common';
import { TOOL_MARKER } from './tool-format.js';

/** A schema constrained decoding cannot follow; `path` is the JSON path of the culprit. */
export class SchemaError extends ShoalError {
  constructor(message: string, readonly path: string) {
    super('SHOAL_ERR_INVALID_ARG', message, { path });
    this.name = 'SchemaError';
  }
}

type Kind = 'object' | 'array' | 'string' | 'number' | 'integer' | 'boolean' | 'null';
const KINDS: Kind[] = ['object', 'array', 'string', 'number', 'integer', 'boolean', 'null'];

/** A compiled schema node. */
export interface Node {
  kinds: Set<Kind>;
  /** Exact JSON texts allowed (enum/const), replacing kinds when set. */
  literals?: string[];
  props?: Map<string, Node>;
  required?: Set<string>;
  /** Any key allowed (json_object or an object without properties). */
  anyKeys?: boolean;
  additional?: Node;
  items?: Node;
  minItems?: number;
  maxItems?: number;
  minLength?: number;
  maxLength?: number;
  /** anyOf branches, dispatched on their first character. */
  branches?: Node[];
}

/** Any JSON value (objects with any keys, arrays of anything). */
const ANY: Node = { kinds: new Set(KINDS), anyKeys: true };
ANY.additional = ANY;
ANY.items = ANY;

/** Compiles a JSON schema (or null for json_object: any JSON object). */
export function compileSchema(schema: Record<string, unknown> | null): Node {
  if (schema === null) return { kinds: new Set(['object']), anyKeys: true, additional: ANY };
  const defs = { ...(schema.definitions as object | undefined), ...(schema.$defs as object | undefined) } as Record<string, unknown>;
  const cache = new Map<unknown, Node>();
  const compile = (s: unknown, path: string, depth: number): Node => {
    if (depth > 64) throw new SchemaError('schema nests more than 64 levels', path);
    if (s === true || s === undefined) return ANY;
    if (s === false || s === null || typeof s !== 'object' || Array.isArray(s)) throw new SchemaError('must be a schema object', path);
    const o = s as Record<string, unknown>;
    if (typeof o.$ref === 'string') {
      const m = /^#\/(\$defs|definitions)\/(.+)$/.exec(o.$ref);
      if (!m || !(m[2]! in defs)) throw new SchemaError(`$ref '${o.$ref}' must point into #/$defs or #/definitions`, path);
      const target = defs[m[2]!];
      const hit = cache.get(target);
      if (hit) return hit;
      const n: Node = { kinds: new Set() };
      cache.set(target, n); // recursion: filled in place
      Object.assign(n, compile(target, `${path}.$ref`, depth + 1));
      return n;
    }
    // keywords whose constraint the recognizer cannot enforce: refuse rather than emit output that fails validation
    for (const k of ['pattern', 'patternProperties', 'allOf', 'not', 'if', 'prefixItems', 'uniqueItems', 'contains', 'dependentRequired',
      'dependentSchemas', 'minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum', 'multipleOf', 'format', 'minProperties', 'maxProperties'])
      if (k in o) throw new SchemaError(`'${k}' is not supported for constrained decoding`, `${path}.${k}`);
    const alts = (o.anyOf ?? o.oneOf) as unknown;
    if (alts !== undefined) {
      if (!Array.isArray(alts) || alts.length === 0) throw new SchemaError('anyOf/oneOf must be a non-empty array', path);
      const branches = alts.map((a, i) => compile(a, `${path}.anyOf[${i}]`, depth + 1));
      const seen = new Map<string, number>();
      branches.forEach((b, i) => {
        for (const c of firstChars(b)) {
          if (seen.has(c)) throw new SchemaError(`anyOf branches ${seen.get(c)} and ${i} can both start with '${c}'; constrained decoding needs branches that start differently`, path);
          seen.set(c, i);
        }
      });
      return { kinds: new Set(), branches };
    }
    if ('const' in o) return { kinds: new Set(), literals: [JSON.stringify(o.const)] };
    if (Array.isArray(o.enum)) {
      if (o.enum.length === 0) throw new SchemaError('enum must not be empty', `${path}.enum`);
      return { kinds: new Set(), literals: o.enum.map((v) => JSON.stringify(v)) };
    }
    let kinds: Kind[];
    if (o.type === undefined) kinds = o.properties ? ['object'] : o.items ? ['array'] : [...KINDS];
    else {
      const ts = Array.isArray(o.type) ? o.type : [o.type];
      for (const t of ts) if (!KINDS.includes(t as Kind)) throw new SchemaError(`unknown type '${String(t)}'`, `${path}.type`);
      kinds = ts as Kind[];
    }
    const n: Node = { kinds: new Set(kinds) };
    if (n.kinds.has('object')) {
      if (o.properties && typeof o.properties === 'object') {
        n.props = new Map();
        for (const [k, v] of Object.entries(o.properties as object)) n.props.set(k, compile(v, `${path}.properties.${k}`, depth + 1));
        n.required = new Set(Array.isArray(o.required) ? (o.required as string[]) : []);
        for (const r of n.required) if (!n.props.has(r)) throw new SchemaError(`required property '${r}' is not in properties`, `${path}.required`);
      } else {
        n.anyKeys = true;
        n.additional = o.additionalProperties === false ? undefined : compile(o.additionalProperties === undefined ? true : o.additionalProperties, `${path}.additionalProperties`, depth + 1);
        if (!n.additional) { n.anyKeys = false; n.props = new Map(); n.required = new Set(); }
      }
    }
    if (n.kinds.has('array')) {
      n.items = compile(o.items === undefined ? true : o.items, `${path}.items`, depth + 1);
      if (typeof o.minItems === 'number') n.minItems = o.minItems;
      if (typeof o.maxItems === 'number') n.maxItems = o.maxItems;
    }
    if (n.kinds.has('string')) {
      if (typeof o.minLength === 'number') n.minLength = o.minLength;
      if (typeof o.maxLength === 'number') n.maxLength = o.maxLength;
    }
    return n;
  };
  return compile(schema, 'schema', 0);
}

function firstChars(n: Node): string[] {
  if (n.branches) return n.branches.flatMap(firstChars);
  if (n.literals) return [...new Set(n.literals.map((l) => l[0]!))];
  const out: string[] = [];
  for (const k of n.kinds) {
    if (k === 'object') out.push('{');
    else if (k === 'array') out.push('[');
    else if (k === 'string') out.push('"');
    else if (k === 'number' || k === 'integer') out.push('-', ...'0123456789');
    else if (k === 'boolean') out.push('t', 'f');
    else out.push('n');
  }
  return [...new Set(out)];
}

// ---- the recognizer --------------------------------------------------------

const MAX_INT_DIGITS = 15;
const MAX_FRAC_DIGITS = 9;
const MAX_EXP_DIGITS = 3;

/** One frame; `done` frames may still take characters (numbers, literals that prefix others). */
type Frame =
  | { t: 'value'; node: Node; ws: boolean }
  | { t: 'lit'; opts: string[]; pos: number; next?: Record<string, Node> } // next: the value that follows each option (tool-call names)
  | { t: 'then'; f: Frame } // activated once the frame above it completes (a fixed suffix)
  | { t: 'str'; node: Node | null; len: number; esc: number; key: boolean } // esc: 0 none, 1 after '\', 2..5 in \uXXXX
  | { t: 'num'; int: boolean; part: 0 | 1 | 2 | 3 | 4 | 5 | 6; digits: number } // 0 start, 1 after '-', 2 int digits (leading 0: digits=-1), 3 after '.', 4 frac, 5 after e/E(+/-), 6 exp digits
  | { t: 'obj'; node: Node; st: 0 | 1 | 2 | 3 | 4; seen: string[]; key: string; ws: boolean } // 0 after '{', 1 in key (child), 2 after key (expect ':'), 3 after value (expect , or }), 4 after ',' (expect key)
  | { t: 'arr'; node: Node; st: 0 | 1 | 2; n: number; ws: boolean } // 0 after '[', 1 after value (expect , or ]), 2 after ',' (expect value)
  | { t: 'calls'; n: number; max: number; more: Record<string, Node>; end: string } // tool calls: n done; `more` starts the next
  | { t: 'end'; ws: boolean };

export interface State {
  readonly f: Frame;
  readonly up: State | null;
  /** memoised key() */
  k?: string;
}

const push = (up: State | null, f: Frame): State => ({ f, up });

export interface ToolSpec { name: string; parameters?: Record<string, unknown> }

/** How the calls are written (tool-format.ts ToolFormat). */
export interface ToolCallSyntax { open: string; callPrefix: string; callSuffix: string; separator: string; close: string; argsKey: string }

export class JsonConstraint {
  readonly root: Node;
  private start: State;
  constructor(schema: Record<string, unknown> | null) {
    this.root = compileSchema(schema);
    this.start = push(push(null, { t: 'end', ws: false }), { t: 'value', node: this.root, ws: false });
  }

  /**
   * One to `maxCalls` tool calls:
   * `open` (callPrefix{"name": "<tool>", "<argsKey>": <arguments>}callSuffix) joined by `separator`, then `close`.
   * Each name is one of the tools and its arguments match that tool's
   * parameters schema; after each call only EOS (or `close`) or the separator
   * of a next call may follow.
   */
  static toolCall(tools: ToolSpec[], f: ToolCallSyntax, maxCalls = 1): JsonConstraint {
    if (!Number.isInteger(maxCalls) || maxCalls < 1) throw new SchemaError(`maxCalls must be a positive integer, got ${maxCalls}`, 'tools');
    const c = new JsonConstraint(null);
    const first: Record<string, Node> = {};
    const more: Record<string, Node> = {};
    for (const t of tools) {
      const params = t.parameters && Object.keys(t.parameters).length ? t.parameters : { type: 'object' };
      const node = compileSchema(params);
      const head = `${f.callPrefix}{"name": ${JSON.stringify(t.name)}, ${JSON.stringify(f.argsKey)}: `;
      first[f.open + head] = node;
      more[f.separator + head] = node;
    }
    const end = `}${f.callSuffix}`;
    // no trailing blank: after a call come only EOS, `close` or the next call's separator
    let st = push(null, { t: 'end', ws: true });
    if (f.close) st = push(st, { t: 'then', f: { t: 'lit', opts: [f.close], pos: 0 } });
    st = push(st, { t: 'calls', n: 0, max: maxCalls, more, end });
    st = push(st, { t: 'then', f: { t: 'lit', opts: [end], pos: 0 } });
    c.start = push(st, { t: 'lit', opts: Object.keys(first), pos: 0, next: first });
    return c;
  }

  initial(): State {
    return this.start;
  }

  /**
   * Inside free string text (no pending escape, no listed keys to match): how
   * many more plain characters fit (Infinity without maxLength); null
   * otherwise. Any text without '"', '\\' or control characters of at most
   * that length is then accepted without changing anything but the length.
   */
  freeStringRoom(s: State): number | null {
    const f = s.f;
    if (f.t !== 'str' || f.esc !== 0) return null;
    if (f.key) return (f as unknown as KeyFrame).keys === null ? Infinity : null;
    return f.node?.maxLength !== undefined ? f.node.maxLength - f.len : Infinity;
  }

  /** True when the text so far is a complete document (only EOS may follow). */
  isComplete(s: State): boolean {
    // a trailing number or literal-prefix may still be complete
    let cur: State | null = s;
    while (cur) {
      const f = cur.f;
      if (f.t === 'end') return true;
      if (!frameDone(f)) return false;
      cur = completeInto(cur.up!, f);
      if (!cur) return false;
    }
    return false;
  }

  /** Stable name of a state: equal keys accept exactly the same continuations. */
  key(s: State): string {
    if (s.k !== undefined) return s.k;
    const f = s.f;
    let own: string;
    switch (f.t) {
      case 'value': own = `v${nodeId(f.node)}${f.ws ? 'w' : ''}`; break;
      case 'lit': own = `l${JSON.stringify(f.opts)}@${f.pos}`; break;
      case 'then': own = `t${f.f.t === 'lit' ? JSON.stringify(f.f.opts) : ''}`; break;
      case 'str': own = f.key ? `k${JSON.stringify((f as unknown as KeyFrame).keyText)}e${f.esc}` : `s${f.node ? nodeId(f.node) : ''}${f.node?.maxLength !== undefined || f.node?.minLength !== undefined ? `:${f.len}` : ''}e${f.esc}${f.key ? 'k' : ''}`; break;
      case 'num': own = `n${f.int ? 'i' : ''}${f.part}:${f.digits}`; break;
      case 'obj': own = `o${nodeId(f.node)}${f.st}${f.ws ? 'w' : ''}${JSON.stringify(f.seen)}${f.st === 2 ? JSON.stringify(f.key) : ''}`; break;
      case 'arr': own = `a${nodeId(f.node)}${f.st}${f.ws ? 'w' : ''}${f.node.maxItems !== undefined || f.node.minItems !== undefined ? `:${f.n}` : ''}`; break;
      case 'calls': own = `c${f.n}`; break;
      case 'end': own = `e${f.ws ? 'w' : ''}`; break;
    }
    s.k = (s.up ? this.key(s.up) + '|' : '') + own;
    return s.k;
  }

  /** The state after character c, or null when c cannot continue a valid document. */
  feed(s: State, c: string): State | null {
    return step(s, c);
  }

  /** Feeds a whole string; null as soon as a character is rejected. */
  feedText(s: State | null, text: string): State | null {
    for (const c of text) {
      if (!s) return null;
      s = step(s, c);
    }
    return s;
  }
}

let nextNodeId = 1;
const nodeIds = new WeakMap<Node, number>();
function nodeId(n: Node): number {
  let id = nodeIds.get(n);
  if (id === undefined) { id = nextNodeId++; nodeIds.set(n, id); }
  return id;
}

const isWs = (c: string) => c === ' ' || c === '\n';
const isDigit = (c: string) => c >= '0' && c <= '9';

function frameDone(f: Frame): boolean {
  if (f.t === 'num') return f.part === 2 || f.part === 4 || f.part === 6;
  if (f.t === 'lit') return f.opts.some((o) => o.length === f.pos);
  if (f.t === 'calls') return f.n >= 1;
  return false;
}

/** The parent after child frame f completed, or null when the parent cannot accept it. */
function completeInto(up: State, f: Frame): State | null {
  if (f.t === 'lit' && f.next) {
    const opt = f.opts.find((o) => o.length === f.pos)!;
    return push(up, { t: 'value', node: f.next[opt]!, ws: false });
  }
  const p = up.f;
  if (p.t === 'end') return up;
  if (p.t === 'then') return push(up.up, p.f);
  if (p.t === 'calls') return push(up.up, { ...p, n: p.n + 1 });
  if (p.t === 'arr') return push(up.up, { ...p, st: 1, n: p.n + 1, ws: false });
  if (p.t === 'obj' && p.st === 2) return push(up.up, { ...p, st: 3, seen: [...p.seen, p.key], ws: false });
  void f;
  return null;
}

function startValue(up: State, node: Node, c: string): State | null {
  if (node.branches) {
    for (const b of node.branches) if (firstChars(b).includes(c)) return startValue(up, b, c);
    return null;
  }
  if (node.literals) {
    const opts = node.literals.filter((l) => l[0] === c);
    return opts.length ? afterLit(up, opts, 1) : null;
  }
  const k = node.kinds;
  if (c === '{' && k.has('object')) return push(up, { t: 'obj', node, st: 0, seen: [], key: '', ws: false });
  if (c === '[' && k.has('array')) return push(up, { t: 'arr', node, st: 0, n: 0, ws: false });
  if (c === '"' && k.has('string')) return push(up, { t: 'str', node, len: 0, esc: 0, key: false });
  if ((c === '-' || isDigit(c)) && (k.has('number') || k.has('integer'))) {
    const int = !k.has('number');
    return push(up, c === '-' ? { t: 'num', int, part: 1, digits: 0 } : { t: 'num', int, part: 2, digits: c === '0' ? -1 : 1 });
  }
  const lits: string[] = [];
  if (k.has('boolean')) lits.push('true', 'false');
  if (k.has('null')) lits.push('null');
  const opts = lits.filter((l) => l[0] === c);
  return opts.length ? afterLit(up, opts, 1) : null;
}

function afterLit(up: State, opts: string[], pos: number, next?: Record<string, Node>): State | null {
  const f: Frame = next ? { t: 'lit', opts, pos, next } : { t: 'lit', opts, pos };
  // a literal that is complete and prefixes no other option finishes at once
  if (opts.length === 1 && opts[0]!.length === pos) return completeInto(up, f);
  return push(up, f);
}

function step(s: State, c: string): State | null {
  const f = s.f;
  const up = s.up;
  switch (f.t) {
    case 'end':
      return !f.ws && isWs(c) ? push(up, { t: 'end', ws: true }) : null;
    case 'then':
      return null; // never on top
    case 'calls': {
      // after a call: the separator of another one, or the end of the calls
      if (f.n < f.max) {
        const opts = Object.keys(f.more).filter((o) => o[0] === c);
        if (opts.length) return afterLit(push(s, { t: 'then', f: { t: 'lit', opts: [f.end], pos: 0 } }), opts, 1, f.more);
      }
      if (!frameDone(f)) return null;
      const parent = completeInto(up!, f);
      return parent ? step(parent, c) : null;
    }
    case 'value':
      if (isWs(c)) return f.ws ? null : push(up, { ...f, ws: true });
      return startValue(up!, f.node, c);
    case 'lit': {
      const opts = f.opts.filter((o) => o.length > f.pos && o[f.pos] === c);
      if (opts.length) return afterLit(up!, opts, f.pos + 1, f.next);
      if (f.opts.some((o) => o.length === f.pos)) {
        const parent = completeInto(up!, f);
        return parent ? step(parent, c) : null;
      }
      return null;
    }
    case 'num': {
      const d = isDigit(c);
      switch (f.part) {
        case 1: return d ? push(up, { ...f, part: 2, digits: c === '0' ? -1 : 1 }) : null;
        case 2:
          if (d) return f.digits === -1 || f.digits >= MAX_INT_DIGITS ? null : push(up, { ...f, digits: f.digits + 1 });
          if (c === '.' && !f.int) return push(up, { ...f, part: 3, digits: 0 });
          if ((c === 'e' || c === 'E') && !f.int) return push(up, { ...f, part: 5, digits: 0 });
          break;
        case 3: return d ? push(up, { ...f, part: 4, digits: 1 }) : null;
        case 4:
          if (d) return f.digits >= MAX_FRAC_DIGITS ? null : push(up, { ...f, digits: f.digits + 1 });
          if (c === 'e' || c === 'E') return push(up, { ...f, part: 5, digits: 0 });
          break;
        case 5:
          if (d) return push(up, { ...f, part: 6, digits: 1 });
          if ((c === '+' || c === '-') && f.digits === 0) return push(up, { ...f, digits: 1 });
          return null;
        case 6:
          if (d) return f.digits >= MAX_EXP_DIGITS ? null : push(up, { ...f, digits: f.digits + 1 });
          break;
        default: return null;
      }
      if (!frameDone(f)) return null;
      const parent = completeInto(up!, f);
      return parent ? step(parent, c) : null;
    }
    case 'str': {
      if (f.esc === 1) {
        if (c === 'u') return push(up, { ...f, esc: 2 });
        if ('"\\/bfnrt'.includes(c)) return strChar(s, f, c);
        return null;
      }
      if (f.esc >= 2) {
        if (!/[0-9a-fA-F]/.test(c)) return null;
        if (f.esc < 5) return push(up, { ...f, esc: f.esc + 1 });
        return strChar(s, { ...f, esc: 0 }, 'u');
      }
      if (c === '"') {
        if (f.node?.minLength !== undefined && f.len < f.node.minLength) return null;
        if (f.key) return keyDone(s, f);
        return completeInto(up!, f);
      }
      if (c === '\\') {
        // listed keys are matched as plain text: no escapes in them
        if (f.key && (f as unknown as KeyFrame).keys !== null) return null;
        if (f.node?.maxLength !== undefined && f.len >= f.node.maxLength) return null;
        return push(up, { ...f, esc: 1 });
      }
      if (c < ' ') return null; // control characters must be escaped
      if (c === TOOL_MARKER) return null; // a special token's stand-in, never string text
      return strChar(s, f, c);
    }
    case 'obj': {
      const n = f.node;
      if (isWs(c)) return f.ws || f.st === 1 ? null : push(up, { ...f, ws: true });
      if (f.st === 0 || f.st === 4) {
        if (c === '}' && f.st === 0) return closeObj(up!, f);
        if (c !== '"') return null;
        const keys = remainingKeys(n, f.seen);
        if (keys !== null && keys.length === 0) return null;
        const me = push(up, { ...f, st: 1, ws: false });
        return push(me, { t: 'str', node: null, len: 0, esc: 0, key: true, keyText: '', keys } as Frame);
      }
      if (f.st === 2) {
        if (c !== ':') return null;
        const child = n.props?.get(f.key) ?? n.additional ?? ANY;
        return push(push(up, { ...f, ws: false }), { t: 'value', node: child, ws: false });
      }
      if (f.st === 3) {
        if (c === '}') return closeObj(up!, f);
        if (c === ',') {
          const keys = remainingKeys(n, f.seen);
          return keys !== null && keys.length === 0 ? null : push(up, { ...f, st: 4, ws: false });
        }
      }
      return null;
    }
    case 'arr': {
      const n = f.node;
      if (isWs(c)) return f.ws ? null : push(up, { ...f, ws: true });
      if (f.st === 1 || f.st === 0) {
        if (c === ']') return f.n >= (n.minItems ?? 0) ? completeInto(up!, f) : null;
        if (f.st === 1) return c === ',' && f.n < (n.maxItems ?? Infinity) ? push(up, { ...f, st: 2, ws: false }) : null;
      }
      if (f.n >= (n.maxItems ?? Infinity)) return null;
      const me = push(up, { ...f, st: 1, ws: false });
      return startValue(me, n.items ?? ANY, c);
    }
  }
}

type KeyFrame = { t: 'str'; node: null; len: number; esc: number; key: true; keyText: string; keys: string[] | null };

/** Keys still allowed in an object (null: any key). */
function remainingKeys(n: Node, seen: string[]): string[] | null {
  if (n.anyKeys) return null;
  return [...n.props!.keys()].filter((k) => !seen.includes(k));
}

function strChar(s: State, f: Frame & { t: 'str' }, c: string): State | null {
  // c is the decoded character for keys (escapes resolved approximately: the
  // escape letter stands for itself, enough to keep listed keys plain)
  if (f.key) {
    const kf = f as unknown as KeyFrame;
    const text = kf.keyText + (f.esc === 1 ? '\\' + c : c);
    if (kf.keys && !kf.keys.some((k) => k.startsWith(text))) return null;
    return push(s.up, { ...kf, esc: 0, keyText: text, len: f.len + 1 } as Frame);
  }
  if (f.node?.maxLength !== undefined && f.len >= f.node.maxLength) return null;
  return push(s.up, { ...f, esc: 0, len: f.len + 1 });
}

function keyDone(s: State, f: Frame & { t: 'str' }): State | null {
  const kf = f as unknown as KeyFrame;
  if (kf.keys && !kf.keys.includes(kf.keyText)) return null;
  const objState = s.up!;
  const o = objState.f as Frame & { t: 'obj' };
  if (o.seen.includes(kf.keyText)) return null; // no duplicate keys
  return push(objState.up, { ...o, st: 2, key: kf.keyText, ws: false });
}

function closeObj(up: State, f: Frame & { t: 'obj' }): State | null {
  if (f.node.required) for (const r of f.node.required) if (!f.seen.includes(r)) return null;
  return completeInto(up, f);
}
