//! TURN over TCP and TLS for a TURN client that speaks UDP only.
//!
//! webrtc-rs 0.21.1 gathers relay candidates from `turn:…?transport=udp` URLs only: it skips
//! `turn:…?transport=tcp` and `turns:` (its `turn_relayer.rs`), so a user behind a firewall that
//! lets only TCP (often only port 443) out had no path at all. A bridge takes its place on
//! loopback: webrtc-rs is given `turn:127.0.0.1:P?transport=udp`, and every datagram its TURN
//! client sends to that port goes, framed, over one TCP (or TLS) connection per client socket to
//! the real server, and back (RFC 8656 §3.1, §12.5: over a stream, STUN messages follow each
//! other and ChannelData messages are padded to a multiple of four bytes). The allocation the
//! server makes is an ordinary UDP relay address, so peers reach it as any relay candidate.
//!
//! The bridge only moves TURN messages; it never holds a credential (the TURN client's
//! messages carry their own MESSAGE-INTEGRITY) and sees nothing but what the TURN server sees.
//! It opens at most [`MAX_BRIDGE_CONNECTIONS`] connections, only for datagrams that are STUN or
//! ChannelData, each within [`BRIDGE_CONNECT_TIMEOUT`]; a connection that fails ends, and the
//! TURN client's retransmission opens a new one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use rtc::ice::url::{ProtoType, SchemeType, Url};
use sotto_tls::ClientTls;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::config::IceServer;
use super::consts::{BRIDGE_CONNECT_TIMEOUT, BRIDGE_QUEUE, MAX_BRIDGE_CONNECTIONS};
use super::MediaError;

/// Largest TURN message on a stream: a STUN header and the largest body a 16-bit length allows.
const MAX_MESSAGE: usize = 20 + u16::MAX as usize;

/// Running bridges; each stops when this is dropped.
#[derive(Default)]
pub(crate) struct TurnBridges(Vec<JoinHandle<()>>);

impl Drop for TurnBridges {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// How a bridge reaches its TURN server.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Upstream {
    host: String,
    port: u16,
    tls: bool,
}

/// The upstream of `url` if it is a TURN URL webrtc-rs would skip (TCP or TLS), else `None`.
fn upstream(url: &str) -> Option<Upstream> {
    let u = Url::parse_url(url).ok()?;
    let tls = u.scheme == SchemeType::Turns;
    let turn = matches!(u.scheme, SchemeType::Turn | SchemeType::Turns);
    (turn && (tls || u.proto == ProtoType::Tcp)).then(|| Upstream {
        host: u
            .host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port: u.port,
        tls,
    })
}

/// `servers` with every TCP or TLS TURN URL replaced by a loopback UDP URL of a bridge to it
/// (started here, verifying TLS servers against `tls`), and the bridges.
///
/// # Errors
/// [`MediaError::Webrtc`] when a loopback UDP socket cannot be bound.
pub(crate) async fn bridge_ice_servers(
    servers: &[IceServer],
    tls: &ClientTls,
) -> Result<(Vec<IceServer>, TurnBridges), MediaError> {
    let mut bridges = TurnBridges::default();
    let mut out = Vec::with_capacity(servers.len());
    for s in servers {
        let mut urls = Vec::with_capacity(s.urls.len());
        for url in &s.urls {
            match upstream(url) {
                Some(up) => {
                    let udp = UdpSocket::bind("127.0.0.1:0")
                        .await
                        .map_err(|e| MediaError::Webrtc(format!("TURN bridge socket: {e}")))?;
                    let port = udp
                        .local_addr()
                        .map_err(|e| MediaError::Webrtc(format!("TURN bridge socket: {e}")))?
                        .port();
                    tracing::debug!(%url, port, "TURN over a stream, bridged from loopback UDP");
                    bridges
                        .0
                        .push(tokio::spawn(run(Arc::new(udp), up, tls.clone())));
                    urls.push(format!("turn:127.0.0.1:{port}?transport=udp"));
                }
                None => urls.push(url.clone()),
            }
        }
        out.push(IceServer {
            urls,
            username: s.username.clone(),
            credential: s.credential.clone(),
        });
    }
    Ok((out, bridges))
}

/// Whether a datagram from the TURN client is a TURN message: a STUN message (first two bits
/// 00) or ChannelData (01), with its header.
fn is_turn_message(d: &[u8]) -> bool {
    d.len() >= 4 && d[0] >> 6 <= 1
}

/// A datagram from the TURN client as it goes on the stream: ChannelData cut to its declared
/// length and padded to four bytes; STUN unchanged. `None` when the length field claims more
/// than the datagram holds.
fn to_stream(d: &[u8]) -> Option<Vec<u8>> {
    if !is_turn_message(d) {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([d[2], d[3]]));
    if d[0] >> 6 == 0 {
        return (d.len() == 20 + len).then(|| d.to_vec());
    }
    let end = 4 + len;
    if end > d.len() {
        return None;
    }
    let mut v = d[..end].to_vec();
    v.resize(end.next_multiple_of(4), 0);
    Some(v)
}

/// What [`next_message`] found at the start of a stream buffer.
#[derive(Debug, PartialEq, Eq)]
enum Framed {
    /// Not enough bytes yet.
    Partial,
    /// A message of `len` bytes (sent to the client as one datagram) taking `consumed` bytes of
    /// the stream (ChannelData padding included).
    Message { len: usize, consumed: usize },
    /// Neither STUN nor ChannelData: the stream is out of step and is closed.
    Garbage,
}

fn next_message(buf: &[u8]) -> Framed {
    if buf.len() < 4 {
        return Framed::Partial;
    }
    let body = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    let (len, consumed) = match buf[0] >> 6 {
        0 => (20 + body, 20 + body),
        1 => (4 + body, (4 + body).next_multiple_of(4)),
        _ => return Framed::Garbage,
    };
    if buf.len() < consumed {
        return Framed::Partial;
    }
    Framed::Message { len, consumed }
}

/// One bridge: datagrams from each client socket to its own stream, and back.
async fn run(udp: Arc<UdpSocket>, up: Upstream, tls: ClientTls) {
    let mut conns: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>> = HashMap::new();
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let (n, from) = match udp.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(e) => {
                // a loopback socket does not fail for a peer's sake: stop rather than spin
                tracing::warn!("TURN bridge: {e}");
                return;
            }
        };
        let Some(framed) = to_stream(&buf[..n]) else {
            continue;
        };
        if conns.get(&from).is_none_or(mpsc::Sender::is_closed) {
            // a new stream (or a new one after the last ended): ended ones are forgotten first
            conns.retain(|_, tx| !tx.is_closed());
            if conns.len() >= MAX_BRIDGE_CONNECTIONS {
                tracing::warn!(
                    "TURN bridge: MAX_BRIDGE_CONNECTIONS ({MAX_BRIDGE_CONNECTIONS}) open"
                );
                continue;
            }
            let (tx, rx) = mpsc::channel(BRIDGE_QUEUE);
            tokio::spawn(connection(udp.clone(), from, up.clone(), tls.clone(), rx));
            conns.insert(from, tx);
        }
        let Some(tx) = conns.get(&from) else {
            continue;
        };
        // a full queue drops the datagram, as a congested UDP path would
        let _ = tx.try_send(framed);
    }
}

/// One client socket's stream to the TURN server, until either side ends it.
async fn connection(
    udp: Arc<UdpSocket>,
    client: SocketAddr,
    up: Upstream,
    tls: ClientTls,
    mut rx: mpsc::Receiver<Vec<u8>>,
) {
    let connect = async {
        if up.tls {
            sotto_tls::connect_tls(&up.host, up.port, &tls)
                .await
                .map_err(|e| e.to_string())
        } else {
            let tcp = tokio::net::TcpStream::connect((up.host.as_str(), up.port))
                .await
                .map_err(|e| e.to_string())?;
            let _ = tcp.set_nodelay(true);
            Ok(sotto_tls::Stream::Plain(tcp))
        }
    };
    let stream = match tokio::time::timeout(BRIDGE_CONNECT_TIMEOUT, connect).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::warn!(host = %up.host, port = up.port, tls = up.tls, "TURN bridge: {e}");
            return;
        }
        Err(_) => {
            tracing::warn!(host = %up.host, port = up.port, "TURN bridge: connect timed out");
            return;
        }
    };
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut inbound: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            out = rx.recv() => {
                let Some(m) = out else { return };
                if wr.write_all(&m).await.is_err() {
                    return;
                }
            }
            got = rd.read(&mut chunk) => {
                let n = match got {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                inbound.extend_from_slice(&chunk[..n]);
                let mut at = 0;
                loop {
                    match next_message(&inbound[at..]) {
                        Framed::Partial => break,
                        Framed::Garbage => {
                            tracing::warn!("TURN bridge: the server sent neither STUN nor ChannelData");
                            return;
                        }
                        Framed::Message { len, consumed } => {
                            let _ = udp.send_to(&inbound[at..at + len], client).await;
                            at += consumed;
                        }
                    }
                }
                // what was sent is dropped once per read, not once per message
                inbound.drain(..at);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn which_urls_are_bridged() {
        assert_eq!(upstream("turn:a.example:3478?transport=udp"), None);
        assert_eq!(upstream("turn:a.example:3478"), None);
        assert_eq!(upstream("stun:a.example:3478"), None);
        assert_eq!(
            upstream("turn:a.example:3478?transport=tcp"),
            Some(Upstream {
                host: "a.example".into(),
                port: 3478,
                tls: false
            })
        );
        assert_eq!(
            upstream("turns:a.example:443?transport=tcp"),
            Some(Upstream {
                host: "a.example".into(),
                port: 443,
                tls: true
            })
        );
        assert_eq!(upstream("turns:a.example").map(|u| u.port), Some(5349));
    }

    #[test]
    fn channel_data_is_padded_on_the_stream_and_stun_passes() {
        // ChannelData 0x4000 with 5 bytes of data, unpadded as UDP allows
        let cd = [0x40, 0x00, 0x00, 0x05, 1, 2, 3, 4, 5];
        let s = to_stream(&cd).unwrap();
        assert_eq!(s, [0x40, 0x00, 0x00, 0x05, 1, 2, 3, 4, 5, 0, 0, 0]);
        // a STUN binding request with an empty body
        let mut stun = vec![0x00, 0x01, 0x00, 0x00];
        stun.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
        stun.extend_from_slice(&[7; 12]);
        assert_eq!(to_stream(&stun).unwrap(), stun);
        // lengths that lie, and other protocols, are not bridged
        assert_eq!(to_stream(&[0x40, 0x00, 0x00, 0x09, 1, 2]), None);
        assert_eq!(to_stream(&stun[..19]), None);
        assert_eq!(to_stream(&[0x80, 0, 0, 0]), None);
        assert_eq!(to_stream(&[0x40, 0]), None);
    }

    #[test]
    fn the_stream_splits_into_datagrams() {
        let mut stream = to_stream(&[0x40, 0x01, 0x00, 0x03, 9, 9, 9]).unwrap();
        let mut stun = vec![0x01, 0x01, 0x00, 0x04, 0x21, 0x12, 0xa4, 0x42];
        stun.extend_from_slice(&[0; 12]);
        stun.extend_from_slice(&[1, 2, 3, 4]);
        stream.extend_from_slice(&stun);
        assert_eq!(
            next_message(&stream),
            Framed::Message {
                len: 7,
                consumed: 8
            }
        );
        assert_eq!(
            next_message(&stream[8..]),
            Framed::Message {
                len: 24,
                consumed: 24
            }
        );
        assert_eq!(next_message(&stream[8..20]), Framed::Partial);
        assert_eq!(next_message(&stream[..3]), Framed::Partial);
        // ChannelData whose padding has not arrived yet waits for it
        assert_eq!(next_message(&stream[..7]), Framed::Partial);
        assert_eq!(next_message(&[0xc0, 0, 0, 0]), Framed::Garbage);
    }
}
