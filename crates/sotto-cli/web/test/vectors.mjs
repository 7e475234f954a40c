// Opens every frame of an independent implementation's vector file with web/sframe.mjs, and
// seals the same frames again bit for bit. Usage: node vectors.mjs FILE.json
// Prints one JSON line: {"opened": n, "resealed": n, "ratcheted": n}; exits 1 on any mismatch.
import { readFileSync } from "node:fs";
import { KeyRing, SenderKey, ratchetBaseKey } from "../sframe.mjs";

const hex = (s) => Uint8Array.from(s.match(/../g) ?? [], (b) => parseInt(b, 16));
const toHex = (b) => Buffer.from(b).toString("hex");
const file = process.argv[2];
const { vectors } = JSON.parse(readFileSync(file, "utf8"));
let opened = 0, resealed = 0, ratcheted = 0;
const fail = (i, what) => {
  console.error(`vector ${i}: ${what}`);
  process.exit(1);
};
for (const [i, v] of vectors.entries()) {
  // the ratchet: base_key is base_key_step0 ratcheted `step` times
  let base = hex(v.base_key_step0);
  for (let s = 0; s < v.step; s++) base = await ratchetBaseKey(v.suite, base);
  if (toHex(base) !== v.base_key) fail(i, "ratchet differs");
  const wire = hex(v.wire);
  const metadata = hex(v.metadata);
  const want = toHex(hex(v.plaintext));
  // open with the material for this very step
  const ring = new KeyRing(v.suite);
  await ring.addKey({ suite: v.suite, sender: BigInt(v.sender), generation: BigInt(v.generation), step: BigInt(v.step), baseKey: hex(v.base_key) }, 0);
  const got = await ring.decrypt(v.codec, wire, 0, metadata);
  if (toHex(got.frame) !== want) fail(i, "plaintext differs");
  if (got.ctr !== BigInt(v.ctr) || got.step !== BigInt(v.step)) fail(i, "ctr/step differ");
  opened++;
  // a receiver that only has step 0 follows the ratchet (up to MAX_RATCHET_AHEAD)
  if (v.step > 0 && v.step <= 6) {
    const r0 = new KeyRing(v.suite);
    await r0.addKey({ suite: v.suite, sender: BigInt(v.sender), generation: BigInt(v.generation), step: 0n, baseKey: hex(v.base_key_step0) }, 0);
    const g = await r0.decrypt(v.codec, wire, 0, metadata);
    if (toHex(g.frame) !== want || g.step !== BigInt(v.step)) fail(i, "ratchet-ahead open differs");
    ratcheted++;
  }
  // seal the same frame again: the same bytes
  const s = await SenderKey.create(v.suite, BigInt(v.sender), hex(v.base_key), { generation: BigInt(v.generation), step: BigInt(v.step), nextCtr: BigInt(v.ctr) });
  const again = await s.encrypt(v.codec, hex(v.plaintext), metadata);
  if (toHex(again) !== v.wire) fail(i, "resealed wire differs");
  resealed++;
}
console.log(JSON.stringify({ opened, resealed, ratcheted }));
