//! The test PKI of one [`Broker`](super::Broker), made with the real `openssl` CLI: a CA, a
//! server certificate for `127.0.0.1`/`localhost` (in the subjectAltName, which is what rustls
//! and OpenSSL check), client certificates whose CN is the client's name (`node-a`, `operator`:
//! the broker takes the CN as the username with `use_identity_as_username`), and a second,
//! foreign CA whose client certificates the broker must refuse.
//!
//! Client certificates are made on first use, so a test can name any node (`e2e`, `node-042`).
//! Keys are P-256 in PKCS#8, which both OpenSSL (mosquitto) and rustls (tidelet) read.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// One openssl config for every certificate: the extension sections say what each is for.
const OPENSSL_CNF: &str = "\
[req]
distinguished_name = dn
prompt = no
[dn]
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1,DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
";

/// A CA and the certificates it signed, all files in `dir`.
pub struct Pki {
    dir: PathBuf,
    foreign: PathBuf,
    /// Serialises the lazy making of client certificates (tests may share a broker).
    lock: Mutex<()>,
}

impl Pki {
    /// Make the CA, the server certificate and the foreign CA in `dir` (created).
    pub fn generate(dir: &Path) -> Pki {
        let foreign = dir.join("foreign");
        std::fs::create_dir_all(&foreign).unwrap();
        std::fs::write(dir.join("openssl.cnf"), OPENSSL_CNF).unwrap();
        make_ca(dir, "tidelet-test-ca");
        make_ca(&foreign, "some-other-ca");
        let pki = Pki {
            dir: dir.to_path_buf(),
            foreign,
            lock: Mutex::new(()),
        };
        pki.make_leaf(&pki.dir, "server", "localhost", "server");
        pki
    }

    /// The CA certificate (PEM) that signed the server and the client certificates.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.pem")
    }

    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }

    /// The client certificate (PEM) with CN `name`, signed by [`ca`](Self::ca).
    pub fn client_cert(&self, name: &str) -> PathBuf {
        self.client(&self.dir, name).0
    }

    /// The private key (PKCS#8 PEM) of [`client_cert`](Self::client_cert).
    pub fn client_key(&self, name: &str) -> PathBuf {
        self.client(&self.dir, name).1
    }

    /// The foreign CA's certificate: a `caFile` that does not verify this broker's server.
    pub fn foreign_ca(&self) -> PathBuf {
        self.foreign.join("ca.pem")
    }

    /// A client certificate with CN `name` signed by another CA, which the broker must refuse.
    pub fn foreign_cert(&self, name: &str) -> PathBuf {
        self.client(&self.foreign, name).0
    }

    pub fn foreign_key(&self, name: &str) -> PathBuf {
        self.client(&self.foreign, name).1
    }

    fn client(&self, ca_dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        assert!(
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'),
            "client name {name:?}: use letters, digits and '-' (it becomes a CN and a file name)"
        );
        let _held = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let stem = format!("client-{name}");
        let (pem, key) = (
            ca_dir.join(format!("{stem}.pem")),
            ca_dir.join(format!("{stem}.key")),
        );
        if !pem.exists() {
            self.make_leaf(ca_dir, &stem, name, "client");
        }
        (pem, key)
    }

    /// A key and a certificate `<stem>.key`/`<stem>.pem` with CN `cn` signed by the CA in
    /// `ca_dir`, with the extensions of section `ext` of the openssl config.
    fn make_leaf(&self, ca_dir: &Path, stem: &str, cn: &str, ext: &str) {
        let cnf = self.dir.join("openssl.cnf");
        let key = ca_dir.join(format!("{stem}.key"));
        let csr = ca_dir.join(format!("{stem}.csr"));
        let pem = ca_dir.join(format!("{stem}.pem"));
        openssl(&[
            "req".as_ref(),
            "-config".as_ref(),
            cnf.as_os_str(),
            "-new".as_ref(),
            "-newkey".as_ref(),
            "ec".as_ref(),
            "-pkeyopt".as_ref(),
            "ec_paramgen_curve:P-256".as_ref(),
            "-nodes".as_ref(),
            "-keyout".as_ref(),
            key.as_os_str(),
            "-out".as_ref(),
            csr.as_os_str(),
            "-subj".as_ref(),
            format!("/CN={cn}").as_ref(),
        ]);
        let serial = format!("0x{}{}", crate::random_suffix(), crate::random_suffix());
        openssl(&[
            "x509".as_ref(),
            "-req".as_ref(),
            "-in".as_ref(),
            csr.as_os_str(),
            "-CA".as_ref(),
            ca_dir.join("ca.pem").as_os_str(),
            "-CAkey".as_ref(),
            ca_dir.join("ca.key").as_os_str(),
            "-set_serial".as_ref(),
            serial.as_ref(),
            "-days".as_ref(),
            "30".as_ref(),
            "-extfile".as_ref(),
            cnf.as_os_str(),
            "-extensions".as_ref(),
            ext.as_ref(),
            "-out".as_ref(),
            pem.as_os_str(),
        ]);
    }
}

/// A self-signed CA `ca.pem`/`ca.key` in `dir` (whose parent or itself holds `openssl.cnf`).
fn make_ca(dir: &Path, cn: &str) {
    let cnf = if dir.join("openssl.cnf").exists() {
        dir.join("openssl.cnf")
    } else {
        dir.parent().unwrap().join("openssl.cnf")
    };
    openssl(&[
        "req".as_ref(),
        "-config".as_ref(),
        cnf.as_os_str(),
        "-x509".as_ref(),
        "-new".as_ref(),
        "-newkey".as_ref(),
        "ec".as_ref(),
        "-pkeyopt".as_ref(),
        "ec_paramgen_curve:P-256".as_ref(),
        "-nodes".as_ref(),
        "-extensions".as_ref(),
        "v3_ca".as_ref(),
        "-days".as_ref(),
        "30".as_ref(),
        "-subj".as_ref(),
        format!("/CN={cn}").as_ref(),
        "-keyout".as_ref(),
        dir.join("ca.key").as_os_str(),
        "-out".as_ref(),
        dir.join("ca.pem").as_os_str(),
    ]);
}

fn openssl(args: &[&std::ffi::OsStr]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {:?} failed: {}",
        args,
        String::from_utf8_lossy(&out.stderr)
    );
}
