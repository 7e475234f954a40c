//! The media plane: a participant's RTP forwarded to every other member's slot that carries it
//! (the room's speaker places, fed by the audio levels its audio carries), and keyframe
//! requests sent on to a slot's sender: receivers', and the relay's own when a video slot is
//! given to a new holder.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};

use crate::capture::{Kind, Record};
use crate::consts::{FEEDBACK_POLL_RETRY, KEYFRAME_REQUEST_INTERVAL, RANK_INTERVAL};
use crate::relay::Shared;
use crate::slot::PacketInfo;
use crate::{feedback, level, lock};

/// What the relay receives from one participant (for keyframe requests towards it).
#[derive(Default)]
pub(crate) struct Inbound {
    video: Mutex<Option<Arc<dyn TrackRemote>>>,
    last_keyframe_request: Mutex<Option<Instant>>,
    /// Highest sequence number received, audio and video (RFC 3550 wrap-around order).
    highest_seq: Mutex<[Option<u16>; 2]>,
    /// The id the audio-level extension was negotiated with on this connection, if it was.
    level_id: Mutex<Option<u8>>,
}

impl Inbound {
    /// Notes the audio-level extension id negotiated with this participant
    /// ([`level::extmap_id`] of the relay's offer).
    pub(crate) fn set_level_id(&self, id: Option<u8>) {
        *lock(&self.level_id) = id;
    }

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

/// Forwards what participant `me` in `room` sends on `track`, until the track ends or the
/// relay closes.
pub(crate) async fn receive(
    shared: Arc<Shared>,
    room: String,
    me: String,
    inbound: Arc<Inbound>,
    track: Arc<dyn TrackRemote>,
) {
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
        forward(&shared, &room, &me, &inbound, kind, packet).await;
    }
}

/// Notes an audio packet's level in the speaker ranking, applies the ranking, and sends the
/// packet to every other member's slot that carries its sender.
async fn forward(
    shared: &Shared,
    room: &str,
    from: &str,
    inbound: &Inbound,
    kind: Kind,
    packet: rtc::rtp::Packet,
) {
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
    let now = Instant::now();
    let info = PacketInfo::of(kind, &packet.header, &packet.payload);
    let heard = match kind {
        Kind::Audio => lock(&inbound.level_id).and_then(|id| level::level(&packet.header, id)),
        Kind::Video => None,
    };
    let (targets, keyframes) = {
        let mut rooms = lock(&shared.rooms);
        let Some(r) = rooms.get_mut(room) else { return };
        let mut keyframes = Vec::new();
        if kind == Kind::Audio {
            if let Some(l) = heard {
                r.speakers.handle(from, l, now);
                shared.stats.audio_levels_in.fetch_add(1, Ordering::Relaxed);
            }
            // the ranking is applied at most every RANK_INTERVAL, not per packet: its cost
            // grows with the room, and every room's forwarding waits for this lock
            let due = r
                .ranked_at
                .is_none_or(|t| now.saturating_duration_since(t) >= RANK_INTERVAL);
            if due {
                keyframes = r.reassign(now, false);
            }
        }
        let targets: Vec<(Arc<TrackLocalStaticRTP>, u32, u16, u32)> = r
            .members
            .iter_mut()
            .filter(|(name, _)| name.as_str() != from)
            .filter_map(|(_, m)| {
                let slots = match kind {
                    Kind::Audio => &mut m.audio,
                    Kind::Video => &mut m.video,
                };
                // one slot at most per receiver: a holder leaving one slot may be taking over
                // another, and a receiver must not get the same frame twice
                slots
                    .iter_mut()
                    .filter(|s| s.feed.carries(from))
                    .find_map(|s| {
                        let (seq, ts) = s.feed.admit(from, &info, now)?;
                        Some((s.track.clone(), s.ssrc, seq, ts))
                    })
            })
            .collect();
        (targets, keyframes)
    };
    for sender in keyframes {
        ask_keyframe(shared, &sender, true).await;
    }
    for (track, ssrc, seq, ts) in targets {
        let mut p = packet.clone();
        p.header.ssrc = ssrc;
        p.header.sequence_number = seq;
        p.header.timestamp = ts;
        // header extensions were negotiated per connection; drop them rather than mis-map ids
        p.header.extension = false;
        p.header.extensions.clear();
        if track.write_rtp(p).await.is_ok() {
            shared.stats.packets_out.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Reads receivers' RTCP on one video slot's track and asks the slot's sender for keyframes.
pub(crate) async fn slot_feedback(
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

/// Sends a PLI to whoever `receiver`'s video slot `slot` carries.
async fn request_keyframe(shared: &Shared, room: &str, receiver: &str, slot: usize) {
    let inbound = {
        let rooms = lock(&shared.rooms);
        let Some(r) = rooms.get(room) else { return };
        let Some(holder) = r
            .members
            .get(receiver)
            .and_then(|m| m.video.get(slot))
            .and_then(|s| s.feed.assigned().map(str::to_string))
        else {
            return;
        };
        let Some(sender) = r.members.get(&holder) else {
            return;
        };
        sender.inbound.clone()
    };
    ask_keyframe(shared, &inbound, false).await;
}

/// Sends a PLI to the sender of `inbound`, at most once per `KEYFRAME_REQUEST_INTERVAL` per
/// sender for receivers' requests; the relay's own (`switch`: a video slot given to the sender,
/// at most one per `MIN_SPEAKER_HOLD` and slot) always go out, since the slot waits for the key
/// frame.
pub(crate) async fn ask_keyframe(shared: &Shared, inbound: &Inbound, switch: bool) {
    {
        let mut last = lock(&inbound.last_keyframe_request);
        let now = Instant::now();
        if !switch && last.is_some_and(|t| now.duration_since(t) < KEYFRAME_REQUEST_INTERVAL) {
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
