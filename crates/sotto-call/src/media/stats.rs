//! What a peer reports about itself: per-stream [`StreamStats`] (kept as atomic counters while
//! the call runs) and the [`MediaStats`] snapshot with the selected ICE pair.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use webrtc::peer_connection::{RTCStatsReportEntry, StatsSelector};

use super::shared::lock;
use super::{CandidateType, MediaPeer};

/// Per-stream counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// Frames encrypted and handed to the packetizer.
    pub frames_sent: u64,
    /// SFrame bytes sent.
    pub bytes_sent: u64,
    /// RTP packets received.
    pub packets_received: u64,
    /// Frames reassembled from RTP.
    pub frames_received: u64,
    /// Frames that decrypted.
    pub frames_decrypted: u64,
    /// Frames that did not (authentication, replay, or no key within [`KEY_WAIT`]).
    ///
    /// [`KEY_WAIT`]: super::consts::KEY_WAIT
    pub frames_failed: u64,
    /// SFrame bytes received.
    pub bytes_received: u64,
    /// Video: key frames sent (the clip's own, or intra twins sent on request or key change).
    pub key_frames_sent: u64,
    /// Video: keyframe requests (PLI/FIR) received from the relay or the peer.
    pub keyframe_requests_received: u64,
    /// Video: keyframe requests (PLI) we sent because a sender's picture could not be decoded.
    pub keyframe_requests_sent: u64,
    /// Frames that arrived before their key, waited (at most [`KEY_WAIT`]) and then decrypted
    /// (included in `frames_decrypted`).
    ///
    /// [`KEY_WAIT`]: super::consts::KEY_WAIT
    pub frames_waited_for_key: u64,
    /// Frames under a key older than every key we hold for their sender: sent before that
    /// sender gave us access (a joiner's first frames, by design), or after that key's grace
    /// period. Not in `frames_failed`.
    pub frames_before_key: u64,
}

/// What a user wants to see about the media path.
#[derive(Debug, Clone, Default)]
pub struct MediaStats {
    /// Peer connection state.
    pub state: String,
    /// Local side of the selected candidate pair.
    pub pair_type: Option<CandidateType>,
    /// Remote side of the selected pair. webrtc-rs 0.21 only reports remote candidates that
    /// were trickled in ([`MediaPeer::add_remote_candidate`]); with non-trickle setup this is
    /// `None`.
    pub remote_pair_type: Option<CandidateType>,
    /// Every candidate the peer gave us (trickled in), as we see it: what the peer revealed.
    pub remote_candidates: Vec<SeenCandidate>,
    /// Round-trip time of the selected pair.
    pub rtt: Option<Duration>,
    /// Send bitrate over the whole call so far, bits/s.
    pub send_bitrate: u64,
    /// Receive bitrate over the whole call so far, bits/s.
    pub recv_bitrate: u64,
    /// Audio counters.
    pub audio: StreamStats,
    /// Video counters.
    pub video: StreamStats,
    /// Our current SFrame key generation.
    pub local_generation: u64,
    /// The peer's newest key generation we hold.
    pub remote_generation: Option<u64>,
    /// Outgoing RTP packets dropped by the test loss knob.
    pub rtp_dropped_by_loss_knob: u64,
    /// Outgoing RTP packets that passed the loss knob (all of them when it is off).
    pub rtp_sent: u64,
}

/// A remote candidate as the peer sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenCandidate {
    /// Its type.
    pub typ: CandidateType,
    /// Its address (empty if webrtc-rs reports none).
    pub address: String,
    /// Its port.
    pub port: u16,
    /// The related address (`raddr`): for server-reflexive and relay candidates the address
    /// they were derived from; empty or unspecified when not given.
    pub related_address: String,
}

#[derive(Default)]
pub(super) struct Counters {
    pub(super) frames_sent: AtomicU64,
    pub(super) bytes_sent: AtomicU64,
    pub(super) packets_received: AtomicU64,
    pub(super) frames_received: AtomicU64,
    pub(super) frames_decrypted: AtomicU64,
    pub(super) frames_failed: AtomicU64,
    pub(super) bytes_received: AtomicU64,
    pub(super) key_frames_sent: AtomicU64,
    pub(super) keyframe_requests_received: AtomicU64,
    pub(super) keyframe_requests_sent: AtomicU64,
    pub(super) frames_waited_for_key: AtomicU64,
    pub(super) frames_before_key: AtomicU64,
    pub(super) failing: AtomicBool,
}

impl Counters {
    fn snapshot(&self) -> StreamStats {
        StreamStats {
            frames_sent: self.frames_sent.load(Ordering::Relaxed),
            bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
            packets_received: self.packets_received.load(Ordering::Relaxed),
            frames_received: self.frames_received.load(Ordering::Relaxed),
            frames_decrypted: self.frames_decrypted.load(Ordering::Relaxed),
            frames_failed: self.frames_failed.load(Ordering::Relaxed),
            bytes_received: self.bytes_received.load(Ordering::Relaxed),
            key_frames_sent: self.key_frames_sent.load(Ordering::Relaxed),
            keyframe_requests_received: self.keyframe_requests_received.load(Ordering::Relaxed),
            keyframe_requests_sent: self.keyframe_requests_sent.load(Ordering::Relaxed),
            frames_waited_for_key: self.frames_waited_for_key.load(Ordering::Relaxed),
            frames_before_key: self.frames_before_key.load(Ordering::Relaxed),
        }
    }
}

impl MediaPeer {
    /// What the call looks like now.
    pub async fn stats(&self) -> MediaStats {
        let report = self.pc.get_stats(Instant::now(), StatsSelector::None).await;
        let mut pair_type = None;
        let mut remote_pair_type = None;
        let mut rtt = None;
        let selected = report
            .transport()
            .map(|t| t.selected_candidate_pair_id.clone());
        let pair = report.iter().find_map(|e| match e {
            RTCStatsReportEntry::IceCandidatePair(p)
                if selected.as_deref() == Some(p.stats.id.as_str())
                    || (selected.as_deref().unwrap_or("").is_empty() && p.nominated) =>
            {
                Some(p)
            }
            _ => None,
        });
        if let Some(p) = pair {
            if p.current_round_trip_time > 0.0 {
                rtt = Some(Duration::from_secs_f64(p.current_round_trip_time));
            }
            for e in report.iter() {
                match e {
                    // stats ids are "RTCLocalIceCandidate_<candidate id>"
                    RTCStatsReportEntry::LocalCandidate(c)
                        if c.stats.id.ends_with(p.local_candidate_id.as_str()) =>
                    {
                        pair_type = CandidateType::from_webrtc(c.candidate_type);
                    }
                    RTCStatsReportEntry::RemoteCandidate(c)
                        if c.stats.id.ends_with(p.remote_candidate_id.as_str()) =>
                    {
                        remote_pair_type = CandidateType::from_webrtc(c.candidate_type);
                    }
                    _ => {}
                }
            }
        }
        let remote_candidates = report
            .iter()
            .filter_map(|e| match e {
                RTCStatsReportEntry::RemoteCandidate(c) => Some(SeenCandidate {
                    typ: CandidateType::from_webrtc(c.candidate_type)?,
                    address: c.address.clone().unwrap_or_default(),
                    port: c.port,
                    related_address: c.related_address.clone(),
                }),
                _ => None,
            })
            .collect();
        let audio = self.shared.counters[0].snapshot();
        let video = self.shared.counters[1].snapshot();
        let secs = self.shared.started.elapsed().as_secs_f64().max(0.001);
        MediaStats {
            state: lock(&self.shared.state).clone(),
            pair_type,
            remote_pair_type,
            remote_candidates,
            rtt,
            send_bitrate: ((audio.bytes_sent + video.bytes_sent) as f64 * 8.0 / secs) as u64,
            recv_bitrate: ((audio.bytes_received + video.bytes_received) as f64 * 8.0 / secs)
                as u64,
            audio,
            video,
            local_generation: lock(&self.shared.sender_key).id().generation,
            remote_generation: *lock(&self.shared.remote_generation),
            rtp_dropped_by_loss_knob: self.shared.loss.dropped.load(Ordering::Relaxed),
            rtp_sent: self.shared.loss.passed.load(Ordering::Relaxed),
        }
    }
}
