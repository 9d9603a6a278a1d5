// Serves the fleet dashboard (packages/controller/web, built by `make web` into packages/controller/dist/web)
// from the API's HTTP server: `/` is the page, `/assets/*` its hashed scripts and
// styles. The files hold no fleet data and need no token; every request the page
// makes for data goes to /api with the bearer token. Reference: docs/dashboard.md.
import fs from 'node:fs';
import type http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ShoalError } from '@shoal/common';

/** packages/controller/dist/src/web.js -> packages/controller/dist/web */
export const WEB_DIR = process.env.SHOAL_WEB_DIR ?? path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../web');

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml', '.png': 'image/png', '.json': 'application/json; charset=utf-8', '.map': 'application/json; charset=utf-8',
  '.woff2': 'font/woff2', '.ico': 'image/x-icon', '.txt': 'text/plain; charset=utf-8',
};

// everything the page loads comes from this server; no inline scripts
const SECURITY_HEADERS = {
  'Content-Security-Policy': "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
  'X-Content-Type-Options': 'nosniff',
  'Referrer-Policy': 'no-referrer',
  'X-Frame-Options': 'DENY',
};

/** True when the path belongs to the dashboard (the caller routes it here). */
export function isWebPath(parts: string[]): boolean {
  return parts.length === 0 || (parts.length === 1 && (parts[0] === 'index.html' || parts[0] === 'favicon.svg')) || (parts[0] === 'assets' && parts.length === 2);
}

export function serveWeb(req: http.IncomingMessage, res: http.ServerResponse, parts: string[]): void {
  const method = req.method ?? 'GET';
  if (method !== 'GET' && method !== 'HEAD') throw new ShoalError('METHOD_NOT_ALLOWED', `${method} is not allowed on the dashboard; use GET`);
  const rel = parts.length === 0 ? 'index.html' : parts.map((p) => decodeURIComponent(p)).join('/');
  if (rel.split('/').some((s) => s === '' || s === '.' || s === '..' || s.includes('\\') || s.includes('\0'))) throw new ShoalError('NOT_FOUND', 'no such file');
  const file = path.join(WEB_DIR, rel);
  let st: fs.Stats;
  try { st = fs.statSync(file); } catch {
    if (rel === 'index.html') throw new ShoalError('NOT_FOUND', `the dashboard is not built (${WEB_DIR} has no index.html); run \`make web\` (or \`make\`)`);
    throw new ShoalError('NOT_FOUND', `no dashboard file /${rel}`);
  }
  if (!st.isFile()) throw new ShoalError('NOT_FOUND', `no dashboard file /${rel}`);
  const hashed = parts[0] === 'assets';
  res.writeHead(200, {
    'Content-Type': TYPES[path.extname(file)] ?? 'application/octet-stream',
    'Content-Length': st.size,
    // assets carry a content hash in their names; the page itself is always revalidated
    'Cache-Control': hashed ? 'public, max-age=31536000, immutable' : 'no-cache',
    ...SECURITY_HEADERS,
  });
  if (method === 'HEAD') { res.end(); return; }
  fs.createReadStream(file).on('error', () => res.destroy()).pipe(res);
}
