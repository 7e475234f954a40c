#!/usr/bin/env node
// sotto interop peer: a JSON-lines-over-stdio front end to Signal's official
// @signalapp/libsignal-client, so sotto-ratchet's Rust tests can talk to the
// reference implementation. See PROTOCOL.md for the op list and conventions.
//
//   node tests/interop/peer.mjs --lib 0.90.0|0.72.1|0.103.0
//
// One JSON request per stdin line -> exactly one JSON response line on stdout.
// Logs go to stderr only. Binary values are standard base64 (with padding).

import { createInterface } from 'node:readline';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const PACKAGES = {
  '0.90.0': 'libsignal-090',
  '0.72.1': 'libsignal-072',
  '0.92.2': 'libsignal-0922',
  '0.103.0': 'libsignal-0103',
};

function log(...args) {
  process.stderr.write(`[peer ${REQUESTED}] ${args.join(' ')}\n`);
}

// ---------- argument parsing ----------
let REQUESTED = '0.90.0';
{
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--lib') REQUESTED = argv[++i];
    else if (argv[i].startsWith('--lib=')) REQUESTED = argv[i].slice(6);
    else if (argv[i] === '--help' || argv[i] === '-h') {
      process.stderr.write(`usage: node peer.mjs --lib ${Object.keys(PACKAGES).join('|')}\n`);
      process.exit(0);
    } else {
      process.stderr.write(`unknown argument ${argv[i]}\n`);
      process.exit(2);
    }
  }
  if (!PACKAGES[REQUESTED]) {
    process.stderr.write(`unsupported --lib ${REQUESTED}; one of ${Object.keys(PACKAGES).join(', ')}\n`);
    process.exit(2);
  }
}
const PKG = PACKAGES[REQUESTED];
const require = createRequire(import.meta.url);
const LOADED_VERSION = JSON.parse(readFileSync(require.resolve(`${PKG}/package.json`), 'utf8')).version;
const mod = await import(PKG);
// 0.72.1 is CommonJS (named exports via module.exports), 0.90+ is ESM.
const S = mod.PrivateKey ? mod : mod.default;
// Which session functions take a `localAddress` parameter (read from each package's index.d.ts):
// none up to 0.90; 0.92.2 signalEncrypt and signalDecryptPreKey; 0.103.0 all four.
const LOCAL_ADDRESS = {
  '0.72.1': { bundle: false, encrypt: false, decrypt: false, decryptPreKey: false },
  '0.90.0': { bundle: false, encrypt: false, decrypt: false, decryptPreKey: false },
  '0.92.2': { bundle: false, encrypt: true, decrypt: false, decryptPreKey: true },
  '0.103.0': { bundle: true, encrypt: true, decrypt: true, decryptPreKey: true },
}[LOADED_VERSION];
if (!LOCAL_ADDRESS) throw new Error(`no localAddress table for libsignal ${LOADED_VERSION}`);
// 0.72.1's markKyberPreKeyUsed gets only the id.
if (process.env.SOTTO_PEER_LOG) {
  const lvl = { error: 1, warn: 2, info: 3, debug: 4, trace: 5 }[process.env.SOTTO_PEER_LOG] ?? 2;
  S.initLogger(lvl, (_l, target, _f, _line, msg) => process.stderr.write(`[libsignal ${target}] ${msg}\n`));
}

// ---------- helpers ----------
class BadRequest extends Error {}
const b64 = (u8) => (u8 == null ? null : Buffer.from(u8).toString('base64'));
function unb64(v, field) {
  if (typeof v !== 'string') throw new BadRequest(`field '${field}' must be a base64 string`);
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(v) || v.length % 4 !== 0)
    throw new BadRequest(`field '${field}' is not standard base64`);
  return Buffer.from(v, 'base64');
}
function int(v, field, { nullable = false, dflt } = {}) {
  if (v === undefined && dflt !== undefined) return dflt;
  if (v == null) {
    if (nullable) return null;
    throw new BadRequest(`field '${field}' is required (integer)`);
  }
  if (!Number.isInteger(v) || v < 0 || v > 0xffffffff)
    throw new BadRequest(`field '${field}' must be an integer in 0..2^32-1`);
  return v;
}
function str(v, field) {
  if (typeof v !== 'string' || v.length === 0) throw new BadRequest(`field '${field}' must be a non-empty string`);
  return v;
}
function address(peer, field = 'peer') {
  if (!peer || typeof peer !== 'object') throw new BadRequest(`field '${field}' must be {name, device_id}`);
  return S.ProtocolAddress.new(str(peer.name, `${field}.name`), int(peer.device_id, `${field}.device_id`));
}
const addrKey = (a) => `${a.name()}.${a.deviceId()}`;
// PublicKey.equals does not exist in 0.72.1; compare serialized forms.
const keyEq = (a, b) => Buffer.compare(Buffer.from(a.serialize()), Buffer.from(b.serialize())) === 0;

// Minimal protobuf reader (for session_state / parse_message annotations).
function pbDecode(buf) {
  const out = [];
  let i = 0;
  const varint = () => {
    let x = 0n, shift = 0n;
    for (;;) {
      if (i >= buf.length) throw new Error('truncated varint');
      const b = buf[i++];
      x |= BigInt(b & 0x7f) << shift;
      if (!(b & 0x80)) return x;
      shift += 7n;
    }
  };
  while (i < buf.length) {
    const key = Number(varint());
    const field = key >>> 3, wt = key & 7;
    if (wt === 0) out.push({ field, wt, value: varint() });
    else if (wt === 2) {
      const len = Number(varint());
      if (i + len > buf.length) throw new Error('truncated bytes');
      out.push({ field, wt, value: buf.subarray(i, i + len) });
      i += len;
    } else if (wt === 1) { out.push({ field, wt, value: buf.subarray(i, i + 8) }); i += 8; }
    else if (wt === 5) { out.push({ field, wt, value: buf.subarray(i, i + 4) }); i += 4; }
    else throw new Error(`unsupported wire type ${wt}`);
  }
  return out;
}
const pbGet = (fields, n) => fields.find((f) => f.field === n)?.value;
const pbAll = (fields, n) => fields.filter((f) => f.field === n).map((f) => f.value);
const num = (v) => (v === undefined ? null : Number(v));

function decodeChain(bytes) {
  const f = pbDecode(bytes);
  const ck = pbGet(f, 3) ? pbDecode(pbGet(f, 3)) : [];
  return {
    sender_ratchet_key: b64(pbGet(f, 1)),
    sender_ratchet_key_private: b64(pbGet(f, 2)),
    chain_key_index: num(pbGet(ck, 1)) ?? 0,
    chain_key: b64(pbGet(ck, 2)),
    stored_message_keys: pbAll(f, 4).map((mk) => {
      const m = pbDecode(mk);
      return { index: num(pbGet(m, 1)) ?? 0, has_seed: pbGet(m, 5) !== undefined };
    }),
  };
}
// Field numbers from libsignal rust/protocol/src/proto/storage.proto (SessionStructure).
function decodeSessionStructure(bytes) {
  const f = pbDecode(bytes);
  const ppk = pbGet(f, 9) ? pbDecode(pbGet(f, 9)) : null;
  const pkp = pbGet(f, 14) ? pbDecode(pbGet(f, 14)) : null;
  const pq = pbGet(f, 15);
  return {
    session_version: num(pbGet(f, 1)),
    local_identity_public: b64(pbGet(f, 2)),
    remote_identity_public: b64(pbGet(f, 3)),
    root_key: b64(pbGet(f, 4)),
    previous_counter: num(pbGet(f, 5)) ?? 0,
    sender_chain: pbGet(f, 6) ? decodeChain(pbGet(f, 6)) : null,
    receiver_chains: pbAll(f, 7).map(decodeChain),
    pending_pre_key: ppk && {
      pre_key_id: num(pbGet(ppk, 1)),
      signed_pre_key_id: num(pbGet(ppk, 3)),
      base_key: b64(pbGet(ppk, 2)),
    },
    pending_kyber_pre_key: pkp && {
      pre_key_id: num(pbGet(pkp, 1)),
      ciphertext_len: pbGet(pkp, 2)?.length ?? 0,
    },
    remote_registration_id: num(pbGet(f, 10)),
    local_registration_id: num(pbGet(f, 11)),
    alice_base_key: b64(pbGet(f, 13)),
    pq_ratchet_state_len: pq ? pq.length : 0,
  };
}

// ---------- stores ----------
const state = {
  name: null,
  registrationId: null,
  deviceId: null,
  identity: null, // IdentityKeyPair
  trust: 'tofu', // 'tofu' | 'always'
  identities: new Map(), // addrKey -> PublicKey
  sessions: new Map(), // addrKey -> serialized SessionRecord
  preKeys: new Map(), // id -> PreKeyRecord
  signedPreKeys: new Map(), // id -> SignedPreKeyRecord
  kyberPreKeys: new Map(), // id -> {record, lastResort}
  kyberUsed: [], // {kyber_pre_key_id, signed_pre_key_id, base_key}
  preKeysConsumed: [], // ids removed by the library
};
function requireInit() {
  if (!state.identity) throw new BadRequest('peer not initialised: send init first');
}
const localAddress = () => S.ProtocolAddress.new(state.name, state.deviceId);

class Sessions extends S.SessionStore {
  async saveSession(a, record) { state.sessions.set(addrKey(a), Buffer.from(record.serialize())); }
  async getSession(a) {
    const b = state.sessions.get(addrKey(a));
    return b ? S.SessionRecord.deserialize(b) : null;
  }
  async getExistingSessions(addrs) {
    return addrs.map((a) => {
      const b = state.sessions.get(addrKey(a));
      if (!b) throw new Error(`no session for ${addrKey(a)}`);
      return S.SessionRecord.deserialize(b);
    });
  }
}
class Identities extends S.IdentityKeyStore {
  async getIdentityKey() { return state.identity.privateKey; }
  async getLocalRegistrationId() { return state.registrationId; }
  async saveIdentity(a, key) {
    const k = addrKey(a);
    const old = state.identities.get(k);
    state.identities.set(k, key);
    const changed = old !== undefined && !keyEq(old, key);
    if (changed) log(`identity for ${k} replaced`);
    // IdentityChange.NewOrUnchanged = 0, ReplacedExisting = 1 (0.72.1 also accepts these numbers)
    return changed ? 1 : 0;
  }
  async isTrustedIdentity(a, key, _direction) {
    if (state.trust === 'always') return true;
    const old = state.identities.get(addrKey(a));
    return old === undefined || keyEq(old, key);
  }
  async getIdentity(a) { return state.identities.get(addrKey(a)) ?? null; }
}
class PreKeys extends S.PreKeyStore {
  async savePreKey(id, r) { state.preKeys.set(id, r); }
  async getPreKey(id) {
    const r = state.preKeys.get(id);
    if (!r) throw new Error(`no pre key ${id}`);
    return r;
  }
  async removePreKey(id) { state.preKeys.delete(id); state.preKeysConsumed.push(id); }
}
class SignedPreKeys extends S.SignedPreKeyStore {
  async saveSignedPreKey(id, r) { state.signedPreKeys.set(id, r); }
  async getSignedPreKey(id) {
    const r = state.signedPreKeys.get(id);
    if (!r) throw new Error(`no signed pre key ${id}`);
    return r;
  }
}
class KyberPreKeys extends S.KyberPreKeyStore {
  async saveKyberPreKey(id, r) { state.kyberPreKeys.set(id, { record: r, lastResort: true }); }
  async getKyberPreKey(id) {
    const r = state.kyberPreKeys.get(id);
    if (!r) throw new Error(`no kyber pre key ${id}`);
    return r.record;
  }
  async markKyberPreKeyUsed(id, signedPreKeyId, baseKey) {
    state.kyberUsed.push({
      kyber_pre_key_id: id,
      signed_pre_key_id: signedPreKeyId ?? null,
      base_key: baseKey ? b64(baseKey.serialize()) : null,
    });
    const r = state.kyberPreKeys.get(id);
    if (r && !r.lastResort) state.kyberPreKeys.delete(id);
  }
}
const stores = {
  sessions: new Sessions(),
  identities: new Identities(),
  preKeys: new PreKeys(),
  signedPreKeys: new SignedPreKeys(),
  kyberPreKeys: new KyberPreKeys(),
};

// ---------- ops ----------
function bundleFromJson(bj) {
  if (!bj || typeof bj !== 'object') throw new BadRequest("field 'bundle' must be an object");
  const preKeyId = int(bj.pre_key_id, 'bundle.pre_key_id', { nullable: true });
  const preKeyPub = bj.pre_key_public == null ? null : S.PublicKey.deserialize(unb64(bj.pre_key_public, 'bundle.pre_key_public'));
  if ((preKeyId === null) !== (preKeyPub === null))
    throw new BadRequest('bundle.pre_key_id and bundle.pre_key_public must both be set or both be null');
  const args = [
    int(bj.registration_id, 'bundle.registration_id'),
    int(bj.device_id, 'bundle.device_id'),
    preKeyId,
    preKeyPub,
    int(bj.signed_pre_key_id, 'bundle.signed_pre_key_id'),
    S.PublicKey.deserialize(unb64(bj.signed_pre_key_public, 'bundle.signed_pre_key_public')),
    unb64(bj.signed_pre_key_signature, 'bundle.signed_pre_key_signature'),
    S.PublicKey.deserialize(unb64(bj.identity_key, 'bundle.identity_key')),
  ];
  if (bj.kyber_pre_key_id != null) {
    args.push(
      int(bj.kyber_pre_key_id, 'bundle.kyber_pre_key_id'),
      S.KEMPublicKey.deserialize(unb64(bj.kyber_pre_key_public, 'bundle.kyber_pre_key_public')),
      unb64(bj.kyber_pre_key_signature, 'bundle.kyber_pre_key_signature'),
    );
  } else if (LOADED_VERSION !== '0.72.1') {
    throw new BadRequest(`libsignal ${LOADED_VERSION} requires a Kyber prekey in every bundle`);
  }
  return S.PreKeyBundle.new(...args);
}

function messageFacts(type, body) {
  const facts = { byte0: body[0], length: body.length };
  if (type === 3) {
    const m = S.PreKeySignalMessage.deserialize(body);
    Object.assign(facts, {
      version: m.version(),
      registration_id: m.registrationId(),
      pre_key_id: m.preKeyId(),
      signed_pre_key_id: m.signedPreKeyId(),
    });
  } else if (type === 2) {
    const m = S.SignalMessage.deserialize(body);
    Object.assign(facts, {
      version: m.messageVersion(),
      counter: m.counter(),
      ciphertext_len: m.body().length,
      pq_ratchet_len: typeof m.pqRatchet === 'function' ? m.pqRatchet().length : null,
    });
  }
  return facts;
}

function protobufFields(bytes) {
  return pbDecode(bytes).map((f) =>
    f.wt === 0 ? { field: f.field, varint: Number(f.value) } : { field: f.field, wire_type: f.wt, len: f.value.length, bytes: b64(f.value) },
  );
}

const OPS = {
  async version() {
    return { version: LOADED_VERSION, requested: REQUESTED, package: '@signalapp/libsignal-client', node: process.version };
  },

  async init(r) {
    const name = str(r.name, 'name');
    const registrationId = int(r.registration_id, 'registration_id');
    const deviceId = int(r.device_id, 'device_id');
    let identity;
    if (r.identity_private != null) {
      const priv = S.PrivateKey.deserialize(unb64(r.identity_private, 'identity_private'));
      identity = new S.IdentityKeyPair(priv.getPublicKey(), priv);
    } else identity = S.IdentityKeyPair.generate();
    Object.assign(state, {
      name, registrationId, deviceId, identity,
      identities: new Map(), sessions: new Map(), preKeys: new Map(), signedPreKeys: new Map(),
      kyberPreKeys: new Map(), kyberUsed: [], preKeysConsumed: [],
    });
    return { identity_key: b64(identity.publicKey.serialize()) };
  },

  async identity() {
    requireInit();
    return {
      identity_key: b64(state.identity.publicKey.serialize()),
      name: state.name, registration_id: state.registrationId, device_id: state.deviceId,
    };
  },

  async export_identity() {
    requireInit();
    return {
      identity_key: b64(state.identity.publicKey.serialize()),
      identity_private: b64(state.identity.privateKey.serialize()),
    };
  },

  async bundle(r) {
    requireInit();
    const timestamp = int(r.timestamp, 'timestamp', { dflt: Date.now() % 0xffffffff });
    const preKeyId = int(r.pre_key_id, 'pre_key_id', { nullable: true });
    const spkId = int(r.signed_pre_key_id, 'signed_pre_key_id');
    const kyberId = int(r.kyber_pre_key_id, 'kyber_pre_key_id', { nullable: true });
    const idPriv = state.identity.privateKey;
    let preKey = null;
    if (preKeyId !== null) {
      const priv = r.pre_key_private != null ? S.PrivateKey.deserialize(unb64(r.pre_key_private, 'pre_key_private')) : S.PrivateKey.generate();
      preKey = S.PreKeyRecord.new(preKeyId, priv.getPublicKey(), priv);
      await stores.preKeys.savePreKey(preKeyId, preKey);
    }
    const spkPriv = r.signed_pre_key_private != null
      ? S.PrivateKey.deserialize(unb64(r.signed_pre_key_private, 'signed_pre_key_private'))
      : S.PrivateKey.generate();
    const spkPub = spkPriv.getPublicKey();
    const spkSig = idPriv.sign(spkPub.serialize());
    await stores.signedPreKeys.saveSignedPreKey(spkId, S.SignedPreKeyRecord.new(spkId, timestamp, spkPub, spkPriv, spkSig));
    let kyber = null;
    if (kyberId !== null) {
      const kp = S.KEMKeyPair.generate();
      const sig = idPriv.sign(kp.getPublicKey().serialize());
      const rec = S.KyberPreKeyRecord.new(kyberId, timestamp, kp, sig);
      state.kyberPreKeys.set(kyberId, { record: rec, lastResort: r.kyber_last_resort !== false });
      kyber = { id: kyberId, pub: kp.getPublicKey().serialize(), sig };
    }
    return {
      bundle: {
        registration_id: state.registrationId,
        device_id: state.deviceId,
        pre_key_id: preKey ? preKeyId : null,
        pre_key_public: preKey ? b64(preKey.publicKey().serialize()) : null,
        signed_pre_key_id: spkId,
        signed_pre_key_public: b64(spkPub.serialize()),
        signed_pre_key_signature: b64(spkSig),
        identity_key: b64(state.identity.publicKey.serialize()),
        kyber_pre_key_id: kyber ? kyber.id : null,
        kyber_pre_key_public: kyber ? b64(kyber.pub) : null,
        kyber_pre_key_signature: kyber ? b64(kyber.sig) : null,
      },
    };
  },

  async process_bundle(r) {
    requireInit();
    const a = address(r.peer);
    const bundle = bundleFromJson(r.bundle);
    if (LOCAL_ADDRESS.bundle) await S.processPreKeyBundle(bundle, a, localAddress(), stores.sessions, stores.identities);
    else await S.processPreKeyBundle(bundle, a, stores.sessions, stores.identities);
    return {};
  },

  async encrypt(r) {
    requireInit();
    const a = address(r.peer);
    const pt = unb64(r.plaintext, 'plaintext');
    const ct = LOCAL_ADDRESS.encrypt
      ? await S.signalEncrypt(pt, a, localAddress(), stores.sessions, stores.identities)
      : await S.signalEncrypt(pt, a, stores.sessions, stores.identities);
    return { type: ct.type(), body: b64(ct.serialize()) };
  },

  async decrypt(r) {
    requireInit();
    const a = address(r.peer);
    const type = int(r.type, 'type');
    const body = unb64(r.body, 'body');
    let pt;
    if (type === 3) {
      const m = S.PreKeySignalMessage.deserialize(body);
      pt = LOCAL_ADDRESS.decryptPreKey
        ? await S.signalDecryptPreKey(m, a, localAddress(), stores.sessions, stores.identities, stores.preKeys, stores.signedPreKeys, stores.kyberPreKeys)
        : await S.signalDecryptPreKey(m, a, stores.sessions, stores.identities, stores.preKeys, stores.signedPreKeys, stores.kyberPreKeys);
    } else if (type === 2) {
      const m = S.SignalMessage.deserialize(body);
      pt = LOCAL_ADDRESS.decrypt
        ? await S.signalDecrypt(m, a, localAddress(), stores.sessions, stores.identities)
        : await S.signalDecrypt(m, a, stores.sessions, stores.identities);
    } else throw new BadRequest('type must be 2 (SignalMessage) or 3 (PreKeySignalMessage)');
    return { plaintext: b64(pt) };
  },

  async parse_message(r) {
    const type = int(r.type, 'type');
    if (type !== 2 && type !== 3) throw new BadRequest('type must be 2 or 3');
    const body = unb64(r.body, 'body');
    const facts = messageFacts(type, body);
    // byte0 ‖ protobuf (‖ 8-byte MAC for SignalMessage)
    const pbEnd = type === 2 ? body.length - 8 : body.length;
    facts.fields = protobufFields(body.subarray(1, pbEnd));
    if (type === 2) facts.mac = b64(body.subarray(pbEnd));
    return facts;
  },

  async fingerprint(r) {
    requireInit();
    const iterations = int(r.iterations, 'iterations', { dflt: 5200 });
    const version = int(r.version, 'version', { dflt: 2 });
    const localKey = r.local_identity_key != null
      ? S.PublicKey.deserialize(unb64(r.local_identity_key, 'local_identity_key'))
      : state.identity.publicKey;
    const fp = S.Fingerprint.new(
      iterations, version,
      unb64(r.local_id, 'local_id'), localKey,
      unb64(r.remote_id, 'remote_id'), S.PublicKey.deserialize(unb64(r.remote_identity_key, 'remote_identity_key')),
    );
    return { displayable: fp.displayableFingerprint().toString(), scannable: b64(fp.scannableFingerprint().toBuffer()) };
  },

  async fingerprint_compare(r) {
    const mine = S.ScannableFingerprint._fromBuffer(unb64(r.local_scannable, 'local_scannable'));
    const theirs = S.ScannableFingerprint._fromBuffer(unb64(r.remote_scannable, 'remote_scannable'));
    return { matches: mine.compare(theirs) };
  },

  async sign(r) {
    const msg = unb64(r.message, 'message');
    let priv;
    if (r.private_key != null) priv = S.PrivateKey.deserialize(unb64(r.private_key, 'private_key'));
    else { requireInit(); priv = state.identity.privateKey; }
    return { signature: b64(priv.sign(msg)), public_key: b64(priv.getPublicKey().serialize()) };
  },

  async verify_signature(r) {
    const pk = S.PublicKey.deserialize(unb64(r.public_key, 'public_key'));
    return { valid: pk.verify(unb64(r.message, 'message'), unb64(r.signature, 'signature')) };
  },

  async derive_public(r) {
    const priv = S.PrivateKey.deserialize(unb64(r.private_key, 'private_key'));
    return { public_key: b64(priv.getPublicKey().serialize()) };
  },

  async build_signal_message(r) {
    // Deterministic SignalMessage via the library's constructor (test hook).
    const m = S.SignalMessage._new(
      int(r.version, 'version', { dflt: 4 }),
      unb64(r.mac_key, 'mac_key'),
      S.PublicKey.deserialize(unb64(r.sender_ratchet_key, 'sender_ratchet_key')),
      int(r.counter, 'counter'),
      int(r.previous_counter, 'previous_counter'),
      unb64(r.ciphertext, 'ciphertext'),
      S.PublicKey.deserialize(unb64(r.sender_identity_key, 'sender_identity_key')),
      S.PublicKey.deserialize(unb64(r.receiver_identity_key, 'receiver_identity_key')),
      ...(LOADED_VERSION === '0.72.1' ? [] : [r.pq_ratchet == null ? Buffer.alloc(0) : unb64(r.pq_ratchet, 'pq_ratchet')]),
    );
    return { body: b64(m.serialize()) };
  },

  async verify_mac(r) {
    const m = S.SignalMessage.deserialize(unb64(r.body, 'body'));
    return {
      valid: m.verifyMac(
        S.PublicKey.deserialize(unb64(r.sender_identity_key, 'sender_identity_key')),
        S.PublicKey.deserialize(unb64(r.receiver_identity_key, 'receiver_identity_key')),
        unb64(r.mac_key, 'mac_key'),
      ),
    };
  },

  async generate_key_pair() {
    const priv = S.PrivateKey.generate();
    return { private_key: b64(priv.serialize()), public_key: b64(priv.getPublicKey().serialize()) };
  },

  async agree(r) {
    const priv = S.PrivateKey.deserialize(unb64(r.private_key, 'private_key'));
    const pub = S.PublicKey.deserialize(unb64(r.public_key, 'public_key'));
    return { shared_secret: b64(priv.agree(pub)) };
  },

  async hkdf(r) {
    const length = int(r.length, 'length');
    const salt = r.salt == null ? null : unb64(r.salt, 'salt');
    return { okm: b64(S.hkdf(length, unb64(r.ikm, 'ikm'), unb64(r.info ?? '', 'info'), salt)) };
  },

  async session_state(r) {
    requireInit();
    const k = addrKey(address(r.peer));
    const raw = state.sessions.get(k);
    if (!raw) return { exists: false };
    const rec = S.SessionRecord.deserialize(raw);
    const top = pbDecode(raw);
    const cur = pbGet(top, 1);
    return {
      exists: true,
      has_current_state: rec.hasCurrentState(),
      local_registration_id: rec.localRegistrationId(),
      remote_registration_id: rec.remoteRegistrationId(),
      previous_session_count: pbAll(top, 2).length,
      current: cur ? decodeSessionStructure(cur) : null,
      record: b64(raw),
    };
  },

  async remote_identity(r) {
    requireInit();
    const k = state.identities.get(addrKey(address(r.peer)));
    return { identity_key: k ? b64(k.serialize()) : null };
  },

  async set_trust(r) {
    if (r.mode !== 'tofu' && r.mode !== 'always') throw new BadRequest("mode must be 'tofu' or 'always'");
    state.trust = r.mode;
    return {};
  },

  async delete_session(r) {
    requireInit();
    return { deleted: state.sessions.delete(addrKey(address(r.peer))) };
  },

  async prekeys() {
    requireInit();
    return {
      pre_key_ids: [...state.preKeys.keys()],
      pre_keys_consumed: [...state.preKeysConsumed],
      signed_pre_key_ids: [...state.signedPreKeys.keys()],
      kyber_pre_key_ids: [...state.kyberPreKeys.keys()],
      kyber_used: [...state.kyberUsed],
    };
  },
};

// ---------- main loop ----------
function send(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

const rl = createInterface({ input: process.stdin, crlfDelay: Infinity, terminal: false });
log(`loaded @signalapp/libsignal-client ${LOADED_VERSION} from ${PKG}`);
for await (const line of rl) {
  if (line.trim() === '') continue;
  let req;
  try {
    req = JSON.parse(line);
    if (!req || typeof req !== 'object' || Array.isArray(req)) throw new BadRequest('request must be a JSON object');
  } catch (e) {
    send({ ok: false, error: `bad request: ${e.message}`, error_kind: 'bad_request' });
    continue;
  }
  const idPart = req.id !== undefined ? { id: req.id } : {};
  const fn = typeof req.op === 'string' && Object.hasOwn(OPS, req.op) ? OPS[req.op] : null;
  if (!fn) {
    send({ ...idPart, ok: false, error: `unknown op ${JSON.stringify(req.op)}`, error_kind: 'bad_request' });
    continue;
  }
  try {
    const res = await fn(req);
    send({ ...idPart, ok: true, ...res });
  } catch (e) {
    const kind = e instanceof BadRequest ? 'bad_request' : e?.code !== undefined ? 'libsignal' : 'internal';
    const out = { ...idPart, ok: false, error: String(e?.message ?? e), error_kind: kind };
    if (e?.code !== undefined) out.error_code = S.ErrorCode?.[e.code] ?? String(e.code);
    if (kind === 'internal') log(`op ${req.op} failed: ${e?.stack ?? e}`);
    send(out);
  }
}
