//! Named limits of the TLS layer.

/// Largest PEM file read: a certificate chain, a private key or a file of extra CA certificates.
/// A bigger file is refused with [`crate::Error::FileTooLarge`] before it is parsed. (A whole
/// system CA bundle is about 220 KiB.)
pub const MAX_PEM_FILE_BYTES: u64 = 1024 * 1024;

/// Certificates accepted in one PEM file (a chain, or a file of extra CA certificates); more is
/// refused with [`crate::Error::TooManyCertificates`].
pub const MAX_CERTIFICATES_PER_FILE: usize = 512;
