//! The server side: a certificate chain and key from PEM files, reloadable while serving.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};

use rustls::ServerConfig;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use crate::error::{Error, Result};
use crate::stream::Stream;
use crate::{pem, provider};

/// Where a server's certificate chain and private key are (PEM files). Paths only: the files are
/// read when the server starts and again on every reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first (`fullchain.pem`).
    pub cert_chain: PathBuf,
    /// The private key of the leaf: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
    pub private_key: PathBuf,
}

impl TlsFiles {
    /// The chain in `cert_chain`, its key in `private_key`.
    pub fn new(cert_chain: impl Into<PathBuf>, private_key: impl Into<PathBuf>) -> Self {
        Self {
            cert_chain: cert_chain.into(),
            private_key: private_key.into(),
        }
    }
}

/// A server's TLS configuration (TLS 1.3 and 1.2, no client certificates), swappable while
/// serving: [`ServerTls::reload`] reads the files again, and connections accepted afterwards get
/// the new certificate while those already open keep theirs.
pub struct ServerTls {
    files: TlsFiles,
    current: RwLock<Arc<ServerConfig>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Reads the certificate chain and key.
    ///
    /// # Errors
    /// A file that cannot be read, is too large or holds no certificate / key, or a key that
    /// does not match the certificate ([`Error::ServerCertificate`]).
    pub fn load(files: TlsFiles) -> Result<Self> {
        let config = build(&files)?;
        Ok(Self {
            files,
            current: RwLock::new(config),
        })
    }

    /// The files this configuration is read from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// Reads the files again and, if they make a valid configuration, serves it to every
    /// connection accepted from now on. Open connections are not touched.
    ///
    /// # Errors
    /// As [`ServerTls::load`]; the certificate served before stays in use.
    pub fn reload(&self) -> Result<()> {
        let config = build(&self.files)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = config;
        Ok(())
    }

    /// Runs the server side of the TLS handshake on `tcp` with the configuration in use now.
    ///
    /// # Errors
    /// The handshake failed (the caller bounds its time).
    pub async fn accept(&self, tcp: TcpStream) -> std::io::Result<Stream> {
        let config = self
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let s = TlsAcceptor::from(config).accept(tcp).await?;
        Ok(Stream::Tls(Box::new(tokio_rustls::TlsStream::Server(s))))
    }
}

/// `tcp` as the server's side of a connection: through the TLS handshake if `tls` is given,
/// plain otherwise.
///
/// # Errors
/// The TLS handshake failed.
pub async fn accept(tls: Option<&ServerTls>, tcp: TcpStream) -> std::io::Result<Stream> {
    match tls {
        Some(t) => t.accept(tcp).await,
        None => Ok(Stream::Plain(tcp)),
    }
}

/// Logs a warning if a listener on `addr` serves plain WebSocket (`tls` false) to more than
/// this machine; `what` names the listener in the message.
pub fn warn_if_plaintext_exposed(what: &str, addr: SocketAddr, tls: bool) {
    if !tls && !addr.ip().to_canonical().is_loopback() {
        tracing::warn!(
            %addr,
            "{what} serves plain ws:// on an address that is not loopback: clients refuse \
             ws:// to other hosts; give a certificate and key to serve wss://"
        );
    }
}

fn build(files: &TlsFiles) -> Result<Arc<ServerConfig>> {
    let chain = pem::certificates(&files.cert_chain)?;
    let key = pem::private_key(&files.private_key)?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(Error::Config)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(Error::ServerCertificate)?;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consts::MAX_PEM_FILE_BYTES;

    fn self_signed(dir: &std::path::Path, name: &str) -> TlsFiles {
        let c = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let files = TlsFiles::new(
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&files.cert_chain, c.cert.pem()).unwrap();
        std::fs::write(&files.private_key, c.signing_key.serialize_pem()).unwrap();
        files
    }

    fn current(t: &ServerTls) -> Arc<ServerConfig> {
        t.current.read().unwrap().clone()
    }

    #[test]
    fn a_bad_reload_keeps_the_configuration_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let files = self_signed(dir.path(), "a");
        let tls = ServerTls::load(files.clone()).unwrap();
        let before = current(&tls);

        std::fs::write(&files.cert_chain, "garbage").unwrap();
        let e = tls.reload().unwrap_err();
        assert!(matches!(e, Error::NoCertificate { .. }), "{e}");
        assert!(Arc::ptr_eq(&before, &current(&tls)));

        // a key that is not the certificate's
        let other = self_signed(dir.path(), "b");
        std::fs::copy(&other.cert_chain, &files.cert_chain).unwrap();
        let e = tls.reload().unwrap_err();
        assert!(matches!(e, Error::ServerCertificate(_)), "{e}");
        assert!(Arc::ptr_eq(&before, &current(&tls)));

        std::fs::copy(&other.private_key, &files.private_key).unwrap();
        tls.reload().unwrap();
        assert!(!Arc::ptr_eq(&before, &current(&tls)));
    }

    #[test]
    fn missing_and_keyless_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let files = self_signed(dir.path(), "a");
        let no_key = TlsFiles::new(&files.cert_chain, &files.cert_chain);
        let e = ServerTls::load(no_key).unwrap_err();
        assert!(
            matches!(e, Error::NoPrivateKey { ref path } if *path == files.cert_chain),
            "{e}"
        );
        let missing = TlsFiles::new(dir.path().join("none.crt"), &files.private_key);
        assert!(matches!(
            ServerTls::load(missing).unwrap_err(),
            Error::File { .. }
        ));
    }

    #[test]
    fn a_key_error_never_shows_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let files = self_signed(dir.path(), "a");
        let key = std::fs::read_to_string(&files.private_key).unwrap();
        // a key file cut short: its PEM error would quote a line of the key
        let cut: String = key.lines().take(3).collect::<Vec<_>>().join("\n");
        std::fs::write(&files.private_key, &cut).unwrap();
        let e = ServerTls::load(files.clone()).unwrap_err();
        let shown = format!("{e} {e:?}");
        for line in cut.lines().skip(1) {
            assert!(!shown.contains(line), "{shown}");
        }
    }

    #[test]
    fn pem_files_are_read_up_to_max_pem_file_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let files = self_signed(dir.path(), "a");
        let pem = std::fs::read(&files.cert_chain).unwrap();
        // at the limit: the certificate, padded with blank lines (text outside sections is
        // ignored)
        let mut at = pem.clone();
        at.resize(MAX_PEM_FILE_BYTES as usize, b'\n');
        std::fs::write(&files.cert_chain, &at).unwrap();
        ServerTls::load(files.clone()).unwrap();
        at.push(b'\n');
        std::fs::write(&files.cert_chain, &at).unwrap();
        let e = ServerTls::load(files).unwrap_err();
        assert!(matches!(e, Error::FileTooLarge { .. }), "{e}");
    }
}
