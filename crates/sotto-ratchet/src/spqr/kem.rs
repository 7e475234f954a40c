//! ML-KEM-768 split for incremental encapsulation (libcrux `incremental`, compressed keys):
//! a 64-byte header, a 1152-byte encapsulation-key vector, `ct1` (960 B) and `ct2` (128 B).

use libcrux_ml_kem::mlkem768::incremental as inc;
use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// Header length (ρ ‖ H(ek)).
pub const HEADER_SIZE: usize = inc::pk1_len();
/// Encapsulation-key vector length.
pub const EK_SIZE: usize = inc::pk2_len();
/// First ciphertext part length.
pub const CT1_SIZE: usize = inc::Ciphertext1::len();
/// Second ciphertext part length.
pub const CT2_SIZE: usize = inc::Ciphertext2::len();
/// Decapsulation key length.
pub const DK_SIZE: usize = 2400;
/// Encapsulation state length (kept between `ct1` and `ct2`).
pub const ENCAPS_STATE_SIZE: usize = inc::encaps_state_len();

/// A fresh key pair: `(header, ek, dk)`.
pub(crate) fn generate(
    rng: &mut (impl RngCore + CryptoRng),
) -> (Vec<u8>, Vec<u8>, Zeroizing<Vec<u8>>) {
    let mut seed = Zeroizing::new([0u8; libcrux_ml_kem::KEY_GENERATION_SEED_SIZE]);
    rng.fill_bytes(seed.as_mut());
    let k = inc::KeyPairCompressedBytes::from_seed(*seed);
    (
        k.pk1().to_vec(),
        k.pk2().to_vec(),
        Zeroizing::new(k.sk().to_vec()),
    )
}

/// Whether `ek` is the vector the header commits to (and is well formed).
pub(crate) fn ek_matches_header(header: &[u8], ek: &[u8]) -> bool {
    inc::validate_pk_bytes(header, ek).is_ok()
}

/// `(ct1, encapsulation state, shared secret)`.
pub(crate) type Encaps1 = (Vec<u8>, Zeroizing<Vec<u8>>, Zeroizing<[u8; 32]>);

/// First encapsulation step.
pub(crate) fn encaps1(header: &[u8], rng: &mut (impl RngCore + CryptoRng)) -> Result<Encaps1> {
    let mut randomness = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(randomness.as_mut());
    let mut state = Zeroizing::new(vec![0u8; ENCAPS_STATE_SIZE]);
    let mut ss = Zeroizing::new([0u8; 32]);
    let ct1 = inc::encapsulate1(header, *randomness, &mut state, ss.as_mut())
        .map_err(|_| Error::InvalidMessage("SPQR header"))?;
    Ok((ct1.value.to_vec(), state, ss))
}

/// Second encapsulation step.
pub(crate) fn encaps2(state: &[u8], ek: &[u8]) -> Result<Vec<u8>> {
    let state: &[u8; ENCAPS_STATE_SIZE] = state
        .try_into()
        .map_err(|_| Error::InvalidArgument("SPQR encapsulation state"))?;
    let ek: &[u8; EK_SIZE] = ek
        .try_into()
        .map_err(|_| Error::InvalidMessage("SPQR encapsulation key"))?;
    Ok(inc::encapsulate2(state, ek).value.to_vec())
}

/// Decapsulation (implicit rejection: a wrong ciphertext yields an unrelated secret).
pub(crate) fn decaps(dk: &[u8], ct1: &[u8], ct2: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
    let dk: &[u8; DK_SIZE] = dk
        .try_into()
        .map_err(|_| Error::InvalidArgument("SPQR decapsulation key"))?;
    let ct1 = inc::Ciphertext1 {
        value: ct1
            .try_into()
            .map_err(|_| Error::InvalidMessage("SPQR ct1"))?,
    };
    let ct2 = inc::Ciphertext2 {
        value: ct2
            .try_into()
            .map_err(|_| Error::InvalidMessage("SPQR ct2"))?,
    };
    Ok(Zeroizing::new(inc::decapsulate_compressed_key(
        dk, &ct1, &ct2,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_the_braid_sizes() {
        assert_eq!(
            (HEADER_SIZE, EK_SIZE, CT1_SIZE, CT2_SIZE),
            (64, 1152, 960, 128)
        );
    }

    #[test]
    fn incremental_round_trip_and_header_binding() {
        let mut rng = rand::thread_rng();
        let (hdr, ek, dk) = generate(&mut rng);
        assert_eq!(dk.len(), DK_SIZE);
        assert!(ek_matches_header(&hdr, &ek));
        let (_, other_ek, _) = generate(&mut rng);
        assert!(!ek_matches_header(&hdr, &other_ek));
        let (ct1, st, ss) = encaps1(&hdr, &mut rng).unwrap();
        let ct2 = encaps2(&st, &ek).unwrap();
        assert_eq!(*decaps(&dk, &ct1, &ct2).unwrap(), *ss);
        let mut bad = ct2.clone();
        bad[0] ^= 1;
        assert_ne!(*decaps(&dk, &ct1, &bad).unwrap(), *ss);
    }
}
