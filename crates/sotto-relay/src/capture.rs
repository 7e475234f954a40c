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
/// (RFC 7741) and are joined up to the marker bit. Records that end up in no frame are dropped
/// silently here; [`reassemble`] counts them.
pub fn frames(records: &[Record]) -> Vec<CapturedFrame> {
    reassemble(records)
        .frames
        .into_iter()
        .map(|(_, f)| f)
        .collect()
}

/// Frames reassembled from a capture, and an account of every video record that is in none.
/// Every video record is counted exactly once: in a frame, or in one of the three counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reassembly {
    /// Frames, each with the index of the record that completed it, to place it against
    /// membership [`Mark`]s (a frame with index `< mark.index` was captured before the mark).
    pub frames: Vec<(usize, CapturedFrame)>,
    /// Video records whose payload has no valid VP8 payload descriptor (RFC 7741).
    pub undepacketizable: usize,
    /// Video records of frames that could not be completed: a sequence gap, a timestamp change
    /// or a new partition start before the marker bit (packets lost or reordered before the
    /// relay), or a frame with an empty body.
    pub broken: usize,
    /// Video records of frames still open when the capture ends (no marker bit yet: the sender
    /// stopped, or the capture was read, in the middle of a frame).
    pub unfinished: usize,
    /// How many frames those are: at most one per sender.
    pub unfinished_frames: usize,
}

impl Reassembly {
    /// Video records in no frame, whatever the reason.
    pub fn skipped(&self) -> usize {
        self.undepacketizable + self.broken + self.unfinished
    }
}

/// As [`frames`], with the index of each frame's last record and a count of the video records
/// left out ([`Reassembly`]).
pub fn reassemble(records: &[Record]) -> Reassembly {
    /// A video frame being put together: timestamp, last sequence number, body, records in it.
    struct Partial {
        timestamp: u32,
        seq: u16,
        body: Vec<u8>,
        records: usize,
    }
    let mut out = Reassembly::default();
    let mut partial: std::collections::HashMap<&str, Partial> = Default::default();
    for (i, r) in records.iter().enumerate() {
        if r.kind == Kind::Audio {
            out.frames.push((
                i,
                CapturedFrame {
                    kind: Kind::Audio,
                    sender: r.sender.clone(),
                    timestamp: r.timestamp,
                    frame: r.payload.clone(),
                },
            ));
            continue;
        }
        let payload = Bytes::copy_from_slice(&r.payload);
        let mut d = Vp8Packet::default();
        let Ok(body) = d.depacketize(&payload) else {
            out.undepacketizable += 1;
            continue;
        };
        let start = d.is_partition_head(&payload);
        let open = partial.remove(r.sender.as_str());
        let mut p = match open {
            Some(p) if !start && p.timestamp == r.timestamp && p.seq.wrapping_add(1) == r.seq => p,
            other => {
                // whatever was open for this sender cannot be completed any more
                out.broken += other.map_or(0, |p| p.records);
                if !start {
                    out.broken += 1;
                    continue;
                }
                Partial {
                    timestamp: r.timestamp,
                    seq: r.seq,
                    body: Vec::new(),
                    records: 0,
                }
            }
        };
        p.seq = r.seq;
        p.body.extend_from_slice(&body);
        p.records += 1;
        if !r.marker {
            partial.insert(&r.sender, p);
        } else if p.body.is_empty() {
            out.broken += p.records;
        } else {
            out.frames.push((
                i,
                CapturedFrame {
                    kind: Kind::Video,
                    sender: r.sender.clone(),
                    timestamp: r.timestamp,
                    frame: p.body,
                },
            ));
        }
    }
    out.unfinished = partial.values().map(|p| p.records).sum();
    out.unfinished_frames = partial.len();
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

    #[test]
    fn every_video_record_is_in_a_frame_or_counted() {
        let v = |sender: &str, seq: u16, timestamp: u32, marker: bool, payload: &[u8]| Record {
            kind: Kind::Video,
            sender: sender.into(),
            seq,
            timestamp,
            marker,
            payload: payload.to_vec(),
        };
        // VP8 payload descriptor: 0x10 starts a partition, 0x00 continues one (the depacketizer
        // wants at least 4 bytes)
        let records = vec![
            v("a", 1, 90, false, &[0x10, 1, 1, 1]),
            v("b", 9, 90, false, &[0x10, 7, 7, 7]),
            v("a", 2, 90, true, &[0x00, 2, 2, 2]), // a: first frame
            v("a", 3, 180, false, &[0x10, 3, 3, 3]),
            v("a", 5, 180, true, &[0x00, 4, 4, 4]), // gap: 2 records broken
            v("a", 6, 270, true, &[0x00, 5, 5, 5]), // continues nothing: broken
            v("a", 7, 360, true, &[0x10]),          // too short: no descriptor
            v("b", 10, 90, true, &[0x00, 8, 8, 8]), // b: first frame
            v("b", 11, 180, false, &[0x10, 9, 9, 9]),
            v("b", 12, 180, false, &[0x00, 9, 9, 9]), // b: 2 records unfinished at the end
        ];
        let r = reassemble(&records);
        let got: Vec<(usize, &str, Vec<u8>)> = r
            .frames
            .iter()
            .map(|(i, f)| (*i, f.sender.as_str(), f.frame.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                (2, "a", vec![1, 1, 1, 2, 2, 2]),
                (7, "b", vec![7, 7, 7, 8, 8, 8])
            ]
        );
        assert_eq!(
            (
                r.undepacketizable,
                r.broken,
                r.unfinished,
                r.unfinished_frames
            ),
            (1, 3, 2, 1),
            "{r:?}"
        );
        assert_eq!(4 + r.skipped(), records.len());
        assert_eq!(frames(&records).len(), 2);
    }
}
