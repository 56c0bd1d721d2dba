//! Many machines from one image (issue 10, items 1 and 2): `-x` runs on a
//! throw-away overlay whose directory vanishes when the machine ends (also
//! after `kill -9`), twenty at once, the image never modified;
//! `--volatile=` modes; and the refusals, which leave nothing behind.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use netspawn_tests::*;

/// Everything about a tree that a write could change: one line per entry
/// (path, type and mode, owner, size, mtime, link target or contents).
fn tree_digest(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        entries.sort();
        for p in entries {
            let md = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let what = if md.file_type().is_symlink() {
                std::fs::read_link(&p).unwrap().display().to_string()
            } else if md.is_file() {
                format!("{:?}", std::fs::read(&p).unwrap().len())
                    + &String::from_utf8_lossy(&std::fs::read(&p).unwrap())
                        .chars()
                        .take(64)
                        .collect::<String>()
            } else {
                String::new()
            };
            out.push(format!(
                "{rel} {:o} {}:{} {} {} {what}",
                md.mode(),
                md.uid(),
                md.gid(),
                md.size(),
                md.mtime()
            ));
            if md.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out
}

/// The hidden `.#` entries beside the images (ephemeral layers).
fn hidden(env: &TestEnv) -> Vec<String> {
    std::fs::read_dir(env.image_dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".#"))
        .collect()
}

#[test]
fn ephemeral_writes_vanish_and_the_image_stays_as_it_was() {
    let env = TestEnv::new();
    let img = env.busybox("eph");
    let before = tree_digest(&img);
    let d = img.to_str().unwrap();
    let r = env.netspawn(&[
        "-q",
        "-x",
        "-D",
        d,
        "/bin/sh",
        "-c",
        "echo changed > /etc/hostname; echo new > /new; rm /etc/hosts; mkdir /var/d; \
         chmod 700 /root; cat /new; hostname; grep -c '^overlay / ' /proc/self/mounts; ls -a / | grep -c '#'; true",
    ]);
    r.expect_status(0);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines[0], "new", "{}", r.stdout);
    // Without -M, the name gets 16 random hex digits (as systemd's).
    let host = lines[1];
    let suffix = host
        .strip_prefix("eph-")
        .unwrap_or_else(|| panic!("{host}"));
    assert_eq!(suffix.len(), 16, "{host}");
    assert!(suffix.bytes().all(|b| b.is_ascii_hexdigit()), "{host}");
    assert_eq!(lines[2], "1", "root is an overlay: {}", r.stdout);
    assert_eq!(lines[3], "0", "the layer is not visible inside");
    assert_eq!(tree_digest(&img), before, "the image changed");
    assert!(hidden(&env).is_empty(), "{:?}", hidden(&env));
    assert!(env.registry_names().is_empty());
    // The image is free for a normal, writable launch afterwards.
    env.netspawn(&["-q", "-D", d, "/bin/sh", "-c", "touch /after"])
        .expect_status(0);
    assert!(img.join("after").exists());
    // -M names the machine exactly; an ephemeral machine's own writes are
    // its own across the payload's processes.
    let r = env.netspawn(&[
        "-q",
        "-x",
        "-M",
        "named",
        "-D",
        d,
        "/bin/sh",
        "-c",
        "hostname; echo x > /tmp2; sh -c 'cat /tmp2'",
    ]);
    r.expect_status(0);
    assert_eq!(r.stdout, "named\nx\n");
    assert!(!img.join("tmp2").exists());
}

#[test]
fn twenty_ephemeral_machines_of_one_image_run_at_once() {
    let env = TestEnv::new();
    let img = env.busybox("many");
    let before = tree_digest(&img);
    let ctl = env.hold_dir();
    let r = env.sh(
        &format!(
            r#"for i in $(seq 20); do
                 $NETSPAWN -q -x --bind={ctl}:/ctl -D {img} /bin/sh -c 'hostname > /mine; {HOLD}; cat /mine' &
               done
               for t in $(seq 1200); do
                 [ $(ls $NETSPAWN_RUN_DIR/machines | grep -c '^many-') -ge 20 ] && break; sleep 0.05
               done
               echo running=$(ls $NETSPAWN_RUN_DIR/machines | grep -c '^many-')
               echo layers=$(ls -a {images} | grep -c '^\.#machine\.many')
               $NETSPAWN -q -D {img} /bin/true; echo writable-rc=$?
               touch {ctl}/stop
               fails=0
               for j in $(jobs -p); do wait $j || fails=$((fails+1)); done
               echo fails=$fails
               echo left=$(ls -a {images} | grep -c '^\.#')"#,
            ctl = ctl.display(),
            img = img.display(),
            images = env.image_dir().display(),
        ),
        240,
    );
    let out = &r.stdout;
    assert!(out.contains("running=20\n"), "{out}\n{}", r.stderr);
    assert!(out.contains("layers=20\n"), "{out}");
    // While they run, the image is shared: a writable launch is turned away.
    assert!(out.contains("writable-rc=1\n"), "{out}");
    assert!(r.stderr.contains("is currently busy"), "{}", r.stderr);
    assert!(out.contains("fails=0\n"), "{out}\n{}", r.stderr);
    assert!(out.contains("left=0\n"), "{out}");
    // Each saw its own /mine: twenty different names.
    let mut names: Vec<&str> = out.lines().filter(|l| l.starts_with("many-")).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 20, "{out}");
    assert_eq!(tree_digest(&img), before);
    assert!(env.registry_names().is_empty());
    env.netspawn(&["-q", "-D", img.to_str().unwrap(), "/bin/true"])
        .expect_status(0);
}

#[test]
fn kill_9_of_an_ephemeral_launcher_leaves_no_layer() {
    let env = TestEnv::new();
    let img = env.busybox("k9");
    let before = tree_digest(&img);
    let ctl = env.hold_dir();
    let r = env.sh(
        &format!(
            r#"$NETSPAWN -q -x -M k9 --bind={ctl}:/ctl -D {img} /bin/sh -c 'echo data > /junk; mkdir -p /a/b/c; {HOLD}' &
               pid=$!
               for t in $(seq 1200); do grep -qs ^LEADER= $NETSPAWN_RUN_DIR/machines/k9 && break; sleep 0.05; done
               echo layers=$(ls -a {images} | grep -c '^\.#machine\.k9')
               kill -9 $pid
               for t in $(seq 600); do [ $(ls -a {images} | grep -c '^\.#') = 0 ] && break; sleep 0.05; done
               echo left=$(ls -a {images} | grep -c '^\.#')"#,
            ctl = ctl.display(),
            img = img.display(),
            images = env.image_dir().display(),
        ),
        120,
    );
    assert!(
        r.stdout.contains("layers=1\n"),
        "{}\n{}",
        r.stdout,
        r.stderr
    );
    assert!(r.stdout.contains("left=0\n"), "{}\n{}", r.stdout, r.stderr);
    assert_eq!(tree_digest(&img), before);
    // The image is free again (the container died with the launcher).
    env.netspawn(&["-q", "-D", img.to_str().unwrap(), "/bin/true"])
        .expect_status(0);
}

#[test]
fn ephemeral_with_a_user_namespace_maps_the_image() {
    let env = TestEnv::new();
    let img = env.busybox("ephu");
    let before = tree_digest(&img);
    let r = env.netspawn(&[
        "-q",
        "-U",
        "--private-network",
        "-x",
        "-D",
        img.to_str().unwrap(),
        "/bin/sh",
        "-c",
        "echo x > /etc/new; stat -c '%u %g' / /etc/passwd /etc/new; awk '{print $2}' /proc/self/uid_map",
    ]);
    r.expect_status(0);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(&lines[..3], ["0 0", "0 0", "0 0"], "{}", r.stdout);
    assert_ne!(lines[3], "0", "a user namespace: {}", r.stdout);
    assert_eq!(tree_digest(&img), before, "the image changed (chowned?)");
    assert!(hidden(&env).is_empty());
}

/// A busybox image with merged /usr (/bin a symlink to usr/bin), as
/// `--volatile=yes` needs.
fn merged_usr_image(env: &TestEnv, name: &str) -> PathBuf {
    let img = env.busybox(name);
    let usr_bin = img.join("usr/bin");
    std::fs::create_dir_all(&usr_bin).unwrap();
    for e in std::fs::read_dir(img.join("bin")).unwrap().flatten() {
        let to = usr_bin.join(e.file_name());
        if !to.exists() {
            std::fs::rename(e.path(), to).unwrap();
        }
    }
    std::fs::remove_dir_all(img.join("bin")).unwrap();
    std::os::unix::fs::symlink("usr/bin", img.join("bin")).unwrap();
    img
}

#[test]
fn volatile_modes() {
    let env = TestEnv::new();
    let img = env.busybox("vol");
    let d = img.to_str().unwrap();
    let before = tree_digest(&img);
    // state: the image read-only, a fresh /var.
    let r = env.netspawn(&[
        "-q",
        "--volatile=state",
        "-D",
        d,
        "/bin/sh",
        "-c",
        "echo v > /var/v && cat /var/v; touch /etc/x 2>/dev/null && echo etc-rw || echo etc-ro; \
         grep ' /var ' /proc/self/mounts | cut -d' ' -f3",
    ]);
    r.expect_status(0);
    assert_eq!(r.stdout, "v\netc-ro\ntmpfs\n", "{}", r.stderr);
    // overlay: everything writable, in memory.
    let r = env.netspawn(&[
        "-q",
        "--volatile=overlay",
        "-D",
        d,
        "/bin/sh",
        "-c",
        "echo e > /etc/e && cat /etc/e; rm /etc/hosts && echo removed; stat -c %a /; \
         grep '^overlay / ' /proc/self/mounts | cut -d' ' -f3",
    ]);
    r.expect_status(0);
    let mode = format!("{:o}", std::fs::metadata(&img).unwrap().mode() & 0o7777);
    assert_eq!(
        r.stdout,
        format!("e\nremoved\n{mode}\noverlay\n"),
        "{}",
        r.stderr
    );
    // Volatile= in a trusted file means the same.
    std::fs::write(
        env.settings_dir().join("vol.nspawn"),
        "[Files]\nVolatile=state\n",
    )
    .unwrap();
    let r = env.netspawn(&[
        "-q",
        "-D",
        d,
        "/bin/sh",
        "-c",
        "touch /etc/x 2>/dev/null && echo etc-rw || echo etc-ro",
    ]);
    r.expect_status(0);
    assert_eq!(r.stdout, "etc-ro\n");
    std::fs::remove_file(env.settings_dir().join("vol.nspawn")).unwrap();
    assert_eq!(tree_digest(&img), before);

    // yes: a tmpfs root with only the image's /usr, read-only.
    let mu = merged_usr_image(&env, "volyes");
    let before = tree_digest(&mu);
    let r = env.netspawn(&[
        "-q",
        "--volatile=yes",
        "-D",
        mu.to_str().unwrap(),
        "sh",
        "-c",
        "ls /; echo n > /n && cat /n; touch /usr/x 2>/dev/null && echo usr-rw || echo usr-ro; \
         grep ' / ' /proc/self/mounts | cut -d' ' -f3",
    ]);
    r.expect_status(0);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert!(
        !lines.contains(&"etc"),
        "only /usr of the image: {}",
        r.stdout
    );
    assert!(lines.contains(&"usr"), "{}", r.stdout);
    assert!(r.stdout.ends_with("n\nusr-ro\ntmpfs\n"), "{}", r.stdout);
    assert_eq!(tree_digest(&mu), before);
}

#[test]
fn refusals_leave_nothing_behind() {
    let env = TestEnv::new();
    let img = env.busybox("ref");
    let d = img.to_str().unwrap();
    let tpl = env.busybox("tpl");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "-x".into(),
                format!("--template={}", tpl.display()),
                "-D".into(),
                d.into(),
            ],
            "--ephemeral and --template= may not be combined",
        ),
        (
            vec![
                "-x".into(),
                "-U".into(),
                "--private-users-ownership=chown".into(),
                "-D".into(),
                d.into(),
            ],
            "--ephemeral and --private-users-ownership=chown may not be combined",
        ),
        (
            vec![
                "--volatile=state".into(),
                "-U".into(),
                "--private-users-ownership=chown".into(),
                "-D".into(),
                d.into(),
            ],
            "--volatile= and --private-users-ownership=chown may not be combined",
        ),
        (
            vec!["--volatile=yes".into(), "-D".into(), d.into()],
            "merged /bin",
        ),
        (
            vec!["--volatile=sometimes".into(), "-D".into(), d.into()],
            "--volatile",
        ),
    ];
    for (args, needle) in cases {
        let mut a: Vec<String> = vec!["-q".into()];
        a.extend(args);
        a.push("/bin/true".into());
        env.netspawn(&a).expect_error(needle);
        assert!(hidden(&env).is_empty(), "{needle}: {:?}", hidden(&env));
        assert!(env.registry_names().is_empty(), "{needle}");
    }
    assert!(env.leftover_cgroups().is_empty());
}

#[test]
fn overlays_with_systemds_colon_syntax() {
    let env = TestEnv::new();
    let img = env.busybox("ovl");
    // (Mount points are made in a writable image, as for binds.)
    for d in ["o", "r", "t", "f"] {
        std::fs::create_dir_all(img.join("mnt").join(d)).unwrap();
    }
    let before = tree_digest(&img);
    let lower = env.dir.join("lo:wer");
    let upper = env.dir.join("upper");
    std::fs::create_dir_all(&lower).unwrap();
    std::fs::write(lower.join("l"), "from-lower\n").unwrap();
    let esc = |p: &Path| p.display().to_string().replace(':', "\\:");
    let r = env.netspawn(&[
        "-q".into(),
        format!("--overlay={}:{}:/mnt/o", esc(&lower), esc(&upper)),
        "--overlay=+/etc::/mnt/t".into(),
        format!("--overlay-ro=+/etc:{}:/mnt/r", esc(&lower)),
        "-D".into(),
        img.display().to_string(),
        "/bin/sh".into(),
        "-c".into(),
        "cat /mnt/o/l; echo w > /mnt/o/w; echo t > /mnt/t/t && cat /mnt/t/t; \
         [ -e /mnt/t/passwd ] && echo etc-below; cat /mnt/r/l; [ -e /mnt/r/passwd ] && echo both; \
         touch /mnt/r/x 2>/dev/null || echo ro"
            .into(),
    ]);
    r.expect_status(0);
    assert_eq!(
        r.stdout, "from-lower\nt\netc-below\nfrom-lower\nboth\nro\n",
        "{}",
        r.stderr
    );
    // The upper keeps the writes; the lower and the image do not; the work
    // directory beside the upper is gone.
    assert_eq!(std::fs::read_to_string(upper.join("w")).unwrap(), "w\n");
    assert!(!lower.join("w").exists());
    assert_eq!(tree_digest(&img), before);
    let left: Vec<_> = std::fs::read_dir(&env.dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".#"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // Overlay= in a trusted file.
    std::fs::write(
        env.settings_dir().join("ovl.nspawn"),
        format!("[Files]\nOverlayReadOnly={}:/mnt/f\n", esc(&lower)),
    )
    .unwrap();
    let r = env.netspawn(&["-q", "-D", img.to_str().unwrap(), "/bin/cat", "/mnt/f/l"]);
    r.expect_status(0);
    assert_eq!(r.stdout, "from-lower\n");
    std::fs::remove_file(env.settings_dir().join("ovl.nspawn")).unwrap();
    // Malformed specs and a missing lower: one line, nothing made.
    for (spec, needle) in [
        ("--overlay=/a", "at least two"),
        ("--overlay=rel:/b", "invalid overlay mount"),
        ("--overlay=/a:/b:rel", "invalid overlay mount"),
        ("--overlay=/a\\", "invalid overlay mount"),
        ("--overlay=/nonexistent-lower:+/u:/m", "/nonexistent-lower"),
    ] {
        env.netspawn(&["-q", spec, "-D", img.to_str().unwrap(), "/bin/true"])
            .expect_error(needle);
    }
    assert_eq!(tree_digest(&img), before);
    assert!(env.registry_names().is_empty());
}

#[test]
fn template_makes_a_faithful_copy_once_and_keeps_it() {
    let env = TestEnv::new();
    let tpl = env.busybox("tpl");
    // Owners, modes, a hard link, a device node, a sparse file, an xattr.
    let f = tpl.join("etc/owned");
    std::fs::write(&f, "owned\n").unwrap();
    std::os::unix::fs::chown(&f, Some(1234), Some(4321)).unwrap();
    std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o4710)).unwrap();
    std::fs::hard_link(&f, tpl.join("etc/owned-link")).unwrap();
    let sparse = std::fs::File::create(tpl.join("sparse")).unwrap();
    sparse.set_len(256 << 20).unwrap();
    drop(sparse);
    let r = env.sh(
        &format!(
            "mknod {t}/dev/null-copy c 1 3 && setfattr -n user.k -v v {t}/etc/owned 2>/dev/null; true",
            t = tpl.display()
        ),
        30,
    );
    r.expect_status(0);
    let new = env.image_dir().join("fromtpl");
    let r = env.netspawn(&[
        "--template".into(),
        tpl.display().to_string(),
        "-M".into(),
        "fromtpl".into(),
        "/bin/sh".into(),
        "-c".into(),
        "echo mine > /mine".into(),
    ]);
    r.expect_status(0);
    assert!(
        r.stderr.contains(&format!(
            "Populated {} from template {}.",
            new.display(),
            tpl.display()
        )),
        "{}",
        r.stderr
    );
    let md = |p: &Path| std::fs::symlink_metadata(p).unwrap();
    let o = md(&new.join("etc/owned"));
    assert_eq!((o.uid(), o.gid(), o.mode() & 0o7777), (1234, 4321, 0o4710));
    assert_eq!(md(&new.join("etc/owned-link")).ino(), o.ino());
    assert_eq!(
        md(&new.join("dev/null-copy")).rdev(),
        md(Path::new("/dev/null")).rdev()
    );
    let s = md(&new.join("sparse"));
    assert_eq!(s.size(), 256 << 20);
    assert!(s.blocks() < 1024, "{} blocks", s.blocks());
    assert!(new.join("mine").exists(), "NEW is kept");
    assert!(!tpl.join("mine").exists());
    // Once there and not empty, NEW is run as it is.
    let r = env.netspawn(&[
        "--template".into(),
        tpl.display().to_string(),
        "-M".into(),
        "fromtpl".into(),
        "/bin/cat".into(),
        "/mine".into(),
    ]);
    r.expect_status(0);
    assert_eq!(r.stdout, "mine\n");
    assert!(
        r.stderr.contains("already exists, not populating"),
        "{}",
        r.stderr
    );
    // A template that is not there: one line, no NEW, nothing hidden.
    env.netspawn(&[
        "-q".into(),
        format!("--template={}", env.dir.join("nope").display()),
        "-M".into(),
        "other".into(),
        "/bin/true".into(),
    ])
    .expect_error("not a directory");
    assert!(!env.image_dir().join("other").exists());
    assert!(hidden(&env).is_empty());
    env.netspawn(&["-q", "--template=/x", "/bin/true"])
        .expect_error("--template= needs --directory= or --machine=");
}

#[test]
fn on_btrfs_ephemeral_and_template_are_snapshots() {
    let env = TestEnv::new();
    if !have("mkfs.btrfs") || !have("btrfs") {
        skip(
            "btrfs snapshots",
            "mkfs.btrfs/btrfs not installed (btrfs-progs)",
        );
        return;
    }
    let bb = env.busybox("src");
    let r = env.sh(
        &format!(
            r#"set -e
               truncate -s 300M {d}/bt.img
               mkfs.btrfs -q -f {d}/bt.img >/dev/null 2>&1
               mkdir -p {d}/bt
               mount -o loop {d}/bt.img {d}/bt || {{ echo NOLOOP; exit 0; }}
               btrfs -q subvolume create {d}/bt/img
               cp -a {bb}/. {d}/bt/img/
               $NETSPAWN -q -x -D {d}/bt/img /bin/sh -c 'echo x > /x; grep " / " /proc/self/mounts | cut -d" " -f3'
               echo left=$(ls -a {d}/bt | grep -c '^\.#' || true)
               [ -e {d}/bt/img/x ] && echo image-changed || echo image-same
               $NETSPAWN -q --template={d}/bt/img -D {d}/bt/new /bin/true
               btrfs subvolume show {d}/bt/new >/dev/null 2>&1 && echo new-is-subvolume
               # The file system may stay busy for a moment after the last
               # launcher is gone on a loaded machine (seen once in CI): poll.
               for t in $(seq 150); do umount {d}/bt 2>/dev/null && break; sleep 0.2; done
               if mountpoint -q {d}/bt; then umount {d}/bt; fi"#,
            d = env.dir.display(),
            bb = bb.display(),
        ),
        120,
    );
    if r.stdout.contains("NOLOOP") {
        skip("btrfs snapshots", "no loop device here");
        return;
    }
    r.expect_status(0);
    assert_eq!(
        r.stdout, "btrfs\nleft=0\nimage-same\nnew-is-subvolume\n",
        "{}",
        r.stderr
    );
    let _ = std::fs::remove_file(env.dir.join("bt.img"));
}

/// The registry's leader of `name`, if registered.
fn leader_of(env: &TestEnv, name: &str) -> Option<u32> {
    let text = std::fs::read_to_string(env.run_dir().join("machines").join(name)).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("LEADER="))
        .and_then(|l| l.parse().ok())
}

fn wait_shell(env: &TestEnv, name: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        if env.ctl(&["shell", name, "/bin/true"]).status == Some(0) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("machine {name} never answered");
}

#[test]
fn an_ephemeral_guest_keeps_its_layer_across_a_reboot() {
    use std::time::{Duration, Instant};
    let env = TestEnv::new();
    let img = env.busybox("xboot");
    let before = tree_digest(&img);
    let mut child = env.spawn(&["-q", "-x", "-b", "-M", "xb", "-D", img.to_str().unwrap()]);
    let first = env
        .wait_registered("xb", Duration::from_secs(10))
        .expect("registered");
    wait_shell(&env, "xb");
    env.ctl(&["shell", "xb", "/bin/sh", "-c", "echo kept > /kept"])
        .expect_status(0);
    env.ctl(&["reboot", "xb"]).expect_status(0);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match leader_of(&env, "xb") {
            Some(l) if l != first => break,
            _ if Instant::now() > deadline => panic!("no reboot"),
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    wait_shell(&env, "xb");
    let r = env.ctl(&["shell", "xb", "/bin/cat", "/kept"]);
    assert_eq!(r.stdout, "kept\n", "{}", r.stderr);
    env.ctl(&["poweroff", "xb"]).expect_status(0);
    assert_eq!(wait_timeout(&mut child, Duration::from_secs(20)), Some(0));
    assert!(hidden(&env).is_empty(), "{:?}", hidden(&env));
    assert_eq!(tree_digest(&img), before);
}
