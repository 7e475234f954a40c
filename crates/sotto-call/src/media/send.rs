//! The send path: one loop per stream (take the next frame, encrypt it under the current
//! sender key, hand it to the packetizer; key frames after a key change, a mute or a request),
//! and the keyframe requests about our video.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc::media::Sample;
use rtc::rtp::extension::audio_level_extension::AudioLevelExtension;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::Track;
use webrtc::rtp_transceiver::RtpSender;

use super::consts::*;
use super::error::wr;
use super::shared::{lock, Shared};
use super::{
    source, IvfSource, MediaError, MediaEvent, MediaKind, MediaPeer, OggOpusSource, TapFrame,
};

impl MediaPeer {
    /// Starts streaming the sources (call once the connection is up).
    pub async fn start_sending(&self) -> Result<(), MediaError> {
        let vpt = payload_type(&self.video_sender).await?;
        let apt = payload_type(&self.audio_sender).await?;
        let vssrc = *self
            .video_track
            .ssrcs()
            .await
            .first()
            .ok_or_else(|| MediaError::Webrtc("video track has no SSRC".into()))?;
        let assrc = *self
            .audio_track
            .ssrcs()
            .await
            .first()
            .ok_or_else(|| MediaError::Webrtc("audio track has no SSRC".into()))?;
        let v = tokio::spawn(send_loop(
            self.shared.clone(),
            self.video_track.clone(),
            vssrc,
            vpt,
            MediaKind::Video,
        ));
        let a = tokio::spawn(send_loop(
            self.shared.clone(),
            self.audio_track.clone(),
            assrc,
            apt,
            MediaKind::Audio,
        ));
        let f = tokio::spawn(send_feedback(self.shared.clone(), self.video_track.clone()));
        lock(&self.tasks).extend([v, a, f]);
        Ok(())
    }
}

async fn payload_type(sender: &Arc<dyn RtpSender>) -> Result<u8, MediaError> {
    sender
        .get_parameters()
        .await
        .map_err(wr)?
        .rtp_parameters
        .codecs
        .first()
        .map(|c| c.payload_type)
        .ok_or_else(|| MediaError::Webrtc("sender has no negotiated codec".into()))
}

/// Keyframe requests (PLI/FIR) about our video, from the relay or the peer: the next video frame
/// is a key frame (see [`IvfSource::request_key_frame`]).
async fn send_feedback(shared: Arc<Shared>, track: Arc<TrackLocalStaticSample>) {
    loop {
        if shared.closed.load(Ordering::Relaxed) {
            return;
        }
        match track.poll().await {
            Some(webrtc::media_stream::track_local::TrackLocalEvent::OnRtcpPacket(packets)) => {
                if packets
                    .iter()
                    .any(|p| sotto_relay::feedback::is_keyframe_request(p.as_ref()))
                {
                    shared.counters[MediaKind::Video.idx()]
                        .keyframe_requests_received
                        .fetch_add(1, Ordering::Relaxed);
                    if let Some(src) = lock(&shared.video_src).as_mut() {
                        src.request_key_frame();
                    }
                }
            }
            Some(_) => {}
            // not bound yet (or no longer)
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn send_loop(
    shared: Arc<Shared>,
    track: Arc<TrackLocalStaticSample>,
    ssrc: u32,
    pt: u8,
    kind: MediaKind,
) {
    let interval = match kind {
        MediaKind::Video => lock(&shared.video_src)
            .as_ref()
            .map(IvfSource::frame_interval)
            .unwrap_or(Duration::from_millis(66)),
        MediaKind::Audio => AUDIO_FRAME_INTERVAL,
    };
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // the key our last video frame went under: the first video frame under any other key (a
    // ratchet step on a join, a new generation on a leave) is a key frame
    let mut last_video_key: Option<sotto_frame::KeyId> = None;
    // after a mute the receivers' pictures lack the frames skipped: resume with a key frame
    let mut was_muted = false;
    loop {
        ticker.tick().await;
        if shared.closed.load(Ordering::Relaxed) {
            return;
        }
        if shared.muted[kind.idx()].load(Ordering::Relaxed) {
            // the clip moves on while muted (as a camera would)
            was_muted = true;
            match kind {
                MediaKind::Video => {
                    if let Some(s) = lock(&shared.video_src).as_mut() {
                        s.next_frame();
                    }
                }
                MediaKind::Audio => {
                    if let Some(s) = lock(&shared.audio_src).as_mut() {
                        s.next_packet();
                    }
                }
            }
            continue;
        }
        // frame and encryption under one lock order (source, then key), so that a key change
        // between taking a frame and encrypting it cannot slip an inter frame in first
        let mut level = None;
        let (frame, wire, frames_left) = match kind {
            MediaKind::Video => {
                let mut src = lock(&shared.video_src);
                let Some(src) = src.as_mut() else { continue };
                let mut key = lock(&shared.sender_key);
                if was_muted || last_video_key.is_some_and(|k| k != key.id()) {
                    src.request_key_frame();
                }
                was_muted = false;
                last_video_key = Some(key.id());
                let frame = src.next_frame();
                let res = key.encrypt(kind.codec(), b"", &frame);
                (frame, res, key.frames_left())
            }
            MediaKind::Audio => {
                let Some((frame, l)) = lock(&shared.audio_src)
                    .as_mut()
                    .map(OggOpusSource::next_packet_with_level)
                else {
                    continue;
                };
                level = l;
                let mut key = lock(&shared.sender_key);
                let res = key.encrypt(kind.codec(), b"", &frame);
                (frame, res, key.frames_left())
            }
        };
        if frames_left <= ROTATION_MARGIN
            && !shared.rotation_requested.swap(true, Ordering::Relaxed)
        {
            shared.emit(MediaEvent::RotationNeeded { frames_left });
        }
        let wire = match wire {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!("sframe encrypt: {e}");
                continue;
            }
        };
        let c = &shared.counters[kind.idx()];
        c.frames_sent.fetch_add(1, Ordering::Relaxed);
        if kind == MediaKind::Video && source::is_vp8_key_frame(&frame) {
            c.key_frames_sent.fetch_add(1, Ordering::Relaxed);
        }
        c.bytes_sent.fetch_add(wire.len() as u64, Ordering::Relaxed);
        if let Some(tap) = &shared.tap {
            let _ = tap.send(TapFrame {
                sent: true,
                kind,
                frame: frame.clone(),
                wire: wire.clone(),
            });
        }
        let sample = Sample {
            data: Bytes::from(wire),
            duration: interval,
            ..Sample::new(Instant::now())
        };
        let mut writer = track.sample_writer(ssrc, pt);
        if let Some(level) = level {
            // RFC 6464: the level of the PCM this packet was encoded from; the voice bit is any
            // sound above silence (sotto runs no voice-activity detector)
            writer = writer.with_audio_level(AudioLevelExtension {
                level,
                voice: level < super::level::SILENCE,
            });
        }
        if let Err(e) = writer.write_sample(&sample).await {
            tracing::debug!("write_sample: {e}");
        }
    }
}
