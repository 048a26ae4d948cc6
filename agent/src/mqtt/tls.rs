//! Connection options for the agent and `tidelet fleet`: TLS through rustls with the ring
//! provider (server verification from `caFile`, or the system's roots without one; mutual TLS
//! with `certFile`/`keyFile`), credentials, keep-alive, packet limits and the last will.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rumqttc::{LastWill, MqttOptions, TlsConfiguration, Transport};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::MqttConfig;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("TLS set-up: {0}")]
    Rustls(String),
}

fn file_err(path: &Path, reason: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// The rustls client configuration: server certificates checked against `ca` (PEM, one or
/// more certificates) or, without it, the system's trust store; a client certificate chain
/// and key (PEM: PKCS#8, PKCS#1 or SEC1) for mutual TLS.
pub fn client_config(
    ca: Option<&Path>,
    client: Option<(&Path, &Path)>,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            let certs = read_certs(path)?;
            for c in certs {
                roots
                    .add(c)
                    .map_err(|e| file_err(path, format!("not a usable CA certificate: {e}")))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for c in found.certs {
                let _ = roots.add(c);
            }
            if roots.is_empty() {
                return Err(TlsError::Rustls(
                    "no caFile given and no system CA certificates found".into(),
                ));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = read_certs(cert)?;
            let key_der = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| file_err(key, format!("no private key in PEM form: {e}")))?;
            builder.with_client_auth_cert(chain, key_der).map_err(|e| {
                file_err(cert, format!("certificate and key do not go together: {e}"))
            })?
        }
    };
    Ok(Arc::new(config))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(|e| file_err(path, e))?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(path, format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(file_err(path, "holds no PEM certificate"));
    }
    Ok(certs)
}

/// `rumqttc` options for `c`: clean session off (the broker queues QoS 1 desired-pod
/// messages, deletions included, while the node is away), keep-alive, packet limits both
/// ways, credentials, TLS, and the last will if given.
pub fn mqtt_options(c: &MqttConfig, will: Option<LastWill>) -> Result<MqttOptions, TlsError> {
    let mut o = MqttOptions::new(c.client_id.clone(), c.broker.host.clone(), c.broker.port);
    o.set_keep_alive(c.keep_alive);
    o.set_clean_session(false);
    o.set_max_packet_size(c.max_packet_size, c.max_packet_size);
    if let Some(user) = &c.username {
        let password = match &c.password_file {
            Some(p) => std::fs::read_to_string(p)
                .map_err(|e| file_err(p, e))?
                .trim_end_matches(['\n', '\r'])
                .to_string(),
            None => String::new(),
        };
        o.set_credentials(user.clone(), password);
    }
    if c.broker.tls {
        let cfg = client_config(
            c.ca_file.as_deref(),
            c.cert_file.as_deref().zip(c.key_file.as_deref()),
        )?;
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(cfg)));
    }
    if let Some(w) = will {
        o.set_last_will(w);
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreadable_or_wrong_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let err = client_config(Some(&missing), None).unwrap_err().to_string();
        assert!(err.contains("missing.pem"), "{err}");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let err = client_config(Some(&junk), None).unwrap_err().to_string();
        assert!(
            err.contains("junk.pem") && err.contains("no PEM certificate"),
            "{err}"
        );
    }
}
