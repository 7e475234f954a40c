#!/usr/bin/env node
// Session setups and round trips per second of official libsignal in Node, libsignal <->
// libsignal in one process with in-memory stores; the same operations sotto-ratchet's bench
// (crates/sotto-ratchet/benches/ratchet.rs) times in Rust: Bob publishes a bundle with a fresh
// one-time prekey, Alice processes it and sends 100 bytes, Bob decrypts (setup); then A->B and
// B->A (round trip).
//
// Usage: node bench.mjs [--lib 0.103.0] [--ms 2000]   -> one JSON line on stdout
// Only 0.103.0 is supported (its session functions all take a localAddress).
const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : dflt;
};
const LIB = opt('--lib', '0.103.0');
const MS = Number(opt('--ms', '2000'));
if (LIB !== '0.103.0') {
  process.stderr.write('bench.mjs: only --lib 0.103.0 is supported\n');
  process.exit(2);
}
const mod = await import('libsignal-0103');
const S = mod.PrivateKey ? mod : mod.default;
const MSG = new Uint8Array(100).fill(0x5a);
const key = (a) => `${a.name()}.${a.deviceId()}`;

function party(name, regId) {
  const identity = S.IdentityKeyPair.generate();
  const sessions = new Map();
  const identities = new Map();
  const preKeys = new Map();
  const signed = new Map();
  const kyber = new Map();
  const stores = {
    sessions: new (class extends S.SessionStore {
      async saveSession(a, r) { sessions.set(key(a), r); }
      async getSession(a) { return sessions.get(key(a)) ?? null; }
      async getExistingSessions(as) { return as.map((a) => sessions.get(key(a))); }
    })(),
    identities: new (class extends S.IdentityKeyStore {
      async getIdentityKey() { return identity.privateKey; }
      async getLocalRegistrationId() { return regId; }
      async saveIdentity(a, k) { identities.set(key(a), k); return 0; }
      async isTrustedIdentity() { return true; }
      async getIdentity(a) { return identities.get(key(a)) ?? null; }
    })(),
    preKeys: new (class extends S.PreKeyStore {
      async savePreKey(id, r) { preKeys.set(id, r); }
      async getPreKey(id) { return preKeys.get(id); }
      async removePreKey(id) { preKeys.delete(id); }
    })(),
    signed: new (class extends S.SignedPreKeyStore {
      async saveSignedPreKey(id, r) { signed.set(id, r); }
      async getSignedPreKey(id) { return signed.get(id); }
    })(),
    kyber: new (class extends S.KyberPreKeyStore {
      async saveKyberPreKey(id, r) { kyber.set(id, r); }
      async getKyberPreKey(id) { return kyber.get(id); }
      async markKyberPreKeyUsed() {}
    })(),
  };
  return { name, regId, identity, sessions, stores, address: S.ProtocolAddress.new(name, 1) };
}

const alice = party('alice', 1);
const bob = party('bob', 2);
// Bob's signed and (last-resort) Kyber prekeys, made once.
const spkPriv = S.PrivateKey.generate();
const spkSig = bob.identity.privateKey.sign(spkPriv.getPublicKey().serialize());
await bob.stores.signed.saveSignedPreKey(1, S.SignedPreKeyRecord.new(1, 0, spkPriv.getPublicKey(), spkPriv, spkSig));
const kp = S.KEMKeyPair.generate();
const kSig = bob.identity.privateKey.sign(kp.getPublicKey().serialize());
await bob.stores.kyber.saveKyberPreKey(1, S.KyberPreKeyRecord.new(1, 0, kp, kSig));
let nextOpk = 1;

async function setup() {
  alice.sessions.clear();
  bob.sessions.clear();
  const id = nextOpk++;
  const opk = S.PrivateKey.generate();
  await bob.stores.preKeys.savePreKey(id, S.PreKeyRecord.new(id, opk.getPublicKey(), opk));
  const bundle = S.PreKeyBundle.new(2, 1, id, opk.getPublicKey(), 1, spkPriv.getPublicKey(), spkSig,
    bob.identity.publicKey, 1, kp.getPublicKey(), kSig);
  await S.processPreKeyBundle(bundle, bob.address, alice.address, alice.stores.sessions, alice.stores.identities);
  const ct = await S.signalEncrypt(MSG, bob.address, alice.address, alice.stores.sessions, alice.stores.identities);
  const m = S.PreKeySignalMessage.deserialize(ct.serialize());
  await S.signalDecryptPreKey(m, alice.address, bob.address, bob.stores.sessions, bob.stores.identities,
    bob.stores.preKeys, bob.stores.signed, bob.stores.kyber);
}

async function send(from, to) {
  const ct = await S.signalEncrypt(MSG, to.address, from.address, from.stores.sessions, from.stores.identities);
  const body = ct.serialize();
  if (ct.type() === 3) {
    await S.signalDecryptPreKey(S.PreKeySignalMessage.deserialize(body), from.address, to.address,
      to.stores.sessions, to.stores.identities, to.stores.preKeys, to.stores.signed, to.stores.kyber);
  } else {
    await S.signalDecrypt(S.SignalMessage.deserialize(body), from.address, to.address, to.stores.sessions, to.stores.identities);
  }
}

async function rate(f) {
  for (let i = 0; i < 3; i++) await f();
  const start = performance.now();
  let n = 0;
  while (performance.now() - start < MS) {
    await f();
    n++;
  }
  return (n * 1000) / (performance.now() - start);
}

const setups = await rate(setup);
await setup();
const roundTrips = await rate(async () => { await send(alice, bob); await send(bob, alice); });
process.stdout.write(`${JSON.stringify({ lib: LIB, setups_per_s: setups, round_trips_per_s: roundTrips })}\n`);
