//! One participant's control-channel session, in steps: read the `join`, check admission,
//! negotiate the relay's peer connection, admit, run until the participant leaves, leave.

use std::sync::Arc;
use std::time::Instant;

use futures_util::{SinkExt, StreamExt};
use sotto_tls::Stream;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::consts::{GATHER_TIMEOUT, HANDSHAKE_TIMEOUT, JOIN_TIMEOUT, MAX_CONTROL_MESSAGE};
use crate::forward::{ask_keyframe, slot_feedback};
use crate::lock;
use crate::peer::{PeerError, RelayPeer};
use crate::ports::PortLease;
use crate::protocol::{decode_client, ClientMsg, ErrorCode, ProtocolError, ServerMsg};
use crate::relay::{PendingSlot, Shared};
use crate::room::{Member, Refusal, Ticket};

/// Why a session ended before its participant left. Only logged; where the participant is
/// told, the relay's error message carries this `Display`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    // the participant's doing
    /// A control message that does not decode.
    #[error(transparent)]
    Malformed(#[from] ProtocolError),
    /// A binary WebSocket frame.
    #[error("binary frames are not part of the protocol")]
    Binary,
    /// A valid message, but not the one expected (`join`, `answer`).
    #[error("expected {0}")]
    Unexpected(&'static str),
    /// The participant closed the channel.
    #[error("closed")]
    Closed,
    /// The TLS or WebSocket handshake did not finish within [`HANDSHAKE_TIMEOUT`].
    #[error("no handshake within HANDSHAKE_TIMEOUT")]
    HandshakeTimeout,
    /// Evicted before its `join`: the relay was full of connections not in a room yet.
    #[error("evicted before join: too many connections not in a room yet")]
    Evicted,
    /// The TLS handshake failed.
    #[error("TLS handshake: {0}")]
    Tls(std::io::Error),
    /// No `join` within [`JOIN_TIMEOUT`].
    #[error("no join within JOIN_TIMEOUT")]
    JoinTimeout,
    /// Not admitted.
    #[error(transparent)]
    Refused(Refusal),
    // the relay's side
    /// The WebSocket handshake or I/O failed.
    #[error(transparent)]
    Ws(#[from] tungstenite::Error),
    /// The relay's peer connection failed.
    #[error(transparent)]
    WebRtc(#[from] rtc::shared::error::Error),
    /// No port of the relay's UDP port range could be bound.
    #[error("no free port in the relay's UDP port range")]
    NoMediaPort,
    /// ICE gathering took longer than [`GATHER_TIMEOUT`].
    #[error("ICE gathering timed out")]
    GatherTimeout,
    /// A relay message did not encode.
    #[error(transparent)]
    Encode(#[from] serde_json::Error),
}

type Ws = tokio_tungstenite::WebSocketStream<Stream>;

async fn send(ws: &mut Ws, m: &ServerMsg) -> Result<(), SessionError> {
    let text = serde_json::to_string(m)?;
    Ok(ws.send(Message::text(text)).await?)
}

async fn recv(ws: &mut Ws) -> Result<ClientMsg, SessionError> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(decode_client(&t)?),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(_)) => return Err(SessionError::Binary),
            Some(Err(e)) => return Err(e.into()),
            None => return Err(SessionError::Closed),
        }
    }
}

/// Tells the participant (best effort) that the session ends with `e`, as `code`; returns `e`.
async fn fail(ws: &mut Ws, code: ErrorCode, e: SessionError) -> SessionError {
    let message = e.to_string();
    let _ = send(ws, &ServerMsg::Error { code, message }).await;
    e
}

/// Serves one control connection (from address `from`) from handshake to leave.
pub(crate) async fn session(
    shared: Arc<Shared>,
    tcp: TcpStream,
    from: std::net::IpAddr,
    pending: PendingSlot,
) -> Result<(), SessionError> {
    // until `join` arrives this connection may be evicted for a newer one (the relay is full
    // of connections that say nothing)
    let first = async {
        let mut ws = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshakes(&shared, tcp)).await {
            Ok(ws) => ws?,
            Err(_) => return Err(SessionError::HandshakeTimeout),
        };
        let join = read_join(&mut ws).await?;
        Ok((ws, join))
    };
    let (mut ws, (room, me, token)) = tokio::select! {
        r = first => r?,
        () = pending.evicted() => return Err(SessionError::Evicted),
    };
    pending.joined();
    let token = token.as_ref().map(|t| t.as_str());
    let ticket = |now_ms| Ticket {
        from,
        secret: &shared.token_secret,
        relay: &shared.public_url,
        token,
        now_ms,
    };
    // checked (token first) before negotiating, so a refused join costs no peer connection
    // and no room state; `admit` checks again, since the room may fill (or the name be taken,
    // or its holder leave) while we negotiate
    let check = lock(&shared.rooms).check(&room, &me, ticket(now_ms()));
    if let Err(r) = check {
        let _ = send(&mut ws, &r.to_msg()).await;
        return Err(SessionError::Refused(r));
    }
    // the media port stays leased until the connection is closed, at the end of this function
    let (peer, _port) = negotiate(&shared, &mut ws, &room, &me).await?;
    let pc = peer.pc.clone();
    let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
    let others = match admit(&shared, &room, &me, ticket(now_ms()), peer, ctl_tx).await {
        Ok(others) => others,
        Err(r) => {
            let _ = send(&mut ws, &r.to_msg()).await;
            let _ = pc.close().await;
            return Err(SessionError::Refused(r));
        }
    };
    // in a room now: no longer counted against its address's pre-join limit
    drop(pending);
    tracing::info!(room = %room, participant = %me, "joined");
    let joined_at = Instant::now();
    let _ = send(&mut ws, &ServerMsg::Joined { members: others }).await;
    run(&mut ws, ctl_rx).await;
    leave(&shared, &room, &me).await;
    tracing::info!(room = %room, participant = %me, secs = joined_at.elapsed().as_secs(), "left");
    let _ = pc.close().await;
    Ok(())
}

/// TLS (if the relay has a certificate), then the WebSocket handshake.
async fn handshakes(shared: &Shared, tcp: TcpStream) -> Result<Ws, SessionError> {
    let stream = sotto_tls::accept(shared.tls.as_ref(), tcp)
        .await
        .map_err(SessionError::Tls)?;
    let cfg = WebSocketConfig::default()
        .max_message_size(Some(MAX_CONTROL_MESSAGE))
        .max_frame_size(Some(MAX_CONTROL_MESSAGE));
    Ok(tokio_tungstenite::accept_async_with_config(stream, Some(cfg)).await?)
}

/// The relay's clock: milliseconds since the Unix epoch (what tokens are minted with).
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The first message, which must be a `join` within [`JOIN_TIMEOUT`]:
/// `(room, participant, token)`.
async fn read_join(
    ws: &mut Ws,
) -> Result<(String, String, Option<sotto_admission::RelayToken>), SessionError> {
    match tokio::time::timeout(JOIN_TIMEOUT, recv(ws)).await {
        Ok(Ok(ClientMsg::Join {
            room,
            participant,
            token,
        })) => Ok((room, participant, token)),
        Ok(Ok(_)) => Err(fail(ws, ErrorCode::BadMessage, SessionError::Unexpected("join")).await),
        Ok(Err(e)) => Err(fail(ws, ErrorCode::BadMessage, e).await),
        Err(_) => Err(fail(ws, ErrorCode::Timeout, SessionError::JoinTimeout).await),
    }
}

/// Builds the relay's peer connection for `me` (with the lease on its media port), sends its
/// offer once ICE gathering is complete and applies the participant's answer. On failure, the
/// participant is told and the connection closed.
async fn negotiate(
    shared: &Arc<Shared>,
    ws: &mut Ws,
    room: &str,
    me: &str,
) -> Result<(RelayPeer, PortLease), SessionError> {
    let (peer, port) = match RelayPeer::new(shared, room, me).await {
        Ok(p) => p,
        Err(PeerError::NoMediaPort) => {
            return Err(fail(ws, ErrorCode::NoMediaPort, SessionError::NoMediaPort).await)
        }
        Err(PeerError::WebRtc(e)) => return Err(fail(ws, ErrorCode::Webrtc, e.into()).await),
    };
    peer.start_offer().await?;
    if !peer.gathered(GATHER_TIMEOUT).await {
        let e = fail(ws, ErrorCode::Webrtc, SessionError::GatherTimeout).await;
        let _ = peer.pc.close().await;
        return Err(e);
    }
    let sdp = peer.local_sdp(shared).await;
    send(ws, &ServerMsg::Offer { sdp }).await?;
    let answer = match tokio::time::timeout(JOIN_TIMEOUT, recv(ws)).await {
        Ok(Ok(ClientMsg::Answer { sdp })) => sdp,
        _ => {
            let e = fail(
                ws,
                ErrorCode::BadMessage,
                SessionError::Unexpected("answer"),
            )
            .await;
            let _ = peer.pc.close().await;
            return Err(e);
        }
    };
    if let Err(e) = peer.accept_answer(answer).await {
        let e = fail(ws, ErrorCode::Webrtc, e.into()).await;
        let _ = peer.pc.close().await;
        return Err(e);
    }
    Ok((peer, port))
}

/// Admits `me` to `room` with its negotiated `peer` and `ticket` (see
/// [`crate::room::Rooms::admit`]), starts reading keyframe requests on its video slots and asks
/// for the key frames the new slot assignments need; `control` carries membership events to its
/// session. Returns the members already there.
async fn admit(
    shared: &Arc<Shared>,
    room: &str,
    me: &str,
    ticket: Ticket<'_>,
    peer: RelayPeer,
    control: mpsc::UnboundedSender<ServerMsg>,
) -> Result<Vec<String>, Refusal> {
    let RelayPeer {
        pc,
        audio,
        video,
        inbound,
        ..
    } = peer;
    let feedback = video
        .iter()
        .enumerate()
        .map(|(i, s)| {
            tokio::spawn(slot_feedback(
                shared.clone(),
                room.to_string(),
                me.to_string(),
                i,
                s.track.clone(),
            ))
        })
        .collect::<Vec<_>>();
    let member = Member {
        audio,
        video,
        control,
        pc,
        inbound,
        feedback,
    };
    let admitted = lock(&shared.rooms).admit(room, me, ticket, Instant::now(), member);
    let (others, keyframes) = admitted?;
    if let Some(c) = &shared.capture {
        c.mark(true, me);
    }
    for sender in keyframes {
        ask_keyframe(shared, &sender, true).await;
    }
    Ok(others)
}

/// Passes membership events to the participant until it leaves or the channel fails.
async fn run(ws: &mut Ws, mut events: mpsc::UnboundedReceiver<ServerMsg>) {
    loop {
        tokio::select! {
            m = events.recv() => {
                let Some(m) = m else { break };
                if send(ws, &m).await.is_err() { break; }
            }
            c = recv(ws) => {
                match c {
                    Ok(ClientMsg::Leave) | Err(_) => break,
                    Ok(_) => {
                        let unexpected = ServerMsg::Error {
                            code: ErrorCode::BadMessage,
                            message: "unexpected message".into(),
                        };
                        let _ = send(ws, &unexpected).await;
                    }
                }
            }
        }
    }
}

/// Removes `me` from `room`, stops its feedback tasks, marks the capture and asks for the key
/// frames the new slot assignments need.
async fn leave(shared: &Shared, room: &str, me: &str) {
    let (gone, keyframes) = lock(&shared.rooms).leave(room, me, now_ms(), Instant::now());
    if let Some(gone) = gone {
        gone.feedback.iter().for_each(|t| t.abort());
        if let Some(c) = &shared.capture {
            c.mark(false, me);
        }
    }
    for sender in keyframes {
        ask_keyframe(shared, &sender, true).await;
    }
}
