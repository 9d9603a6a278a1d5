import t from 'tap';
import { generateKeyPairSync } from 'node:crypto';
import { topics, filters, parseTopic, topicMatches, isValidReplyTopic, deviceTopic } from '../src/topics.js';
import { Request, Reply, Desired, State, Event, parsePayload, MAX_PAYLOAD_BYTES, OP_ARGS, OPS, EVENT_TYPES, PHASES } from '../src/messages.js';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { repoRoot } from '@shoal/testkit';
import { canonicalize, signManifest, verifyManifest, isSafeRelativePath, Manifest, type UnsignedManifest } from '../src/manifest.js';

t.test('topics build, parse and match', async (t) => {
  t.equal(topics.state('jetson-01'), 'shoal/v1/devices/jetson-01/state');
  t.equal(topics.replies('ctl-1'), 'shoal/v1/clients/ctl-1/replies');
  t.same(parseTopic('shoal/v1/devices/jetson-01/events'), { kind: 'device', deviceId: 'jetson-01', channel: 'events' });
  t.same(parseTopic('shoal/v1/clients/ctl-1/replies'), { kind: 'replies', clientId: 'ctl-1' });
  t.equal(parseTopic('shoal/v1/devices/jetson-01/bogus'), null);
  t.equal(parseTopic('other/v1/devices/a/state'), null);
  t.ok(topicMatches(filters.allStates, topics.state('x')));
  t.notOk(topicMatches(filters.allStates, topics.events('x')));
  t.ok(topicMatches('shoal/#', topics.events('x')));
  t.throws(() => deviceTopic('a/b', 'state'), /invalid device id/);
  t.throws(() => topics.cmd('+'), /invalid device id/);
  t.ok(isValidReplyTopic('shoal/v1/clients/c1/replies'));
  t.notOk(isValidReplyTopic('shoal/v1/clients/+/replies'));
  t.notOk(isValidReplyTopic('shoal/v1/devices/other/cmd'), 'cannot aim replies at another device');
  t.notOk(isValidReplyTopic('elsewhere/x'));
});

t.test('message schemas', async (t) => {
  const req = { v: 1, id: 'r1', op: 'generate', args: { prompt: 'hi', maxTokens: 4 }, replyTo: topics.replies('c'), deadline: Date.now() + 1000 };
  t.ok(Request.safeParse(req).success);
  t.notOk(Request.safeParse({ ...req, v: 2 }).success, 'wrong version');
  t.notOk(Request.safeParse({ ...req, op: 'format-disk' }).success, 'unknown op');
  t.ok(OP_ARGS.generate.safeParse({ prompt: 'x' }).success);
  t.notOk(OP_ARGS.generate.safeParse({ prompt: 'x', messages: [{ role: 'user', content: 'y' }] }).success, 'prompt xor messages');
  t.notOk(OP_ARGS.generate.safeParse({}).success);
  t.notOk(OP_ARGS.ping.safeParse({ extra: 1 }).success, 'strict args');
  t.ok(Reply.safeParse({ v: 1, id: 'r1', seq: 0, done: false, ok: true, chunk: { text: 'a', tokens: 1 } }).success);
  t.ok(Desired.safeParse({ v: 1, model: null, ts: 1 }).success);
  t.notOk(Desired.safeParse({ v: 1, model: { name: 'm', version: '1', manifestUrl: 'file:///etc/passwd', manifestSha256: 'a'.repeat(64) }, ts: 1 }).success, 'only http(s)');
  t.ok(State.safeParse({ v: 1, deviceId: 'd', online: false, ts: 1, labels: {}, model: null, previous: null, phase: 'idle', desired: null, store: [], engine: null }).success);
  t.notOk(Event.safeParse({ v: 1, id: 'not-a-uuid', deviceId: 'd', ts: 1, type: 'ota.progress', data: {} }).success);
  const big = parsePayload(Request, Buffer.alloc(MAX_PAYLOAD_BYTES + 1, 0x20));
  t.equal(big.ok ? 'ok' : big.code, 'PAYLOAD_TOO_LARGE');
  const bad = parsePayload(Request, '{nope');
  t.equal(bad.ok ? 'ok' : bad.code, 'INVALID_JSON');
  const wrong = parsePayload(Request, JSON.stringify({ ...req, id: 5 }));
  t.equal(wrong.ok ? 'ok' : wrong.code, 'INVALID_MESSAGE');
  t.match(wrong.ok ? '' : wrong.message, /id/);
});

t.test('manifest canonical form, signing and verification', async (t) => {
  t.equal(canonicalize({ b: 1, a: { d: [1, { z: 1, y: 'x' }], c: null } }), '{"a":{"c":null,"d":[1,{"y":"x","z":1}]},"b":1}');
  t.throws(() => canonicalize({ a: Infinity }));
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const priv = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  const pub = publicKey.export({ type: 'spki', format: 'pem' }).toString();
  const m: UnsignedManifest = { schema: 1, name: 'stories', version: '1.0.0', architecture: 'LlamaForCausalLM', quantization: 'none', files: [{ path: 'config.json', size: 3, sha256: 'a'.repeat(64) }], created: '2026-01-01T00:00:00Z' };
  const signed = signManifest(m, priv);
  t.ok(Manifest.safeParse(signed).success);
  t.same(verifyManifest(signed, pub), { ok: true });
  // key order does not matter
  const reordered = Object.fromEntries(Object.entries(signed).reverse()) as typeof signed;
  t.same(verifyManifest(reordered, pub), { ok: true });
  const tampered = { ...signed, version: '1.0.1' };
  t.match(verifyManifest(tampered, pub), { ok: false, reason: /does not match/ });
  const other = generateKeyPairSync('ed25519').publicKey.export({ type: 'spki', format: 'pem' }).toString();
  t.equal(verifyManifest(signed, other).ok, false);
  t.match(verifyManifest({ ...m }, pub), { ok: false, reason: /not signed/ });
  for (const p of ['/etc/passwd', '../x', 'a/../b', 'a//b', './a', 'a\\b', '']) t.notOk(isSafeRelativePath(p), p);
  t.ok(isSafeRelativePath('sub/dir/model.safetensors'));
  t.notOk(Manifest.safeParse({ ...signed, files: [{ path: '../evil', size: 1, sha256: 'a'.repeat(64) }] }).success);
});

t.test('AsyncAPI document matches the TypeScript contract', async (t) => {
  // yaml is installed with tap (dev dependency tree)
  const YAML = createRequire(import.meta.url)('yaml') as { parse(s: string): any };
  const doc = YAML.parse(readFileSync(path.join(repoRoot, 'packages', 'protocol', 'asyncapi.yaml'), 'utf8'));
  t.equal(doc.asyncapi, '3.0.0');
  t.equal(doc.channels.state.address, 'shoal/v1/devices/{deviceId}/state');
  t.equal(doc.channels.replies.address, 'shoal/v1/clients/{clientId}/replies');
  t.same(doc.components.messages.Request.payload.properties.op.enum, [...OPS]);
  t.same(doc.components.messages.Event.payload.properties.type.enum, [...EVENT_TYPES]);
  t.same(doc.components.schemas.Phase.enum, [...PHASES]);
});
