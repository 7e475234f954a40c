//! The call screen's web server: loopback only, a random port, every asset embedded in the
//! binary, a strict CSP, and one WebSocket that a page may use only after showing the run's
//! token (from the URL fragment, which browsers never send to a server) and only from our own
//! origin (`Origin` checked, `Host` checked against DNS rebinding).

use std::net::SocketAddr;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use subtle::ConstantTimeEq;
use tokio::sync::{mpsc, watch};
use zeroize::Zeroizing;

use crate::assets::ASSETS;
use crate::consts::{
    CSP, HELLO_TIMEOUT, MAX_PAGE_BACKLOG, MAX_PAGE_MESSAGE, PAGE_SEND_TIMEOUT, TOKEN_BYTES,
};
use crate::page_media::{Outgoing, PageLink};
use crate::protocol::{
    FromPage, NoticeKind, PageCommand, PageContacts, PageStatus, SessionToken, ToPage,
};

/// Why the call screen could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppError {
    /// Binding 127.0.0.1 failed.
    #[error("cannot listen on 127.0.0.1: {0}")]
    Bind(std::io::Error),
}

/// What the server needs from the device.
pub struct AppWiring {
    /// Our account (shown by the page).
    pub me: String,
    /// The media link the device's [`crate::PageMedia`] uses.
    pub link: PageLink,
    /// Where the page's user actions go.
    pub commands: mpsc::Sender<PageCommand>,
    /// The call's state, as the page shows it (sent on connect and on every change).
    pub status: watch::Receiver<PageStatus>,
    /// The contacts list (sent on connect and on every change).
    pub contacts: watch::Receiver<PageContacts>,
}

/// A running call screen server.
pub struct AppServer {
    /// Where it listens (127.0.0.1, random port).
    pub addr: SocketAddr,
    token: Zeroizing<String>,
    task: tokio::task::JoinHandle<()>,
}

impl AppServer {
    /// The page's URL, token in the fragment. Print it only to the user who started the app.
    pub fn url(&self) -> Zeroizing<String> {
        Zeroizing::new(format!("http://{}/#{}", self.addr, self.token.as_str()))
    }

    /// Stops serving.
    pub fn stop(self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct AppState {
    /// The one token a `hello` may show now: the link's at first, then the session token the
    /// last page was given (each works once).
    token: std::sync::Arc<std::sync::Mutex<Zeroizing<String>>>,
    origin: std::sync::Arc<str>,
    host: std::sync::Arc<str>,
    me: std::sync::Arc<str>,
    link: PageLink,
    commands: mpsc::Sender<PageCommand>,
    status: watch::Receiver<PageStatus>,
    contacts: watch::Receiver<PageContacts>,
}

/// Starts the server on 127.0.0.1 with a fresh token.
///
/// # Errors
/// [`AppError::Bind`].
pub async fn start(w: AppWiring) -> Result<AppServer, AppError> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(AppError::Bind)?;
    let addr = listener.local_addr().map_err(AppError::Bind)?;
    let token = Zeroizing::new(hex::encode(rand::random::<[u8; TOKEN_BYTES]>()));
    let state = AppState {
        token: std::sync::Arc::new(std::sync::Mutex::new(token.clone())),
        origin: format!("http://{addr}").into(),
        host: addr.to_string().into(),
        me: w.me.into(),
        link: w.link,
        commands: w.commands,
        status: w.status,
        contacts: w.contacts,
    };
    let router = router(state);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::warn!("call screen server: {e}");
        }
    });
    Ok(AppServer { addr, token, task })
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(|s| asset(s, "/index.html")))
        .route("/{file}", get(named_asset))
        .route("/ws", get(ws))
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// Every response: refuse a foreign `Host` (DNS rebinding), add the security headers.
async fn guard(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let host_ok = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|h| h == &*s.host);
    let mut resp = if host_ok {
        next.run(req).await
    } else {
        (StatusCode::MISDIRECTED_REQUEST, "wrong Host").into_response()
    };
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "permissions-policy",
        HeaderValue::from_static("camera=(self), microphone=(self), geolocation=(), usb=()"),
    );
    resp
}

async fn named_asset(
    s: State<AppState>,
    axum::extract::Path(file): axum::extract::Path<String>,
) -> Response {
    asset(s, &format!("/{file}")).await
}

async fn asset(_: State<AppState>, path: &str) -> Response {
    match ASSETS.iter().find(|a| a.path == path) {
        Some(a) => ([(header::CONTENT_TYPE, a.content_type)], a.body).into_response(),
        None => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}

async fn ws(State(s): State<AppState>, headers: HeaderMap, up: WebSocketUpgrade) -> Response {
    let origin_ok = headers
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .is_some_and(|o| o == &*s.origin);
    if !origin_ok {
        return (StatusCode::FORBIDDEN, "wrong Origin").into_response();
    }
    up.max_message_size(MAX_PAGE_MESSAGE)
        .max_frame_size(MAX_PAGE_MESSAGE)
        .on_upgrade(move |socket| page_session(s, socket))
}

/// Why a page connection ended (logged; the page sees the close code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PageEnd {
    NoHello,
    BadToken,
    Closed,
    Replaced,
    SendTimeout,
}

fn new_token() -> Zeroizing<String> {
    Zeroizing::new(hex::encode(rand::random::<[u8; TOKEN_BYTES]>()))
}

/// Checks a `hello`'s token against the current one and, if it matches, replaces it with a
/// fresh session token (returned, for the page's next `hello`): every token works once.
fn take_token(s: &AppState, shown: &str) -> Option<Zeroizing<String>> {
    let mut cur = s
        .token
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !bool::from(shown.as_bytes().ct_eq(cur.as_bytes())) {
        return None;
    }
    let next = new_token();
    *cur = next.clone();
    Some(next)
}

/// One message to the page, within [`PAGE_SEND_TIMEOUT`].
async fn send_page(socket: &mut WebSocket, text: &str) -> Result<(), PageEnd> {
    match tokio::time::timeout(PAGE_SEND_TIMEOUT, socket.send(Message::Text(text.into()))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(PageEnd::Closed),
        Err(_) => Err(PageEnd::SendTimeout),
    }
}

async fn page_session(s: AppState, mut socket: WebSocket) {
    // a token first, within HELLO_TIMEOUT
    let hello = tokio::time::timeout(HELLO_TIMEOUT, socket.recv()).await;
    let timed_out = hello.is_err();
    let session_token = match hello {
        Ok(Some(Ok(Message::Text(t)))) => match serde_json::from_str::<FromPage>(t.as_str()) {
            Ok(FromPage::Hello { token }) => take_token(&s, &Zeroizing::new(token)),
            _ => None,
        },
        _ => None,
    };
    let Some(session_token) = session_token else {
        let end = if timed_out {
            PageEnd::NoHello
        } else {
            PageEnd::BadToken
        };
        tracing::info!("call screen page refused: {end:?}");
        let _ = socket
            .send(Message::Close(Some(axum::extract::ws::CloseFrame {
                code: 1008,
                reason: "token".into(),
            })))
            .await;
        return;
    };
    // the link holds the only sender: when another page takes over, the queue closes and this
    // connection ends
    let (tx, mut rx) = mpsc::channel::<Outgoing>(MAX_PAGE_BACKLOG);
    let session = s.link.attach(tx);
    let mut status = s.status.clone();
    let mut contacts = s.contacts.clone();
    let welcome = ToPage::Welcome {
        me: s.me.to_string(),
        session: SessionToken(session_token.to_string()),
    };
    let first = ToPage::Status(status.borrow_and_update().clone());
    let known = ToPage::Contacts(contacts.borrow_and_update().clone());
    let mut end = None;
    for m in [welcome, first, known] {
        if let Ok(t) = serde_json::to_string(&m) {
            if let Err(e) = send_page(&mut socket, &Zeroizing::new(t)).await {
                end = Some(e);
            }
        }
    }
    let end = match end {
        Some(e) => e,
        None => loop {
            tokio::select! {
                out = rx.recv() => {
                    let Some(text) = out else { break PageEnd::Replaced };
                    if let Err(e) = send_page(&mut socket, &text).await {
                        break e;
                    }
                }
                changed = status.changed() => {
                    if changed.is_err() { break PageEnd::Closed }
                    let m = ToPage::Status(status.borrow_and_update().clone());
                    if let Ok(t) = serde_json::to_string(&m) {
                        if let Err(e) = send_page(&mut socket, &t).await {
                            break e;
                        }
                    }
                }
                changed = contacts.changed() => {
                    if changed.is_err() { break PageEnd::Closed }
                    let m = ToPage::Contacts(contacts.borrow_and_update().clone());
                    if let Ok(t) = serde_json::to_string(&m) {
                        if let Err(e) = send_page(&mut socket, &t).await {
                            break e;
                        }
                    }
                }
                inb = socket.recv() => {
                    match inb {
                        Some(Ok(Message::Text(t))) => handle(&s, session, t.as_str()),
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break PageEnd::Closed,
                        Some(Ok(_)) => {}
                    }
                }
            }
        },
    };
    tracing::info!("call screen page gone: {end:?}");
    s.link.detach(session);
}

fn handle(s: &AppState, session: u64, text: &str) {
    match serde_json::from_str::<FromPage>(text) {
        Ok(FromPage::Command { command }) => {
            // never wait here: the page's replies to media requests come on this same loop
            if s.commands.try_send(command).is_err() {
                tracing::info!("call screen: too many commands at once, one dropped");
                s.link.send(&ToPage::Notice {
                    kind: NoticeKind::Error,
                    text: "too many actions at once: one was ignored".into(),
                });
            }
        }
        Ok(FromPage::MediaReply { id, result }) => s.link.reply(session, id, result),
        Ok(FromPage::MediaEvent { event }) => s.link.event(session, event),
        Ok(FromPage::Hello { .. }) => {}
        // serde's message may quote the page's strings (an SDP): only its position is logged
        Err(e) => tracing::info!(
            "call screen page sent a message we do not understand (line {}, column {})",
            e.line(),
            e.column()
        ),
    }
}
