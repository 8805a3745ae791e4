// The browser reconnects by itself after the hub ends the stream (SIGTERM), waits the
// `retry:` hint, and with its own Last-Event-ID gets exactly the missed events from a
// new hub on the same port and the same Redis: no gap, no duplicate.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnHub, spawnRedis, jwt, publish, uniqueOrg } from '../jslib/harness.mjs';
import { launchBrowser, servePage, openProbe, waitForEvent, waitForState } from './lib.mjs';

const SECRET = 'browser-reconnect-secret-32-bytes-min';
let redis, browser, page;

before(async () => {
  redis = await spawnRedis();
  page = await servePage();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await page?.close();
  redis?.stop();
});

test('hub shutdown -> browser reconnects after retry: with Last-Event-ID and gets exactly the missed events', async () => {
  const env = {
    REALTIME_BACKEND: 'redis',
    REDIS_URL: redis.url,
    REALTIME_JWT_SECRET: SECRET,
    REALTIME_CORS_ORIGINS: page.origin,
    REALTIME_RETRY_MS: '500',
    REALTIME_SHUTDOWN_GRACE_SECONDS: '5',
  };
  const org = uniqueOrg('br_reconnect');
  const pub = { authorization: `Bearer ${jwt(SECRET, { org_id: org, scope: 'publish' })}` };
  const hubA = await spawnHub(env);
  const port = hubA.port;
  // Publisher on another port: the only way to add events while the browser's hub is down.
  const hubC = await spawnHub(env);
  const token = jwt(SECRET, { org_id: org, scope: 'subscribe' });
  // No position in the URL: whatever the second connection resumes from is the browser's own Last-Event-ID.
  const url = `${hubA.base}/v1/orgs/${org}/stream?access_token=${token}`;
  const probe = await openProbe(browser, page.url, url, ['realtime.connected', 'realtime.resync', 'action.created']);
  await waitForEvent(probe, 'first realtime.connected', (e) => e.type === 'realtime.connected');

  const sent = [];
  for (let i = 1; i <= 3; i++) sent.push(await publish(hubA.base, org, { event: 'action.created', payload: { n: i } }, pub));
  await waitForEvent(probe, 'events 1..3', (e) => e.lastEventId === sent[2].cursor);

  hubA.signal('SIGTERM');
  const exit = await hubA.waitExit(20000);
  assert.equal(exit.code, 0, `hub A exit ${JSON.stringify(exit)}`);
  // The stream ended: the browser is (re)connecting, not closed. Its error event comes when
  // it notices the end, which a busy machine may delay: wait for it rather than read once.
  const states = (await waitForState(probe, 'error-connecting')).states;
  assert.ok(!states.includes('error-closed'), JSON.stringify(states));

  for (let i = 4; i <= 6; i++) sent.push(await publish(hubC.base, org, { event: 'action.created', payload: { n: i } }, pub));

  const hubB = await spawnHub(env, port);
  const r1 = await waitForEvent(probe, 'second realtime.connected', (e) => e.type === 'realtime.connected' && JSON.parse(e.data).replayed > 0, 30000);
  sent.push(await publish(hubB.base, org, { event: 'action.created', payload: { n: 7 } }, pub));
  const r = await waitForEvent(probe, 'live event 7', (e) => e.lastEventId === sent[6].cursor, 20000);

  const types = r.events.map((e) => e.type);
  assert.ok(!types.includes('realtime.resync'), `no resync expected: ${types}`);
  const data = r.events.filter((e) => e.type === 'action.created');
  assert.deepEqual(data.map((e) => e.lastEventId), sent.map((s) => s.cursor), 'every event exactly once, in order');
  assert.deepEqual(data.map((e) => JSON.parse(e.data).id), sent.map((s) => s.id));
  const connected = r.events.filter((e) => e.type === 'realtime.connected').map((e) => JSON.parse(e.data));
  assert.equal(connected.length, 2, JSON.stringify(types));
  assert.equal(connected[1].replayed, 3, 'the resume position came from the browser: exactly 3 replayed');
  assert.equal(connected[1].backend, 'redis');
  // Sequence: connected, 1..3, (end), 4..6 replayed, connected, 7.
  assert.deepEqual(types, [
    'realtime.connected', 'action.created', 'action.created', 'action.created',
    'action.created', 'action.created', 'action.created', 'realtime.connected', 'action.created',
  ]);
  assert.ok(r1.opens >= 2 && r.opens === 2, `opens=${r.opens}`);
  await probe.close();
  await hubB.stop();
  await hubC.stop();
});
