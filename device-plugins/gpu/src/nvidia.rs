//! NVIDIA GPUs as the driver shows them: one directory per GPU under
//! `<proc>/driver/nvidia/gpus/<pci-bus-id>/` whose `information` file gives the device minor
//! (the node is `<dev>/nvidia<minor>`) and the GPU UUID (the device ID; the bus ID when the
//! driver shows none). Every allocation also gets the control nodes that exist.

use std::path::Path;

use crate::GpuDevice;

/// The resource NVIDIA GPUs are advertised under (as NVIDIA's own plugin does).
pub const RESOURCE: &str = "nvidia.com/gpu";
/// Control nodes handed to every container that gets a GPU, when they exist.
pub const CONTROL_NODES: &[&str] = &[
    "nvidiactl",
    "nvidia-uvm",
    "nvidia-uvm-tools",
    "nvidia-modeset",
];
/// The environment variable naming the GPUs a container got (read by NVIDIA's runtime hooks
/// and CUDA images).
pub const VISIBLE_DEVICES_ENV: &str = "NVIDIA_VISIBLE_DEVICES";
/// GPUs looked at, at most; a bound on what a broken `/proc` could make us hold.
const MAX_GPUS: usize = 64;

/// What one `information` file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Information {
    pub minor: u32,
    pub uuid: Option<String>,
}

/// Why an `information` file could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InformationError {
    #[error("no `Device Minor:` (or `Minor Number:`) line")]
    NoMinor,
    #[error("`{field}:` is {value:?}, not a number")]
    BadMinor { field: String, value: String },
}

/// Parses an `information` file: `Device Minor:` (older drivers and the brief's
/// `Minor Number:` accepted too) and `GPU UUID:`. A UUID the driver hides (`??...`) or that
/// is not a plain ID counts as none.
pub fn parse_information(text: &str) -> Result<Information, InformationError> {
    let mut minor = None;
    let mut uuid = None;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        match key {
            "Device Minor" | "Minor Number" => {
                let n = value
                    .parse::<u32>()
                    .map_err(|_| InformationError::BadMinor {
                        field: key.to_string(),
                        value: value.to_string(),
                    })?;
                minor = Some(n);
            }
            "GPU UUID"
                if !value.is_empty()
                    && !value.contains('?')
                    && tidelet_device_plugin::is_valid_device_id(value) =>
            {
                uuid = Some(value.to_string());
            }
            _ => {}
        }
    }
    Ok(Information {
        minor: minor.ok_or(InformationError::NoMinor)?,
        uuid,
    })
}

/// The GPUs under `<proc>/driver/nvidia/gpus`, sorted by bus ID, with health from their
/// device nodes under `dev_root`. No directory (no driver) is no GPUs; a GPU whose
/// `information` cannot be read or parsed is skipped with a warning.
pub fn discover(proc_root: &Path, dev_root: &Path) -> Vec<GpuDevice> {
    let dir = proc_root.join("driver/nvidia/gpus");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut bus_ids: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .take(MAX_GPUS)
        .collect();
    bus_ids.sort();
    let mut out = Vec::with_capacity(bus_ids.len());
    for bus_id in bus_ids {
        let path = dir.join(&bus_id).join("information");
        let info = match std::fs::read_to_string(&path) {
            Ok(text) => parse_information(&text),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read the GPU information, skipping the GPU");
                continue;
            }
        };
        let info = match info {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot parse the GPU information, skipping the GPU");
                continue;
            }
        };
        let id = info.uuid.unwrap_or_else(|| bus_id.clone());
        if !tidelet_device_plugin::is_valid_device_id(&id) {
            tracing::warn!(path = %path.display(), id = %id, "not a usable device ID, skipping the GPU");
            continue;
        }
        let node = format!("nvidia{}", info.minor);
        let healthy = crate::is_char_device(&dev_root.join(&node));
        out.push(GpuDevice {
            id,
            nodes: vec![node],
            healthy,
        });
    }
    out
}

/// The control nodes that exist under `dev_root`, in [`CONTROL_NODES`] order.
pub fn control_nodes(dev_root: &Path) -> Vec<&'static str> {
    CONTROL_NODES
        .iter()
        .copied()
        .filter(|n| crate::is_char_device(&dev_root.join(n)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const REAL: &str = "Model: \t\t NVIDIA GeForce RTX 3080\nIRQ:   \t\t 139\nGPU UUID: \t GPU-8f6c1e2a-1111-2222-3333-444455556666\nVideo BIOS: \t 94.02.42.00.a9\nBus Type: \t PCIe\nDMA Size: \t 47 bits\nDMA Mask: \t 0x7fffffffffff\nBus Location: \t 0000:01:00.0\nDevice Minor: \t 0\nGPU Excluded:\t No\n";

    #[test]
    fn information_files_parse_by_table() {
        let uuid = "GPU-8f6c1e2a-1111-2222-3333-444455556666";
        let cases: &[(&str, Result<Information, InformationError>)] = &[
            (
                REAL,
                Ok(Information {
                    minor: 0,
                    uuid: Some(uuid.into()),
                }),
            ),
            (
                "Minor Number: 3\nGPU UUID: GPU-abc\n",
                Ok(Information {
                    minor: 3,
                    uuid: Some("GPU-abc".into()),
                }),
            ),
            (
                "Device Minor: 2\n",
                Ok(Information {
                    minor: 2,
                    uuid: None,
                }),
            ),
            (
                "Device Minor: 1\nGPU UUID: \t ??????????????\n",
                Ok(Information {
                    minor: 1,
                    uuid: None,
                }),
            ),
            (
                "Device Minor: 1\nGPU UUID: has space\n",
                Ok(Information {
                    minor: 1,
                    uuid: None,
                }),
            ),
            (
                "Model: X\nGPU UUID: GPU-1\n",
                Err(InformationError::NoMinor),
            ),
            ("", Err(InformationError::NoMinor)),
            (
                "Device Minor: zero\n",
                Err(InformationError::BadMinor {
                    field: "Device Minor".into(),
                    value: "zero".into(),
                }),
            ),
            (
                "Device Minor: -1\n",
                Err(InformationError::BadMinor {
                    field: "Device Minor".into(),
                    value: "-1".into(),
                }),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(&parse_information(text), want, "{text:?}");
        }
    }
}
