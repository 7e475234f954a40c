//! Relay tokens: the claims in clear, a MAC over them, and the one verification rule.
//!
//! Text form: `v1.<base64url claims>.<base64url mac>` (no padding). The claims are
//! `len16(relay) relay len16(room) room len16(participant) participant u64(issued_at_ms)
//! u64(expires_at_ms)` (big endian); the MAC is HMAC-SHA256 keyed with the [`RelaySecret`]
//! over [`MAC_DOMAIN`] followed by those bytes.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::consts::{
    CLOCK_SKEW_MS, MAC_DOMAIN, MAX_NAME, MAX_RELAY_URL, MAX_TOKEN_LEN, TOKEN_PREFIX,
};
use crate::secret::RelaySecret;

const MAC_LEN: usize = 32;

/// What a token grants: `participant` may join `room` at the relay whose public control URL is
/// `relay`, from `issued_at_ms` until `expires_at_ms` (milliseconds since the Unix epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The relay's public control URL, as the relay knows itself.
    pub relay: String,
    /// Room name.
    pub room: String,
    /// Participant name.
    pub participant: String,
    /// When the server minted it.
    pub issued_at_ms: u64,
    /// When it stops admitting.
    pub expires_at_ms: u64,
}

/// A minted token as text. It admits its holder, so it is handled like a credential:
/// zeroized on drop, `Debug` shows only its length. On the wire (serde) it is the text.
#[derive(Clone, PartialEq, Eq)]
pub struct RelayToken(Zeroizing<String>);

impl std::fmt::Debug for RelayToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RelayToken({} bytes)", self.0.len())
    }
}

impl RelayToken {
    /// The text (for the wire encoder).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A token as received, unverified; over [`MAX_TOKEN_LEN`] is [`TokenError::Malformed`].
    ///
    /// # Errors
    /// [`TokenError::Malformed`].
    pub fn from_text(text: String) -> Result<RelayToken, TokenError> {
        if text.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        Ok(RelayToken(Zeroizing::new(text)))
    }
}

impl serde::Serialize for RelayToken {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for RelayToken {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        RelayToken::from_text(s).map_err(|_| serde::de::Error::custom("relay token too long"))
    }
}

/// Why a token does not admit (the relay's answer to a `join`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// No token.
    #[error("no relay token")]
    Missing,
    /// Not a token of this format (or over the size limits).
    #[error("malformed relay token")]
    Malformed,
    /// The MAC does not verify: another secret, or altered claims.
    #[error("relay token does not verify")]
    Forged,
    /// Past its expiry (plus [`CLOCK_SKEW_MS`]), or issued further in the future than that.
    #[error("relay token expired")]
    Expired,
    /// Minted for another relay.
    #[error("relay token is for another relay")]
    WrongRelay,
    /// Minted for another room.
    #[error("relay token is for another room")]
    WrongRoom,
    /// Minted for another participant name.
    #[error("relay token is for another participant")]
    WrongParticipant,
    /// Minted before this participant last left this room (rejoining needs a fresh token).
    #[error("relay token predates the participant's leave")]
    PredatesLeave,
}

/// Why a token could not be minted (the caller's mistake).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MintError {
    /// A relay URL over [`MAX_RELAY_URL`] bytes, or a room or participant name empty or over
    /// [`MAX_NAME`] bytes.
    #[error("relay token claim out of range")]
    Field,
    /// Expires before it is issued.
    #[error("relay token expires before it is issued")]
    Expiry,
}

fn put(out: &mut Vec<u8>, s: &str) {
    // lengths are checked by the caller (< u16::MAX)
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn fields_ok(c: &Claims) -> bool {
    let name = |s: &str| !s.is_empty() && s.len() <= MAX_NAME;
    !c.relay.is_empty() && c.relay.len() <= MAX_RELAY_URL && name(&c.room) && name(&c.participant)
}

fn encode_claims(c: &Claims) -> Vec<u8> {
    let mut out = Vec::with_capacity(6 + c.relay.len() + c.room.len() + c.participant.len() + 16);
    put(&mut out, &c.relay);
    put(&mut out, &c.room);
    put(&mut out, &c.participant);
    out.extend_from_slice(&c.issued_at_ms.to_be_bytes());
    out.extend_from_slice(&c.expires_at_ms.to_be_bytes());
    out
}

/// Reads claims back, strictly (every byte used, every field in range).
fn decode_claims(mut b: &[u8]) -> Option<Claims> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if b.len() < n {
            return None;
        }
        let (h, t) = b.split_at(n);
        *b = t;
        Some(h)
    }
    fn string(b: &mut &[u8]) -> Option<String> {
        let len = take(b, 2)?;
        let n = u16::from_be_bytes([len[0], len[1]]) as usize;
        String::from_utf8(take(b, n)?.to_vec()).ok()
    }
    fn u64_(b: &mut &[u8]) -> Option<u64> {
        Some(u64::from_be_bytes(take(b, 8)?.try_into().ok()?))
    }
    let c = Claims {
        relay: string(&mut b)?,
        room: string(&mut b)?,
        participant: string(&mut b)?,
        issued_at_ms: u64_(&mut b)?,
        expires_at_ms: u64_(&mut b)?,
    };
    (b.is_empty() && fields_ok(&c)).then_some(c)
}

fn mac(secret: &RelaySecret, claims: &[u8]) -> [u8; MAC_LEN] {
    // HMAC takes a key of any length
    let mut m = match <Hmac<Sha256> as Mac>::new_from_slice(secret.key()) {
        Ok(m) => m,
        Err(_) => unreachable_hmac(),
    };
    m.update(MAC_DOMAIN);
    m.update(claims);
    m.finalize().into_bytes().into()
}

#[allow(clippy::panic)]
fn unreachable_hmac() -> ! {
    panic!("HMAC accepts keys of every length")
}

/// Mints a token for `claims`.
///
/// # Errors
/// [`MintError::Field`] for a claim out of range, [`MintError::Expiry`] when it would expire
/// before it is issued.
pub fn mint(secret: &RelaySecret, claims: &Claims) -> Result<RelayToken, MintError> {
    if !fields_ok(claims) {
        return Err(MintError::Field);
    }
    if claims.expires_at_ms < claims.issued_at_ms {
        return Err(MintError::Expiry);
    }
    let bytes = encode_claims(claims);
    let tag = mac(secret, &bytes);
    let text = format!(
        "{TOKEN_PREFIX}.{}.{}",
        URL_SAFE_NO_PAD.encode(&bytes),
        URL_SAFE_NO_PAD.encode(tag)
    );
    RelayToken::from_text(text).map_err(|_| MintError::Field)
}

/// What the relay expects a join's token to say.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// The relay's own public control URL.
    pub relay: &'a str,
    /// The room the participant asks to join.
    pub room: &'a str,
    /// The name it asks to join under.
    pub participant: &'a str,
    /// The relay's clock, milliseconds since the Unix epoch.
    pub now_ms: u64,
    /// When this participant last left this room, if the relay remembers.
    pub left_at_ms: Option<u64>,
}

/// The one admission rule: does `token` admit `expected`? The MAC is checked (in constant
/// time) before any claim is looked at. Never panics on any input.
///
/// # Errors
/// The first [`TokenError`] that applies, in the order of its variants.
pub fn verify(
    secret: &RelaySecret,
    token: Option<&str>,
    expected: &Expected<'_>,
) -> Result<Claims, TokenError> {
    let text = token.ok_or(TokenError::Missing)?;
    if text.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed);
    }
    let mut parts = text.split('.');
    let (Some(TOKEN_PREFIX), Some(claims_b64), Some(mac_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(claims_b64)
        .map_err(|_| TokenError::Malformed)?;
    let tag = URL_SAFE_NO_PAD
        .decode(mac_b64)
        .map_err(|_| TokenError::Malformed)?;
    if tag.len() != MAC_LEN {
        return Err(TokenError::Malformed);
    }
    let want = mac(secret, &bytes);
    if !bool::from(want.ct_eq(tag.as_slice())) {
        return Err(TokenError::Forged);
    }
    let c = decode_claims(&bytes).ok_or(TokenError::Malformed)?;
    if expected.now_ms > c.expires_at_ms.saturating_add(CLOCK_SKEW_MS)
        || c.issued_at_ms > expected.now_ms.saturating_add(CLOCK_SKEW_MS)
    {
        return Err(TokenError::Expired);
    }
    if c.relay != expected.relay {
        return Err(TokenError::WrongRelay);
    }
    if c.room != expected.room {
        return Err(TokenError::WrongRoom);
    }
    if c.participant != expected.participant {
        return Err(TokenError::WrongParticipant);
    }
    if expected
        .left_at_ms
        .is_some_and(|left| c.issued_at_ms <= left)
    {
        return Err(TokenError::PredatesLeave);
    }
    Ok(c)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    const NOW: u64 = 1_800_000_000_000;

    fn secret(b: u8) -> RelaySecret {
        RelaySecret::from_bytes(&[b; 40]).unwrap()
    }

    fn claims() -> Claims {
        Claims {
            relay: "wss://relay.example.org:8443".into(),
            room: "0123456789abcdef".into(),
            participant: "bob".into(),
            issued_at_ms: NOW,
            expires_at_ms: NOW + 60_000,
        }
    }

    fn expect(c: &Claims) -> Expected<'_> {
        Expected {
            relay: &c.relay,
            room: &c.room,
            participant: &c.participant,
            now_ms: NOW + 1,
            left_at_ms: None,
        }
    }

    #[test]
    fn round_trip() {
        let c = claims();
        let t = mint(&secret(1), &c).unwrap();
        assert!(t.as_str().starts_with("v1."));
        assert_eq!(
            verify(&secret(1), Some(t.as_str()), &expect(&c)),
            Ok(c.clone())
        );
        // serde carries the text
        let json = serde_json::to_string(&t).unwrap();
        let back: RelayToken = serde_json::from_str(&json).unwrap();
        assert_eq!(back, t);
        assert_eq!(
            format!("{t:?}"),
            format!("RelayToken({} bytes)", t.as_str().len())
        );
    }

    #[test]
    fn each_refusal_has_its_error() {
        let c = claims();
        let s = secret(1);
        let t = mint(&s, &c).unwrap();
        let t = Some(t.as_str());
        let e = expect(&c);
        assert_eq!(verify(&s, None, &e), Err(TokenError::Missing));
        assert_eq!(verify(&s, Some("v1.x"), &e), Err(TokenError::Malformed));
        assert_eq!(verify(&secret(2), t, &e), Err(TokenError::Forged));
        let late = Expected {
            now_ms: c.expires_at_ms + CLOCK_SKEW_MS + 1,
            ..e
        };
        assert_eq!(verify(&s, t, &late), Err(TokenError::Expired));
        let skewed = Expected {
            now_ms: c.expires_at_ms + CLOCK_SKEW_MS,
            ..e
        };
        assert!(verify(&s, t, &skewed).is_ok());
        let early = Expected {
            now_ms: NOW - CLOCK_SKEW_MS - 1,
            ..e
        };
        assert_eq!(verify(&s, t, &early), Err(TokenError::Expired));
        let other = Expected {
            relay: "wss://other:8443",
            ..e
        };
        assert_eq!(verify(&s, t, &other), Err(TokenError::WrongRelay));
        let other = Expected {
            room: "another",
            ..e
        };
        assert_eq!(verify(&s, t, &other), Err(TokenError::WrongRoom));
        let other = Expected {
            participant: "mallory",
            ..e
        };
        assert_eq!(verify(&s, t, &other), Err(TokenError::WrongParticipant));
        let left = Expected {
            left_at_ms: Some(NOW),
            ..e
        };
        assert_eq!(verify(&s, t, &left), Err(TokenError::PredatesLeave));
        let left_before = Expected {
            left_at_ms: Some(NOW - 1),
            ..e
        };
        assert!(verify(&s, t, &left_before).is_ok());
    }

    #[test]
    fn every_claim_byte_and_mac_byte_is_bound() {
        let c = claims();
        let s = secret(1);
        let t = mint(&s, &c).unwrap();
        let mut parts = t.as_str().split('.').skip(1);
        let bytes = URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap();
        let tag = URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            let text = format!(
                "v1.{}.{}",
                URL_SAFE_NO_PAD.encode(&b),
                URL_SAFE_NO_PAD.encode(&tag)
            );
            assert_eq!(
                verify(&s, Some(&text), &expect(&c)),
                Err(TokenError::Forged),
                "claim byte {i}"
            );
        }
        for i in 0..tag.len() {
            let mut m = tag.clone();
            m[i] ^= 0x80;
            let text = format!(
                "v1.{}.{}",
                URL_SAFE_NO_PAD.encode(&bytes),
                URL_SAFE_NO_PAD.encode(&m)
            );
            assert_eq!(
                verify(&s, Some(&text), &expect(&c)),
                Err(TokenError::Forged),
                "mac byte {i}"
            );
        }
        // length prefixes keep fields apart: moving a byte from room to participant changes the MAC
        let shifted = Claims {
            room: "0123456789abcde".into(),
            participant: "fbob".into(),
            ..c.clone()
        };
        assert_ne!(mint(&s, &shifted).unwrap(), t);
    }

    #[test]
    fn mint_checks_its_claims() {
        let s = secret(1);
        let long = "a".repeat(MAX_NAME + 1);
        for bad in [
            Claims {
                room: String::new(),
                ..claims()
            },
            Claims {
                participant: long.clone(),
                ..claims()
            },
            Claims {
                relay: "w".repeat(MAX_RELAY_URL + 1),
                ..claims()
            },
        ] {
            assert_eq!(mint(&s, &bad), Err(MintError::Field));
        }
        let at = Claims {
            room: "a".repeat(MAX_NAME),
            relay: "w".repeat(MAX_RELAY_URL),
            ..claims()
        };
        let t = mint(&s, &at).unwrap();
        assert!(t.as_str().len() <= MAX_TOKEN_LEN);
        assert!(verify(&s, Some(t.as_str()), &expect(&at)).is_ok());
        let backwards = Claims {
            expires_at_ms: NOW - 1,
            ..claims()
        };
        assert_eq!(mint(&s, &backwards), Err(MintError::Expiry));
    }

    #[test]
    fn junk_never_panics_and_never_admits() {
        let s = secret(1);
        let c = claims();
        let e = expect(&c);
        let good = mint(&s, &c).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(14);
        let alphabet = b"v1.-_ABCabc0123456789=+/ \xff";
        for n in 0..20_000 {
            let text: String = if n % 2 == 0 {
                // random text from a token-like alphabet
                let len = rng.gen_range(0..200);
                (0..len)
                    .map(|_| alphabet[rng.gen_range(0..alphabet.len())] as char)
                    .collect()
            } else {
                // the good token with a few characters changed, cut or extended
                let mut t: Vec<char> = good.as_str().chars().collect();
                for _ in 0..rng.gen_range(1..4) {
                    let i = rng.gen_range(0..t.len());
                    match rng.gen_range(0..3) {
                        0 => t[i] = alphabet[rng.gen_range(0..alphabet.len())] as char,
                        1 => t.truncate(i.max(1)),
                        _ => t.insert(i, 'A'),
                    }
                }
                t.into_iter().collect()
            };
            if text == good.as_str() {
                continue;
            }
            assert!(verify(&s, Some(&text), &e).is_err(), "{text}");
        }
        let huge = "v1.".to_string() + &"A".repeat(MAX_TOKEN_LEN);
        assert_eq!(verify(&s, Some(&huge), &e), Err(TokenError::Malformed));
        assert!(RelayToken::from_text(huge).is_err());
        // a well-formed MAC over claims that do not parse is still not admitted
        let tag = mac(&s, b"junk");
        let text = format!(
            "v1.{}.{}",
            URL_SAFE_NO_PAD.encode(b"junk"),
            URL_SAFE_NO_PAD.encode(tag)
        );
        assert_eq!(verify(&s, Some(&text), &e), Err(TokenError::Malformed));
    }
}
