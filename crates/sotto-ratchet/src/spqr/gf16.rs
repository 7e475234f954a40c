//! Arithmetic in GF(2^16) with the modulus `x^16 + x^12 + x^3 + x + 1` (0x1100B), the field of
//! SPQR's erasure code (`protocol-spec/ratchet.md` §12.4). Addition and subtraction are XOR.

/// The reduction polynomial, including the `x^16` term.
pub(crate) const MODULUS: u32 = 0x1_100B;

/// Carry-less product reduced modulo [`MODULUS`].
pub(crate) fn mul(a: u16, b: u16) -> u16 {
    let (a, b) = (u32::from(a), u32::from(b));
    let mut acc: u32 = 0;
    for bit in 0..16 {
        if b & (1 << bit) != 0 {
            acc ^= a << bit;
        }
    }
    for bit in (16..32).rev() {
        if acc & (1 << bit) != 0 {
            acc ^= MODULUS << (bit - 16);
        }
    }
    // Every bit at or above 16 was cleared by the loop above.
    (acc & 0xFFFF) as u16
}

/// `a^e` by square-and-multiply.
fn pow(a: u16, mut e: u32) -> u16 {
    let mut base = a;
    let mut acc = 1u16;
    while e > 0 {
        if e & 1 == 1 {
            acc = mul(acc, base);
        }
        base = mul(base, base);
        e >>= 1;
    }
    acc
}

/// Multiplicative inverse (`a^(2^16 - 2)`); the inverse of 0 is taken as 0, and callers never
/// divide by 0 (they divide by products of differences of distinct points).
pub(crate) fn inv(a: u16) -> u16 {
    pow(a, 0xFFFE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_laws_hold_on_a_sample() {
        let sample = [1u16, 2, 3, 0x100, 0x8000, 0xFFFF, 0x1234, 0xBEEF, 0x0F0F];
        for &a in &sample {
            assert_eq!(mul(a, 1), a);
            assert_eq!(mul(a, 0), 0);
            assert_eq!(mul(a, inv(a)), 1, "inverse of {a:#x}");
            for &b in &sample {
                assert_eq!(mul(a, b), mul(b, a));
                for &c in &sample {
                    assert_eq!(mul(a, b ^ c), mul(a, b) ^ mul(a, c), "distributive");
                    assert_eq!(mul(mul(a, b), c), mul(a, mul(b, c)), "associative");
                }
            }
        }
    }

    #[test]
    fn reduction_uses_the_spqr_modulus() {
        // x^15 · x = x^16 ≡ x^12 + x^3 + x + 1.
        assert_eq!(mul(0x8000, 2), 0x100B);
        // The multiplicative group has order 2^16 − 1 (x generates a subgroup dividing it).
        assert_eq!(pow(2, 0xFFFF), 1);
    }
}
