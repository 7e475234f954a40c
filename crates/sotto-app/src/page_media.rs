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
    /// The connected page's outgoing queue (none while no page is connected), bounded by
    /// [`MAX_PAGE_BACKLOG`](crate::consts::MAX_PAGE_BACKLOG): a page that stops reading is dropped, not buffered for.
    page: Option<mpsc::Sender<Outgoing>>,
    /// Which page that is (replies and events of any other are ignored).
    session: u64,
    /// Media requests waiting for the page's reply.
    pending: HashMap<u64, oneshot::Sender<MediaResult>>,
    /// The current call's number and media events.
    events: Option<(u64, mpsc::UnboundedSender<MediaEvent>)>,
}

impl LinkState {
    /// The page is gone: pending requests fail at once and the call's media reports `failed`
    /// (its keys were in that page).
    fn drop_page(&mut self) {
        self.page = None;
        self.pending.clear();
        if let Some((_, ev)) = &self.events {
            let _ = ev.send(MediaEvent::State("failed".into()));
        }
    }
}

/// The device's side of the page connection, shared by the web server (which attaches and
/// detaches pages) and the media backend (which sends requests and keys).
#[derive(Clone, Default)]
pub struct PageLink {
    state: Arc<Mutex<LinkState>>,
    next_id: Arc<AtomicU64>,
    next_call: Arc<AtomicU64>,
}

fn lock(m: &Mutex<LinkState>) -> MutexGuard<'_, LinkState> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl PageLink {
    /// A new page connected (it showed a valid token): messages go to it from now on; returns
    /// its session number. A page connected before is dropped (its queue closes, which ends its
    /// connection) and a call whose media it ran fails: its keys were in that page.
    pub fn attach(&self, page: mpsc::Sender<Outgoing>) -> u64 {
        let mut s = lock(&self.state);
        if s.page.is_some() {
            tracing::warn!("another call screen page took over; the previous one is closed");
            s.drop_page();
        }
        s.page = Some(page);
        s.session += 1;
        s.session
    }

    /// Page `session` went away (if it is still the current one): as in [`PageLink::attach`].
    pub fn detach(&self, session: u64) {
        let mut s = lock(&self.state);
        if s.session == session && s.page.is_some() {
            s.drop_page();
        }
    }

    /// Whether `session` is the current page.
    pub fn is_current(&self, session: u64) -> bool {
        let s = lock(&self.state);
        s.session == session && s.page.is_some()
    }

    /// Whether a page is connected.
    pub fn connected(&self) -> bool {
        lock(&self.state).page.is_some()
    }

    /// Sends a message to the page; false when none is connected. A page whose queue is full
    /// ([`MAX_PAGE_BACKLOG`](crate::consts::MAX_PAGE_BACKLOG)) is dropped.
    pub fn send(&self, msg: &ToPage) -> bool {
        let Ok(text) = serde_json::to_string(msg) else {
            return false;
        };
        let mut s = lock(&self.state);
        let Some(p) = &s.page else { return false };
        match p.try_send(Zeroizing::new(text)) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!("call screen page does not read its messages: dropped");
                s.drop_page();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Page `session` answered request `id`.
    pub fn reply(&self, session: u64, id: u64, result: MediaResult) {
        let mut s = lock(&self.state);
        if s.session != session {
            return;
        }
        if let Some(tx) = s.pending.remove(&id) {
            let _ = tx.send(result);
        }
    }

    /// Page `session` reported a media event.
    pub fn event(&self, session: u64, event: PageMediaEvent) {
        if !self.is_current(session) {
            return;
        }
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
        if let Some((_, tx)) = &lock(&self.state).events {
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
            if s.page.is_none() {
                return Err(MediaError::BackendGone);
            }
            s.pending.insert(id, tx);
        }
        if !self.send(&ToPage::Media { id, request }) {
            lock(&self.state).pending.remove(&id);
            return Err(MediaError::BackendGone);
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
            let call = link.next_call.fetch_add(1, Ordering::Relaxed) + 1;
            let request = MediaRequest::Create {
                call,
                sender_id: sender_id.to_string(),
                suite,
                ice_servers: ice.await,
                relay_only,
            };
            let (tx, rx) = mpsc::unbounded_channel();
            lock(&link.state).events = Some((call, tx));
            link.request("create", request).await?;
            let backend = PageBackend {
                link,
                call,
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
    /// This call's number.
    call: u64,
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
        match *last {
            Some(l) if id < l => {
                return Err(MediaError::Frame(sotto_frame::Error::InvalidKeyId(
                    "send key does not move forward",
                )))
            }
            // the page already has it: sending it again could only reset a counter
            Some(l) if id == l => return Ok(()),
            _ => {}
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
            self.link
                .request("close", MediaRequest::Close { call: self.call }),
        )
        .await;
        let mut s = lock(&self.link.state);
        if s.events.as_ref().is_some_and(|(c, _)| *c == self.call) {
            s.events = None;
        }
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
