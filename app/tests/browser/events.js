// The browser side of app/tests/http/test_events_browser.py: Debian's
// Chromium (/usr/bin/chromium, or CHROMIUM_BIN), driven by playwright-core
// (no browser of its own is downloaded), opens a page on kiln's origin, logs
// in there (POST /auth/dev/login from the page, so the session cookie is the
// one Chromium itself stored from Set-Cookie), and opens the browser's own
// EventSource on /api/v1/events with that cookie. Everything the
// EventSource does is written to stdout, one JSON object a line:
//
//   {"ev":"login","status":200,"cookie":"...","httpOnly":true}
//   {"ev":"open","t":MS}
//   {"ev":"message","lastEventId":"12","data":"{...}","t":MS}
//   {"ev":"reset","lastEventId":"","data":"{...}","t":MS}
//   {"ev":"error","readyState":0,"t":MS}       (0: reconnecting, 2: closed)
//   {"ev":"fatal","error":"..."}                (then exit 1)
//
// It reads commands from stdin, one JSON object a line:
//
//   {"fetch":"/livez"}   fetch(PATH) from the page, then report
//                        {"ev":"fetched","path":PATH,"status":200}
//
// and runs until its stdin ends, then closes the browser and exits 0.
//
//   node events.js BASE_URL EMAIL [EVENTS_PATH]
'use strict';
const readline = require('readline');
const { chromium } = require('playwright-core');

const [base, email, eventsPath = '/api/v1/events'] = process.argv.slice(2);
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');

async function main() {
  if (!base || !email) throw new Error('usage: node events.js BASE_URL EMAIL [EVENTS_PATH]');
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_BIN || '/usr/bin/chromium',
    headless: true,
    // root in a container: Chromium's sandbox needs user namespaces it may
    // not have; the pages here are our own.
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
  });
  let closing = false;
  const finish = async (code) => {
    if (closing) return;
    closing = true;
    try { await browser.close(); } catch (e) { /* already gone */ }
    process.exit(code);
  };
  let page = null;
  const commands = readline.createInterface({ input: process.stdin });
  commands.on('line', async (line) => {
    let cmd;
    try { cmd = JSON.parse(line); } catch (e) { out({ ev: 'fatal', error: 'bad command ' + line }); return; }
    if (cmd.fetch && page) {
      const status = await page.evaluate(async (path) => (await fetch(path)).status, cmd.fetch);
      out({ ev: 'fetched', path: cmd.fetch, status });
    }
  });
  commands.on('close', () => finish(0));

  const context = await browser.newContext();
  page = await context.newPage();
  await page.exposeFunction('kilnReport', (o) => out(o));
  page.on('pageerror', (e) => out({ ev: 'pageerror', error: String(e) }));
  // A page of kiln's own origin: the EventSource is same-origin and sends
  // the session cookie like any request of the app would.
  const r = await page.goto(base + '/livez');
  if (!r || r.status() !== 200) throw new Error('GET /livez answered ' + (r && r.status()));
  const status = await page.evaluate(async (em) => {
    const res = await fetch('/auth/dev/login', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ email: em, name: 'Browser Test' }),
    });
    return res.status;
  }, email);
  const cookie = (await context.cookies(base)).find((c) => c.name === '_backend_session');
  out({ ev: 'login', status, cookie: cookie ? cookie.value : null, httpOnly: cookie ? cookie.httpOnly : null });
  await page.evaluate((path) => {
    const t0 = performance.now();
    const t = () => Math.round(performance.now() - t0);
    const es = new EventSource(path);
    es.onopen = () => window.kilnReport({ ev: 'open', t: t() });
    es.onmessage = (m) => window.kilnReport({ ev: 'message', lastEventId: m.lastEventId, data: m.data, t: t() });
    es.addEventListener('reset', (m) => window.kilnReport({ ev: 'reset', lastEventId: m.lastEventId, data: m.data, t: t() }));
    es.onerror = () => window.kilnReport({ ev: 'error', readyState: es.readyState, t: t() });
    window.kilnEvents = es;
  }, eventsPath);
}

main().catch((e) => {
  out({ ev: 'fatal', error: String((e && e.stack) || e) });
  process.exit(1);
});
