use super::*;
use rumqttc::{ConnectReturnCode, ConnectionError};
use std::io::{Error, ErrorKind};

fn opts() -> Options {
    Options {
        broker: "mqtt://127.0.0.1:1883".into(),
        ca: None,
        cert: None,
        key: None,
        username: None,
        password_file: None,
        root: "tidelet/".into(),
        client_id: None,
        output: Format::Table,
        connect_timeout: Duration::from_secs(1),
    }
}

#[test]
fn bad_options_name_the_flag() {
    type Edit = fn(&mut Options);
    let cases: &[(Edit, &str)] = &[
        (|o| o.broker = "tcp://x".into(), "--broker"),
        (|o| o.root = "tidelet".into(), "--root"),
        (|o| o.root = "a/+/".into(), "--root"),
        (|o| o.ca = Some("/ca".into()), "--ca"),
        (|o| o.cert = Some("/c".into()), "--cert"),
        (
            |o| {
                o.broker = "mqtts://x".into();
                o.cert = Some("/c".into());
            },
            "--key",
        ),
        (|o| o.password_file = Some("/p".into()), "--password-file"),
        (|o| o.client_id = Some("a/b".into()), "--client-id"),
    ];
    for (edit, flag) in cases {
        let mut o = opts();
        edit(&mut o);
        match mqtt_options(&o) {
            Err(FleetError::Usage { flag: f, .. }) => assert_eq!(f, *flag),
            Err(e) => panic!("{flag}: {e}"),
            Ok(_) => panic!("{flag}: accepted"),
        }
    }
    let m = mqtt_options(&opts()).unwrap();
    assert!(m.clean_session());
    assert!(m.client_id().starts_with("tidelet-fleet-"));
    // A missing CA file is named before any connection is tried.
    let mut o = opts();
    o.broker = "mqtts://127.0.0.1".into();
    o.ca = Some("/nonexistent/ca.pem".into());
    let e = mqtt_options(&o).unwrap_err().to_string();
    assert!(e.contains("/nonexistent/ca.pem"), "{e}");
}

#[test]
fn connection_errors_are_told_apart() {
    let cases: Vec<(ConnectionError, &str, bool)> = vec![
        (
            ConnectionError::Io(Error::from(ErrorKind::ConnectionRefused)),
            "connection refused",
            true,
        ),
        (
            ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized),
            "not authorised",
            false,
        ),
        (
            ConnectionError::ConnectionRefused(ConnectReturnCode::BadUserNamePassword),
            "bad user name or password",
            false,
        ),
        (
            ConnectionError::Io(Error::new(
                ErrorKind::InvalidData,
                "invalid peer certificate",
            )),
            "TLS handshake failed: invalid peer certificate",
            false,
        ),
        (
            ConnectionError::Io(Error::from(ErrorKind::UnexpectedEof)),
            "closed the connection",
            true,
        ),
        (ConnectionError::NetworkTimeout, "no answer", true),
        (
            ConnectionError::MqttState(rumqttc::StateError::Deserialization(rumqttc::Error::Io(
                Error::new(
                    ErrorKind::InvalidData,
                    "received fatal alert: CertificateRequired",
                ),
            ))),
            "TLS: the broker ended the session (received fatal alert: CertificateRequired)",
            false,
        ),
        (
            ConnectionError::MqttState(rumqttc::StateError::Io(Error::from(ErrorKind::BrokenPipe))),
            "BrokenPipe",
            true,
        ),
    ];
    for (e, want, retry) in cases {
        let (reason, r) = session::classify(&e);
        assert!(reason.contains(want), "{e}: {reason}");
        assert_eq!(r, retry, "{e}");
    }
}

#[test]
fn local_input_errors_need_no_broker() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("svc.yaml");
    std::fs::write(&f, "apiVersion: v1\nkind: Service\nmetadata: {name: s}\n").unwrap();
    // A broker port nobody listens on: the error must come before any connection.
    let mut o = opts();
    o.broker = "mqtt://127.0.0.1:9".into();
    let cmd = Cmd::Apply {
        node: "n1".into(),
        file: f.clone(),
        timeout: Duration::from_secs(1),
    };
    let e = run(&o, cmd, &mut Vec::new(), &mut Vec::new()).unwrap_err();
    assert!(matches!(e, FleetError::Manifest { .. }), "{e}");
    let e = e.to_string();
    assert!(
        e.contains("svc.yaml") && e.contains("\"Service\" is not Pod"),
        "{e}"
    );
    let cmd = Cmd::Delete {
        node: "n/1".into(),
        pod: "web".into(),
        namespace: "default".into(),
        timeout: Duration::from_secs(1),
    };
    let e = run(&o, cmd, &mut Vec::new(), &mut Vec::new()).unwrap_err();
    assert!(matches!(e, FleetError::Usage { flag: "--node", .. }), "{e}");
}
