// The browser side of app/tests/http/test_passkeys_browser.py: Debian's
// Chromium driven by playwright-core, with the DevTools protocol's virtual
// WebAuthn authenticator (CTAP2, internal, resident keys, user
// verification), on the page Kiln serves for tests (GET /_test/passkeys,
// whose script runs the ceremonies as a front end would). It signs in
// (dev login), registers a passkey, signs out (DELETE /auth/logout), signs
// in with the passkey without typing an address, and reads /api/v1/me.
// One JSON object a line on stdout:
//
//   {"ev":"login","status":200}
//   {"ev":"register","status":201,"body":{...}}
//   {"ev":"signed_out","logout":302,"me":401,"cookies":0}
//   {"ev":"signin","status":200,"body":{...}}
//   {"ev":"me","status":200,"body":{...}}
//   {"ev":"credentials","n":1,"resident":true}
//   {"ev":"fatal","error":"..."}   (then exit 1)
//
//   node passkeys.js BASE_URL EMAIL
'use strict';
const { chromium } = require('playwright-core');

const [base, email] = process.argv.slice(2);
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');

async function main() {
  if (!base || !email) throw new Error('usage: node passkeys.js BASE_URL EMAIL');
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_BIN || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
  });
  try {
    const context = await browser.newContext();
    const page = await context.newPage();
    page.on('pageerror', (e) => out({ ev: 'pageerror', error: String(e) }));
    const r = await page.goto(base + '/_test/passkeys');
    if (!r || r.status() !== 200) throw new Error('GET /_test/passkeys answered ' + (r && r.status()));
    const cdp = await context.newCDPSession(page);
    await cdp.send('WebAuthn.enable');
    const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', {
      options: { protocol: 'ctap2', transport: 'internal', hasResidentKey: true,
                 hasUserVerification: true, isUserVerified: true },
    });
    const login = await page.evaluate(async (em) => (await post('/auth/dev/login',
      { email: em, name: 'Browser Passkey' })).status, email);
    out({ ev: 'login', status: login });
    out({ ev: 'register', ...(await page.evaluate(() => kilnRegister('chromium'))) });
    // Sign out as an app does: DELETE /auth/logout ends the session and
    // expires the cookie (its redirect is not followed).
    const signedOut = await page.evaluate(async () => {
      const lo = await fetch('/auth/logout', { method: 'DELETE', redirect: 'manual' });
      return { logout: lo.type === 'opaqueredirect' ? 302 : lo.status,
               me: (await fetch('/api/v1/me')).status };
    });
    const left = (await context.cookies(base)).filter((c) => c.name === '_backend_session');
    out({ ev: 'signed_out', ...signedOut, cookies: left.length });
    out({ ev: 'signin', ...(await page.evaluate(() => kilnSignIn())) });
    out({ ev: 'me', ...(await page.evaluate(async () => {
      const res = await fetch('/api/v1/me');
      return { status: res.status, body: await res.json() };
    })) });
    const { credentials } = await cdp.send('WebAuthn.getCredentials', { authenticatorId });
    out({ ev: 'credentials', n: credentials.length,
          resident: credentials.every((c) => c.isResidentCredential),
          signCount: credentials.map((c) => c.signCount) });
  } finally {
    await browser.close();
  }
}

main().then(() => process.exit(0), (e) => { out({ ev: 'fatal', error: String(e && e.stack || e) }); process.exit(1); });
