// SFrame (RFC 9605) for the browser call screen's frame worker, as protocol-spec/frame.md says:
// the header, the key schedule, the codec-aware layout (VP8 10/3 clear bytes, Opus TOC), the KID
// layout, the receiver key ring (generations, ratchet on join, grace period, replay window).
// WebCrypto only (AES-GCM suites 4 and 5, AES-CTR + HMAC-SHA256 suites 1-3). The second
// implementation of frame.md next to crates/sotto-frame: tests run both on the same frames
// (crates/sotto-app/tests/web_sframe.rs) and on frames sealed by a third, independent one.
//
// Runs in a DedicatedWorker and in Node >= 20 (globalThis.crypto.subtle). KIDs and counters are
// BigInts (64-bit on the wire); times are milliseconds from any monotonic clock the caller uses.

const subtle = globalThis.crypto.subtle;

/// The IANA SFrame cipher suites (frame.md §1).
export const SUITES = Object.freeze({
  1: Object.freeze({ id: 1, name: "AES_128_CTR_HMAC_SHA256_80", hash: "SHA-256", nh: 32, nk: 48, nn: 12, nt: 10, gcm: false }),
  2: Object.freeze({ id: 2, name: "AES_128_CTR_HMAC_SHA256_64", hash: "SHA-256", nh: 32, nk: 48, nn: 12, nt: 8, gcm: false }),
  3: Object.freeze({ id: 3, name: "AES_128_CTR_HMAC_SHA256_32", hash: "SHA-256", nh: 32, nk: 48, nn: 12, nt: 4, gcm: false }),
  4: Object.freeze({ id: 4, name: "AES_128_GCM_SHA256_128", hash: "SHA-256", nh: 32, nk: 16, nn: 12, nt: 16, gcm: true }),
  5: Object.freeze({ id: 5, name: "AES_256_GCM_SHA512_128", hash: "SHA-512", nh: 64, nk: 32, nn: 12, nt: 16, gcm: true }),
});

/// The limits of frame.md §6, same names and values as crates/sotto-frame/src/consts.rs.
export const LIMITS = Object.freeze({
  MAX_FRAME_SIZE: 1 << 20,
  MAX_METADATA_SIZE: 256,
  MAX_HEADER_SIZE: 17,
  MAX_RATCHET_AHEAD: 6n,
  MAX_GENERATIONS: 3,
  MAX_OLD_STEPS: 2,
  MAX_SENDERS: 1024,
  REPLAY_WINDOW: 128n,
  MAX_FRAMES_PER_KEY: 1n << 32n,
  DEFAULT_GRACE_PERIOD_MS: 5000,
  MAX_GRACE_PERIOD_MS: 3600 * 1000,
  MIN_BASE_KEY_SIZE: 16,
  MAX_BASE_KEY_SIZE: 64,
  MAX_SENDER_ID: (1n << 56n) - 1n,
  MAX_STEP: 1n << 53n,
  VP8_KEY_FRAME_CLEAR_BYTES: 10,
  VP8_DELTA_FRAME_CLEAR_BYTES: 3,
  OPUS_CLEAR_BYTES: 1,
});

const GEN_SPACE = 16n;
const STEP_SPACE = 16n;
const KEY_MATERIAL_VERSION = 1;
const enc = new TextEncoder();

/// Why a frame or key was refused. `code` is the name of the matching variant of
/// `sotto_frame::Error` (e.g. "Replay", "AuthenticationFailed"): tests compare codes, never text.
export class SFrameError extends Error {
  constructor(code, detail = "") {
    super(detail ? `${code}: ${detail}` : code);
    this.name = "SFrameError";
    this.code = code;
  }
}

function suiteOf(id) {
  const s = SUITES[id];
  if (!s) throw new SFrameError("UnsupportedSuite", String(id));
  return s;
}

function concat(...parts) {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function be(value, bytes) {
  const out = new Uint8Array(bytes);
  let v = BigInt(value);
  for (let i = bytes - 1; i >= 0; i--) {
    out[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  return out;
}

function readBe(bytes) {
  let v = 0n;
  for (const b of bytes) v = (v << 8n) | BigInt(b);
  return v;
}

function minLen(value) {
  let n = 1;
  while (value >> BigInt(8 * n) !== 0n) n++;
  return n;
}

// ---------------------------------------------------------------------------------------------
// Header (frame.md §2)

/// The shortest encoding of (kid, ctr).
export function encodeHeader(kid, ctr) {
  kid = BigInt(kid);
  ctr = BigInt(ctr);
  let config = 0;
  const tail = [];
  if (kid < 8n) {
    config |= Number(kid) << 4;
  } else {
    const n = minLen(kid);
    config |= 0x80 | ((n - 1) << 4);
    tail.push(be(kid, n));
  }
  if (ctr < 8n) {
    config |= Number(ctr);
  } else {
    const n = minLen(ctr);
    config |= 0x08 | (n - 1);
    tail.push(be(ctr, n));
  }
  return concat(Uint8Array.of(config), ...tail);
}

/// Decodes a header at the start of `input`: `{ kid, ctr, consumed }`. Refuses truncated and
/// non-minimal encodings ("MalformedHeader").
export function decodeHeader(input) {
  if (input.length < 1) throw new SFrameError("MalformedHeader", "empty input");
  const config = input[0];
  let at = 1;
  const read = (extended, field, what) => {
    if (!extended) return BigInt(field);
    const n = field + 1;
    if (input.length - at < n) throw new SFrameError("MalformedHeader", what);
    const value = readBe(input.subarray(at, at + n));
    at += n;
    if (value < 8n || minLen(value) !== n) {
      throw new SFrameError("MalformedHeader", "value not minimally encoded");
    }
    return value;
  };
  const kid = read((config & 0x80) !== 0, (config >> 4) & 0x07, "truncated KID");
  const ctr = read((config & 0x08) !== 0, config & 0x07, "truncated CTR");
  return { kid, ctr, consumed: at };
}

// ---------------------------------------------------------------------------------------------
// Codec-aware layout (frame.md §5)

/// Number of leading bytes of `frame` kept in clear for `codec` ("full", "vp8", "opus").
export function clearLen(codec, frame) {
  let needed;
  switch (codec) {
    case "full":
      return 0;
    case "opus":
      needed = LIMITS.OPUS_CLEAR_BYTES;
      break;
    case "vp8":
      // RFC 6386 §9.1: bit 0 of the frame tag is 0 for a key frame
      needed = frame.length > 0 && (frame[0] & 0x01) === 0
        ? LIMITS.VP8_KEY_FRAME_CLEAR_BYTES
        : LIMITS.VP8_DELTA_FRAME_CLEAR_BYTES;
      break;
    default:
      throw new SFrameError("UnsupportedCodec", String(codec));
  }
  if (frame.length < needed) {
    throw new SFrameError("CodecFrameTooShort", `${frame.length} < ${needed}`);
  }
  return needed;
}

// ---------------------------------------------------------------------------------------------
// KID layout (frame.md §3.4) and key material (§3.5)

/// KID = sender << 8 | (generation mod 16) << 4 | (step mod 16).
export function makeKid(sender, generation, step) {
  return (BigInt(sender) << 8n) | ((BigInt(generation) % GEN_SPACE) << 4n) | (BigInt(step) % STEP_SPACE);
}

/// `{ sender, genLow, stepLow }` of a KID.
export function splitKid(kid) {
  kid = BigInt(kid);
  return { sender: kid >> 8n, genLow: (kid >> 4n) & 0x0fn, stepLow: kid & 0x0fn };
}

function checkBaseKey(bytes) {
  if (bytes.length < LIMITS.MIN_BASE_KEY_SIZE || bytes.length > LIMITS.MAX_BASE_KEY_SIZE) {
    throw new SFrameError("InvalidKeyLength", String(bytes.length));
  }
}

/// Parses the key material a sender hands out inside the Signal session:
/// `version(1)=1 ‖ suite(2) ‖ sender(8) ‖ generation(8) ‖ step(8) ‖ len(1) ‖ base_key(len)`.
/// The returned `baseKey` is a copy the caller may zero with `wipe()`.
export function parseKeyMaterial(bytes) {
  if (!(bytes instanceof Uint8Array) || bytes.length < 28 || bytes[0] !== KEY_MATERIAL_VERSION) {
    throw new SFrameError("InvalidKeyId", "malformed key material");
  }
  const suite = suiteOf((bytes[1] << 8) | bytes[2]).id;
  const sender = readBe(bytes.subarray(3, 11));
  const generation = readBe(bytes.subarray(11, 19));
  const step = readBe(bytes.subarray(19, 27));
  if (sender > LIMITS.MAX_SENDER_ID) throw new SFrameError("InvalidKeyId", "sender id too large");
  const len = bytes[27];
  if (bytes.length !== 28 + len) throw new SFrameError("InvalidKeyId", "malformed key material");
  const baseKey = bytes.slice(28);
  checkBaseKey(baseKey);
  return { suite, sender, generation, step, baseKey };
}

/// The inverse of parseKeyMaterial.
export function encodeKeyMaterial({ suite, sender, generation, step, baseKey }) {
  checkBaseKey(baseKey);
  return concat(
    Uint8Array.of(KEY_MATERIAL_VERSION),
    be(suite, 2),
    be(sender, 8),
    be(generation, 8),
    be(step, 8),
    Uint8Array.of(baseKey.length),
    baseKey,
  );
}

/// Zeroes a key buffer (JS gives no stronger guarantee; keys live only in the worker).
export function wipe(bytes) {
  if (bytes instanceof Uint8Array) bytes.fill(0);
}

// ---------------------------------------------------------------------------------------------
// Key schedule (frame.md §3.1, §3.3)

async function hkdf(hash, ikm, info, bytes) {
  const k = await subtle.importKey("raw", ikm, "HKDF", false, ["deriveBits"]);
  const bits = await subtle.deriveBits({ name: "HKDF", hash, salt: new Uint8Array(0), info }, k, bytes * 8);
  return new Uint8Array(bits);
}

/// base_key[i+1] = HKDF-Expand(HKDF-Extract("", base_key[i]), "SFrame 1.0 Ratchet", Nh).
export async function ratchetBaseKey(suiteId, baseKey) {
  const s = suiteOf(suiteId);
  return hkdf(s.hash, baseKey, enc.encode("SFrame 1.0 Ratchet"), s.nh);
}

/// The AEAD key and salt of one KID (frame.md §3.1, §3.2).
export class FrameKey {
  constructor(suite, kid, salt, aead) {
    this.suite = suite;
    this.kid = kid;
    this.salt = salt;
    this.aead = aead;
  }

  static async derive(suiteId, kid, baseKey) {
    const suite = suiteOf(suiteId);
    kid = BigInt(kid);
    const tail = concat(be(kid, 8), be(suite.id, 2));
    const keyBytes = await hkdf(suite.hash, baseKey, concat(enc.encode("SFrame 1.0 Secret key "), tail), suite.nk);
    const salt = await hkdf(suite.hash, baseKey, concat(enc.encode("SFrame 1.0 Secret salt "), tail), suite.nn);
    let aead;
    try {
      if (suite.gcm) {
        aead = { gcm: await subtle.importKey("raw", keyBytes, "AES-GCM", false, ["encrypt", "decrypt"]) };
      } else {
        const ctr = await subtle.importKey("raw", keyBytes.subarray(0, 16), "AES-CTR", false, ["encrypt", "decrypt"]);
        const mac = await subtle.importKey(
          "raw",
          keyBytes.subarray(16),
          { name: "HMAC", hash: "SHA-256" },
          false,
          ["sign"],
        );
        aead = { ctr, mac };
      }
    } finally {
      wipe(keyBytes);
    }
    return new FrameKey(suite, kid, salt, aead);
  }

  /// nonce = salt XOR (ctr as 12-byte big-endian)
  nonce(ctr) {
    const n = this.salt.slice();
    const c = be(ctr, 8);
    for (let i = 0; i < 8; i++) n[4 + i] ^= c[i];
    return n;
  }

  async #ctrTag(nonce, aad, ct) {
    const nt = this.suite.nt;
    const data = concat(be(aad.length, 8), be(ct.length, 8), be(nt, 8), nonce, aad, ct);
    const full = new Uint8Array(await subtle.sign("HMAC", this.aead.mac, data));
    return full.subarray(0, nt);
  }

  /// `ciphertext ‖ tag` of `plaintext` under counter `ctr` with additional data `aad`.
  async seal(ctr, aad, plaintext) {
    const nonce = this.nonce(ctr);
    if (this.suite.gcm) {
      return new Uint8Array(
        await subtle.encrypt({ name: "AES-GCM", iv: nonce, additionalData: aad, tagLength: 128 }, this.aead.gcm, plaintext),
      );
    }
    const counter = concat(nonce, new Uint8Array(4));
    const ct = new Uint8Array(await subtle.encrypt({ name: "AES-CTR", counter, length: 32 }, this.aead.ctr, plaintext));
    return concat(ct, await this.#ctrTag(nonce, aad, ct));
  }

  /// The plaintext of `body` (= ciphertext ‖ tag); "AuthenticationFailed" before any
  /// plaintext is produced if the tag does not verify.
  async open(ctr, aad, body) {
    const nt = this.suite.nt;
    if (body.length < nt) throw new SFrameError("AuthenticationFailed");
    const nonce = this.nonce(ctr);
    if (this.suite.gcm) {
      try {
        return new Uint8Array(
          await subtle.decrypt({ name: "AES-GCM", iv: nonce, additionalData: aad, tagLength: 128 }, this.aead.gcm, body),
        );
      } catch {
        throw new SFrameError("AuthenticationFailed");
      }
    }
    const ct = body.subarray(0, body.length - nt);
    const tag = body.subarray(body.length - nt);
    const want = await this.#ctrTag(nonce, aad, ct);
    let diff = 0;
    for (let i = 0; i < nt; i++) diff |= want[i] ^ tag[i];
    if (diff !== 0) throw new SFrameError("AuthenticationFailed");
    const counter = concat(nonce, new Uint8Array(4));
    return new Uint8Array(await subtle.decrypt({ name: "AES-CTR", counter, length: 32 }, this.aead.ctr, ct));
  }
}

function checkSizes(frameLen, metadataLen) {
  if (frameLen > LIMITS.MAX_FRAME_SIZE) throw new SFrameError("FrameTooLarge", String(frameLen));
  if (metadataLen > LIMITS.MAX_METADATA_SIZE) throw new SFrameError("MetadataTooLarge", String(metadataLen));
}

function maxWireFrameSize(suite) {
  return LIMITS.MAX_FRAME_SIZE + LIMITS.MAX_HEADER_SIZE + suite.nt;
}

// ---------------------------------------------------------------------------------------------
// Sender (frame.md §4.1)

/// A sender's current key: strictly increasing counters, ratchet on join, rotate on leave.
export class SenderKey {
  #base;
  #key = null;

  /// `await SenderKey.create(suite, sender, baseKey)`; the base key is copied.
  static async create(suiteId, sender, baseKey, { generation = 0n, step = 0n, nextCtr = 0n } = {}) {
    const s = new SenderKey();
    s.suite = suiteOf(suiteId);
    s.sender = BigInt(sender);
    if (s.sender > LIMITS.MAX_SENDER_ID) throw new SFrameError("InvalidKeyId", "sender id too large");
    checkBaseKey(baseKey);
    s.#base = baseKey.slice();
    s.generation = BigInt(generation);
    s.step = BigInt(step);
    s.nextCtr = BigInt(nextCtr);
    s.counterLimit = LIMITS.MAX_FRAMES_PER_KEY;
    await s.#derive();
    return s;
  }

  get kid() {
    return makeKid(this.sender, this.generation, this.step);
  }

  async #derive() {
    this.#key = await FrameKey.derive(this.suite.id, this.kid, this.#base);
  }

  /// The material receivers need (bytes of frame.md §3.5).
  material() {
    return encodeKeyMaterial({
      suite: this.suite.id,
      sender: this.sender,
      generation: this.generation,
      step: this.step,
      baseKey: this.#base,
    });
  }

  /// Someone joined: the next step of the base key, counter back to 0.
  async ratchet() {
    const next = await ratchetBaseKey(this.suite.id, this.#base);
    wipe(this.#base);
    this.#base = next;
    this.step += 1n;
    this.nextCtr = 0n;
    await this.#derive();
  }

  /// Someone left: a fresh base key as the next generation, step 0, counter 0.
  async rotate(freshBaseKey) {
    checkBaseKey(freshBaseKey);
    wipe(this.#base);
    this.#base = freshBaseKey.slice();
    this.generation += 1n;
    this.step = 0n;
    this.nextCtr = 0n;
    await this.#derive();
  }

  /// wire = clear codec bytes ‖ header ‖ AEAD(aad = header ‖ clear ‖ metadata, rest).
  /// A failed call uses no counter.
  async encrypt(codec, frame, metadata = new Uint8Array(0)) {
    if (this.nextCtr >= this.counterLimit) throw new SFrameError("CounterExhausted");
    checkSizes(frame.length, metadata.length);
    const clear = clearLen(codec, frame);
    const ctr = this.nextCtr;
    this.nextCtr += 1n; // reserved before the await: concurrent calls never share a counter
    const header = encodeHeader(this.kid, ctr);
    const key = this.#key;
    try {
      const sealed = await key.seal(ctr, concat(header, frame.subarray(0, clear), metadata), frame.subarray(clear));
      return concat(frame.subarray(0, clear), header, sealed);
    } catch (e) {
      throw e instanceof SFrameError ? e : new SFrameError("EncryptFailed", String(e));
    }
  }

  /// Zeroes the base key.
  destroy() {
    wipe(this.#base);
  }
}

// ---------------------------------------------------------------------------------------------
// Receiver key ring (frame.md §4.2, §4.3)

class ReplayWindow {
  highest = null;
  seen = 0n; // bit i: counter highest - i was accepted

  check(ctr) {
    if (this.highest === null || ctr > this.highest) return "fresh";
    const back = this.highest - ctr;
    if (back >= LIMITS.REPLAY_WINDOW) return "too_old";
    return (this.seen >> back) & 1n ? "duplicate" : "fresh";
  }

  accept(ctr) {
    const mask = (1n << 128n) - 1n;
    if (this.highest === null) {
      this.highest = ctr;
      this.seen = 1n;
    } else if (ctr > this.highest) {
      const shift = ctr - this.highest;
      this.seen = shift >= 128n ? 0n : (this.seen << shift) & mask;
      this.seen |= 1n;
      this.highest = ctr;
    } else {
      const back = this.highest - ctr;
      if (back < LIMITS.REPLAY_WINDOW) this.seen |= 1n << back;
    }
  }
}

class StepKey {
  constructor(step, base, key) {
    this.step = step;
    this.base = base;
    this.key = key;
    this.replay = new ReplayWindow();
    this.retireAt = null;
  }
  alive(now) {
    return this.retireAt === null || now < this.retireAt;
  }
  static async create(suite, sender, generation, step, base) {
    return new StepKey(step, base, await FrameKey.derive(suite.id, makeKid(sender, generation, step), base));
  }
}

function aliveGen(g, now) {
  return g.retireAt === null || now < g.retireAt;
}

/// Every sender's keys for one call and one suite. All calls are serialized (a frame is
/// processed completely before the next starts), so a frame that fails changes nothing and a
/// counter is accepted at most once per key, even with audio and video decrypting at once.
export class KeyRing {
  #senders = new Map(); // sender (BigInt) -> { generations: [...], floor: BigInt }
  #queue = Promise.resolve();

  constructor(suiteId, { gracePeriodMs = LIMITS.DEFAULT_GRACE_PERIOD_MS } = {}) {
    this.suite = suiteOf(suiteId);
    this.gracePeriodMs = Math.min(gracePeriodMs, LIMITS.MAX_GRACE_PERIOD_MS);
  }

  #serial(f) {
    const run = this.#queue.then(f, f);
    this.#queue = run.then(() => undefined, () => undefined);
    return run;
  }

  get senderCount() {
    return this.#senders.size;
  }

  /// `{ generation, step }` of the newest generation known for `sender`, or null.
  current(sender) {
    const s = this.#senders.get(BigInt(sender));
    if (!s || s.generations.length === 0) return null;
    const g = s.generations.reduce((a, b) => (b.generation > a.generation ? b : a));
    return { generation: g.generation, step: g.current.step };
  }

  /// Installs key material (bytes of frame.md §3.5, or parsed): "Added", "Advanced" or
  /// "AlreadyKnown"; throws SuiteMismatch, InvalidKeyId, TooManySenders, StaleGeneration.
  addKey(material, now) {
    return this.#serial(() => this.#addKey(material, now));
  }

  async #addKey(material, now) {
    const m = material instanceof Uint8Array ? parseKeyMaterial(material) : material;
    if (m.suite !== this.suite.id) throw new SFrameError("SuiteMismatch");
    const sender = BigInt(m.sender);
    const generation = BigInt(m.generation);
    const step = BigInt(m.step);
    if (sender > LIMITS.MAX_SENDER_ID) throw new SFrameError("InvalidKeyId", "sender id too large");
    if (step > LIMITS.MAX_STEP || generation > LIMITS.MAX_STEP) {
      throw new SFrameError("InvalidKeyId", "generation or step out of range");
    }
    checkBaseKey(m.baseKey);
    if (!this.#senders.has(sender) && this.#senders.size >= LIMITS.MAX_SENDERS) {
      throw new SFrameError("TooManySenders");
    }
    const retire = now + this.gracePeriodMs;
    let state = this.#senders.get(sender);
    const fresh = !state;
    if (fresh) state = { generations: [], floor: 0n };
    // derive first: nothing below changes state before every await is done
    const stepKey = await StepKey.create(this.suite, sender, generation, step, m.baseKey.slice());
    if (fresh) this.#senders.set(sender, state);
    prune(state, now);
    const kid = makeKid(sender, generation, step);
    if (generation < state.floor) throw new SFrameError("StaleGeneration", String(kid));

    const g = state.generations.find((x) => x.generation === generation);
    if (g) {
      if (step <= g.current.step) {
        wipe(stepKey.base);
        return "AlreadyKnown";
      }
      const old = g.current;
      g.current = stepKey;
      old.retireAt = retire;
      g.oldSteps.push(old);
      if (g.oldSteps.length > LIMITS.MAX_OLD_STEPS) wipe(g.oldSteps.shift().base);
      return "Advanced";
    }
    const gens = state.generations.map((x) => x.generation);
    const latest = gens.length ? gens.reduce((a, b) => (b > a ? b : a)) : null;
    if (latest !== null) {
      const oldest = gens.reduce((a, b) => (b < a ? b : a));
      if (generation < latest && state.generations.length >= LIMITS.MAX_GENERATIONS && generation < oldest) {
        throw new SFrameError("StaleGeneration", String(kid));
      }
      const diff = latest > generation ? latest - generation : generation - latest;
      if (diff >= GEN_SPACE / 2n) {
        if (generation < latest) throw new SFrameError("StaleGeneration", String(kid));
        state.floor = state.floor > latest + 1n ? state.floor : latest + 1n;
        for (const x of state.generations) wipeGeneration(x);
        state.generations = [];
      }
    }
    const newest = latest === null || generation > latest;
    if (newest) {
      for (const x of state.generations) if (x.retireAt === null) x.retireAt = retire;
    }
    state.generations.push({ generation, current: stepKey, oldSteps: [], retireAt: newest ? null : retire });
    state.generations.sort((a, b) => (a.generation < b.generation ? -1 : a.generation > b.generation ? 1 : 0));
    while (state.generations.length > LIMITS.MAX_GENERATIONS) {
      const dropped = state.generations.shift();
      if (dropped.generation + 1n > state.floor) state.floor = dropped.generation + 1n;
      wipeGeneration(dropped);
    }
    return "Added";
  }

  /// Forgets a sender (they left and their grace period is over).
  removeSender(sender) {
    return this.#serial(() => {
      const s = this.#senders.get(BigInt(sender));
      if (s) s.generations.forEach(wipeGeneration);
      this.#senders.delete(BigInt(sender));
    });
  }

  /// Drops every key whose grace period ended by `now`.
  expire(now) {
    return this.#serial(() => {
      for (const [id, s] of this.#senders) {
        prune(s, now);
        if (s.generations.length === 0) this.#senders.delete(id);
      }
    });
  }

  /// Decrypts one frame as it came off the wire: `{ sender, generation, step, ctr, frame }`
  /// (frame = clear codec bytes ‖ plaintext), or throws an SFrameError; on any error the ring
  /// is unchanged.
  decrypt(codec, wire, now, metadata = new Uint8Array(0)) {
    return this.#serial(() => this.#decrypt(codec, wire, now, metadata));
  }

  async #decrypt(codec, wire, now, metadata) {
    const limit = maxWireFrameSize(this.suite);
    if (wire.length > limit) throw new SFrameError("FrameTooLarge", String(wire.length));
    if (metadata.length > LIMITS.MAX_METADATA_SIZE) throw new SFrameError("MetadataTooLarge", String(metadata.length));
    const clear = clearLen(codec, wire);
    const clearBytes = wire.subarray(0, clear);
    const { kid, ctr, consumed } = decodeHeader(wire.subarray(clear));
    const headerBytes = wire.subarray(clear, clear + consumed);
    const body = wire.subarray(clear + consumed);
    if (body.length < this.suite.nt) throw new SFrameError("AuthenticationFailed");
    const { sender, genLow, stepLow } = splitKid(kid);
    const state = this.#senders.get(sender);
    if (!state) throw new SFrameError("UnknownKey", String(kid));
    const live = state.generations.filter((g) => aliveGen(g, now));
    if (live.length === 0) throw new SFrameError("UnknownKey", String(kid));
    const latest = live.map((g) => g.generation).reduce((a, b) => (b > a ? b : a));
    const gen = live.find((g) => g.generation % GEN_SPACE === genLow);
    if (!gen) {
      const ahead = (genLow + GEN_SPACE - (latest % GEN_SPACE)) % GEN_SPACE;
      throw new SFrameError(ahead < GEN_SPACE / 2n ? "UnknownKey" : "StaleGeneration", String(kid));
    }
    const aad = concat(headerBytes, clearBytes, metadata);
    const retire = now + this.gracePeriodMs;
    const finish = (step, pt) => ({
      sender,
      generation: gen.generation,
      step,
      ctr,
      frame: concat(clearBytes, pt),
    });

    const currentLow = gen.current.step % STEP_SPACE;
    if (currentLow === stepLow) {
      const pt = await openChecked(gen.current, kid, ctr, aad, body);
      gen.current.replay.accept(ctr);
      return finish(gen.current.step, pt);
    }
    const old = gen.oldSteps.find((s) => s.alive(now) && s.step % STEP_SPACE === stepLow);
    if (old) {
      const pt = await openChecked(old, kid, ctr, aad, body);
      old.replay.accept(ctr);
      old.retireAt = retire; // the sender still uses this step: keep it while it does
      return finish(old.step, pt);
    }
    const ahead = (stepLow + STEP_SPACE - currentLow) % STEP_SPACE;
    if (ahead >= STEP_SPACE / 2n) throw new SFrameError("StaleGeneration", String(kid));
    if (ahead > LIMITS.MAX_RATCHET_AHEAD) throw new SFrameError("RatchetTooFar", String(kid));
    // tentative ratchet, committed only after the frame authenticated
    let base = gen.current.base;
    for (let i = 0n; i < ahead; i++) {
      const next = await ratchetBaseKey(this.suite.id, base);
      if (base !== gen.current.base) wipe(base);
      base = next;
    }
    const step = gen.current.step + ahead;
    const candidate = await StepKey.create(this.suite, sender, gen.generation, step, base);
    let pt;
    try {
      pt = await openChecked(candidate, kid, ctr, aad, body);
    } catch (e) {
      wipe(base);
      throw e;
    }
    candidate.replay.accept(ctr);
    const previous = gen.current;
    gen.current = candidate;
    previous.retireAt = retire;
    gen.oldSteps.push(previous);
    if (gen.oldSteps.length > LIMITS.MAX_OLD_STEPS) wipe(gen.oldSteps.shift().base);
    return finish(step, pt);
  }
}

function prune(state, now) {
  for (const g of state.generations) {
    if (!aliveGen(g, now) && g.generation + 1n > state.floor) state.floor = g.generation + 1n;
  }
  for (const g of state.generations.filter((x) => !aliveGen(x, now))) wipeGeneration(g);
  state.generations = state.generations.filter((g) => aliveGen(g, now));
  for (const g of state.generations) {
    for (const s of g.oldSteps.filter((x) => !x.alive(now))) wipe(s.base);
    g.oldSteps = g.oldSteps.filter((s) => s.alive(now));
  }
}

function wipeGeneration(g) {
  wipe(g.current.base);
  for (const s of g.oldSteps) wipe(s.base);
}

async function openChecked(stepKey, kid, ctr, aad, body) {
  switch (stepKey.replay.check(ctr)) {
    case "duplicate":
      throw new SFrameError("Replay", `${kid}/${ctr}`);
    case "too_old":
      throw new SFrameError("CounterOutOfWindow", `${kid}/${ctr}`);
    default:
      return stepKey.key.open(ctr, aad, body);
  }
}
