//! Serves the local API from the pods' published views.

use std::path::Path;
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use super::{Request, Response, MAX_LINE};
use crate::agent::Ctx;

/// Bind the socket (replacing a stale one) and serve until the task is dropped.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    let _ = std::fs::remove_file(path);
    let l = UnixListener::bind(path)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

pub async fn serve(listener: UnixListener, ctx: Arc<Ctx>) {
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
        let ctx = ctx.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(stream, &ctx).await {
                tracing::debug!(error = %e, "api connection ended");
            }
            drop(permit);
        });
    }
}

async fn handle(stream: UnixStream, ctx: &Ctx) -> std::io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r).take(MAX_LINE as u64);
    let mut line = String::new();
    r.read_line(&mut line).await?;
    let resp = match serde_json::from_str::<Request>(&line) {
        Ok(req) => answer(req, ctx),
        Err(e) => Response::Error {
            message: format!("bad request: {e}"),
        },
    };
    let mut out = serde_json::to_vec(&resp).map_err(std::io::Error::other)?;
    out.push(b'\n');
    w.write_all(&out).await?;
    w.shutdown().await
}

pub fn answer(req: Request, ctx: &Ctx) -> Response {
    match req {
        Request::ListPods => Response::Pods {
            pods: ctx
                .shared
                .list()
                .into_iter()
                .map(|v| with_devices(v, ctx))
                .collect(),
        },
        Request::GetNode => Response::Node {
            node: Box::new(super::NodeView {
                node: ctx.node_object(),
                events: ctx.node_events(),
                devices: holders_by_name(ctx.devices.views(), ctx),
            }),
        },
        Request::GetPod { name, namespace } => {
            let ns = namespace.unwrap_or_else(|| "default".into());
            let full = format!("{ns}/{name}");
            let suffixed = format!("{ns}/{name}-{}", ctx.cfg.node_name);
            match ctx.shared.get(&full).or_else(|| ctx.shared.get(&suffixed)) {
                Some(v) => Response::Pod {
                    pod: Box::new(with_devices(v, ctx)),
                },
                None => Response::Error {
                    message: format!("pod {name:?} not found in namespace {ns:?}"),
                },
            }
        }
    }
}

fn with_devices(mut v: crate::pod::view::PodView, ctx: &Ctx) -> crate::pod::view::PodView {
    if let Some(uid) = &v.pod.metadata.uid {
        v.devices = ctx.devices.held_by(uid);
    }
    v
}

/// Holders as `<namespace>/<pod>/<container>` instead of the pod's UID.
fn holders_by_name(
    mut views: Vec<crate::devices::manager::ResourceView>,
    ctx: &Ctx,
) -> Vec<crate::devices::manager::ResourceView> {
    let names: std::collections::BTreeMap<String, String> = ctx
        .shared
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
