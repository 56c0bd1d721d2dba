//! `netspawnctl list`: the running machines, as a machinectl-style table or
//! as JSON.

use std::io::Write;

use netspawn_common::registry::Entry;
use serde_json::{json, Value};

use super::osrelease::{machine_os_release, OsRelease};
use super::table::{first_with_ellipsis, Table};
use super::{registry, CtlError, ListOptions, OutputMode};

/// What `list` shows about one machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineRow {
    pub entry: Entry,
    pub os: Option<String>,
    pub version: Option<String>,
}

impl MachineRow {
    /// Builds a row from an entry and the machine's os-release (if readable).
    pub fn new(entry: Entry, os: Option<&OsRelease>) -> MachineRow {
        MachineRow {
            os: os.and_then(|o| o.id()).map(str::to_string),
            version: os.and_then(|o| o.version_id()).map(str::to_string),
            entry,
        }
    }

    fn addresses(&self) -> Vec<String> {
        self.entry.addresses.iter().map(|a| a.to_string()).collect()
    }
}

/// The table text, header and footer included unless `no_legend`.
pub fn render_table(rows: &[MachineRow], no_legend: bool) -> String {
    let mut t = Table::new(&["machine", "class", "service", "os", "version", "addresses"]);
    for r in rows {
        t.push(vec![
            r.entry.name.clone(),
            r.entry.class.clone(),
            r.entry.service.clone(),
            r.os.clone().unwrap_or_default(),
            r.version.clone().unwrap_or_default(),
            first_with_ellipsis(&r.addresses()),
        ]);
    }
    let mut out = String::new();
    if !t.is_empty() {
        out.push_str(&t.render(!no_legend));
    }
    if !no_legend {
        if t.is_empty() {
            out.push_str("No machines.\n");
        } else {
            out.push_str(&format!("\n{} machines listed.\n", t.len()));
        }
    }
    out
}

/// The JSON value: machinectl's field names (machine, class, service, os,
/// version, addresses; null when unknown) plus ours (leader, root,
/// interfaces, uuid, state, boot).
pub fn to_json(rows: &[MachineRow]) -> Value {
    Value::Array(
        rows.iter()
            .map(|r| {
                let e = &r.entry;
                json!({
                    "machine": e.name,
                    "class": non_empty(&e.class),
                    "service": non_empty(&e.service),
                    "os": r.os,
                    "version": r.version,
                    "addresses": r.addresses(),
                    "leader": e.leader,
                    "root": e.root.to_string_lossy(),
                    "interfaces": e.interfaces,
                    "uuid": non_empty(&e.uuid),
                    "state": non_empty(&e.state),
                    "boot": e.boot,
                })
            })
            .collect(),
    )
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// Prints a JSON value in the selected mode.
pub fn print_json(value: &Value, mode: OutputMode) -> Result<(), CtlError> {
    let text = if mode == OutputMode::JsonPretty {
        serde_json::to_string_pretty(value)
    } else {
        serde_json::to_string(value)
    }
    .map_err(|e| CtlError::Output(e.into()))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")?;
    Ok(())
}

/// `netspawnctl list`.
pub fn list(opts: &ListOptions) -> Result<i32, CtlError> {
    let reg = registry();
    let entries = reg.list().map_err(|err| CtlError::Registry {
        path: reg.dir().to_path_buf(),
        err,
    })?;
    let rows: Vec<MachineRow> = entries
        .into_iter()
        .map(|e| {
            let os = machine_os_release(e.leader);
            MachineRow::new(e, os.as_ref())
        })
        .collect();
    match opts.output {
        OutputMode::Short => {
            std::io::stdout()
                .lock()
                .write_all(render_table(&rows, opts.no_legend).as_bytes())?;
        }
        mode => print_json(&to_json(&rows), mode)?,
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, addrs: &[&str]) -> MachineRow {
        let entry = Entry {
            name: name.into(),
            class: "container".into(),
            service: "netspawn".into(),
            leader: 4242,
            root: "/var/lib/machines/web".into(),
            interfaces: vec!["ve-web".into()],
            addresses: addrs.iter().map(|a| a.parse().unwrap()).collect(),
            ..Entry::default()
        };
        let os = OsRelease::parse("ID=debian\nVERSION_ID=\"12\"\n");
        MachineRow::new(entry, Some(&os))
    }

    #[test]
    fn table_with_legend() {
        let rows = vec![row("web", &["10.0.0.2", "fd00::2"]), row("db", &[])];
        assert_eq!(
            render_table(&rows, false),
            "MACHINE CLASS     SERVICE  OS     VERSION ADDRESSES\n\
             web     container netspawn debian 12      10.0.0.2…\n\
             db      container netspawn debian 12      -\n\
             \n2 machines listed.\n"
        );
        assert_eq!(
            render_table(&rows[1..], true),
            "db container netspawn debian 12 -\n"
        );
        assert_eq!(render_table(&[], false), "No machines.\n");
        assert_eq!(render_table(&[], true), "");
    }

    #[test]
    fn json_fields() {
        let mut r = row("web", &["10.0.0.2"]);
        r.os = None;
        let v = to_json(&[r]);
        let m = &v[0];
        assert_eq!(m["machine"], "web");
        assert_eq!(m["class"], "container");
        assert_eq!(m["os"], Value::Null);
        assert_eq!(m["version"], "12");
        assert_eq!(m["addresses"], json!(["10.0.0.2"]));
        assert_eq!(m["leader"], 4242);
        assert_eq!(m["root"], "/var/lib/machines/web");
        assert_eq!(m["interfaces"], json!(["ve-web"]));
    }
}
