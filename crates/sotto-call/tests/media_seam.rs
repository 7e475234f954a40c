#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The media seam: the call core and its driver run a whole call over a media backend that is
//! not webrtc-rs (here a scripted in-memory one, as the browser page will be). Real signaling
//! server and ratchet sessions; the backend only records what it is told. Proves the driver
//! depends on `MediaBackend` alone, that the SDP a backend produced is what the other backend is
//! given, and that keys (first key, peer key, rotation) arrive only as data-plane instructions.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sotto_call::core::CallState;
use sotto_call::engine::{default_machine, Command, Engine};
use sotto_call::media::{
    IvfSource, MediaBackend, MediaError, MediaEvent, MediaMaker, MediaMaking, MediaStats,
};
use sotto_frame::KeyMaterial;
use sotto_testkit::device::device;
use sotto_testkit::server::server;
use tokio::sync::mpsc;

/// What one scripted backend was told.
#[derive(Default)]
struct Seen {
    sdp_out: Vec<String>,
    sdp_in: Vec<String>,
    send_keys: Vec<KeyMaterial>,
    installed: Vec<KeyMaterial>,
    sending: bool,
    closed: bool,
}

struct Scripted {
    name: &'static str,
    seen: Arc<Mutex<Seen>>,
    events: mpsc::UnboundedSender<MediaEvent>,
}

#[async_trait::async_trait]
impl MediaBackend for Scripted {
    async fn create_offer(&self) -> Result<String, MediaError> {
        let sdp = format!("v=0 offer from {}", self.name);
        self.seen.lock().unwrap().sdp_out.push(sdp.clone());
        Ok(sdp)
    }
    async fn accept_offer(&self, sdp: &str) -> Result<String, MediaError> {
        let answer = format!("v=0 answer from {}", self.name);
        let mut s = self.seen.lock().unwrap();
        s.sdp_in.push(sdp.to_owned());
        s.sdp_out.push(answer.clone());
        let _ = self.events.send(MediaEvent::State("connected".into()));
        Ok(answer)
    }
    async fn answer_relay_offer(&self, _sdp: &str) -> Result<String, MediaError> {
        Err(MediaError::Webrtc("no relay here".into()))
    }
    async fn apply_answer(&self, sdp: &str) -> Result<(), MediaError> {
        self.seen.lock().unwrap().sdp_in.push(sdp.to_owned());
        let _ = self.events.send(MediaEvent::State("connected".into()));
        Ok(())
    }
    async fn add_remote_candidate(&self, _json: &str) -> Result<(), MediaError> {
        Ok(())
    }
    fn use_send_key(&self, m: &KeyMaterial) -> Result<(), MediaError> {
        self.seen.lock().unwrap().send_keys.push(m.clone());
        Ok(())
    }
    fn install_remote_key(&self, m: &KeyMaterial) -> Result<(), MediaError> {
        self.seen.lock().unwrap().installed.push(m.clone());
        Ok(())
    }
    fn forget_sender(&self, _sender: u64) {}
    fn set_muted(&self, _audio: bool, _video: bool) {}
    async fn start_sending(&self) -> Result<(), MediaError> {
        self.seen.lock().unwrap().sending = true;
        Ok(())
    }
    fn switch_video_source(&self, _src: IvfSource) {}
    fn video_source_name(&self) -> Option<String> {
        None
    }
    fn relay_only(&self) -> bool {
        false
    }
    async fn stats(&self) -> MediaStats {
        MediaStats::default()
    }
    async fn close(&self) {
        self.seen.lock().unwrap().closed = true;
    }
}

struct Maker {
    name: &'static str,
    seen: Arc<Mutex<Seen>>,
}

impl MediaMaker for Maker {
    fn make(&self, _sender_id: u64) -> MediaMaking {
        let (tx, rx) = mpsc::unbounded_channel();
        let backend = Scripted {
            name: self.name,
            seen: self.seen.clone(),
            events: tx,
        };
        Box::pin(async move { Ok((Arc::new(backend) as Arc<dyn MediaBackend>, rx)) })
    }
}

const T: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_call_runs_over_a_backend_that_is_not_webrtc() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server(dir.path()).await;
    let (a_seen, b_seen) = (Arc::default(), Arc::default());
    let spawn = |name: &'static str, seen: &Arc<Mutex<Seen>>| {
        let seen = seen.clone();
        let url = srv.url();
        async move {
            let (dev, events) = device(&url, name).await;
            let maker = Box::new(Maker { name, seen });
            Engine::spawn_with_media(dev, events, maker, default_machine, None)
        }
    };
    let alice = spawn("alice", &a_seen).await;
    let bob = spawn("bob", &b_seen).await;

    alice.command(Command::Dial("bob".into())).await;
    bob.wait_state(CallState::Incoming, T).await.expect("rings");
    bob.command(Command::Answer).await;
    alice.wait_state(CallState::Connected, T).await.expect("a");
    bob.wait_state(CallState::Connected, T).await.expect("b");
    {
        let (a, b) = (a_seen.lock().unwrap(), b_seen.lock().unwrap());
        // each side's description reached the other unchanged (through the ratchet)
        assert_eq!(b.sdp_in, a.sdp_out);
        assert_eq!(a.sdp_in, b.sdp_out);
        // the key each encrypts under is the key the other installed
        assert_eq!(a.installed.last(), b.send_keys.last());
        assert_eq!(b.installed.last(), a.send_keys.last());
        assert!(a.sending && b.sending);
    }

    // a rotation asked for: bob gets the next generation first, alice switches after the delay
    alice.command(Command::RotateKey).await;
    tokio::time::sleep(sotto_call::consts::KEY_ACTIVATION_DELAY + Duration::from_millis(500)).await;
    {
        let (a, b) = (a_seen.lock().unwrap(), b_seen.lock().unwrap());
        let now_used = a.send_keys.last().unwrap();
        assert_eq!(now_used.id.generation, 1);
        assert!(b.installed.contains(now_used), "bob holds alice's new key");
    }

    alice.command(Command::Hangup).await;
    bob.wait_state(CallState::Ended, T).await.expect("ended");
    alice.wait_state(CallState::Ended, T).await.expect("ended");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(a_seen.lock().unwrap().closed && b_seen.lock().unwrap().closed);
}
