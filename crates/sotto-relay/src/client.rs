//! The participant's side of the control channel: join a room, answer the relay's offer,
//! hear who joins and leaves.

use futures_util::{SinkExt, StreamExt};
pub use sotto_tls::ClientTls;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use sotto_admission::RelayToken;

use crate::protocol::{decode_server, ClientMsg, ErrorCode, ServerMsg};

/// A joined room: membership events until dropped (dropping leaves the room).
pub struct RoomHandle {
    /// Members present at join.
    pub members: Vec<String>,
    /// `MemberJoined` / `MemberLeft` as they happen.
    pub events: mpsc::UnboundedReceiver<ServerMsg>,
    leave: Option<tokio::sync::oneshot::Sender<()>>,
}

impl RoomHandle {
    /// Leaves the room.
    pub fn leave(&mut self) {
        if let Some(l) = self.leave.take() {
            let _ = l.send(());
        }
    }
}

impl Drop for RoomHandle {
    fn drop(&mut self) {
        self.leave();
    }
}

/// Why [`join`] failed. No variant carries key material, and none the URL (which may carry
/// credentials) or the SDP.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JoinError {
    /// The WebSocket could not be opened, or failed in use.
    #[error("relay connection: {0}")]
    Connect(String),
    /// The relay closed the connection before answering.
    #[error("relay closed the connection")]
    Closed,
    /// The relay sent something the protocol does not allow here, or that does not decode.
    #[error("relay protocol: {0}")]
    Protocol(String),
    /// The relay refused the join with an error message.
    #[error("relay refused: {code}: {message}")]
    Refused {
        /// The relay's code.
        code: ErrorCode,
        /// The relay's words.
        message: String,
    },
    /// The `answer` callback failed.
    #[error("answering the relay's offer: {0}")]
    Answer(String),
    /// Refused by the transport rules or TLS before the WebSocket opened: plain `ws://` to a
    /// host that is not loopback, or a relay certificate that does not verify.
    #[error("relay connection: {0}")]
    Tls(#[from] sotto_tls::Error),
}

type Ws = WebSocketStream<sotto_tls::Stream>;

/// The name of a relay message, for errors (never its contents: an offer carries ICE
/// credentials).
fn name(m: &ServerMsg) -> &'static str {
    match m {
        ServerMsg::Offer { .. } => "offer",
        ServerMsg::Joined { .. } => "joined",
        ServerMsg::MemberJoined { .. } => "member_joined",
        ServerMsg::MemberLeft { .. } => "member_left",
        ServerMsg::Error { .. } => "error",
    }
}

async fn send(ws: &mut Ws, m: &ClientMsg) -> Result<(), JoinError> {
    let text = serde_json::to_string(m).map_err(|e| JoinError::Protocol(e.to_string()))?;
    ws.send(Message::text(text))
        .await
        .map_err(|e| JoinError::Connect(e.to_string()))
}

/// The relay's next message.
async fn next(ws: &mut Ws) -> Result<ServerMsg, JoinError> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                return decode_server(&t).map_err(|e| JoinError::Protocol(e.to_string()))
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Close(_))) | None => return Err(JoinError::Closed),
            Some(Ok(_)) => return Err(JoinError::Protocol("unexpected frame".into())),
            Some(Err(e)) => return Err(JoinError::Connect(e.to_string())),
        }
    }
}

/// The relay's next message, which must be `expected` (given as its wire name); an error
/// message is the relay's refusal.
async fn expect<T>(
    ws: &mut Ws,
    expected: &str,
    pick: impl FnOnce(ServerMsg) -> Result<T, ServerMsg>,
) -> Result<T, JoinError> {
    match pick(next(ws).await?) {
        Ok(t) => Ok(t),
        Err(ServerMsg::Error { code, message }) => Err(JoinError::Refused { code, message }),
        Err(other) => Err(JoinError::Protocol(format!(
            "expected {expected}, got {}",
            name(&other)
        ))),
    }
}

/// Joins `room` at the relay `url` with the signaling server's `token` (the relay refuses a
/// join without a valid one: [`JoinError::Refused`] with a `token_*` code): receives the relay's offer, lets `answer` turn it into an
/// SDP answer (typically `MediaPeer::accept_offer`), sends it back and waits for `joined`.
///
/// `url` is `wss://` (the relay verified against `tls`), or `ws://` to a loopback host only;
/// anything else is [`JoinError::Tls`] before a connection is made.
pub async fn join<F, Fut, E>(
    url: &str,
    tls: &ClientTls,
    room: &str,
    participant: &str,
    token: Option<&RelayToken>,
    answer: F,
) -> Result<RoomHandle, JoinError>
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = Result<String, E>>,
    E: std::fmt::Display,
{
    let stream = sotto_tls::connect(url, tls).await?;
    // the relay may be one a peer named: its messages are bounded like the relay bounds ours
    let cfg = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(crate::consts::MAX_CONTROL_MESSAGE))
        .max_frame_size(Some(crate::consts::MAX_CONTROL_MESSAGE));
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(cfg))
        .await
        .map_err(|e| JoinError::Connect(e.to_string()))?;
    let join = ClientMsg::Join {
        room: room.into(),
        participant: participant.into(),
        token: token.cloned(),
    };
    send(&mut ws, &join).await?;
    let offer = expect(&mut ws, "offer", |m| match m {
        ServerMsg::Offer { sdp } => Ok(sdp),
        other => Err(other),
    })
    .await?;
    let sdp = answer(offer)
        .await
        .map_err(|e| JoinError::Answer(e.to_string()))?;
    send(&mut ws, &ClientMsg::Answer { sdp }).await?;
    let members = expect(&mut ws, "joined", |m| match m {
        ServerMsg::Joined { members } => Ok(members),
        other => Err(other),
    })
    .await?;
    let (tx, rx) = mpsc::unbounded_channel();
    let (ltx, lrx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(relay_events(ws, tx, lrx));
    Ok(RoomHandle {
        members,
        events: rx,
        leave: Some(ltx),
    })
}

/// Passes the relay's messages on until the connection ends or the handle leaves.
async fn relay_events(
    mut ws: Ws,
    tx: mpsc::UnboundedSender<ServerMsg>,
    mut leave: tokio::sync::oneshot::Receiver<()>,
) {
    loop {
        tokio::select! {
            m = next(&mut ws) => match m {
                Ok(m) => { let _ = tx.send(m); }
                Err(_) => return,
            },
            _ = &mut leave => {
                let _ = send(&mut ws, &ClientMsg::Leave).await;
                let _ = ws.close(None).await;
                return;
            }
        }
    }
}
