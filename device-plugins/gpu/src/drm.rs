//! DRM render nodes, `<dev>/dri/renderD*`: the GPUs of boards (Mali through panfrost or
//! lima, Vivante through etnaviv, Intel, AMD). One device per node, ID = node name, under the
//! resource `dri.tidelet.io/<driver>`, the driver being the name of the link
//! `<sys>/class/drm/<node>/device/driver` (`dri.tidelet.io/render` when it cannot be read).

use std::collections::BTreeMap;
use std::path::Path;

use crate::GpuDevice;

/// The resource domain of render nodes.
pub const DOMAIN: &str = "dri.tidelet.io";
/// The name used when the driver is unknown.
pub const UNKNOWN_DRIVER: &str = "render";
/// Render nodes looked at, at most.
const MAX_NODES: usize = 64;

/// The resource name for render nodes bound to `driver`: lower-cased, characters a resource
/// name cannot hold become `-`, trimmed to 63; `dri.tidelet.io/render` when unknown or
/// nothing usable is left.
pub fn resource_for_driver(driver: Option<&str>) -> String {
    let cleaned: String = driver
        .unwrap_or("")
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    let cleaned = cleaned.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    let name = if cleaned.is_empty() {
        UNKNOWN_DRIVER
    } else {
        cleaned
    };
    let resource = format!("{DOMAIN}/{name}");
    if tidelet_device_plugin::validate_resource_name(&resource).is_ok() {
        resource
    } else {
        format!("{DOMAIN}/{UNKNOWN_DRIVER}")
    }
}

/// The driver bound to render node `node`, from `<sys>/class/drm/<node>/device/driver`.
pub fn driver_of(sys_root: &Path, node: &str) -> Option<String> {
    let link = sys_root.join("class/drm").join(node).join("device/driver");
    let target = std::fs::read_link(link).ok()?;
    target.file_name()?.to_str().map(str::to_string)
}

/// Whether a `/dev/dri` entry is a render node: `renderD` and digits.
pub fn is_render_node(name: &str) -> bool {
    name.strip_prefix("renderD")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Render nodes under `<dev>/dri`, grouped by resource name, each sorted by node name.
pub fn discover(dev_root: &Path, sys_root: &Path) -> BTreeMap<String, Vec<GpuDevice>> {
    let mut out: BTreeMap<String, Vec<GpuDevice>> = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dev_root.join("dri")) else {
        return out;
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| is_render_node(n))
        .take(MAX_NODES)
        .collect();
    names.sort();
    for name in names {
        let resource = resource_for_driver(driver_of(sys_root, &name).as_deref());
        let node = format!("dri/{name}");
        let healthy = crate::is_char_device(&dev_root.join(&node));
        out.entry(resource).or_default().push(GpuDevice {
            id: name,
            nodes: vec![node],
            healthy,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_names_become_resource_names() {
        let cases: &[(Option<&str>, &str)] = &[
            (Some("panfrost"), "dri.tidelet.io/panfrost"),
            (Some("i915"), "dri.tidelet.io/i915"),
            (Some("amdgpu"), "dri.tidelet.io/amdgpu"),
            (Some("etnaviv"), "dri.tidelet.io/etnaviv"),
            (Some("msm_dpu"), "dri.tidelet.io/msm_dpu"),
            (Some("Vivante GC7000"), "dri.tidelet.io/vivante-gc7000"),
            (Some("_x_"), "dri.tidelet.io/x"),
            (Some("???"), "dri.tidelet.io/render"),
            (Some(""), "dri.tidelet.io/render"),
            (None, "dri.tidelet.io/render"),
        ];
        for (driver, want) in cases {
            assert_eq!(resource_for_driver(*driver), *want, "{driver:?}");
        }
        let long = "a".repeat(80);
        assert_eq!(
            resource_for_driver(Some(&long)),
            format!("dri.tidelet.io/{}", "a".repeat(63))
        );
    }

    #[test]
    fn only_render_nodes_are_taken() {
        let cases: &[(&str, bool)] = &[
            ("renderD128", true),
            ("renderD129", true),
            ("card0", false),
            ("renderD", false),
            ("renderDx", false),
            ("by-path", false),
        ];
        for (name, want) in cases {
            assert_eq!(is_render_node(name), *want, "{name}");
        }
    }
}
