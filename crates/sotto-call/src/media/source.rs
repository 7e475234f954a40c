//! Media sources: VP8 frames from IVF files and Opus packets from Ogg files, looping, plus the
//! bundled test media (so a machine without a camera or ffmpeg can stream real encoded media).

use std::time::Duration;

use super::MediaError;

/// Largest frame a source hands out (an IVF frame header can claim up to 4 GiB).
pub const MAX_SOURCE_FRAME: usize = 1 << 20;
/// Most per-packet levels an audio source holds (an hour of 20 ms packets).
pub const MAX_SOURCE_LEVELS: usize = 180_000;

/// Bundled "camera 1": 320x240 VP8 test pattern, 15 fps, 4 s (`media/make-media.sh`).
pub const CAMERA1_IVF: &[u8] = include_bytes!("../../media/camera1.ivf");
/// Bundled "camera 2": colour bars with a moving box, for the source switch.
pub const CAMERA2_IVF: &[u8] = include_bytes!("../../media/camera2.ivf");
/// All-intra twin of camera 1: the same 60 frames, each a key frame (sent on keyframe requests).
pub const CAMERA1_INTRA_IVF: &[u8] = include_bytes!("../../media/camera1-intra.ivf");
/// All-intra twin of camera 2.
pub const CAMERA2_INTRA_IVF: &[u8] = include_bytes!("../../media/camera2-intra.ivf");
/// Bundled "microphone": 440 Hz tone, 48 kHz stereo Opus, 20 ms packets.
pub const TONE_OGG: &[u8] = include_bytes!("../../media/tone.ogg");

/// Whether an encoded VP8 frame is a key frame (RFC 6386 §9.1: frame tag bit 0 clear).
pub fn is_vp8_key_frame(frame: &[u8]) -> bool {
    frame.first().is_some_and(|b| b & 1 == 0)
}

/// A VP8 video source read from an IVF file held in memory. Loops at the end.
///
/// A file cannot encode a key frame on demand. A source may carry an all-intra *twin* (the same
/// frames, each encoded as a key frame, [`IvfSource::with_intra_twin`]); after
/// [`IvfSource::request_key_frame`] the next frame handed out is the twin of the frame that was
/// due (or the frame itself if it already is a key frame), and the clip then carries on with its
/// inter frames, which now reference a slightly different picture (small drift until the clip's
/// own next key frame). Without a twin a request is served by the clip's next key frame.
#[derive(Clone)]
pub struct IvfSource {
    name: String,
    frames: Vec<Vec<u8>>,
    intra: Option<std::sync::Arc<Vec<Vec<u8>>>>,
    key_frame_wanted: bool,
    frame_interval: Duration,
    next: usize,
    /// Loops completed.
    pub loops: u64,
}

impl std::fmt::Debug for IvfSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IvfSource")
            .field("name", &self.name)
            .field("frames", &self.frames.len())
            .finish()
    }
}

impl IvfSource {
    /// Parses an IVF file (32-byte header "DKIF", then 12-byte frame headers).
    ///
    /// # Errors
    /// [`MediaError::BadSource`] for anything that is not a VP8 IVF file with at least one frame.
    pub fn parse(name: &str, data: &[u8]) -> Result<Self, MediaError> {
        let bad = |why: &str| MediaError::BadSource(format!("{name}: {why}"));
        if data.len() < 32 || &data[0..4] != b"DKIF" {
            return Err(bad("not an IVF file"));
        }
        if &data[8..12] != b"VP80" {
            return Err(bad("not VP8"));
        }
        let header_len = u16::from_le_bytes([data[6], data[7]]) as usize;
        let den = u32::from_le_bytes([data[16], data[17], data[18], data[19]]);
        let num = u32::from_le_bytes([data[20], data[21], data[22], data[23]]);
        if den == 0 || num == 0 || header_len < 32 || header_len > data.len() {
            return Err(bad("bad IVF header"));
        }
        let frame_interval = Duration::from_micros(
            (1_000_000u64 * u64::from(num) / u64::from(den)).clamp(1_000, 1_000_000),
        );
        let mut frames = Vec::new();
        let mut at = header_len;
        while at + 12 <= data.len() {
            let len =
                u32::from_le_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]) as usize;
            at += 12;
            if len == 0 || len > MAX_SOURCE_FRAME || at + len > data.len() {
                return Err(bad("truncated or oversized frame"));
            }
            frames.push(data[at..at + len].to_vec());
            at += len;
        }
        if frames.is_empty() {
            return Err(bad("no frames"));
        }
        Ok(IvfSource {
            name: name.to_string(),
            frames,
            intra: None,
            key_frame_wanted: false,
            frame_interval,
            next: 0,
            loops: 0,
        })
    }

    /// Bundled camera 1 (with its all-intra twin).
    pub fn camera1() -> Result<Self, MediaError> {
        Self::parse("camera1", CAMERA1_IVF)?
            .with_intra_twin(Self::parse("camera1-intra", CAMERA1_INTRA_IVF)?)
    }

    /// Bundled camera 2 (with its all-intra twin).
    pub fn camera2() -> Result<Self, MediaError> {
        Self::parse("camera2", CAMERA2_IVF)?
            .with_intra_twin(Self::parse("camera2-intra", CAMERA2_INTRA_IVF)?)
    }

    /// Attaches an all-intra twin: `twin` must have as many frames, every one a key frame.
    ///
    /// # Errors
    /// [`MediaError::BadSource`] if the frame counts differ or a twin frame is not a key frame.
    pub fn with_intra_twin(mut self, twin: IvfSource) -> Result<Self, MediaError> {
        if twin.frames.len() != self.frames.len() {
            return Err(MediaError::BadSource(format!(
                "{}: intra twin has {} frames, the clip {}",
                twin.name,
                twin.frames.len(),
                self.frames.len()
            )));
        }
        if !twin.frames.iter().all(|f| is_vp8_key_frame(f)) {
            return Err(MediaError::BadSource(format!(
                "{}: intra twin holds a frame that is not a key frame",
                twin.name
            )));
        }
        self.intra = Some(std::sync::Arc::new(twin.frames));
        Ok(self)
    }

    /// Whether a keyframe request is served by the very next frame (an intra twin is attached).
    pub fn key_frames_on_demand(&self) -> bool {
        self.intra.is_some()
    }

    /// Asks for a key frame: the next frame with a twin, else the clip's next key frame.
    pub fn request_key_frame(&mut self) {
        self.key_frame_wanted = true;
    }

    /// Reads an IVF file from disk.
    pub fn open(path: &std::path::Path) -> Result<Self, MediaError> {
        let data = std::fs::read(path)
            .map_err(|e| MediaError::BadSource(format!("{}: {e}", path.display())))?;
        Self::parse(&path.display().to_string(), &data)
    }

    /// The source's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Time between frames.
    pub fn frame_interval(&self) -> Duration {
        self.frame_interval
    }

    /// Frames in one loop.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Never true: parse refuses empty files.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// The next encoded frame; wraps to the first (a key frame) at the end. After
    /// [`IvfSource::request_key_frame`], the next key frame available (see the type's docs).
    pub fn next_frame(&mut self) -> Vec<u8> {
        if self.next >= self.frames.len() {
            self.next = 0;
            self.loops += 1;
        }
        let i = self.next;
        self.next += 1;
        let mut f = &self.frames[i];
        if self.key_frame_wanted && !is_vp8_key_frame(f) {
            if let Some(twin) = self.intra.as_ref().and_then(|t| t.get(i)) {
                f = twin;
            }
        }
        if is_vp8_key_frame(f) {
            self.key_frame_wanted = false;
        }
        f.clone()
    }
}

/// An Opus audio source read from an Ogg file held in memory: one packet per 20 ms.
#[derive(Clone)]
pub struct OggOpusSource {
    name: String,
    packets: Vec<Vec<u8>>,
    next: usize,
    /// The RFC 6464 level of each packet's PCM ([`super::level`]), looped on its own; empty:
    /// unknown (no level is sent).
    levels: Vec<u8>,
    next_level: usize,
}

impl std::fmt::Debug for OggOpusSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OggOpusSource")
            .field("name", &self.name)
            .field("packets", &self.packets.len())
            .finish()
    }
}

impl OggOpusSource {
    /// Parses Ogg pages (RFC 3533) and reassembles packets from their lacing values; skips the
    /// OpusHead and OpusTags header packets (RFC 7845).
    ///
    /// # Errors
    /// [`MediaError::BadSource`] for anything that is not an Ogg Opus stream with audio packets.
    pub fn parse(name: &str, data: &[u8]) -> Result<Self, MediaError> {
        let bad = |why: &str| MediaError::BadSource(format!("{name}: {why}"));
        let mut packets = Vec::new();
        let mut partial: Vec<u8> = Vec::new();
        let mut at = 0usize;
        while at < data.len() {
            if data.len() < at + 27 || &data[at..at + 4] != b"OggS" {
                return Err(bad("bad Ogg page"));
            }
            let nseg = data[at + 26] as usize;
            let lacing_start = at + 27;
            if data.len() < lacing_start + nseg {
                return Err(bad("truncated Ogg page"));
            }
            let lacing = &data[lacing_start..lacing_start + nseg];
            let mut body = lacing_start + nseg;
            for &l in lacing {
                let l = l as usize;
                if data.len() < body + l {
                    return Err(bad("truncated Ogg segment"));
                }
                partial.extend_from_slice(&data[body..body + l]);
                body += l;
                if partial.len() > MAX_SOURCE_FRAME {
                    return Err(bad("oversized packet"));
                }
                if l < 255 {
                    packets.push(std::mem::take(&mut partial));
                }
            }
            at = body;
        }
        let audio: Vec<Vec<u8>> = packets
            .into_iter()
            .filter(|p| !p.starts_with(b"OpusHead") && !p.starts_with(b"OpusTags") && !p.is_empty())
            .collect();
        if audio.is_empty() {
            return Err(bad("no Opus packets"));
        }
        Ok(OggOpusSource {
            name: name.to_string(),
            packets: audio,
            next: 0,
            levels: Vec::new(),
            next_level: 0,
        })
    }

    /// Bundled tone, with the level of each packet computed from the PCM it was encoded from
    /// ([`super::level::tone_pcm`]).
    pub fn tone() -> Result<Self, MediaError> {
        let t = Self::parse("tone", TONE_OGG)?;
        let levels = (0..t.len())
            .map(|n| super::level::level_of_pcm(&super::level::tone_pcm(n)))
            .collect();
        t.with_levels(levels)
    }

    /// The same packets with these per-packet levels (−dBov, RFC 6464; looped on their own, so
    /// a schedule longer than the clip is a speaker's loudness over time), which go out in the
    /// audio-level header extension.
    ///
    /// # Errors
    /// [`MediaError::BadSource`] for a level above 127 or more than [`MAX_SOURCE_LEVELS`].
    pub fn with_levels(mut self, levels: Vec<u8>) -> Result<Self, MediaError> {
        if levels.len() > MAX_SOURCE_LEVELS || levels.iter().any(|&l| l > super::level::SILENCE) {
            return Err(MediaError::BadSource(format!(
                "{}: levels are 0..=127, at most MAX_SOURCE_LEVELS",
                self.name
            )));
        }
        self.levels = levels;
        self.next_level = 0;
        Ok(self)
    }

    /// Reads an Ogg Opus file from disk.
    pub fn open(path: &std::path::Path) -> Result<Self, MediaError> {
        let data = std::fs::read(path)
            .map_err(|e| MediaError::BadSource(format!("{}: {e}", path.display())))?;
        Self::parse(&path.display().to_string(), &data)
    }

    /// Packets in one loop.
    pub fn len(&self) -> usize {
        self.packets.len()
    }

    /// Never true: parse refuses streams without audio.
    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    /// The source's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The next packet and its level (if the source knows it), looping.
    pub fn next_packet_with_level(&mut self) -> (Vec<u8>, Option<u8>) {
        let level = if self.levels.is_empty() {
            None
        } else {
            if self.next_level >= self.levels.len() {
                self.next_level = 0;
            }
            self.next_level += 1;
            Some(self.levels[self.next_level - 1])
        };
        (self.next_packet(), level)
    }

    /// The next packet, looping.
    pub fn next_packet(&mut self) -> Vec<u8> {
        if self.next >= self.packets.len() {
            self.next = 0;
        }
        let p = self.packets[self.next].clone();
        self.next += 1;
        p
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bundled_media_parses() {
        let c = IvfSource::camera1().unwrap();
        assert_eq!(c.len(), 60);
        assert_eq!(c.frame_interval(), Duration::from_micros(66_666));
        let mut c2 = IvfSource::camera2().unwrap();
        // the first frame of each clip is a VP8 key frame (frame tag bit 0 clear)
        assert_eq!(c2.next_frame()[0] & 1, 0);
        let mut t = OggOpusSource::tone().unwrap();
        assert!((195..=205).contains(&t.len()), "{}", t.len());
        // the tone's level, computed from its PCM, goes with every packet
        assert_eq!(t.next_packet_with_level().1, Some(21));
    }

    #[test]
    fn levels_loop_on_their_own_and_are_checked() {
        let mut t = OggOpusSource::tone()
            .unwrap()
            .with_levels(vec![127, 30])
            .unwrap();
        let l: Vec<Option<u8>> = (0..5).map(|_| t.next_packet_with_level().1).collect();
        assert_eq!(l, [Some(127), Some(30), Some(127), Some(30), Some(127)]);
        let parsed = OggOpusSource::parse("x", TONE_OGG).unwrap();
        assert_eq!(parsed.clone().next_packet_with_level().1, None, "unknown");
        assert!(parsed.clone().with_levels(vec![128]).is_err());
        assert!(parsed.clone().with_levels(vec![127]).is_ok());
        assert!(parsed
            .clone()
            .with_levels(vec![0; MAX_SOURCE_LEVELS])
            .is_ok());
        assert!(parsed.with_levels(vec![0; MAX_SOURCE_LEVELS + 1]).is_err());
    }

    #[test]
    fn a_key_frame_request_is_served_by_the_next_frame_then_the_clip_goes_on() {
        let plain = IvfSource::parse("c", CAMERA1_IVF).unwrap();
        let mut c = IvfSource::camera1().unwrap();
        assert!(c.key_frames_on_demand() && !plain.key_frames_on_demand());
        let clip: Vec<Vec<u8>> = (0..c.len()).map(|i| plain.frames[i].clone()).collect();
        let twin = IvfSource::parse("t", CAMERA1_INTRA_IVF).unwrap().frames;
        // frames 0..3 as in the clip; a request before frame 3 (an inter frame) gives its twin
        for f in clip.iter().take(3) {
            assert_eq!(&c.next_frame(), f);
        }
        assert!(!is_vp8_key_frame(&clip[3]));
        c.request_key_frame();
        let got = c.next_frame();
        assert!(is_vp8_key_frame(&got));
        assert_eq!(got, twin[3]);
        // then the clip's own inter frames again
        assert_eq!(c.next_frame(), clip[4]);
        // a request when a key frame is due anyway takes the clip's own key frame
        let k = (5..clip.len())
            .find(|&i| is_vp8_key_frame(&clip[i]))
            .unwrap();
        for f in clip.iter().take(k).skip(5) {
            assert_eq!(&c.next_frame(), f);
        }
        c.request_key_frame();
        assert_eq!(c.next_frame(), clip[k]);
        assert_eq!(c.next_frame(), clip[k + 1]);
        // without a twin, a request waits for the clip's next key frame
        let mut p = plain.clone();
        p.request_key_frame();
        assert_eq!(p.next_frame(), clip[0]);
        assert_eq!(p.next_frame(), clip[1]);
        // a twin must match the clip frame for frame, and hold key frames only
        assert!(IvfSource::parse("c", CAMERA1_IVF)
            .unwrap()
            .with_intra_twin(IvfSource::parse("c2", CAMERA1_IVF).unwrap())
            .is_err());
        let mut short = CAMERA1_INTRA_IVF.to_vec();
        let one = 32 + 12 + u32::from_le_bytes(short[32..36].try_into().unwrap()) as usize;
        short.truncate(one);
        assert!(IvfSource::parse("c", CAMERA1_IVF)
            .unwrap()
            .with_intra_twin(IvfSource::parse("t", &short).unwrap())
            .is_err());
    }

    #[test]
    fn garbage_sources_are_refused_not_panicking() {
        for bad in [&b""[..], b"DKIF", &[0u8; 64][..], b"OggS"] {
            assert!(IvfSource::parse("x", bad).is_err());
            assert!(OggOpusSource::parse("x", bad).is_err());
        }
        let mut trunc = CAMERA1_IVF.to_vec();
        trunc.truncate(1000);
        assert!(IvfSource::parse("x", &trunc).is_err());
    }

    fn ivf_with_frame(len: usize) -> Vec<u8> {
        let mut d = CAMERA1_IVF[..32].to_vec();
        d.extend_from_slice(&(len as u32).to_le_bytes());
        d.extend_from_slice(&0u64.to_le_bytes());
        d.extend_from_slice(&vec![0x5a; len]);
        d
    }

    /// One Ogg stream: OpusHead, then `packet` laced across as many pages as it needs.
    fn ogg_with_packet(len: usize) -> Vec<u8> {
        fn page(out: &mut Vec<u8>, lacing: &[u8], body: &[u8]) {
            out.extend_from_slice(b"OggS");
            out.extend_from_slice(&[0; 22]);
            out.push(lacing.len() as u8);
            out.extend_from_slice(lacing);
            out.extend_from_slice(body);
        }
        let mut out = Vec::new();
        page(&mut out, &[19], b"OpusHead\x01\x02\0\0\x80\xbb\0\0\0\0\0");
        let packet = vec![0xa5u8; len];
        let mut lacing = vec![255u8; len / 255];
        lacing.push((len % 255) as u8);
        let mut at = 0;
        for chunk in lacing.chunks(255) {
            let n: usize = chunk.iter().map(|&l| l as usize).sum();
            page(&mut out, chunk, &packet[at..at + n]);
            at += n;
        }
        out
    }

    #[test]
    fn source_frame_limit_is_inclusive() {
        let ivf = IvfSource::parse("x", &ivf_with_frame(MAX_SOURCE_FRAME)).unwrap();
        assert_eq!(ivf.clone().next_frame().len(), MAX_SOURCE_FRAME);
        assert!(IvfSource::parse("x", &ivf_with_frame(MAX_SOURCE_FRAME + 1)).is_err());

        let ogg = OggOpusSource::parse("x", &ogg_with_packet(MAX_SOURCE_FRAME)).unwrap();
        assert_eq!(ogg.len(), 1);
        assert_eq!(ogg.clone().next_packet().len(), MAX_SOURCE_FRAME);
        assert!(OggOpusSource::parse("x", &ogg_with_packet(MAX_SOURCE_FRAME + 1)).is_err());
    }
}
