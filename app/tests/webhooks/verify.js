#!/usr/bin/env node
// Verifies webhook deliveries with standardwebhooks, the Standard Webhooks
// reference library (a verifier Kiln did not write), for
// app/tests/http/test_webhooks.py.
//
// Reads JSON lines on stdin, one delivery each:
//
//   {"secret": "whsec_...", "headers": {"webhook-id": ..., ...},
//    "body": "<the raw body as text>"}          (or "body_base64": "...")
//
// and writes one JSON line on stdout for each, in the same order:
//
//   {"ok": true, "payload": <what verify() returned: the parsed body>}
//   {"ok": false, "error": "WebhookVerificationError: No matching signature found"}
//
// A line that is not such an object gets {"ok": false, "error": ...} too.
// Exits when stdin ends.
"use strict";

const readline = require("readline");
const { Webhook } = require("standardwebhooks");

function verifyOne(line) {
  let input;
  try {
    input = JSON.parse(line);
  } catch (e) {
    return { ok: false, error: `bad input line: ${e.message}` };
  }
  if (!input || typeof input !== "object" || typeof input.secret !== "string" ||
      !input.headers || typeof input.headers !== "object") {
    return { ok: false, error: "bad input line: want {secret, headers, body}" };
  }
  const body = typeof input.body_base64 === "string"
    ? Buffer.from(input.body_base64, "base64")
    : input.body;
  try {
    const payload = new Webhook(input.secret).verify(body, input.headers);
    return { ok: true, payload: payload === undefined ? null : payload };
  } catch (e) {
    return { ok: false, error: `${e && e.name ? e.name : "Error"}: ${e && e.message ? e.message : e}` };
  }
}

const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
rl.on("line", (line) => {
  if (line.trim() === "") {
    return;
  }
  process.stdout.write(JSON.stringify(verifyOne(line)) + "\n");
});
