#!/usr/bin/env node
// An S3 stand-in on loopback for Kiln's uploads tests: the npm package
// s3rver (installed by scripts/npm-deps.sh into app/tests/s3/node_modules),
// in front of which a small control API lets a test see every request S3
// received and make the next ones fail.
//
//   node app/tests/s3/s3.js PORT DIRECTORY BUCKET[,BUCKET...]
//
// S3 listens on 127.0.0.1:PORT (path-style: http://127.0.0.1:PORT/<bucket>),
// keeps objects under DIRECTORY, and creates the buckets named. s3rver knows
// one access key, S3RVER / S3RVER; it accepts POST object uploads (it does
// not enforce the policy) and does not check SigV4 signatures: the tests
// check those with botocore. When listening it prints one line:
//   READY {"port":PORT,"buckets":[...]}
//
// Control API on the same port, under /__kiln/ (never logged, never S3):
//   GET  /__kiln/requests  {"requests":[{"method","path","query"}...]}: what
//                          S3 received since the last reset (the last 1000)
//   POST /__kiln/reset     forget the requests and pending failures
//   POST /__kiln/fail      {"status":503,"code":"SlowDown","count":1}: the
//                          next count S3 requests get that status and an S3
//                          error document (no body for HEAD)
//
// The process exits on SIGTERM/SIGINT, and by itself when its parent dies.
'use strict';

const http = require('node:http');
const path = require('node:path');

// s3rver makes its ListObjectsV2 continuation tokens with single DES,
// which OpenSSL 3 keeps in its legacy provider (node then throws, and
// s3rver answers 500 to every truncated listing). Triple DES with the key
// repeated is the same cipher (EDE with K1=K2=K3 is DES) in the default
// provider: swap it in for s3rver's 'des'.
const crypto = require('node:crypto');
for (const name of ['createCipheriv', 'createDecipheriv']) {
    const original = crypto[name];
    crypto[name] = function (alg, key, iv, options) {
        if (String(alg).toLowerCase() === 'des' && key && key.length === 8)
            return original.call(this, 'des-ede3-cbc', Buffer.concat([key, key, key]), iv, options);
        return original.call(this, alg, key, iv, options);
    };
}

let S3rver;
try {
    S3rver = require(path.join(__dirname, 'node_modules', 's3rver'));
} catch (e) {
    process.stderr.write('s3.js: s3rver is not installed (run scripts/npm-deps.sh): ' +
                         e.message + '\n');
    process.exit(3);
}

const args = process.argv.slice(2);
const port = Number(args[0]);
const directory = args[1];
const buckets = (args[2] || '').split(',').filter(Boolean);
if (!Number.isInteger(port) || port <= 0 || !directory || !buckets.length) {
    process.stderr.write('usage: node s3.js PORT DIRECTORY BUCKET[,BUCKET...]\n');
    process.exit(2);
}

const s3 = new S3rver({
    address: '127.0.0.1', port, directory, silent: true, resetOnClose: false,
    configureBuckets: buckets.map((name) => ({ name })),
});

let requests = [];
let failures = { count: 0, status: 503, code: 'SlowDown' };

function sendJson(res, status, obj) {
    const data = JSON.stringify(obj);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) });
    res.end(data);
}

function control(req, res, pathname) {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
        let body = {};
        try {
            if (chunks.length) body = JSON.parse(Buffer.concat(chunks).toString('utf8')) || {};
        } catch (e) {
            return sendJson(res, 400, { error: 'bad JSON' });
        }
        if (req.method === 'GET' && pathname === '/__kiln/requests')
            return sendJson(res, 200, { requests });
        if (req.method === 'POST' && pathname === '/__kiln/reset') {
            requests = [];
            failures = { count: 0, status: 503, code: 'SlowDown' };
            return sendJson(res, 200, { ok: true });
        }
        if (req.method === 'POST' && pathname === '/__kiln/fail') {
            failures = { count: Number(body.count ?? 1), status: Number(body.status || 503),
                         code: String(body.code || 'SlowDown') };
            return sendJson(res, 200, { ok: true });
        }
        sendJson(res, 404, { error: 'no such control route' });
    });
}

function fail(req, res) {
    failures.count--;
    const xml = '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>' + failures.code +
        '</Code><Message>injected by s3.js: SECRET-S3-DETAIL</Message>' +
        '<RequestId>0</RequestId></Error>';
    req.resume();
    res.writeHead(failures.status, { 'content-type': 'application/xml',
                                     'content-length': Buffer.byteLength(xml) });
    res.end(req.method === 'HEAD' ? undefined : xml);
}

async function main() {
    await s3.configureBuckets();
    const handler = s3.callback();
    const server = http.createServer((req, res) => {
        const url = new URL(req.url, 'http://127.0.0.1');
        if (url.pathname.startsWith('/__kiln/'))
            return control(req, res, url.pathname);
        requests.push({ method: req.method, path: url.pathname, query: url.search.slice(1) });
        if (requests.length > 1000) requests.shift();
        if (failures.count > 0)
            return fail(req, res);
        handler(req, res);
    });
    await new Promise((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, '127.0.0.1', resolve);
    });
    process.stdout.write('READY ' + JSON.stringify({ port, buckets }) + '\n');
    const quit = () => {
        server.close();
        setTimeout(() => process.exit(0), 500).unref();
        server.closeAllConnections && server.closeAllConnections();
        process.exit(0);
    };
    process.on('SIGTERM', quit);
    process.on('SIGINT', quit);
    // No orphans: a test run that dies without stopping us takes us along.
    const parent = process.ppid;
    setInterval(() => {
        if (process.ppid !== parent) quit();
    }, 500).unref();
}

main().catch((e) => {
    process.stderr.write('s3.js: ' + (e && e.stack || e) + '\n');
    process.exit(1);
});
