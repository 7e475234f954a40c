//! SPQR's erasure code: a systematic Reed–Solomon code over GF(2^16) sending a message as
//! 32-byte chunks, any `⌈len/32⌉` distinct ones of which rebuild it
//! (`protocol-spec/ratchet.md` §12.4).
//!
//! The message is read as big-endian 16-bit words; word `i` is the value at `x = ⌊i/16⌋` of
//! polynomial `i mod 16`. Chunk `c` carries the 16 polynomials evaluated at `x = c`. The code
//! corrects erasures, not errors: a corrupted chunk yields a wrong message, which the braid's
//! MACs then refuse.

use super::gf16;
use crate::consts::{SPQR_CHUNK_SIZE, SPQR_MAX_CODED_MESSAGE_SIZE};
use crate::error::{Error, Result};

/// Polynomials per chunk (one 16-bit word each).
pub(crate) const POLYS: usize = SPQR_CHUNK_SIZE / 2;

/// One coded piece: its index (the evaluation point) and 32 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// Evaluation point.
    pub index: u16,
    /// The 16 evaluations, big-endian.
    pub data: [u8; SPQR_CHUNK_SIZE],
}

/// Points each polynomial carries for a message of `words` 16-bit words.
fn points_of(words: usize, poly: usize) -> usize {
    words / POLYS + usize::from(poly < words % POLYS)
}

fn check_len(len: usize) -> Result<()> {
    if len == 0 || !len.is_multiple_of(2) || len > SPQR_MAX_CODED_MESSAGE_SIZE {
        return Err(Error::InvalidArgument("erasure-coded length"));
    }
    Ok(())
}

/// The Lagrange basis over distinct points `xs`, prepared once so that evaluating any number of
/// polynomials through those points at any `x` costs `O(n)` per value.
struct Basis {
    xs: Vec<u16>,
    /// `1 / Π_{j≠k} (x_k − x_j)`.
    den_inv: Vec<u16>,
}

impl Basis {
    fn new(xs: Vec<u16>) -> Self {
        let den_inv = xs
            .iter()
            .enumerate()
            .map(|(k, &xk)| {
                let den = xs
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != k)
                    .fold(1u16, |acc, (_, &xj)| gf16::mul(acc, xk ^ xj));
                gf16::inv(den)
            })
            .collect();
        Self { xs, den_inv }
    }

    /// `L_k(x)` for every `k`, or the index of `x` when it is one of the points.
    fn weights(&self, x: u16) -> core::result::Result<Vec<u16>, usize> {
        if let Some(k) = self.xs.iter().position(|&xk| xk == x) {
            return Err(k);
        }
        let n = self.xs.len();
        // prefix[k] = Π_{j<k} (x − x_j), suffix[k] = Π_{j≥k} (x − x_j).
        let mut prefix = vec![1u16; n + 1];
        let mut suffix = vec![1u16; n + 1];
        for k in 0..n {
            prefix[k + 1] = gf16::mul(prefix[k], x ^ self.xs[k]);
            suffix[n - 1 - k] = gf16::mul(suffix[n - k], x ^ self.xs[n - 1 - k]);
        }
        Ok((0..n)
            .map(|k| gf16::mul(gf16::mul(prefix[k], suffix[k + 1]), self.den_inv[k]))
            .collect())
    }
}

/// `Σ y_k · w_k`, or the point's own value.
fn combine(ys: &[u16], w: &core::result::Result<Vec<u16>, usize>) -> u16 {
    match w {
        Ok(w) => ys
            .iter()
            .zip(w)
            .fold(0u16, |acc, (&y, &wk)| acc ^ gf16::mul(y, wk)),
        Err(k) => ys.get(*k).copied().unwrap_or(0),
    }
}

/// Produces the chunks of one message, in index order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoder {
    /// `points[p][x]` = word `16·x + p` of the message.
    points: Vec<Vec<u16>>,
    next: u32,
}

impl Encoder {
    /// Codes `msg` (even length, at most `SPQR_MAX_CODED_MESSAGE_SIZE` bytes).
    pub fn new(msg: &[u8]) -> Result<Self> {
        check_len(msg.len())?;
        let mut points = vec![Vec::new(); POLYS];
        for (i, w) in msg.chunks_exact(2).enumerate() {
            points[i % POLYS].push(u16::from_be_bytes([w[0], w[1]]));
        }
        Ok(Self { points, next: 0 })
    }

    pub(crate) fn from_parts(msg: &[u8], next: u32) -> Result<Self> {
        let mut e = Self::new(msg)?;
        e.next = next;
        Ok(e)
    }

    /// The coded message bytes and the next chunk index, for storage.
    pub(crate) fn parts(&self) -> (Vec<u8>, u32) {
        let words: usize = self.points.iter().map(Vec::len).sum();
        let mut msg = Vec::with_capacity(words * 2);
        for i in 0..words {
            let w = self.points[i % POLYS][i / POLYS];
            msg.extend_from_slice(&w.to_be_bytes());
        }
        (msg, self.next)
    }

    /// Chunk at `index`.
    pub fn chunk_at(&self, index: u16) -> Chunk {
        let mut data = [0u8; SPQR_CHUNK_SIZE];
        // Polynomials carry n or n + 1 points at x = 0, 1, …: at most two bases.
        let mut bases: Vec<(usize, core::result::Result<Vec<u16>, usize>)> = Vec::new();
        for (p, pts) in self.points.iter().enumerate() {
            let y = match pts.get(usize::from(index)) {
                Some(&y) => y,
                None => {
                    let n = pts.len();
                    let i = match bases.iter().position(|(len, _)| *len == n) {
                        Some(i) => i,
                        None => {
                            let xs = (0..n as u16).collect();
                            bases.push((n, Basis::new(xs).weights(index)));
                            bases.len() - 1
                        }
                    };
                    combine(pts, &bases[i].1)
                }
            };
            data[2 * p..2 * p + 2].copy_from_slice(&y.to_be_bytes());
        }
        Chunk { index, data }
    }

    /// The next chunk (indices 0, 1, 2, … wrapping at 2^16, as SPQR senders do).
    pub fn next_chunk(&mut self) -> Chunk {
        let chunk = self.chunk_at((self.next & 0xFFFF) as u16);
        self.next = self.next.wrapping_add(1);
        chunk
    }
}

/// Collects chunks until the message can be rebuilt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoder {
    words: usize,
    /// Per polynomial, the points received so far (first value per `x` wins).
    points: Vec<Vec<(u16, u16)>>,
}

impl Decoder {
    /// A decoder for a message of `len` bytes.
    pub fn new(len: usize) -> Result<Self> {
        check_len(len)?;
        Ok(Self {
            words: len / 2,
            points: vec![Vec::new(); POLYS],
        })
    }

    /// Message length in bytes (never 0).
    pub fn message_len(&self) -> usize {
        self.words * 2
    }

    /// Chunk points stored, for storage: `(poly, x, y)`.
    pub(crate) fn stored_points(&self) -> impl Iterator<Item = (usize, u16, u16)> + '_ {
        self.points
            .iter()
            .enumerate()
            .flat_map(|(p, v)| v.iter().map(move |&(x, y)| (p, x, y)))
    }

    pub(crate) fn restore_point(&mut self, poly: usize, x: u16, y: u16) -> Result<()> {
        let needed = points_of(self.words, poly);
        let pts = self
            .points
            .get_mut(poly)
            .ok_or(Error::InvalidArgument("erasure decoder polynomial"))?;
        if pts.len() >= needed || pts.iter().any(|(px, _)| *px == x) {
            return Err(Error::InvalidArgument("erasure decoder points"));
        }
        pts.push((x, y));
        Ok(())
    }

    /// Adds a chunk; chunks with an index already seen, and chunks arriving once enough are
    /// held, are ignored.
    pub fn add_chunk(&mut self, chunk: &Chunk) {
        for (p, pts) in self.points.iter_mut().enumerate() {
            let needed = points_of(self.words, p);
            if pts.len() >= needed || pts.iter().any(|(x, _)| *x == chunk.index) {
                continue;
            }
            let y = u16::from_be_bytes([chunk.data[2 * p], chunk.data[2 * p + 1]]);
            pts.push((chunk.index, y));
        }
    }

    /// Whether enough chunks arrived.
    pub fn is_complete(&self) -> bool {
        self.points
            .iter()
            .enumerate()
            .all(|(p, pts)| pts.len() >= points_of(self.words, p))
    }

    /// The message, once enough distinct chunks arrived.
    pub fn decoded(&self) -> Option<Vec<u8>> {
        if !self.is_complete() {
            return None;
        }
        // Polynomials that received the same chunk indices share one basis (the usual case).
        let mut bases: Vec<(Vec<u16>, Basis)> = Vec::new();
        let mut values: Vec<Vec<u16>> = Vec::with_capacity(POLYS);
        for (p, pts) in self.points.iter().enumerate() {
            let xs: Vec<u16> = pts.iter().map(|(x, _)| *x).collect();
            let ys: Vec<u16> = pts.iter().map(|(_, y)| *y).collect();
            let i = match bases.iter().position(|(b, _)| *b == xs) {
                Some(i) => i,
                None => {
                    bases.push((xs.clone(), Basis::new(xs)));
                    bases.len() - 1
                }
            };
            let basis = &bases[i].1;
            let n = points_of(self.words, p) as u16;
            values.push((0..n).map(|x| combine(&ys, &basis.weights(x))).collect());
        }
        let mut out = Vec::with_capacity(self.words * 2);
        for i in 0..self.words {
            let w = values[i % POLYS][i / POLYS];
            out.extend_from_slice(&w.to_be_bytes());
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};

    fn random_msg(rng: &mut impl Rng, len: usize) -> Vec<u8> {
        (0..len).map(|_| rng.gen()).collect()
    }

    #[test]
    fn systematic_chunks_are_the_message_itself() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let msg = random_msg(&mut rng, 1152);
        let mut enc = Encoder::new(&msg).unwrap();
        for c in 0..36u16 {
            let chunk = enc.next_chunk();
            assert_eq!(chunk.index, c);
            assert_eq!(
                &chunk.data[..],
                &msg[32 * usize::from(c)..32 * usize::from(c) + 32]
            );
        }
    }

    #[test]
    fn any_n_distinct_chunks_rebuild_every_spqr_size() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        // Header+MAC, ct2+MAC, ct1, ek, and two lengths that are not multiples of 32.
        for len in [96usize, 160, 960, 1152, 10, 70] {
            let msg = random_msg(&mut rng, len);
            let enc = Encoder::new(&msg).unwrap();
            let n = len.div_ceil(SPQR_CHUNK_SIZE);
            for _ in 0..8 {
                let mut indices: Vec<u16> = (0..(3 * n as u16 + 5)).collect();
                indices.shuffle(&mut rng);
                let mut dec = Decoder::new(len).unwrap();
                for (k, &i) in indices.iter().enumerate() {
                    assert!(dec.decoded().is_none() || k >= n);
                    dec.add_chunk(&enc.chunk_at(i));
                    if k + 1 == n {
                        break;
                    }
                }
                assert_eq!(dec.decoded().as_deref(), Some(&msg[..]), "len {len}");
            }
        }
    }

    #[test]
    fn fewer_than_n_chunks_or_repeats_do_not_decode() {
        let msg = vec![7u8; 160];
        let enc = Encoder::new(&msg).unwrap();
        let mut dec = Decoder::new(160).unwrap();
        for _ in 0..10 {
            dec.add_chunk(&enc.chunk_at(9));
        }
        for i in 0..3 {
            dec.add_chunk(&enc.chunk_at(i));
        }
        assert!(dec.decoded().is_none(), "4 distinct of 5 needed");
        dec.add_chunk(&enc.chunk_at(40_000));
        assert_eq!(dec.decoded().unwrap(), msg);
    }

    #[test]
    fn a_corrupted_chunk_changes_the_rebuilt_message() {
        // Erasure codes cannot detect errors; the braid's MACs refuse the result
        // (see braid tests). Pin that corruption is not silently repaired.
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let msg = random_msg(&mut rng, 96);
        let enc = Encoder::new(&msg).unwrap();
        let mut dec = Decoder::new(96).unwrap();
        let mut bad = enc.chunk_at(5);
        bad.data[0] ^= 1;
        dec.add_chunk(&bad);
        dec.add_chunk(&enc.chunk_at(6));
        dec.add_chunk(&enc.chunk_at(7));
        assert_ne!(dec.decoded().unwrap(), msg);
    }

    #[test]
    fn lengths_are_checked_at_the_limit() {
        assert!(Encoder::new(&[]).is_err());
        assert!(Encoder::new(&[1, 2, 3]).is_err());
        assert!(Encoder::new(&vec![0; SPQR_MAX_CODED_MESSAGE_SIZE]).is_ok());
        assert!(Encoder::new(&vec![0; SPQR_MAX_CODED_MESSAGE_SIZE + 2]).is_err());
        assert!(Decoder::new(SPQR_MAX_CODED_MESSAGE_SIZE).is_ok());
        assert!(Decoder::new(SPQR_MAX_CODED_MESSAGE_SIZE + 2).is_err());
    }

    #[test]
    fn storage_parts_round_trip() {
        let msg: Vec<u8> = (0..96u8).collect();
        let mut enc = Encoder::new(&msg).unwrap();
        enc.next_chunk();
        let (m, next) = enc.parts();
        assert_eq!((m.as_slice(), next), (&msg[..], 1));
        assert_eq!(Encoder::from_parts(&m, next).unwrap(), enc);
    }
}
