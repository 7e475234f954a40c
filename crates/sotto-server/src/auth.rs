//! Challenge-response authentication with the device's identity key (XEdDSA, `sotto-ratchet`).
//!
//! The signed message binds a domain-separation context, the server's identity, the fresh nonce,
//! and the username and device claimed, so a signature is useless on another server, another
//! connection or for another account.

use crate::consts::AUTH_CONTEXT;

/// The exact bytes a device signs:
/// `AUTH_CONTEXT ‖ 0x00 ‖ u16be(len server) ‖ server ‖ u16be(len nonce) ‖ nonce ‖
/// u16be(len username) ‖ username ‖ u32be(device_id)`.
pub fn auth_message(server: &str, nonce: &[u8], username: &str, device_id: u32) -> Vec<u8> {
    let mut m = Vec::with_capacity(AUTH_CONTEXT.len() + 1 + 6 + server.len() + nonce.len() + 68);
    m.extend_from_slice(AUTH_CONTEXT);
    m.push(0);
    for part in [server.as_bytes(), nonce, username.as_bytes()] {
        // Lengths are bounded by the frame limit; truncation cannot occur for valid inputs, and an
        // over-long part simply makes a message nobody signed.
        let len = u16::try_from(part.len()).unwrap_or(u16::MAX);
        m.extend_from_slice(&len.to_be_bytes());
        m.extend_from_slice(part);
    }
    m.extend_from_slice(&device_id.to_be_bytes());
    m
}

/// Checks that `identity_key` (33 bytes, libsignal serialization) is a valid identity key.
pub fn valid_identity_key(identity_key: &[u8]) -> bool {
    sotto_ratchet::IdentityKey::deserialize(identity_key).is_ok()
}

/// Verifies `signature` over `message` with the serialized identity key. False for anything
/// malformed.
pub fn verify(identity_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    match sotto_ratchet::IdentityKey::deserialize(identity_key) {
        Ok(k) => k.verify_signature(message, signature),
        Err(_) => false,
    }
}

/// Signs the auth message (client side).
pub fn sign(
    identity: &sotto_ratchet::IdentityKeyPair,
    server: &str,
    nonce: &[u8],
    username: &str,
    device_id: u32,
) -> [u8; 64] {
    let msg = auth_message(server, nonce, username, device_id);
    identity.sign(&mut rand::rngs::OsRng, &msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sotto_ratchet::IdentityKeyPair;

    #[test]
    fn signature_binds_every_field() {
        let mut rng = rand::thread_rng();
        let k = IdentityKeyPair::generate(&mut rng);
        let pk = k.public().serialize();
        let sig = sign(&k, "srv", b"nonce", "alice", 1);
        assert!(verify(
            &pk,
            &auth_message("srv", b"nonce", "alice", 1),
            &sig
        ));
        assert!(!verify(
            &pk,
            &auth_message("srv2", b"nonce", "alice", 1),
            &sig
        ));
        assert!(!verify(
            &pk,
            &auth_message("srv", b"nonc3", "alice", 1),
            &sig
        ));
        assert!(!verify(
            &pk,
            &auth_message("srv", b"nonce", "alicf", 1),
            &sig
        ));
        assert!(!verify(
            &pk,
            &auth_message("srv", b"nonce", "alice", 2),
            &sig
        ));
        let other = IdentityKeyPair::generate(&mut rng).public().serialize();
        assert!(!verify(
            &other,
            &auth_message("srv", b"nonce", "alice", 1),
            &sig
        ));
        assert!(!verify(
            &pk[..32],
            &auth_message("srv", b"nonce", "alice", 1),
            &sig
        ));
        assert!(!verify(
            &pk,
            &auth_message("srv", b"nonce", "alice", 1),
            &sig[..63]
        ));
    }

    #[test]
    fn length_prefixes_prevent_ambiguity() {
        assert_ne!(
            auth_message("ab", b"c", "u", 1),
            auth_message("a", b"bc", "u", 1)
        );
    }
}
