// Differential driver: replays a scenario that sotto-frame (Rust) generated and ran, with
// web/sframe.mjs, and prints what each step gave, for the Rust test to compare
// (crates/sotto-app/tests/web_sframe.rs). Usage: node replay.mjs SCENARIO.json
// Steps: {op:"ring", suite} | {op:"add", material, now} | {op:"decrypt", codec, wire, metadata, now}
//      | {op:"expire", now} | {op:"remove", sender} | {op:"seal", material, ctr, codec, frame, metadata}
// Results, one per step: {ok: value} or {err: code}; decrypt's value is
// "sender/generation/step/ctr/<frame hex>", seal's the wire hex, add's the KeyUpdate name.
import { readFileSync } from "node:fs";
import { KeyRing, SenderKey, parseKeyMaterial } from "../sframe.mjs";

const hex = (s) => Uint8Array.from(s.match(/../g) ?? [], (b) => parseInt(b, 16));
const toHex = (b) => Buffer.from(b).toString("hex");
const steps = JSON.parse(readFileSync(process.argv[2], "utf8"));
const out = [];
let ring = null;
for (const s of steps) {
  try {
    switch (s.op) {
      case "ring":
        ring = new KeyRing(s.suite);
        out.push({ ok: "" });
        break;
      case "add":
        out.push({ ok: await ring.addKey(hex(s.material), s.now) });
        break;
      case "decrypt": {
        const d = await ring.decrypt(s.codec, hex(s.wire), s.now, hex(s.metadata));
        out.push({ ok: `${d.sender}/${d.generation}/${d.step}/${d.ctr}/${toHex(d.frame)}` });
        break;
      }
      case "expire":
        await ring.expire(s.now);
        out.push({ ok: "" });
        break;
      case "remove":
        await ring.removeSender(BigInt(s.sender));
        out.push({ ok: "" });
        break;
      case "seal": {
        const m = parseKeyMaterial(hex(s.material));
        const k = await SenderKey.create(m.suite, m.sender, m.baseKey, { generation: m.generation, step: m.step, nextCtr: BigInt(s.ctr) });
        out.push({ ok: toHex(await k.encrypt(s.codec, hex(s.frame), hex(s.metadata))) });
        break;
      }
      default:
        throw new Error(`unknown step ${s.op}`);
    }
  } catch (e) {
    if (e.code === undefined) throw e;
    out.push({ err: e.code });
  }
}
console.log(JSON.stringify(out));
