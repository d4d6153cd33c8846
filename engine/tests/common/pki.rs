//! A throwaway PKI for the TLS tests: a CA, a server certificate for 127.0.0.1 and a client
//! certificate, made with the `openssl` command; and rustls server configurations from it.

use std::process::Command;
use std::sync::Arc;

/// A CA, a server certificate for 127.0.0.1 and a client certificate, made with `openssl`.
pub struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    pub fn make() -> Pki {
        let pki = Pki {
            dir: tempfile::tempdir().unwrap(),
        };
        let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
        pki.openssl(&format!(
            "req -x509 {ec} -keyout ca.key -out ca.crt -subj /CN=test-ca -days 2"
        ));
        let d = pki.dir.path();
        std::fs::write(d.join("server.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
        std::fs::write(d.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
        for who in ["server", "client"] {
            pki.openssl(&format!(
                "req {ec} -keyout {who}.key -out {who}.csr -subj /CN={who}"
            ));
            pki.openssl(&format!(
                "x509 -req -in {who}.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out {who}.crt -days 2 -extfile {who}.ext"
            ));
        }
        pki
    }

    fn openssl(&self, args: &str) {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("openssl {args}"))
            .current_dir(self.dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// More certificates for the input tests: `expired.crt` (a client certificate of this CA
    /// that expired in 2020), a second CA `ca2.crt` with a client `stranger.crt` and a server
    /// certificate `server2.crt` (for 127.0.0.1), each with its `.key`.
    pub fn with_extras(self) -> Pki {
        let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
        let d = self.dir.path();
        std::fs::write(
            d.join("ca.cnf"),
            "[ca]\ndefault_ca = here\n[here]\ndatabase = index.txt\nnew_certs_dir = .\n\
             serial = serial\ndefault_md = sha256\npolicy = any\n[any]\ncommonName = supplied\n",
        )
        .unwrap();
        std::fs::write(d.join("index.txt"), "").unwrap();
        std::fs::write(d.join("serial"), "1000\n").unwrap();
        self.openssl(&format!(
            "req {ec} -keyout expired.key -out expired.csr -subj /CN=expired"
        ));
        self.openssl(
            "ca -batch -config ca.cnf -cert ca.crt -keyfile ca.key -in expired.csr -out expired.crt \
             -startdate 20200101000000Z -enddate 20200102000000Z -notext -extfile client.ext",
        );
        self.openssl(&format!(
            "req -x509 {ec} -keyout ca2.key -out ca2.crt -subj /CN=other-ca -days 2"
        ));
        for (who, ext) in [("stranger", "client.ext"), ("server2", "server.ext")] {
            self.openssl(&format!(
                "req {ec} -keyout {who}.key -out {who}.csr -subj /CN={who}"
            ));
            self.openssl(&format!(
                "x509 -req -in {who}.csr -CA ca2.crt -CAkey ca2.key -CAcreateserial -out {who}.crt -days 2 -extfile {ext}"
            ));
        }
        self
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// rustls' server side: this PKI's server certificate; client certificates from this CA
    /// required when `client_auth`.
    pub fn server(&self, client_auth: bool) -> Arc<rustls::ServerConfig> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs: Vec<CertificateDer> = CertificateDer::pem_file_iter(self.path("server.crt"))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let key = PrivateKeyDer::from_pem_file(self.path("server.key")).unwrap();
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = if client_auth {
            let mut roots = rustls::RootCertStore::empty();
            for ca in CertificateDer::pem_file_iter(self.path("ca.crt")).unwrap() {
                roots.add(ca.unwrap()).unwrap();
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        Arc::new(builder.with_single_cert(certs, key).unwrap())
    }
}
