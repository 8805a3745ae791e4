// Session cookies minted by the npm packages DashClaw itself uses, the way DashClaw mints
// them: next-auth 4.24's `encode()` (the NextAuth session cookie, a JWE) and jose 4's
// `SignJWT` as DashClaw's local login does (the `dashclaw-local-session` cookie, HS256).
//
// As a module: `nextAuthCookie(claims, secret, maxAgeSeconds)`, `localSessionCookie(...)`.
// As a command (for the Rust tests), printing the cookie value on stdout:
//   node mint.mjs nextauth '<claims json>' <secret> [maxAgeSeconds]
//   node mint.mjs local '<claims json>' <secret> [expiration: "7d" | unix seconds]
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const { encode } = require('next-auth/jwt');
const { SignJWT } = require('jose');

/** A NextAuth session token, as next-auth's JWT session strategy writes it. */
export async function nextAuthCookie(claims, secret, maxAge = 3600) {
  return encode({ token: claims, secret, maxAge });
}

/**
 * A local-admin session token: the claims DashClaw's local login signs (overridable by
 * `claims`; a key set to null is left out), HS256 over the UTF-8 bytes of the secret.
 */
export async function localSessionCookie(claims, secret, expiration = '7d', alg = 'HS256') {
  const base = {
    sub: 'local-admin',
    userId: 'usr_local_admin',
    orgId: 'org_default',
    role: 'admin',
    plan: 'free',
    provider: 'local',
  };
  const payload = { ...base, ...claims };
  for (const [k, v] of Object.entries(payload)) if (v === null) delete payload[k];
  return new SignJWT(payload)
    .setProtectedHeader({ alg })
    .setIssuedAt()
    .setExpirationTime(expiration)
    .sign(new TextEncoder().encode(secret));
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [kind, claimsJson, secret, extra] = process.argv.slice(2);
  const claims = JSON.parse(claimsJson ?? '{}');
  let token;
  if (kind === 'nextauth') {
    token = await nextAuthCookie(claims, secret, extra === undefined ? 3600 : Number(extra));
  } else if (kind === 'local') {
    const expiration = extra === undefined ? '7d' : /^-?\d+$/.test(extra) ? Number(extra) : extra;
    token = await localSessionCookie(claims, secret, expiration);
  } else {
    console.error('usage: node mint.mjs nextauth|local <claims json> <secret> [maxAge|expiration]');
    process.exit(2);
  }
  process.stdout.write(`${token}\n`);
}
