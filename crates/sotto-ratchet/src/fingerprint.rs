//! Safety numbers: libsignal's displayable (60 digits) and scannable (protobuf) fingerprints.
//!
//! Per party: `h₀ = SHA-512(version[2] = 0x0000 ‖ key[33] ‖ stable_id ‖ key[33])`,
//! `hᵢ = SHA-512(hᵢ₋₁ ‖ key[33])`, `iterations` hashes in total. Displayable: the first 30
//! bytes as six 5-byte big-endian integers mod 100000, zero-padded to 5 digits; the two
//! 30-digit halves are concatenated in lexicographic order. Scannable: `CombinedFingerprints
//! { version, local.content = local[..32], remote.content = remote[..32] }`.

use prost::Message;
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

use crate::consts::{FINGERPRINT_ITERATIONS, FINGERPRINT_VERSION};
use crate::error::{Error, Result};
use crate::identity::IdentityKey;
use crate::proto::fingerprint as pb;

/// Both forms of a safety number, from one side's point of view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fingerprint {
    /// The 60 digits both people read out (same string on both sides).
    pub displayable: String,
    /// The QR-code payload (ours has local/remote swapped relative to theirs).
    pub scannable: Vec<u8>,
    local: [u8; 32],
    remote: [u8; 32],
    version: u32,
}

fn iterate(iterations: u32, stable_id: &[u8], key: &IdentityKey) -> [u8; 64] {
    let key = key.serialize();
    let mut h = Sha512::new();
    h.update(FINGERPRINT_VERSION.to_be_bytes());
    h.update(key);
    h.update(stable_id);
    h.update(key);
    let mut buf = h.finalize();
    for _ in 1..iterations {
        let mut h = Sha512::new();
        h.update(buf);
        h.update(key);
        buf = h.finalize();
    }
    buf.into()
}

fn digits(hash: &[u8; 64]) -> String {
    let mut s = String::with_capacity(30);
    for chunk in hash[..30].chunks_exact(5) {
        let n = chunk.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
        s.push_str(&format!("{:05}", n % 100_000));
    }
    s
}

impl Fingerprint {
    /// Computes the fingerprint. `scannable_version` is the `version` field of the scannable
    /// form (libsignal apps use 2 for ACI-based ids; 1 for phone numbers).
    pub fn new(
        scannable_version: u32,
        local_id: &[u8],
        local_key: &IdentityKey,
        remote_id: &[u8],
        remote_key: &IdentityKey,
    ) -> Self {
        Self::with_iterations(
            scannable_version,
            FINGERPRINT_ITERATIONS,
            local_id,
            local_key,
            remote_id,
            remote_key,
        )
    }

    /// As [`Fingerprint::new`] with an explicit iteration count (libsignal allows 2..=1_000_000;
    /// anything else is clamped into that range).
    pub fn with_iterations(
        scannable_version: u32,
        iterations: u32,
        local_id: &[u8],
        local_key: &IdentityKey,
        remote_id: &[u8],
        remote_key: &IdentityKey,
    ) -> Self {
        let iterations = iterations.clamp(2, 1_000_000);
        let l = iterate(iterations, local_id, local_key);
        let r = iterate(iterations, remote_id, remote_key);
        let (dl, dr) = (digits(&l), digits(&r));
        let displayable = if dl < dr { dl + &dr } else { dr + &dl };
        let mut local = [0u8; 32];
        local.copy_from_slice(&l[..32]);
        let mut remote = [0u8; 32];
        remote.copy_from_slice(&r[..32]);
        let scannable = pb::CombinedFingerprints {
            version: Some(scannable_version),
            local_fingerprint: Some(pb::LogicalFingerprint {
                content: Some(local.to_vec()),
            }),
            remote_fingerprint: Some(pb::LogicalFingerprint {
                content: Some(remote.to_vec()),
            }),
        }
        .encode_to_vec();
        Self {
            displayable,
            scannable,
            local,
            remote,
            version: scannable_version,
        }
    }

    /// Compares the other side's scanned payload with ours, in constant time. `Ok(false)` means
    /// the identities differ; an error means the payload is malformed or of another version.
    pub fn compare_scanned(&self, theirs: &[u8]) -> Result<bool> {
        let c = pb::CombinedFingerprints::decode(theirs)
            .map_err(|_| Error::InvalidArgument("scanned fingerprint: bad protobuf"))?;
        if c.version.unwrap_or(0) != self.version {
            return Err(Error::InvalidArgument(
                "scanned fingerprint: version mismatch",
            ));
        }
        let their_local = c
            .local_fingerprint
            .and_then(|m| m.content)
            .ok_or(Error::InvalidArgument("scanned fingerprint: missing local"))?;
        let their_remote =
            c.remote_fingerprint
                .and_then(|m| m.content)
                .ok_or(Error::InvalidArgument(
                    "scanned fingerprint: missing remote",
                ))?;
        let a = their_local.as_slice().ct_eq(&self.remote);
        let b = their_remote.as_slice().ct_eq(&self.local);
        Ok(bool::from(a & b))
    }
}
