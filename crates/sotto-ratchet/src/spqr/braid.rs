//! The ML-KEM braid: each epoch one side sends an ML-KEM-768 key (header, then the
//! encapsulation-key vector), the other a ciphertext (`ct1`, then `ct2`), each erasure-coded into
//! one 32-byte chunk per message; roles swap every epoch (`protocol-spec/ratchet.md` §12.5).
//!
//! States are types: every transition consumes the state and returns the next one.

use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use super::auth::{Authenticator, MAC_SIZE};
use super::erasure::{Decoder, Encoder};
use super::kem::{self, CT1_SIZE, CT2_SIZE, EK_SIZE, HEADER_SIZE};
use super::wire::Payload;
use super::Epoch;
use crate::crypto::hkdf;
use crate::error::{Error, Result};

const SCKA_KEY_INFO: &[u8] = b"Signal_PQCKA_V1_MLKEM768:SCKA Key";

/// A new epoch's shared secret, for the SPQR chain.
pub(crate) struct EpochSecret {
    pub(crate) epoch: Epoch,
    pub(crate) secret: Zeroizing<[u8; 32]>,
}

fn epoch_secret(epoch: Epoch, kem_ss: &[u8]) -> EpochSecret {
    let mut info = SCKA_KEY_INFO.to_vec();
    info.extend_from_slice(&epoch.to_be_bytes());
    let okm = hkdf::<32>(Some(&[0u8; 32]), kem_ss, &info);
    EpochSecret {
        epoch,
        secret: Zeroizing::new(*okm),
    }
}

fn concat(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(a.len() + b.len());
    v.extend_from_slice(a);
    v.extend_from_slice(b);
    v
}

/// Every state of the braid, key-sending states first.
#[derive(Clone)]
pub(crate) enum Braid {
    // ---- this side sends the key this epoch ----
    /// No key generated yet.
    KeysUnsampled { epoch: Epoch, auth: Authenticator },
    /// Sending header chunks.
    KeysSampled {
        epoch: Epoch,
        auth: Authenticator,
        ek: Vec<u8>,
        dk: Zeroizing<Vec<u8>>,
        hdr: Encoder,
    },
    /// Peer started sending `ct1`: sending `ek` chunks, collecting `ct1`.
    HeaderSent {
        epoch: Epoch,
        auth: Authenticator,
        dk: Zeroizing<Vec<u8>>,
        ek: Encoder,
        ct1: Decoder,
    },
    /// `ct1` complete: sending `ek` chunks with an acknowledgement.
    Ct1Received {
        epoch: Epoch,
        auth: Authenticator,
        dk: Zeroizing<Vec<u8>>,
        ct1: Vec<u8>,
        ek: Encoder,
    },
    /// Peer started sending `ct2`: acknowledging, collecting `ct2 ‖ MAC`.
    EkSentCt1Received {
        epoch: Epoch,
        auth: Authenticator,
        dk: Zeroizing<Vec<u8>>,
        ct1: Vec<u8>,
        ct2: Decoder,
    },

    // ---- this side sends the ciphertext this epoch ----
    /// Collecting `header ‖ MAC`.
    NoHeaderReceived {
        epoch: Epoch,
        auth: Authenticator,
        hdr: Decoder,
    },
    /// Header authenticated; the next send encapsulates.
    HeaderReceived {
        epoch: Epoch,
        auth: Authenticator,
        hdr: Vec<u8>,
        ek: Decoder,
    },
    /// Sending `ct1` chunks, collecting `ek`.
    Ct1Sampled {
        epoch: Epoch,
        auth: Authenticator,
        hdr: Vec<u8>,
        es: Zeroizing<Vec<u8>>,
        ct1: Encoder,
        ek: Decoder,
    },
    /// `ek` complete, `ct1` not yet acknowledged: still sending `ct1`.
    EkReceivedCt1Sampled {
        epoch: Epoch,
        auth: Authenticator,
        es: Zeroizing<Vec<u8>>,
        ek: Vec<u8>,
        ct1: Encoder,
    },
    /// `ct1` acknowledged, `ek` incomplete.
    Ct1Acknowledged {
        epoch: Epoch,
        auth: Authenticator,
        hdr: Vec<u8>,
        es: Zeroizing<Vec<u8>>,
        ct1: Vec<u8>,
        ek: Decoder,
    },
    /// Sending `ct2 ‖ MAC` chunks until the peer moves to the next epoch.
    Ct2Sampled {
        epoch: Epoch,
        auth: Authenticator,
        ct2: Encoder,
    },
}

/// Codes `msg`; every caller passes one of the fixed braid sizes, all within the code's limit.
fn encoder(msg: &[u8]) -> Result<Encoder> {
    Encoder::new(msg)
}

fn decoder(len: usize) -> Result<Decoder> {
    Decoder::new(len)
}

/// `ct2 ‖ MAC(ct1 ‖ ct2)` for the ciphertext sender.
fn finish_ciphertext(
    epoch: Epoch,
    auth: Authenticator,
    es: &[u8],
    ek: &[u8],
    ct1: &[u8],
) -> Result<Braid> {
    let ct2 = kem::encaps2(es, ek)?;
    let mac = auth.mac_ciphertext(epoch, &concat(ct1, &ct2));
    Ok(Braid::Ct2Sampled {
        epoch,
        ct2: encoder(&concat(&ct2, &mac))?,
        auth,
    })
}

impl core::fmt::Debug for Braid {
    /// State name and epoch only: the states hold decapsulation keys and encapsulation state.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}(epoch {})", self.name(), self.epoch())
    }
}

impl Braid {
    /// The state's name, for logs.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Braid::KeysUnsampled { .. } => "KeysUnsampled",
            Braid::KeysSampled { .. } => "KeysSampled",
            Braid::HeaderSent { .. } => "HeaderSent",
            Braid::Ct1Received { .. } => "Ct1Received",
            Braid::EkSentCt1Received { .. } => "EkSentCt1Received",
            Braid::NoHeaderReceived { .. } => "NoHeaderReceived",
            Braid::HeaderReceived { .. } => "HeaderReceived",
            Braid::Ct1Sampled { .. } => "Ct1Sampled",
            Braid::EkReceivedCt1Sampled { .. } => "EkReceivedCt1Sampled",
            Braid::Ct1Acknowledged { .. } => "Ct1Acknowledged",
            Braid::Ct2Sampled { .. } => "Ct2Sampled",
        }
    }

    /// The initiator's (A2B) start: it sends the first key.
    pub(crate) fn init_a(auth_key: &[u8]) -> Self {
        Braid::KeysUnsampled {
            epoch: 1,
            auth: Authenticator::new(auth_key, 1),
        }
    }

    /// The responder's (B2A) start: it waits for the first header.
    pub(crate) fn init_b(auth_key: &[u8]) -> Result<Self> {
        Ok(Braid::NoHeaderReceived {
            epoch: 1,
            auth: Authenticator::new(auth_key, 1),
            hdr: decoder(HEADER_SIZE + MAC_SIZE)?,
        })
    }

    /// The epoch this state works on.
    pub(crate) fn epoch(&self) -> Epoch {
        match self {
            Braid::KeysUnsampled { epoch, .. }
            | Braid::KeysSampled { epoch, .. }
            | Braid::HeaderSent { epoch, .. }
            | Braid::Ct1Received { epoch, .. }
            | Braid::EkSentCt1Received { epoch, .. }
            | Braid::NoHeaderReceived { epoch, .. }
            | Braid::HeaderReceived { epoch, .. }
            | Braid::Ct1Sampled { epoch, .. }
            | Braid::EkReceivedCt1Sampled { epoch, .. }
            | Braid::Ct1Acknowledged { epoch, .. }
            | Braid::Ct2Sampled { epoch, .. } => *epoch,
        }
    }

    /// What to attach to the next outgoing message: the next state, the payload (for
    /// `self.epoch()`), and a new epoch secret if this send created one.
    pub(crate) fn send(
        self,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<(Braid, Payload, Option<EpochSecret>)> {
        Ok(match self {
            Braid::KeysUnsampled { epoch, auth } => {
                let (hdr, ek, dk) = kem::generate(rng);
                let mac = auth.mac_header(epoch, &hdr);
                let mut hdr = encoder(&concat(&hdr, &mac))?;
                let chunk = hdr.next_chunk();
                let next = Braid::KeysSampled {
                    epoch,
                    auth,
                    ek,
                    dk,
                    hdr,
                };
                (next, Payload::Hdr(chunk), None)
            }
            Braid::KeysSampled {
                epoch,
                auth,
                ek,
                dk,
                mut hdr,
            } => {
                let chunk = hdr.next_chunk();
                let next = Braid::KeysSampled {
                    epoch,
                    auth,
                    ek,
                    dk,
                    hdr,
                };
                (next, Payload::Hdr(chunk), None)
            }
            Braid::HeaderSent {
                epoch,
                auth,
                dk,
                mut ek,
                ct1,
            } => {
                let chunk = ek.next_chunk();
                let next = Braid::HeaderSent {
                    epoch,
                    auth,
                    dk,
                    ek,
                    ct1,
                };
                (next, Payload::Ek(chunk), None)
            }
            Braid::Ct1Received {
                epoch,
                auth,
                dk,
                ct1,
                mut ek,
            } => {
                let chunk = ek.next_chunk();
                let next = Braid::Ct1Received {
                    epoch,
                    auth,
                    dk,
                    ct1,
                    ek,
                };
                (next, Payload::EkCt1Ack(chunk), None)
            }
            s @ Braid::EkSentCt1Received { .. } => (s, Payload::Ct1Ack, None),
            s @ Braid::NoHeaderReceived { .. } => (s, Payload::None, None),
            Braid::HeaderReceived {
                epoch,
                mut auth,
                hdr,
                ek,
            } => {
                let (ct1, es, ss) = kem::encaps1(&hdr, rng)?;
                let secret = epoch_secret(epoch, ss.as_slice());
                auth.update(epoch, secret.secret.as_slice());
                let mut ct1 = encoder(&ct1)?;
                let chunk = ct1.next_chunk();
                let next = Braid::Ct1Sampled {
                    epoch,
                    auth,
                    hdr,
                    es,
                    ct1,
                    ek,
                };
                (next, Payload::Ct1(chunk), Some(secret))
            }
            Braid::Ct1Sampled {
                epoch,
                auth,
                hdr,
                es,
                mut ct1,
                ek,
            } => {
                let chunk = ct1.next_chunk();
                let next = Braid::Ct1Sampled {
                    epoch,
                    auth,
                    hdr,
                    es,
                    ct1,
                    ek,
                };
                (next, Payload::Ct1(chunk), None)
            }
            Braid::EkReceivedCt1Sampled {
                epoch,
                auth,
                es,
                ek,
                mut ct1,
            } => {
                let chunk = ct1.next_chunk();
                let next = Braid::EkReceivedCt1Sampled {
                    epoch,
                    auth,
                    es,
                    ek,
                    ct1,
                };
                (next, Payload::Ct1(chunk), None)
            }
            s @ Braid::Ct1Acknowledged { .. } => (s, Payload::None, None),
            Braid::Ct2Sampled {
                epoch,
                auth,
                mut ct2,
            } => {
                let chunk = ct2.next_chunk();
                (
                    Braid::Ct2Sampled { epoch, auth, ct2 },
                    Payload::Ct2(chunk),
                    None,
                )
            }
        })
    }

    /// Takes in a received message of `epoch` carrying `payload`. A message of an older epoch
    /// changes nothing; a newer one is refused (except the step after `Ct2Sampled`).
    pub(crate) fn recv(
        self,
        epoch: Epoch,
        payload: &Payload,
    ) -> Result<(Braid, Option<EpochSecret>)> {
        let ours = self.epoch();
        if epoch > ours {
            return match self {
                Braid::Ct2Sampled { epoch: e, auth, .. } if Some(epoch) == e.checked_add(1) => {
                    Ok((Braid::KeysUnsampled { epoch, auth }, None))
                }
                _ => Err(Error::InvalidMessage("SPQR epoch out of range")),
            };
        }
        if epoch < ours {
            return Ok((self, None));
        }
        self.recv_same_epoch(payload)
    }

    fn recv_same_epoch(self, payload: &Payload) -> Result<(Braid, Option<EpochSecret>)> {
        Ok(match (self, payload) {
            (
                Braid::KeysSampled {
                    epoch,
                    auth,
                    ek,
                    dk,
                    ..
                },
                Payload::Ct1(chunk),
            ) => {
                let mut ct1 = decoder(CT1_SIZE)?;
                ct1.add_chunk(chunk);
                let ek = encoder(&ek)?;
                (
                    Braid::HeaderSent {
                        epoch,
                        auth,
                        dk,
                        ek,
                        ct1,
                    },
                    None,
                )
            }
            (
                Braid::HeaderSent {
                    epoch,
                    auth,
                    dk,
                    ek,
                    mut ct1,
                },
                Payload::Ct1(chunk),
            ) => {
                ct1.add_chunk(chunk);
                match ct1.decoded() {
                    Some(ct1) => (
                        Braid::Ct1Received {
                            epoch,
                            auth,
                            dk,
                            ct1,
                            ek,
                        },
                        None,
                    ),
                    None => (
                        Braid::HeaderSent {
                            epoch,
                            auth,
                            dk,
                            ek,
                            ct1,
                        },
                        None,
                    ),
                }
            }
            (
                Braid::Ct1Received {
                    epoch,
                    auth,
                    dk,
                    ct1,
                    ..
                },
                Payload::Ct2(chunk),
            ) => {
                let mut ct2 = decoder(CT2_SIZE + MAC_SIZE)?;
                ct2.add_chunk(chunk);
                // One chunk never completes ct2 ‖ MAC (5 chunks).
                (
                    Braid::EkSentCt1Received {
                        epoch,
                        auth,
                        dk,
                        ct1,
                        ct2,
                    },
                    None,
                )
            }
            (
                Braid::EkSentCt1Received {
                    epoch,
                    mut auth,
                    dk,
                    ct1,
                    mut ct2,
                },
                Payload::Ct2(chunk),
            ) => {
                ct2.add_chunk(chunk);
                let Some(ct2_mac) = ct2.decoded() else {
                    return Ok((
                        Braid::EkSentCt1Received {
                            epoch,
                            auth,
                            dk,
                            ct1,
                            ct2,
                        },
                        None,
                    ));
                };
                let (ct2, mac) = ct2_mac
                    .split_at_checked(CT2_SIZE)
                    .ok_or(Error::InvalidArgument("SPQR ct2 decoder length"))?;
                let ss = kem::decaps(&dk, &ct1, ct2)?;
                let secret = epoch_secret(epoch, ss.as_slice());
                auth.update(epoch, secret.secret.as_slice());
                auth.verify_ciphertext(epoch, &concat(&ct1, ct2), mac)?;
                let next_epoch = epoch
                    .checked_add(1)
                    .ok_or(Error::InvalidMessage("SPQR epoch exhausted"))?;
                (
                    Braid::NoHeaderReceived {
                        epoch: next_epoch,
                        auth,
                        hdr: decoder(HEADER_SIZE + MAC_SIZE)?,
                    },
                    Some(secret),
                )
            }
            (
                Braid::NoHeaderReceived {
                    epoch,
                    auth,
                    mut hdr,
                },
                Payload::Hdr(chunk),
            ) => {
                hdr.add_chunk(chunk);
                match hdr.decoded() {
                    Some(hdr_mac) => {
                        let (hdr, mac) = hdr_mac
                            .split_at_checked(HEADER_SIZE)
                            .ok_or(Error::InvalidArgument("SPQR header decoder length"))?;
                        auth.verify_header(epoch, hdr, mac)?;
                        (
                            Braid::HeaderReceived {
                                epoch,
                                auth,
                                hdr: hdr.to_vec(),
                                ek: decoder(EK_SIZE)?,
                            },
                            None,
                        )
                    }
                    None => (Braid::NoHeaderReceived { epoch, auth, hdr }, None),
                }
            }
            (
                Braid::Ct1Sampled {
                    epoch,
                    auth,
                    hdr,
                    es,
                    ct1,
                    mut ek,
                },
                Payload::Ek(chunk) | Payload::EkCt1Ack(chunk),
            ) => {
                let acked = matches!(payload, Payload::EkCt1Ack(_));
                ek.add_chunk(chunk);
                match (ek.decoded(), acked) {
                    (Some(ek), _) => {
                        if !kem::ek_matches_header(&hdr, &ek) {
                            return Err(Error::InvalidMessage("SPQR key does not match header"));
                        }
                        let (ct1_bytes, _) = ct1.parts();
                        if acked {
                            (finish_ciphertext(epoch, auth, &es, &ek, &ct1_bytes)?, None)
                        } else {
                            (
                                Braid::EkReceivedCt1Sampled {
                                    epoch,
                                    auth,
                                    es,
                                    ek,
                                    ct1,
                                },
                                None,
                            )
                        }
                    }
                    (None, true) => (
                        Braid::Ct1Acknowledged {
                            epoch,
                            auth,
                            hdr,
                            es,
                            ct1: ct1.parts().0,
                            ek,
                        },
                        None,
                    ),
                    (None, false) => (
                        Braid::Ct1Sampled {
                            epoch,
                            auth,
                            hdr,
                            es,
                            ct1,
                            ek,
                        },
                        None,
                    ),
                }
            }
            (
                Braid::EkReceivedCt1Sampled {
                    epoch,
                    auth,
                    es,
                    ek,
                    ct1,
                },
                Payload::Ct1Ack | Payload::EkCt1Ack(_),
            ) => {
                let (ct1_bytes, _) = ct1.parts();
                (finish_ciphertext(epoch, auth, &es, &ek, &ct1_bytes)?, None)
            }
            (
                Braid::Ct1Acknowledged {
                    epoch,
                    auth,
                    hdr,
                    es,
                    ct1,
                    mut ek,
                },
                Payload::Ek(chunk) | Payload::EkCt1Ack(chunk),
            ) => {
                ek.add_chunk(chunk);
                match ek.decoded() {
                    Some(ek) => {
                        if !kem::ek_matches_header(&hdr, &ek) {
                            return Err(Error::InvalidMessage("SPQR key does not match header"));
                        }
                        (finish_ciphertext(epoch, auth, &es, &ek, &ct1)?, None)
                    }
                    None => (
                        Braid::Ct1Acknowledged {
                            epoch,
                            auth,
                            hdr,
                            es,
                            ct1,
                            ek,
                        },
                        None,
                    ),
                }
            }
            (state, _) => (state, None),
        })
    }
}
