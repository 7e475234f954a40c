#!/usr/bin/env node
// Delete the native prebuilds this machine cannot use, after `npm ci`.
//
// Layout (checked for 0.72.1, 0.90.0, 0.92.2, 0.103.0): each package ships
//   node_modules/<alias>/prebuilds/<platform>-<arch>/@signalapp+libsignal-client.node
// for darwin-arm64, darwin-x64, linux-arm64, linux-x64, win32-arm64, win32-x64
// (~15-31 MB each). node-gyp-build picks prebuilds/<process.platform>-<process.arch>,
// so only that directory is kept. Default keep list: the running platform
// (linux-x64 here and in CI). Override with: node prune.mjs --keep linux-x64,linux-arm64
//
// Usage: node tests/interop/prune.mjs [--keep a,b] [--dry-run]
import { readdirSync, rmSync, statSync, existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const NM = path.join(HERE, 'node_modules');
const args = process.argv.slice(2);
const dry = args.includes('--dry-run');
const ki = args.indexOf('--keep');
const keep = new Set(ki >= 0 ? args[ki + 1].split(',') : [`${process.platform}-${process.arch}`]);

function du(p) {
  const st = statSync(p);
  if (!st.isDirectory()) return st.size;
  return readdirSync(p).reduce((n, e) => n + du(path.join(p, e)), 0);
}

if (!existsSync(NM)) {
  console.error(`prune: ${NM} does not exist; run npm ci first`);
  process.exit(1);
}
let freed = 0, kept = 0;
for (const pkg of readdirSync(NM)) {
  const pre = path.join(NM, pkg, 'prebuilds');
  if (!existsSync(pre)) continue;
  for (const plat of readdirSync(pre)) {
    const dir = path.join(pre, plat);
    if (keep.has(plat)) { kept++; continue; }
    freed += du(dir);
    if (!dry) rmSync(dir, { recursive: true, force: true });
  }
}
if (kept === 0) {
  console.error(`prune: no prebuild matched ${[...keep].join(',')}: the peer will not load on this platform`);
  process.exit(1);
}
console.log(`prune: ${dry ? 'would free' : 'freed'} ${(freed / 1048576).toFixed(1)} MiB; kept ${kept} prebuild dir(s) for ${[...keep].join(',')}; node_modules now ${(du(NM) / 1048576).toFixed(1)} MiB`);
