#!/usr/bin/env node
// An OpenID Connect provider on loopback for Kiln's login tests: the npm
// package oauth2-mock-server (installed by scripts/npm-deps.sh into
// app/tests/oidc/node_modules), driven through its programmatic API, plus a
// small control API so that a test can decide what the *next* login sees.
//
//   node app/tests/oidc/mock.js PORT CONTROL_PORT [--es256]
//
// The provider listens on 127.0.0.1:PORT and announces the issuer
// http://localhost:PORT (what oauth2-mock-server does for a loopback host).
// It starts with one RS256 signing key (--es256 adds an ES256 key too, used
// once selected with POST /use). When both servers listen it prints one line:
//   READY {"issuer":"http://localhost:PORT","port":PORT,"control_port":N,"kid":"..."}
//
// Control API on 127.0.0.1:CONTROL_PORT (JSON in, JSON out):
//   GET  /state    issuer, running, kids in the JWKS, the current signing kid
//                  and alg, the pending one-shot options, the last ID token
//                  (header and claims, as signed), the authorize and token
//                  requests received since the last reset, and every
//                  request's method and path (requests.http, the last 1000)
//   POST /reset    forget one-shot options, the profile and the request log;
//                  sign with the first RS256 key again (keys stay published)
//   POST /profile  {"sub","email","name","given_name","family_name","picture",
//                  ...}: claims every ID token gets until the next reset
//   POST /next     one-shot options for the next login, merged:
//                    deny: true            authorize redirects back with
//                                          error=access_denied (no code)
//                    claims: {...}         extra/overriding ID token claims
//                    aud: "x"              ID token aud
//                    iss: "x"              ID token iss
//                    nonce: "x"            ID token nonce (null: none)
//                    exp_offset: -3600     ID token exp = now + offset (iat
//                                          and nbf moved before it)
//                    bad_signature: true   ID token signed by a key that is
//                                          not published (same kid and alg)
//                    unknown_kid: true     ID token signed by an unpublished key
//                                          under a kid nobody knows
//                    alg_none: true        ID token with alg "none", no signature
//                    id_token: "raw"       this string instead of the ID token
//                    drop_id_token: true   no id_token in the token response
//                    token_status: 500     token endpoint answers this status
//                                          with {"error":"server_error"}
//                  deny is used by the next authorize; the others by the next
//                  authorization_code token request that gets a token (one
//                  refused before, e.g. a PKCE mismatch, leaves them).
//   POST /rotate   {"alg":"RS256"|"ES256"}: generate a new signing key (new
//                  kid, published in the JWKS at once) and sign with it
//   POST /use      {"alg":"ES256"|"RS256"} or {"kid":"..."}: sign with that
//                  (existing or newly generated) key from now on
//   POST /stop     stop the provider (close the listener and every open
//                  connection: it is unreachable); /start brings it back on
//                  the same port with the same keys
//
// The process exits on SIGTERM/SIGINT, and by itself when its parent dies.
'use strict';

const http = require('node:http');
const crypto = require('node:crypto');
const path = require('node:path');

let mockServer;
try {
    mockServer = require(path.join(__dirname, 'node_modules', 'oauth2-mock-server'));
} catch (e) {
    process.stderr.write('mock.js: oauth2-mock-server is not installed (run scripts/npm-deps.sh): ' +
                         e.message + '\n');
    process.exit(3);
}
const { OAuth2Server } = mockServer;

const args = process.argv.slice(2);
const port = Number(args[0]);
const controlPort = Number(args[1]);
const withEs256 = args.includes('--es256');
if (!Number.isInteger(port) || port <= 0 || !Number.isInteger(controlPort) || controlPort <= 0) {
    process.stderr.write('usage: node mock.js PORT CONTROL_PORT [--es256]\n');
    process.exit(2);
}
const HOST = '127.0.0.1';

// ------------------------------------------------------------------ state --
const oauth = new OAuth2Server();
const issuerUrl = `http://localhost:${port}`;
const keys = [];              // every private JWK we generated (all published)
let current = null;           // the JWK that signs tokens now
let profile = {};             // claims every ID token gets (POST /profile)
let next = {};                // one-shot options (POST /next)
let log = { authorize: [], token: [], http: [] };
let lastIdToken = null;       // {raw, header, claims, kid}

async function generate(alg) {
    const jwk = await oauth.issuer.keys.generate(alg);
    keys.push(jwk);
    return jwk;
}

// The library signs every token with the first key of its store and then
// rotates through them; pin the key we choose instead (a kid asked for
// explicitly still finds its own key).
const store = oauth.issuer.keys;
const storeGet = store.get.bind(store);
store.get = (kid) => (kid === undefined ? current : storeGet(kid));

function b64url(buf) {
    return Buffer.from(buf).toString('base64').replace(/=+$/, '').replace(/\+/g, '-').replace(/\//g, '_');
}
function decodeJwtPart(part) {
    return JSON.parse(Buffer.from(part.replace(/-/g, '+').replace(/_/g, '/'), 'base64').toString('utf8'));
}

// Sign header.payload with a key nobody published (same alg; same kid, or
// with newKid a kid nobody knows).
function rogueSign(idToken, newKid) {
    let [h, p] = idToken.split('.');
    const header = decodeJwtPart(h);
    if (newKid) {
        header.kid = crypto.randomBytes(20).toString('hex');
        h = b64url(JSON.stringify(header));
    }
    const data = Buffer.from(`${h}.${p}`);
    let sig;
    if (header.alg === 'ES256') {
        const { privateKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
        sig = crypto.sign('sha256', data, { key: privateKey, dsaEncoding: 'ieee-p1363' });
    } else {
        const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
        sig = crypto.sign('sha256', data, privateKey);
    }
    return `${h}.${p}.${b64url(sig)}`;
}

function algNone(idToken) {
    const [h, p] = idToken.split('.');
    const header = decodeJwtPart(h);
    const nh = { alg: 'none', typ: 'JWT' };
    if (header.kid) nh.kid = header.kid;
    return `${b64url(JSON.stringify(nh))}.${p}.`;
}

// An ID token (as opposed to the access token built by the same call): the
// library gives it an aud (the client id) and no scope.
function isIdToken(payload) {
    return Object.prototype.hasOwnProperty.call(payload, 'aud') &&
        !Object.prototype.hasOwnProperty.call(payload, 'scope');
}

// ------------------------------------------------------------ mock hooks --
const service = oauth.service;
let tokenOptions = null;      // the one-shot options the current token request uses

service.on('beforeAuthorizeRedirect', (authorizeRedirectUri, req) => {
    const q = { ...req.query };
    log.authorize.push(q);
    if (next.deny) {
        const url = authorizeRedirectUri.url;
        url.searchParams.delete('code');
        url.searchParams.set('error', 'access_denied');
        url.searchParams.set('error_description', 'The user denied the request');
        delete next.deny;
    }
});

// The first token built for a request picks the one-shot options up (for an
// authorization_code exchange; other grants leave them for the next login).
const seen = new WeakSet();
function optionsFor(req) {
    if (!seen.has(req)) {
        seen.add(req);
        if (req.body && req.body.grant_type === 'authorization_code') {
            tokenOptions = next;
            next = {};
        } else {
            tokenOptions = null;
        }
    }
}

service.on('beforeTokenSigning', (token, req) => {
    optionsFor(req);
    if (!isIdToken(token.payload))
        return;
    const o = tokenOptions || {};
    Object.assign(token.payload, profile, o.claims || {});
    if ('aud' in o) token.payload.aud = o.aud;
    if ('iss' in o) token.payload.iss = o.iss;
    if ('nonce' in o) {
        if (o.nonce === null) delete token.payload.nonce;
        else token.payload.nonce = o.nonce;
    }
    if (typeof o.exp_offset === 'number') {
        const now = Math.floor(Date.now() / 1000);
        token.payload.exp = now + o.exp_offset;
        token.payload.iat = Math.min(token.payload.iat, token.payload.exp - 3600);
        token.payload.nbf = token.payload.iat;
    }
});

service.on('beforeResponse', (tokenEndpointResponse, req) => {
    optionsFor(req);
    const o = tokenOptions || {};
    const body = tokenEndpointResponse.body;
    if (body && typeof body.id_token === 'string') {
        if (o.bad_signature) body.id_token = rogueSign(body.id_token);
        if (o.unknown_kid) body.id_token = rogueSign(body.id_token, true);
        if (o.alg_none) body.id_token = algNone(body.id_token);
        if (typeof o.id_token === 'string') body.id_token = o.id_token;
        if (o.drop_id_token) delete body.id_token;
    }
    if (typeof o.token_status === 'number') {
        tokenEndpointResponse.statusCode = o.token_status;
        tokenEndpointResponse.body = { error: 'server_error', error_description: 'mock failure' };
    }
    const raw = tokenEndpointResponse.body && tokenEndpointResponse.body.id_token;
    if (typeof raw === 'string') {
        let header = null, claims = null;
        try {
            const parts = raw.split('.');
            header = decodeJwtPart(parts[0]);
            claims = decodeJwtPart(parts[1]);
        } catch (e) { /* a deliberately broken token */ }
        lastIdToken = { raw, header, claims, kid: header && header.kid };
    }
});

// Record every token request (what kiln sent) once it is answered: express
// has parsed the form into req.body by then (the same object we passed it).
function recordToken(req, status) {
    const entry = { status, headers: {}, form: { ...(req.body || {}) } };
    for (const h of ['authorization', 'content-type', 'accept', 'user-agent'])
        if (req.headers[h] !== undefined) entry.headers[h] = req.headers[h];
    const auth = req.headers.authorization || '';
    if (/^basic /i.test(auth)) {
        const dec = Buffer.from(auth.slice(6).trim(), 'base64').toString('utf8');
        const i = dec.indexOf(':');
        entry.basic = { client_id: decodeURIComponent(dec.slice(0, i)),
                        client_secret: decodeURIComponent(dec.slice(i + 1)) };
    }
    log.token.push(entry);
}

// ----------------------------------------------------------- the servers --
const handler = service.requestHandler;   // the library's express app
const sockets = new Set();
let provider = null;

function providerListener(req, res) {
    log.http.push({ method: req.method, path: req.url.split('?')[0] });
    if (log.http.length > 1000) log.http.shift();
    if (req.method === 'POST' && req.url.split('?')[0] === '/token')
        res.on('finish', () => recordToken(req, res.statusCode));
    handler(req, res);
}

function startProvider() {
    return new Promise((resolve, reject) => {
        if (provider) return resolve();
        const s = http.createServer(providerListener);
        s.keepAliveTimeout = 5000;
        s.on('connection', (sock) => {
            sockets.add(sock);
            sock.on('close', () => sockets.delete(sock));
        });
        s.once('error', reject);
        s.listen(port, HOST, () => {
            provider = s;
            oauth.issuer.url = issuerUrl;
            resolve();
        });
    });
}

function stopProvider() {
    return new Promise((resolve) => {
        if (!provider) return resolve();
        const s = provider;
        provider = null;
        s.close(() => resolve());
        for (const sock of sockets) sock.destroy();
        sockets.clear();
    });
}

function publicKids() {
    return oauth.issuer.keys.toJSON().map((k) => ({ kid: k.kid, alg: k.alg }));
}

function state() {
    return {
        issuer: issuerUrl, port, control_port: controlPort, running: provider !== null,
        kid: current.kid, alg: current.alg, jwks: publicKids(), next, profile,
        last_id_token: lastIdToken, requests: log,
    };
}

async function control(method, pathname, body) {
    if (method === 'GET' && pathname === '/state') return state();
    if (method !== 'POST') return null;
    switch (pathname) {
    case '/reset':
        next = {}; profile = {}; tokenOptions = null; lastIdToken = null;
        log = { authorize: [], token: [], http: [] };
        current = keys.find((k) => k.alg === 'RS256');
        if (!provider) await startProvider();
        return state();
    case '/profile':
        profile = { ...body };
        return state();
    case '/next':
        next = { ...next, ...body };
        return state();
    case '/rotate':
        current = await generate(body.alg || 'RS256');
        return state();
    case '/use': {
        let k;
        if (body.kid) k = keys.find((x) => x.kid === body.kid);
        else k = [...keys].reverse().find((x) => x.alg === body.alg) || await generate(body.alg);
        if (!k) throw Object.assign(new Error('no such key'), { status: 404 });
        current = k;
        return state();
    }
    case '/stop':
        await stopProvider();
        return state();
    case '/start':
        await startProvider();
        return state();
    default:
        return null;
    }
}

const controlServer = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', async () => {
        let body = {};
        const send = (status, obj) => {
            const data = JSON.stringify(obj);
            res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) });
            res.end(data);
        };
        try {
            if (chunks.length) body = JSON.parse(Buffer.concat(chunks).toString('utf8')) || {};
            const out = await control(req.method, new URL(req.url, 'http://x').pathname, body);
            if (out === null) return send(404, { error: 'no such control route' });
            send(200, out);
        } catch (e) {
            send(e.status || 500, { error: String(e && e.message || e) });
        }
    });
});

async function main() {
    current = await generate('RS256');
    if (withEs256) await generate('ES256');
    await startProvider();
    await new Promise((resolve, reject) => {
        controlServer.once('error', reject);
        controlServer.listen(controlPort, HOST, resolve);
    });
    process.stdout.write('READY ' + JSON.stringify({ issuer: issuerUrl, port, control_port: controlPort,
                                                     kid: current.kid }) + '\n');
}

function quit() {
    controlServer.close();
    stopProvider().then(() => process.exit(0));
    setTimeout(() => process.exit(0), 1000).unref();
}
process.on('SIGTERM', quit);
process.on('SIGINT', quit);
// No orphans: a test run that dies without stopping us takes us along.
const parent = process.ppid;
setInterval(() => {
    if (process.ppid !== parent) quit();
}, 500).unref();

main().catch((e) => {
    process.stderr.write('mock.js: ' + (e && e.stack || e) + '\n');
    process.exit(1);
});
