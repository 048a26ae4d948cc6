//! Test harness: starts the real tidelet binary on temp directories.
