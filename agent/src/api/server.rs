//! Serves the local API from the pods' published views. What it reads is the narrow
//! [`Source`] trait it owns (the pod views, the node object and its events, the devices
//! and their holders); the agent implements it (`agent/status_source.rs`), so this layer
//! depends on nothing above it and [`answer`] is tested against a fake.

use std::path::Path;
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use k8s_openapi::api::core::v1::Node;

use super::{Request, Response, MAX_LINE};
use crate::devices::manager::{HeldView, ResourceView};
use crate::pod::events::Events;
use crate::pod::view::{PodView, Shared};

/// What the local API reads from the agent.
pub trait Source: Send + Sync + 'static {
    /// The node's name: `get pod NAME` also finds the static pod `NAME-<node>`.
    fn node_name(&self) -> &str;
    /// The published pods.
    fn shared(&self) -> &Shared;
    /// The node as a Kubernetes object.
    fn node_object(&self) -> Node;
    fn node_events(&self) -> Events;
    /// Extended resources from device plugins, holders as `<pod uid>/<container>`.
    fn devices(&self) -> Vec<ResourceView>;
    /// The devices the pod with this UID holds.
    fn held_by(&self, pod_uid: &str) -> Vec<HeldView>;
}

/// Bind the socket (replacing a stale one) and serve until the task is dropped.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    let _ = std::fs::remove_file(path);
    let l = UnixListener::bind(path)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// Answers every connection on `listener` from `src` (generic and `?Sized`: the agent passes
/// its `Arc<Ctx>`).
pub async fn serve<S: Source + ?Sized>(listener: UnixListener, src: Arc<S>) {
    // A bounded number of connections at once: each holds little, but a stuck client must not
    // be able to grow the agent without limit.
    let slots = Arc::new(tokio::sync::Semaphore::new(32));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!("too many API connections; refusing one");
            continue;
        };
        let src = src.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(stream, &*src).await {
                tracing::debug!(error = %e, "api connection ended");
            }
            drop(permit);
        });
    }
}

async fn handle<S: Source + ?Sized>(stream: UnixStream, src: &S) -> std::io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r).take(MAX_LINE as u64);
    let mut line = String::new();
    r.read_line(&mut line).await?;
    let resp = match serde_json::from_str::<Request>(&line) {
        Ok(req) => answer(req, src),
        Err(e) => Response::Error {
            message: format!("bad request: {e}"),
        },
    };
    let mut out = serde_json::to_vec(&resp).map_err(std::io::Error::other)?;
    out.push(b'\n');
    w.write_all(&out).await?;
    w.shutdown().await
}

/// The response to one request.
pub fn answer<S: Source + ?Sized>(req: Request, src: &S) -> Response {
    match req {
        Request::ListPods => Response::Pods {
            pods: src
                .shared()
                .list()
                .into_iter()
                .map(|v| with_devices(v, src))
                .collect(),
        },
        Request::GetNode => Response::Node {
            node: Box::new(super::NodeView {
                node: src.node_object(),
                events: src.node_events(),
                devices: holders_by_name(src.devices(), src.shared()),
            }),
        },
        Request::GetPod { name, namespace } => {
            let ns = namespace.unwrap_or_else(|| "default".into());
            let full = format!("{ns}/{name}");
            let suffixed = format!("{ns}/{name}-{}", src.node_name());
            let shared = src.shared();
            match shared.get(&full).or_else(|| shared.get(&suffixed)) {
                Some(v) => Response::Pod {
                    pod: Box::new(with_devices(v, src)),
                },
                None => Response::Error {
                    message: format!("pod {name:?} not found in namespace {ns:?}"),
                },
            }
        }
    }
}

fn with_devices<S: Source + ?Sized>(mut v: PodView, src: &S) -> PodView {
    if let Some(uid) = &v.pod.metadata.uid {
        v.devices = src.held_by(uid);
    }
    v
}

/// Holders as `<namespace>/<pod>/<container>` instead of the pod's UID.
fn holders_by_name(mut views: Vec<ResourceView>, shared: &Shared) -> Vec<ResourceView> {
    let names: std::collections::BTreeMap<String, String> = shared
        .list()
        .into_iter()
        .filter_map(|v| {
            let m = v.pod.metadata;
            Some((
                m.uid?,
                format!(
                    "{}/{}",
                    m.namespace.unwrap_or_default(),
                    m.name.unwrap_or_default()
                ),
            ))
        })
        .collect();
    for d in views.iter_mut().flat_map(|r| r.devices.iter_mut()) {
        if let Some(h) = &mut d.holder {
            if let Some((uid, c)) = h.split_once('/') {
                if let Some(n) = names.get(uid) {
                    *h = format!("{n}/{c}");
                }
            }
        }
    }
    views
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::manager::DeviceView;

    /// A stand-in for the agent: two pods, one holding a device.
    struct Fake {
        shared: Shared,
    }

    impl Source for Fake {
        fn node_name(&self) -> &str {
            "n1"
        }
        fn shared(&self) -> &Shared {
            &self.shared
        }
        fn node_object(&self) -> Node {
            serde_json::from_value(serde_json::json!({"metadata": {"name": "n1"}})).unwrap()
        }
        fn node_events(&self) -> Events {
            let mut e = Events::default();
            e.push(false, "Starting", "tidelet started".into(), 1);
            e
        }
        fn devices(&self) -> Vec<ResourceView> {
            vec![ResourceView {
                name: "example.com/gpu".into(),
                endpoint: "gpu.sock".into(),
                live: true,
                capacity: 2,
                allocatable: 2,
                allocated: 1,
                devices: vec![
                    DeviceView {
                        id: "g0".into(),
                        healthy: true,
                        holder: Some("uid-web-n1/c".into()),
                    },
                    DeviceView {
                        id: "g1".into(),
                        healthy: true,
                        holder: Some("uid-unknown/c".into()),
                    },
                ],
            }]
        }
        fn held_by(&self, pod_uid: &str) -> Vec<HeldView> {
            if pod_uid != "uid-web-n1" {
                return vec![];
            }
            vec![HeldView {
                container: "c".into(),
                resource: "example.com/gpu".into(),
                ids: vec!["g0".into()],
                unhealthy: vec![],
                annotations: Default::default(),
            }]
        }
    }

    fn fake() -> Fake {
        let shared = Shared::default();
        for (ns, name) in [("default", "web-n1"), ("prod", "api")] {
            let pod = serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}")}
            }))
            .unwrap();
            shared.publish(
                &format!("{ns}/{name}"),
                PodView {
                    pod,
                    ..Default::default()
                },
            );
        }
        Fake { shared }
    }

    /// What a response names: the pods (key and devices held), the node, or the error.
    fn summary(r: Response) -> String {
        let pod = |v: &PodView| {
            let m = &v.pod.metadata;
            format!(
                "{}/{}[{}]",
                m.namespace.as_deref().unwrap_or_default(),
                m.name.as_deref().unwrap_or_default(),
                v.devices
                    .iter()
                    .flat_map(|d| d.ids.iter().map(String::as_str))
                    .collect::<Vec<_>>()
                    .join(",")
            )
        };
        match r {
            Response::Pods { pods } => pods.iter().map(pod).collect::<Vec<_>>().join(" "),
            Response::Pod { pod: p } => pod(&p),
            Response::Node { node } => format!(
                "node {} events={} holders={}",
                node.node.metadata.name.unwrap_or_default(),
                node.events.iter().count(),
                node.devices
                    .iter()
                    .flat_map(|r| r.devices.iter().filter_map(|d| d.holder.clone()))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            Response::Error { message } => format!("error: {message}"),
        }
    }

    #[test]
    fn answers_come_from_the_source_it_is_given() {
        let get = |name: &str, ns: Option<&str>| Request::GetPod {
            name: name.into(),
            namespace: ns.map(Into::into),
        };
        let cases: Vec<(&str, Request, &str)> = vec![
            (
                "list: every pod, with the devices it holds",
                Request::ListPods,
                "default/web-n1[g0] prod/api[]",
            ),
            (
                "a static pod by its manifest name (the node suffix added)",
                get("web", None),
                "default/web-n1[g0]",
            ),
            (
                "by its full name",
                get("web-n1", None),
                "default/web-n1[g0]",
            ),
            ("in a namespace", get("api", Some("prod")), "prod/api[]"),
            (
                "not in the default namespace",
                get("api", None),
                "error: pod \"api\" not found in namespace \"default\"",
            ),
            (
                "the node: holders by pod name, unknown UIDs left as they are",
                Request::GetNode,
                "node n1 events=1 holders=default/web-n1/c,uid-unknown/c",
            ),
        ];
        let src = fake();
        for (what, req, want) in cases {
            assert_eq!(summary(answer(req, &src)), want, "{what}");
        }
    }
}
