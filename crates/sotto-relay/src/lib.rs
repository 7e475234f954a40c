//! # sotto-relay: the untrusted selective forwarding unit
//!
//! Each participant holds one webrtc-rs peer connection to the relay. The relay forwards every
//! sender's RTP (whose payloads are SFrame ciphertext) to every other member of the room and
//! never holds a media key. Rooms are joined over a small JSON-over-WebSocket control channel;
//! the relay is the SDP offerer, with fixed receive slots so joins and leaves need no
//! renegotiation (`protocol-spec/relay.md`). It answers keyframe requests ([`feedback`]) and
//! repairs video loss hop by hop: it NACKs senders for what it did not receive and resends to
//! receivers, from a bounded buffer, the packets they NACK ([`nack`]); a resent packet is the
//! same ciphertext.
//!
//! With `capture_dir` set, every forwarded payload is written as the relay saw it
//! ([`capture`]), so anyone can check what an untrusted relay learns.

pub mod capture;
pub mod client;
pub mod consts;
pub mod feedback;
pub mod nack;
pub mod protocol;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::{SinkExt, StreamExt};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_VP8};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};
use tokio_tungstenite::tungstenite::Message;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceGatheringState,
};

use capture::{CaptureWriter, Kind, Record};
use consts::*;
use protocol::{decode_client, ClientMsg, ServerMsg};

/// How to run a relay.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Control channel (WebSocket) address.
    pub listen: SocketAddr,
    /// Address for the media (ICE) sockets.
    pub bind_ip: IpAddr,
    /// Write every forwarded payload here.
    pub capture_dir: Option<PathBuf>,
}

impl RelayConfig {
    /// Loopback, any port, no capture.
    pub fn loopback() -> Self {
        RelayConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            bind_ip: IpAddr::from([127, 0, 0, 1]),
            capture_dir: None,
        }
    }
}

/// Counters.
#[derive(Debug, Default)]
pub struct RelayStats {
    /// RTP packets received from participants.
    pub packets_in: AtomicU64,
    /// RTP packets forwarded (one per receiving member).
    pub packets_out: AtomicU64,
    /// Payload bytes received.
    pub bytes_in: AtomicU64,
    /// Keyframe requests (PLI/FIR) received from receivers.
    pub keyframe_requests_in: AtomicU64,
    /// Keyframe requests (PLI) sent on to the original sender.
    pub keyframe_requests_out: AtomicU64,
    /// NACKs and retransmissions, both hops.
    pub nack: Arc<nack::NackCounters>,
}

struct Slot {
    audio: Arc<TrackLocalStaticRTP>,
    video: Arc<TrackLocalStaticRTP>,
    audio_ssrc: u32,
    video_ssrc: u32,
    /// Which member's media this slot carries.
    holder: Option<String>,
    /// Sequence numbers on the slot's audio and video m-lines.
    seq: [SlotSeq; 2],
}

/// Sequence-number continuity on one slot m-line. A slot is reused by a later joiner: its
/// packets get sequence numbers that continue from the previous holder's, or the receiver's SRTP
/// replay window (same SSRC) and jitter buffer would drop them as old.
#[derive(Default)]
struct SlotSeq {
    /// Whose packets `offset` was computed for.
    source: Option<String>,
    offset: u16,
    /// Highest sequence number sent on the m-line (RFC 3550 wrap-around order).
    last_out: Option<u16>,
}

impl SlotSeq {
    /// The outgoing sequence number for `from`'s packet numbered `seq`.
    fn map(&mut self, from: &str, seq: u16) -> u16 {
        if self.source.as_deref() != Some(from) {
            self.offset = match self.last_out {
                Some(l) => l.wrapping_add(1).wrapping_sub(seq),
                None => 0,
            };
            self.source = Some(from.to_string());
        }
        let out = seq.wrapping_add(self.offset);
        if self
            .last_out
            .is_none_or(|l| (out.wrapping_sub(l) as i16) > 0)
        {
            self.last_out = Some(out);
        }
        out
    }
}

struct Member {
    slots: Vec<Slot>,
    control: mpsc::UnboundedSender<ServerMsg>,
    pc: Arc<dyn PeerConnection>,
    inbound: Arc<Inbound>,
    /// Tasks reading receivers' RTCP on this member's slot tracks.
    feedback: Vec<tokio::task::JoinHandle<()>>,
}

/// What the relay receives from one participant (for keyframe requests towards it).
#[derive(Default)]
struct Inbound {
    video: Mutex<Option<Arc<dyn TrackRemote>>>,
    last_keyframe_request: Mutex<Option<Instant>>,
    /// Highest sequence number received, audio and video (RFC 3550 wrap-around order).
    highest_seq: Mutex<[Option<u16>; 2]>,
}

impl Inbound {
    /// Notes a received packet; true if it is late (a higher number arrived before it).
    fn late(&self, kind: Kind, seq: u16) -> bool {
        let mut h = lock(&self.highest_seq);
        let slot = &mut h[usize::from(kind == Kind::Video)];
        match *slot {
            Some(top) if (seq.wrapping_sub(top) as i16) <= 0 => true,
            _ => {
                *slot = Some(seq);
                false
            }
        }
    }
}

#[derive(Default)]
struct Room {
    members: HashMap<String, Member>,
}

struct Shared {
    rooms: Mutex<HashMap<String, Room>>,
    capture: Option<CaptureWriter>,
    stats: RelayStats,
    bind_ip: IpAddr,
    closed: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A running relay.
pub struct Relay {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Arc<Notify>,
}

impl Relay {
    /// The control channel URL (`ws://addr`).
    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Bound control address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Counters.
    pub fn stats(&self) -> (u64, u64, u64) {
        let s = &self.shared.stats;
        (
            s.packets_in.load(Ordering::Relaxed),
            s.packets_out.load(Ordering::Relaxed),
            s.bytes_in.load(Ordering::Relaxed),
        )
    }

    /// Keyframe requests received from receivers and forwarded to senders: `(in, out)`.
    pub fn keyframe_requests(&self) -> (u64, u64) {
        let s = &self.shared.stats;
        (
            s.keyframe_requests_in.load(Ordering::Relaxed),
            s.keyframe_requests_out.load(Ordering::Relaxed),
        )
    }

    /// Retransmission counters (NACKs to senders, their late repairs, NACKs from receivers and
    /// the relay's retransmissions to them).
    pub fn retransmissions(&self) -> nack::RetransmissionStats {
        self.shared.stats.nack.snapshot()
    }

    /// Test knob: drop this share (per mille, capped at 1000) of the RTP the relay sends, right
    /// before the wire, as lossy relay-to-receiver paths would. The NACK responder has buffered
    /// each dropped packet and resends it when the receiver asks; resent packets may be dropped
    /// again. RTCP is spared. 0, the default, disables it.
    pub fn set_outgoing_loss_per_mille(&self, p: u64) {
        self.shared
            .stats
            .nack
            .loss_per_mille
            .store(p.min(1000), Ordering::Relaxed);
    }

    /// Members of `room` now.
    pub fn members(&self, room: &str) -> Vec<String> {
        let mut v: Vec<String> = lock(&self.shared.rooms)
            .get(room)
            .map(|r| r.members.keys().cloned().collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Stops accepting, closes every peer connection and flushes the capture.
    pub async fn shutdown(self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        self.stop.notify_waiters();
        let pcs: Vec<Arc<dyn PeerConnection>> = lock(&self.shared.rooms)
            .values()
            .flat_map(|r| r.members.values())
            .map(|m| {
                m.feedback.iter().for_each(|t| t.abort());
                m.pc.clone()
            })
            .collect();
        for pc in pcs {
            let _ = pc.close().await;
        }
        if let Some(c) = &self.shared.capture {
            c.flush();
        }
    }

    /// Flushes the capture file.
    pub fn flush_capture(&self) {
        if let Some(c) = &self.shared.capture {
            c.flush();
        }
    }
}

/// Errors starting the relay.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// Socket or file.
    #[error("relay: {0}")]
    Io(#[from] std::io::Error),
}

/// Starts a relay.
pub async fn serve(cfg: RelayConfig) -> Result<Relay, RelayError> {
    let listener = TcpListener::bind(cfg.listen).await?;
    let addr = listener.local_addr()?;
    let capture = match &cfg.capture_dir {
        Some(d) => Some(CaptureWriter::create(d)?),
        None => None,
    };
    let shared = Arc::new(Shared {
        rooms: Mutex::new(HashMap::new()),
        capture,
        stats: RelayStats::default(),
        bind_ip: cfg.bind_ip,
        closed: AtomicBool::new(false),
    });
    let stop = Arc::new(Notify::new());
    let (s2, stop2) = (shared.clone(), stop.clone());
    tokio::spawn(async move {
        loop {
            tokio::select! {
                acc = listener.accept() => {
                    let Ok((tcp, _)) = acc else { continue };
                    let s = s2.clone();
                    tokio::spawn(async move {
                        if let Err(e) = session(s, tcp).await {
                            tracing::debug!("relay session: {e}");
                        }
                    });
                }
                _ = stop2.notified() => return,
            }
        }
    });
    Ok(Relay { addr, shared, stop })
}

fn err(code: &str, message: impl Into<String>) -> ServerMsg {
    ServerMsg::Error {
        code: code.into(),
        message: message.into(),
    }
}

fn codec(kind: RtpCodecKind) -> RTCRtpCodec {
    match kind {
        RtpCodecKind::Video => RTCRtpCodec {
            mime_type: MIME_TYPE_VP8.to_owned(),
            clock_rate: 90_000,
            channels: 0,
            sdp_fmtp_line: String::new(),
            rtcp_feedback: vec![],
        },
        _ => RTCRtpCodec {
            mime_type: MIME_TYPE_OPUS.to_owned(),
            clock_rate: 48_000,
            channels: 2,
            sdp_fmtp_line: String::new(),
            rtcp_feedback: vec![],
        },
    }
}

fn slot_track(kind: RtpCodecKind, i: usize) -> (Arc<TrackLocalStaticRTP>, u32) {
    let ssrc = rand::random::<u32>();
    let name = if kind == RtpCodecKind::Video {
        "video"
    } else {
        "audio"
    };
    let t = TrackLocalStaticRTP::new(MediaStreamTrack::new(
        format!("slot{i}"),
        format!("slot{i}-{name}"),
        format!("slot{i}-{name}"),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec: codec(kind),
            ..Default::default()
        }],
    ));
    (Arc::new(t), ssrc)
}

struct Handler {
    shared: Arc<Shared>,
    room: String,
    me: String,
    gathered: Arc<Notify>,
    gathering_done: Arc<AtomicBool>,
    inbound: Arc<Inbound>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.gathering_done.store(true, Ordering::SeqCst);
            self.gathered.notify_waiters();
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let shared = self.shared.clone();
        let (room, me) = (self.room.clone(), self.me.clone());
        let inbound = self.inbound.clone();
        tokio::spawn(async move {
            let kind = match track.kind().await {
                RtpCodecKind::Video => Kind::Video,
                _ => Kind::Audio,
            };
            if kind == Kind::Video {
                *lock(&inbound.video) = Some(track.clone());
            }
            while let Some(evt) = track.poll().await {
                let TrackRemoteEvent::OnRtpPacket(packet) = evt else {
                    continue;
                };
                if shared.closed.load(Ordering::Relaxed) {
                    return;
                }
                if inbound.late(kind, packet.header.sequence_number) {
                    shared
                        .stats
                        .nack
                        .late_packets_in
                        .fetch_add(1, Ordering::Relaxed);
                }
                forward(&shared, &room, &me, kind, packet).await;
            }
        });
    }
}

/// Sends one participant's packet to every other member's slot for it.
async fn forward(shared: &Shared, room: &str, from: &str, kind: Kind, packet: rtc::rtp::Packet) {
    shared.stats.packets_in.fetch_add(1, Ordering::Relaxed);
    shared
        .stats
        .bytes_in
        .fetch_add(packet.payload.len() as u64, Ordering::Relaxed);
    if let Some(c) = &shared.capture {
        c.write(&Record {
            kind,
            sender: from.to_string(),
            seq: packet.header.sequence_number,
            timestamp: packet.header.timestamp,
            marker: packet.header.marker,
            payload: packet.payload.to_vec(),
        });
    }
    let targets: Vec<(Arc<TrackLocalStaticRTP>, u32, u16)> = {
        let mut rooms = lock(&shared.rooms);
        let Some(r) = rooms.get_mut(room) else { return };
        let seq = packet.header.sequence_number;
        r.members
            .iter_mut()
            .filter(|(name, _)| name.as_str() != from)
            .filter_map(|(_, m)| {
                m.slots
                    .iter_mut()
                    .find(|s| s.holder.as_deref() == Some(from))
            })
            .map(|s| match kind {
                Kind::Audio => (s.audio.clone(), s.audio_ssrc, s.seq[0].map(from, seq)),
                Kind::Video => (s.video.clone(), s.video_ssrc, s.seq[1].map(from, seq)),
            })
            .collect()
    };
    for (track, ssrc, seq) in targets {
        let mut p = packet.clone();
        p.header.ssrc = ssrc;
        p.header.sequence_number = seq;
        // header extensions were negotiated per connection; drop them rather than mis-map ids
        p.header.extension = false;
        p.header.extensions.clear();
        if track.write_rtp(p).await.is_ok() {
            shared.stats.packets_out.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Reads receivers' RTCP on one slot's video track and asks the slot's sender for keyframes.
async fn slot_feedback(
    shared: Arc<Shared>,
    room: String,
    receiver: String,
    slot: usize,
    track: Arc<TrackLocalStaticRTP>,
) {
    loop {
        match track.poll().await {
            Some(TrackLocalEvent::OnRtcpPacket(packets)) => {
                if packets
                    .iter()
                    .any(|p| feedback::is_keyframe_request(p.as_ref()))
                {
                    shared
                        .stats
                        .keyframe_requests_in
                        .fetch_add(1, Ordering::Relaxed);
                    request_keyframe(&shared, &room, &receiver, slot).await;
                }
            }
            Some(_) => {}
            // not bound yet (or no longer): the task is aborted when the member leaves
            None => tokio::time::sleep(FEEDBACK_POLL_RETRY).await,
        }
    }
}

/// Sends a PLI to whoever `receiver`'s slot `slot` carries, at most once per
/// `KEYFRAME_REQUEST_INTERVAL` per sender.
async fn request_keyframe(shared: &Shared, room: &str, receiver: &str, slot: usize) {
    let inbound = {
        let rooms = lock(&shared.rooms);
        let Some(r) = rooms.get(room) else { return };
        let Some(holder) = r
            .members
            .get(receiver)
            .and_then(|m| m.slots.get(slot))
            .and_then(|s| s.holder.clone())
        else {
            return;
        };
        let Some(sender) = r.members.get(&holder) else {
            return;
        };
        sender.inbound.clone()
    };
    {
        let mut last = lock(&inbound.last_keyframe_request);
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < KEYFRAME_REQUEST_INTERVAL) {
            return;
        }
        *last = Some(now);
    }
    let Some(track) = lock(&inbound.video).clone() else {
        return;
    };
    let Some(media_ssrc) = track.ssrcs().await.first().copied() else {
        return;
    };
    let pli = PictureLossIndication {
        sender_ssrc: 0,
        media_ssrc,
    };
    if track.write_rtcp(vec![Box::new(pli)]).await.is_ok() {
        shared
            .stats
            .keyframe_requests_out
            .fetch_add(1, Ordering::Relaxed);
    }
}

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

async fn send(ws: &mut Ws, m: &ServerMsg) -> Result<(), String> {
    let text = serde_json::to_string(m).map_err(|e| e.to_string())?;
    ws.send(Message::text(text))
        .await
        .map_err(|e| e.to_string())
}

async fn recv(ws: &mut Ws) -> Result<ClientMsg, String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return decode_client(&t).map_err(|e| e.to_string()),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(_)) => return Err("binary frames are not part of the protocol".into()),
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("closed".into()),
        }
    }
}

async fn session(shared: Arc<Shared>, tcp: TcpStream) -> Result<(), String> {
    let cfg = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(MAX_CONTROL_MESSAGE))
        .max_frame_size(Some(MAX_CONTROL_MESSAGE));
    let mut ws = tokio_tungstenite::accept_async_with_config(tcp, Some(cfg))
        .await
        .map_err(|e| e.to_string())?;
    let first = tokio::time::timeout(JOIN_TIMEOUT, recv(&mut ws)).await;
    let (room, me) = match first {
        Ok(Ok(ClientMsg::Join { room, participant })) => (room, participant),
        Ok(Ok(_)) => {
            let _ = send(&mut ws, &err("bad_message", "expected join")).await;
            return Err("no join".into());
        }
        Ok(Err(e)) => {
            let _ = send(&mut ws, &err("bad_message", e.clone())).await;
            return Err(e);
        }
        Err(_) => {
            let _ = send(&mut ws, &err("timeout", "no join within JOIN_TIMEOUT")).await;
            return Err("timeout".into());
        }
    };
    let refusal = {
        let rooms = lock(&shared.rooms);
        match rooms.get(&room) {
            Some(r) if r.members.contains_key(&me) => {
                Some(err("name_taken", "participant name in use"))
            }
            Some(r) if r.members.len() >= MAX_ROOM_SIZE => {
                Some(err("room_full", format!("MAX_ROOM_SIZE ({MAX_ROOM_SIZE})")))
            }
            None if rooms.len() >= MAX_ROOMS => {
                Some(err("too_many_rooms", format!("MAX_ROOMS ({MAX_ROOMS})")))
            }
            _ => None,
        }
    };
    if let Some(r) = refusal {
        let _ = send(&mut ws, &r).await;
        return Err("refused".into());
    }

    // the relay's peer connection for this participant
    let gathered = Arc::new(Notify::new());
    let gathering_done = Arc::new(AtomicBool::new(false));
    // VP8 and Opus only, no RTX; NACK both ways and keyframe requests (`nack`)
    let media = nack::media_engine().map_err(|e| e.to_string())?;
    let registry = nack::registry(shared.stats.nack.clone());
    let inbound = Arc::new(Inbound::default());
    let pc = PeerConnectionBuilder::new()
        .with_media_engine(media)
        .with_interceptor_registry(registry)
        .with_handler(Arc::new(Handler {
            shared: shared.clone(),
            room: room.clone(),
            me: me.clone(),
            gathered: gathered.clone(),
            gathering_done: gathering_done.clone(),
            inbound: inbound.clone(),
        }))
        .with_udp_addrs(vec![format!("{}:0", shared.bind_ip)])
        .build()
        .await
        .map_err(|e| e.to_string())?;
    let pc: Arc<dyn PeerConnection> = Arc::new(pc);
    for kind in [RtpCodecKind::Audio, RtpCodecKind::Video] {
        pc.add_transceiver_from_kind(
            kind,
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Recvonly,
                streams: vec![],
                send_encodings: vec![],
            }),
        )
        .await
        .map_err(|e| e.to_string())?;
    }
    let mut slots = Vec::new();
    for i in 0..MAX_ROOM_SIZE - 1 {
        let (audio, audio_ssrc) = slot_track(RtpCodecKind::Audio, i);
        let (video, video_ssrc) = slot_track(RtpCodecKind::Video, i);
        pc.add_track(audio.clone() as Arc<dyn TrackLocal>)
            .await
            .map_err(|e| e.to_string())?;
        pc.add_track(video.clone() as Arc<dyn TrackLocal>)
            .await
            .map_err(|e| e.to_string())?;
        slots.push(Slot {
            audio,
            video,
            audio_ssrc,
            video_ssrc,
            holder: None,
            seq: Default::default(),
        });
    }
    let offer = pc.create_offer(None).await.map_err(|e| e.to_string())?;
    pc.set_local_description(offer)
        .await
        .map_err(|e| e.to_string())?;
    let wait = async {
        loop {
            let n = gathered.notified();
            if gathering_done.load(Ordering::SeqCst) {
                return;
            }
            n.await;
        }
    };
    if tokio::time::timeout(GATHER_TIMEOUT, wait).await.is_err() {
        let _ = send(&mut ws, &err("webrtc", "ICE gathering timed out")).await;
        let _ = pc.close().await;
        return Err("gather".into());
    }
    let sdp = pc
        .local_description()
        .await
        .map(|d| d.sdp)
        .unwrap_or_default();
    send(&mut ws, &ServerMsg::Offer { sdp }).await?;
    let answer = match tokio::time::timeout(JOIN_TIMEOUT, recv(&mut ws)).await {
        Ok(Ok(ClientMsg::Answer { sdp })) => sdp,
        _ => {
            let _ = send(&mut ws, &err("bad_message", "expected answer")).await;
            let _ = pc.close().await;
            return Err("no answer".into());
        }
    };
    let desc =
        rtc::peer_connection::sdp::RTCSessionDescription::answer(answer).map_err(|e| e.to_string());
    let applied = match desc {
        Ok(d) => pc
            .set_remote_description(d)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    if let Err(e) = applied {
        let _ = send(&mut ws, &err("webrtc", e.clone())).await;
        let _ = pc.close().await;
        return Err(e);
    }

    // admit: slots both ways with every member already there
    let (ctl_tx, mut ctl_rx) = mpsc::unbounded_channel::<ServerMsg>();
    // The room may have filled (or the name been taken) while we negotiated: checked again
    // under the lock, and a refusal still closes our peer connection.
    let admitted = 'admit: {
        let mut rooms = lock(&shared.rooms);
        if !rooms.contains_key(&room) && rooms.len() >= MAX_ROOMS {
            break 'admit Err(err("too_many_rooms", format!("MAX_ROOMS ({MAX_ROOMS})")));
        }
        let r = rooms.entry(room.clone()).or_default();
        if r.members.contains_key(&me) {
            break 'admit Err(err("name_taken", "participant name in use"));
        }
        if r.members.len() >= MAX_ROOM_SIZE {
            break 'admit Err(err("room_full", format!("MAX_ROOM_SIZE ({MAX_ROOM_SIZE})")));
        }
        let others: Vec<String> = r.members.keys().cloned().collect();
        for (i, o) in others.iter().enumerate() {
            if let Some(s) = slots.get_mut(i) {
                s.holder = Some(o.clone());
            }
        }
        for (_, m) in r.members.iter_mut() {
            if let Some(s) = m.slots.iter_mut().find(|s| s.holder.is_none()) {
                s.holder = Some(me.clone());
            }
            let _ = m.control.send(ServerMsg::MemberJoined {
                participant: me.clone(),
            });
        }
        let feedback = slots
            .iter()
            .enumerate()
            .map(|(i, s)| {
                tokio::spawn(slot_feedback(
                    shared.clone(),
                    room.clone(),
                    me.clone(),
                    i,
                    s.video.clone(),
                ))
            })
            .collect();
        if let Some(c) = &shared.capture {
            c.mark(true, &me);
        }
        r.members.insert(
            me.clone(),
            Member {
                slots,
                control: ctl_tx,
                pc: pc.clone(),
                inbound,
                feedback,
            },
        );
        Ok(others)
    };
    let others = match admitted {
        Ok(o) => o,
        Err(refusal) => {
            let _ = send(&mut ws, &refusal).await;
            let _ = pc.close().await;
            return Err("refused after negotiation".into());
        }
    };
    tracing::info!(room = %room, participant = %me, "joined");
    let joined_at = Instant::now();
    let _ = send(&mut ws, &ServerMsg::Joined { members: others }).await;
    loop {
        tokio::select! {
            m = ctl_rx.recv() => {
                let Some(m) = m else { break };
                if send(&mut ws, &m).await.is_err() { break; }
            }
            c = recv(&mut ws) => {
                match c {
                    Ok(ClientMsg::Leave) | Err(_) => break,
                    Ok(_) => { let _ = send(&mut ws, &err("bad_message", "unexpected message")).await; }
                }
            }
        }
    }
    // leave: free the slots others held for us, tell them
    {
        let mut rooms = lock(&shared.rooms);
        if let Some(r) = rooms.get_mut(&room) {
            if let Some(gone) = r.members.remove(&me) {
                gone.feedback.iter().for_each(|t| t.abort());
                if let Some(c) = &shared.capture {
                    c.mark(false, &me);
                }
            }
            for m in r.members.values_mut() {
                for s in m
                    .slots
                    .iter_mut()
                    .filter(|s| s.holder.as_deref() == Some(&me))
                {
                    s.holder = None;
                }
                let _ = m.control.send(ServerMsg::MemberLeft {
                    participant: me.clone(),
                });
            }
            if r.members.is_empty() {
                rooms.remove(&room);
            }
        }
    }
    tracing::info!(room = %room, participant = %me, secs = joined_at.elapsed().as_secs(), "left");
    let _ = pc.close().await;
    Ok(())
}

#[cfg(test)]
mod slot_seq_tests {
    use super::SlotSeq;

    #[test]
    fn a_reused_slot_continues_the_sequence_numbers() {
        let mut s = SlotSeq::default();
        // the first holder's numbers pass unchanged, across the wrap
        assert_eq!(s.map("dave", 65_534), 65_534);
        assert_eq!(s.map("dave", 65_535), 65_535);
        assert_eq!(s.map("dave", 0), 0);
        // a retransmission of an older packet keeps its number and does not move the high mark
        assert_eq!(s.map("dave", 65_535), 65_535);
        // the next holder starts with its own random numbers: they continue from 1
        assert_eq!(s.map("erin", 30_000), 1);
        assert_eq!(s.map("erin", 30_001), 2);
        assert_eq!(s.map("erin", 29_999), 0);
        assert_eq!(s.map("erin", 30_002), 3);
    }
}
