// The status page (GET /) in Chromium against the real hub with auth on: it asks for an
// ops token, then shows live numbers from /v1/ops/stats that move when events are
// published, and its "watch an org" panel shows the org's events. Leaves a screenshot in
// target/status-page.png for people to look at.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT, spawnHub, jwt, publish, uniqueOrg, waitFor } from '../jslib/harness.mjs';
import { launchBrowser } from './lib.mjs';

const SECRET = 'status-page-secret-of-32-bytes-or-more';
let hub, browser;

before(async () => {
  hub = await spawnHub({ REALTIME_BACKEND: 'memory', REALTIME_JWT_SECRET: SECRET });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await hub?.stop();
});

const text = (page, id) => page.evaluate((i) => document.getElementById(i).textContent, id);

test('status page: ops token, live numbers that move, watched org events, screenshot', async () => {
  const org = uniqueOrg('br_status');
  const headers = { authorization: `Bearer ${jwt(SECRET, { org_id: org, scope: 'subscribe publish' })}` };
  const page = await browser.newPage();
  page.on('console', (m) => process.stderr.write(`[page console] ${m.text()}\n`));
  await page.setViewportSize({ width: 1280, height: 760 });
  await page.goto(`${hub.base}/`, { timeout: 30000 });

  // Auth is on and no token was given: the stats stream is refused and the page says so.
  await waitFor(async () => (await text(page, 'stream-status')).includes('refused'), 'refused notice', 20000, 50);

  await page.fill('#ops-token', jwt(SECRET, { org_id: org, scope: 'ops' }));
  await page.click('#token-form button');
  await waitFor(async () => /^[0-9A-Z]{26}$/.test(await text(page, 'instance-id')), 'instance id', 20000, 50);
  assert.equal(await text(page, 'backend'), 'memory');
  assert.equal(await text(page, 'backend-state'), 'ready');
  assert.ok(await page.evaluate(() => sessionStorage.getItem('dashclaw-realtime.opsToken')), 'token kept in sessionStorage');

  await page.fill('#watch-org', org);
  await page.fill('#watch-token', jwt(SECRET, { org_id: org, scope: 'subscribe' }));
  await page.click('#watch-form button[type=submit]');
  await waitFor(async () => (await text(page, 'watch-status')).startsWith('watching'), 'watch panel connected', 20000, 50);
  await waitFor(async () => (await text(page, 'connections')) === '1', 'the watcher counted as a connection', 20000, 50);

  const publishedBefore = Number((await text(page, 'published-total')).replace(/\D/g, ''));
  // Publish steadily until the page shows a non-zero inbound rate: the rate is computed
  // between two snapshots a second apart, so a single burst could fall between them.
  let n = 0;
  let sent;
  await waitFor(async () => {
    for (let i = 0; i < 5; i++) {
      sent = await publish(hub.base, org, { event: 'action.created', payload: { n: n++ } }, headers);
    }
    const rate = Number(await text(page, 'events-in'));
    return rate > 0 && Number(await text(page, 'events-out')) > 0;
  }, 'events/s in and out above 0', 30000, 200);
  await waitFor(async () => Number((await text(page, 'published-total')).replace(/\D/g, '')) > publishedBefore,
    'published total to grow', 20000, 50);
  await waitFor(async () => (await text(page, 'watch-log')).includes(`#${sent.cursor}`), 'last event in the watch panel', 20000, 50);
  const log = await text(page, 'watch-log');
  assert.ok(log.includes('action.created'), log.slice(0, 500));
  assert.ok(log.includes('realtime.connected'), 'control events are shown too');
  const points = await page.evaluate(() => window.statusPage.points.length);
  assert.ok(points >= 1, 'the chart has data');

  // A few more seconds of traffic so the screenshot's chart shows a line, not a dot.
  for (let t = 0; t < 16; t++) {
    await publish(hub.base, org, { event: 'action.created', payload: { n: n++ } }, headers);
    await new Promise((r) => setTimeout(r, 250 + (t % 4) * 60));
  }
  await waitFor(async () => (await page.evaluate(() => window.statusPage.points.length)) >= 5, 'chart points', 20000, 100);
  const dir = join(REPO_ROOT, 'target');
  mkdirSync(dir, { recursive: true });
  await page.screenshot({ path: join(dir, 'status-page.png') });
  await page.close();
});
