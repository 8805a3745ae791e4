// Chromium's own EventSource against the real hub (memory backend), from a page on
// another origin: named events and lastEventId, realtime.resync, CORS allow/refuse.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnHub, jwt, publish, uniqueOrg, waitFor } from '../jslib/harness.mjs';
import { launchBrowser, servePage, openProbe, rec, waitForEvent } from './lib.mjs';

const SECRET = 'browser-test-secret-of-32-bytes-or-more';
let hub, browser, allowedPage, otherPage;

before(async () => {
  allowedPage = await servePage();
  otherPage = await servePage();
  hub = await spawnHub({
    REALTIME_BACKEND: 'memory',
    REALTIME_JWT_SECRET: SECRET,
    REALTIME_CORS_ORIGINS: allowedPage.origin,
    REALTIME_HEARTBEAT_SECONDS: '1',
  });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await hub?.stop();
  await allowedPage?.close();
  await otherPage?.close();
});

const auth = (org) => ({ authorization: `Bearer ${jwt(SECRET, { org_id: org, scope: 'subscribe publish' })}` });
const streamUrl = (org, extra = '') =>
  `${hub.base}/v1/orgs/${org}/stream?access_token=${jwt(SECRET, { org_id: org, scope: 'subscribe' })}${extra}`;

test('named events arrive through addEventListener(type) with lastEventId = cursor', async () => {
  const org = uniqueOrg('br_named');
  const types = ['realtime.connected', 'action.created', 'guard.decision.created', 'agent.heartbeat'];
  const page = await openProbe(browser, allowedPage.url, streamUrl(org), types);
  const first = await waitForEvent(page, 'realtime.connected', (e) => e.type === 'realtime.connected');
  const connected = JSON.parse(first.events[0].data);
  assert.equal(first.events[0].type, 'realtime.connected');
  assert.equal(first.events[0].lastEventId, '', 'control events carry no id');
  assert.equal(connected.org_id, org);
  assert.equal(connected.replayed, 0);

  const sent = [];
  for (const [event, payload] of [
    ['action.created', { action: { id: 'act_1', note: 'line1\nline2 \u00e9\u4e2d' } }],
    ['guard.decision.created', { decision: { allow: false } }],
    ['agent.heartbeat', {}],
    ['action.created', { action: { id: 'act_2' } }],
  ]) {
    sent.push(await publish(hub.base, org, { event, payload }, auth(org)));
  }
  const last = sent.at(-1);
  const r = await waitForEvent(page, 'the 4th event', (e) => e.lastEventId === last.cursor);
  const got = r.events.filter((e) => e.type !== 'realtime.connected');
  assert.deepEqual(
    got.map((e) => [e.type, e.lastEventId]),
    sent.map((s) => [s.event, s.cursor]),
    'exactly the published events, in order, typed and with their cursors',
  );
  for (const [i, e] of got.entries()) {
    assert.deepEqual(JSON.parse(e.data), sent[i], 'data is the whole stored envelope');
    assert.equal(e.origin, hub.base);
  }
  assert.equal(r.events.length, 5, 'nothing unnamed or extra');
  assert.equal(r.errors, 0);
  await page.close();
});

test("realtime.resync reaches addEventListener('realtime.resync') for an unknown position", async () => {
  const org = uniqueOrg('br_resync');
  const types = ['realtime.resync', 'realtime.connected', 'action.created'];
  const page = await openProbe(browser, allowedPage.url, streamUrl(org, '&last_event_id=garbage'), types);
  await waitForEvent(page, 'realtime.connected', (e) => e.type === 'realtime.connected');
  const live = await publish(hub.base, org, { event: 'action.created', payload: { n: 1 } }, auth(org));
  const r = await waitForEvent(page, 'live event', (e) => e.type === 'action.created');
  assert.deepEqual(r.events.map((e) => e.type), ['realtime.resync', 'realtime.connected', 'action.created']);
  assert.deepEqual(JSON.parse(r.events[0].data), { reason: 'unknown', last_event_id: 'garbage' });
  assert.equal(r.events[0].lastEventId, '');
  assert.equal(JSON.parse(r.events[1].data).replayed, 0);
  assert.equal(r.events[2].lastEventId, live.cursor);
  await page.close();
});

test('CORS: a listed origin subscribes, an unlisted origin is refused and receives nothing', async () => {
  const org = uniqueOrg('br_cors');
  const types = ['realtime.connected', 'action.created'];
  const refused = await openProbe(browser, otherPage.url, streamUrl(org), types);
  // A CORS failure is fatal for EventSource: error event and readyState CLOSED, no retry.
  await waitFor(async () => (await rec(refused)).states.includes('error-closed'), 'refused EventSource to fail', 20000);
  assert.equal(await refused.evaluate(() => window.es.readyState), 2);

  const allowed = await openProbe(browser, allowedPage.url, streamUrl(org), types);
  await waitForEvent(allowed, 'realtime.connected', (e) => e.type === 'realtime.connected');
  const ev = await publish(hub.base, org, { event: 'action.created', payload: { x: 1 } }, auth(org));
  await waitForEvent(allowed, 'the event on the allowed page', (e) => e.lastEventId === ev.cursor);

  // The allowed page already has the event, so the refused one had every chance to see it.
  const r = await rec(refused);
  assert.deepEqual(r.events, [], 'refused origin must receive nothing');
  assert.equal(r.opens, 0);
  assert.equal(await refused.evaluate(() => window.es.readyState), 2, 'no reconnect after CORS failure');
  await refused.close();
  await allowed.close();
});
