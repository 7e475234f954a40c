// RFC 9605 Appendix C vectors through web/sframe.mjs: every header case (encode and decode),
// the AES-CTR-HMAC cases, and the per-suite sframe cases (key schedule, nonce, seal, open).
// Usage: node rfc9605.mjs FILE.json. Prints one JSON line of counts; exits 1 on any mismatch.
import { readFileSync } from "node:fs";
import { FrameKey, decodeHeader, encodeHeader } from "../sframe.mjs";

const hex = (s) => Uint8Array.from(s.match(/../g) ?? [], (b) => parseInt(b, 16));
const toHex = (b) => Buffer.from(b).toString("hex");
const fail = (what) => {
  console.error(what);
  process.exit(1);
};
// KIDs and counters reach 2^64 - 1: read them as strings, not as (lossy) JS numbers
const text = readFileSync(process.argv[2], "utf8").replace(/"(kid|ctr)": (\d+)/g, '"$1": "$2"');
const d = JSON.parse(text);
let headers = 0, ctrHmac = 0, sframe = 0;
for (const h of d.header) {
  const kid = BigInt(h.kid), ctr = BigInt(h.ctr);
  if (toHex(encodeHeader(kid, ctr)) !== h.encoded) fail(`header ${h.kid}/${h.ctr}: encoding`);
  const got = decodeHeader(hex(h.encoded));
  if (got.kid !== kid || got.ctr !== ctr || got.consumed !== h.encoded.length / 2) fail(`header ${h.kid}/${h.ctr}: decoding`);
  headers++;
}
for (const v of d.sframe) {
  const kid = BigInt(v.kid), ctr = BigInt(v.ctr);
  const key = await FrameKey.derive(v.cipher_suite, kid, hex(v.base_key));
  if (toHex(key.salt) !== v.sframe_salt) fail(`sframe suite ${v.cipher_suite}: salt`);
  if (toHex(key.nonce(ctr)) !== v.nonce) fail(`sframe suite ${v.cipher_suite}: nonce`);
  const header = encodeHeader(kid, ctr);
  const aad = new Uint8Array([...header, ...hex(v.metadata)]);
  if (toHex(aad) !== v.aad) fail(`sframe suite ${v.cipher_suite}: aad`);
  const sealed = await key.seal(ctr, aad, hex(v.pt));
  if (toHex(header) + toHex(sealed) !== v.ct) fail(`sframe suite ${v.cipher_suite}: ciphertext`);
  const opened = await key.open(ctr, aad, hex(v.ct).subarray(header.length));
  if (toHex(opened) !== v.pt) fail(`sframe suite ${v.cipher_suite}: open`);
  sframe++;
}
// the AES-CTR-HMAC cases give the raw key and nonce: a FrameKey whose salt is the nonce
// (counter 0) seals and opens them
for (const v of d.aes_ctr_hmac) {
  const key = await FrameKey.derive(v.cipher_suite, 0n, new Uint8Array(16));
  const subtle = globalThis.crypto.subtle;
  const k = hex(v.key);
  key.aead = {
    ctr: await subtle.importKey("raw", k.subarray(0, 16), "AES-CTR", false, ["encrypt", "decrypt"]),
    mac: await subtle.importKey("raw", k.subarray(16), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]),
  };
  key.salt = hex(v.nonce);
  const sealed = await key.seal(0n, hex(v.aad), hex(v.pt));
  if (toHex(sealed) !== v.ct) fail(`aes_ctr_hmac suite ${v.cipher_suite}: ciphertext`);
  if (toHex(await key.open(0n, hex(v.aad), hex(v.ct))) !== v.pt) fail(`aes_ctr_hmac suite ${v.cipher_suite}: open`);
  const bad = hex(v.ct);
  bad[0] ^= 1;
  try {
    await key.open(0n, hex(v.aad), bad);
    fail(`aes_ctr_hmac suite ${v.cipher_suite}: a flipped bit opened`);
  } catch (e) {
    if (e.code !== "AuthenticationFailed") throw e;
  }
  ctrHmac++;
}
console.log(JSON.stringify({ headers, sframe, aes_ctr_hmac: ctrHmac }));
