//! The browser page as the call's media engine: [`PageMedia`] is a [`MediaMaker`] whose
//! [`MediaBackend`] forwards every operation to the page over its WebSocket ([`PageLink`]) and
//! turns the page's reports into [`MediaEvent`]s. The call core and its driver do not know the
//! difference: keys are decided there and only carried here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use sotto_call::media::{
    IvfSource, MediaBackend, MediaError, MediaEvent, MediaEvents, MediaKind, MediaMaker,
    MediaMaking, MediaStats, StreamStats,
};
use sotto_frame::{CipherSuite, KeyMaterial};
use tokio::sync::{mpsc, oneshot};
use zeroize::Zeroizing;

use crate::consts::PAGE_REQUEST_TIMEOUT;
use crate::protocol::{
    KeyOp, MediaRequest, MediaResult, PageIceServer, PageMediaEvent, PageStats, ToPage,
};

/// A serialized message for the page; zeroized when dropped (it may hold key material).
pub type Outgoing = Zeroizing<String>;

/// Gives each call's ICE servers (asked at every call: TURN credentials expire).
pub type IceProvider = Arc<
    dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Vec<PageIceServer>> + Send>>
        + Send
        + Sync,
>;

#[derive(Default)]
struct LinkState {
    /// The connected page's outgoing queue (none while no page is connected).
    page: Option<mpsc::UnboundedSender<Outgoing>>,
    /// Media requests waiting for the page's reply.
    pending: HashMap<u64, oneshot::Sender<MediaResult>>,
    /// The current call's media events.
    events: Option<mpsc::UnboundedSender<MediaEvent>>,
}

/// The device's side of the page connection, shared by the web server (which attaches and
/// detaches pages) and the media backend (which sends requests and keys).
#[derive(Clone, Default)]
pub struct PageLink {
    state: Arc<Mutex<LinkState>>,
    next_id: Arc<AtomicU64>,
}

fn lock(m: &Mutex<LinkState>) -> MutexGuard<'_, LinkState> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl PageLink {
    /// A new page connected (it showed the token): messages go to it from now on. A page that
    /// was connected before is replaced; its pending requests fail.
    pub fn attach(&self, page: mpsc::UnboundedSender<Outgoing>) {
        let mut s = lock(&self.state);
        s.page = Some(page);
        s.pending.clear();
    }

    /// The page `page` went away (if it is still the current one): pending requests fail at
    /// once and the call's media reports `failed`.
    pub fn detach(&self, page: &mpsc::UnboundedSender<Outgoing>) {
        let mut s = lock(&self.state);
        if s.page.as_ref().is_some_and(|p| p.same_channel(page)) {
            s.page = None;
            s.pending.clear();
            if let Some(ev) = &s.events {
                let _ = ev.send(MediaEvent::State("failed".into()));
            }
        }
    }

    /// Whether a page is connected.
    pub fn connected(&self) -> bool {
        lock(&self.state).page.is_some()
    }

    /// Sends a message to the page; false when none is connected.
    pub fn send(&self, msg: &ToPage) -> bool {
        let Ok(text) = serde_json::to_string(msg) else {
            return false;
        };
        let text = Zeroizing::new(text);
        match &lock(&self.state).page {
            Some(p) => p.send(text).is_ok(),
            None => false,
        }
    }

    /// The page answered request `id`.
    pub fn reply(&self, id: u64, result: MediaResult) {
        if let Some(tx) = lock(&self.state).pending.remove(&id) {
            let _ = tx.send(result);
        }
    }

    /// The page reported a media event.
    pub fn event(&self, event: PageMediaEvent) {
        let ev = match event {
            PageMediaEvent::State { state } => MediaEvent::State(state),
            PageMediaEvent::Candidate { candidate } => MediaEvent::LocalCandidate(candidate),
            PageMediaEvent::GatheringComplete => MediaEvent::GatheringComplete,
            PageMediaEvent::FirstFrame { media } => {
                let Some(k) = kind(&media) else { return };
                MediaEvent::FirstFrameDecrypted(k)
            }
            PageMediaEvent::DecryptFailing { media, code } => {
                let Some(k) = kind(&media) else { return };
                MediaEvent::DecryptFailing(k, code)
            }
        };
        if let Some(tx) = &lock(&self.state).events {
            let _ = tx.send(ev);
        }
    }

    /// Sends a request and waits for its reply (at most [`PAGE_REQUEST_TIMEOUT`]).
    async fn request(
        &self,
        op: &'static str,
        request: MediaRequest,
    ) -> Result<MediaResult, MediaError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut s = lock(&self.state);
            let Some(page) = &s.page else {
                return Err(MediaError::BackendGone);
            };
            let text = serde_json::to_string(&ToPage::Media { id, request }).map_err(|_| {
                MediaError::BackendRefused {
                    op,
                    reason: "encode".into(),
                }
            })?;
            if page.send(Zeroizing::new(text)).is_err() {
                return Err(MediaError::BackendGone);
            }
            s.pending.insert(id, tx);
        }
        let out = match tokio::time::timeout(PAGE_REQUEST_TIMEOUT, rx).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(_)) => Err(MediaError::BackendGone),
            Err(_) => Err(MediaError::BackendTimeout(PAGE_REQUEST_TIMEOUT)),
        };
        lock(&self.state).pending.remove(&id);
        match out? {
            MediaResult::Failed(reason) => Err(MediaError::BackendRefused { op, reason }),
            r => Ok(r),
        }
    }

    /// A request whose reply nobody waits for (mute flags).
    fn notify(&self, request: MediaRequest) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let _ = self.send(&ToPage::Media { id, request });
    }
}

fn kind(media: &str) -> Option<MediaKind> {
    match media {
        "audio" => Some(MediaKind::Audio),
        "video" => Some(MediaKind::Video),
        _ => None,
    }
}

fn material_b64(m: &KeyMaterial) -> String {
    base64::engine::general_purpose::STANDARD.encode(&*m.to_bytes())
}

/// Builds each call's media in the page.
pub struct PageMedia {
    link: PageLink,
    suite: CipherSuite,
    ice: IceProvider,
    relay_only: bool,
}

impl PageMedia {
    /// Media in the page behind `link`; `ice` gives the ICE servers for each call (fresh TURN
    /// credentials), `relay_only` forces relay candidates.
    pub fn new(link: PageLink, suite: CipherSuite, ice: IceProvider, relay_only: bool) -> Self {
        PageMedia {
            link,
            suite,
            ice,
            relay_only,
        }
    }
}

impl MediaMaker for PageMedia {
    fn make(&self, sender_id: u64) -> MediaMaking {
        let link = self.link.clone();
        let ice = (self.ice)();
        let (suite, relay_only) = (self.suite.id(), self.relay_only);
        Box::pin(async move {
            let request = MediaRequest::Create {
                sender_id,
                suite,
                ice_servers: ice.await,
                relay_only,
            };
            let (tx, rx) = mpsc::unbounded_channel();
            lock(&link.state).events = Some(tx);
            link.request("create", request).await?;
            let backend = PageBackend {
                link,
                relay_only,
                last_send_key: Mutex::new(None),
            };
            Ok((
                Arc::new(backend) as Arc<dyn MediaBackend>,
                rx as MediaEvents,
            ))
        })
    }
}

/// One call's media in the page.
struct PageBackend {
    link: PageLink,
    relay_only: bool,
    /// (generation, step) of the last send key handed over: keys never go back.
    last_send_key: Mutex<Option<(u64, u64)>>,
}

fn sdp(op: &'static str, r: MediaResult) -> Result<String, MediaError> {
    match r {
        MediaResult::Sdp(s) => Ok(s),
        _ => Err(MediaError::BackendRefused {
            op,
            reason: "no SDP in the reply".into(),
        }),
    }
}

#[async_trait]
impl MediaBackend for PageBackend {
    async fn create_offer(&self) -> Result<String, MediaError> {
        sdp(
            "create_offer",
            self.link
                .request("create_offer", MediaRequest::CreateOffer)
                .await?,
        )
    }
    async fn accept_offer(&self, s: &str) -> Result<String, MediaError> {
        let r = MediaRequest::AcceptOffer { sdp: s.to_owned() };
        sdp("accept_offer", self.link.request("accept_offer", r).await?)
    }
    async fn answer_relay_offer(&self, s: &str) -> Result<String, MediaError> {
        let r = MediaRequest::AnswerRelayOffer { sdp: s.to_owned() };
        sdp(
            "answer_relay_offer",
            self.link.request("answer_relay_offer", r).await?,
        )
    }
    async fn apply_answer(&self, s: &str) -> Result<(), MediaError> {
        let r = MediaRequest::ApplyAnswer { sdp: s.to_owned() };
        self.link.request("apply_answer", r).await.map(drop)
    }
    async fn add_remote_candidate(&self, json: &str) -> Result<(), MediaError> {
        let r = MediaRequest::AddCandidate {
            candidate: json.to_owned(),
        };
        self.link.request("add_candidate", r).await.map(drop)
    }
    fn use_send_key(&self, material: &KeyMaterial) -> Result<(), MediaError> {
        let id = (material.id.generation, material.id.step);
        let mut last = self
            .last_send_key
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.is_some_and(|l| id < l) {
            return Err(MediaError::Frame(sotto_frame::Error::InvalidKeyId(
                "send key does not move forward",
            )));
        }
        *last = Some(id);
        drop(last);
        let op = ToPage::Key(KeyOp::UseSendKey {
            material: material_b64(material),
        });
        if self.link.send(&op) {
            Ok(())
        } else {
            Err(MediaError::BackendGone)
        }
    }
    fn install_remote_key(&self, material: &KeyMaterial) -> Result<(), MediaError> {
        let op = ToPage::Key(KeyOp::Install {
            material: material_b64(material),
        });
        if self.link.send(&op) {
            Ok(())
        } else {
            Err(MediaError::BackendGone)
        }
    }
    fn forget_sender(&self, sender: u64) {
        let _ = self.link.send(&ToPage::Key(KeyOp::Forget {
            sender: sender.to_string(),
        }));
    }
    fn set_muted(&self, audio: bool, video: bool) {
        self.link.notify(MediaRequest::SetMuted { audio, video });
    }
    async fn start_sending(&self) -> Result<(), MediaError> {
        self.link
            .request("start", MediaRequest::Start)
            .await
            .map(drop)
    }
    fn switch_video_source(&self, _src: IvfSource) {
        // the page switches cameras itself (replaceTrack), without the device
    }
    fn video_source_name(&self) -> Option<String> {
        None
    }
    fn relay_only(&self) -> bool {
        self.relay_only
    }
    async fn stats(&self) -> MediaStats {
        match self.link.request("stats", MediaRequest::Stats).await {
            Ok(MediaResult::Stats(p)) => media_stats(&p),
            _ => MediaStats::default(),
        }
    }
    async fn close(&self) {
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            self.link.request("close", MediaRequest::Close),
        )
        .await;
        lock(&self.link.state).events = None;
    }
}

fn media_stats(p: &PageStats) -> MediaStats {
    let stream = |sent, dec, failed| StreamStats {
        frames_sent: sent,
        frames_decrypted: dec,
        frames_failed: failed,
        ..StreamStats::default()
    };
    MediaStats {
        state: p.state.clone(),
        rtt: p.rtt_ms.map(Duration::from_millis),
        send_bitrate: p.send_bitrate,
        recv_bitrate: p.recv_bitrate,
        audio: stream(
            p.audio_frames_sent,
            p.audio_frames_decrypted,
            p.audio_frames_failed,
        ),
        video: stream(
            p.video_frames_sent,
            p.video_frames_decrypted,
            p.video_frames_failed,
        ),
        ..MediaStats::default()
    }
}
