//! Resource control of running machines: `netspawnctl set-property` (live
//! on the machine's cgroups, persisted as a drop-in unless `--runtime`),
//! and the usage figures `status` and `top` show.

use std::path::{Component, Path, PathBuf};

use netspawn_common::paths::Paths;
use netspawn_common::registry::Entry;

use super::{lookup_container, CtlError};
use crate::cgroup::{self, Hierarchies, HostFacts, Usage};
use crate::config::property::{dropin, Limits, Property};

/// The machine's cgroup below each hierarchy's root, from its unified
/// directory in the registry entry.
fn machine_rel(h: &Hierarchies, e: &Entry) -> Result<PathBuf, CtlError> {
    let unified = e.cgroups.first().ok_or_else(|| {
        CtlError::Usage(format!(
            "machine '{}' has no cgroup in the registry",
            e.name
        ))
    })?;
    let rel = unified
        .strip_prefix(&h.unified)
        .ok()
        .filter(|r| {
            r.components().count() > 0 && r.components().all(|c| matches!(c, Component::Normal(_)))
        })
        .ok_or_else(|| {
            CtlError::Usage(format!(
                "machine '{}': cgroup {} is not below {}",
                e.name,
                unified.display(),
                h.unified.display()
            ))
        })?;
    Ok(rel.to_path_buf())
}

/// `set-property [--runtime] NAME PROP=VALUE…`: every assignment is parsed
/// first (one bad one changes nothing), then applied to the running
/// machine's cgroups, then (without `runtime`) persisted for its next start.
pub fn set_property(name: &str, assignments: &[String], runtime: bool) -> Result<i32, CtlError> {
    let props: Vec<Property> = assignments
        .iter()
        .map(|a| Property::parse(a).map_err(|e| CtlError::Usage(e.to_string())))
        .collect::<Result<_, _>>()?;
    let e = lookup_container(name, "set-property")?;
    let h = Hierarchies::detect().map_err(CtlError::Cgroup)?;
    let rel = machine_rel(&h, &e)?;
    let limits: Limits = props.iter().cloned().collect();
    let writes = cgroup::plan(&limits, &HostFacts::read(&h)).map_err(CtlError::Cgroup)?;
    cgroup::apply(&h, &rel, &writes, true).map_err(CtlError::Cgroup)?;
    if !runtime {
        let paths = Paths::from_env();
        for p in limits.iter() {
            dropin::store(&paths, name, p).map_err(|e| CtlError::Usage(e.to_string()))?;
        }
    }
    Ok(0)
}

/// Resident memory of the processes in the unified directory `dir` (for
/// hosts that account no memory to the machine's cgroup).
fn rss_below(dir: &Path) -> u64 {
    cgroup::procs_below(dir)
        .into_iter()
        .filter_map(|pid| {
            let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let kb = s
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()?;
            Some(kb * 1024)
        })
        .sum()
}

/// The machine's usage, or None if its cgroup is unknown. Memory falls back
/// to the processes' resident memory where the cgroup does not account it
/// (a hybrid host with no memory limit on the machine).
pub fn machine_usage(h: &Hierarchies, e: &Entry) -> Option<Usage> {
    let unified = e.cgroups.first()?;
    let mut u = cgroup::usage(h, unified);
    if u.memory.is_none() && unified.is_dir() {
        u.memory = Some(rss_below(unified));
    }
    Some(u)
}

/// Bytes as systemd prints them (`512B`, `1.5K`, `32.0M`).
pub fn format_bytes(b: u64) -> String {
    const UNITS: [&str; 6] = ["K", "M", "G", "T", "P", "E"];
    if b < 1024 {
        return format!("{b}B");
    }
    let mut v = b as f64 / 1024.0;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1}{}", UNITS[i])
}

/// CPU time as systemd prints it (`12ms`, `1.234s`, `2min 3.500s`).
pub fn format_cpu(usec: u64) -> String {
    if usec < 1_000_000 {
        format!("{}ms", usec / 1000)
    } else if usec < 60_000_000 {
        format!("{:.3}s", usec as f64 / 1e6)
    } else {
        let s = usec as f64 / 1e6;
        format!("{}min {:.3}s", (s / 60.0) as u64, s % 60.0)
    }
}

/// The status page's resource lines (systemctl status's `Tasks:`,
/// `Memory:`, `CPU:`).
pub fn status_lines(u: &Usage) -> String {
    let mut s = String::new();
    let limit = |l: Option<Option<u64>>, f: &dyn Fn(u64) -> String| match l {
        Some(Some(n)) => format!(" (limit: {})", f(n)),
        _ => String::new(),
    };
    if let Some(t) = u.tasks {
        s.push_str(&format!(
            "\t   Tasks: {t}{}\n",
            limit(u.tasks_max, &|n| n.to_string())
        ));
    }
    if let Some(m) = u.memory {
        s.push_str(&format!(
            "\t  Memory: {}{}\n",
            format_bytes(m),
            limit(u.memory_max, &format_bytes)
        ));
    }
    if let Some(c) = u.cpu_usec {
        s.push_str(&format!("\t     CPU: {}\n", format_cpu(c)));
    }
    s
}

/// The usage facts for `status -o json`.
pub fn usage_json(u: &Usage) -> serde_json::Value {
    let lim = |l: Option<Option<u64>>| l.flatten();
    serde_json::json!({
        "tasks": u.tasks,
        "tasks_max": lim(u.tasks_max),
        "memory_bytes": u.memory,
        "memory_max_bytes": lim(u.memory_max),
        "cpu_usec": u.cpu_usec,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_as_systemd_prints_them() {
        assert_eq!(format_bytes(512), "512B");
        assert_eq!(format_bytes(1536), "1.5K");
        assert_eq!(format_bytes(32 << 20), "32.0M");
        assert_eq!(format_cpu(12_345), "12ms");
        assert_eq!(format_cpu(1_234_000), "1.234s");
        assert_eq!(format_cpu(123_500_000), "2min 3.500s");
        let u = Usage {
            memory: Some(1 << 20),
            memory_max: Some(Some(32 << 20)),
            cpu_usec: Some(5000),
            tasks: Some(3),
            tasks_max: Some(None),
        };
        assert_eq!(
            status_lines(&u),
            "\t   Tasks: 3\n\t  Memory: 1.0M (limit: 32.0M)\n\t     CPU: 5ms\n"
        );
    }

    #[test]
    fn a_cgroup_outside_the_hierarchy_is_refused() {
        let h = Hierarchies {
            unified: "/sys/fs/cgroup".into(),
            devices: None,
            v1: vec![],
            v2: vec![],
        };
        let e = |p: &str| Entry {
            name: "web".into(),
            cgroups: vec![p.into()],
            ..Entry::default()
        };
        assert_eq!(
            machine_rel(&h, &e("/sys/fs/cgroup/netspawn/web")).unwrap(),
            PathBuf::from("netspawn/web")
        );
        assert!(machine_rel(&h, &e("/sys/fs/cgroup")).is_err());
        assert!(machine_rel(&h, &e("/sys/fs/cgroup/../etc")).is_err());
        assert!(machine_rel(&h, &e("/tmp/x")).is_err());
    }
}
