//! Capture mode: every payload the relay forwards, as the relay saw it, so anyone can check
//! what an untrusted relay learns. Format (`protocol-spec/relay.md`):
//!
//! ```text
//! file   = "SOTTOCAP" 0x01 record*
//! record = kind(1: 0 audio, 1 video) name_len(1) name seq(2) timestamp(4) marker(1)
//!          len(4) payload(len)          integers big-endian; payload = RTP payload
//! ```

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Mutex;

use bytes::Bytes;
use rtc::rtp::codec::vp8::Vp8Packet;
use rtc::rtp::packetizer::Depacketizer;

use crate::consts::{MAX_CAPTURE_PAYLOAD, MAX_NAME};

/// File magic.
pub const MAGIC: &[u8; 9] = b"SOTTOCAP\x01";

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Opus.
    Audio,
    /// VP8.
    Video,
}

/// One forwarded RTP payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Stream kind.
    pub kind: Kind,
    /// Sending participant.
    pub sender: String,
    /// RTP sequence number.
    pub seq: u16,
    /// RTP timestamp.
    pub timestamp: u32,
    /// RTP marker bit.
    pub marker: bool,
    /// RTP payload as forwarded.
    pub payload: Vec<u8>,
}

/// Appends records to a capture file, and membership marks to `members.txt` beside it.
pub struct CaptureWriter {
    out: Mutex<Out>,
}

struct Out {
    records: BufWriter<File>,
    written: u64,
    marks: BufWriter<File>,
}

/// A membership change, placed in the capture: records `0..index` were captured before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    /// Number of capture records written before the change.
    pub index: u64,
    /// `true`: admitted to the room; `false`: left it.
    pub joined: bool,
    /// Who.
    pub participant: String,
}

/// Name of the membership file beside `capture.bin`.
pub const MARKS_FILE: &str = "members.txt";

impl CaptureWriter {
    /// Creates `dir/capture.bin` and `dir/members.txt`.
    pub fn create(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut records = BufWriter::new(File::create(dir.join("capture.bin"))?);
        records.write_all(MAGIC)?;
        let marks = BufWriter::new(File::create(dir.join(MARKS_FILE))?);
        Ok(CaptureWriter {
            out: Mutex::new(Out {
                records,
                written: 0,
                marks,
            }),
        })
    }

    /// Notes that `participant` was admitted to (`joined`) or left a room, at the current
    /// position of the capture: one line `<records before> joined|left <name>`.
    pub fn mark(&self, joined: bool, participant: &str) {
        let mut out = self
            .out
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let line = format!(
            "{} {} {participant}\n",
            out.written,
            if joined { "joined" } else { "left" }
        );
        if let Err(e) = out.marks.write_all(line.as_bytes()) {
            tracing::warn!("capture marks: {e}");
        }
    }

    /// Writes one record (names are at most [`MAX_NAME`] bytes, enforced at join).
    pub fn write(&self, r: &Record) {
        let name = &r.sender.as_bytes()[..r.sender.len().min(MAX_NAME)];
        let mut buf = Vec::with_capacity(13 + name.len() + r.payload.len());
        buf.push(match r.kind {
            Kind::Audio => 0,
            Kind::Video => 1,
        });
        buf.push(name.len() as u8);
        buf.extend_from_slice(name);
        buf.extend_from_slice(&r.seq.to_be_bytes());
        buf.extend_from_slice(&r.timestamp.to_be_bytes());
        buf.push(u8::from(r.marker));
        buf.extend_from_slice(&(r.payload.len() as u32).to_be_bytes());
        buf.extend_from_slice(&r.payload);
        let mut out = self
            .out
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Err(e) = out.records.write_all(&buf) {
            tracing::warn!("capture: {e}");
        }
        out.written += 1;
    }

    /// Flushes to disk.
    pub fn flush(&self) {
        let mut out = self
            .out
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = out.records.flush();
        let _ = out.marks.flush();
    }
}

/// Parses `members.txt`. Refuses malformed lines and names over [`MAX_NAME`] bytes.
pub fn parse_marks(text: &str) -> Result<Vec<Mark>, CaptureError> {
    let bad = |w: &str| CaptureError(format!("members file: {w}"));
    text.lines()
        .map(|l| {
            let mut f = l.splitn(3, ' ');
            let index = f
                .next()
                .and_then(|n| n.parse::<u64>().ok())
                .ok_or_else(|| bad("bad index"))?;
            let joined = match f.next() {
                Some("joined") => true,
                Some("left") => false,
                _ => return Err(bad("bad event")),
            };
            let participant = f.next().unwrap_or_default();
            if participant.is_empty() || participant.len() > MAX_NAME {
                return Err(bad("bad name"));
            }
            Ok(Mark {
                index,
                joined,
                participant: participant.to_string(),
            })
        })
        .collect()
}

/// A capture file that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("capture file: {0}")]
pub struct CaptureError(pub String);

/// Parses a capture file. Never panics; refuses truncation and oversized records.
pub fn parse(data: &[u8]) -> Result<Vec<Record>, CaptureError> {
    let bad = |w: &str| CaptureError(w.to_string());
    if data.len() < MAGIC.len() || &data[..MAGIC.len()] != MAGIC {
        return Err(bad("not a sotto capture (bad magic)"));
    }
    let mut at = MAGIC.len();
    let mut out = Vec::new();
    let take = |at: &mut usize, n: usize| -> Result<&[u8], CaptureError> {
        let s = data
            .get(*at..*at + n)
            .ok_or_else(|| bad("truncated record"))?;
        *at += n;
        Ok(s)
    };
    while at < data.len() {
        let kind = match take(&mut at, 1)?[0] {
            0 => Kind::Audio,
            1 => Kind::Video,
            _ => return Err(bad("unknown record kind")),
        };
        let nlen = take(&mut at, 1)?[0] as usize;
        let sender = String::from_utf8(take(&mut at, nlen)?.to_vec())
            .map_err(|_| bad("name is not UTF-8"))?;
        let s = take(&mut at, 2)?;
        let seq = u16::from_be_bytes([s[0], s[1]]);
        let t = take(&mut at, 4)?;
        let timestamp = u32::from_be_bytes([t[0], t[1], t[2], t[3]]);
        let marker = take(&mut at, 1)?[0] != 0;
        let l = take(&mut at, 4)?;
        let len = u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize;
        if len > MAX_CAPTURE_PAYLOAD {
            return Err(bad("record exceeds MAX_CAPTURE_PAYLOAD"));
        }
        let payload = take(&mut at, len)?.to_vec();
        out.push(Record {
            kind,
            sender,
            seq,
            timestamp,
            marker,
            payload,
        });
    }
    Ok(out)
}

/// A frame reassembled from captured payloads: what the sender handed to RTP (for sotto,
/// an SFrame ciphertext in codec-aware layout).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturedFrame {
    /// Stream kind.
    pub kind: Kind,
    /// Sender.
    pub sender: String,
    /// RTP timestamp.
    pub timestamp: u32,
    /// The frame.
    pub frame: Vec<u8>,
}

/// Reassembles frames: Opus payloads are frames; VP8 payloads lose their payload descriptor
/// (RFC 7741) and are joined up to the marker bit. Incomplete frames are skipped.
pub fn frames(records: &[Record]) -> Vec<CapturedFrame> {
    frames_with_index(records)
        .into_iter()
        .map(|(_, f)| f)
        .collect()
}

/// As [`frames`], each with the index of the record that completed it, to place it against
/// membership [`Mark`]s (a frame with index `< mark.index` was captured before the mark).
pub fn frames_with_index(records: &[Record]) -> Vec<(usize, CapturedFrame)> {
    let mut out = Vec::new();
    let mut partial: std::collections::HashMap<String, (u32, u16, Vec<u8>)> = Default::default();
    for (i, r) in records.iter().enumerate() {
        match r.kind {
            Kind::Audio => out.push((
                i,
                CapturedFrame {
                    kind: Kind::Audio,
                    sender: r.sender.clone(),
                    timestamp: r.timestamp,
                    frame: r.payload.clone(),
                },
            )),
            Kind::Video => {
                let mut d = Vp8Packet::default();
                let Ok(body) = d.depacketize(&Bytes::copy_from_slice(&r.payload)) else {
                    continue;
                };
                let start = d.is_partition_head(&Bytes::copy_from_slice(&r.payload));
                let entry = partial.entry(r.sender.clone());
                let e = entry.or_insert((r.timestamp, r.seq.wrapping_sub(1), Vec::new()));
                if start {
                    *e = (r.timestamp, r.seq, body.to_vec());
                } else if e.0 == r.timestamp && e.1.wrapping_add(1) == r.seq && !e.2.is_empty() {
                    e.1 = r.seq;
                    e.2.extend_from_slice(&body);
                } else {
                    e.2.clear();
                    continue;
                }
                if r.marker && !e.2.is_empty() {
                    out.push((
                        i,
                        CapturedFrame {
                            kind: Kind::Video,
                            sender: r.sender.clone(),
                            timestamp: r.timestamp,
                            frame: std::mem::take(&mut e.2),
                        },
                    ));
                }
            }
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let w = CaptureWriter::create(dir.path()).unwrap();
        let r = Record {
            kind: Kind::Video,
            sender: "alice".into(),
            seq: 7,
            timestamp: 90,
            marker: true,
            payload: vec![0x10, 1, 2, 3],
        };
        w.write(&r);
        w.flush();
        let data = std::fs::read(dir.path().join("capture.bin")).unwrap();
        assert_eq!(parse(&data).unwrap(), vec![r.clone()]);
        let f = frames(&parse(&data).unwrap());
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].frame, vec![1, 2, 3]);
        for cut in 0..data.len() {
            let _ = parse(&data[..cut]); // never panics
        }
        assert!(parse(&data[..data.len() - 1]).is_err());
        assert!(parse(b"nope").is_err());

        // membership marks sit at the capture position they happened at
        w.mark(true, "bob");
        w.write(&r);
        w.mark(false, "bob");
        w.flush();
        let marks =
            parse_marks(&std::fs::read_to_string(dir.path().join(MARKS_FILE)).unwrap()).unwrap();
        let at = |index, joined| Mark {
            index,
            joined,
            participant: "bob".into(),
        };
        assert_eq!(marks, vec![at(1, true), at(2, false)]);
        for bad in [
            "x joined bob",
            "1 came bob",
            "1 joined",
            &format!("1 left {}", "n".repeat(65)),
        ] {
            assert!(parse_marks(bad).is_err(), "{bad}");
        }
    }
}
