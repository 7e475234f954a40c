// The vector checks, shared by the Node runners (vectors.mjs, rfc9605.mjs) and the Chromium
// worker (worker.mjs): each takes the vector file's text and returns counts, or throws on the
// first mismatch.
import { FrameKey, KeyRing, SenderKey, decodeHeader, encodeHeader, ratchetBaseKey } from "../sframe.mjs";

const hex = (s) => Uint8Array.from(s.match(/../g) ?? [], (b) => parseInt(b, 16));
const toHex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");

/// sotto-codec-aware-independent.json: every frame opens (with its step's key, and from step 0
/// through the ratchet when at most 6 steps ahead) and seals again to the same bytes.
export async function checkIndependent(text) {
  const { vectors } = JSON.parse(text);
  let opened = 0, resealed = 0, ratcheted = 0;
  for (const [i, v] of vectors.entries()) {
    const fail = (what) => {
      throw new Error(`vector ${i}: ${what}`);
    };
    let base = hex(v.base_key_step0);
    for (let s = 0; s < v.step; s++) base = await ratchetBaseKey(v.suite, base);
    if (toHex(base) !== v.base_key) fail("ratchet differs");
    const wire = hex(v.wire);
    const metadata = hex(v.metadata);
    const id = { suite: v.suite, sender: BigInt(v.sender), generation: BigInt(v.generation) };
    const ring = new KeyRing(v.suite);
    await ring.addKey({ ...id, step: BigInt(v.step), baseKey: hex(v.base_key) }, 0);
    const got = await ring.decrypt(v.codec, wire, 0, metadata);
    if (toHex(got.frame) !== v.plaintext) fail("plaintext differs");
    if (got.ctr !== BigInt(v.ctr) || got.step !== BigInt(v.step)) fail("ctr/step differ");
    opened++;
    if (v.step > 0 && v.step <= 6) {
      const r0 = new KeyRing(v.suite);
      await r0.addKey({ ...id, step: 0n, baseKey: hex(v.base_key_step0) }, 0);
      const g = await r0.decrypt(v.codec, wire, 0, metadata);
      if (toHex(g.frame) !== v.plaintext || g.step !== BigInt(v.step)) fail("ratchet-ahead open differs");
      ratcheted++;
    }
    const s = await SenderKey.create(v.suite, id.sender, hex(v.base_key), {
      generation: id.generation,
      step: BigInt(v.step),
      nextCtr: BigInt(v.ctr),
    });
    if (toHex(await s.encrypt(v.codec, hex(v.plaintext), metadata)) !== v.wire) fail("resealed wire differs");
    resealed++;
  }
  return { opened, resealed, ratcheted };
}

/// RFC 9605 Appendix C: every header case, the per-suite sframe cases, the AES-CTR-HMAC cases.
export async function checkRfc9605(text) {
  // KIDs and counters reach 2^64 - 1: read them as strings, not as (lossy) JS numbers
  const d = JSON.parse(text.replace(/"(kid|ctr)": (\d+)/g, '"$1": "$2"'));
  const fail = (what) => {
    throw new Error(what);
  };
  let headers = 0, sframe = 0, ctrHmac = 0;
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
    if (toHex(header) + toHex(await key.seal(ctr, aad, hex(v.pt))) !== v.ct) fail(`sframe suite ${v.cipher_suite}: ciphertext`);
    if (toHex(await key.open(ctr, aad, hex(v.ct).subarray(header.length))) !== v.pt) fail(`sframe suite ${v.cipher_suite}: open`);
    sframe++;
  }
  // these cases give the raw key and nonce: a FrameKey whose salt is the nonce (counter 0)
  const subtle = globalThis.crypto.subtle;
  for (const v of d.aes_ctr_hmac) {
    const key = await FrameKey.derive(v.cipher_suite, 0n, new Uint8Array(16));
    const k = hex(v.key);
    key.aead = {
      ctr: await subtle.importKey("raw", k.subarray(0, 16), "AES-CTR", false, ["encrypt", "decrypt"]),
      mac: await subtle.importKey("raw", k.subarray(16), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]),
    };
    key.salt = hex(v.nonce);
    if (toHex(await key.seal(0n, hex(v.aad), hex(v.pt))) !== v.ct) fail(`aes_ctr_hmac suite ${v.cipher_suite}: ciphertext`);
    if (toHex(await key.open(0n, hex(v.aad), hex(v.ct))) !== v.pt) fail(`aes_ctr_hmac suite ${v.cipher_suite}: open`);
    const bad = hex(v.ct);
    bad[0] ^= 1;
    let refused = false;
    try {
      await key.open(0n, hex(v.aad), bad);
    } catch (e) {
      if (e.code !== "AuthenticationFailed") throw e;
      refused = true;
    }
    if (!refused) fail(`aes_ctr_hmac suite ${v.cipher_suite}: a flipped bit opened`);
    ctrHmac++;
  }
  return { headers, sframe, aes_ctr_hmac: ctrHmac };
}
