//! The client side: which servers are trusted ([`ClientTls`]) and how a `wss://` or `ws://` URL
//! is connected ([`connect`]).

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::error::{Error, Result};
use crate::stream::Stream;
use crate::{pem, provider};

/// The certificate authorities a client trusts: the system's roots (found by
/// `rustls-native-certs`, which honours `SSL_CERT_FILE` and `SSL_CERT_DIR`), plus any extra CA
/// certificates given. There is no way to turn verification off.
///
/// Cheap to clone. [`Default`] is the system's roots only, loaded once per process when the
/// first `wss://` connection is made.
#[derive(Clone, Default)]
pub struct ClientTls(Roots);

#[derive(Clone, Default)]
enum Roots {
    #[default]
    System,
    Extended {
        config: Arc<ClientConfig>,
        extra: usize,
    },
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("extra_roots", &self.extra_roots())
            .finish()
    }
}

impl ClientTls {
    /// The system's roots only.
    pub fn system() -> Self {
        Self::default()
    }

    /// The system's roots plus every certificate in the PEM files `files` (each may hold
    /// several), e.g. a private CA's.
    ///
    /// # Errors
    /// A file that cannot be read, is over [`MAX_PEM_FILE_BYTES`](crate::consts::MAX_PEM_FILE_BYTES),
    /// holds no certificate, or a certificate that cannot be a trust anchor (each named by path).
    pub fn with_ca_files<P: AsRef<Path>>(files: impl IntoIterator<Item = P>) -> Result<Self> {
        let mut roots = system_roots().clone();
        let mut extra = 0;
        for path in files {
            let path = path.as_ref();
            for cert in pem::certificates(path)? {
                roots.add(cert).map_err(|source| Error::BadCaCertificate {
                    path: path.to_path_buf(),
                    source,
                })?;
                extra += 1;
            }
        }
        if extra == 0 {
            return Ok(Self::system());
        }
        Ok(Self(Roots::Extended {
            config: client_config(roots)?,
            extra,
        }))
    }

    /// How many CA certificates were given besides the system's roots.
    pub fn extra_roots(&self) -> usize {
        match &self.0 {
            Roots::System => 0,
            Roots::Extended { extra, .. } => *extra,
        }
    }

    fn config(&self) -> Result<Arc<ClientConfig>> {
        match &self.0 {
            Roots::System => {
                static SYSTEM: OnceLock<std::result::Result<Arc<ClientConfig>, rustls::Error>> =
                    OnceLock::new();
                SYSTEM
                    .get_or_init(|| build_client_config(system_roots().clone()))
                    .clone()
                    .map_err(Error::Config)
            }
            Roots::Extended { config, .. } => Ok(config.clone()),
        }
    }
}

/// The system's roots, loaded once per process. Unreadable or unparsable system certificates
/// are logged and skipped; with none at all, only servers whose CA was given verify.
fn system_roots() -> &'static RootCertStore {
    static ROOTS: OnceLock<RootCertStore> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::warn!("reading the system's CA certificates: {e}");
        }
        let mut roots = RootCertStore::empty();
        let (added, skipped) = roots.add_parsable_certificates(found.certs);
        if skipped > 0 {
            tracing::debug!(skipped, "system CA certificates that are not trust anchors");
        }
        if added == 0 {
            tracing::warn!("no system CA certificates found: only servers of a given CA verify");
        }
        roots
    })
}

fn build_client_config(
    roots: RootCertStore,
) -> std::result::Result<Arc<ClientConfig>, rustls::Error> {
    Ok(Arc::new(
        ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

fn client_config(roots: RootCertStore) -> Result<Arc<ClientConfig>> {
    build_client_config(roots).map_err(Error::Config)
}

/// Whether `host` (as written in a URL, IPv6 without brackets) is loopback: `localhost`, an
/// address in 127.0.0.0/8, or `::1`.
pub fn is_loopback_host(host: &str) -> bool {
    let h = host.strip_suffix('.').unwrap_or(host);
    if h.eq_ignore_ascii_case("localhost") {
        return true;
    }
    h.parse::<IpAddr>()
        .is_ok_and(|ip| ip.to_canonical().is_loopback())
}

/// Where a URL points.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    tls: bool,
    host: String,
    port: u16,
}

fn target(url: &str) -> Result<Target> {
    let uri: http::Uri = url.parse().map_err(|_| Error::InvalidUrl("not a URL"))?;
    let tls = match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("wss") => true,
        Some(s) if s.eq_ignore_ascii_case("ws") => false,
        _ => return Err(Error::UnsupportedScheme),
    };
    // userinfo (`user@host`) is refused: URL parsers disagree on which `@` ends it, so the host
    // connected to and the Host header sent could differ
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(Error::InvalidUrl("userinfo in the URL"));
    }
    let host = uri.host().ok_or(Error::InvalidUrl("no host"))?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return Err(Error::InvalidUrl("no host"));
    }
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    Ok(Target {
        tls,
        host: host.to_owned(),
        port,
    })
}

/// Whether `url` is a plain `ws://` URL to a loopback host (a local development setup).
pub fn is_plain_loopback(url: &str) -> bool {
    target(url).is_ok_and(|t| !t.tls && is_loopback_host(&t.host))
}

/// Whether `url` is a valid `wss://` URL (TLS, the server verified when connecting).
pub fn is_tls_url(url: &str) -> bool {
    target(url).is_ok_and(|t| t.tls)
}

/// Checks `url` against the transport rules without connecting: `wss://`, or `ws://` to a
/// loopback host.
///
/// # Errors
/// [`Error::InvalidUrl`], [`Error::UnsupportedScheme`], [`Error::PlaintextToRemoteHost`].
pub fn check_url(url: &str) -> Result<()> {
    let t = target(url)?;
    if !t.tls && !is_loopback_host(&t.host) {
        return Err(Error::PlaintextToRemoteHost);
    }
    Ok(())
}

/// Opens the connection `url` names, ready for the WebSocket handshake (which the caller does
/// over the returned stream, with the same URL):
///
/// * `wss://host[:port]` (port 443 by default): TCP, then TLS 1.3 or 1.2, the server verified
///   against `tls` for `host` (a DNS name or an IP address in its certificate);
/// * `ws://host[:port]`: only if `host` is loopback ([`is_loopback_host`]); a name is resolved
///   and only its loopback addresses are tried.
///
/// Time limits are the caller's.
///
/// # Errors
/// The URL errors of [`check_url`] (before anything is sent); [`Error::Certificate`] when the
/// server's certificate is refused; [`Error::Handshake`] for another TLS failure;
/// [`Error::Io`] for name resolution and TCP.
pub async fn connect(url: &str, tls: &ClientTls) -> Result<Stream> {
    let t = target(url)?;
    if !t.tls {
        if !is_loopback_host(&t.host) {
            return Err(Error::PlaintextToRemoteHost);
        }
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((t.host.as_str(), t.port))
            .await
            .map_err(Error::Io)?
            .filter(|a| a.ip().to_canonical().is_loopback())
            .collect();
        if addrs.is_empty() {
            return Err(Error::PlaintextToRemoteHost);
        }
        let tcp = TcpStream::connect(addrs.as_slice())
            .await
            .map_err(Error::Io)?;
        let _ = tcp.set_nodelay(true);
        return Ok(Stream::Plain(tcp));
    }
    connect_tls(&t.host, t.port, tls).await
}

/// TCP to `host:port`, then TLS 1.3 or 1.2 with the server verified against `tls` for `host`
/// (a DNS name or an IP address in its certificate): for protocols other than WebSocket that
/// run over TLS (TURN over TLS). Time limits are the caller's.
///
/// # Errors
/// [`Error::InvalidUrl`] when `host` cannot be a server name; [`Error::Certificate`] when the
/// server's certificate is refused; [`Error::Handshake`] for another TLS failure;
/// [`Error::Io`] for name resolution and TCP.
pub async fn connect_tls(host: &str, port: u16, tls: &ClientTls) -> Result<Stream> {
    let name = ServerName::try_from(host.to_owned())
        .map_err(|_| Error::InvalidUrl("the host is not a valid server name"))?;
    let config = tls.config()?;
    let tcp = TcpStream::connect((host, port)).await.map_err(Error::Io)?;
    let _ = tcp.set_nodelay(true);
    let s = TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(handshake_error)?;
    Ok(Stream::Tls(Box::new(tokio_rustls::TlsStream::Client(s))))
}

/// tokio-rustls reports a TLS failure as an I/O error wrapping the rustls error: typed again.
fn handshake_error(e: std::io::Error) -> Error {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidCertificate(c)) => Error::Certificate(c.clone()),
        Some(other) => Error::Handshake(other.clone()),
        None => Error::Io(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_refused_whichever_at_would_end_it() {
        for url in [
            "wss://a@relay.example",
            "wss://a@evil.example@good.example",
            "ws://x@y@127.0.0.1:8444",
            "ws://user:pw@127.0.0.1",
        ] {
            assert!(matches!(check_url(url), Err(Error::InvalidUrl(_))), "{url}");
        }
        assert!(check_url("wss://good.example").is_ok());
        assert!(is_tls_url("wss://good.example:8444"));
        assert!(!is_tls_url("ws://127.0.0.1"));
        assert!(is_plain_loopback("ws://127.0.0.1:9"));
        assert!(!is_plain_loopback("ws://10.1.1.1:9"));
    }

    #[test]
    fn loopback_hosts_are_127_8_ipv6_one_and_localhost() {
        for h in [
            "127.0.0.1",
            "127.255.255.254",
            "::1",
            "localhost",
            "LOCALHOST",
            "localhost.",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in [
            "128.0.0.1",
            "126.255.255.255",
            "10.0.0.1",
            "0.0.0.0",
            "::",
            "::2",
            "sotto.example",
            "localhost.example",
            "mylocalhost",
        ] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }

    #[test]
    fn urls_are_parsed_with_default_ports() {
        assert_eq!(
            target("wss://sotto.example").unwrap(),
            Target {
                tls: true,
                host: "sotto.example".into(),
                port: 443
            }
        );
        assert_eq!(
            target("ws://[::1]:8443/x?y").unwrap(),
            Target {
                tls: false,
                host: "::1".into(),
                port: 8443
            }
        );
        assert_eq!(target("WS://localhost").unwrap().port, 80);
    }

    #[test]
    fn plain_ws_is_allowed_to_loopback_only() {
        for ok in [
            "ws://127.0.0.1:8443",
            "ws://127.9.9.9:1/",
            "ws://[::1]:8443",
            "ws://localhost:8443",
            "wss://sotto.example:8443",
            "wss://192.0.2.1",
        ] {
            assert!(check_url(ok).is_ok(), "{ok}");
        }
        for remote in [
            "ws://192.0.2.1:8443",
            "ws://sotto.example:8443",
            "ws://[2001:db8::1]:8443",
            "ws://0.0.0.0:8443",
        ] {
            assert!(
                matches!(check_url(remote), Err(Error::PlaintextToRemoteHost)),
                "{remote}"
            );
        }
        for bad in ["http://127.0.0.1:8443", "127.0.0.1:8443", "sotto.example"] {
            assert!(
                matches!(check_url(bad), Err(Error::UnsupportedScheme)),
                "{bad}"
            );
        }
        assert!(matches!(check_url("ws://"), Err(Error::InvalidUrl(_))));
    }

    #[tokio::test]
    async fn plain_ws_to_a_remote_host_is_refused_before_connecting() {
        // 192.0.2.0/24 is TEST-NET-1: nothing answers there, so a connection attempt would hang
        // or fail with an I/O error, not this one
        let e = connect("ws://192.0.2.1:8443", &ClientTls::system())
            .await
            .unwrap_err();
        assert!(matches!(e, Error::PlaintextToRemoteHost), "{e}");
    }

    #[test]
    fn a_ca_file_holds_up_to_max_certificates_per_file() {
        use crate::consts::MAX_CERTIFICATES_PER_FILE;
        let dir = tempfile::tempdir().unwrap();
        let pem = rcgen::generate_simple_self_signed(vec!["ca.test".to_owned()])
            .unwrap()
            .cert
            .pem();
        let p = dir.path().join("ca.pem");
        std::fs::write(&p, pem.repeat(MAX_CERTIFICATES_PER_FILE)).unwrap();
        let tls = ClientTls::with_ca_files([&p]).unwrap();
        assert_eq!(tls.extra_roots(), MAX_CERTIFICATES_PER_FILE);
        std::fs::write(&p, pem.repeat(MAX_CERTIFICATES_PER_FILE + 1)).unwrap();
        let e = ClientTls::with_ca_files([&p]).unwrap_err();
        assert!(matches!(e, Error::TooManyCertificates { .. }), "{e}");
    }

    #[test]
    fn a_ca_file_without_a_certificate_is_refused_by_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ca.pem");
        std::fs::write(&p, "not a certificate\n").unwrap();
        let e = ClientTls::with_ca_files([&p]).unwrap_err();
        assert!(
            matches!(e, Error::NoCertificate { ref path } if *path == p),
            "{e}"
        );
        assert!(ClientTls::with_ca_files(Vec::<&Path>::new())
            .unwrap()
            .extra_roots()
            .eq(&0));
    }
}
