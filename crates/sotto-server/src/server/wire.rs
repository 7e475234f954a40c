//! Server frames as WebSocket messages: the only place the connection code encodes.

use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::error::ErrorCode;
use crate::protocol::{encode_server_frame, Envelope, ServerMessage, B64};
use crate::store::StoredEnvelope;

/// A client's socket (TLS, or plain when the server has no certificate).
pub(crate) type Ws = WebSocketStream<sotto_tls::Stream>;

/// `msg` encoded; an `internal` error frame if it cannot be.
pub(crate) fn frame_text(msg: &ServerMessage) -> String {
    encode_server_frame(msg)
        .unwrap_or_else(|_| r#"{"v":1,"type":"error","code":"internal","message":""}"#.to_owned())
}

/// `msg` as a text message.
pub(crate) fn frame(msg: &ServerMessage) -> Message {
    Message::text(frame_text(msg))
}

/// The close message for `code` (`None`: normal close).
pub(crate) fn close_frame(code: Option<ErrorCode>) -> Message {
    let Some(code) = code else {
        return Message::Close(None);
    };
    let cc = match code {
        ErrorCode::FrameTooLarge => CloseCode::Size,
        ErrorCode::ShuttingDown => CloseCode::Away,
        ErrorCode::TooManyConnections | ErrorCode::RateLimited | ErrorCode::SlowConsumer => {
            CloseCode::Again
        }
        ErrorCode::Internal => CloseCode::Error,
        ErrorCode::StorageUnavailable => CloseCode::Again,
        _ => CloseCode::Policy,
    };
    Message::Close(Some(CloseFrame {
        code: cc,
        reason: code.as_str().into(),
    }))
}

/// A stored envelope as the `envelope` frame its recipient reads.
pub(crate) fn envelope_frame(e: StoredEnvelope) -> Message {
    frame(&ServerMessage::Envelope(Envelope {
        envelope_id: e.id,
        from_user: e.env.from.user,
        from_device: e.env.from.device,
        stored_at_ms: e.env.stored_at_ms,
        expires_at_ms: e.env.expires_at_ms,
        ciphertext: B64(e.env.ciphertext),
    }))
}
