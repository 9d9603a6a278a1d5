// Entry: token (from `#token=…` as `shoal up` prints it, or typed once), the live
// stream, and a hash router over the three views.
import './style.css';
import { ApiError, LiveStream, api, getToken, setToken } from './api.js';
import { deviceView } from './device.js';
import { h } from './dom.js';
import { fleetView } from './fleet.js';
import { rolloutsView } from './rollouts.js';
import { store } from './store.js';

const main = document.getElementById('main')!;
const conn = document.getElementById('conn')!;
const signout = document.getElementById('signout') as HTMLButtonElement;
let cleanup: (() => void) | null = null;
let stream: LiveStream | null = null;

// test and tooling hook: the page's own measurements and state (no secrets)
(window as unknown as { __shoal: unknown }).__shoal = { store, metrics: store.metrics };

function route(): { view: string; arg: string; query: URLSearchParams } {
  const raw = location.hash.replace(/^#\/?/, '');
  const [path = '', qs = ''] = raw.split('?');
  const [view = 'fleet', ...rest] = path.split('/');
  return { view: view || 'fleet', arg: rest.map(decodeURIComponent).join('/'), query: new URLSearchParams(qs) };
}

function render(): void {
  cleanup?.();
  cleanup = null;
  const r = route();
  for (const a of document.querySelectorAll<HTMLAnchorElement>('[data-nav]')) {
    if (a.dataset.nav === r.view || (r.view === 'device' && a.dataset.nav === 'fleet')) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  stream?.setDevice(r.view === 'device' ? r.arg : null);
  if (r.view === 'device' && r.arg) { document.title = `${r.arg} · Shoal`; cleanup = deviceView(main, r.arg); }
  else if (r.view === 'rollouts') { document.title = 'Rollouts · Shoal'; cleanup = rolloutsView(main, r.query); }
  else { document.title = 'Fleet · Shoal'; cleanup = fleetView(main, r.query); }
}

function showLogin(message?: string): void {
  cleanup?.();
  cleanup = null;
  stream?.stop();
  stream = null;
  signout.hidden = true;
  conn.textContent = 'not connected';
  const input = h('input', { id: 'token', type: 'password', autocomplete: 'current-password', required: true, minlength: 16, size: 40 }) as HTMLInputElement;
  const err = h('p', { role: 'alert', class: 'form-msg' }, message ?? '');
  const form = h('form', {
    class: 'card login', 'aria-labelledby': 'login-h',
    onsubmit: async (e: Event) => {
      e.preventDefault();
      setToken(input.value.trim());
      try {
        await api('GET', '/api/stats');
        start();
      } catch (x) {
        setToken(null);
        err.textContent = x instanceof ApiError && x.status === 401 ? 'That token is not accepted by this controller.' : String((x as Error).message);
      }
    },
  },
  h('h1', { id: 'login-h' }, 'Connect to the controller'),
  h('p', {}, 'Paste the API token (controller.json "token", or the SHOAL_TOKEN that `shoal up` prints).'),
  h('label', { for: 'token' }, 'API token'), input,
  h('button', { type: 'submit', class: 'primary' }, 'Connect'), err);
  main.replaceChildren(form);
  input.focus();
}

function start(): void {
  signout.hidden = false;
  store.metrics.startFrameLoop();
  const r = route();
  stream = new LiveStream(r.view === 'device' ? r.arg : null, (event, data) => {
    switch (event) {
      case 'devices': store.applyDevices(data); break;
      case 'telemetry': store.telemetry(data); break;
      case 'event': store.addEvent(data); break;
      case 'rollout': store.setRollout(data.rollout); break;
      case 'unauthorized': setToken(null); showLogin('The token was refused; paste the current one.'); break;
      case 'device-unknown': main.replaceChildren(h('p', { role: 'alert' }, `Device ${data} is unknown to this controller.`)); break;
    }
  }, (s, detail) => {
    conn.textContent = s === 'live' ? 'live' : s === 'connecting' ? 'connecting…' : `reconnecting (${detail ?? 'error'})`;
    conn.dataset.state = s;
  });
  stream.start();
  render();
}

// `#token=…` (from `shoal up`): keep it, then drop it from the address bar and history
const m = /^#token=([^&]+)/.exec(location.hash);
if (m) {
  setToken(decodeURIComponent(m[1]!));
  history.replaceState(null, '', `${location.pathname}#/fleet`);
}
signout.addEventListener('click', () => { setToken(null); showLogin(); });
window.addEventListener('hashchange', () => { if (stream) render(); });
if (getToken()) start();
else showLogin();
