//! `show` (and the property printing `show-image` shares): machined's
//! properties as `KEY=VALUE` lines, `-p/--property=` to pick some (repeated
//! or comma-separated), `--value` for the values alone.

use std::io::Write;

use netspawn_common::paths::Paths;
use netspawn_common::registry::Entry;

use super::timefmt::format_timestamp;
use super::CtlError;

/// The lines for `props`, filtered by `wanted` (all when empty; a wanted
/// property that is empty is still printed, as systemctl does for `-p`).
pub fn render(props: &[(&str, String)], wanted: &[String], value: bool) -> String {
    let wanted: Vec<&str> = wanted
        .iter()
        .flat_map(|w| w.split(','))
        .map(str::trim)
        .filter(|w| !w.is_empty())
        .collect();
    let mut out = String::new();
    for (k, v) in props {
        let picked = wanted.iter().any(|w| w == k);
        if !wanted.is_empty() && !picked {
            continue;
        }
        // Without -p, empty properties are left out (systemctl without --all).
        if wanted.is_empty() && v.is_empty() {
            continue;
        }
        if value {
            out.push_str(&format!("{v}\n"));
        } else {
            out.push_str(&format!("{k}={v}\n"));
        }
    }
    out
}

/// The manager's properties (`show` without a machine).
pub fn pool_properties() -> Vec<(&'static str, String)> {
    let paths = Paths::from_env();
    vec![
        ("PoolPath", paths.image_dir.display().to_string()),
        ("PoolUsage", String::new()),
        ("PoolLimit", String::new()),
    ]
}

/// The interface index of a host-side link, if it exists.
fn ifindex(name: &str) -> Option<u32> {
    nix::net::if_::if_nametoindex(name).ok()
}

/// A machine's properties in machined's names.
pub fn machine_properties(e: &Entry) -> Vec<(&'static str, String)> {
    let ifaces: Vec<String> = e
        .interfaces
        .iter()
        .filter_map(|i| ifindex(i))
        .map(|i| i.to_string())
        .collect();
    vec![
        ("Name", e.name.clone()),
        ("Id", e.uuid.clone()),
        ("Timestamp", format_timestamp(e.timestamp_usec)),
        ("Service", e.service.clone()),
        ("Unit", String::new()),
        ("Leader", e.leader.to_string()),
        ("Class", e.class.clone()),
        ("RootDirectory", e.root.display().to_string()),
        ("NetworkInterfaces", ifaces.join(" ")),
        ("State", e.state.clone()),
    ]
}

/// `show [NAME...] [-p PROP] [--value]`.
pub fn show(names: &[String], wanted: &[String], value: bool) -> Result<i32, CtlError> {
    let mut out = String::new();
    if names.is_empty() {
        out.push_str(&render(&pool_properties(), wanted, value));
    }
    for (n, name) in names.iter().enumerate() {
        let e = super::lookup(name)?;
        if n > 0 {
            out.push('\n');
        }
        out.push_str(&render(&machine_properties(&e), wanted, value));
    }
    std::io::stdout().lock().write_all(out.as_bytes())?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_properties() {
        let props = vec![
            ("Name", "web".to_string()),
            ("Unit", String::new()),
            ("Leader", "42".to_string()),
        ];
        assert_eq!(render(&props, &[], false), "Name=web\nLeader=42\n");
        assert_eq!(
            render(&props, &["Leader,Unit".into()], false),
            "Unit=\nLeader=42\n"
        );
        assert_eq!(render(&props, &["Name".into()], true), "web\n");
    }
}
