//! Connection setup: offer and answer (non-trickle: once ICE gathering completed; trickle: at
//! once), remote ICE candidates (kept until the remote description arrives), the SDP size
//! limit, and waiting for the connection.

use std::sync::atomic::Ordering;
use std::time::Duration;

use rtc::peer_connection::sdp::RTCSessionDescription;
use webrtc::peer_connection::RTCIceCandidateInit;

use super::consts::*;
use super::error::wr;
use super::ice::hide_related_addresses_in_sdp;
use super::shared::lock;
use super::{MediaError, MediaPeer};

impl MediaPeer {
    async fn gathered_sdp(&self) -> Result<String, MediaError> {
        self.gathered_sdp_within(GATHER_TIMEOUT, false).await
    }

    /// The local SDP once gathering completed, within `limit`. With `partial_ok`, after
    /// `limit` the candidates gathered so far do (if there is one, and a relay one in
    /// relay-only mode) rather than an error.
    async fn gathered_sdp_within(
        &self,
        limit: std::time::Duration,
        partial_ok: bool,
    ) -> Result<String, MediaError> {
        let wait = async {
            loop {
                let notified = self.shared.gathered.notified();
                if self.shared.gathering_done.load(Ordering::SeqCst) {
                    return;
                }
                notified.await;
            }
        };
        if tokio::time::timeout(limit, wait).await.is_err() {
            let partial = self.pc.local_description().await.map(|d| d.sdp);
            let usable = partial.as_deref().is_some_and(|s| {
                s.contains(" typ ") && (!self.relay_only || s.contains(" typ relay"))
            });
            if partial_ok && usable {
                if let Some(sdp) = partial {
                    return Ok(self.private(sdp));
                }
            }
            // Relay-only gathering that never finishes is a TURN server that does not answer:
            // say so, rather than a generic timeout.
            if self.relay_only && !partial.is_some_and(|s| s.contains(" typ relay")) {
                return Err(MediaError::NoRelayCandidate);
            }
            return Err(MediaError::GatherTimeout(limit));
        }
        let sdp = self
            .pc
            .local_description()
            .await
            .ok_or_else(|| MediaError::Webrtc("no local description".into()))?
            .sdp;
        if self.relay_only && !sdp.contains(" typ relay") {
            return Err(MediaError::NoRelayCandidate);
        }
        Ok(self.private(sdp))
    }

    fn check_sdp(sdp: &str) -> Result<(), MediaError> {
        if sdp.len() > MAX_SDP_LEN {
            return Err(MediaError::SdpTooLarge {
                len: sdp.len(),
                limit: MAX_SDP_LEN,
            });
        }
        Ok(())
    }

    /// Creates the offer and returns its SDP once ICE gathering completed.
    pub async fn create_offer(&self) -> Result<String, MediaError> {
        let offer = self.pc.create_offer(None).await.map_err(wr)?;
        self.pc.set_local_description(offer).await.map_err(wr)?;
        self.gathered_sdp().await
    }

    /// Applies the remote offer; returns the answer SDP once ICE gathering completed.
    pub async fn accept_offer(&self, sdp: &str) -> Result<String, MediaError> {
        self.accept_offer_trickle(sdp).await?;
        self.gathered_sdp().await
    }

    /// Applies a sotto-relay's offer (the relay does not trickle); returns the answer once ICE
    /// gathering completed, or after [`RELAY_GATHER_WAIT`] with the candidates gathered by then:
    /// the relay is a public host that our host candidates reach, and a STUN or TURN server that
    /// does not answer must not hold the join up until [`GATHER_TIMEOUT`].
    pub async fn accept_relay_offer(&self, sdp: &str) -> Result<String, MediaError> {
        self.accept_offer_trickle(sdp).await?;
        self.gathered_sdp_within(RELAY_GATHER_WAIT, true).await
    }

    /// Trickle ICE: creates the offer and returns its SDP at once, before gathering; local
    /// candidates then come out as [`MediaEvent::LocalCandidate`]. With `relay_only`, a missing
    /// relay candidate shows as a failed connection rather than [`MediaError::NoRelayCandidate`].
    ///
    /// [`MediaEvent::LocalCandidate`]: super::MediaEvent::LocalCandidate
    pub async fn create_offer_trickle(&self) -> Result<String, MediaError> {
        let offer = self.pc.create_offer(None).await.map_err(wr)?;
        self.pc.set_local_description(offer).await.map_err(wr)?;
        self.current_local_sdp().await
    }

    /// Trickle ICE: applies the remote offer and returns the answer SDP at once.
    pub async fn accept_offer_trickle(&self, sdp: &str) -> Result<String, MediaError> {
        Self::check_sdp(sdp)?;
        let offer = RTCSessionDescription::offer(sdp.to_owned()).map_err(wr)?;
        self.pc.set_remote_description(offer).await.map_err(wr)?;
        self.apply_early_candidates().await?;
        let answer = self.pc.create_answer(None).await.map_err(wr)?;
        self.pc.set_local_description(answer).await.map_err(wr)?;
        self.current_local_sdp().await
    }

    async fn current_local_sdp(&self) -> Result<String, MediaError> {
        Ok(self.private(
            self.pc
                .local_description()
                .await
                .ok_or_else(|| MediaError::Webrtc("no local description".into()))?
                .sdp,
        ))
    }

    /// An SDP we send: in relay-only (privacy) mode without the host addresses our relay
    /// candidates were derived from.
    fn private(&self, sdp: String) -> String {
        if self.relay_only {
            hide_related_addresses_in_sdp(&sdp)
        } else {
            sdp
        }
    }

    async fn apply_early_candidates(&self) -> Result<(), MediaError> {
        let early = self
            .early_candidates
            .lock()
            .await
            .take()
            .unwrap_or_default();
        for c in early {
            self.pc.add_ice_candidate(c).await.map_err(wr)?;
        }
        Ok(())
    }

    /// Trickle ICE: adds one remote candidate (the JSON of the peer's
    /// [`MediaEvent::LocalCandidate`]). Candidates that arrive before the remote description are
    /// kept (at most [`MAX_EARLY_CANDIDATES`]) and applied with it. Garbage is refused, never
    /// panics.
    ///
    /// [`MediaEvent::LocalCandidate`]: super::MediaEvent::LocalCandidate
    pub async fn add_remote_candidate(&self, json: &str) -> Result<(), MediaError> {
        if json.len() > MAX_CANDIDATE_LEN {
            return Err(MediaError::BadCandidate(format!(
                "{} bytes exceeds MAX_CANDIDATE_LEN ({MAX_CANDIDATE_LEN})",
                json.len()
            )));
        }
        let init: RTCIceCandidateInit =
            serde_json::from_str(json).map_err(|e| MediaError::BadCandidate(e.to_string()))?;
        let mut early = self.early_candidates.lock().await;
        if let Some(list) = early.as_mut() {
            if list.len() >= MAX_EARLY_CANDIDATES {
                return Err(MediaError::BadCandidate(format!(
                    "more than MAX_EARLY_CANDIDATES ({MAX_EARLY_CANDIDATES}) before the remote description"
                )));
            }
            list.push(init);
            return Ok(());
        }
        drop(early);
        self.pc
            .add_ice_candidate(init)
            .await
            .map_err(|e| MediaError::BadCandidate(e.to_string()))
    }

    /// Applies the remote answer.
    pub async fn accept_answer(&self, sdp: &str) -> Result<(), MediaError> {
        Self::check_sdp(sdp)?;
        let answer = RTCSessionDescription::answer(sdp.to_owned()).map_err(wr)?;
        self.pc.set_remote_description(answer).await.map_err(wr)?;
        self.apply_early_candidates().await
    }

    /// Waits until the connection is up, or `limit` passes.
    pub async fn wait_connected(&self, limit: Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.shared.connected.notified();
                if lock(&self.shared.state).as_str() == "connected" {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(limit, wait).await.is_ok()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::media::MediaConfig;

    /// `sdp` padded with unknown attribute lines to exactly `len` bytes.
    fn pad_to(sdp: &str, len: usize) -> String {
        let mut s = sdp.to_owned();
        assert!(s.ends_with("\r\n") && s.len() + 20 < len);
        while len - s.len() > 1_010 {
            s.push_str(&format!("a=x-pad:{}\r\n", "p".repeat(1_000)));
        }
        let n = len - s.len() - "a=x-pad:\r\n".len();
        s.push_str(&format!("a=x-pad:{}\r\n", "p".repeat(n)));
        assert_eq!(s.len(), len);
        s
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sdp_limit_is_inclusive() {
        let (a, _ea) = MediaPeer::new(MediaConfig::loopback(1).unwrap())
            .await
            .unwrap();
        let offer = a.create_offer().await.unwrap();

        // exactly MAX_SDP_LEN: a real offer, padded, is accepted and answered
        let (b, _eb) = MediaPeer::new(MediaConfig::loopback(2).unwrap())
            .await
            .unwrap();
        let answer = b
            .accept_offer(&pad_to(&offer, MAX_SDP_LEN))
            .await
            .expect("an offer of exactly MAX_SDP_LEN bytes must be accepted");
        a.accept_answer(&pad_to(&answer, MAX_SDP_LEN))
            .await
            .unwrap();

        // one byte more is refused before webrtc-rs sees it
        let (c, _ec) = MediaPeer::new(MediaConfig::loopback(3).unwrap())
            .await
            .unwrap();
        let err = c.accept_offer(&pad_to(&offer, MAX_SDP_LEN + 1)).await;
        assert!(
            matches!(err, Err(MediaError::SdpTooLarge { len, limit }) if len == MAX_SDP_LEN + 1 && limit == MAX_SDP_LEN),
            "{err:?}"
        );
        let err = c.accept_answer(&pad_to(&answer, MAX_SDP_LEN + 1)).await;
        assert!(
            matches!(err, Err(MediaError::SdpTooLarge { .. })),
            "{err:?}"
        );
        for p in [a, b, c] {
            p.close().await.unwrap();
        }
    }
}
