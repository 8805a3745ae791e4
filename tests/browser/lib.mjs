// Browser-side fixtures: Chromium via playwright-core and a tiny page server (another origin).
import { createServer } from 'node:http';
import { readFileSync, existsSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { tempDir, waitFor } from '../jslib/harness.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));
export const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';

/** Serves page.html on 127.0.0.1:<free port>, i.e. an origin other than the hub's. */
export async function servePage() {
  const html = readFileSync(join(HERE, 'page.html'));
  const server = createServer((req, res) => {
    if (req.url === '/' || req.url.startsWith('/page.html')) {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
      res.end(html);
    } else if (req.url === '/favicon.ico') {
      res.writeHead(204);
      res.end();
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  await new Promise((res) => server.listen(0, '127.0.0.1', res));
  const { port } = server.address();
  return {
    origin: `http://127.0.0.1:${port}`,
    url: `http://127.0.0.1:${port}/page.html`,
    close: () => new Promise((res) => { server.closeAllConnections(); server.close(res); }),
  };
}

/** Headless Debian Chromium with a fresh profile. */
export async function launchBrowser() {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} missing: run scripts/install-test-deps.sh (or scripts/test.sh)`);
  }
  const userDataDir = tempDir('dashclaw-chromium-');
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    timeout: 60000,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
      '--disable-quic',
      '--disable-dev-shm-usage',
    ],
  });
  return context;
}

/** Opens the probe page and starts an EventSource on `streamUrl` listening to `types`. */
export async function openProbe(context, pageUrl, streamUrl, types) {
  const page = await context.newPage();
  page.on('console', (m) => process.stderr.write(`[page console] ${m.text()}\n`));
  await page.goto(pageUrl, { timeout: 30000 });
  await page.evaluate(([u, t]) => window.startStream(u, t), [streamUrl, types]);
  return page;
}

export const rec = (page) => page.evaluate(() => window.rec);

/** Waits until the page has recorded an event matching `pred`; returns the recording. */
export async function waitForEvent(page, what, pred, timeoutMs = 20000) {
  return waitFor(async () => {
    const r = await rec(page);
    return r.events.some(pred) ? r : false;
  }, what, timeoutMs, 50);
}

/** Waits until the page's EventSource has recorded the state `state`; returns the recording. */
export async function waitForState(page, state, timeoutMs = 20000) {
  return waitFor(async () => {
    const r = await rec(page);
    return r.states.includes(state) ? r : false;
  }, `state ${state}`, timeoutMs, 50);
}
