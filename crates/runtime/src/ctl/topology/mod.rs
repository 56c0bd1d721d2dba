//! Test networks as files: `netspawnctl up/down/status/graph FILE`
//! (docs/topology.md).
//!
//! - [`file`]: the TOML schema as written, unknown keys refused with
//!   `FILE:LINE`;
//! - [`model`]: the checked lab (prefixed names, replicas, addresses,
//!   routes, `after` without cycles): all bad input is found here, before
//!   anything is created;
//! - [`impair`]: rate, loss, delay on links, and `netem`; [`capture`]:
//!   pcapng from a packet socket on one end of a link;
//! - [`clab`]: containerlab `*.clab.yml` files read as labs;
//! - [`graph`]: the picture (dot, Mermaid, SVG) without deploying;
//! - [`deploy`]: `up`, `down` and `status`: machines launched by the real
//!   `netspawn` (through `start`'s detached launcher), in waves that follow
//!   `after`, then the point-to-point links and extra zone legs made by
//!   netlink inside the machines' namespaces ([`links`]).
//!
//! What the lab owns on the host is owned by the launchers (their keepers
//! remove zone members, bridges and registry entries whatever happens to
//! `up`); what `up` makes itself lives inside the machines' network
//! namespaces and goes with them. `down` therefore stops the machines (the
//! ones `up` recorded as launched too, registered or not), waits for them
//! to be gone and sweeps the lab's zones and links, so it is complete after a
//! `kill -9` of `up` and harmless when run twice.

pub mod capture;
pub mod clab;
pub mod deploy;
pub mod file;
pub mod graph;
pub mod impair;
pub mod links;
pub mod model;
pub mod zonefile;

use std::path::{Path, PathBuf};

use thiserror::Error;

/// What the topology verbs fail with; each message is one line.
#[derive(Debug, Error)]
pub enum TopoError {
    /// Bad input at a place in the file.
    #[error("{}:{line}: {msg}", .file.display())]
    At {
        file: PathBuf,
        line: usize,
        msg: String,
    },
    /// Bad input about the file as a whole.
    #[error("{}: {msg}", .file.display())]
    File { file: PathBuf, msg: String },
    #[error("{what} {}: {err}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        err: std::io::Error,
    },
    #[error("{0}")]
    Usage(String),
    /// `up` failed; what it had made is gone again.
    #[error("lab '{lab}': {what}; what was made is removed again")]
    Up { lab: String, what: String },
    /// `down` could not remove everything.
    #[error("lab '{lab}': {what}")]
    Down { lab: String, what: String },
    #[error("netlink: {0}")]
    Netlink(#[from] netlink::RtnlError),
}

/// Reads and checks the topology file at `path`.
pub fn load(path: &Path) -> Result<model::Lab, TopoError> {
    let text = std::fs::read_to_string(path).map_err(|err| TopoError::Io {
        what: "read",
        path: path.to_path_buf(),
        err,
    })?;
    if clab::is_clab(path) {
        clab::load(path, &text)
    } else {
        model::load(path, &text)
    }
}

/// Whether `arg` names a topology file rather than a machine (`status`
/// takes both): an existing file with a topology extension.
pub fn is_topology_file(arg: &str) -> bool {
    (arg.ends_with(".toml") || arg.ends_with(".yml") || arg.ends_with(".yaml"))
        && Path::new(arg).is_file()
}

/// `graph FILE [--format=svg|dot|mermaid] [-o OUT]`: draws the lab, with the
/// addresses of its machines that run.
pub fn graph(path: &Path, format: &str, out: Option<&Path>) -> Result<i32, TopoError> {
    let lab = load(path)?;
    let format = match format {
        "" => match out.and_then(|o| o.extension()).and_then(|e| e.to_str()) {
            Some("dot" | "gv") => graph::Format::Dot,
            Some("mmd" | "mermaid") => graph::Format::Mermaid,
            Some("svg") => graph::Format::Svg,
            _ => graph::Format::Dot,
        },
        f => graph::Format::parse(f).ok_or_else(|| {
            TopoError::Usage(format!("--format={f}: expected svg, dot or mermaid"))
        })?,
    };
    let text = graph::render(&lab, format, &deploy::live_addresses(&lab));
    match out {
        Some(o) if o != Path::new("-") => std::fs::write(o, text).map_err(|err| TopoError::Io {
            what: "write",
            path: o.to_path_buf(),
            err,
        })?,
        _ => {
            use std::io::Write;
            std::io::stdout()
                .write_all(text.as_bytes())
                .map_err(|err| TopoError::Io {
                    what: "write",
                    path: "standard output".into(),
                    err,
                })?
        }
    }
    Ok(0)
}

/// What `netem` was asked.
#[derive(Debug, Clone, Default)]
pub struct NetemOptions {
    /// `MACHINE:IFNAME`: the end whose outgoing traffic is impaired.
    pub endpoint: String,
    pub rate: Option<String>,
    /// `tbf` (default) or `htb`.
    pub shaper: Option<String>,
    pub loss: Option<String>,
    pub delay: Option<String>,
    pub jitter: Option<String>,
    pub show: bool,
    pub reset: bool,
}

/// `netem MACHINE:IFNAME [--rate= [--shaper=htb]] [--loss=] [--delay=] [--jitter=] |
/// --show | --reset`: sets (replacing what was set), shows or removes the
/// impairments of the traffic leaving one end of a link, live.
pub fn netem(o: &NetemOptions) -> Result<i32, TopoError> {
    let (machine, ifname) = o.endpoint.split_once(':').ok_or_else(|| {
        TopoError::Usage(format!(
            "'{}' is not MACHINE:INTERFACE (e.g. lab-r1:eth1)",
            o.endpoint
        ))
    })?;
    let mut i = impair::Impairment::default();
    for (k, v) in [
        ("rate", &o.rate),
        ("shaper", &o.shaper),
        ("loss", &o.loss),
        ("delay", &o.delay),
        ("jitter", &o.jitter),
    ] {
        if let Some(v) = v {
            i.set(k, v).map_err(TopoError::Usage)?;
        }
    }
    let given = !i.is_empty();
    if given {
        i.check().map_err(TopoError::Usage)?;
    }
    if [o.show, o.reset, given].iter().filter(|x| **x).count() != 1 {
        return Err(TopoError::Usage(
            "netem takes impairments (--rate, --loss, --delay, --jitter), or --show, or --reset"
                .into(),
        ));
    }
    let entry = crate::ctl::registry()
        .get(machine)
        .ok()
        .flatten()
        .ok_or_else(|| TopoError::Usage(format!("No machine '{machine}' known")))?;
    if o.show {
        let kinds = impair::show(entry.leader, ifname)?;
        println!(
            "{machine}:{ifname}: {}",
            if kinds.is_empty() {
                "no impairment (the default qdisc)".to_string()
            } else {
                format!("qdiscs {}", kinds.join(", "))
            }
        );
        return Ok(0);
    }
    impair::apply(entry.leader, ifname, &i)?;
    Ok(0)
}

/// For the fuzz target (`fuzz/fuzz_targets/topology.rs`): any bytes, read
/// as a TOML topology and as a containerlab file, give a lab or a one-line
/// error, never a panic.
pub fn fuzz_check(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for (path, clab) in [("/f/lab.toml", false), ("/f/lab.clab.yml", true)] {
        let r = if clab {
            clab::load(Path::new(path), &text)
        } else {
            model::load(Path::new(path), &text)
        };
        if let Err(e) = r {
            let msg = e.to_string();
            assert!(!msg.contains('\n'), "a multi-line error: {msg:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    /// Every prefix of the shipped examples (cut at any byte) parses or
    /// fails in one line: a cheap stand-in for the fuzz target on stable.
    #[test]
    fn every_prefix_of_the_examples_parses_or_fails_in_one_line() {
        for text in [
            include_str!("../../../../../examples/routed.toml"),
            include_str!("../../../../../examples/two-nodes.clab.yml"),
        ] {
            for cut in 0..=text.len() {
                super::fuzz_check(&text.as_bytes()[..cut]);
            }
            // And each byte swapped for a character that matters to the syntax.
            let mut b = text.as_bytes().to_vec();
            for i in 0..b.len() {
                let orig = b[i];
                for c in [b'[', b'"', b'\n', b':'] {
                    b[i] = c;
                    super::fuzz_check(&b);
                }
                b[i] = orig;
            }
        }
    }
}
