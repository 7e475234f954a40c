// The call screen: talks to its device over one WebSocket (protocol-spec/app.md), shows the
// call, and is the device's media engine (camera, microphone, RTCPeerConnection). Every frame
// goes through the frame worker (frame-worker.mjs), which alone holds SFrame keys: key
// messages are passed to it as they arrive and kept nowhere here.

const $ = (id) => document.getElementById(id);
// the link's token works once; the device then gives this tab a fresh one for a reload, kept
// in sessionStorage (this tab only) — and the link's is taken out of the address bar
const token = sessionStorage.getItem("sotto-session") || location.hash.slice(1);
history.replaceState(null, "", "/");
const ws = new WebSocket(`ws://${location.host}/ws`);
const worker = new Worker("frame-worker.mjs", { type: "module" });
// Chromium 156 has RTCRtpScriptTransform, but frames of a sender given one went out untouched
// (measured: the worker's rtctransform event fired, no frame reached it): where the encoded
// streams API exists it is used, the script transform only where it does not. Either way the
// page checks that every encoded frame went through the worker (leakCheck) and ends the call
// if not.
const useEncodedStreams = typeof RTCRtpSender !== "undefined" && typeof RTCRtpSender.prototype.createEncodedStreams === "function";
const hasScriptTransform = !useEncodedStreams && typeof RTCRtpScriptTransform !== "undefined";
// the worker must answer before any peer connection exists: a transform whose worker failed
// to start must never be attached (no frame may leave unencrypted)
let workerReady;
const workerAlive = new Promise((resolve, reject) => {
  workerReady = resolve;
  setTimeout(() => reject(new Error("frame worker did not start")), 10000);
});
worker.onerror = (e) => log("error", `frame worker failed: ${e.message}`);
worker.postMessage({ op: "ping" });

let pc = null;
let call = null; // the device's number for the current call's media
let local = null; // MediaStream from getUserMedia
let relayOnly = false;
let sending = false; // tracks go to the senders only once the device says `start`
let gatheringDone = null;
let statsWaiters = new Map();
let statsSeq = 0;
let prevBytes = null;
let sendGeneration = null; // the generation of the key the worker seals under (stats only)
// the call's members as the device last said ({name, sender}), and what each receive pipe (a
// transceiver's receiver) carries: its track and the sender of the frames the worker last
// opened on it. A relay's slots are not labelled (relay.md §3): a member's tile shows the
// pipes whose frames carry its sender id.
let members = [];
let inCall = false;
let identityPeer = null; // whose changed identity the page shows (the device's `identity`)
const pipes = new Map(); // pipe id -> { kind, track, sender, seen }
let pipeSeq = 0;
let seenSeq = 0;
const pipeOf = (t) => (t.sottoPipe ??= ++pipeSeq);

const send = (m) => ws.readyState === WebSocket.OPEN && ws.send(JSON.stringify(m));
const command = (c) => send({ type: "command", command: c });
const mediaEvent = (event) => send({ type: "media_event", event });
const reply = (id, result) => send({ type: "media_reply", id, result });

function showError(text) {
  const e = $("error");
  e.textContent = text;
  e.hidden = !text;
}

function log(kind, text) {
  const li = document.createElement("li");
  li.dataset.kind = kind;
  li.textContent = text; // names and reasons may come from the peer: text, never HTML
  $("event-list").prepend(li);
}

// --- device connection -------------------------------------------------------------------

ws.onopen = () => send({ type: "hello", token });
ws.onclose = () => {
  $("state").textContent = "the device closed the connection";
  $("state").dataset.state = "offline";
  // without the device there is no call: nothing more leaves this page
  stopStats();
  worker.postMessage({ op: "close" });
  pc?.close();
  pc = null;
  for (const t of local?.getTracks() ?? []) t.stop();
};
ws.onmessage = async ({ data }) => {
  let m;
  try {
    m = JSON.parse(data);
  } catch {
    return;
  }
  switch (m.type) {
    case "welcome":
      $("me").textContent = m.me;
      sessionStorage.setItem("sotto-session", m.session);
      // camera and microphone now, so that a permission prompt does not hold up a call
      ensureLocal().catch((e) => showError(`camera/microphone: ${e.name}`));
      break;
    case "status":
      status(m);
      break;
    case "notice":
      log(m.kind, m.text);
      if (m.kind === "identity_changed") {
        const w = $("identity-warning");
        w.textContent = `${m.text}: nothing goes to or comes from the new key. Compare the new safety number with them in person; if it matches, type it below and press Trust.`;
        w.hidden = false;
      }
      if (m.kind === "identity_trusted") {
        $("identity-warning").hidden = true;
        $("identity-compare").hidden = true;
        $("trust-number").value = "";
        identityPeer = null;
      }
      if (m.kind === "error") showError(m.text);
      break;
    case "identity":
      // both numbers, to compare; the device decides whether the typed one is the new key's
      identityPeer = m.peer;
      $("identity-peer").textContent = m.peer;
      $("identity-old").textContent = m.trusted ?? "none";
      $("identity-new").textContent = m.offered;
      $("identity-compare").hidden = false;
      break;
    case "contacts":
      renderContacts(m);
      break;
    case "key":
      // straight to the frame worker; nothing kept here
      worker.postMessage(m);
      break;
    case "media":
      try {
        reply(m.id, await media(m.id, m.request));
      } catch (e) {
        reply(m.id, { failed: e?.name || "Error" });
      }
      break;
  }
};

function status(s) {
  $("state").textContent = s.end_reason ? `${s.state}: ${s.end_reason}` : s.state;
  $("state").dataset.state = s.state;
  $("peer").textContent = s.peer ? `↔ ${s.peer}` : "";
  $("safety").textContent = s.safety_number || "–";
  inCall = ["ringing", "connecting", "connected"].includes(s.state);
  members = s.members;
  $("ringing").hidden = s.state !== "incoming";
  $("caller").textContent = s.peer || "";
  $("incall").hidden = !inCall;
  $("dial").hidden = inCall || s.state === "incoming";
  $("contacts").hidden = inCall || s.state === "incoming";
  $("mute-audio").setAttribute("aria-pressed", String(s.audio_muted));
  $("mute-video").setAttribute("aria-pressed", String(s.video_muted));
  document.body.dataset.callState = s.state;
  if (s.state === "ended" || s.state === "idle") stopStats();
  renderTiles();
}

// One tile per member (added when the device names it, removed when it leaves), showing the
// tracks of the pipes whose frames carry its sender id (the newest, should a slot have been
// reused). Tiles only show what the device and the worker say; they decide nothing.
function renderTiles() {
  const box = $("remotes");
  const want = inCall ? members : [];
  for (const tile of [...box.children]) {
    if (!want.some((m) => m.name === tile.dataset.member && m.sender === tile.dataset.sender)) tile.remove();
  }
  for (const m of want) {
    let tile = [...box.children].find((t) => t.dataset.member === m.name);
    if (!tile) {
      tile = document.createElement("div");
      tile.className = "tile remote";
      tile.dataset.member = m.name;
      tile.dataset.sender = m.sender;
      const video = document.createElement("video");
      video.autoplay = true;
      video.playsInline = true;
      const label = document.createElement("div");
      label.className = "label";
      label.textContent = m.name; // a peer-chosen name: text, never HTML
      tile.append(video, label);
      box.append(tile);
    }
    const tracks = [];
    for (const kind of ["video", "audio"]) {
      let best = null;
      for (const p of pipes.values()) {
        if (p.kind === kind && p.sender === m.sender && (!best || p.seen > best.seen)) best = p;
      }
      if (best) tracks.push(best.track);
    }
    const video = tile.querySelector("video");
    const cur = video.srcObject?.getTracks() ?? [];
    if (tracks.length !== cur.length || tracks.some((t, i) => t !== cur[i])) {
      video.srcObject = tracks.length ? new MediaStream(tracks) : null;
    }
  }
}

// The contacts the device sent (it decides who they are and counts their devices): one row
// each with a Call button that dials exactly as the name field does.
function renderContacts(list) {
  const ul = $("contact-list");
  ul.replaceChildren();
  for (const c of list.contacts) {
    const li = document.createElement("li");
    li.dataset.contact = c.name;
    li.dataset.devices = c.devices ?? "";
    const name = document.createElement("span");
    name.className = "contact-name";
    name.textContent = c.name; // a name from the network: text, never HTML
    const count = document.createElement("span");
    count.className = "contact-devices";
    count.textContent = c.devices == null ? "devices: ?" : `${c.devices} device${c.devices === 1 ? "" : "s"}`;
    const call = document.createElement("button");
    call.type = "button";
    call.className = "contact-call";
    call.textContent = "Call";
    call.onclick = () => dial(c.name);
    li.append(name, " ", count, " ", call);
    ul.append(li);
  }
  $("contacts-more").hidden = !list.truncated;
  $("contacts-none").hidden = list.contacts.length > 0;
}

// --- user actions --------------------------------------------------------------------------

function dial(user) {
  showError("");
  command({ action: "dial", user });
}
$("dial").onsubmit = (e) => {
  e.preventDefault();
  dial($("callee").value.trim());
};
$("answer").onclick = () => command({ action: "answer" });
$("reject").onclick = () => command({ action: "reject" });
$("hangup").onclick = () => command({ action: "hangup" });
$("mute-audio").onclick = () =>
  command({ action: "mute_audio", muted: $("mute-audio").getAttribute("aria-pressed") !== "true" });
$("mute-video").onclick = () =>
  command({ action: "mute_video", muted: $("mute-video").getAttribute("aria-pressed") !== "true" });
$("invite").onsubmit = (e) => {
  e.preventDefault();
  command({ action: "invite", user: $("invitee").value.trim() });
  $("invitee").value = "";
};
$("trust").onsubmit = (e) => {
  e.preventDefault();
  if (identityPeer) command({ action: "trust_identity", peer: identityPeer, safety_number: $("trust-number").value });
};
$("switch-camera").onclick = () => switchCamera().catch((e) => showError(`camera: ${e.name}`));
$("camera").onchange = () => switchSource("video", $("camera").value).catch((e) => showError(`camera: ${e.name}`));
navigator.mediaDevices.ondevicechange = () => local && listDevices().catch(() => {});
$("microphone").onchange = () =>
  switchSource("audio", $("microphone").value).catch((e) => showError(`microphone: ${e.name}`));

// --- media -----------------------------------------------------------------------------

const VIDEO = { width: 640, height: 480 };
// the picker of each kind of source, and the kind of track it picks
const PICKERS = [
  ["camera", "videoinput", "video"],
  ["microphone", "audioinput", "audio"],
];

async function ensureLocal() {
  if (local) return local;
  local = await navigator.mediaDevices.getUserMedia({ audio: true, video: VIDEO });
  $("local").srcObject = local;
  await listDevices();
  return local;
}

async function listDevices() {
  const devices = await navigator.mediaDevices.enumerateDevices();
  for (const [id, kind, track] of PICKERS) {
    const sel = $(id);
    const found = devices.filter((d) => d.kind === kind);
    sel.replaceChildren(
      ...found.map((d, i) => {
        const o = document.createElement("option");
        o.value = d.deviceId;
        o.textContent = d.label || `${id} ${i + 1}`; // a device's name: text, never HTML
        return o;
      }),
    );
    const cur = currentDevice(track);
    if (cur) sel.value = cur;
  }
}

const currentDevice = (kind) => local?.getTracks().find((t) => t.kind === kind)?.getSettings().deviceId;

// the next camera (or the one picked)
async function switchCamera() {
  const sel = $("camera");
  const ids = [...sel.options].map((o) => o.value);
  const cur = currentDevice("video");
  const next = sel.value !== cur ? sel.value : ids[(ids.indexOf(cur) + 1) % Math.max(ids.length, 1)];
  await switchSource("video", next);
}

// `kind`'s source becomes device `id`, swapped into the sender without renegotiation
// (replaceTrack) and only once the call sends (webrtc-rs sends nothing before `start`); a
// muted source stays muted.
async function switchSource(kind, id) {
  if (!local || !id || id === currentDevice(kind)) return;
  const want = { deviceId: { exact: id } };
  const s = await navigator.mediaDevices.getUserMedia(kind === "video" ? { video: { ...VIDEO, ...want } } : { audio: want });
  const track = s.getTracks()[0];
  const old = local.getTracks().find((t) => t.kind === kind);
  if (old) track.enabled = old.enabled;
  if (pc && sending) {
    for (const t of sendingTransceivers()) {
      if (t.receiver.track.kind === kind) await t.sender.replaceTrack(track);
    }
  }
  if (old) {
    local.removeTrack(old);
    old.stop();
  }
  local.addTrack(track);
  $("local").srcObject = local;
  const picker = PICKERS.find((p) => p[2] === kind)[0];
  $(picker).value = track.getSettings().deviceId || id;
  log("state", `${picker}: ${track.label || "switched"}`);
}

function attachTransforms(t) {
  const kind = t.receiver.track.kind;
  const pipe = pipeOf(t);
  if (!pipes.has(pipe)) pipes.set(pipe, { kind, track: t.receiver.track, sender: null, seen: 0 });
  if (hasScriptTransform) {
    t.sender.transform = new RTCRtpScriptTransform(worker, { kind, direction: "send" });
    t.receiver.transform = new RTCRtpScriptTransform(worker, { kind, direction: "recv", pipe });
  } else {
    for (const [end, direction] of [[t.sender, "send"], [t.receiver, "recv"]]) {
      const { readable, writable } = end.createEncodedStreams();
      worker.postMessage({ op: "streams", readable, writable, kind, direction, pipe }, [readable, writable]);
    }
  }
}

// VP8 only (the SFrame layout is codec-aware, frame.md §5), Opus for audio
function preferCodecs(t) {
  const kind = t.receiver.track.kind;
  const caps = RTCRtpReceiver.getCapabilities(kind);
  if (!caps || !t.setCodecPreferences) return;
  const want = kind === "video" ? "video/vp8" : "audio/opus";
  const keep = caps.codecs.filter((c) => c.mimeType.toLowerCase() === want);
  if (keep.length) t.setCodecPreferences(keep);
}

// The first transceiver of each kind sends (peer to peer the only one; through a relay the
// relay's receiving m-lines come first, then the slots, which only receive: relay.md §3).
function sendingTransceivers() {
  const sends = new Set();
  for (const kind of ["audio", "video"]) {
    const first = pc.getTransceivers().find((t) => t.receiver.track.kind === kind);
    if (first) sends.add(first);
  }
  return sends;
}

async function wireLocalTracks() {
  const s = await ensureLocal();
  const sends = sendingTransceivers();
  for (const t of pc.getTransceivers()) {
    const kind = t.receiver.track.kind;
    const track = s.getTracks().find((x) => x.kind === kind);
    if (sends.has(t)) {
      t.direction = "sendrecv";
      // the track itself is given at `start`, as webrtc-rs sends nothing before start_sending
      if (sending && track && t.sender.track !== track) await t.sender.replaceTrack(track);
    } else if (t.direction !== "recvonly") {
      t.direction = "recvonly";
    }
    if (!t.sotto) {
      preferCodecs(t);
      attachTransforms(t);
      t.sotto = true; // only once the transforms are on
    }
  }
}

function newPeerConnection(req) {
  const config = { iceServers: req.ice_servers, iceTransportPolicy: req.relay_only ? "relay" : "all" };
  if (useEncodedStreams) config.encodedInsertableStreams = true;
  else if (!hasScriptTransform) throw Object.assign(new Error("no frame transform API"), { name: "no_frame_transform" });
  const p = new RTCPeerConnection(config);
  relayOnly = req.relay_only;
  gatheringDone = new Promise((resolve) => {
    p.onicecandidate = ({ candidate }) => {
      if (candidate) {
        mediaEvent({ kind: "candidate", candidate: JSON.stringify(candidate.toJSON()) });
      } else {
        mediaEvent({ kind: "gathering_complete" });
        resolve();
      }
    };
  });
  p.onconnectionstatechange = () => mediaEvent({ kind: "state", state: p.connectionState });
  return p;
}

async function media(id, req) {
  switch (req.op) {
    case "create":
      try {
        await workerAlive;
      } catch {
        return { failed: "frame_worker_unavailable" };
      }
      if (pc) pc.close();
      pipes.clear();
      sending = false;
      call = req.call;
      worker.postMessage({ op: "create", suite: req.suite, sender_id: req.sender_id });
      await ensureLocal();
      pc = newPeerConnection(req);
      return "done";
    case "create_offer": {
      for (const kind of ["audio", "video"]) pc.addTransceiver(kind, { direction: "sendrecv" });
      await wireLocalTracks();
      await pc.setLocalDescription();
      return { sdp: pc.localDescription.sdp };
    }
    case "accept_offer":
    case "answer_relay_offer": {
      await pc.setRemoteDescription({ type: "offer", sdp: req.sdp });
      await wireLocalTracks();
      await pc.setLocalDescription();
      // a relay wants every candidate, but not forever (the device's RELAY_GATHER_WAIT)
      if (req.op === "answer_relay_offer") await Promise.race([gatheringDone, new Promise((r) => setTimeout(r, 2000))]);
      return { sdp: pc.localDescription.sdp };
    }
    case "apply_answer":
      await pc.setRemoteDescription({ type: "answer", sdp: req.sdp });
      return "done";
    case "add_candidate":
      await pc.addIceCandidate(JSON.parse(req.candidate));
      return "done";
    case "start":
      sending = true;
      await wireLocalTracks();
      startStats();
      return "done";
    case "set_muted":
      for (const t of local?.getTracks() ?? []) t.enabled = t.kind === "audio" ? !req.audio : !req.video;
      return "done";
    case "stats":
      return { stats: await stats() };
    case "close":
      if (req.call !== call) return "done"; // an earlier call's close: not this one's media
      sending = false;
      stopStats();
      worker.postMessage({ op: "close" });
      pc?.close();
      pc = null;
      pipes.clear();
      renderTiles();
      return "done";
    default:
      return { failed: "unknown_op" };
  }
}

// --- statistics ------------------------------------------------------------------------

worker.onmessage = ({ data }) => {
  if (data.event === "pong") {
    workerReady();
  } else if (data.event === "stats") {
    statsWaiters.get(data.id)?.(data);
    statsWaiters.delete(data.id);
  } else if (data.event === "first_frame") {
    mediaEvent({ kind: "first_frame", media: data.media });
  } else if (data.event === "decrypt_failing") {
    mediaEvent({ kind: "decrypt_failing", media: data.media, code: data.code });
  } else if (data.event === "pipe_sender") {
    const p = pipes.get(data.pipe);
    if (p) {
      p.sender = data.sender;
      p.seen = ++seenSeq;
      renderTiles();
    }
  } else if (data.event === "key_refused") {
    log("error", `frame worker refused a key: ${data.reason}`);
  }
};

function workerCounts() {
  const id = ++statsSeq;
  return new Promise((resolve) => {
    statsWaiters.set(id, resolve);
    worker.postMessage({ op: "stats", id });
    setTimeout(() => {
      if (statsWaiters.delete(id)) resolve(null);
    }, 2000);
  });
}

async function stats() {
  const w = await workerCounts();
  sendGeneration = w?.generation ?? null;
  // each tile: what the worker opened of that member's frames, and under which key
  for (const tile of $("remotes").children) {
    const c = w?.senders?.[tile.dataset.sender];
    tile.dataset.audioDecrypted = c?.audio ?? 0;
    tile.dataset.videoDecrypted = c?.video ?? 0;
    tile.dataset.generation = c?.generation ?? "";
    tile.dataset.step = c?.step ?? "";
    const label = tile.querySelector(".label");
    label.textContent = c ? `${tile.dataset.member} · key ${c.generation}.${c.step}` : tile.dataset.member;
  }
  const out = {
    state: pc?.connectionState ?? "closed",
    send_bitrate: 0,
    recv_bitrate: 0,
    audio_frames_sent: w?.counts.audio.sent ?? 0,
    audio_frames_decrypted: w?.counts.audio.decrypted ?? 0,
    audio_frames_failed: w?.counts.audio.failed ?? 0,
    video_frames_sent: w?.counts.video.sent ?? 0,
    video_frames_decrypted: w?.counts.video.decrypted ?? 0,
    video_frames_failed: w?.counts.video.failed ?? 0,
  };
  if (pc) {
    const report = await pc.getStats();
    let bytesOut = 0, bytesIn = 0;
    let encoded = 0, audioPackets = 0;
    for (const r of report.values()) {
      if (r.type === "outbound-rtp") bytesOut += r.bytesSent || 0;
      if (r.type === "outbound-rtp" && r.kind === "video") encoded += r.framesEncoded || 0;
      if (r.type === "outbound-rtp" && r.kind === "audio") audioPackets += r.packetsSent || 0;
      if (r.type === "inbound-rtp") bytesIn += r.bytesReceived || 0;
      if (r.type === "candidate-pair" && r.nominated && r.state === "succeeded") {
        const l = report.get(r.localCandidateId), rm = report.get(r.remoteCandidateId);
        out.local_candidate = l?.candidateType;
        out.remote_candidate = rm?.candidateType;
        if (r.currentRoundTripTime !== undefined) out.rtt_ms = Math.round(r.currentRoundTripTime * 1000);
      }
    }
    // every video frame the encoder produced and every audio packet sent (one Opus frame
    // each) must have passed the worker (sealed, or dropped for want of a key); a few may be
    // in flight. A worker that does not answer fails the check too.
    const passed = (k) => (w?.counts[k].sent ?? 0) + (w?.counts[k].dropped_no_key ?? 0) + (w?.counts[k].empty ?? 0);
    const video = passed("video");
    const audio = passed("audio");
    if (!w && encoded + audioPackets > 0) leak(encoded + audioPackets, "no answer from the frame worker");
    else if (encoded > video + 10) leak(encoded, `${video} video frames sealed`);
    else if (audioPackets > audio + 25) leak(audioPackets, `${audio} audio frames sealed`);
    const t = performance.now();
    if (prevBytes) {
      const dt = (t - prevBytes.t) / 1000;
      if (dt > 0) {
        out.send_bitrate = Math.max(0, Math.round(((bytesOut - prevBytes.out) * 8) / dt));
        out.recv_bitrate = Math.max(0, Math.round(((bytesIn - prevBytes.in) * 8) / dt));
      }
    }
    prevBytes = { t, out: bytesOut, in: bytesIn };
  }
  return out;
}

// frames left without going through the worker: stop sending at once and end the call
function leak(encoded, what) {
  if (!pc) return;
  for (const t of pc.getTransceivers()) t.sender.replaceTrack(null).catch(() => {});
  pc.close();
  pc = null;
  stopStats();
  showError(`frames may have left without end-to-end encryption (${encoded} sent, ${what}): call ended`);
  command({ action: "hangup" });
}

let statsTimer = null;
function startStats() {
  stopStats();
  statsTimer = setInterval(async () => {
    const s = await stats();
    const rows = [
      ["connection", s.state],
      ["candidate pair", `${s.local_candidate ?? "-"} → ${s.remote_candidate ?? "-"}`],
      ["rtt", s.rtt_ms !== undefined ? `${s.rtt_ms} ms` : "-"],
      ["bitrate out / in", `${Math.round(s.send_bitrate / 1000)} / ${Math.round(s.recv_bitrate / 1000)} kbit/s`],
      ["frames sent (audio/video)", `${s.audio_frames_sent} / ${s.video_frames_sent}`],
      ["frames decrypted", `${s.audio_frames_decrypted} / ${s.video_frames_decrypted}`],
      ["frames failed", `${s.audio_frames_failed} / ${s.video_frames_failed}`],
      ["our key generation", sendGeneration ?? "-"],
    ];
    $("stats-body").replaceChildren(
      ...rows.map(([k, v]) => {
        const tr = document.createElement("tr");
        const a = document.createElement("th");
        const b = document.createElement("td");
        a.textContent = k;
        b.textContent = v;
        b.dataset.stat = k;
        tr.append(a, b);
        return tr;
      }),
    );
  }, 1000);
}
function stopStats() {
  if (statsTimer) clearInterval(statsTimer);
  statsTimer = null;
  prevBytes = null;
}
