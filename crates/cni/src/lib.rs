//! `netspawn-cni`: a CNI 1.1 plugin that puts a container engine's
//! containers (podman, containerd, Kubernetes through containerd's CRI) on
//! netspawn zones, with netd as IPAM, DNS and NAT and the registry as the
//! name source, like any netspawn machine. See docs/cni.md.
//!
//! One module per concern: [`spec`] (versions, error codes), [`conf`] (the
//! environment and the configuration, parsed), [`result`] (the ADD result
//! per version), [`record`] (what each attachment holds), [`holder`] (the
//! process that outlives the plugin and holds name, lease and registry
//! entry), [`attach`] (ADD, DEL, CHECK), and [`run`], which dispatches.

pub mod attach;
pub mod conf;
pub mod holder;
pub mod record;
pub mod result;
pub mod spec;

use std::collections::HashSet;

use netspawn_common::paths::Paths;
use serde_json::Value;

use conf::{Command, Env, NetConf};
use spec::{CniError, Code};

/// What the plugin prints on success (nothing for DEL, STATUS, GC, CHECK).
pub type Output = Option<Value>;

/// STATUS: ready when netd runs or can be started (code 50 otherwise).
fn status(paths: &Paths) -> Result<(), CniError> {
    netspawn::netd_client::NetdClient::connect_or_start(paths)
        .map(|_| ())
        .map_err(|e| {
            CniError::new(
                Code::NotAvailable,
                format!("netspawn-netd is not available: {e}"),
            )
        })
}

/// GC: tears down every attachment of this network that the runtime does
/// not list as valid; nothing else.
fn gc(conf: &NetConf, paths: &Paths) -> Result<(), CniError> {
    let valid: HashSet<(String, String)> = conf
        .valid_attachments
        .iter()
        .flatten()
        .map(|a| (a.container_id.clone(), a.ifname.clone()))
        .collect();
    let mut errs = Vec::new();
    for rec in record::Records::new(&paths.run_dir).list(&conf.network) {
        if !valid.contains(&(rec.container_id.clone(), rec.ifname.clone())) {
            tracing::debug!("GC: {} {} ({})", rec.container_id, rec.ifname, rec.name);
            errs.extend(attach::teardown(&rec, paths));
        }
    }
    match errs.into_iter().next() {
        None => Ok(()),
        Some(e) => Err(e),
    }
}

/// One invocation: `get` reads the environment, `stdin` is the
/// configuration. Returns what to print on stdout and the exit status.
pub fn run(get: impl Fn(&str) -> Option<String>, stdin: &[u8]) -> (Value, i32) {
    let version_of = || {
        serde_json::from_slice::<Value>(stdin)
            .ok()
            .and_then(|v| {
                v.get("cniVersion")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .filter(|v| spec::supported(v))
            .unwrap_or_else(|| spec::NEWEST.to_string())
    };
    match dispatch(&get, stdin) {
        Ok(Some(v)) => (v, 0),
        Ok(None) => (Value::Null, 0),
        Err(e) => (e.to_json(&version_of()), 1),
    }
}

fn dispatch(get: &impl Fn(&str) -> Option<String>, stdin: &[u8]) -> Result<Output, CniError> {
    let cmd_text = get("CNI_COMMAND").unwrap_or_default();
    let cmd = Command::parse(&cmd_text).ok_or_else(|| {
        CniError::new(
            Code::InvalidEnvironment,
            format!("CNI_COMMAND {cmd_text:?}: not one of ADD, DEL, CHECK, STATUS, GC, VERSION"),
        )
    })?;
    if cmd == Command::Version {
        let asked = serde_json::from_slice::<Value>(stdin).ok().and_then(|v| {
            v.get("cniVersion")
                .and_then(Value::as_str)
                .map(str::to_string)
        });
        return Ok(Some(spec::version_info(asked.as_deref())));
    }
    let conf = NetConf::parse(cmd, stdin)?;
    let env = Env::read(cmd, get)?;
    let paths = Paths::from_env();
    match cmd {
        Command::Add => attach::add(&conf, &env, &paths).map(Some),
        Command::Del => attach::del(&conf, &env, &paths).map(|()| None),
        Command::Check => attach::check(&conf, &env, &paths).map(|()| None),
        Command::Status => status(&paths).map(|()| None),
        Command::Gc => gc(&conf, &paths).map(|()| None),
        Command::Version => unreachable!("answered above"),
    }
}
