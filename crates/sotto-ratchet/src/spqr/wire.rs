//! The `pq_ratchet` field of a SignalMessage (`protocol-spec/ratchet.md` §12.3):
//! `0x01 ‖ varint(epoch) ‖ varint(index) ‖ type ‖ [varint(chunk index) ‖ chunk[32]]`.

use super::erasure::Chunk;
use super::Epoch;
use crate::consts::{SPQR_CHUNK_SIZE, SPQR_MAX_WIRE_SIZE};
use crate::error::{Error, Result};

/// Version byte of SPQR v1 messages.
pub const V1: u8 = 1;

/// What a braid message carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Payload {
    /// Nothing (type 0).
    None,
    /// A chunk of `header ‖ header MAC` (type 1).
    Hdr(Chunk),
    /// A chunk of the encapsulation-key vector (type 2).
    Ek(Chunk),
    /// A chunk of the encapsulation-key vector, also acknowledging `ct1` (type 3).
    EkCt1Ack(Chunk),
    /// Acknowledges `ct1` (type 4).
    Ct1Ack,
    /// A chunk of `ct1` (type 5).
    Ct1(Chunk),
    /// A chunk of `ct2 ‖ ciphertext MAC` (type 6).
    Ct2(Chunk),
}

impl Payload {
    fn parts(&self) -> (u8, Option<&Chunk>) {
        match self {
            Payload::None => (0, None),
            Payload::Hdr(c) => (1, Some(c)),
            Payload::Ek(c) => (2, Some(c)),
            Payload::EkCt1Ack(c) => (3, Some(c)),
            Payload::Ct1Ack => (4, None),
            Payload::Ct1(c) => (5, Some(c)),
            Payload::Ct2(c) => (6, Some(c)),
        }
    }
}

/// A decoded SPQR v1 message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message {
    /// Braid epoch (≥ 1).
    pub epoch: Epoch,
    /// Counter of the SPQR chain key used (0: none).
    pub index: u32,
    /// Braid payload.
    pub payload: Payload,
}

fn put_varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7F) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(bytes: &[u8], at: &mut usize) -> Result<u64> {
    let bad = Error::InvalidMessage("SPQR: bad varint");
    let mut out = 0u64;
    for i in 0..10 {
        let b = *bytes.get(*at).ok_or(bad.clone())?;
        *at += 1;
        let bits = u64::from(b & 0x7F);
        if i == 9 && bits > 1 {
            return Err(bad);
        }
        out |= bits << (7 * i);
        if b & 0x80 == 0 {
            return Ok(out);
        }
    }
    Err(bad)
}

impl Message {
    /// Wire bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(SPQR_MAX_WIRE_SIZE);
        out.push(V1);
        put_varint(self.epoch, &mut out);
        put_varint(u64::from(self.index), &mut out);
        let (ty, chunk) = self.payload.parts();
        out.push(ty);
        if let Some(c) = chunk {
            put_varint(u64::from(c.index), &mut out);
            out.extend_from_slice(&c.data);
        }
        out
    }

    /// Strict parse of a v1 message (the caller handles the empty/V0 and unknown-version cases).
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        if bytes.len() > SPQR_MAX_WIRE_SIZE {
            return Err(Error::TooLarge(bytes.len()));
        }
        if bytes.first() != Some(&V1) {
            return Err(Error::InvalidMessage("SPQR: not a v1 message"));
        }
        let mut at = 1;
        let epoch = get_varint(bytes, &mut at)?;
        if epoch == 0 {
            return Err(Error::InvalidMessage("SPQR: epoch 0"));
        }
        let index = u32::try_from(get_varint(bytes, &mut at)?)
            .map_err(|_| Error::InvalidMessage("SPQR: index too large"))?;
        let ty = *bytes
            .get(at)
            .ok_or(Error::InvalidMessage("SPQR: missing type"))?;
        at += 1;
        let mut chunk = || -> Result<Chunk> {
            let index = u16::try_from(get_varint(bytes, &mut at)?)
                .map_err(|_| Error::InvalidMessage("SPQR: chunk index too large"))?;
            let data: [u8; SPQR_CHUNK_SIZE] = bytes
                .get(at..at + SPQR_CHUNK_SIZE)
                .and_then(|d| d.try_into().ok())
                .ok_or(Error::InvalidMessage("SPQR: short chunk"))?;
            at += SPQR_CHUNK_SIZE;
            Ok(Chunk { index, data })
        };
        let payload = match ty {
            0 => Payload::None,
            1 => Payload::Hdr(chunk()?),
            2 => Payload::Ek(chunk()?),
            3 => Payload::EkCt1Ack(chunk()?),
            4 => Payload::Ct1Ack,
            5 => Payload::Ct1(chunk()?),
            6 => Payload::Ct2(chunk()?),
            _ => return Err(Error::InvalidMessage("SPQR: unknown message type")),
        };
        if at != bytes.len() {
            return Err(Error::InvalidMessage("SPQR: trailing bytes"));
        }
        Ok(Self {
            epoch,
            index,
            payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(i: u16) -> Chunk {
        Chunk {
            index: i,
            data: [i as u8; 32],
        }
    }

    #[test]
    fn known_layout() {
        let m = Message {
            epoch: 300,
            index: 1,
            payload: Payload::Hdr(chunk(2)),
        };
        let bytes = m.encode();
        assert_eq!(&bytes[..6], &[0x01, 0xAC, 0x02, 0x01, 0x01, 0x02]);
        assert_eq!(bytes.len(), 6 + 32);
        let ack = Message {
            epoch: 1,
            index: 0,
            payload: Payload::Ct1Ack,
        };
        assert_eq!(ack.encode(), vec![1, 1, 0, 4]);
    }

    #[test]
    fn round_trips_every_type_and_extreme_values() {
        for payload in [
            Payload::None,
            Payload::Hdr(chunk(0)),
            Payload::Ek(chunk(65535)),
            Payload::EkCt1Ack(chunk(3)),
            Payload::Ct1Ack,
            Payload::Ct1(chunk(128)),
            Payload::Ct2(chunk(7)),
        ] {
            let m = Message {
                epoch: u64::MAX,
                index: u32::MAX,
                payload,
            };
            let bytes = m.encode();
            assert!(bytes.len() <= SPQR_MAX_WIRE_SIZE);
            assert_eq!(Message::decode(&bytes).unwrap(), m);
        }
        // The largest message is exactly the limit.
        let largest = Message {
            epoch: u64::MAX,
            index: u32::MAX,
            payload: Payload::Ct2(chunk(u16::MAX)),
        };
        assert_eq!(largest.encode().len(), SPQR_MAX_WIRE_SIZE);
    }

    #[test]
    fn malformed_messages_are_refused() {
        let good = Message {
            epoch: 1,
            index: 1,
            payload: Payload::Ct1(chunk(1)),
        }
        .encode();
        let refused = |b: &[u8]| Message::decode(b).is_err();
        assert!(refused(&[]));
        assert!(refused(&[2, 1, 1, 0]), "version 2");
        assert!(refused(&[1, 0, 1, 0]), "epoch 0");
        assert!(refused(&[1, 1, 1, 7]), "type 7");
        assert!(refused(&[1, 1, 1]), "no type");
        assert!(refused(&good[..good.len() - 1]), "short chunk");
        let mut long = good.clone();
        long.push(0);
        assert!(refused(&long), "trailing byte");
        assert!(
            refused(&[1, 1, 0x80, 0x80, 0x80, 0x80, 0x10, 0]),
            "index > u32"
        );
        assert!(
            refused(&[1, 1, 1, 1, 0x80, 0x80, 0x04]),
            "chunk index > u16"
        );
        assert!(refused(&[1; SPQR_MAX_WIRE_SIZE + 1]));
    }
}
