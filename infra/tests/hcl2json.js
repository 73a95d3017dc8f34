// HCL -> JSON for the infra policy suite (infra/tests/hcl.py).
//
// Reads one request per line on stdin, {"id": n, "name": "file.tf",
// "text": "..."}, and answers one line per request on stdout, {"id": n,
// "json": {...}} or {"id": n, "error": "..."}. One process serves a whole
// pytest run: @cdktf/hcl2json (HashiCorp's HCL parser compiled to
// WebAssembly) loads once, and each file then parses in milliseconds.
"use strict";
const readline = require("readline");
const { parse } = require("@cdktf/hcl2json");

const rl = readline.createInterface({ input: process.stdin, terminal: false });
let queue = Promise.resolve();

rl.on("line", (line) => {
  if (!line.trim()) return;
  // Answer in request order.
  queue = queue.then(async () => {
    let req;
    try {
      req = JSON.parse(line);
    } catch (e) {
      process.stdout.write(JSON.stringify({ id: null, error: "bad request: " + e.message }) + "\n");
      return;
    }
    try {
      const json = await parse(req.name, req.text);
      process.stdout.write(JSON.stringify({ id: req.id, json }) + "\n");
    } catch (e) {
      process.stdout.write(JSON.stringify({ id: req.id, error: String(e && e.message ? e.message : e) }) + "\n");
    }
  });
});

rl.on("close", () => {
  queue.then(() => process.exit(0));
});
