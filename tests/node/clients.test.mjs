// The eventsource package and an SDK-style fetch reader, against /v1/orgs/{org}/stream
// (JWT) and the drop-in /api/stream (x-api-key): typed events with cursor ids, then a
// reconnect with a Last-Event-ID header that yields exactly the missed events.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnHub, spawnRedis, jwt, publish, uniqueOrg, apiKeysFile, waitFor } from '../jslib/harness.mjs';
import { openEventSource, openFetchReader } from './clients.mjs';

const SECRET = 'node-client-secret-of-32-bytes-or-more';
const ORGS = Object.fromEntries(['es_v1', 'es_legacy', 'fetch_v1', 'fetch_legacy', 'es_auto'].map((k) => [k, uniqueOrg(`nc_${k}`)]));
const keyFor = (org) => `dk_test_${org}`;
const KEYS = Object.values(ORGS).map((org) => [keyFor(org), org, 'subscribe,publish']);
let hub;

before(async () => {
  hub = await spawnHub({
    REALTIME_BACKEND: 'memory',
    REALTIME_JWT_SECRET: SECRET,
    REALTIME_API_KEYS_FILE: apiKeysFile(KEYS),
    REALTIME_HEARTBEAT_SECONDS: '1',
  });
});
after(async () => {
  await hub?.stop();
});

const ENDPOINTS = {
  v1: {
    url: (base, org) => `${base}/v1/orgs/${org}/stream`,
    headers: (org) => ({ authorization: `Bearer ${jwt(SECRET, { org_id: org, scope: 'subscribe' })}` }),
    connected: 'realtime.connected',
    replayed: (d) => d.replayed,
    // v1 data is the whole envelope.
    expectData: (sent) => sent,
  },
  legacy: {
    url: (base) => `${base}/api/stream`,
    headers: (org) => ({ 'x-api-key': keyFor(org) }),
    connected: 'connected',
    replayed: (d) => d.replayed,
    // Legacy projection: action.created -> payload.action.
    expectData: (sent) => sent.payload.action,
  },
};

const CLIENTS = {
  eventsource: (url, headers, types) => openEventSource(url, headers, types),
  fetch: (url, headers) => openFetchReader(url, headers),
};

const events = (c) => c.events.filter((e) => e.type === 'action.created');
const waitCount = (c, n, what) =>
  waitFor(() => events(c).length >= n, `${what} (have ${JSON.stringify(c.events)}, errors ${c.errors})`, 20000);

for (const [clientName, open] of Object.entries(CLIENTS)) {
  for (const [epName, ep] of Object.entries(ENDPOINTS)) {
    test(`${clientName} on ${epName === 'v1' ? '/v1/orgs/{org}/stream' : '/api/stream (x-api-key)'}: events, then reconnect with Last-Event-ID gets exactly the missed ones`, async () => {
      const org = ORGS[`${clientName === 'eventsource' ? 'es' : 'fetch'}_${epName}`];
      const pubHeaders = { 'x-api-key': keyFor(org) };
      const types = [ep.connected, 'action.created', 'realtime.resync'];
      const url = ep.url(hub.base, org);
      const pubN = async (n) =>
        publish(hub.base, org, { event: 'action.created', payload: { action: { id: `act_${n}`, n, text: `é\n${n}` } } }, pubHeaders);

      const c1 = open(url, ep.headers(org), types);
      await waitFor(() => c1.events.some((e) => e.type === ep.connected), `${ep.connected} (errors ${c1.errors})`, 20000);
      assert.equal(ep.replayed(JSON.parse(c1.events[0].data)), 0);
      const sent = [];
      for (let i = 1; i <= 3; i++) sent.push(await pubN(i));
      await waitCount(c1, 3, 'events 1..3');
      assert.deepEqual(events(c1).map((e) => e.id), sent.map((s) => s.cursor));
      assert.deepEqual(events(c1).map((e) => JSON.parse(e.data)), sent.map(ep.expectData));
      const lastSeen = events(c1).at(-1).id;
      c1.close();

      for (let i = 4; i <= 6; i++) sent.push(await pubN(i));
      // The header spelling each client family uses.
      const resumeHeader = clientName === 'eventsource' ? { 'Last-Event-ID': lastSeen } : { 'last-event-id': lastSeen };
      const c2 = open(url, { ...ep.headers(org), ...resumeHeader }, types);
      await waitFor(() => c2.events.some((e) => e.type === ep.connected), `${ep.connected} after resume (have ${JSON.stringify(c2.events)}, errors ${c2.errors})`, 20000);
      sent.push(await pubN(7));
      await waitCount(c2, 4, 'replayed 4..6 and live 7');
      assert.deepEqual(c2.events.map((e) => e.type), ['action.created', 'action.created', 'action.created', ep.connected, 'action.created']);
      assert.deepEqual(events(c2).map((e) => e.id), sent.slice(3).map((s) => s.cursor), 'exactly the missed events then live');
      assert.deepEqual(events(c2).map((e) => JSON.parse(e.data)), sent.slice(3).map(ep.expectData));
      const connected = JSON.parse(c2.events[3].data);
      assert.equal(ep.replayed(connected), 3);
      if (epName === 'legacy') {
        assert.equal(connected.status, 'ok');
        assert.equal(connected.orgId, org);
      } else {
        assert.equal(connected.org_id, org);
      }
      assert.deepEqual(c1.errors, []);
      assert.deepEqual(c2.errors, []);
      c2.close();
    });
  }
}

test('eventsource reconnects by itself after the hub ends the stream, sending its own Last-Event-ID (Redis, same port)', async () => {
  const redis = await spawnRedis();
  try {
    const org = ORGS.es_auto;
    const env = {
      REALTIME_BACKEND: 'redis',
      REDIS_URL: redis.url,
      REALTIME_API_KEYS_FILE: apiKeysFile(KEYS),
      REALTIME_RETRY_MS: '300',
      REALTIME_SHUTDOWN_GRACE_SECONDS: '5',
    };
    const hubA = await spawnHub(env);
    const hubC = await spawnHub(env);
    const pubHeaders = { 'x-api-key': keyFor(org) };
    const pubN = (h, n) => publish(h.base, org, { event: 'action.created', payload: { action: { id: `act_${n}` } } }, pubHeaders);
    const c = openEventSource(`${hubA.base}/api/stream`, { 'x-api-key': keyFor(org) }, ['connected', 'action.created', 'realtime.resync']);
    await waitFor(() => c.events.some((e) => e.type === 'connected'), 'connected', 20000);
    const sent = [];
    for (let i = 1; i <= 2; i++) sent.push(await pubN(hubA, i));
    await waitCount(c, 2, 'events 1..2');
    assert.equal(c.es.reconnectInterval, 300, 'the retry: hint was applied');

    hubA.signal('SIGTERM');
    assert.equal((await hubA.waitExit(20000)).code, 0);
    for (let i = 3; i <= 5; i++) sent.push(await pubN(hubC, i));
    const hubB = await spawnHub(env, hubA.port);
    await waitFor(() => c.events.filter((e) => e.type === 'connected').length === 2, `second connected (have ${JSON.stringify(c.events)})`, 30000);
    sent.push(await pubN(hubB, 6));
    await waitCount(c, 6, 'all 6 events');
    assert.deepEqual(events(c).map((e) => e.id), sent.map((s) => s.cursor), 'no gap, no duplicate');
    assert.deepEqual(
      c.events.map((e) => e.type),
      ['connected', 'action.created', 'action.created', 'action.created', 'action.created', 'action.created', 'connected', 'action.created'],
    );
    assert.equal(JSON.parse(c.events[6].data).replayed, 3);
    c.close();
    await hubB.stop();
    await hubC.stop();
  } finally {
    redis.stop();
  }
});
