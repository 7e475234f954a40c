//! The SFrame header (RFC 9605 §4.3): a config byte, then the KID, then the CTR.
//!
//! ```text
//!  0 1 2 3 4 5 6 7
//! +-+-+-+-+-+-+-+-+---------------------------+---------------------------+
//! |X|  K  |Y|  C  |   KID (K+1 bytes if X=1)  |   CTR (C+1 bytes if Y=1)  |
//! +-+-+-+-+-+-+-+-+---------------------------+---------------------------+
//! ```
//! A value below 8 is carried in its 3-bit field (X or Y = 0); a larger value follows the config
//! byte as a big-endian integer of `K+1` (or `C+1`) bytes. This decoder is strict: it refuses
//! truncated input and any encoding that is not the shortest one, so every header has exactly one
//! byte string and decode-then-encode gives back the consumed bytes.

use crate::consts::MAX_HEADER_SIZE;
use crate::error::Error;

/// A decoded SFrame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Header {
    /// Key identifier.
    pub kid: u64,
    /// Frame counter.
    pub ctr: u64,
}

/// Bytes needed to write `v` as a big-endian integer without leading zero bytes (at least 1).
fn min_len(v: u64) -> usize {
    let bytes = (64 - v.leading_zeros()).div_ceil(8) as usize;
    bytes.max(1)
}

impl Header {
    /// A header for `kid` and `ctr`.
    pub const fn new(kid: u64, ctr: u64) -> Self {
        Header { kid, ctr }
    }

    /// Number of bytes [`Header::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        let field = |v: u64| if v < 8 { 0 } else { min_len(v) };
        1 + field(self.kid) + field(self.ctr)
    }

    /// Writes the shortest encoding of this header into a stack buffer; returns it and its length.
    pub fn encode_to_array(&self) -> ([u8; MAX_HEADER_SIZE], usize) {
        let mut buf = [0u8; MAX_HEADER_SIZE];
        let mut config = 0u8;
        let mut at = 1;
        if self.kid < 8 {
            config |= (self.kid as u8) << 4;
        } else {
            let n = min_len(self.kid);
            config |= 0x80 | (((n - 1) as u8) << 4);
            buf[at..at + n].copy_from_slice(&self.kid.to_be_bytes()[8 - n..]);
            at += n;
        }
        if self.ctr < 8 {
            config |= self.ctr as u8;
        } else {
            let n = min_len(self.ctr);
            config |= 0x08 | ((n - 1) as u8);
            buf[at..at + n].copy_from_slice(&self.ctr.to_be_bytes()[8 - n..]);
            at += n;
        }
        buf[0] = config;
        (buf, at)
    }

    /// Appends the shortest encoding of this header to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let (buf, n) = self.encode_to_array();
        out.extend_from_slice(&buf[..n]);
    }

    /// The shortest encoding of this header.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MAX_HEADER_SIZE);
        self.encode_into(&mut out);
        out
    }

    /// Decodes a header from the start of `input`; returns it and the number of bytes consumed.
    ///
    /// # Errors
    /// [`Error::MalformedHeader`] if `input` is truncated or the encoding is not minimal.
    pub fn decode(input: &[u8]) -> Result<(Header, usize), Error> {
        let (&config, rest) = input
            .split_first()
            .ok_or(Error::MalformedHeader("empty input"))?;
        let mut rest = rest;
        let mut read = |extended: bool, field: u8, what: &'static str| -> Result<u64, Error> {
            if !extended {
                return Ok(u64::from(field));
            }
            let n = usize::from(field) + 1;
            if rest.len() < n {
                return Err(Error::MalformedHeader(what));
            }
            let (bytes, tail) = rest.split_at(n);
            rest = tail;
            let value = bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
            if value < 8 || min_len(value) != n {
                return Err(Error::MalformedHeader("value not minimally encoded"));
            }
            Ok(value)
        };
        let kid = read(config & 0x80 != 0, (config >> 4) & 0x07, "truncated KID")?;
        let ctr = read(config & 0x08 != 0, config & 0x07, "truncated CTR")?;
        let consumed = input.len() - rest.len();
        Ok((Header { kid, ctr }, consumed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_minimal_encodings_are_refused() {
        // CTR 5 written as a 1-byte extended field
        assert!(Header::decode(&[0x08, 0x05]).is_err());
        // CTR 255 written in 2 bytes
        assert!(Header::decode(&[0x09, 0x00, 0xff]).is_err());
        // KID 7 written as an extended field
        assert!(Header::decode(&[0x80, 0x07]).is_err());
        // KID 256 written in 3 bytes
        assert!(Header::decode(&[0xa0, 0x00, 0x01, 0x00]).is_err());
        // the minimal ones decode
        assert_eq!(Header::decode(&[0x08, 0x08]), Ok((Header::new(0, 8), 2)));
        assert_eq!(
            Header::decode(&[0x90, 0x01, 0x00]),
            Ok((Header::new(256, 0), 3))
        );
    }

    #[test]
    fn empty_and_truncated_input() {
        assert_eq!(
            Header::decode(&[]),
            Err(Error::MalformedHeader("empty input"))
        );
        assert_eq!(
            Header::decode(&[0xf0]),
            Err(Error::MalformedHeader("truncated KID"))
        );
        assert_eq!(
            Header::decode(&[0x0f, 1, 2, 3]),
            Err(Error::MalformedHeader("truncated CTR"))
        );
    }

    #[test]
    fn every_single_and_double_byte_input_is_handled() {
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                if let Ok((h, n)) = Header::decode(&[a, b]) {
                    assert_eq!(h.encode(), [a, b][..n].to_vec());
                }
            }
        }
    }
}
