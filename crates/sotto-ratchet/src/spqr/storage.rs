//! Storage form of [`SpqrState`]: sotto's own protobuf, kept in `SessionStructure` field 15
//! (`pq_ratchet_state`, the field libsignal uses for its own, different, encoding).

use std::collections::VecDeque;

use prost::Message as _;
use zeroize::{Zeroize, Zeroizing};

use super::auth::{Authenticator, MAC_SIZE};
use super::braid::Braid;
use super::chain::{Chain, ChainEpoch, EpochDirection};
use super::erasure::{Decoder, Encoder};
use super::kem::{CT1_SIZE, CT2_SIZE, DK_SIZE, EK_SIZE, ENCAPS_STATE_SIZE, HEADER_SIZE};
use super::{Direction, Negotiation, SpqrState};
use crate::error::{Error, Result};

mod pb {
    use zeroize::Zeroize;

    #[derive(Clone, PartialEq, prost::Message, Zeroize)]
    pub struct State {
        #[prost(message, optional, tag = "1")]
        pub braid: Option<Braid>,
        #[prost(message, optional, tag = "2")]
        pub negotiation: Option<Negotiation>,
        #[prost(message, optional, tag = "3")]
        pub chain: Option<Chain>,
    }

    #[derive(Clone, PartialEq, prost::Message, Zeroize)]
    pub struct Negotiation {
        #[prost(bytes = "vec", tag = "1")]
        pub auth_key: Vec<u8>,
        #[prost(uint32, tag = "2")]
        pub direction: u32,
        #[prost(uint32, tag = "3")]
        pub min_version: u32,
    }

    #[derive(Clone, PartialEq, prost::Message, Zeroize)]
    pub struct Chain {
        #[prost(uint32, tag = "1")]
        pub direction: u32,
        #[prost(uint64, tag = "2")]
        pub current_epoch: u64,
        #[prost(uint64, tag = "3")]
        pub send_epoch: u64,
        #[prost(message, repeated, tag = "4")]
        pub links: Vec<Link>,
        #[prost(bytes = "vec", tag = "5")]
        pub next_root: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message, Zeroize)]
    pub struct Link {
        #[prost(message, optional, tag = "1")]
        pub send: Option<Dir>,
        #[prost(message, optional, tag = "2")]
        pub recv: Option<Dir>,
    }

    #[derive(Clone, PartialEq, prost::Message, Zeroize)]
    pub struct Dir {
        #[prost(uint32, tag = "1")]
        pub ctr: u32,
        /// Empty once the chain is retired.
        #[prost(bytes = "vec", tag = "2")]
        pub next: Vec<u8>,
        /// `BE32(counter) ‖ key[32]` per skipped key.
        #[prost(bytes = "vec", tag = "3")]
        pub skipped: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message, Zeroize)]
    pub struct Braid {
        #[prost(uint32, tag = "1")]
        pub state: u32,
        #[prost(uint64, tag = "2")]
        pub epoch: u64,
        #[prost(bytes = "vec", tag = "3")]
        pub auth_root: Vec<u8>,
        #[prost(bytes = "vec", tag = "4")]
        pub auth_mac: Vec<u8>,
        #[prost(bytes = "vec", tag = "5")]
        pub ek: Vec<u8>,
        #[prost(bytes = "vec", tag = "6")]
        pub dk: Vec<u8>,
        #[prost(bytes = "vec", tag = "7")]
        pub hdr: Vec<u8>,
        #[prost(bytes = "vec", tag = "8")]
        pub es: Vec<u8>,
        #[prost(bytes = "vec", tag = "9")]
        pub ct1: Vec<u8>,
        #[prost(message, optional, tag = "10")]
        pub encoder: Option<Encoder>,
        #[prost(message, optional, tag = "11")]
        pub decoder: Option<Decoder>,
    }

    #[derive(Clone, PartialEq, prost::Message, Zeroize)]
    pub struct Encoder {
        #[prost(bytes = "vec", tag = "1")]
        pub message: Vec<u8>,
        #[prost(uint32, tag = "2")]
        pub next: u32,
    }

    #[derive(Clone, PartialEq, prost::Message, Zeroize)]
    pub struct Decoder {
        #[prost(uint32, tag = "1")]
        pub len: u32,
        /// `poly ‖ BE16(x) ‖ BE16(y)` per stored point.
        #[prost(bytes = "vec", tag = "2")]
        pub points: Vec<u8>,
    }
}

fn bad(what: &'static str) -> Error {
    Error::InvalidArgument(what)
}

fn key32(v: &[u8], what: &'static str) -> Result<[u8; 32]> {
    v.try_into().map_err(|_| bad(what))
}

fn dir_pb(d: Direction) -> u32 {
    match d {
        Direction::A2B => 0,
        Direction::B2A => 1,
    }
}

fn dir_from(v: u32) -> Result<Direction> {
    match v {
        0 => Ok(Direction::A2B),
        1 => Ok(Direction::B2A),
        _ => Err(bad("SPQR direction")),
    }
}

fn enc_pb(e: &Encoder) -> pb::Encoder {
    let (message, next) = e.parts();
    pb::Encoder { message, next }
}

fn enc_from(e: &Option<pb::Encoder>, len: usize) -> Result<Encoder> {
    let e = e.as_ref().ok_or(bad("SPQR encoder missing"))?;
    if e.message.len() != len {
        return Err(bad("SPQR encoder length"));
    }
    Encoder::from_parts(&e.message, e.next)
}

/// `v`, if it has the fixed length `len` its state requires.
fn sized(v: &[u8], len: usize, what: &'static str) -> Result<Vec<u8>> {
    if v.len() == len {
        Ok(v.to_vec())
    } else {
        Err(bad(what))
    }
}

fn dec_pb(d: &Decoder) -> pb::Decoder {
    let mut points = Vec::new();
    for (p, x, y) in d.stored_points() {
        points.push(p as u8);
        points.extend_from_slice(&x.to_be_bytes());
        points.extend_from_slice(&y.to_be_bytes());
    }
    pb::Decoder {
        len: d.message_len() as u32,
        points,
    }
}

fn dec_from(d: &Option<pb::Decoder>, len: usize) -> Result<Decoder> {
    let d = d.as_ref().ok_or(bad("SPQR decoder missing"))?;
    if d.len as usize != len {
        return Err(bad("SPQR decoder length"));
    }
    let mut out = Decoder::new(len)?;
    if !d.points.len().is_multiple_of(5) {
        return Err(bad("SPQR decoder points"));
    }
    for p in d.points.chunks_exact(5) {
        out.restore_point(
            usize::from(p[0]),
            u16::from_be_bytes([p[1], p[2]]),
            u16::from_be_bytes([p[3], p[4]]),
        )?;
    }
    Ok(out)
}

fn braid_pb(b: &Braid) -> pb::Braid {
    let mut o = pb::Braid {
        epoch: b.epoch(),
        ..Default::default()
    };
    let auth = match b {
        Braid::KeysUnsampled { auth, .. } => {
            o.state = 0;
            auth
        }
        Braid::KeysSampled {
            auth, ek, dk, hdr, ..
        } => {
            o.state = 1;
            o.ek = ek.clone();
            o.dk = dk.to_vec();
            o.encoder = Some(enc_pb(hdr));
            auth
        }
        Braid::HeaderSent {
            auth, dk, ek, ct1, ..
        } => {
            o.state = 2;
            o.dk = dk.to_vec();
            o.encoder = Some(enc_pb(ek));
            o.decoder = Some(dec_pb(ct1));
            auth
        }
        Braid::Ct1Received {
            auth, dk, ct1, ek, ..
        } => {
            o.state = 3;
            o.dk = dk.to_vec();
            o.ct1 = ct1.clone();
            o.encoder = Some(enc_pb(ek));
            auth
        }
        Braid::EkSentCt1Received {
            auth, dk, ct1, ct2, ..
        } => {
            o.state = 4;
            o.dk = dk.to_vec();
            o.ct1 = ct1.clone();
            o.decoder = Some(dec_pb(ct2));
            auth
        }
        Braid::NoHeaderReceived { auth, hdr, .. } => {
            o.state = 5;
            o.decoder = Some(dec_pb(hdr));
            auth
        }
        Braid::HeaderReceived { auth, hdr, ek, .. } => {
            o.state = 6;
            o.hdr = hdr.clone();
            o.decoder = Some(dec_pb(ek));
            auth
        }
        Braid::Ct1Sampled {
            auth,
            hdr,
            es,
            ct1,
            ek,
            ..
        } => {
            o.state = 7;
            o.hdr = hdr.clone();
            o.es = es.to_vec();
            o.encoder = Some(enc_pb(ct1));
            o.decoder = Some(dec_pb(ek));
            auth
        }
        Braid::EkReceivedCt1Sampled {
            auth, es, ek, ct1, ..
        } => {
            o.state = 8;
            o.es = es.to_vec();
            o.ek = ek.clone();
            o.encoder = Some(enc_pb(ct1));
            auth
        }
        Braid::Ct1Acknowledged {
            auth,
            hdr,
            es,
            ct1,
            ek,
            ..
        } => {
            o.state = 9;
            o.hdr = hdr.clone();
            o.es = es.to_vec();
            o.ct1 = ct1.clone();
            o.decoder = Some(dec_pb(ek));
            auth
        }
        Braid::Ct2Sampled { auth, ct2, .. } => {
            o.state = 10;
            o.encoder = Some(enc_pb(ct2));
            auth
        }
    };
    o.auth_root = auth.root_key.to_vec();
    o.auth_mac = auth.mac_key.to_vec();
    o
}

fn braid_from(o: &pb::Braid) -> Result<Braid> {
    let epoch = o.epoch;
    if epoch == 0 {
        return Err(bad("SPQR epoch 0"));
    }
    let auth = Authenticator {
        root_key: key32(&o.auth_root, "SPQR auth root key")?,
        mac_key: key32(&o.auth_mac, "SPQR auth MAC key")?,
    };
    let dk = || sized(&o.dk, DK_SIZE, "SPQR decapsulation key").map(Zeroizing::new);
    let es = || sized(&o.es, ENCAPS_STATE_SIZE, "SPQR encapsulation state").map(Zeroizing::new);
    let ek = || sized(&o.ek, EK_SIZE, "SPQR encapsulation key");
    let hdr = || sized(&o.hdr, HEADER_SIZE, "SPQR header");
    let ct1 = || sized(&o.ct1, CT1_SIZE, "SPQR ct1");
    Ok(match o.state {
        0 => Braid::KeysUnsampled { epoch, auth },
        1 => Braid::KeysSampled {
            epoch,
            auth,
            ek: ek()?,
            dk: dk()?,
            hdr: enc_from(&o.encoder, HEADER_SIZE + MAC_SIZE)?,
        },
        2 => Braid::HeaderSent {
            epoch,
            auth,
            dk: dk()?,
            ek: enc_from(&o.encoder, EK_SIZE)?,
            ct1: dec_from(&o.decoder, CT1_SIZE)?,
        },
        3 => Braid::Ct1Received {
            epoch,
            auth,
            dk: dk()?,
            ct1: ct1()?,
            ek: enc_from(&o.encoder, EK_SIZE)?,
        },
        4 => Braid::EkSentCt1Received {
            epoch,
            auth,
            dk: dk()?,
            ct1: ct1()?,
            ct2: dec_from(&o.decoder, CT2_SIZE + MAC_SIZE)?,
        },
        5 => Braid::NoHeaderReceived {
            epoch,
            auth,
            hdr: dec_from(&o.decoder, HEADER_SIZE + MAC_SIZE)?,
        },
        6 => Braid::HeaderReceived {
            epoch,
            auth,
            hdr: hdr()?,
            ek: dec_from(&o.decoder, EK_SIZE)?,
        },
        7 => Braid::Ct1Sampled {
            epoch,
            auth,
            hdr: hdr()?,
            es: es()?,
            ct1: enc_from(&o.encoder, CT1_SIZE)?,
            ek: dec_from(&o.decoder, EK_SIZE)?,
        },
        8 => Braid::EkReceivedCt1Sampled {
            epoch,
            auth,
            es: es()?,
            ek: ek()?,
            ct1: enc_from(&o.encoder, CT1_SIZE)?,
        },
        9 => Braid::Ct1Acknowledged {
            epoch,
            auth,
            hdr: hdr()?,
            es: es()?,
            ct1: ct1()?,
            ek: dec_from(&o.decoder, EK_SIZE)?,
        },
        10 => Braid::Ct2Sampled {
            epoch,
            auth,
            ct2: enc_from(&o.encoder, CT2_SIZE + MAC_SIZE)?,
        },
        _ => return Err(bad("SPQR braid state")),
    })
}

fn edir_pb(d: &EpochDirection) -> pb::Dir {
    let mut skipped = Vec::with_capacity(d.skipped.len() * 36);
    for (i, k) in &d.skipped {
        skipped.extend_from_slice(&i.to_be_bytes());
        skipped.extend_from_slice(k);
    }
    pb::Dir {
        ctr: d.ctr,
        next: d.next.map(|k| k.to_vec()).unwrap_or_default(),
        skipped,
    }
}

fn edir_from(d: &Option<pb::Dir>) -> Result<EpochDirection> {
    let d = d.as_ref().ok_or(bad("SPQR chain direction missing"))?;
    let next = if d.next.is_empty() {
        None
    } else {
        Some(key32(&d.next, "SPQR chain key")?)
    };
    if !d.skipped.len().is_multiple_of(36)
        || d.skipped.len() / 36 > crate::consts::SPQR_MAX_STORED_SKIPPED_KEYS
    {
        return Err(bad("SPQR skipped keys"));
    }
    let mut skipped = Vec::new();
    for s in d.skipped.chunks_exact(36) {
        skipped.push((
            u32::from_be_bytes([s[0], s[1], s[2], s[3]]),
            key32(&s[4..], "SPQR skipped key")?,
        ));
    }
    Ok(EpochDirection {
        ctr: d.ctr,
        next,
        skipped,
    })
}

impl SpqrState {
    /// Storage bytes (empty for the no-SPQR state).
    pub(crate) fn to_storage(&self) -> Zeroizing<Vec<u8>> {
        if self.braid.is_none() && self.negotiation.is_none() && self.chain.is_none() {
            return Zeroizing::new(Vec::new());
        }
        let mut s = pb::State {
            braid: self.braid.as_ref().map(braid_pb),
            negotiation: self.negotiation.as_ref().map(|n| pb::Negotiation {
                auth_key: n.auth_key.to_vec(),
                direction: dir_pb(n.dir),
                min_version: u32::from(n.min_version),
            }),
            chain: self.chain.as_ref().map(|c| pb::Chain {
                direction: dir_pb(c.dir),
                current_epoch: c.current_epoch,
                send_epoch: c.send_epoch,
                links: c
                    .links
                    .iter()
                    .map(|l| pb::Link {
                        send: Some(edir_pb(&l.send)),
                        recv: Some(edir_pb(&l.recv)),
                    })
                    .collect(),
                next_root: c.next_root.to_vec(),
            }),
        };
        let out = Zeroizing::new(s.encode_to_vec());
        s.zeroize();
        out
    }

    /// Parses [`SpqrState::to_storage`] bytes.
    pub(crate) fn from_storage(bytes: &[u8]) -> Result<Self> {
        if bytes.is_empty() {
            return Ok(Self::default());
        }
        let s = Zeroizing::new(pb::State::decode(bytes).map_err(|_| bad("SPQR state protobuf"))?);
        let negotiation = match &s.negotiation {
            Some(n) => Some(Negotiation {
                auth_key: Zeroizing::new(key32(&n.auth_key, "SPQR auth key")?),
                dir: dir_from(n.direction)?,
                min_version: u8::try_from(n.min_version)
                    .ok()
                    .filter(|v| *v <= 1)
                    .ok_or(bad("SPQR min version"))?,
            }),
            None => None,
        };
        let chain = match &s.chain {
            Some(c) => {
                let mut links = VecDeque::new();
                for l in &c.links {
                    links.push_back(ChainEpoch {
                        send: edir_from(&l.send)?,
                        recv: edir_from(&l.recv)?,
                    });
                }
                if links.is_empty() {
                    return Err(bad("SPQR chain without epochs"));
                }
                Some(Chain {
                    dir: dir_from(c.direction)?,
                    current_epoch: c.current_epoch,
                    send_epoch: c.send_epoch,
                    links,
                    next_root: Zeroizing::new(key32(&c.next_root, "SPQR chain root")?),
                })
            }
            None => None,
        };
        Ok(Self {
            braid: s.braid.as_ref().map(braid_from).transpose()?,
            negotiation,
            chain,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consts::SPQR_MAX_STORED_SKIPPED_KEYS;
    use crate::spqr::SpqrPolicy;

    /// A stored state whose first receiving chain holds `n` skipped keys.
    fn with_skipped(n: usize) -> Vec<u8> {
        let s = SpqrState::new(&[3u8; 32], Direction::B2A, SpqrPolicy::Required).unwrap();
        let mut st = SpqrState {
            chain: Some(Chain::new(&[3u8; 32], Direction::B2A)),
            ..s
        };
        st.negotiation = None;
        let mut pb = pb::State::decode(st.to_storage().as_slice()).unwrap();
        let dir = pb.chain.as_mut().unwrap().links[0].recv.as_mut().unwrap();
        dir.ctr = u32::MAX;
        dir.skipped = (0..n as u32)
            .flat_map(|i| {
                let mut e = i.to_be_bytes().to_vec();
                e.extend_from_slice(&[7u8; 32]);
                e
            })
            .collect();
        pb.encode_to_vec()
    }

    #[test]
    fn restored_skipped_keys_at_limit_and_limit_plus_one() {
        assert!(SpqrState::from_storage(&with_skipped(SPQR_MAX_STORED_SKIPPED_KEYS)).is_ok());
        assert!(SpqrState::from_storage(&with_skipped(SPQR_MAX_STORED_SKIPPED_KEYS + 1)).is_err());
    }

    #[test]
    fn restored_fields_of_the_wrong_size_are_refused() {
        let good = with_skipped(1);
        assert!(SpqrState::from_storage(&good).is_ok());
        let mut pb = pb::State::decode(good.as_slice()).unwrap();
        pb.chain.as_mut().unwrap().next_root.pop();
        assert!(SpqrState::from_storage(&pb.encode_to_vec()).is_err());
        let mut pb = pb::State::decode(good.as_slice()).unwrap();
        pb.chain.as_mut().unwrap().links[0]
            .send
            .as_mut()
            .unwrap()
            .next
            .push(0);
        assert!(SpqrState::from_storage(&pb.encode_to_vec()).is_err());
        let mut pb = pb::State::decode(good.as_slice()).unwrap();
        let dir = pb.chain.as_mut().unwrap().links[0].recv.as_mut().unwrap();
        dir.skipped.pop();
        assert!(SpqrState::from_storage(&pb.encode_to_vec()).is_err());
        let mut pb = pb::State::decode(good.as_slice()).unwrap();
        pb.braid.as_mut().unwrap().auth_mac.truncate(31);
        assert!(SpqrState::from_storage(&pb.encode_to_vec()).is_err());
        let mut pb = pb::State::decode(good.as_slice()).unwrap();
        pb.braid.as_mut().unwrap().state = 11;
        assert!(SpqrState::from_storage(&pb.encode_to_vec()).is_err());
        let mut pb = pb::State::decode(good.as_slice()).unwrap();
        pb.chain.as_mut().unwrap().links.clear();
        assert!(SpqrState::from_storage(&pb.encode_to_vec()).is_err());
    }
}
