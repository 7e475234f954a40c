// Small driver for peer.mjs processes, shared by selftest.mjs and observe.mjs.
// It speaks exactly the JSON-lines protocol in PROTOCOL.md, so it doubles as
// a reference for the Rust harness.
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const PEER = path.join(HERE, 'peer.mjs');

export const enc = (s) => Buffer.from(s, 'utf8').toString('base64');
export const dec = (b) => Buffer.from(b, 'base64').toString('utf8');
export const bytes = (b) => Buffer.from(b, 'base64');

export class Peer {
  constructor(lib, label = lib, { timeoutMs = 30000 } = {}) {
    this.lib = lib;
    this.label = label;
    this.timeoutMs = timeoutMs;
    this.proc = spawn(process.execPath, [PEER, '--lib', lib], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.stderr = '';
    this.proc.stderr.on('data', (d) => { this.stderr += d; });
    this.waiters = [];
    this.rl = createInterface({ input: this.proc.stdout });
    this.rl.on('line', (line) => {
      const w = this.waiters.shift();
      if (!w) throw new Error(`${label}: unsolicited output: ${line}`);
      clearTimeout(w.timer);
      try { w.resolve(JSON.parse(line)); } catch (e) { w.reject(new Error(`${label}: non-JSON line: ${line}`)); }
    });
    this.proc.on('exit', (code) => {
      for (const w of this.waiters.splice(0)) w.reject(new Error(`${label}: exited ${code}; stderr:\n${this.stderr}`));
    });
  }

  /** Send one request; resolves with the raw response object (ok true or false). */
  raw(op, fields = {}) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${this.label}: timeout on ${op}`)), this.timeoutMs);
      this.waiters.push({ resolve, reject, timer });
      this.proc.stdin.write(JSON.stringify({ op, ...fields }) + '\n');
    });
  }

  /** Like raw, but throws if ok is false. */
  async call(op, fields = {}) {
    const r = await this.raw(op, fields);
    if (!r.ok) throw new Error(`${this.label}: ${op} failed: ${r.error}`);
    return r;
  }

  async close() {
    this.proc.stdin.end();
    await new Promise((res) => (this.proc.exitCode !== null ? res() : this.proc.on('exit', res)));
    return this.proc.exitCode;
  }
}
