//! Reading PEM files: bounded in size, and a private key's bytes zeroized once parsed.

use std::io::Read;
use std::path::Path;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use zeroize::Zeroizing;

use crate::consts::{MAX_CERTIFICATES_PER_FILE, MAX_PEM_FILE_BYTES};
use crate::error::{Error, Result};

/// The bytes of `path`, at most [`MAX_PEM_FILE_BYTES`]; zeroized when dropped.
fn read_bounded(path: &Path) -> Result<Zeroizing<Vec<u8>>> {
    let file_err = |source| Error::File {
        path: path.to_path_buf(),
        source,
    };
    let f = std::fs::File::open(path).map_err(file_err)?;
    let mut buf = Zeroizing::new(Vec::new());
    // one byte more than the limit tells a file at the limit from one past it
    f.take(MAX_PEM_FILE_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(file_err)?;
    if buf.len() as u64 > MAX_PEM_FILE_BYTES {
        return Err(Error::FileTooLarge {
            path: path.to_path_buf(),
        });
    }
    Ok(buf)
}

/// Every certificate in `path` (at least one, at most [`MAX_CERTIFICATES_PER_FILE`]), in file
/// order; other sections are skipped.
pub(crate) fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let bytes = read_bounded(path)?;
    let mut certs = Vec::new();
    for c in CertificateDer::pem_slice_iter(&bytes) {
        let c = c.map_err(|_| Error::MalformedPem {
            path: path.to_path_buf(),
        })?;
        if certs.len() == MAX_CERTIFICATES_PER_FILE {
            return Err(Error::TooManyCertificates {
                path: path.to_path_buf(),
            });
        }
        certs.push(c);
    }
    if certs.is_empty() {
        return Err(Error::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// The first private key in `path` (PKCS#8, PKCS#1 or SEC1).
pub(crate) fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let bytes = read_bounded(path)?;
    // the PEM error is not shown: it may quote a line of the key
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => Error::NoPrivateKey {
            path: path.to_path_buf(),
        },
        _ => Error::MalformedPem {
            path: path.to_path_buf(),
        },
    })
}
