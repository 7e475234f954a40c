//! SignalMessage field 6 (`addresses`, libsignal ≥ 0.91): the sender's and recipient's service
//! ids and device numbers under the message MAC (`protocol-spec/ratchet.md` SPQR-15).
//!
//! `addresses = kind ‖ uuid[16] ‖ device (sender) ‖ kind ‖ uuid[16] ‖ device (recipient)`, with
//! kind 0 for an ACI (name = hyphenated UUID) and 1 for a PNI (name = `PNI:` + UUID).

use subtle::ConstantTimeEq;

use crate::error::{Error, Result};
use crate::store::ProtocolAddress;

/// Encoded length.
pub const ADDRESSES_LENGTH: usize = 2 * (1 + 16 + 1);

/// `kind ‖ uuid` of a service-id string, or `None` when the name is not one.
fn service_id(name: &str) -> Option<[u8; 17]> {
    let (kind, uuid) = match name.strip_prefix("PNI:") {
        Some(rest) => (1u8, rest),
        None => (0u8, name),
    };
    let b = uuid.as_bytes();
    if b.len() != 36 {
        return None;
    }
    let mut out = [0u8; 17];
    out[0] = kind;
    let mut n = 0;
    let mut i = 0;
    while i < 36 {
        if matches!(i, 8 | 13 | 18 | 23) {
            if b[i] != b'-' {
                return None;
            }
            i += 1;
            continue;
        }
        let hi = (b[i] as char).to_digit(16)?;
        let lo = (b[i + 1] as char).to_digit(16)?;
        out[1 + n] = (hi * 16 + lo) as u8;
        n += 1;
        i += 2;
    }
    Some(out)
}

/// The field-6 bytes for `(sender, recipient)`, if both names are service ids and both
/// device numbers fit a byte.
pub fn encode(sender: &ProtocolAddress, recipient: &ProtocolAddress) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(ADDRESSES_LENGTH);
    for a in [sender, recipient] {
        out.extend_from_slice(&service_id(&a.name)?);
        out.push(u8::try_from(a.device_id).ok()?);
    }
    Some(out)
}

/// Checks a received field 6 against the addresses the message came from and went to.
/// Absent: nothing to check. Present: the local address must be known and both addresses must
/// give exactly these bytes.
pub(crate) fn check(
    field: Option<&[u8]>,
    sender: &ProtocolAddress,
    local: Option<&ProtocolAddress>,
) -> Result<()> {
    let Some(field) = field else {
        return Ok(());
    };
    let local = local.ok_or(Error::InvalidMessage(
        "message binds addresses but no local address was given to check them",
    ))?;
    let expected = encode(sender, local).ok_or(Error::InvalidMessage(
        "message binds addresses but ours are not service ids",
    ))?;
    if bool::from(expected.as_slice().ct_eq(field)) {
        Ok(())
    } else {
        Err(Error::DecryptionFailed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "9d0652a3-dcc3-4d11-975f-74d61598733f";
    const B: &str = "0B7E1E4A-1C6F-4F8E-9D2A-3C5B7A9E1F20";

    #[test]
    fn layout_of_aci_and_pni() {
        let pni = format!("PNI:{B}");
        let f = encode(&ProtocolAddress::new(A, 2), &ProtocolAddress::new(pni, 127)).unwrap();
        assert_eq!(f.len(), ADDRESSES_LENGTH);
        assert_eq!(&f[..3], &[0, 0x9d, 0x06]);
        assert_eq!(f[17], 2);
        assert_eq!(&f[18..20], &[1, 0x0b]);
        assert_eq!(f[35], 127);
    }

    #[test]
    fn non_service_ids_do_not_encode() {
        let ok = ProtocolAddress::new(A, 1);
        for bad in [
            "alice",
            &A[1..],
            &format!("{A}0"),
            &A.replace('-', "_"),
            "ACI:x",
        ] {
            assert!(
                encode(&ok, &ProtocolAddress::new(bad, 1)).is_none(),
                "{bad}"
            );
        }
        assert!(encode(&ok, &ProtocolAddress::new(A, 256)).is_none());
    }

    #[test]
    fn check_accepts_only_the_right_pair() {
        let (a, b) = (ProtocolAddress::new(A, 1), ProtocolAddress::new(B, 1));
        let f = encode(&a, &b).unwrap();
        assert!(check(None, &a, None).is_ok());
        assert!(check(Some(&f), &a, Some(&b)).is_ok());
        assert_eq!(check(Some(&f), &b, Some(&a)), Err(Error::DecryptionFailed));
        assert!(check(Some(&f), &a, None).is_err());
        assert!(check(Some(&f), &a, Some(&ProtocolAddress::new("bob", 1))).is_err());
        assert!(check(Some(&f[..35]), &a, Some(&b)).is_err());
    }
}
