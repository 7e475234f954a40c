// The call screen's frame worker: every encoded audio/video frame passes through here between
// the encoder and the packetizer (send) and between the depacketizer and the decoder (receive),
// and is sealed/opened with SFrame (sframe.mjs, protocol-spec/frame.md). Keys arrive only here
// (from the device, through the page, never stored); a frame without a key is dropped, never
// sent in clear.
import { KeyRing, SenderKey, clearLen, decodeHeader, parseKeyMaterial, wipe } from "./sframe.mjs";

let suite = 4;
let senderId = null;
let sender = null; // SenderKey
let ring = null; // KeyRing
const zero = () => ({ sent: 0, decrypted: 0, failed: 0, dropped_no_key: 0, before_key: 0, empty: 0 });
let counts = { audio: zero(), video: zero() };
// per sender id (decimal): frames opened by kind and the key (generation, step) of the last one;
// and per receive pipe, the sender of the frames last opened on it (the page finds a member's
// tile by it)
let senders = {};
const pipeSender = new Map();
const first = { audio: false, video: false };
const failing = { audio: false, video: false };
const codecOf = (kind) => (kind === "audio" ? "opus" : "vp8");
const now = () => performance.now();
const b64 = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));

// (generation, step) of the last send key accepted: a key that does not move forward is refused
// (an equal one ignored), so no counter ever starts again under a key already used
let lastSendKey = null;

async function useSendKey(bytes) {
  const m = parseKeyMaterial(bytes);
  wipe(bytes);
  if (m.suite !== suite || senderId === null || m.sender !== senderId) {
    wipe(m.baseKey);
    return "refused: not our key";
  }
  if (lastSendKey) {
    const [g, st] = lastSendKey;
    const same = m.generation === g && m.step === st;
    const back = m.generation < g || (m.generation === g && m.step < st);
    if (same || back) {
      wipe(m.baseKey);
      return same ? "same key" : "refused: goes back";
    }
  }
  lastSendKey = [m.generation, m.step];
  const next = await SenderKey.create(m.suite, m.sender, m.baseKey, { generation: m.generation, step: m.step });
  wipe(m.baseKey);
  sender?.destroy();
  sender = next;
  return "ok";
}

// every message is handled completely before the next one starts (key changes in the order
// the device sent them; a `create` or `close` never overtaken by an earlier key)
let queue = Promise.resolve();
self.onmessage = (ev) => {
  queue = queue.then(() => handle(ev.data)).catch((e) => self.postMessage({ event: "key_refused", reason: String(e) }));
};

async function handle(data) {
  switch (data.op) {
    case "ping":
      self.postMessage({ event: "pong" });
      break;
    case "create":
      suite = data.suite;
      senderId = BigInt(data.sender_id);
      sender?.destroy();
      sender = null;
      lastSendKey = null;
      ring = new KeyRing(suite);
      counts = { audio: zero(), video: zero() };
      senders = {};
      pipeSender.clear();
      first.audio = first.video = false;
      failing.audio = failing.video = false;
      break;
    case "use_send_key": {
      const r = await useSendKey(b64(data.material));
      if (r !== "ok" && r !== "same key") self.postMessage({ event: "key_refused", reason: r });
      break;
    }
    case "install":
      if (ring) {
        try {
          await ring.addKey(b64(data.material), now());
        } catch (e) {
          self.postMessage({ event: "key_refused", reason: e.code ?? String(e) });
        }
      }
      break;
    case "forget":
      await ring?.removeSender(BigInt(data.sender));
      break;
    case "close":
      sender?.destroy();
      sender = null;
      lastSendKey = null;
      ring = null;
      break;
    case "stats":
      // generations and steps past their grace period are wiped (frame.md §4.2, `expire`)
      await ring?.expire(now());
      self.postMessage({
        event: "stats",
        id: data.id,
        counts,
        senders,
        generation: sender ? Number(sender.generation) : null,
      });
      break;
    case "streams": // encoded streams: the page hands us the streams
      pipe(data.readable, data.writable, data.kind, data.direction, data.pipe);
      break;
  }
}

// RTCRtpScriptTransform
self.addEventListener("rtctransform", ({ transformer }) => {
  const { kind, direction, pipe: id } = transformer.options;
  pipe(transformer.readable, transformer.writable, kind, direction, id);
});

// whether the ring holds no key at all for the frame's sender (its KID read from the header)
function noKeyYet(data, codec) {
  try {
    const bytes = new Uint8Array(data);
    const clear = clearLen(codec, bytes);
    const { kid } = decodeHeader(bytes.subarray(clear));
    return ring.current(kid >> 8n) === null;
  } catch {
    return false;
  }
}

function pipe(readable, writable, kind, direction, id) {
  const codec = codecOf(kind);
  const c = () => counts[kind];
  const transform =
    direction === "send"
      ? async (frame, out) => {
          if (frame.data.byteLength === 0) {
            c().empty++; // nothing to seal (an encoder's empty frame): not sent at all
            return;
          }
          if (!sender) {
            c().dropped_no_key++;
            return; // never in clear
          }
          try {
            const wire = await sender.encrypt(codec, new Uint8Array(frame.data));
            frame.data = wire.buffer;
            c().sent++;
            out.enqueue(frame);
          } catch {
            c().dropped_no_key++;
          }
        }
      : async (frame, out) => {
          if (!ring) return;
          if (frame.data.byteLength === 0) {
            c().empty++; // nothing in it (an empty RTP frame): dropped, not a failure
            return;
          }
          try {
            const got = await ring.decrypt(codec, new Uint8Array(frame.data), now());
            frame.data = got.frame.buffer;
            c().decrypted++;
            const who = String(got.sender);
            const s = (senders[who] ??= { audio: 0, video: 0, generation: 0, step: 0 });
            s[kind]++;
            s.generation = Number(got.generation);
            s.step = Number(got.step);
            if (id !== undefined && pipeSender.get(id) !== who) {
              pipeSender.set(id, who);
              self.postMessage({ event: "pipe_sender", pipe: id, sender: who });
            }
            if (!first[kind]) {
              first[kind] = true;
              self.postMessage({ event: "first_frame", media: kind });
            }
            failing[kind] = false;
            out.enqueue(frame);
          } catch (e) {
            // a sender whose first key has not arrived yet (media starts before the sealed key
            // message lands): dropped, not a failure (sotto-frame's receiver counts these
            // apart too)
            if (e.code === "UnknownKey" && noKeyYet(frame.data, codec)) {
              c().before_key++;
              return;
            }
            c().failed++;
            if (!failing[kind]) {
              failing[kind] = true;
              self.postMessage({ event: "decrypt_failing", media: kind, code: e.code ?? "Error" });
            }
          }
        };
  readable.pipeThrough(new TransformStream({ transform })).pipeTo(writable).catch(() => {});
}
