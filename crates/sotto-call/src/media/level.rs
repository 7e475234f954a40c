//! The audio level a participant sends with each audio packet (RFC 6464 client-to-mixer
//! indication, `urn:ietf:params:rtp-hdrext:ssrc-audio-level`): the loudness of the PCM the
//! packet was encoded from, in −dBov, in clear in the RTP header so the relay can rank speakers
//! without any key (what that reveals: `protocol-spec/relay.md` §3).
//!
//! sotto-call has no PCM path of its own: its audio sources are Opus packets encoded
//! beforehand ([`super::OggOpusSource`]), so the level comes with the source, one per packet,
//! computed by [`level_of_pcm`] from the PCM that was encoded (for the bundled tone: the
//! 440 Hz sine `media/make-media.sh` encodes, see [`tone_pcm`]).

/// The extension's URI (the relay's, which reads it).
pub use sotto_relay::level::AUDIO_LEVEL_URI;

/// RFC 6464's silence (and the floor of every level): −127 dBov.
pub const SILENCE: u8 = 127;

/// The RFC 6464 level of one packet's PCM: its RMS relative to a full-scale 16-bit sine's
/// overload point (dBov, RFC 6464 §3: 0 dBov is the RMS of a full-scale square wave, i.e.
/// 32767), negated and rounded, from 0 (loudest) to 127 (silence or digital zero).
pub fn level_of_pcm(pcm: &[i16]) -> u8 {
    if pcm.is_empty() {
        return SILENCE;
    }
    let energy: f64 = pcm.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    let rms = (energy / pcm.len() as f64).sqrt() / 32767.0;
    if rms <= 0.0 {
        return SILENCE;
    }
    let dbov = 20.0 * rms.log10();
    (-dbov).round().clamp(0.0, f64::from(SILENCE)) as u8
}

/// The PCM of the bundled tone's packet `n` (20 ms, 48 kHz, both channels interleaved): what
/// `media/make-media.sh` has ffmpeg encode, a 440 Hz sine of amplitude 1/8 (ffmpeg's `sine`
/// source; its `volumedetect` measures −21.1 dB mean, −18.1 dB peak).
pub fn tone_pcm(n: usize) -> Vec<i16> {
    const RATE: f64 = 48_000.0;
    const FRAME: usize = 960;
    let mut out = Vec::with_capacity(FRAME * 2);
    for i in 0..FRAME {
        let t = (n * FRAME + i) as f64 / RATE;
        let s = (2.0 * std::f64::consts::PI * 440.0 * t).sin() * 32767.0 / 8.0;
        out.push(s as i16);
        out.push(s as i16);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_of_known_signals() {
        assert_eq!(level_of_pcm(&[]), SILENCE);
        assert_eq!(level_of_pcm(&[0; 960]), SILENCE);
        // a full-scale square wave is 0 dBov
        let square: Vec<i16> = (0..960)
            .map(|i| if i % 2 == 0 { 32767 } else { -32767 })
            .collect();
        assert_eq!(level_of_pcm(&square), 0);
        // the tone: amplitude 1/8, RMS 1/(8·√2): −21.1 dBov, as ffmpeg measured it
        assert_eq!(level_of_pcm(&tone_pcm(0)), 21);
        assert_eq!(level_of_pcm(&tone_pcm(17)), 21);
        // one LSB of noise is far below speech but not digital silence: ~90 dBov
        assert_eq!(level_of_pcm(&[1, -1, 1, -1]), 90);
        // one LSB in twelve samples: ~101 dBov
        assert_eq!(level_of_pcm(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), 101);
    }
}
