//! The participant's side of the control channel: join a room, answer the relay's offer,
//! hear who joins and leaves.

use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::protocol::{decode_server, ClientMsg, ServerMsg};

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

/// Joins `room` at the relay `url`: receives the relay's offer, lets `answer` turn it into an
/// SDP answer (typically `MediaPeer::accept_offer`), sends it back and waits for `joined`.
pub async fn join<F, Fut, E>(
    url: &str,
    room: &str,
    participant: &str,
    answer: F,
) -> Result<RoomHandle, String>
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = Result<String, E>>,
    E: std::fmt::Display,
{
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .map_err(|e| format!("relay {url}: {e}"))?;
    let send = |m: &ClientMsg| {
        serde_json::to_string(m)
            .map(Message::text)
            .map_err(|e| e.to_string())
    };
    ws.send(send(&ClientMsg::Join {
        room: room.into(),
        participant: participant.into(),
    })?)
    .await
    .map_err(|e| e.to_string())?;
    async fn next(
        ws: &mut tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
    ) -> Result<ServerMsg, String> {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => return decode_server(&t).map_err(|e| e.to_string()),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(_)) => return Err("unexpected frame".into()),
                Some(Err(e)) => return Err(e.to_string()),
                None => return Err("relay closed the connection".into()),
            }
        }
    }
    let offer = match next(&mut ws).await? {
        ServerMsg::Offer { sdp } => sdp,
        ServerMsg::Error { code, message } => {
            return Err(format!("relay refused: {code}: {message}"))
        }
        other => return Err(format!("unexpected {other:?}")),
    };
    let sdp = answer(offer).await.map_err(|e| e.to_string())?;
    ws.send(send(&ClientMsg::Answer { sdp })?)
        .await
        .map_err(|e| e.to_string())?;
    let members = match next(&mut ws).await? {
        ServerMsg::Joined { members } => members,
        ServerMsg::Error { code, message } => {
            return Err(format!("relay refused: {code}: {message}"))
        }
        other => return Err(format!("unexpected {other:?}")),
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let (ltx, mut lrx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                m = next(&mut ws) => match m {
                    Ok(m) => { let _ = tx.send(m); }
                    Err(_) => return,
                },
                _ = &mut lrx => {
                    if let Ok(m) = serde_json::to_string(&ClientMsg::Leave) {
                        let _ = ws.send(Message::text(m)).await;
                    }
                    let _ = ws.close(None).await;
                    return;
                }
            }
        }
    });
    Ok(RoomHandle {
        members,
        events: rx,
        leave: Some(ltx),
    })
}
