//! A certificate authority made at test time (rcgen, ECDSA P-256), server certificates it signs
//! for loopback (`localhost`, `127.0.0.1`, `::1`), and the PEM files `--tls-cert`, `--tls-key`
//! and `--ca` read.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use sotto_tls::{ClientTls, TlsFiles};

/// The names every test server certificate holds.
pub const LOOPBACK_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// A private certificate authority, unknown to the system's roots.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

/// A server certificate and its key, as PEM, and the certificate's DER (what a client sees).
pub struct ServerCert {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
}

impl TestCa {
    /// A new CA whose subject is `sotto test CA NAME`.
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("sotto test CA {name}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        TestCa {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    /// The CA certificate (PEM).
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// Writes the CA certificate to `dir/NAME.pem` (for `--ca`) and returns the path.
    pub fn write_ca(&self, dir: &Path, name: &str) -> PathBuf {
        let p = dir.join(format!("{name}.pem"));
        std::fs::write(&p, &self.pem).unwrap();
        p
    }

    /// The system's roots plus this CA (the CA file is written to `dir`).
    pub fn client_tls(&self, dir: &Path, name: &str) -> ClientTls {
        ClientTls::with_ca_files([self.write_ca(dir, name)]).unwrap()
    }

    /// A new server certificate for [`LOOPBACK_NAMES`] signed by this CA, with a fresh key.
    pub fn server_cert(&self) -> ServerCert {
        self.server_cert_for(&LOOPBACK_NAMES)
    }

    /// A new server certificate for `names` (DNS names or IP addresses) signed by this CA.
    pub fn server_cert_for(&self, names: &[&str]) -> ServerCert {
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "sotto test server");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        ServerCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    /// [`TestCa::server_cert`] written to `dir/NAME.crt` and `dir/NAME.key`.
    pub fn write_server_cert(&self, dir: &Path, name: &str) -> (TlsFiles, ServerCert) {
        self.write_server_cert_for(dir, name, &LOOPBACK_NAMES)
    }

    /// [`TestCa::server_cert_for`] written to `dir/NAME.crt` and `dir/NAME.key`.
    pub fn write_server_cert_for(
        &self,
        dir: &Path,
        name: &str,
        names: &[&str],
    ) -> (TlsFiles, ServerCert) {
        let files = TlsFiles::new(
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        let cert = self.server_cert_for(names);
        cert.write(&files);
        (files, cert)
    }
}

impl ServerCert {
    /// Writes the certificate and key over `files` (as a renewal would).
    pub fn write(&self, files: &TlsFiles) {
        std::fs::write(&files.cert_chain, &self.cert_pem).unwrap();
        std::fs::write(&files.private_key, &self.key_pem).unwrap();
    }
}
