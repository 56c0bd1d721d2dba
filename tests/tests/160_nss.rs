//! The host resolves running machines by name through the NSS module, with
//! real glibc (`getent`) and real network tools, whatever gave the machine
//! its address: netd's DHCP (via busybox udhcpc) or a static address; and
//! names the UIDs and GIDs of machines with a user namespace (`getent
//! passwd`, `ls -l`, `stat`), from entries written as the launcher writes
//! them.

use netspawn_tests::*;

/// Script prelude: a private nsswitch.conf with `mymachines` (bind-mounted
/// over /etc/nsswitch.conf in the test's own mount namespace) and the
/// module on LD_LIBRARY_PATH.
fn prelude(env: &TestEnv) -> String {
    let (lib, conf) = env
        .nss_module("passwd: files mymachines\ngroup: files mymachines\nhosts: files mymachines\n");
    format!(
        "mount --bind {} /etc/nsswitch.conf && export LD_LIBRARY_PATH={}\nip link set lo up\n",
        conf.display(),
        lib.display()
    )
}

#[test]
fn getent_and_ping_reach_a_machine_by_name_with_a_dhcp_address() {
    let env = TestEnv::new();
    let img = env.busybox("web");
    let r = env.sh(
        &format!(
            r#"{prelude}
               $NETSPAWN -q -n --bind={ctl}:/ctl -D {img} /bin/sh -c 'udhcpc -i host0 -n -q -f -t 5 >/dev/null 2>&1; touch /ctl/dhcp-done; {HOLD}' &
               # udhcpc's script drops the address the launcher configured and puts it back
               # (deconfig, then bound): ask once it is done.
               for t in $(seq 1200); do [ -e {ctl}/dhcp-done ] && getent hosts web >/dev/null && break; sleep 0.05; done
               echo hosts=$(getent hosts web)
               echo ahostsv4=$(getent ahostsv4 web | head -1)
               addr=$(getent hosts web | cut -d' ' -f1)
               echo reverse=$(getent hosts $addr)
               ping -c1 -W2 web >/dev/null && echo ping-ok
               getent hosts nosuchmachine; echo unknown-rc=$?
               touch {ctl}/stop
               wait
               getent hosts web; echo stopped-rc=$?"#,
            prelude = prelude(&env),
            img = img.display(),
            ctl = env.hold_dir().display()
        ),
        90,
    );
    let out = &r.stdout;
    let hosts = out
        .lines()
        .find_map(|l| l.strip_prefix("hosts="))
        .unwrap_or("");
    let addr = hosts.split_whitespace().next().unwrap_or("");
    // IPv6 is on by default: `getent hosts` (AF_INET6 first) may give the
    // machine's SLAAC address; its DHCP address is the IPv4 one.
    assert!(
        addr.parse::<std::net::IpAddr>().is_ok() && hosts.ends_with(" web"),
        "{out}\n{}",
        r.stderr
    );
    let v4 = out
        .lines()
        .find_map(|l| l.strip_prefix("ahostsv4="))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or("");
    assert!(v4.parse::<std::net::Ipv4Addr>().is_ok(), "{out}");
    assert!(
        addr == v4 || addr.starts_with("fd"),
        "hosts gives the IPv4 or the unique local address: {out}"
    );
    assert!(out.contains(&format!("reverse={addr} web")), "{out}");
    assert!(out.contains("ping-ok"), "{out}\n{}", r.stderr);
    assert!(out.contains("unknown-rc=2"), "{out}");
    assert!(
        out.contains("stopped-rc=2"),
        "a stopped machine disappears at once: {out}"
    );
}

#[test]
fn a_static_address_set_in_the_guest_resolves_and_link_local_does_not() {
    let env = TestEnv::new();
    let img = env.busybox("db");
    let r = env.sh(
        &format!(
            r#"{prelude}
               # getaddrinfo (AI_ADDRCONFIG) answers a family only if the host has an address of it.
               ip link add h0 type veth peer name h1 && ip addr add 192.0.2.1/24 dev h0 && ip addr add 2001:db8::1/64 dev h0 nodad && ip link set h0 up && ip link set h1 up
               $NETSPAWN -q --private-network --bind={ctl}:/ctl -D {img} /bin/sh -c 'ip addr add 10.55.0.9/24 dev lo; ip addr add fd55::9/64 dev lo; ip addr add 169.254.7.7/16 dev lo; {HOLD}' &
               for t in $(seq 1200); do getent ahostsv6 db >/dev/null && break; sleep 0.05; done
               getent ahostsv4 db | cut -d' ' -f1 | sort -u
               getent ahostsv6 db | cut -d' ' -f1 | sort -u
               touch {ctl}/stop
               wait"#,
            prelude = prelude(&env),
            img = img.display(),
            ctl = env.hold_dir().display()
        ),
        60,
    );
    assert_eq!(r.stdout, "10.55.0.9\nfd55::9\n", "{}", r.stderr);
}

#[test]
fn a_machine_whose_launcher_is_killed_stops_resolving() {
    let env = TestEnv::new();
    let img = env.busybox("kld");
    let r = env.sh(
        &format!(
            r#"{prelude}
               ip link add h0 type veth peer name h1 && ip addr add 192.0.2.1/24 dev h0 && ip link set h0 up && ip link set h1 up
               $NETSPAWN -q -n --network-config=none -D {img} /bin/sh -c 'ip link set host0 up; ip addr add 10.56.0.9/24 dev host0; sleep 60' &
               launcher=$!
               for t in $(seq 200); do getent ahostsv4 kld >/dev/null && break; sleep 0.05; done
               echo before=$(getent ahostsv4 kld | head -1 | cut -d' ' -f1) $(getent hosts kld | awk '{{print $2}}')
               kill -9 $launcher
               # The keeper removes the name; nothing else is waited for.
               for t in $(seq 100); do getent hosts kld >/dev/null || break; sleep 0.05; done
               getent hosts kld; echo after-rc=$?
               getent hosts 10.56.0.9; echo reverse-rc=$?
               # No links at all, and a parent that never reaps: the killed
               # launcher stays a zombie, so only its keeper can remove the name.
               sh -c '$NETSPAWN -q --private-network -M zmb -D {img} /bin/sh -c "ip addr add 10.57.0.9/24 dev lo; sleep 60" & echo $! > {dir}/launcher.pid; exec sleep 30' &
               reaper=$!
               for t in $(seq 200); do getent hosts zmb >/dev/null && break; sleep 0.05; done
               echo zombie-before=$(getent hosts zmb)
               kill -9 $(cat {dir}/launcher.pid)
               for t in $(seq 100); do getent hosts zmb >/dev/null || break; sleep 0.05; done
               grep -q '^State:.*Z' /proc/$(cat {dir}/launcher.pid)/status && echo launcher-is-zombie
               getent hosts zmb; echo zombie-after-rc=$?
               kill $reaper
               wait"#,
            prelude = prelude(&env),
            img = img.display(),
            dir = env.dir.display()
        ),
        60,
    );
    let out = &r.stdout;
    assert!(out.contains("before=10.56.0.9 kld"), "{out}\n{}", r.stderr);
    assert!(out.contains("after-rc=2"), "{out}\n{}", r.stderr);
    assert!(out.contains("reverse-rc=2"), "{out}\n{}", r.stderr);
    assert!(
        out.contains("zombie-before=10.57.0.9 zmb"),
        "{out}\n{}",
        r.stderr
    );
    assert!(out.contains("launcher-is-zombie"), "{out}\n{}", r.stderr);
    assert!(out.contains("zombie-after-rc=2"), "{out}\n{}", r.stderr);
}

/// `netspawnctl install-nss` without `--library=` installs the module built
/// next to it (a workspace build puts `libnss_mymachines.so` there), and
/// `uninstall-nss` takes it out again; `--root=` keeps it off the real `/`.
#[test]
fn install_nss_finds_the_module_built_next_to_netspawnctl() {
    let env = TestEnv::new();
    let root = env.dir.join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(
        root.join("etc/nsswitch.conf"),
        "passwd: files\ngroup: files\nhosts:          files dns\n",
    )
    .unwrap();
    let root_arg = format!("--root={}", root.display());
    env.ctl(&["install-nss", &root_arg]).expect_status(0);
    let conf = std::fs::read_to_string(root.join("etc/nsswitch.conf")).unwrap();
    assert_eq!(
        conf,
        "passwd: files mymachines\ngroup: files mymachines\nhosts:          files mymachines dns\n",
        "{conf}"
    );
    let installed = root
        .join("usr/lib")
        .join(format!("{}-linux-gnu", std::env::consts::ARCH))
        .join("libnss_mymachines.so.2");
    assert_eq!(
        std::fs::read(&installed).expect("installed module"),
        std::fs::read(bin("libnss_mymachines.so")).unwrap(),
        "the installed module is the one built next to netspawnctl"
    );
    env.ctl(&["uninstall-nss", &root_arg]).expect_status(0);
    let conf = std::fs::read_to_string(root.join("etc/nsswitch.conf")).unwrap();
    assert_eq!(
        conf,
        "passwd: files\ngroup: files\nhosts:          files dns\n"
    );
    assert!(!installed.exists());
}

/// Registers `name` in the env's registry as a launcher would
/// (`Registry::write`: the entry, the hosts view and the users view), owned
/// by process `launcher`, with the user namespace range `shift`/`range`.
fn register_userns(
    env: &TestEnv,
    name: &str,
    launcher: u32,
    shift: u32,
    range: u32,
) -> netspawn_common::registry::NameClaim {
    use netspawn_common::registry::{process_start_time, Entry, Registry, UidRange};
    let paths = netspawn_common::paths::Paths {
        run_dir: env.run_dir(),
        image_dir: env.image_dir(),
        state_dir: env.dir.join("state"),
        settings_path: vec![env.settings_dir()],
        cgroup_parent: env.cgroup_parent.clone(),
    };
    let reg = Registry::new(&paths);
    let claim = reg.claim(name).expect("claim the name");
    let entry = Entry {
        name: name.into(),
        leader: launcher,
        launcher,
        launcher_start: process_start_time(launcher).unwrap_or(1),
        class: "container".into(),
        service: "netspawn".into(),
        state: "running".into(),
        userns: UidRange::new(shift, range),
        ..Entry::default()
    };
    reg.write(&claim, &entry).expect("write the entry");
    claim
}

/// The host names the UIDs and GIDs of a running machine with a user
/// namespace as systemd's machined does, for `getent`, `stat` and `ls -l`;
/// nothing for IDs outside the range, hostile names, or a machine whose
/// launcher is gone.
#[test]
fn uids_of_a_machine_with_a_user_namespace_have_names() {
    let env = TestEnv::new();
    const S: u32 = 1_572_864; // 24 * 65536
    let mut launcher = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .expect("spawn a stand-in launcher");
    let _web = register_userns(&env, "web", launcher.id(), S, 65536);
    // A range of another size (found by listing the view).
    let _odd = register_userns(&env, "odd", launcher.id(), 3_000_000, 100_000);
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let dead = gone.id();
    gone.wait().unwrap();
    let _gone = register_userns(&env, "gone", dead, 2_097_152, 65536);
    // A machine without a user namespace has no users.
    let _plain = register_userns(&env, "plain", launcher.id(), 0, 0);

    let script = format!(
        r#"{prelude}
           echo "a=$(getent passwd vu-web-0)"
           echo "b=$(getent passwd {s5})"
           echo "c=$(getent group vg-web-5)"
           echo "d=$(getent group {s})"
           echo "e=$(getent passwd 3000007 | cut -d: -f1)"
           for q in vu-web-65536 {out} {below} vu-web-05 vu-gone-0 2097152 vu-plain-0 'vu-../web-0' 'vu-web-0 ' vg-web-0 vu-nosuch-0; do
               getent passwd "$q" >/dev/null; echo "absent $q rc=$?"
           done
           getent group vu-web-0 >/dev/null; echo "absent group vu-web-0 rc=$?"
           touch {dir}/owned && chown {s}:{s5} {dir}/owned
           echo "stat=$(stat -c '%U %G' {dir}/owned)"
           echo "ls=$(ls -l {dir}/owned | awk '{{print $3, $4}}')"
           chown vu-web-7:vg-web-8 {dir}/owned && echo "numeric=$(stat -c '%u %g' {dir}/owned)""#,
        prelude = prelude(&env),
        s = S,
        s5 = S + 5,
        out = S + 65536,
        below = S - 1,
        dir = env.dir.display(),
    );
    let r = env.sh(&script, 60);
    let out = &r.stdout;
    let want = [
        format!("a=vu-web-0:*:{S}:65534:UID 0 of Container web:/:/usr/sbin/nologin"),
        format!(
            "b=vu-web-5:*:{}:65534:UID 5 of Container web:/:/usr/sbin/nologin",
            S + 5
        ),
        format!("c=vg-web-5:*:{}:", S + 5),
        format!("d=vg-web-0:*:{S}:"),
        "e=vu-odd-7".to_string(),
        "stat=vu-web-0 vg-web-5".to_string(),
        "ls=vu-web-0 vg-web-5".to_string(),
        format!("numeric={} {}", S + 7, S + 8),
        "absent group vu-web-0 rc=2".to_string(),
    ];
    for w in &want {
        assert!(
            out.lines().any(|l| l == w),
            "missing {w:?} in:\n{out}\n{}",
            r.stderr
        );
    }
    let absent = out.lines().filter(|l| l.starts_with("absent ")).count();
    assert_eq!(absent, 12, "{out}");
    for l in out.lines().filter(|l| l.starts_with("absent ")) {
        assert!(l.ends_with(" rc=2"), "{l}\n{out}");
    }

    // The launcher goes: its machine's names go with it.
    launcher.kill().unwrap();
    launcher.wait().unwrap();
    let r = env.sh(
        &format!(
            "{}getent passwd vu-web-0; echo rc=$?; getent passwd {S}; echo rc=$?; \
             stat -c '%U' {}/owned",
            prelude(&env),
            env.dir.display()
        ),
        30,
    );
    assert_eq!(r.stdout, "rc=2\nrc=2\nUNKNOWN\n", "{}", r.stderr);
}

/// A launcher killed with `kill -9` (and left a zombie by a parent that never
/// reaps, so `kill(PID, 0)` still finds it): its keeper removes the
/// machine's users-view links with its hosts link, so its UIDs lose their
/// names. (The links are added by hand: the launcher writes them only for
/// `-U`, which another part of the issue brings.)
#[test]
fn a_killed_launchers_keeper_removes_its_uid_names() {
    let env = TestEnv::new();
    let img = env.busybox("zmu");
    let r = env.sh(
        &format!(
            r#"{prelude}
               sh -c '$NETSPAWN -q --private-network -M zmu -D {img} /bin/sh -c "ip addr add 10.58.0.9/24 dev lo; sleep 60" & echo $! > {dir}/launcher.pid; exec sleep 30' &
               reaper=$!
               for t in $(seq 200); do getent hosts zmu >/dev/null && break; sleep 0.05; done
               pid=$(cat {dir}/launcher.pid)
               ln -s "$pid 1638400 65536" $NETSPAWN_RUN_DIR/userns/zmu
               ln -s "$pid zmu" $NETSPAWN_RUN_DIR/uids/1638400:65536
               echo "before=$(getent passwd 1638401 | cut -d: -f1)"
               kill -9 $pid
               for t in $(seq 100); do getent passwd 1638401 >/dev/null || break; sleep 0.05; done
               grep -q '^State:.*Z' /proc/$pid/status && echo launcher-is-zombie
               getent passwd 1638401; echo after-rc=$?
               getent passwd vu-zmu-1; echo byname-rc=$?
               ls $NETSPAWN_RUN_DIR/userns $NETSPAWN_RUN_DIR/uids
               kill $reaper
               wait"#,
            prelude = prelude(&env),
            img = img.display(),
            dir = env.dir.display()
        ),
        60,
    );
    let out = &r.stdout;
    assert!(out.contains("before=vu-zmu-1\n"), "{out}\n{}", r.stderr);
    assert!(out.contains("launcher-is-zombie"), "{out}\n{}", r.stderr);
    assert!(out.contains("after-rc=2"), "{out}\n{}", r.stderr);
    assert!(out.contains("byname-rc=2"), "{out}\n{}", r.stderr);
    assert!(!out.contains("1638400:65536"), "{out}");
}
