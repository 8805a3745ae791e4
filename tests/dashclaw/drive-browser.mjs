// Drives Debian's Chromium for tests/dashclaw_ingress.rs: sets DashClaw's session cookie for
// the page's origin, opens the page (which runs `new EventSource('/api/stream')` with no
// token, as DashClaw's dashboard does), and prints every event the page records as one
// JSON line on stdout until stdin closes. The page is never touched again: reconnecting
// after the hub restarts is the browser's own doing.
//   node drive-browser.mjs <page url> <cookie name> <cookie value>
import { launchBrowser } from '../browser/lib.mjs';

const [pageUrl, name, value] = process.argv.slice(2);
const context = await launchBrowser();
await context.addCookies([{ name, value, url: new URL(pageUrl).origin, httpOnly: true, sameSite: 'Lax' }]);
const page = await context.newPage();
page.on('console', (m) => process.stderr.write(`[page console] ${m.text()}\n`));
await page.goto(pageUrl, { timeout: 30000 });

let printed = 0;
let done = false;
process.stdin.on('end', () => { done = true; });
process.stdin.on('close', () => { done = true; });
process.stdin.resume();
while (!done) {
  const rec = await page.evaluate(() => window.rec);
  for (const event of rec.events.slice(printed)) process.stdout.write(`${JSON.stringify(event)}\n`);
  printed = rec.events.length;
  await new Promise((r) => setTimeout(r, 100));
}
await context.close();
process.exit(0);
