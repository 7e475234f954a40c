//! The crate's one error type.

use std::path::PathBuf;

use crate::consts::{MAX_CERTIFICATES_PER_FILE, MAX_PEM_FILE_BYTES};

/// Everything that can go wrong in `sotto-tls`.
///
/// `Display` names files by path but never prints their contents (a key file's bytes, or a line
/// of one, never appear), and never a URL (it may carry credentials).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // ---- the caller's configuration ----
    /// The URL does not parse, or has no host.
    #[error("invalid URL: {0}")]
    InvalidUrl(&'static str),
    /// Neither `wss://` nor `ws://`.
    #[error("unsupported URL scheme: use wss:// (or ws:// to a loopback host)")]
    UnsupportedScheme,
    /// `ws://` to a host that is not loopback (127.0.0.0/8, ::1, `localhost`): refused before
    /// any connection is made.
    #[error("plain ws:// is allowed only to a loopback host: use wss://")]
    PlaintextToRemoteHost,
    /// A file could not be read.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file over [`MAX_PEM_FILE_BYTES`].
    #[error("{path}: larger than MAX_PEM_FILE_BYTES ({MAX_PEM_FILE_BYTES})")]
    FileTooLarge {
        /// The file.
        path: PathBuf,
    },
    /// A file that is not valid PEM.
    #[error("{path}: malformed PEM")]
    MalformedPem {
        /// The file.
        path: PathBuf,
    },
    /// A file with no `CERTIFICATE` section.
    #[error("{path}: no PEM certificate in the file")]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// More than [`MAX_CERTIFICATES_PER_FILE`] certificates in one file.
    #[error(
        "{path}: more than MAX_CERTIFICATES_PER_FILE ({MAX_CERTIFICATES_PER_FILE}) certificates"
    )]
    TooManyCertificates {
        /// The file.
        path: PathBuf,
    },
    /// A file with no private key section (PKCS#8, PKCS#1 or SEC1).
    #[error("{path}: no PEM private key in the file")]
    NoPrivateKey {
        /// The file.
        path: PathBuf,
    },
    /// An extra CA certificate that cannot be a trust anchor.
    #[error("{path}: CA certificate refused: {source}")]
    BadCaCertificate {
        /// The file.
        path: PathBuf,
        /// Why rustls refused it.
        source: rustls::Error,
    },
    /// The certificate chain and private key do not make a server configuration (the key does
    /// not match the certificate, or is of an unsupported type).
    #[error("certificate and private key refused: {0}")]
    ServerCertificate(rustls::Error),
    /// The TLS configuration could not be built (the crypto provider lacks what the protocol
    /// versions need).
    #[error("TLS configuration: {0}")]
    Config(rustls::Error),
    /// A server without a certificate was asked to reload it.
    #[error("TLS is not configured (no certificate and key were given)")]
    NotConfigured,
    // ---- the peer ----
    /// The server's certificate was not accepted (unknown issuer, wrong name, expired...).
    #[error("server certificate refused: {0}")]
    Certificate(rustls::CertificateError),
    /// The TLS handshake failed for another reason (no common version or cipher suite, an alert
    /// from the server, garbage).
    #[error("TLS handshake failed: {0}")]
    Handshake(rustls::Error),
    // ---- transport ----
    /// Name resolution, TCP connect, or I/O during the handshake.
    #[error("connect: {0}")]
    Io(std::io::Error),
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
