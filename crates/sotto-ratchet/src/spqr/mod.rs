//! SPQR v1, the sparse post-quantum ratchet that libsignal ≥ 0.92 runs beside the Double
//! Ratchet ("triple ratchet"). Sans-IO: randomness is a parameter; no clock is needed.
//!
//! Normative description: `protocol-spec/ratchet.md` §12.

pub mod erasure;
mod gf16;
