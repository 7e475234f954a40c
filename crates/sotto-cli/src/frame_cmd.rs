//! `sotto frame inspect|decrypt`: read SFrame payloads (hex, a raw file, or a relay capture),
//! print their headers, and decrypt them with a given key.

use std::path::PathBuf;
use std::time::Instant;

use clap::{Args, Subcommand, ValueEnum};
use sotto_frame::{CipherSuite, Codec, FrameKey, Header, KeyId, KeyMaterial, KeyRing};

use crate::CliError;

/// `println!` that ends the command quietly when stdout is closed (e.g. piped into `head`)
/// instead of panicking.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if writeln!(std::io::stdout().lock(), $($arg)*).is_err() {
            return Ok(());
        }
    }};
}

/// Largest input file `frame` reads (a capture of a whole demo call is far below this).
pub const MAX_INPUT_FILE: u64 = 256 * 1024 * 1024;

#[derive(Subcommand, Debug)]
pub enum FrameCmd {
    /// Decode SFrame headers: KID (sender, generation, step), counter, suite, sizes.
    Inspect(InspectArgs),
    /// Decrypt SFrame payloads with a base key or a key-material blob; fails on a wrong key.
    Decrypt(DecryptArgs),
}

#[derive(Args, Debug)]
pub struct Input {
    /// The payload as a hex string (whitespace ignored).
    #[arg(conflicts_with_all = ["file", "capture"])]
    hex: Option<String>,
    /// A file holding one raw payload.
    #[arg(long, conflicts_with = "capture")]
    file: Option<PathBuf>,
    /// A relay capture (`sotto relay --capture DIR` writes DIR/capture.bin): every frame in it,
    /// reassembled from the forwarded RTP payloads, with its codec layout.
    #[arg(long)]
    capture: Option<PathBuf>,
    /// Frame layout: `full` (whole frame encrypted), `vp8` or `opus` (codec-aware: leading
    /// bytes in clear, authenticated). Default `full`.
    #[arg(long, value_enum)]
    codec: Option<CodecArg>,
    /// Application metadata (hex) authenticated with each frame (RFC 9605 §4.4.3); sotto's
    /// media frames use none.
    #[arg(long, default_value = "")]
    metadata: String,
    /// Cipher suite (not carried on the wire).
    #[arg(long, value_enum, default_value_t = SuiteArg::Aes128Gcm)]
    suite: SuiteArg,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    #[command(flatten)]
    input: Input,
}

#[derive(Args, Debug)]
pub struct DecryptArgs {
    #[command(flatten)]
    input: Input,
    /// The base key (hex) of the KID in the frame's header.
    #[arg(
        long,
        conflicts_with = "key_material",
        required_unless_present = "key_material"
    )]
    key: Option<String>,
    /// A KeyMaterial blob (hex, protocol-spec/frame.md); later ratchet steps are followed.
    #[arg(long)]
    key_material: Option<String>,
    /// Write the decrypted frames here (concatenated) instead of printing hex.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodecArg {
    Full,
    Vp8,
    Opus,
}

impl From<CodecArg> for Codec {
    fn from(c: CodecArg) -> Codec {
        match c {
            CodecArg::Full => Codec::Full,
            CodecArg::Vp8 => Codec::Vp8,
            CodecArg::Opus => Codec::Opus,
        }
    }
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SuiteArg {
    #[value(name = "aes-128-gcm")]
    Aes128Gcm,
    #[value(name = "aes-256-gcm")]
    Aes256Gcm,
    #[value(name = "aes-128-ctr-hmac-80")]
    Ctr80,
    #[value(name = "aes-128-ctr-hmac-64")]
    Ctr64,
    #[value(name = "aes-128-ctr-hmac-32")]
    Ctr32,
}

impl From<SuiteArg> for CipherSuite {
    fn from(s: SuiteArg) -> CipherSuite {
        match s {
            SuiteArg::Aes128Gcm => CipherSuite::Aes128GcmSha256_128,
            SuiteArg::Aes256Gcm => CipherSuite::Aes256GcmSha512_128,
            SuiteArg::Ctr80 => CipherSuite::Aes128CtrHmacSha256_80,
            SuiteArg::Ctr64 => CipherSuite::Aes128CtrHmacSha256_64,
            SuiteArg::Ctr32 => CipherSuite::Aes128CtrHmacSha256_32,
        }
    }
}

/// One payload to look at, and where it came from.
struct Payload {
    label: String,
    codec: Codec,
    bytes: Vec<u8>,
}

pub fn run(cmd: FrameCmd) -> Result<(), CliError> {
    match cmd {
        FrameCmd::Inspect(a) => inspect(&a.input),
        FrameCmd::Decrypt(a) => decrypt(&a),
    }
}

fn parse_hex(what: &str, s: &str) -> Result<Vec<u8>, CliError> {
    let clean: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    let clean = clean.strip_prefix("0x").unwrap_or(&clean);
    hex::decode(clean).map_err(|e| CliError::Usage(format!("{what} is not valid hex: {e}")))
}

fn read_limited(path: &PathBuf) -> Result<Vec<u8>, CliError> {
    let meta = std::fs::metadata(path).map_err(|e| CliError::io(path, e))?;
    if meta.len() > MAX_INPUT_FILE {
        return Err(CliError::Usage(format!(
            "{} is {} bytes, over MAX_INPUT_FILE ({MAX_INPUT_FILE})",
            path.display(),
            meta.len()
        )));
    }
    std::fs::read(path).map_err(|e| CliError::io(path, e))
}

fn payloads(input: &Input) -> Result<Vec<Payload>, CliError> {
    let codec = input.codec.map(Codec::from);
    if let Some(h) = &input.hex {
        return Ok(vec![Payload {
            label: "payload".into(),
            codec: codec.unwrap_or(Codec::Full),
            bytes: parse_hex("the payload", h)?,
        }]);
    }
    if let Some(p) = &input.file {
        return Ok(vec![Payload {
            label: p.display().to_string(),
            codec: codec.unwrap_or(Codec::Full),
            bytes: read_limited(p)?,
        }]);
    }
    if let Some(p) = &input.capture {
        let data = read_limited(p)?;
        let records = sotto_relay::capture::parse(&data)
            .map_err(|e| CliError::Usage(format!("{}: {e}", p.display())))?;
        return Ok(sotto_relay::capture::frames(&records)
            .into_iter()
            .enumerate()
            .map(|(i, f)| {
                let (kind, c) = match f.kind {
                    sotto_relay::capture::Kind::Video => ("video", Codec::Vp8),
                    sotto_relay::capture::Kind::Audio => ("audio", Codec::Opus),
                };
                Payload {
                    label: format!(
                        "frame {i} ({kind} from {}, rtp ts {})",
                        f.sender, f.timestamp
                    ),
                    codec: codec.unwrap_or(c),
                    bytes: f.frame,
                }
            })
            .collect());
    }
    Err(CliError::Usage(
        "give a hex payload, --file PATH or --capture PATH".into(),
    ))
}

/// What `inspect` prints about one payload.
fn describe(p: &Payload, suite: CipherSuite) -> Result<String, sotto_frame::Error> {
    let clear = p.codec.clear_len(&p.bytes)?;
    let (header, hlen) = Header::decode(&p.bytes[clear..])?;
    let (sender, gen, step) = KeyId::split_kid(header.kid);
    let body = p.bytes.len() - clear - hlen;
    let nt = suite.nt();
    let (ct, note) = if body >= nt {
        (body - nt, String::new())
    } else {
        (
            0,
            "  (too short for the tag: cannot authenticate)".to_string(),
        )
    };
    Ok(format!(
        "{}: {} bytes\n  codec {:?}, {} clear bytes\n  suite {}\n  kid {:#x} (sender {}, generation {} mod 16, step {} mod 16)\n  ctr {}\n  header {} bytes, ciphertext {} bytes, tag {} bytes{}",
        p.label,
        p.bytes.len(),
        p.codec,
        clear,
        suite,
        header.kid,
        sender,
        gen,
        step,
        header.ctr,
        hlen,
        ct,
        nt,
        note
    ))
}

fn inspect(input: &Input) -> Result<(), CliError> {
    let suite = CipherSuite::from(input.suite);
    let mut bad = 0usize;
    let all = payloads(input)?;
    for p in &all {
        match describe(p, suite) {
            Ok(s) => say!("{s}"),
            Err(e) => {
                bad += 1;
                say!(
                    "{}: {} bytes: not an SFrame payload: {e}",
                    p.label,
                    p.bytes.len()
                );
            }
        }
    }
    if bad > 0 {
        return Err(CliError::Frame(format!(
            "{bad} of {} payloads did not parse",
            all.len()
        )));
    }
    Ok(())
}

fn decrypt(a: &DecryptArgs) -> Result<(), CliError> {
    let suite = CipherSuite::from(a.input.suite);
    let all = payloads(&a.input)?;
    let now = Instant::now();
    let metadata = parse_hex("--metadata", &a.input.metadata)?;
    let mut ring = match &a.key_material {
        Some(h) => {
            let m = KeyMaterial::from_bytes(&parse_hex("--key-material", h)?)
                .map_err(|e| CliError::Usage(format!("--key-material: {e}")))?;
            let mut ring = KeyRing::new(m.suite);
            ring.add_key(&m, now)
                .map_err(|e| CliError::Usage(format!("--key-material: {e}")))?;
            Some(ring)
        }
        None => None,
    };
    let base_key = match &a.key {
        Some(h) => Some(zeroize::Zeroizing::new(parse_hex("--key", h)?)),
        None => None,
    };
    let mut out = Vec::new();
    let mut failed = 0usize;
    for p in &all {
        let res = match (&mut ring, &base_key) {
            (Some(ring), _) => ring
                .decrypt(p.codec, &metadata, &p.bytes, now)
                .map(|d| (d.id.kid(), d.ctr, d.frame)),
            (None, Some(key)) => open_with_base_key(suite, p, key, &metadata),
            (None, None) => return Err(CliError::Usage("give --key or --key-material".into())),
        };
        match res {
            Ok((kid, ctr, frame)) => {
                if a.out.is_some() {
                    out.extend_from_slice(&frame);
                } else {
                    say!(
                        "{}: kid {kid:#x} ctr {ctr}: {} bytes: {}",
                        p.label,
                        frame.len(),
                        hex::encode(&frame)
                    );
                }
            }
            Err(e) => {
                failed += 1;
                eprintln!("{}: decryption failed: {e}", p.label);
            }
        }
    }
    if let Some(path) = &a.out {
        std::fs::write(path, &out).map_err(|e| CliError::io(path, e))?;
        say!(
            "wrote {} bytes from {} frames to {}",
            out.len(),
            all.len() - failed,
            path.display()
        );
    }
    if failed > 0 {
        return Err(CliError::Frame(format!(
            "{failed} of {} payloads did not decrypt with the given key (wrong key, wrong suite or codec, or tampered)",
            all.len()
        )));
    }
    Ok(())
}

/// The frame's own KID is trusted to name the key: derive (key, salt) for it from `base`.
fn open_with_base_key(
    suite: CipherSuite,
    p: &Payload,
    base: &[u8],
    metadata: &[u8],
) -> Result<(u64, u64, Vec<u8>), sotto_frame::Error> {
    let clear = p.codec.clear_len(&p.bytes)?;
    let (clear_bytes, sframe) = p.bytes.split_at(clear);
    let (header, _) = Header::decode(sframe)?;
    let key = FrameKey::derive(suite, header.kid, base)?;
    // AAD = header ‖ clear codec bytes ‖ metadata (protocol-spec/frame.md).
    let mut aad = clear_bytes.to_vec();
    aad.extend_from_slice(metadata);
    let (header, body) = key.open_frame(&aad, sframe)?;
    let mut frame = clear_bytes.to_vec();
    frame.extend_from_slice(&body);
    Ok((header.kid, header.ctr, frame))
}
