//! `netspawnctl status`: machinectl's status page for a machine, with the
//! machine's processes as a tree; with `-o json`, the same facts as JSON.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

use netspawn_common::registry::Entry;
use serde_json::{json, Value};

use super::list::print_json;
use super::osrelease::machine_os_release;
use super::timefmt::{format_relative, format_timestamp, now_usec};
use super::{lookup, procfs, CtlError, OutputMode};

/// One process for the tree: PID (host view), parent PID, command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    pub pid: u32,
    pub ppid: u32,
    pub cmdline: String,
}

/// Longest command line shown in the tree.
const MAX_CMDLINE: usize = 200;

/// Draws processes as a tree under `prefix`, the way systemd draws a cgroup
/// ("├─", "│ ", "└─"). Processes whose parent is not in the set (the leader,
/// or something entered from outside) are roots; siblings are sorted by PID.
pub fn render_tree(procs: &[Proc], prefix: &str) -> String {
    let pids: BTreeSet<u32> = procs.iter().map(|p| p.pid).collect();
    let mut children: BTreeMap<u32, Vec<&Proc>> = BTreeMap::new();
    let mut roots = Vec::new();
    for p in procs {
        if p.ppid != p.pid && pids.contains(&p.ppid) {
            children.entry(p.ppid).or_default().push(p);
        } else {
            roots.push(p);
        }
    }
    for v in children.values_mut() {
        v.sort_by_key(|p| p.pid);
    }
    roots.sort_by_key(|p| p.pid);
    let mut out = String::new();
    let mut seen = BTreeSet::new();
    draw(&roots, &children, prefix, &mut out, &mut seen);
    out
}

fn draw(
    level: &[&Proc],
    children: &BTreeMap<u32, Vec<&Proc>>,
    prefix: &str,
    out: &mut String,
    seen: &mut BTreeSet<u32>,
) {
    for (i, p) in level.iter().enumerate() {
        if !seen.insert(p.pid) {
            continue;
        }
        let last = i + 1 == level.len();
        let cmd: String = p.cmdline.chars().take(MAX_CMDLINE).collect();
        out.push_str(&format!(
            "{prefix}{}{} {cmd}\n",
            if last { "└─" } else { "├─" },
            p.pid
        ));
        if let Some(kids) = children.get(&p.pid) {
            let next = format!("{prefix}{}", if last { "  " } else { "│ " });
            draw(kids, children, &next, out, seen);
        }
    }
}

/// The processes of the machine whose leader is `leader`.
pub fn machine_processes(leader: u32) -> Vec<Proc> {
    procfs::processes_in_pid_namespace(leader)
        .into_iter()
        .map(|pid| Proc {
            pid,
            ppid: procfs::ppid(pid).unwrap_or(0),
            cmdline: procfs::cmdline(pid),
        })
        .collect()
}

/// What the status page shows besides the registry entry.
#[derive(Debug, Clone, Default)]
pub struct Extra {
    pub leader_comm: Option<String>,
    pub os_pretty: Option<String>,
    pub processes: Vec<Proc>,
    pub now_usec: u64,
    /// What the machine's cgroups say (tasks, memory, CPU time).
    pub usage: Option<crate::cgroup::Usage>,
}

/// The status page of one machine (machinectl's layout).
pub fn render_status(e: &Entry, x: &Extra) -> String {
    let mut s = String::new();
    s.push_str(&e.name);
    if e.uuid.is_empty() {
        s.push('\n');
    } else {
        s.push_str(&format!("({})\n", e.uuid));
    }
    if e.timestamp_usec > 0 {
        s.push_str(&format!(
            "\t   Since: {}; {}\n",
            format_timestamp(e.timestamp_usec),
            format_relative(e.timestamp_usec, x.now_usec)
        ));
    }
    if e.leader > 0 {
        match &x.leader_comm {
            Some(c) => s.push_str(&format!("\t  Leader: {} ({c})\n", e.leader)),
            None => s.push_str(&format!("\t  Leader: {}\n", e.leader)),
        }
    }
    match (e.service.is_empty(), e.class.is_empty()) {
        (false, false) => s.push_str(&format!("\t Service: {}; class {}\n", e.service, e.class)),
        (false, true) => s.push_str(&format!("\t Service: {}\n", e.service)),
        (true, false) => s.push_str(&format!("\t   Class: {}\n", e.class)),
        (true, true) => {}
    }
    s.push_str(if e.ready {
        "\t   Ready: yes\n"
    } else {
        "\t   Ready: no\n"
    });
    if !e.root.as_os_str().is_empty() {
        s.push_str(&format!("\t    Root: {}\n", e.root.display()));
    }
    if let Some(u) = &e.userns {
        s.push_str(&format!("\tUID Shift: {} ({})\n", u.shift, u.range));
    }
    if !e.interfaces.is_empty() {
        s.push_str(&format!("\t   Iface: {}\n", e.interfaces.join(" ")));
    }
    for (i, a) in e.addresses.iter().enumerate() {
        if i == 0 {
            s.push_str(&format!("\t Address: {a}\n"));
        } else {
            s.push_str(&format!("\t          {a}\n"));
        }
    }
    if let Some(os) = &x.os_pretty {
        s.push_str(&format!("\t      OS: {os}\n"));
    }
    if let Some(u) = &x.usage {
        s.push_str(&super::limits::status_lines(u));
    }
    if let Some(cg) = e.cgroups.first() {
        s.push_str(&format!("\t  CGroup: {}\n", cg.display()));
    } else if !x.processes.is_empty() {
        s.push_str("\t   Tasks:\n");
    }
    s.push_str(&render_tree(&x.processes, "\t\t  "));
    s
}

/// The facts of the status page as JSON: the names `list -o json` uses
/// where they overlap (machine, class, service, os, addresses, leader, root,
/// interfaces, uuid, state, boot; null when unknown), plus the start time
/// (`since_usec`, microseconds since the epoch), the leader's command name,
/// the user namespace's range (`uid_shift`, `uid_range`; null without one),
/// the cgroup and the processes (`pid`, `ppid`, `cmdline`).
pub fn status_json(e: &Entry, x: &Extra) -> Value {
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let mut v = json!({
        "machine": e.name,
        "uuid": non_empty(&e.uuid),
        "since_usec": (e.timestamp_usec > 0).then_some(e.timestamp_usec),
        "leader": e.leader,
        "leader_comm": x.leader_comm,
        "class": non_empty(&e.class),
        "service": non_empty(&e.service),
        "state": non_empty(&e.state),
        "boot": e.boot,
        "root": (!e.root.as_os_str().is_empty()).then(|| e.root.to_string_lossy()),
        "uid_shift": e.userns.map(|u| u.shift),
        "uid_range": e.userns.map(|u| u.range),
        "interfaces": e.interfaces,
        "addresses": e.addresses.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "os": x.os_pretty,
        "cgroup": e.cgroups.first().map(|c| c.to_string_lossy()),
        "processes": x
            .processes
            .iter()
            .map(|p| json!({"pid": p.pid, "ppid": p.ppid, "cmdline": p.cmdline}))
            .collect::<Vec<_>>(),
    });
    if let (Some(u), Some(o)) = (&x.usage, v.as_object_mut()) {
        if let Value::Object(m) = super::limits::usage_json(u) {
            o.extend(m);
        }
    }
    v
}

/// `netspawnctl status NAME...`: one page per machine, separated by a blank
/// line, or (`-o json`) one JSON array with an object per machine. An
/// unknown name fails before anything is printed.
pub fn status(names: &[String], output: OutputMode) -> Result<i32, CtlError> {
    let entries: Vec<Entry> = names.iter().map(|n| lookup(n)).collect::<Result<_, _>>()?;
    let hierarchies = crate::cgroup::Hierarchies::detect().ok();
    let pages = entries.iter().map(|e| {
        let x = Extra {
            leader_comm: procfs::comm(e.leader),
            os_pretty: machine_os_release(e.leader).map(|o| o.pretty_name().to_string()),
            processes: machine_processes(e.leader),
            now_usec: now_usec(),
            usage: hierarchies
                .as_ref()
                .and_then(|h| super::limits::machine_usage(h, e)),
        };
        (e, x)
    });
    if output != OutputMode::Short {
        let all: Vec<Value> = pages.map(|(e, x)| status_json(e, &x)).collect();
        print_json(&Value::Array(all), output)?;
        return Ok(0);
    }
    let mut out = std::io::stdout().lock();
    for (i, (e, x)) in pages.enumerate() {
        if i > 0 {
            writeln!(out)?;
        }
        out.write_all(render_status(e, &x).as_bytes())?;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pid: u32, ppid: u32, cmd: &str) -> Proc {
        Proc {
            pid,
            ppid,
            cmdline: cmd.into(),
        }
    }

    #[test]
    fn tree_drawing() {
        let procs = vec![
            p(100, 50, "/sbin/init"),
            p(120, 100, "/lib/systemd/systemd-journald"),
            p(130, 100, "agetty"),
            p(131, 120, "child"),
            p(300, 299, "sh -c entered"),
        ];
        assert_eq!(
            render_tree(&procs, "> "),
            "> ├─100 /sbin/init\n\
             > │ ├─120 /lib/systemd/systemd-journald\n\
             > │ │ └─131 child\n\
             > │ └─130 agetty\n\
             > └─300 sh -c entered\n"
        );
        // A parent loop (PID reuse mid-walk) cannot hang or repeat.
        let looped = vec![p(1, 2, "a"), p(2, 1, "b")];
        assert_eq!(render_tree(&looped, ""), "");
        assert_eq!(render_tree(&[p(7, 7, "self")], ""), "└─7 self\n");
    }

    #[test]
    fn status_page() {
        let e = Entry {
            name: "web".into(),
            uuid: "0123456789abcdef0123456789abcdef".into(),
            leader: 4242,
            class: "container".into(),
            service: "netspawn".into(),
            root: "/var/lib/machines/web".into(),
            timestamp_usec: 1_000_000_000,
            interfaces: vec!["ve-web".into()],
            addresses: vec!["10.0.0.2".parse().unwrap(), "fd00::2".parse().unwrap()],
            ready: true,
            userns: netspawn_common::registry::UidRange::new(524288, 65536),
            ..Entry::default()
        };
        let x = Extra {
            leader_comm: Some("init".into()),
            os_pretty: Some("Debian GNU/Linux 12 (bookworm)".into()),
            processes: vec![p(4242, 4000, "/sbin/init")],
            now_usec: 1_000_000_000 + 420_000_000,
            usage: None,
        };
        let page = render_status(&e, &x);
        let lines: Vec<&str> = page.lines().collect();
        assert_eq!(lines[0], "web(0123456789abcdef0123456789abcdef)");
        assert!(lines[1].starts_with("\t   Since: ") && lines[1].ends_with("; 7min ago"));
        assert_eq!(
            &lines[2..],
            &[
                "\t  Leader: 4242 (init)",
                "\t Service: netspawn; class container",
                "\t   Ready: yes",
                "\t    Root: /var/lib/machines/web",
                "\tUID Shift: 524288 (65536)",
                "\t   Iface: ve-web",
                "\t Address: 10.0.0.2",
                "\t          fd00::2",
                "\t      OS: Debian GNU/Linux 12 (bookworm)",
                "\t   Tasks:",
                "\t\t  └─4242 /sbin/init",
            ]
        );
    }

    #[test]
    fn status_json_has_the_pages_facts() {
        let e = Entry {
            name: "web".into(),
            uuid: "0123456789abcdef0123456789abcdef".into(),
            leader: 4242,
            class: "container".into(),
            root: "/var/lib/machines/web".into(),
            timestamp_usec: 1_000_000_000,
            cgroups: vec!["/sys/fs/cgroup/unified/netspawn/web".into()],
            interfaces: vec!["ve-web".into()],
            addresses: vec!["10.0.0.2".parse().unwrap(), "fd00::2".parse().unwrap()],
            userns: netspawn_common::registry::UidRange::new(524288, 65536),
            ..Entry::default()
        };
        let x = Extra {
            leader_comm: Some("init".into()),
            os_pretty: None,
            processes: vec![p(4242, 4000, "/sbin/init"), p(4300, 4242, "sh")],
            now_usec: 0,
            usage: None,
        };
        assert_eq!(
            status_json(&e, &x),
            json!({
                "machine": "web",
                "uuid": "0123456789abcdef0123456789abcdef",
                "since_usec": 1_000_000_000u64,
                "leader": 4242,
                "leader_comm": "init",
                "class": "container",
                "service": null,
                "state": null,
                "boot": false,
                "root": "/var/lib/machines/web",
                "uid_shift": 524288,
                "uid_range": 65536,
                "interfaces": ["ve-web"],
                "addresses": ["10.0.0.2", "fd00::2"],
                "os": null,
                "cgroup": "/sys/fs/cgroup/unified/netspawn/web",
                "processes": [
                    {"pid": 4242, "ppid": 4000, "cmdline": "/sbin/init"},
                    {"pid": 4300, "ppid": 4242, "cmdline": "sh"},
                ],
            })
        );
        let bare = status_json(&Entry::default(), &Extra::default());
        assert_eq!(bare["since_usec"], Value::Null);
        assert_eq!(bare["root"], Value::Null);
        assert_eq!(bare["uid_shift"], Value::Null);
        assert_eq!(bare["processes"], json!([]));
        let shifted = Entry {
            userns: netspawn_common::registry::UidRange::new(524288, 65536),
            ..Entry::default()
        };
        let j = status_json(&shifted, &Extra::default());
        assert_eq!(
            (&j["uid_shift"], &j["uid_range"]),
            (&json!(524288), &json!(65536))
        );
    }
}
