// Shared process harness for the Node-side tests (tests/browser, tests/node).
// Only Node built-ins: spawns the real hub binary and private redis-servers on free
// ports, mints HS256 JWTs, publishes over HTTP. Every spawned process is killed by
// its own pid when the test process exits.

import { spawn } from 'node:child_process';
import { createHmac, createHash } from 'node:crypto';
import { mkdtempSync, openSync, readFileSync, writeFileSync, existsSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

// tests/browser.rs and tests/node_clients.rs pass the binary cargo just built.
export const HUB_BIN =
  process.env.DASHCLAW_HUB_BIN || join(REPO_ROOT, 'target', 'debug', 'dashclaw-realtime');

const children = new Set();
const tempDirs = new Set();
process.on('exit', () => {
  for (const child of children) {
    try {
      child.kill('SIGKILL');
    } catch {}
  }
  for (const dir of tempDirs) {
    try {
      rmSync(dir, { recursive: true, force: true });
    } catch {}
  }
});

export function tempDir(prefix = 'dashclaw-js-') {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  tempDirs.add(dir);
  return dir;
}

/** A port that was free a moment ago on 127.0.0.1. */
export function freePort() {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', rej);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => res(port));
    });
  });
}

/** Polls `cond` (sync or async) until truthy; throws with `what` after `timeoutMs` (an upper bound). */
export async function waitFor(cond, what, timeoutMs = 15000, stepMs = 25) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await cond();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${String(last)})`);
    }
    await sleep(stepMs);
  }
}

let orgCounter = 0;
/** An org id unique in this run, valid per the contract. */
export function uniqueOrg(prefix) {
  orgCounter += 1;
  return `${prefix}_${process.pid}_${orgCounter}`;
}

function b64url(buf) {
  return Buffer.from(buf).toString('base64url');
}

/** HS256 JWT with `claims` (exp defaults to one hour from now). */
export function jwt(secret, claims) {
  const header = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const body = b64url(
    JSON.stringify({ exp: Math.floor(Date.now() / 1000) + 3600, ...claims }),
  );
  const sig = createHmac('sha256', secret).update(`${header}.${body}`).digest('base64url');
  return `${header}.${body}.${sig}`;
}

export function sha256Hex(s) {
  return createHash('sha256').update(s).digest('hex');
}

/** Writes a keys file (`<sha256> <org> <scopes>` lines) and returns its path. */
export function apiKeysFile(entries) {
  const path = join(tempDir(), 'api_keys.txt');
  writeFileSync(path, entries.map(([key, org, scopes]) => `${sha256Hex(key)} ${org} ${scopes}\n`).join(''));
  return path;
}

function cleanEnv(extra) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    const hubSetting =
      /^(REALTIME_|NEXTAUTH_|DASHCLAW_)/.test(k) || ['REDIS_URL', 'RUST_LOG', 'DATABASE_URL', 'VERCEL'].includes(k);
    if (!hubSetting) env[k] = v;
  }
  return { RUST_LOG: 'info', ...env, ...extra };
}

/**
 * Spawns `dashclaw-realtime serve` with `env` on `port` (a free one when omitted) and
 * waits until /healthz answers 200.
 */
export async function spawnHub(env = {}, port = undefined) {
  if (!existsSync(HUB_BIN)) {
    throw new Error(`hub binary ${HUB_BIN} not found: run cargo build first (or scripts/test.sh)`);
  }
  for (let attempt = 1; ; attempt++) {
    const p = port ?? (await freePort());
    const dir = tempDir('dashclaw-hub-');
    const logPath = join(dir, 'hub.log');
    const fd = openSync(logPath, 'w');
    const child = spawn(HUB_BIN, ['serve'], {
      env: cleanEnv({ REALTIME_BIND: `127.0.0.1:${p}`, ...env }),
      stdio: ['ignore', fd, fd],
    });
    children.add(child);
    let exited = null;
    const exitPromise = new Promise((res) =>
      child.on('exit', (code, signal) => {
        exited = { code, signal };
        children.delete(child);
        res(exited);
      }),
    );
    const hub = {
      port: p,
      base: `http://127.0.0.1:${p}`,
      pid: child.pid,
      log: () => readFileSync(logPath, 'utf8'),
      exited: () => exited,
      waitExit: (timeoutMs = 20000) =>
        Promise.race([
          exitPromise,
          sleep(timeoutMs, undefined, { ref: false }).then(() => {
            throw new Error(`hub pid ${child.pid} did not exit within ${timeoutMs} ms`);
          }),
        ]),
      signal: (sig) => {
        if (!exited) child.kill(sig);
      },
      async stop() {
        if (!exited) {
          child.kill('SIGKILL');
          await exitPromise;
        }
      },
    };
    const deadline = Date.now() + 30000;
    for (;;) {
      if (exited) break;
      try {
        const r = await fetch(`${hub.base}/healthz`, { signal: AbortSignal.timeout(2000) });
        if (r.status === 200) return hub;
      } catch {}
      if (Date.now() > deadline) {
        await hub.stop();
        throw new Error(`hub on port ${p} not healthy within 30 s; log:\n${hub.log()}`);
      }
      await sleep(50);
    }
    const log = hub.log();
    if (port === undefined && attempt < 3 && /address already in use|os error 98/i.test(log)) continue;
    throw new Error(`hub exited during start-up (${JSON.stringify(exited)}); log:\n${log}`);
  }
}

function redisServerPath() {
  for (const p of ['/usr/bin/redis-server', '/usr/local/bin/redis-server']) if (existsSync(p)) return p;
  return 'redis-server';
}

/** A private redis-server without persistence on a free port. */
export async function spawnRedis() {
  for (let attempt = 1; attempt <= 3; attempt++) {
    const port = await freePort();
    const dir = tempDir('dashclaw-redis-');
    const child = spawn(
      redisServerPath(),
      ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'no', '--protected-mode', 'no'],
      { stdio: 'ignore' },
    );
    children.add(child);
    let exited = false;
    child.on('exit', () => {
      exited = true;
      children.delete(child);
    });
    child.on('error', () => {
      exited = true;
    });
    const ok = await waitFor(
      async () => exited || (await redisPing(port)),
      `redis-server on ${port}`,
      10000,
      30,
    ).catch(() => false);
    if (ok && !exited) {
      return {
        port,
        url: `redis://127.0.0.1:${port}`,
        stop() {
          if (!exited) child.kill('SIGKILL');
        },
      };
    }
    if (!exited) child.kill('SIGKILL');
  }
  throw new Error('redis-server did not start (install it: scripts/install-test-deps.sh)');
}

async function redisPing(port) {
  const { connect } = await import('node:net');
  return new Promise((res) => {
    const s = connect(port, '127.0.0.1');
    let buf = '';
    s.setTimeout(1000, () => {
      s.destroy();
      res(false);
    });
    s.on('error', () => res(false));
    s.on('connect', () => s.write('PING\r\n'));
    s.on('data', (d) => {
      buf += d;
      if (buf.includes('\r\n')) {
        s.destroy();
        res(buf.startsWith('+PONG'));
      }
    });
  });
}

/** POST /v1/orgs/{org}/events; returns the stored envelope (or array). Throws unless 202. */
export async function publish(base, org, body, headers = {}) {
  const r = await fetch(`${base}/v1/orgs/${org}/events`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(15000),
  });
  const text = await r.text();
  if (r.status !== 202) throw new Error(`publish to ${org} -> ${r.status}: ${text}`);
  return JSON.parse(text);
}
