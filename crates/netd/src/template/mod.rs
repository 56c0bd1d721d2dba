//! Network templates: `.network` files in systemd.network(5) syntax, the
//! search path they are loaded from, and which file applies to a link. One
//! module per concern: [`model`] (what a file says), [`parse`] (the key
//! table and value parsers, on [`netspawn_common::unitfile`]), [`load`] (the
//! search path, precedence and masking), [`matching`] (`[Match]` and
//! fnmatch(3)) and [`virt`] (what netd runs in, for `Virtualization=`).
//!
//! The line syntax is systemd's unit-file syntax, as for `.nspawn` files
//! (both read through `netspawn_common::unitfile`): `[Section]` headers,
//! `Key=Value` with whitespace around `=` trimmed, `#`/`;` comment lines (dropped even inside
//! a continuation), lines continued with a trailing backslash (which becomes
//! a space), `\n`, `\r\n` or `\r` line ends, a leading BOM ignored.
//!
//! netd understands [Match] `Name=`, `Driver=`, `Kind=`, `Virtualization=`;
//! [Network] `Address=`, `DHCPServer=`, `IPMasquerade=`,
//! `LinkLocalAddressing=`, `DNS=`, `DNSDefaultRoute=`, `LLMNR=`, `DHCP=`,
//! `KeepMaster=`; [DHCPServer]
//! `PoolOffset=`, `PoolSize=`, `EmitDNS=`, `DNS=`, `EmitRouter=`,
//! `DefaultLeaseTimeSec=`, `MaxLeaseTimeSec=`. Other keys and sections that
//! systemd knows are warnings saying netd ignores them; unknown ones are
//! "Unknown ..." warnings; `X-` keys and sections are ignored silently.
//!
//! Differences from systemd-networkd, on purpose:
//! - a malformed line or an invalid value is an error (`FILE:LINE: msg`)
//!   instead of a logged-and-ignored assignment, so a typo never silently
//!   changes a link's configuration;
//! - a [Match] key netd cannot test (`MACAddress=`, `Path=`, `Type=`, ...)
//!   makes the file match no link (with a warning), instead of the file
//!   matching more links than its author meant;
//! - drop-in directories (`NAME.network.d/*.conf`) are not read;
//! - netd configures IPv4 only: an IPv6 `Address=` is a warning ("IPv6 not
//!   supported yet"), and a link gets one IPv4 subnet from the pool (a
//!   second `0.0.0.0/N` is an error; further static IPv4 addresses are
//!   all configured);
//! - [Network] `DNS=` servers are where netd forwards the queries that
//!   arrive on that link; a port other than 53, `%IFNAME` or `#SERVERNAME`
//!   is an error (netd's forwarder cannot use them);
//! - `LinkLocalAddressing=ipv4` gives a stable address from a hash of the
//!   link name, without conflict probing, and never on a link where netd
//!   serves DHCPv4.
//!
//! Loading follows networkd's precedence: files are collected by file name
//! over directories in decreasing priority, a file masks those of the same
//! name in lower directories (an empty file or a symlink to `/dev/null` masks
//! the name entirely), and the first file in lexical order of file names
//! whose [Match] matches a link applies to it. The templates of
//! `network-templates/` are built into the binary as the lowest-priority
//! directory; see [`search_path`] for the directories above them.

pub mod load;
pub mod matching;
pub mod model;
pub mod parse;
pub mod virt;

use std::fmt;
use std::path::PathBuf;

use thiserror::Error;

pub use load::{
    load, load_with, search_path, search_path_with_run, Loaded, BUILTIN, BUILTIN_DIR,
    DEFAULT_NETWORK_PATH, ENV_NETWORK_PATH, MAX_FILE_SIZE,
};
pub use matching::{fnmatch, LinkFacts};
pub use model::*;
pub use netspawn_common::unitfile::values::parse_timespan_usec;
pub use netspawn_common::unitfile::LONG_LINE_MAX;
pub use parse::{parse, parse_bytes, Parsed};
pub use virt::Virtualization;

/// A `.network` file that cannot be used, or a directory that cannot be read.
/// `Display` is `FILE:LINE: msg`, or `FILE: msg` when no line is concerned
/// (`line` 0), on one line.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{}{}: {msg}", file.display(), LineSuffix(*line))]
pub struct NetFileError {
    pub file: PathBuf,
    /// 1-based; for a line continued with backslashes, the last physical
    /// line; 0 when the error is not about a line (I/O, file too large).
    pub line: usize,
    pub msg: String,
}

/// `:LINE`, or nothing for line 0.
struct LineSuffix(usize);

impl fmt::Display for LineSuffix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            Ok(())
        } else {
            write!(f, ":{}", self.0)
        }
    }
}

/// Helpers the tests of the submodules share.
#[cfg(test)]
pub(crate) mod testutil {
    use std::path::Path;

    use super::{parse, LinkFacts, NetFileError, Parsed};

    pub fn p(text: &str) -> Result<Parsed, NetFileError> {
        parse(text, Path::new("/etc/netspawn/network/t.network"))
    }

    pub fn ok(text: &str) -> Parsed {
        match p(text) {
            Ok(parsed) => parsed,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }

    pub fn link(name: &str, kind: Option<&str>, driver: Option<&str>) -> LinkFacts {
        LinkFacts {
            name: name.to_string(),
            altnames: Vec::new(),
            kind: kind.map(str::to_string),
            driver: driver.map(str::to_string),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_display_without_line() {
        let e = NetFileError {
            file: "/etc/netspawn/network".into(),
            line: 0,
            msg: "Permission denied".into(),
        };
        assert_eq!(e.to_string(), "/etc/netspawn/network: Permission denied");
    }
}

/// What a fuzzer checks of any input to the `.network` parser (both
/// `fuzz/fuzz_targets/netfile.rs` and the stable fuzzer of `bench/fuzz.sh`
/// call this): a file or a one-line `FILE:LINE: msg` error, never a panic;
/// warnings stay one line naming the file; matching whatever parsed against
/// a few links does not panic. Returns whether the input parsed.
#[doc(hidden)]
pub fn fuzz_check(data: &[u8]) -> bool {
    let file = std::path::Path::new("/etc/netspawn/network/fuzz.network");
    match parse_bytes(data, file) {
        Ok(parsed) => {
            for w in &parsed.warnings {
                assert!(
                    w.starts_with("/etc/netspawn/network/fuzz.network:"),
                    "{w:?}"
                );
                assert!(!w.contains('\n'), "{w:?}");
            }
            let links = [
                LinkFacts {
                    name: "ve-web".into(),
                    altnames: vec!["ve-a-very-long-name".into()],
                    kind: Some("veth".into()),
                    driver: Some("veth".into()),
                },
                LinkFacts {
                    name: "vz-lab".into(),
                    altnames: Vec::new(),
                    kind: Some("bridge".into()),
                    driver: None,
                },
            ];
            let virts = [
                Virtualization::None,
                Virtualization::Container("systemd-nspawn".into()),
            ];
            for l in &links {
                for v in &virts {
                    let _ = parsed.file.matching.matches(l, v);
                }
            }
            true
        }
        Err(e) => {
            let shown = e.to_string();
            assert!(
                shown.starts_with("/etc/netspawn/network/fuzz.network:"),
                "{shown:?}"
            );
            assert!(!shown.contains('\n'), "{shown:?}");
            false
        }
    }
}
