//! `.nspawn` settings files (systemd.nspawn(5)): found where systemd looks
//! (the trusted directories, then next to the image, untrusted), [Exec],
//! [Files] and [Network] applied, the command line winning unless
//! `--settings=override`, `--settings=no|trusted`, warnings for unknown keys
//! and `FILE:LINE:` errors for malformed lines.

use std::path::{Path, PathBuf};

use netspawn_tests::*;

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_TIME: u32 = 25;
const CAP_MKNOD: u32 = 27;

/// The trusted search directories in order, as the harness hands them to
/// netspawn (`NETSPAWN_SETTINGS_PATH`): stand-ins for /etc/systemd/nspawn
/// and /run/systemd/nspawn.
fn search_dirs(env: &TestEnv) -> Vec<PathBuf> {
    let c = env.cmd("netspawn", &["--version"], 5);
    let v = c
        .get_envs()
        .find(|(k, _)| *k == "NETSPAWN_SETTINGS_PATH")
        .and_then(|(_, v)| v)
        .expect("harness sets NETSPAWN_SETTINGS_PATH")
        .to_string_lossy()
        .into_owned();
    let dirs: Vec<PathBuf> = v.split(':').map(PathBuf::from).collect();
    assert_eq!(dirs[0], env.settings_dir());
    dirs
}

/// Writes `dir/NAME.nspawn` and returns its path.
fn write_settings(dir: &Path, name: &str, text: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join(format!("{name}.nspawn"));
    std::fs::write(&p, text).unwrap();
    p
}

/// A script in the image that shows what a payload sees: its PID, argv,
/// environment, working directory, hostname, PID 1's bounding set, and
/// whether lo is up.
const SHOW: &str = "#!/bin/sh\n\
echo pid=$$\n\
echo argc=$# arg1=$1 arg2=$2\n\
echo foo=$FOO two=$TWO bar=$BAR\n\
echo pwd=$(pwd)\n\
echo hostname=$(hostname)\n\
echo capbnd=$(grep CapBnd /proc/1/status | cut -f2)\n\
echo lo=$(ip -o link show lo | grep -c UP)\n";

fn image_with_show(env: &TestEnv, name: &str) -> PathBuf {
    let img = env.busybox(name);
    std::fs::create_dir_all(img.join("usr/local/bin")).unwrap();
    std::fs::write(img.join("usr/local/bin/show"), SHOW).unwrap();
    std::fs::set_permissions(
        img.join("usr/local/bin/show"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    img
}

/// The `key=value` output of `show`.
fn field<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in\n{out}"))
}

fn capbnd(out: &str) -> u64 {
    u64::from_str_radix(field(out, "capbnd"), 16).unwrap_or_else(|e| panic!("capbnd: {e}\n{out}"))
}

fn has_cap(out: &str, cap: u32) -> bool {
    capbnd(out) & (1u64 << cap) != 0
}

/// Warning lines on stderr (every line must be one of netspawn's).
fn warnings(stderr: &str) -> Vec<&str> {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    for l in &lines {
        assert!(l.starts_with("netspawn: "), "unexpected stderr line {l:?}");
    }
    lines
}

fn check_clean(env: &TestEnv) {
    assert!(
        env.registry_names().is_empty(),
        "registry: {:?}",
        env.registry_names()
    );
    assert!(
        env.leftover_cgroups().is_empty(),
        "cgroups: {:?}",
        env.leftover_cgroups()
    );
}

#[test]
fn exec_section_applies() {
    let env = TestEnv::new();
    let img = image_with_show(&env, "exec");
    std::fs::create_dir_all(img.join("srv/app")).unwrap();
    write_settings(
        &env.settings_dir(),
        "exec",
        "# a comment\n\
         [Exec]\n\
         ProcessTwo=yes\n\
         Parameters=/usr/local/bin/show one \"two words\"\n\
         Environment=FOO=bar \"TWO=second value\"\n\
         WorkingDirectory=/srv/app\n\
         Hostname=from-file\n\
         Capability=CAP_SYS_TIME\n\
         DropCapability=CAP_MKNOD\n",
    );
    // No command on the command line: the file's start mode and parameters.
    let r = env.netspawn(&["-q", "-D", img.to_str().unwrap()]);
    r.expect_status(0);
    assert!(warnings(&r.stderr).is_empty(), "{}", r.stderr);
    let o = &r.stdout;
    assert_eq!(
        field(o, "pid"),
        "2",
        "ProcessTwo=yes: the payload is PID 2\n{o}"
    );
    assert_eq!(field(o, "argc"), "2 arg1=one arg2=two words");
    assert_eq!(field(o, "foo"), "bar two=second value bar=");
    assert_eq!(field(o, "pwd"), "/srv/app");
    assert_eq!(field(o, "hostname"), "from-file");
    assert!(has_cap(o, CAP_SYS_TIME), "{o}");
    assert!(!has_cap(o, CAP_MKNOD), "{o}");
    check_clean(&env);
}

#[test]
fn files_section_applies() {
    let env = TestEnv::new();
    let img = env.busybox("files");
    let shared = env.dir.join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::write(shared.join("file"), "from-host").unwrap();
    let s = shared.display();
    write_settings(
        &env.settings_dir(),
        "files",
        &format!(
            "[Files]\n\
             Bind={s}:/mnt/rw\n\
             BindReadOnly={s}:/mnt/ro\n\
             TemporaryFileSystem=/var/scratch:mode=0700\n\
             ReadOnly=yes\n"
        ),
    );
    // A command on the command line does not mask [Files].
    let r = env.netspawn(&[
        "-q",
        "-D",
        img.to_str().unwrap(),
        "/bin/sh",
        "-c",
        "cat /mnt/rw/file; echo; echo new > /mnt/rw/new && echo rw-ok; \
         echo x > /mnt/ro/x 2>/dev/null || echo ro-refused; \
         grep ' /var/scratch ' /proc/self/mounts | cut -d' ' -f3; stat -c %a /var/scratch; \
         touch /etc/x 2>/dev/null || echo root-ro",
    ]);
    r.expect_status(0);
    assert_eq!(
        r.stdout,
        "from-host\nrw-ok\nro-refused\ntmpfs\n700\nroot-ro\n"
    );
    assert_eq!(
        std::fs::read_to_string(shared.join("new")).unwrap(),
        "new\n"
    );
    assert!(!shared.join("x").exists());
    assert!(!img.join("etc/x").exists());
}

#[test]
fn network_section_private_and_host() {
    let env = TestEnv::new();
    let img = image_with_show(&env, "net");
    let d = img.to_str().unwrap();
    // Without a file: the (test's private) host network, where lo is down
    // and the container has no CAP_NET_ADMIN.
    let r = env.netspawn(&["-q", "-D", d, "show"]);
    r.expect_status(0);
    assert_eq!(field(&r.stdout, "lo"), "0");
    assert!(!has_cap(&r.stdout, CAP_NET_ADMIN));

    write_settings(&env.settings_dir(), "net", "[Network]\nPrivate=yes\n");
    let r = env.netspawn(&["-q", "-D", d, "/bin/sh", "-c", "ls /sys/class/net; show"]);
    r.expect_status(0);
    assert!(r.stdout.starts_with("lo\npid="), "only lo: {}", r.stdout);
    assert_eq!(
        field(&r.stdout, "lo"),
        "1",
        "a fresh namespace's lo, brought up"
    );
    assert!(has_cap(&r.stdout, CAP_NET_ADMIN));

    // VirtualEthernet=no means the host's network, as no file.
    write_settings(
        &env.settings_dir(),
        "net",
        "[Network]\nVirtualEthernet=no\n",
    );
    let r = env.netspawn(&["-q", "-D", d, "show"]);
    r.expect_status(0);
    assert_eq!(field(&r.stdout, "lo"), "0");
    assert!(!has_cap(&r.stdout, CAP_NET_ADMIN));
}

const OVERRIDABLE: &str = "[Exec]\n\
ProcessTwo=yes\n\
Parameters=/usr/local/bin/show from-file\n\
Environment=FOO=file\n\
Hostname=from-file\n";

#[test]
fn the_command_line_wins_over_the_file() {
    let env = TestEnv::new();
    let img = image_with_show(&env, "prio");
    let d = img.to_str().unwrap();
    write_settings(&env.settings_dir(), "prio", OVERRIDABLE);
    // A command masks the file's start mode and parameters (PID 1, not 2);
    // -E masks the file's whole environment; --hostname its Hostname=.
    let r = env.netspawn(&[
        "-q",
        "-D",
        d,
        "--hostname=from-cli",
        "-E",
        "BAR=cli",
        "show",
        "cli-arg",
    ]);
    r.expect_status(0);
    let o = &r.stdout;
    assert_eq!(field(o, "pid"), "1", "{o}");
    assert_eq!(field(o, "argc"), "1 arg1=cli-arg arg2=");
    assert_eq!(field(o, "foo"), " two= bar=cli");
    assert_eq!(field(o, "hostname"), "from-cli");

    // Unmasked settings still come from the file.
    let r = env.netspawn(&["-q", "-D", d, "show"]);
    r.expect_status(0);
    assert_eq!(field(&r.stdout, "foo"), "file two= bar=");
    assert_eq!(field(&r.stdout, "hostname"), "from-file");
}

#[test]
fn settings_override_lets_the_file_win() {
    let env = TestEnv::new();
    let img = image_with_show(&env, "ovr");
    let d = img.to_str().unwrap();
    write_settings(&env.settings_dir(), "ovr", OVERRIDABLE);
    let r = env.netspawn(&[
        "-q",
        "-D",
        d,
        "--settings=override",
        "--hostname=from-cli",
        "-E",
        "FOO=cli",
        "/bin/echo",
        "CLI-COMMAND",
    ]);
    r.expect_status(0);
    let o = &r.stdout;
    assert!(!o.contains("CLI-COMMAND"), "{o}");
    assert_eq!(field(o, "pid"), "2", "{o}");
    assert_eq!(field(o, "argc"), "1 arg1=from-file arg2=");
    assert_eq!(field(o, "foo"), "file two= bar=");
    assert_eq!(field(o, "hostname"), "from-file");
}

#[test]
fn settings_no_ignores_the_file_even_a_broken_one() {
    let env = TestEnv::new();
    let img = image_with_show(&env, "nofile");
    let d = img.to_str().unwrap();
    write_settings(&env.settings_dir(), "nofile", OVERRIDABLE);
    let r = env.netspawn(&["-q", "-D", d, "--settings=no", "show"]);
    r.expect_status(0);
    assert_eq!(field(&r.stdout, "pid"), "1");
    assert_eq!(field(&r.stdout, "foo"), " two= bar=");
    assert_eq!(field(&r.stdout, "hostname"), "nofile");
    // A malformed file is not even read.
    write_settings(&env.settings_dir(), "nofile", "[Exec]\nBoot=maybe\n");
    let r = env.netspawn(&["-q", "-D", d, "--settings=no", "/bin/echo", "ran"]);
    r.expect_status(0);
    assert_eq!(r.stdout, "ran\n");
    assert!(r.stderr.is_empty(), "{}", r.stderr);
}

/// A file granting everything an untrusted file may not grant, plus things
/// it may set.
fn untrusted_text(shared: &Path) -> String {
    format!(
        "[Exec]\n\
         Environment=FOO=untrusted\n\
         Capability=CAP_SYS_TIME\n\
         DropCapability=CAP_MKNOD\n\
         [Files]\n\
         Bind={}:/mnt/bound\n\
         TemporaryFileSystem=/var/scratch\n\
         [Network]\n\
         Private=yes\n",
        shared.display()
    )
}

const MOUNTS_AND_SHOW: &str = "grep -c -E ' /mnt/bound | /var/scratch ' /proc/self/mounts; show";

#[test]
fn a_file_next_to_the_image_is_untrusted() {
    let env = TestEnv::new();
    let img = image_with_show(&env, "beside");
    let d = img.to_str().unwrap();
    let shared = env.dir.join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    // <image dir's parent>/NAME.nspawn, as /var/lib/machines/NAME.nspawn.
    let path = write_settings(img.parent().unwrap(), "beside", &untrusted_text(&shared));

    let r = env.netspawn(&["-q", "-D", d, "/bin/sh", "-c", MOUNTS_AND_SHOW]);
    r.expect_status(0);
    let o = &r.stdout;
    assert!(o.starts_with("0\n"), "no bind, no tmpfs: {o}");
    assert_eq!(
        field(o, "foo"),
        "untrusted two= bar=",
        "Environment= applies"
    );
    assert!(!has_cap(o, CAP_MKNOD), "DropCapability= applies: {o}");
    assert!(!has_cap(o, CAP_SYS_TIME), "Capability= is ignored: {o}");
    assert_eq!(field(o, "lo"), "0", "Private= is ignored: {o}");
    assert!(!has_cap(o, CAP_NET_ADMIN), "{o}");
    let w = warnings(&r.stderr);
    assert_eq!(w.len(), 3, "one warning per ignored group: {w:?}");
    for l in &w {
        assert!(
            l.contains(&path.display().to_string()) && l.contains("not trusted"),
            "{l}"
        );
    }
    for key in ["Capability=", "Bind=", "network"] {
        assert!(
            w.iter().any(|l| l.contains(key)),
            "no warning about {key}: {w:?}"
        );
    }

    // --settings=trusted: all of it applies, silently.
    let r = env.netspawn(&[
        "-q",
        "-D",
        d,
        "--settings=trusted",
        "/bin/sh",
        "-c",
        MOUNTS_AND_SHOW,
    ]);
    r.expect_status(0);
    let o = &r.stdout;
    assert!(o.starts_with("2\n"), "bind and tmpfs: {o}");
    assert_eq!(field(o, "foo"), "untrusted two= bar=");
    assert!(has_cap(o, CAP_SYS_TIME) && !has_cap(o, CAP_MKNOD), "{o}");
    assert_eq!(field(o, "lo"), "1");
    assert!(r.stderr.is_empty(), "{}", r.stderr);
}

#[test]
fn search_order_and_naming() {
    let env = TestEnv::new();
    let img = image_with_show(&env, "order");
    let d = img.to_str().unwrap();
    let dirs = search_dirs(&env);
    assert!(dirs.len() >= 2, "{dirs:?}");
    let shared = env.dir.join("shared");
    std::fs::create_dir_all(&shared).unwrap();

    // The second trusted directory (stands for /run/systemd/nspawn) is
    // trusted: its Bind= applies.
    write_settings(&dirs[1], "order", &untrusted_text(&shared));
    let r = env.netspawn(&["-q", "-D", d, "/bin/sh", "-c", MOUNTS_AND_SHOW]);
    r.expect_status(0);
    assert!(r.stdout.starts_with("2\n"), "{}", r.stdout);
    assert!(r.stderr.is_empty(), "{}", r.stderr);

    // The first hit wins: a file in the first directory hides the others,
    // and one next to the image is not read when a trusted one exists.
    write_settings(
        img.parent().unwrap(),
        "order",
        "[Exec]\nEnvironment=FOO=beside\n",
    );
    write_settings(&dirs[0], "order", "[Exec]\nEnvironment=FOO=first\n");
    let r = env.netspawn(&["-q", "-D", d, "/bin/sh", "-c", MOUNTS_AND_SHOW]);
    r.expect_status(0);
    assert!(r.stdout.starts_with("0\n"), "{}", r.stdout);
    assert_eq!(field(&r.stdout, "foo"), "first two= bar=");

    // The file is named after the machine, not the directory.
    write_settings(&dirs[0], "alias", "[Exec]\nEnvironment=FOO=alias\n");
    let r = env.netspawn(&["-q", "-D", d, "-M", "alias", "show"]);
    r.expect_status(0);
    assert_eq!(field(&r.stdout, "foo"), "alias two= bar=");
    assert_eq!(field(&r.stdout, "hostname"), "alias");
}

#[test]
fn unknown_keys_and_sections_warn_and_the_launch_proceeds() {
    let env = TestEnv::new();
    let img = image_with_show(&env, "warn");
    let path = write_settings(
        &env.settings_dir(),
        "warn",
        "[Exec]\n\
         Bogus=1\n\
         Environment=FOO=still\n\
         [Weird]\n\
         x=y\n\
         [X-Extension]\n\
         z=1\n\
         [Exec]\n\
         X-Mine=1\n",
    );
    let r = env.netspawn(&["-q", "-D", img.to_str().unwrap(), "show"]);
    r.expect_status(0);
    assert_eq!(field(&r.stdout, "foo"), "still two= bar=");
    let p = path.display();
    let w = warnings(&r.stderr);
    assert_eq!(w.len(), 2, "X- sections and keys are silent: {w:?}");
    assert!(
        w[0].starts_with(&format!("netspawn: {p}:2: ")) && w[0].contains("Bogus"),
        "{w:?}"
    );
    assert!(
        w[1].starts_with(&format!("netspawn: {p}:4: ")) && w[1].contains("Weird"),
        "{w:?}"
    );
}

#[test]
fn malformed_lines_fail_with_file_and_line_and_leave_nothing() {
    let env = TestEnv::new();
    let img = env.busybox("bad");
    let d = img.to_str().unwrap();
    for (text, line, what) in [
        ("[Exec]\nBoot=maybe\n", 2, "maybe"),
        ("[Exec]\n\nNoEquals\n", 3, "NoEquals"),
        ("Hostname=x\n", 1, "outside of any section"),
        ("[Exec\n", 1, "section header"),
        ("[Exec]\nCapability=CAP_FLY\n", 2, "CAP_FLY"),
        ("[Exec]\nHostname=-bad\n", 2, "Hostname="),
        ("[Files]\nBind=relative:/mnt\n", 2, "Bind="),
        ("[Network]\nPort=http\n", 2, "Port="),
    ] {
        let path = write_settings(&env.settings_dir(), "bad", text);
        let r = env.netspawn(&["-q", "-D", d, "/bin/echo", "ran"]);
        r.expect_error(what);
        assert!(
            r.stderr
                .starts_with(&format!("netspawn: {}:{line}: ", path.display())),
            "{text:?}: {}",
            r.stderr
        );
        assert!(r.stdout.is_empty(), "{}", r.stdout);
        check_clean(&env);
    }
    // Untrusted or not, a broken file is an error.
    std::fs::remove_file(env.settings_dir().join("bad.nspawn")).unwrap();
    let path = write_settings(img.parent().unwrap(), "bad", "[Exec]\nBoot=maybe\n");
    let r = env.netspawn(&["-q", "-D", d, "/bin/echo", "ran"]);
    r.expect_error(&format!("{}:2:", path.display()));
    check_clean(&env);
    // A bind source that does not exist is one line naming it.
    let missing = env.dir.join("missing-source");
    write_settings(
        &env.settings_dir(),
        "bad",
        &format!("[Files]\nBind={}:/mnt/x\n", missing.display()),
    );
    env.netspawn(&["-q", "-D", d, "/bin/echo", "ran"])
        .expect_error(&missing.display().to_string());
    check_clean(&env);
}

/// The one stderr line of a failed launch.
fn one_error_line(r: &Run) -> &str {
    r.expect_status(1);
    let lines: Vec<&str> = r.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "expected one error line, got:\n{}",
        r.stderr
    );
    lines[0]
}

/// The network keys parse, and take effect or are refused in one clear
/// line, never silently dropped. Links were refused with "not available"
/// before networking landed; where the launcher makes them, they must be
/// really there inside. A link that needs a host interface this (fresh)
/// network namespace lacks is refused in one line naming it.
#[test]
fn network_link_keys_parse_and_take_effect_or_are_refused_clearly() {
    let env = TestEnv::new();
    let img = env.busybox("links");
    let d = img.to_str().unwrap();
    let cases: &[(&str, Option<&str>, &str)] = &[
        ("VirtualEthernet=yes\n", Some("host0"), ""),
        ("Zone=lab\n", Some("host0"), ""),
        ("VirtualEthernetExtra=vx0:eth1\n", Some("eth1"), ""),
        ("VirtualEthernet=yes\nPort=tcp:8080:80\n", Some("host0"), ""),
        ("Bridge=br0\n", None, "br0"),
        ("MACVLAN=eth0\n", None, "eth0"),
        ("IPVLAN=eth0\n", None, "eth0"),
        ("Interface=eth9\n", None, "eth9"),
    ];
    for (i, (text, inside, missing)) in cases.iter().enumerate() {
        // One machine name per case: the file is named after it.
        let name = format!("link{i}");
        write_settings(&env.settings_dir(), &name, &format!("[Network]\n{text}"));
        let r = env.netspawn(&[
            "-q",
            "-D",
            d,
            "-M",
            &name,
            "/bin/sh",
            "-c",
            "ls /sys/class/net",
        ]);
        match (r.status, inside) {
            (Some(0), Some(iface)) => {
                let links: Vec<&str> = r.stdout.split_whitespace().collect();
                assert!(
                    links.contains(iface) && links.contains(&"lo"),
                    "{text:?}: {links:?}"
                );
            }
            (_, Some(_)) => {
                let line = one_error_line(&r);
                assert!(line.contains("not available"), "{text:?}: {line}");
            }
            (_, None) => {
                let line = one_error_line(&r);
                assert!(
                    line.contains("not available") || line.contains(&format!("'{missing}'")),
                    "{text:?}: {line}"
                );
            }
        }
        check_clean(&env);
    }
    // A port without a link is refused as on the command line.
    write_settings(&env.settings_dir(), "links", "[Network]\nPort=80\n");
    env.netspawn(&["-q", "-D", d, "/bin/echo", "ran"])
        .expect_error("requires a private network");
    // The command line's --private-network masks the file's network group.
    write_settings(&env.settings_dir(), "links", "[Network]\nZone=lab\n");
    let r = env.netspawn(&[
        "-q",
        "-D",
        d,
        "--private-network",
        "/bin/sh",
        "-c",
        "ls /sys/class/net",
    ]);
    r.expect_status(0);
    assert_eq!(r.stdout, "lo\n");
    check_clean(&env);
}

/// busybox `uname -s` prints the kernel's name from the uname system call,
/// and nothing when the call is refused (it does not fail).
const UNAME: &str = "echo uname=$(uname -s 2>/dev/null)";

#[test]
fn system_call_filter_from_files() {
    let env = TestEnv::new();
    let img = env.busybox("scf");
    let d = img.to_str().unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec!["-q", "-D", d];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["/bin/sh", "-c", UNAME]);
        env.netspawn(&args)
    };
    let r = run(&[]);
    r.expect_status(0);
    assert_eq!(r.stdout, "uname=Linux\n");

    // Trusted: applies; a --system-call-filter= on the command line masks it.
    let trusted = write_settings(
        &env.settings_dir(),
        "scf",
        "[Exec]\nSystemCallFilter=~uname\n",
    );
    let r = run(&[]);
    assert_eq!(r.stdout, "uname=\n", "{}", r.stderr);
    let r = run(&["--system-call-filter=add_key"]);
    assert_eq!(r.stdout, "uname=Linux\n", "{}", r.stderr);
    std::fs::remove_file(trusted).unwrap();

    // Untrusted: a filter that only refuses is kept (it grants nothing) ...
    let beside = img.parent().unwrap();
    write_settings(beside, "scf", "[Exec]\nSystemCallFilter=~uname\n");
    let r = run(&[]);
    r.expect_status(0);
    assert_eq!(r.stdout, "uname=\n");
    assert!(r.stderr.is_empty(), "{}", r.stderr);
    // ... one that allows anything is ignored as a whole, with a warning.
    write_settings(
        beside,
        "scf",
        "[Exec]\nSystemCallFilter=add_key\nSystemCallFilter=~uname\n",
    );
    let r = run(&[]);
    r.expect_status(0);
    assert_eq!(r.stdout, "uname=Linux\n");
    let w = warnings(&r.stderr);
    assert!(
        w.len() == 1 && w[0].contains("SystemCallFilter=") && w[0].contains("not trusted"),
        "{w:?}"
    );
}

#[test]
fn unknown_system_call_in_a_file_is_warned_about_and_skipped() {
    // As systemd: the name is skipped with a warning naming file and line;
    // the rest of the line applies (on the command line it is refused).
    let env = TestEnv::new();
    let img = env.busybox("scfbad");
    let path = write_settings(
        &env.settings_dir(),
        "scfbad",
        "[Exec]\nSystemCallFilter=~no_such_call uname\n",
    );
    let r = env.netspawn(&["-q", "-D", img.to_str().unwrap(), "/bin/sh", "-c", UNAME]);
    r.expect_status(0);
    assert_eq!(r.stdout, "uname=\n", "{}", r.stderr);
    let w = warnings(&r.stderr);
    assert!(
        w.len() == 1
            && w[0].starts_with(&format!("netspawn: {}:2: ", path.display()))
            && w[0].contains("no_such_call"),
        "{w:?}"
    );
    check_clean(&env);
}

#[test]
fn boot_from_the_file_runs_the_images_init() {
    let env = TestEnv::new();
    let img = env.busybox("booted");
    write_settings(&env.settings_dir(), "booted", "[Exec]\nBoot=yes\n");
    let mut child = env.spawn(&["-q", "-D", img.to_str().unwrap()]);
    let leader = env.wait_registered("booted", std::time::Duration::from_secs(20));
    // busybox init rewrites its argv; its command name is "init" (a shell
    // payload's would be "sh"). Registration may come just before the exec.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut comm = String::new();
    while let Some(pid) = leader {
        comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm == "init\n" || std::time::Instant::now() > deadline {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // Ask the launcher (its PID is in the registry entry) for a clean
    // shutdown. Not through timeout(1): it would pass SIGTERM on twice (to
    // the command and to its process group), and a second request kills.
    let entry = std::fs::read_to_string(env.run_dir().join("machines/booted")).unwrap_or_default();
    let launcher: Option<i32> = entry
        .lines()
        .find_map(|l| l.strip_prefix("LAUNCHER="))
        .and_then(|v| v.parse().ok());
    if let Some(pid) = launcher {
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let status = wait_timeout(&mut child, std::time::Duration::from_secs(30));
    assert!(leader.is_some(), "the machine was never registered");
    assert!(
        launcher.is_some(),
        "no LAUNCHER= in the registry entry:\n{entry}"
    );
    assert_eq!(comm, "init\n", "PID 1 is the image's init");
    assert_eq!(status, Some(0), "a booted OS shut down on request exits 0");
    check_clean(&env);
}

#[test]
fn private_users_in_a_file_applies() {
    let env = TestEnv::new();
    let img = env.busybox("userns");
    let d = img.to_str().unwrap();
    write_settings(&env.settings_dir(), "userns", "[Exec]\nPrivateUsers=no\n");
    let r = env.netspawn(&["-q", "-D", d, "/bin/cat", "/proc/self/uid_map"]);
    r.expect_status(0);
    assert_eq!(
        r.stdout.split_whitespace().collect::<Vec<_>>(),
        ["0", "0", "4294967295"]
    );
    for (v, map) in [
        ("identity", ["0", "0", "65536"]),
        ("1354956800:65536", ["0", "1354956800", "65536"]),
    ] {
        write_settings(
            &env.settings_dir(),
            "userns",
            &format!("[Exec]\nPrivateUsers={v}\n"),
        );
        let r = env.netspawn(&["-q", "-D", d, "/bin/cat", "/proc/self/uid_map"]);
        r.expect_status(0);
        assert_eq!(r.stdout.split_whitespace().collect::<Vec<_>>(), map, "{v}");
        check_clean(&env);
    }
    write_settings(
        &env.settings_dir(),
        "userns",
        "[Exec]\nPrivateUsers=65537:65536\n[Files]\nPrivateUsersOwnership=chown\n",
    );
    env.netspawn(&["-q", "-D", d, "/bin/true"])
        .expect_error("multiple of 65536");
    check_clean(&env);
}

/// What one launch of a [`Privileged`] row must give.
enum Outcome {
    /// It runs and the probe prints exactly this.
    Out(String),
    /// It is refused in one line containing this.
    Refused(&'static str),
}

/// One key an untrusted file (next to the image) may or may not set.
struct Privileged {
    /// The file's text.
    text: String,
    /// Host-side commands before the launch (links for `Interface=`, …);
    /// their output comes first.
    setup: &'static str,
    /// The payload (`sh -c`): prints what the key changes.
    probe: String,
    /// The result from an untrusted file, and from the same file trusted.
    untrusted: Outcome,
    trusted: Outcome,
    /// The one warning the untrusted file gives contains this (and "not
    /// trusted" or "not supported"); empty: the key is not privileged, so
    /// the untrusted file applies it silently.
    warning: &'static str,
}

/// `set` if the line of `/proc/self/limits` named `what` shows `soft hard`.
fn limit_probe(what: &str, soft: u64, hard: u64) -> String {
    format!(
        "v=$(echo $(grep '^{what} ' /proc/self/limits | cut -c27-67)); \
         [ \"$v\" = '{soft} {hard}' ] && echo set || echo \"unset ($v)\""
    )
}

/// Bit `cap` of the payload's bounding set.
fn cap_probe(cap: u32) -> String {
    format!("echo $(( 0x$(grep CapBnd /proc/self/status | cut -f2) >> {cap} & 1 ))")
}

/// `shared` if the payload is in the launcher's network namespace, else
/// `private` and the links it sees.
const NET_PROBE: &str = "if [ \"$(readlink /proc/self/ns/net)\" = \"$HOSTNS\" ]; \
    then echo shared; else echo private $(ls /sys/class/net); fi";

fn out(s: &str) -> Outcome {
    Outcome::Out(format!("{s}\n"))
}

/// True if an ipvlan link can be made here (not every kernel has it).
fn kernel_has_ipvlan() -> bool {
    std::process::Command::new("unshare")
        .args(["-n", "sh", "-c"])
        .arg("ip link add p0 type veth peer name p1 && ip link add i0 link p0 type ipvlan")
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn privileged_rows(shared: &Path) -> Vec<Privileged> {
    let s = shared.display();
    let row =
        |text: String, probe: String, untrusted: Outcome, trusted: Outcome, warning| Privileged {
            text,
            setup: "",
            probe,
            untrusted,
            trusted,
            warning,
        };
    let net = |text: &str, setup: &'static str, inside: &str| Privileged {
        text: format!("[Network]\n{text}\n"),
        setup,
        probe: NET_PROBE.into(),
        untrusted: out("shared"),
        trusted: out(&format!("private {inside}")),
        warning: "network settings",
    };
    // A key netspawn does not implement: a warning when untrusted, a
    // refusal when trusted (never silently dropped from a trusted file).
    let unsupported = |text: &str, key: &'static str| {
        row(
            text.into(),
            "echo ran".into(),
            out("ran"),
            Outcome::Refused("not supported"),
            key,
        )
    };
    let mut rows = vec![
        // [Exec]
        row(
            "[Exec]\nCapability=CAP_SYS_TIME\n".into(),
            cap_probe(CAP_SYS_TIME),
            out("0"),
            out("1"),
            "Capability=",
        ),
        row(
            "[Exec]\nCapability=all\n".into(),
            cap_probe(16), // CAP_SYS_MODULE, never in the default set
            out("0"),
            out("1"),
            "Capability=",
        ),
        unsupported("[Exec]\nAmbientCapability=CAP_SYS_TIME\n", "AmbientCapability"),
        row(
            "[Exec]\nMachineID=0123456789abcdef0123456789abcdef\n".into(),
            "[ \"$container_uuid\" = 0123456789abcdef0123456789abcdef ] && echo set || echo unset"
                .into(),
            out("unset"),
            out("set"),
            "MachineID=",
        ),
        row(
            "[Exec]\nPrivateUsers=pick\n".into(),
            "set -- $(cat /proc/self/uid_map); [ \"$2\" = 0 ] && echo host || echo shifted".into(),
            out("host"),
            out("shifted"),
            "PrivateUsers=",
        ),
        row(
            "[Exec]\nSystemCallFilter=add_key\nSystemCallFilter=~uname\n".into(),
            UNAME.into(),
            out("uname=Linux"),
            out("uname="),
            "SystemCallFilter=",
        ),
        row(
            "[Exec]\nOOMScoreAdjust=321\n".into(),
            "[ $(cat /proc/self/oom_score_adj) = 321 ] && echo set || echo unset".into(),
            out("unset"),
            out("set"),
            "OOMScoreAdjust=",
        ),
        // Trusted, the machine runs on an overlay of the image (-x).
        row(
            "[Exec]\nEphemeral=yes\n".into(),
            "grep -q '^overlay / ' /proc/self/mounts && echo overlay || echo image".into(),
            out("image"),
            out("overlay"),
            "Ephemeral=",
        ),
        unsupported("[Exec]\nLinkJournal=host\n", "LinkJournal"),
        // [Files]
        row(
            format!("[Files]\nBind={s}:/mnt/b\n"),
            "cat /mnt/b/file 2>/dev/null || echo none".into(),
            out("none"),
            out("from-host"),
            "Bind=",
        ),
        row(
            format!("[Files]\nBindReadOnly={s}:/mnt/b\n"),
            "cat /mnt/b/file 2>/dev/null || echo none".into(),
            out("none"),
            out("from-host"),
            "BindReadOnly=",
        ),
        row(
            "[Files]\nTemporaryFileSystem=/var/scratch\n".into(),
            "echo $(grep -c ' /var/scratch ' /proc/self/mounts)".into(),
            out("0"),
            out("1"),
            "TemporaryFileSystem=",
        ),
        row(
            "[Files]\nInaccessible=/etc/secret\n".into(),
            "echo \"[$(cat /etc/secret 2>/dev/null)]\"".into(),
            out("[secret]"),
            out("[]"),
            "Inaccessible=",
        ),
        row(
            "[Files]\nOverlay=+/etc::/mnt/ov\n".into(),
            "(echo x > /mnt/ov/new && cat /mnt/ov/new /mnt/ov/passwd) >/dev/null 2>&1 && echo overlay || echo none".into(),
            out("none"),
            out("overlay"),
            "TemporaryFileSystem=",
        ),
        row(
            "[Files]\nOverlayReadOnly=+/etc::/mnt/ov\n".into(),
            "(cat /mnt/ov/passwd && ! touch /mnt/ov/new) >/dev/null 2>&1 && echo overlay || echo none".into(),
            out("none"),
            out("overlay"),
            "TemporaryFileSystem=",
        ),
        unsupported("[Files]\nBindUser=root\n", "BindUser"),
        row(
            "[Files]\nPrivateUsersOwnership=chown\n".into(),
            "echo ran".into(),
            out("ran"),
            Outcome::Refused("needs a user namespace"),
            "PrivateUsersOwnership=",
        ),
        row(
            "[Files]\nPrivateUsersChown=yes\n".into(),
            "echo ran".into(),
            out("ran"),
            Outcome::Refused("needs a user namespace"),
            "PrivateUsersOwnership=",
        ),
        // [Network]
        net("Private=yes", "", "lo"),
        net("VirtualEthernet=yes", "", "host0 lo"),
        net("VirtualEthernetExtra=vx0:eth1", "", "eth1 lo"),
        net(
            "Bridge=br0",
            "ip link add br0 type bridge && ip link set br0 up",
            "host0 lo",
        ),
        net("Zone=lab", "", "host0 lo"),
        net("Interface=hif0", "ip link add hif0 type veth peer name hif1", "hif0 lo"),
        net(
            "MACVLAN=hif0",
            "ip link add hif0 type veth peer name hif1 && ip link set hif0 up",
            "lo mv-hif0",
        ),
        // Where the kernel has no ipvlan, the trusted file's launch tries
        // and fails naming it: the key was taken.
        Privileged {
            trusted: if kernel_has_ipvlan() {
                out("private iv-hif0 lo")
            } else {
                Outcome::Refused("create ipvlan iv-hif0")
            },
            ..net(
                "IPVLAN=hif0",
                "ip link add hif0 type veth peer name hif1 && ip link set hif0 up",
                "",
            )
        },
        // A private network grants CAP_NET_ADMIN: not from an untrusted file.
        Privileged {
            probe: cap_probe(CAP_NET_ADMIN),
            untrusted: out("0"),
            trusted: out("1"),
            ..net("Private=yes", "", "")
        },
        // Port=: netd's forwarding rule, seen from the host while the
        // machine runs (the untrusted file loses the link and the port).
        // The rule needs the machine's address: this row runs with DHCP.
        Privileged {
            text: "[Network]\nVirtualEthernet=yes\nPort=tcp:8080:80\n".into(),
            // The payload stays until the host has looked ($IMG/seen),
            // so the order of the two lines never depends on timing.
            setup: "(for i in $(seq 100); do nft list ruleset 2>/dev/null | grep -q 'dport 8080' && break; \
                    sleep 0.1; done; nft list ruleset 2>/dev/null | grep -q 'dport 8080' && echo port=yes || echo port=no; \
                    touch \"$IMG/seen\") &",
            probe: "for i in $(seq 1200); do [ -e /seen ] && break; sleep 0.05; done; rm -f /seen; echo ran".into(),
            untrusted: out("port=no\nran"),
            trusted: out("port=yes\nran"),
            warning: "Port=",
        },
        // Not privileged: they only restrict, so an untrusted file keeps them.
        row(
            "[Exec]\nDropCapability=CAP_MKNOD\n".into(),
            cap_probe(CAP_MKNOD),
            out("0"),
            out("0"),
            "",
        ),
        row(
            "[Exec]\nSystemCallFilter=~uname\n".into(),
            UNAME.into(),
            out("uname="),
            out("uname="),
            "",
        ),
        row(
            "[Exec]\nNoNewPrivileges=yes\n".into(),
            "echo $(grep NoNewPrivs /proc/self/status | cut -f2)".into(),
            out("1"),
            out("1"),
            "",
        ),
    ];
    // One row per resource limit, read back from /proc/self/limits.
    let limits: [(&str, &str, u64); 16] = [
        ("CPU", "Max cpu time", 1000),
        ("FSIZE", "Max file size", 1 << 30),
        ("DATA", "Max data size", 1 << 30),
        ("STACK", "Max stack size", 4 << 20),
        ("CORE", "Max core file size", 1000),
        ("RSS", "Max resident set", 1 << 30),
        ("NOFILE", "Max open files", 1000),
        ("AS", "Max address space", 1 << 30),
        ("NPROC", "Max processes", 1000),
        ("MEMLOCK", "Max locked memory", 1 << 20),
        ("LOCKS", "Max file locks", 1000),
        ("SIGPENDING", "Max pending signals", 1000),
        ("MSGQUEUE", "Max msgqueue size", 1 << 19),
        ("NICE", "Max nice priority", 10),
        ("RTPRIO", "Max realtime priority", 10),
        ("RTTIME", "Max realtime timeout", 1000000),
    ];
    // Raising a hard limit needs CAP_SYS_RESOURCE, which a sandbox may
    // lack: a limit is tried only below the test's own hard limit.
    let ours = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let hard_of = |what: &str| -> u64 {
        ours.lines()
            .find(|l| l.starts_with(&format!("{what} ")))
            .and_then(|l| l.get(47..67))
            .map(str::trim)
            .and_then(|v| v.parse().ok())
            .unwrap_or(u64::MAX)
    };
    for (name, what, soft) in limits {
        if soft + 1 > hard_of(what) {
            skip(
                &format!("Limit{name}= row"),
                &format!("the hard limit here is {}", hard_of(what)),
            );
            continue;
        }
        rows.push(Privileged {
            text: format!("[Exec]\nLimit{name}={soft}:{}\n", soft + 1),
            setup: "",
            probe: limit_probe(what, soft, soft + 1),
            untrusted: Outcome::Out(String::new()), // anything but "set"
            trusted: out("set"),
            warning: match name {
                "CPU" => "LimitCPU=",
                "FSIZE" => "LimitFSIZE=",
                "DATA" => "LimitDATA=",
                "STACK" => "LimitSTACK=",
                "CORE" => "LimitCORE=",
                "RSS" => "LimitRSS=",
                "NOFILE" => "LimitNOFILE=",
                "AS" => "LimitAS=",
                "NPROC" => "LimitNPROC=",
                "MEMLOCK" => "LimitMEMLOCK=",
                "LOCKS" => "LimitLOCKS=",
                "SIGPENDING" => "LimitSIGPENDING=",
                "MSGQUEUE" => "LimitMSGQUEUE=",
                "NICE" => "LimitNICE=",
                "RTPRIO" => "LimitRTPRIO=",
                _ => "LimitRTTIME=",
            },
        });
    }
    // CPUAffinity= can only be seen with more than one CPU allowed.
    let cpus = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("Cpus_allowed_list:")
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default();
    if cpus != "0" {
        rows.push(row(
            "[Exec]\nCPUAffinity=0\n".into(),
            "grep Cpus_allowed_list /proc/self/status | cut -f2".into(),
            out(&cpus),
            out("0"),
            "CPUAffinity=",
        ));
    } else {
        skip("CPUAffinity= row", "only CPU 0 is allowed here");
    }
    rows
}

/// systemd's trust rule (the CVE-2026-40226 class): a `.nspawn` file next
/// to the image may not grant anything, key by key. For each privileged key
/// the untrusted file gives one warning and the payload does not get what
/// it asks for; the same file in the trusted directory does. Keys that only
/// restrict apply from either place, silently.
#[test]
fn untrusted_files_may_not_set_privileged_keys() {
    let env = TestEnv::new();
    let img = env.busybox("priv");
    let d = img.to_str().unwrap();
    std::fs::write(img.join("etc/secret"), "secret").unwrap();
    let shared = env.dir.join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::write(shared.join("file"), "from-host\n").unwrap();
    let rows = privileged_rows(&shared);
    for (i, row) in rows.iter().enumerate() {
        // One machine (and file) name per row and trust.
        for trusted in [false, true] {
            let name = format!("priv{i}{}", if trusted { "t" } else { "u" });
            let dir = if trusted {
                env.settings_dir()
            } else {
                img.parent().unwrap().to_path_buf()
            };
            let path = write_settings(&dir, &name, &row.text);
            let config = if row.text.contains("Port=") {
                ""
            } else {
                "--network-config=none"
            };
            // In the image: a --bind= would mask the file's [Files] group.
            std::fs::write(img.join("probe"), &row.probe).unwrap();
            let r = env.sh(
                &format!(
                    "IMG={d}\n{setup}\nHOSTNS=$(readlink /proc/self/ns/net)\n\
                     $NETSPAWN -q -D {d} -M {name} {config} -E HOSTNS=$HOSTNS \
                     /bin/sh /probe; rc=$?\nwait\nexit $rc",
                    setup = row.setup,
                ),
                60,
            );
            let what = format!(
                "{:?} ({})",
                row.text,
                if trusted { "trusted" } else { "untrusted" }
            );
            let expected = if trusted {
                &row.trusted
            } else {
                &row.untrusted
            };
            match expected {
                Outcome::Refused(needle) => {
                    r.expect_error(needle);
                }
                Outcome::Out(want) => {
                    assert_eq!(r.status, Some(0), "{what}: {}\n{}", r.stdout, r.stderr);
                    if want.is_empty() {
                        // An untrusted limit: the payload has some other one.
                        assert!(r.stdout.starts_with("unset"), "{what}: {}", r.stdout);
                    } else {
                        assert_eq!(&r.stdout, want, "{what}: {}", r.stderr);
                    }
                    let w = warnings(&r.stderr);
                    if trusted || row.warning.is_empty() {
                        assert!(w.is_empty(), "{what}: {w:?}");
                    } else {
                        let at = path.display().to_string();
                        let mine = |l: &&str| {
                            l.contains(&at)
                                && (l.contains("not trusted") || l.contains("not supported"))
                        };
                        assert!(w.iter().all(mine), "{what}: {w:?}");
                        assert!(
                            w.iter().any(|l| l.contains(row.warning)),
                            "{what}: no warning about {}: {w:?}",
                            row.warning
                        );
                        let expected = if row.warning == "Port=" { 2 } else { 1 };
                        assert_eq!(w.len(), expected, "{what}: {w:?}");
                    }
                }
            }
            check_clean(&env);
        }
    }
}
