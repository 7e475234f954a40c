//! Sinks for decrypted media: VP8 frames to an IVF file, Opus packets to an Ogg file. Both are
//! standard containers that `ffprobe`/`ffplay` read.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::Path;

use super::MediaError;

/// Creates (or truncates) `path` readable and writable by its owner only: a recording holds a
/// call in the clear. An existing file's mode is set to 0600 as well.
fn private_file(path: &Path) -> Result<File, MediaError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let err = |e: std::io::Error| MediaError::Sink(format!("{}: {e}", path.display()));
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(err)?;
    Ok(f)
}

/// Writes VP8 frames to an IVF file. The header's size comes from the first key frame
/// (RFC 6386 §9.1); the frame count is patched in by [`IvfSink::finish`].
pub struct IvfSink {
    out: BufWriter<File>,
    frames: u32,
    started: bool,
    timebase_den: u32,
}

impl IvfSink {
    /// Creates `path`; `fps` becomes the IVF timebase (1/fps).
    pub fn create(path: &Path, fps: u32) -> Result<Self, MediaError> {
        let f = private_file(path)?;
        Ok(IvfSink {
            out: BufWriter::new(f),
            frames: 0,
            started: false,
            timebase_den: fps.max(1),
        })
    }

    /// Appends one decrypted VP8 frame. Frames before the first key frame are skipped (a
    /// decoder cannot use them); returns whether the frame was written.
    pub fn write_frame(&mut self, frame: &[u8]) -> Result<bool, MediaError> {
        let io = |e: std::io::Error| MediaError::Sink(e.to_string());
        if !self.started {
            // key frame: tag bit 0 clear, start code 9d 01 2a at bytes 3..6
            if frame.len() < 10 || frame[0] & 1 != 0 || frame[3..6] != [0x9d, 0x01, 0x2a] {
                return Ok(false);
            }
            let w = u16::from_le_bytes([frame[6], frame[7]]) & 0x3fff;
            let h = u16::from_le_bytes([frame[8], frame[9]]) & 0x3fff;
            let mut hdr = Vec::with_capacity(32);
            hdr.extend_from_slice(b"DKIF");
            hdr.extend_from_slice(&0u16.to_le_bytes());
            hdr.extend_from_slice(&32u16.to_le_bytes());
            hdr.extend_from_slice(b"VP80");
            hdr.extend_from_slice(&w.to_le_bytes());
            hdr.extend_from_slice(&h.to_le_bytes());
            hdr.extend_from_slice(&self.timebase_den.to_le_bytes());
            hdr.extend_from_slice(&1u32.to_le_bytes());
            hdr.extend_from_slice(&0u32.to_le_bytes());
            hdr.extend_from_slice(&0u32.to_le_bytes());
            self.out.write_all(&hdr).map_err(io)?;
            self.started = true;
        }
        let len =
            u32::try_from(frame.len()).map_err(|_| MediaError::Sink("frame too large".into()))?;
        self.out.write_all(&len.to_le_bytes()).map_err(io)?;
        self.out
            .write_all(&u64::from(self.frames).to_le_bytes())
            .map_err(io)?;
        self.out.write_all(frame).map_err(io)?;
        self.frames += 1;
        Ok(true)
    }

    /// Frames written so far.
    pub fn frames(&self) -> u32 {
        self.frames
    }

    /// Patches the frame count into the header and flushes.
    pub fn finish(&mut self) -> Result<(), MediaError> {
        let io = |e: std::io::Error| MediaError::Sink(e.to_string());
        self.out.flush().map_err(io)?;
        if self.started {
            let f = self.out.get_mut();
            f.seek(SeekFrom::Start(24)).map_err(io)?;
            f.write_all(&self.frames.to_le_bytes()).map_err(io)?;
            f.seek(SeekFrom::End(0)).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        Ok(())
    }
}

/// Writes Opus packets to an Ogg Opus file (RFC 7845: 48 kHz, stereo), one packet per page.
/// (webrtc-rs's own Ogg writer repeats the last packet at close and overflows on RTP timestamp
/// wrap-around, so this one is ours.)
pub struct OggSink {
    out: BufWriter<File>,
    serial: u32,
    page: u32,
    granule: u64,
    last_ts: Option<u32>,
    pending: Option<(Vec<u8>, u64)>,
    packets: u32,
}

/// CRC-32 of Ogg pages (RFC 3533 §6: polynomial 0x04c11db7, not reflected, init 0).
fn ogg_crc(data: &[u8]) -> u32 {
    let mut crc = 0u32;
    for &b in data {
        crc ^= u32::from(b) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04c1_1db7
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Largest Opus packet one page holds here (255 lacing values of 255 bytes, minus one).
pub const MAX_OGG_PACKET: usize = 255 * 255 - 1;

impl OggSink {
    /// Creates `path` and writes the OpusHead and OpusTags pages.
    pub fn create(path: &Path) -> Result<Self, MediaError> {
        let f = private_file(path)?;
        let mut s = OggSink {
            out: BufWriter::new(f),
            serial: rand::random(),
            page: 0,
            granule: 0,
            last_ts: None,
            pending: None,
            packets: 0,
        };
        let mut head = b"OpusHead".to_vec();
        head.push(1); // version
        head.push(2); // channels
        head.extend_from_slice(&0u16.to_le_bytes()); // pre-skip
        head.extend_from_slice(&48_000u32.to_le_bytes());
        head.extend_from_slice(&0i16.to_le_bytes()); // output gain
        head.push(0); // channel mapping family
        s.write_page(&head, 0x02, 0)?;
        let mut tags = b"OpusTags".to_vec();
        let vendor = b"sotto";
        tags.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
        tags.extend_from_slice(vendor);
        tags.extend_from_slice(&0u32.to_le_bytes());
        s.write_page(&tags, 0, 0)?;
        Ok(s)
    }

    fn write_page(&mut self, packet: &[u8], flags: u8, granule: u64) -> Result<(), MediaError> {
        if packet.len() > MAX_OGG_PACKET {
            return Err(MediaError::Sink(format!(
                "Opus packet of {} bytes exceeds MAX_OGG_PACKET ({MAX_OGG_PACKET})",
                packet.len()
            )));
        }
        let mut lacing = vec![255u8; packet.len() / 255];
        lacing.push((packet.len() % 255) as u8);
        let mut page = Vec::with_capacity(27 + lacing.len() + packet.len());
        page.extend_from_slice(b"OggS");
        page.push(0);
        page.push(flags);
        page.extend_from_slice(&granule.to_le_bytes());
        page.extend_from_slice(&self.serial.to_le_bytes());
        page.extend_from_slice(&self.page.to_le_bytes());
        page.extend_from_slice(&0u32.to_le_bytes());
        page.push(lacing.len() as u8);
        page.extend_from_slice(&lacing);
        page.extend_from_slice(packet);
        let crc = ogg_crc(&page);
        page[22..26].copy_from_slice(&crc.to_le_bytes());
        self.out
            .write_all(&page)
            .map_err(|e| MediaError::Sink(e.to_string()))?;
        self.page += 1;
        Ok(())
    }

    /// Appends one decrypted Opus packet with its RTP timestamp (48 kHz clock).
    pub fn write_packet(&mut self, packet: &[u8], rtp_timestamp: u32) -> Result<(), MediaError> {
        if packet.is_empty() {
            return Ok(());
        }
        // granule = samples so far; RTP timestamps wrap, so step with wrapping arithmetic and
        // treat anything beyond a second as a gap of one 20 ms packet.
        let step = match self.last_ts {
            Some(t) => match rtp_timestamp.wrapping_sub(t) {
                d @ 1..=48_000 => u64::from(d),
                _ => 960,
            },
            None => 960,
        };
        self.last_ts = Some(rtp_timestamp);
        self.granule += step;
        if let Some((p, g)) = self.pending.take() {
            self.write_page(&p, 0, g)?;
        }
        self.pending = Some((packet.to_vec(), self.granule));
        self.packets += 1;
        Ok(())
    }

    /// Packets written so far.
    pub fn packets(&self) -> u32 {
        self.packets
    }

    /// Writes the last page (end of stream) and flushes.
    pub fn finish(&mut self) -> Result<(), MediaError> {
        if let Some((p, g)) = self.pending.take() {
            self.write_page(&p, 0x04, g)?;
        }
        self.out
            .flush()
            .map_err(|e| MediaError::Sink(e.to_string()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ogg_crc_matches_the_pages_ffmpeg_wrote() {
        // every page of the bundled file (written by ffmpeg/libogg) carries a CRC we recompute
        let data = super::super::source::TONE_OGG;
        let mut at = 0;
        let mut pages = 0;
        while at < data.len() {
            let nseg = data[at + 26] as usize;
            let len: usize = data[at + 27..at + 27 + nseg]
                .iter()
                .map(|&l| l as usize)
                .sum();
            let end = at + 27 + nseg + len;
            let mut page = data[at..end].to_vec();
            let want = u32::from_le_bytes([page[22], page[23], page[24], page[25]]);
            page[22..26].copy_from_slice(&[0; 4]);
            assert_eq!(ogg_crc(&page), want, "page {pages}");
            at = end;
            pages += 1;
        }
        assert!(pages > 100);
    }

    #[test]
    fn ogg_packet_limit_is_inclusive() {
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("ok.ogg");
        let mut sink = OggSink::create(&ok).unwrap();
        sink.write_packet(&vec![0x11; MAX_OGG_PACKET], 0).unwrap();
        sink.finish().unwrap();
        // read back with the source parser: one packet of exactly the limit
        let back = crate::media::OggOpusSource::open(&ok).unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back.clone().next_packet().len(), MAX_OGG_PACKET);

        let mut sink = OggSink::create(&dir.path().join("big.ogg")).unwrap();
        sink.write_packet(&vec![0x11; MAX_OGG_PACKET + 1], 0)
            .unwrap();
        assert!(matches!(sink.finish(), Err(MediaError::Sink(_))));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod private_tests {
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn recordings_are_readable_by_their_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let ivf = dir.path().join("r.ivf");
        // an existing world-readable file is narrowed too
        std::fs::write(&ivf, b"old").unwrap();
        std::fs::set_permissions(&ivf, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(super::IvfSink::create(&ivf, 30).unwrap());
        let ogg = dir.path().join("r.ogg");
        drop(super::OggSink::create(&ogg).unwrap());
        for p in [ivf, ogg] {
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", p.display());
        }
    }
}
