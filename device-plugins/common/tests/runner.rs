//! The library in-process: a plugin served by a `Runner` on a temp directory, talked to over
//! its real unix socket by a gRPC client, registered with the fake kubelet.

// Test code: an unwrap that fails is a failed test, named with its location.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use tidelet_device_plugin::api::v1beta1::{
    AllocateRequest, ContainerAllocateRequest, ContainerAllocateResponse,
    ContainerPreferredAllocationRequest, Device, DevicePluginOptions, Empty,
    PreStartContainerRequest, PreferredAllocationRequest,
};
use tidelet_device_plugin::api::{channel, DevicePluginClient, HEALTHY};
use tidelet_device_plugin::testkit::FakeKubelet;
use tidelet_device_plugin::{device, simple_preference, Error, Plugin, Runner};
use tokio::sync::watch;
use tonic::Status;

const WAIT: Duration = Duration::from_secs(10);

struct Fixed {
    name: String,
    tx: watch::Sender<Vec<Device>>,
}

impl Fixed {
    fn new(name: &str, ids: &[&str]) -> Arc<Fixed> {
        Arc::new(Fixed {
            name: name.into(),
            tx: watch::channel(ids.iter().map(|i| device(*i, true)).collect()).0,
        })
    }
}

impl Plugin for Fixed {
    fn resource_name(&self) -> &str {
        &self.name
    }
    fn options(&self) -> DevicePluginOptions {
        DevicePluginOptions {
            pre_start_required: true,
            get_preferred_allocation_available: true,
        }
    }
    fn devices(&self) -> watch::Receiver<Vec<Device>> {
        self.tx.subscribe()
    }
    fn allocate(&self, ids: &[String]) -> Result<ContainerAllocateResponse, Status> {
        let mut r = ContainerAllocateResponse::default();
        r.envs.insert("IDS".into(), ids.join(","));
        Ok(r)
    }
    fn preferred_allocation(
        &self,
        request: &ContainerPreferredAllocationRequest,
    ) -> Result<Vec<String>, Status> {
        Ok(simple_preference(request))
    }
    fn pre_start(&self, ids: &[String]) -> Result<(), Status> {
        if ids.iter().any(|i| i == "refuse") {
            return Err(Status::failed_precondition("not ready"));
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_runner_waits_for_the_kubelet_serves_every_rpc_and_streams_changes() {
    let dir = tempfile::tempdir().unwrap();
    let a = Fixed::new("example.com/a", &["a0", "a1", "a2"]);
    let mut runner = Runner::new(dir.path()).with_poll_interval(Duration::from_millis(100));
    runner.add(a.clone()).unwrap();
    runner.add(Fixed::new("example.com/b", &["b0"])).unwrap();
    assert!(matches!(
        runner.add(Fixed::new("example.com/a", &[])),
        Err(Error::Duplicate { .. })
    ));
    let e = runner.add(Fixed::new("no-domain", &[])).unwrap_err();
    assert!(matches!(e, Error::ResourceName { .. }), "{e}");
    assert_eq!(runner.resources(), ["example.com/a", "example.com/b"]);

    // kubelet.sock appears only later: the runner waits for it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut k = FakeKubelet::start(dir.path()).unwrap();
    let mut regs = [
        k.next_registration(WAIT).await.unwrap(),
        k.next_registration(WAIT).await.unwrap(),
    ];
    regs.sort_by(|x, y| x.resource_name.cmp(&y.resource_name));
    assert_eq!(regs[0].resource_name, "example.com/a");
    assert_eq!(regs[0].endpoint, "example.com-a.sock");
    assert_eq!(
        regs[0].options,
        Some(DevicePluginOptions {
            pre_start_required: true,
            get_preferred_allocation_available: true
        })
    );

    let mut c = DevicePluginClient::new(channel(runner.socket_path("example.com/a")));
    let opts = c
        .get_device_plugin_options(Empty {})
        .await
        .unwrap()
        .into_inner();
    assert!(opts.pre_start_required && opts.get_preferred_allocation_available);

    let mut s = c.list_and_watch(Empty {}).await.unwrap().into_inner();
    let ids = |m: tidelet_device_plugin::api::v1beta1::ListAndWatchResponse| -> Vec<String> {
        m.devices.into_iter().map(|d| d.id).collect()
    };
    assert_eq!(ids(s.message().await.unwrap().unwrap()), ["a0", "a1", "a2"]);
    a.tx.send_replace(vec![device("a0", true), device("a3", false)]);
    let m = tokio::time::timeout(WAIT, s.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(m.devices[1].health, "Unhealthy");
    assert_eq!(ids(m), ["a0", "a3"]);

    let pref = c
        .get_preferred_allocation(PreferredAllocationRequest {
            container_requests: vec![ContainerPreferredAllocationRequest {
                available_device_i_ds: vec!["a0".into(), "a3".into()],
                must_include_device_i_ds: vec!["a3".into()],
                allocation_size: 1,
            }],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pref.container_responses[0].device_i_ds, ["a3"]);

    // Two containers in one Allocate, answered in order; an unhealthy ID is refused.
    let req = |groups: &[&[&str]]| AllocateRequest {
        container_requests: groups
            .iter()
            .map(|g| ContainerAllocateRequest {
                devices_ids: g.iter().map(|s| s.to_string()).collect(),
            })
            .collect(),
    };
    let resp = c
        .allocate(req(&[&["a0"], &["a0"]]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.container_responses.len(), 2);
    assert_eq!(resp.container_responses[1].envs["IDS"], "a0");
    let e = c.allocate(req(&[&["a0"], &["a3"]])).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.message().contains("example.com/a") && e.message().contains("\"a3\""),
        "{}",
        e.message()
    );
    let e = c.allocate(req(&[&["a1"]])).await.unwrap_err();
    assert!(
        e.message().contains("unknown device ID \"a1\""),
        "{}",
        e.message()
    );

    c.pre_start_container(PreStartContainerRequest {
        devices_ids: vec!["a0".into()],
    })
    .await
    .unwrap();
    let e = c
        .pre_start_container(PreStartContainerRequest {
            devices_ids: vec!["refuse".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);

    // kubelet restart: both register again, and the stream of the old server ends.
    k.restart().unwrap();
    let mut again = vec![
        k.next_registration(WAIT).await.unwrap().resource_name,
        k.next_registration(WAIT).await.unwrap().resource_name,
    ];
    again.sort();
    assert_eq!(again, ["example.com/a", "example.com/b"]);
    let end = tokio::time::timeout(WAIT, s.message())
        .await
        .expect("the old stream ends");
    assert!(!matches!(end, Ok(Some(_))), "{end:?}");
    let mut c = DevicePluginClient::new(channel(runner.socket_path("example.com/b")));
    let mut s = c.list_and_watch(Empty {}).await.unwrap().into_inner();
    let m = s.message().await.unwrap().unwrap();
    assert_eq!(
        (m.devices[0].id.as_str(), m.devices[0].health.as_str()),
        ("b0", HEALTHY)
    );

    // A refusal ends the runner with the agent's message.
    k.refuse(Some("version v0 is not supported"));
    k.recreate_socket().unwrap();
    let e = tokio::time::timeout(WAIT, runner.failed())
        .await
        .expect("a refusal ends it");
    match &e {
        Error::Refused { message, code, .. } => {
            assert_eq!(message, "version v0 is not supported");
            assert_eq!(*code, tonic::Code::InvalidArgument);
        }
        other => panic!("{other}"),
    }
    runner.shutdown().await;
    assert!(!dir.path().join("example.com-a.sock").exists());
    assert!(!dir.path().join("example.com-b.sock").exists());
}

/// With a poll of an hour, only inotify can tell the runner of these: the directory made
/// after the runner started, `kubelet.sock` appearing, a kubelet restart (every socket
/// removed, a new `kubelet.sock`), and `kubelet.sock` alone re-created.
#[tokio::test]
async fn the_directory_and_kubelet_restarts_are_seen_at_once_without_polling() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("var/lib/kubelet/device-plugins");
    let mut runner = Runner::new(&dir).with_poll_interval(Duration::from_secs(3600));
    runner.add(Fixed::new("example.com/a", &["a0"])).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::create_dir_all(&dir).unwrap();
    let sock = runner.socket_path("example.com/a");
    let deadline = tokio::time::Instant::now() + WAIT;
    while !sock.exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the socket is bound once the directory is made"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Bound and waiting for a kubelet, with nothing to poll for an hour.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut k = FakeKubelet::start(&dir).unwrap();
    let r = k
        .next_registration(WAIT)
        .await
        .expect("registered once kubelet.sock appears");
    assert_eq!(r.resource_name, "example.com/a");
    k.restart().unwrap();
    let r = k
        .next_registration(WAIT)
        .await
        .expect("registered after a restart");
    assert_eq!(r.endpoint, "example.com-a.sock");
    assert!(sock.exists(), "served again");
    k.recreate_socket().unwrap();
    k.next_registration(WAIT)
        .await
        .expect("registered after kubelet.sock alone was made again");
    assert!(
        k.next_registration(Duration::from_millis(500))
            .await
            .is_none(),
        "once each time"
    );
    runner.shutdown().await;
    assert!(!sock.exists());
}
