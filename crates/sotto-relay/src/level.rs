//! The RFC 6464 client-to-mixer audio level: a one-byte RTP header extension on every audio
//! packet (voice-activity bit, level in −dBov), outside the SFrame ciphertext, which the relay
//! negotiates on the participants' audio m-line and reads to rank speakers
//! ([`crate::speakers`]). What it reveals to the relay: `protocol-spec/relay.md` §3.

/// The extension's URI (RFC 6464 §4).
pub const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";

/// The extension id negotiated for [`AUDIO_LEVEL_URI`] on the first audio m-line of `sdp`
/// (the relay's own offer, whose ids the answer keeps), if any.
pub fn extmap_id(sdp: &str) -> Option<u8> {
    let mut in_audio = false;
    for line in sdp.lines() {
        let line = line.trim_end();
        if let Some(m) = line.strip_prefix("m=") {
            if in_audio {
                return None;
            }
            in_audio = m.starts_with("audio ");
            continue;
        }
        if !in_audio {
            continue;
        }
        let Some(rest) = line.strip_prefix("a=extmap:") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (Some(id), Some(uri)) = (parts.next(), parts.next()) else {
            continue;
        };
        // "id" or "id/direction"
        let id = id.split('/').next().and_then(|i| i.parse::<u8>().ok());
        if uri == AUDIO_LEVEL_URI {
            return id.filter(|i| (1..=14).contains(i));
        }
    }
    None
}

/// The level (−dBov, 0..=127) an audio packet's header carries under extension `id`.
pub fn level(header: &rtc::rtp::header::Header, id: u8) -> Option<u8> {
    header
        .get_extension(id)
        .and_then(|b| b.first().copied())
        .map(|b| b & 0x7f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_audio_level_id_is_read_from_the_audio_section_only() {
        let sdp = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n\
                   a=extmap:3 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n\
                   m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=extmap:1 urn:x\r\n\
                   a=extmap:2/recvonly urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n\
                   m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
                   a=extmap:5 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n";
        assert_eq!(extmap_id(sdp), Some(2));
        assert_eq!(extmap_id("m=audio 9 X 111\r\na=extmap:1 urn:x\r\n"), None);
        // one-byte header ids are 1..=14
        assert_eq!(
            extmap_id("m=audio 9 X 111\r\na=extmap:15 urn:ietf:params:rtp-hdrext:ssrc-audio-level"),
            None
        );
    }

    #[test]
    fn the_level_is_the_low_seven_bits() {
        let mut h = rtc::rtp::header::Header::default();
        assert_eq!(level(&h, 1), None);
        h.set_extension(1, bytes::Bytes::from_static(&[0x80 | 30]))
            .unwrap();
        assert_eq!(level(&h, 1), Some(30));
        assert_eq!(level(&h, 2), None);
    }
}
