//! Connecting: mutual TLS with the harness PKI (a wrong CA or a missing client certificate
//! only retries; a missing key file is a set-up error), and a refusing broker retried with a
//! growing back-off and no panic.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tidelet::mqtt::session;
use tidelet_e2e::broker::{refused_port, Broker, BrokerOpts};

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_connects_and_a_wrong_ca_or_missing_client_cert_only_retries() {
    let broker = Broker::new(BrokerOpts {
        tls: true,
        require_client_cert: true,
        ..Default::default()
    });
    let pki = broker.pki();
    let tls = |ca: std::path::PathBuf, client_id: &str, client_cert: bool| {
        let mut extra = serde_json::json!({"caFile": ca, "clientId": client_id});
        if client_cert {
            extra["certFile"] = pki.client_cert(NODE).to_str().unwrap().into();
            extra["keyFile"] = pki.client_key(NODE).to_str().unwrap().into();
        }
        extra
    };
    let (good, _rx, present) = synced_session(&broker.url(), tls(pki.ca(), NODE, true)).await;
    assert!(present.is_empty());
    assert!(good.connected());
    let wrong_ca = config(&broker.url(), tls(pki.foreign_ca(), "wrong-ca", true));
    let (wrong_ca, _rx1) = session::start(&wrong_ca, NODE).unwrap();
    let no_cert = config(&broker.url(), tls(pki.ca(), "no-client-cert", false));
    let (no_cert, _rx2) = session::start(&no_cert, NODE).unwrap();
    // Each is refused in the handshake, and tries again.
    for why in [
        "tlsv1 alert unknown ca",
        "peer did not return a certificate",
    ] {
        tidelet_e2e::wait_for(
            &format!("three handshakes failing with {why:?}"),
            HANG,
            || (broker.log().matches(why).count() >= 3).then_some(()),
        );
    }
    assert!(
        !wrong_ca.connected(),
        "a server cert from an unknown CA was accepted"
    );
    assert!(
        !no_cert.connected(),
        "the broker took a client without a certificate"
    );
    assert!(good.connected());
    assert!(broker.client_connected(NODE));
    // A missing key file is a local set-up error, reported at start with its path.
    let mut bad = config(&broker.url(), tls(pki.ca(), NODE, true));
    bad.key_file = Some(broker.dir().join("missing.key"));
    let err = session::start(&bad, NODE)
        .err()
        .expect("a missing key file is an error");
    assert!(err.to_string().contains("missing.key"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_broker_is_retried_with_back_off_and_no_panic() {
    init_tracing();
    // Something that accepts TCP and closes at once: each attempt is seen, and fails.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let seen = attempts.clone();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            seen.lock().unwrap().push(Instant::now());
            drop(s);
        }
    });
    let url = format!("mqtt://127.0.0.1:{port}");
    let (link, _rx) = session::start(&config(&url, serde_json::json!({})), NODE).unwrap();
    // Six attempts: with the default back-off (0.5 s doubling, full jitter, 0.25 s floor) the
    // five gaps have ceilings 0.5, 1, 2, 4 and 8 s.
    let times = tidelet_e2e::wait_for("six connection attempts", HANG, || {
        let t = attempts.lock().unwrap().clone();
        (t.len() >= 6).then_some(t)
    });
    assert!(!link.connected());
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    // Never hammered: every retry waits (the floor, less the scheduler's slack)...
    assert!(
        gaps.iter().all(|g| *g >= Duration::from_millis(200)),
        "{gaps:?}"
    );
    // ...and the wait grows: a constant 0.5 s retry would never leave a gap beyond the
    // first ceiling (all three later gaps within it by chance: p < 0.001).
    let first_ceiling = Duration::from_millis(500);
    assert!(gaps[2..].iter().any(|g| *g > first_ceiling), "{gaps:?}");
    // Nothing listening at all: refused, retried, no panic.
    let (_held, port) = refused_port();
    let nobody = format!("mqtt://127.0.0.1:{port}");
    let (link2, _rx2) = session::start(&config(&nobody, serde_json::json!({})), NODE).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!link2.connected());
    // Stopping while the broker is unreachable does not wait out the (hour-long) timeout.
    let stop = async {
        link2.shutdown(Duration::from_secs(3600)).await;
        link.shutdown(Duration::from_secs(3600)).await;
    };
    tokio::time::timeout(HANG, stop)
        .await
        .expect("shutdown waited for an unreachable broker");
    // And it stopped retrying (an accept under way at the abort is let in first).
    tokio::time::sleep(Duration::from_millis(100)).await;
    let after = attempts.lock().unwrap().len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        attempts.lock().unwrap().len(),
        after,
        "retried after shutdown"
    );
}
