//! The `.network` file of a lab's zone that asks for more than netd's
//! defaults (`subnet`, `internal = true`, `ipv6 = false`): written by `up`
//! into the run directory's `network/` (networkd's `/run/systemd/network`),
//! which netd searches, before any machine is launched; netd is asked to
//! read its files again (`RELOAD`), and the zone's bridge, made by the first
//! machine on it, is served as the file says. `down` removes the file.
//!
//! The file is an ordinary template in systemd.network(5) syntax, with the
//! keys an administrator would write for such a zone: `Address=` with the
//! host's address in the pinned subnet, `IPMasquerade=no` and
//! `DNSDefaultRoute=no` for an internal zone (README, "Internal zones"),
//! no `Address=::/64` and `IPv6SendRA=no` without IPv6. Its name sorts
//! before the built-in `80-container-vz.network`, so it wins for its bridge.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use netlink::{Family, Rtnl};
use netspawn_common::paths::Paths;

use super::model::{overlaps, Cidr, Lab, Zone};
use super::TopoError;

/// The prefix of every lab zone's file name.
const PREFIX: &str = "60-netspawn-zone-";

/// The file name of zone `z`'s template.
pub fn file_name(z: &Zone) -> String {
    format!("{PREFIX}{}.network", z.name)
}

/// The template's text for zone `z` of lab `lab`.
pub fn render(lab: &str, z: &Zone) -> String {
    let mut t = format!(
        "# Written by 'netspawnctl up' for zone '{}' of lab '{lab}'; 'down' removes it.\n\
         # lab {lab}\n\
         [Match]\nName=vz-{}\nKind=bridge\n\n[Network]\n",
        z.short, z.name
    );
    match (z.subnet, z.host_address()) {
        (Some(net), Some(host)) => t.push_str(&format!("Address={host}/{}\n", net.prefix)),
        _ => t.push_str("Address=0.0.0.0/24\n"),
    }
    t.push_str("DHCPServer=yes\n");
    if z.ipv6 {
        t.push_str("LinkLocalAddressing=yes\nAddress=::/64\nIPv6SendRA=yes\n");
    } else {
        t.push_str("LinkLocalAddressing=no\nIPv6SendRA=no\n");
    }
    let masquerade = match (z.internal, z.ipv6) {
        (true, _) => "no",
        (false, true) => "both",
        (false, false) => "ipv4",
    };
    t.push_str(&format!("IPMasquerade={masquerade}\n"));
    if z.internal {
        t.push_str("DNSDefaultRoute=no\n");
    }
    t
}

/// The pinned subnets of other labs' zone files in `dir`: (lab, zone
/// file, subnet). Files of `own` (this lab's names) are skipped.
fn other_subnets(dir: &Path, own: &[String]) -> Vec<(String, String, Cidr)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with(PREFIX) || own.contains(&name) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        let lab = text
            .lines()
            .find_map(|l| l.strip_prefix("# lab "))
            .unwrap_or("?")
            .to_string();
        for l in text.lines() {
            let Some(a) = l.trim().strip_prefix("Address=") else {
                continue;
            };
            match Cidr::parse(a) {
                Ok(Cidr {
                    addr: IpAddr::V4(a),
                    prefix,
                }) if !a.is_unspecified() => {
                    // The subnet, not the host's address in it.
                    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                    let addr = IpAddr::V4((u32::from(a) & mask).into());
                    out.push((lab.clone(), name.clone(), Cidr { addr, prefix }))
                }
                _ => {}
            }
        }
    }
    out
}

/// Refuses a pinned subnet that overlaps another lab's zone or a route of
/// the host (its own addresses' subnets included): one line, before
/// anything is made.
pub fn check_clashes(lab: &Lab, paths: &Paths, host: &mut dyn Rtnl) -> Result<(), TopoError> {
    let pinned: Vec<(&Zone, Cidr)> = lab
        .zones
        .iter()
        .filter_map(|z| z.subnet.map(|s| (z, s)))
        .collect();
    if pinned.is_empty() {
        return Ok(());
    }
    let own: Vec<String> = lab.zones.iter().map(file_name).collect();
    let others = other_subnets(&paths.network_dir(), &own);
    let routes = host.routes(Family::V4)?;
    let links = host.links()?;
    for (z, net) in pinned {
        let refuse = |msg: String| TopoError::File {
            file: lab.file.clone(),
            msg: format!("zone '{}': subnet {net} {msg}", z.short),
        };
        if let Some((other, _, c)) = others.iter().find(|(_, _, c)| overlaps(&net, c)) {
            return Err(refuse(format!("overlaps {c}, a zone of lab '{other}'")));
        }
        for r in routes.iter().filter(|r| r.prefix_len > 0) {
            let c = Cidr {
                addr: r.destination,
                prefix: r.prefix_len,
            };
            if matches!(r.destination, IpAddr::V4(a) if a.is_loopback()) || !overlaps(&net, &c) {
                continue;
            }
            let dev = r
                .oif
                .and_then(|i| links.iter().find(|l| l.index == i))
                .map(|l| format!(" (dev {})", l.name))
                .unwrap_or_default();
            return Err(refuse(format!(
                "overlaps the host's route to {}/{}{dev}",
                r.destination, r.prefix_len
            )));
        }
    }
    Ok(())
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> TopoError {
    let path = path.to_path_buf();
    move |err| TopoError::Io { what, path, err }
}

/// Writes the files of the lab's zones that need one (atomically: netd
/// never reads half a file). Whether any was written.
pub fn write(lab: &Lab, paths: &Paths) -> Result<bool, TopoError> {
    let dir = paths.network_dir();
    let mut any = false;
    for z in lab.zones.iter().filter(|z| z.customized()) {
        std::fs::create_dir_all(&dir).map_err(io("make", &dir))?;
        let path = dir.join(file_name(z));
        let tmp = dir.join(format!(".{}.tmp", file_name(z)));
        std::fs::write(&tmp, render(&lab.name, z)).map_err(io("write", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(io("rename", &path))?;
        any = true;
    }
    Ok(any)
}

/// The lab's zone files that exist.
pub fn existing(lab: &Lab, paths: &Paths) -> Vec<PathBuf> {
    let dir = paths.network_dir();
    lab.zones
        .iter()
        .map(|z| dir.join(file_name(z)))
        .filter(|p| p.exists())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctl::topology::model::load;

    #[test]
    fn files_say_what_the_keys_ask() {
        let l = load(
            Path::new("/x/demo.toml"),
            "[zones.a]\nsubnet = \"10.5.0.0/24\"\ninternal = true\n[zones.b]\nipv6 = false\n[zones.c]\n",
        )
        .unwrap();
        let a = &l.zones[0];
        assert_eq!(file_name(a), "60-netspawn-zone-demo-a.network");
        assert_eq!(
            render("demo", a),
            "# Written by 'netspawnctl up' for zone 'a' of lab 'demo'; 'down' removes it.\n\
             # lab demo\n[Match]\nName=vz-demo-a\nKind=bridge\n\n[Network]\n\
             Address=10.5.0.1/24\nDHCPServer=yes\nLinkLocalAddressing=yes\nAddress=::/64\n\
             IPv6SendRA=yes\nIPMasquerade=no\nDNSDefaultRoute=no\n"
        );
        let b = render("demo", &l.zones[1]);
        assert!(b.contains("Address=0.0.0.0/24\n"), "{b}");
        assert!(
            b.contains("LinkLocalAddressing=no\nIPv6SendRA=no\nIPMasquerade=ipv4\n"),
            "{b}"
        );
        assert!(
            !b.contains("::/64") && !b.contains("DNSDefaultRoute"),
            "{b}"
        );
        assert!(!l.zones[2].customized());
    }

    #[test]
    fn clashes_with_other_labs_and_host_routes_are_refused() {
        let dir = std::env::temp_dir().join(format!("ns-zonefile-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let paths = Paths {
            run_dir: dir.clone(),
            image_dir: dir.clone(),
            state_dir: dir.clone(),
            settings_path: Vec::new(),
            cgroup_parent: "x".into(),
        };
        let other = load(
            Path::new("/x/other.toml"),
            "[zones.z]\nsubnet = \"10.5.0.0/16\"\n",
        )
        .unwrap();
        write(&other, &paths).unwrap();
        let mine = |s: &str| {
            load(
                Path::new("/x/mine.toml"),
                &format!("[zones.z]\nsubnet = \"{s}\"\n"),
            )
            .unwrap()
        };
        let mut host = netlink::fake::FakeRtnl::with_links(&[("lo", None), ("eth0", None)]);
        let e = check_clashes(&mine("10.5.3.0/24"), &paths, &mut host).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/x/mine.toml: zone 'z': subnet 10.5.3.0/24 overlaps 10.5.0.0/16, a zone of lab 'other'"
        );
        let eth0 = host.links.iter().find(|l| l.name == "eth0").unwrap().index;
        let mut r = netlink::Route::to("192.168.1.0".parse().unwrap(), 24);
        r.oif = Some(eth0);
        host.add_route(&r).unwrap();
        let e = check_clashes(&mine("192.168.0.0/16"), &paths, &mut host).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/x/mine.toml: zone 'z': subnet 192.168.0.0/16 overlaps the host's route to 192.168.1.0/24 (dev eth0)"
        );
        check_clashes(&mine("10.6.0.0/24"), &paths, &mut host).unwrap();
        // The lab's own file does not clash with itself.
        check_clashes(&other, &paths, &mut host).unwrap();
        assert_eq!(existing(&other, &paths).len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
