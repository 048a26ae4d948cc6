//! The plugin side of the device-plugin API (to be written).
