// TEMPORARY: replaced by the runtime branch at merge.
#![allow(dead_code, unused_variables)]
use super::*;
use std::path::Path;
use std::time::Duration;
#[derive(Clone)]
pub struct Client;
#[derive(Debug, thiserror::Error)]
#[error("x")]
pub struct E;
impl Client {
    pub fn connect(p: &Path) -> Client { Client }
    pub async fn start(&self, s: &ContainerSpec) -> Result<ContainerRecord, E> { unimplemented!() }
    pub async fn status(&self) -> Result<SandboxStatus, E> { unimplemented!() }
    pub async fn wait(&self, since: u64, t: Duration) -> Result<SandboxStatus, E> { unimplemented!() }
    pub async fn shutdown(&self, grace: u64) -> Result<(), E> { unimplemented!() }
}
pub fn spawn_supervisor(exe: &Path, pod_dir: &Path, spec: &SandboxSpec) -> Result<i32, E> { unimplemented!() }
pub fn main(p: &Path) -> ! { unimplemented!() }
pub fn read_logs(p: &Path, follow: bool, w: &mut dyn std::io::Write) -> Result<(), E> { unimplemented!() }
pub fn exec_in_container(pid: i32, argv: &[String], env: &[String], cwd: &str, procs: &[std::path::PathBuf]) -> Result<i32, E> { unimplemented!() }
