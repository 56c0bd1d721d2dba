//! Images and machine verbs of netspawnctl: tarballs in and out (round trips
//! keep owners, modes, symlinks, device nodes, hard links), hostile
//! archives, pull-tar from a small HTTP server on loopback that the test
//! runs (checksums right and wrong, 404, truncated, not a tarball, SIGINT),
//! clone/rename/remove/read-only/clean, and bind/copy-to/copy-from into a
//! running machine through a symlink of the machine's that points at /etc.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use netspawn_tests::*;

/// What the test server answers for a path.
#[derive(Clone)]
enum Reply {
    /// 200 with this body.
    Ok(Vec<u8>),
    /// 200 announcing `len` bytes, sending `body`, then closing.
    Short { body: Vec<u8>, len: usize },
    /// 200 announcing `len` bytes, sending `body`, then stalling.
    Stall { body: Vec<u8>, len: usize },
}

/// A tiny HTTP/1.1 server on 127.0.0.1 (one connection at a time, each
/// closed after one answer); unknown paths get 404. Stops with the test
/// process.
struct Server {
    port: u16,
    files: Arc<Mutex<BTreeMap<String, Reply>>>,
}

impl Server {
    fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let files: Arc<Mutex<BTreeMap<String, Reply>>> = Arc::default();
        let f = files.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let f = f.clone();
                std::thread::spawn(move || serve(conn, &f));
            }
        });
        Server { port, files }
    }

    fn put(&self, path: &str, reply: Reply) {
        self.files.lock().unwrap().insert(path.to_string(), reply);
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

fn serve(mut conn: TcpStream, files: &Mutex<BTreeMap<String, Reply>>) {
    conn.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&req);
    let path = text.split_whitespace().nth(1).unwrap_or("/").to_string();
    let reply = files.lock().unwrap().get(&path).cloned();
    let head = |len: usize| {
        format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n")
    };
    match reply {
        None => {
            let _ = conn.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found",
            );
        }
        Some(Reply::Ok(body)) => {
            let _ = conn.write_all(head(body.len()).as_bytes());
            let _ = conn.write_all(&body);
        }
        Some(Reply::Short { body, len }) => {
            let _ = conn.write_all(head(len).as_bytes());
            let _ = conn.write_all(&body);
        }
        Some(Reply::Stall { body, len }) => {
            let _ = conn.write_all(head(len).as_bytes());
            let _ = conn.write_all(&body);
            std::thread::sleep(Duration::from_secs(30));
        }
    }
}

fn sha256(path: &Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Every entry below `root`: mode, owner, type, device, link target and
/// whether it shares its inode with an earlier entry.
fn listing(root: &Path) -> BTreeMap<String, String> {
    fn walk(
        root: &Path,
        dir: &Path,
        inodes: &mut BTreeMap<u64, String>,
        out: &mut BTreeMap<String, String>,
    ) {
        let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let link = std::fs::read_link(&p)
                .map(|t| t.display().to_string())
                .unwrap_or_default();
            let same = if m.is_file() && m.nlink() > 1 {
                match inodes.get(&m.ino()) {
                    Some(first) => format!("link to {first}"),
                    None => {
                        inodes.insert(m.ino(), rel.clone());
                        String::new()
                    }
                }
            } else {
                String::new()
            };
            let size = if m.is_file() { m.len() } else { 0 };
            out.insert(
                rel,
                format!(
                    "{:o} {}:{} rdev={} size={size} {link} {same}",
                    m.mode(),
                    m.uid(),
                    m.gid(),
                    m.rdev()
                ),
            );
            if m.is_dir() {
                walk(root, &p, inodes, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut BTreeMap::new(), &mut out);
    out
}

/// Hidden leftovers in the image directory.
fn hidden(env: &TestEnv) -> Vec<String> {
    std::fs::read_dir(env.image_dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect()
}

fn run(cmd: &str, args: &[&str]) {
    let st = std::process::Command::new(cmd).args(args).status().unwrap();
    assert!(st.success(), "{cmd} {args:?}");
}

/// A busybox image with a device node, a FIFO, a hard link, odd owners and
/// modes, a set-user-ID file, an xattr and a dangling absolute symlink.
fn rich_image(env: &TestEnv, name: &str) -> PathBuf {
    let img = env.busybox(name);
    let p = |r: &str| img.join(r).display().to_string();
    std::fs::create_dir_all(img.join("dev")).unwrap();
    run("mknod", &[&p("dev/null"), "c", "1", "3"]);
    run("mknod", &[&p("dev/loopx"), "b", "7", "200"]);
    run("mkfifo", &[&p("fifo")]);
    std::fs::write(img.join("data"), b"payload").unwrap();
    std::fs::hard_link(img.join("data"), img.join("data-link")).unwrap();
    std::os::unix::fs::chown(img.join("data"), Some(1234), Some(4321)).unwrap();
    std::fs::set_permissions(img.join("data"), std::fs::Permissions::from_mode(0o4750)).unwrap();
    std::fs::create_dir(img.join("sticky")).unwrap();
    std::fs::set_permissions(img.join("sticky"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::os::unix::fs::symlink("/nowhere/at/all", img.join("dangling")).unwrap();
    let path = std::ffi::CString::new(p("data")).unwrap();
    // SAFETY: NUL-terminated path, name and a 5-byte value.
    let r = unsafe {
        libc::setxattr(
            path.as_ptr(),
            c"user.netspawn".as_ptr(),
            b"hello".as_ptr().cast(),
            5,
            0,
        )
    };
    assert_eq!(r, 0, "setxattr: {}", std::io::Error::last_os_error());
    img
}

fn xattr(path: &Path) -> Vec<u8> {
    let p = std::ffi::CString::new(path.display().to_string()).unwrap();
    let mut buf = [0u8; 64];
    // SAFETY: NUL-terminated strings and a writable buffer.
    let n = unsafe {
        libc::getxattr(
            p.as_ptr(),
            c"user.netspawn".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Vec::new();
    }
    buf[..n as usize].to_vec()
}

#[test]
fn export_and_import_keep_owners_modes_links_and_devices() {
    let env = TestEnv::new();
    let img = rich_image(&env, "rich");
    let want = listing(&img);
    for suffix in ["tar", "tar.gz", "tar.xz", "tar.zst"] {
        let file = env.dir.join(format!("rich.{suffix}"));
        env.ctl(&["export-tar", "rich", file.to_str().unwrap()])
            .expect_status(0);
        let name = format!("back-{}", suffix.replace('.', "-"));
        env.ctl(&["import-tar", file.to_str().unwrap(), &name])
            .expect_status(0);
        let back = env.image_dir().join(&name);
        assert_eq!(listing(&back), want, "{suffix}");
        assert_eq!(xattr(&back.join("data")), b"hello", "{suffix}");
        assert_eq!(std::fs::read(back.join("data")).unwrap(), b"payload");
    }
    // GNU tar reads what we write (and keeps the same tree).
    let gnu = env.dir.join("gnu");
    std::fs::create_dir(&gnu).unwrap();
    let tarball = env.dir.join("rich.tar.gz");
    run(
        "tar",
        &[
            "-C",
            gnu.to_str().unwrap(),
            "--numeric-owner",
            "-xpzf",
            tarball.to_str().unwrap(),
        ],
    );
    assert_eq!(listing(&gnu), want);
    // And we read what GNU tar writes, from standard input.
    let from_gnu = env.dir.join("gnu.tar.xz");
    run(
        "tar",
        &[
            "-C",
            img.to_str().unwrap(),
            "--numeric-owner",
            "-cJf",
            from_gnu.to_str().unwrap(),
            ".",
        ],
    );
    let out = env
        .ctl_cmd(&["import-tar", "-", "from-gnu"], 60)
        .stdin(std::fs::File::open(&from_gnu).unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(listing(&env.image_dir().join("from-gnu")), want);
    // export-tar to standard output is a plain tar.
    let out = env
        .ctl_cmd(&["export-tar", "rich", "-"], 60)
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(&out.stdout[257..262], b"ustar");
    // A name that exists, an invalid name, a file that is not a tarball.
    let file = env.dir.join("rich.tar");
    env.ctl(&["import-tar", file.to_str().unwrap(), "rich"])
        .expect_error("Image 'rich' already exists");
    env.ctl(&["import-tar", file.to_str().unwrap(), "bad_name"])
        .expect_error("Invalid machine name 'bad_name'");
    let junk = env.dir.join("junk.tar.gz");
    std::fs::write(&junk, b"<html>this is no tarball</html>\n".repeat(40)).unwrap();
    env.ctl(&["import-tar", junk.to_str().unwrap(), "junk"])
        .expect_error("not a tar archive");
    env.ctl(&[
        "export-tar",
        "nope",
        env.dir.join("x.tar").to_str().unwrap(),
    ])
    .expect_error("No image 'nope' known");
    assert!(hidden(&env).is_empty(), "{:?}", hidden(&env));
    assert!(!env.image_dir().join("junk").exists());
}

/// A ustar archive of (name, type flag, link target, data) entries.
fn ustar(entries: &[(&str, u8, &str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, ty, link, data) in entries {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..107].copy_from_slice(b"0000644");
        h[108..115].copy_from_slice(b"0000000");
        h[116..123].copy_from_slice(b"0000000");
        h[124..135].copy_from_slice(format!("{:011o}", data.len()).as_bytes());
        h[136..147].copy_from_slice(b"00000000000");
        h[156] = *ty;
        h[157..157 + link.len()].copy_from_slice(link.as_bytes());
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

#[test]
fn hostile_tarballs_are_refused_or_contained() {
    let env = TestEnv::new();
    let outside = env.dir.join("outside");
    std::fs::create_dir(&outside).unwrap();
    let out = outside.display().to_string();

    // `..` anywhere: refused, nothing left.
    let t = env.dir.join("dotdot.tar");
    std::fs::write(
        &t,
        ustar(&[
            ("ok", b'0', "", b"fine"),
            ("a/../../../evil", b'0', "", b"evil"),
        ]),
    )
    .unwrap();
    env.ctl(&["import-tar", t.to_str().unwrap(), "dotdot"])
        .expect_error("leads out of the image");
    assert!(!env.image_dir().join("dotdot").exists());
    assert!(!env.dir.join("evil").exists());
    // A hard link to a file outside (by `..`): refused.
    let t = env.dir.join("hardlink.tar");
    std::fs::write(
        &t,
        ustar(&[("hl", b'1', "../../../../../../etc/passwd", b"")]),
    )
    .unwrap();
    env.ctl(&["import-tar", t.to_str().unwrap(), "hl"])
        .expect_error("leads out of the image");
    // Absolute names and a symlink to a host directory followed by a file
    // "through" it: contained in the image.
    let t = env.dir.join("contained.tar");
    let abs_link = format!("{out}/x");
    std::fs::write(
        &t,
        ustar(&[
            ("/abs", b'0', "", b"abs"),
            ("esc", b'2', &out, b""),
            ("esc/file", b'0', "", b"through the link"),
            ("abshl", b'1', "/abs", b""),
            ("etc/", b'5', "", b""),
            ("conf", b'2', "/etc", b""),
            ("conf/netspawn-test-escape", b'0', "", b"x"),
            (&abs_link[1..], b'0', "", b"y"),
        ]),
    )
    .unwrap();
    env.ctl(&["import-tar", t.to_str().unwrap(), "contained"])
        .expect_status(0);
    let img = env.image_dir().join("contained");
    assert_eq!(std::fs::read(img.join("abs")).unwrap(), b"abs");
    assert_eq!(
        std::fs::metadata(img.join("abshl")).unwrap().ino(),
        std::fs::metadata(img.join("abs")).unwrap().ino()
    );
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing may land outside the image"
    );
    assert!(!Path::new("/etc/netspawn-test-escape").exists());
    // What went "through" the symlinks landed at the targets inside the image.
    let inside = img.join(out.trim_start_matches('/'));
    assert_eq!(
        std::fs::read(inside.join("file")).unwrap(),
        b"through the link"
    );
    assert!(img.join("etc/netspawn-test-escape").exists());
    assert!(hidden(&env).is_empty(), "{:?}", hidden(&env));
}

#[test]
fn pull_tar_over_http_checks_and_leaves_nothing_behind() {
    let env = TestEnv::new();
    env.busybox("src");
    let tarball = env.dir.join("web.tar.gz");
    env.ctl(&["export-tar", "src", tarball.to_str().unwrap()])
        .expect_status(0);
    let bytes = std::fs::read(&tarball).unwrap();
    let sum = sha256(&tarball);
    let srv = Server::start();
    srv.put("/good/web.tar.gz", Reply::Ok(bytes.clone()));
    srv.put(
        "/good/SHA256SUMS",
        Reply::Ok(format!("{sum} *web.tar.gz\n").into_bytes()),
    );
    srv.put("/bad/web.tar.gz", Reply::Ok(bytes.clone()));
    srv.put(
        "/bad/SHA256SUMS",
        Reply::Ok(format!("{} *web.tar.gz\n", "0".repeat(64)).into_bytes()),
    );
    srv.put(
        "/cut/web.tar.gz",
        Reply::Short {
            body: bytes[..bytes.len() / 2].to_vec(),
            len: bytes.len(),
        },
    );
    srv.put(
        "/page/index.tar",
        Reply::Ok(b"<!DOCTYPE html><html>hello</html>\n".repeat(30)),
    );

    // Good checksum: the image is there and runs.
    let r = env.ctl(&[
        "pull-tar",
        "--verify=checksum",
        &srv.url("/good/web.tar.gz"),
    ]);
    r.expect_status(0);
    assert!(r.stderr.contains("Got 100% of web.tar.gz"), "{}", r.stderr);
    assert_eq!(
        listing(&env.image_dir().join("web")),
        listing(&env.image_dir().join("src"))
    );
    let run = env.netspawn(&["-q", "-M", "web", "/bin/echo", "pulled"]);
    run.expect_status(0);
    assert_eq!(run.stdout.trim(), "pulled");
    // The name exists now.
    env.ctl(&["pull-tar", "--verify=no", &srv.url("/good/web.tar.gz")])
        .expect_error("Image 'web' already exists");
    // Bad input: one line, exit 1, nothing left.
    let cases = [
        ("/bad/web.tar.gz", "checksum", "does not match"),
        ("/cut/web.tar.gz", "no", "truncated"),
        ("/nope/web.tar.gz", "no", "HTTP status 404"),
        ("/page/index.tar", "no", "not a tar archive"),
        ("/cut/web.tar.gz", "checksum", "SHA256SUMS"),
    ];
    for (path, verify, needle) in cases {
        env.ctl(&[
            "pull-tar",
            &format!("--verify={verify}"),
            &srv.url(path),
            "x",
        ])
        .expect_error(needle);
        assert!(!env.image_dir().join("x").exists(), "{path}");
        assert!(hidden(&env).is_empty(), "{path}: {:?}", hidden(&env));
    }
    // The default is --verify=signature, as machinectl: no SHA256SUMS.gpg
    // (or no gpg) is an error.
    env.ctl(&["pull-tar", &srv.url("/good/web.tar.gz"), "sig"])
        .expect_error("SHA256SUMS.gpg");
    env.ctl(&["pull-tar", "--verify=no", "ftp://127.0.0.1/x.tar", "y"])
        .expect_error("only http:// and https://");
    env.ctl(&[
        "pull-tar",
        "--verify=no",
        &srv.url("/good/web.tar.gz"),
        "a_b",
    ])
    .expect_error("Invalid machine name 'a_b'");
    assert!(hidden(&env).is_empty(), "{:?}", hidden(&env));
}

#[test]
fn an_interrupted_pull_removes_its_partial_image() {
    let env = TestEnv::new();
    env.busybox("src");
    let tarball = env.dir.join("web.tar");
    env.ctl(&["export-tar", "src", tarball.to_str().unwrap()])
        .expect_status(0);
    let bytes = std::fs::read(&tarball).unwrap();
    let srv = Server::start();
    srv.put(
        "/slow.tar",
        Reply::Stall {
            body: bytes[..bytes.len() / 2].to_vec(),
            len: bytes.len(),
        },
    );
    let mut child = std::process::Command::new(bin("netspawnctl"))
        .args(["pull-tar", "--verify=no", &srv.url("/slow.tar"), "slow"])
        .env("NETSPAWN_IMAGE_DIR", env.image_dir())
        .env("NETSPAWN_RUN_DIR", env.run_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the partial image has files in it.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let partial: Vec<_> = std::fs::read_dir(env.image_dir())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(".#slow."))
            .collect();
        if partial
            .iter()
            .any(|p| std::fs::read_dir(p.path()).is_ok_and(|mut d| d.next().is_some()))
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no partial image");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let code = wait_timeout(&mut child, Duration::from_secs(15));
    assert!(matches!(code, Some(1) | Some(130)), "{code:?}");
    assert!(hidden(&env).is_empty(), "{:?}", hidden(&env));
    assert!(!env.image_dir().join("slow").exists());
}

#[test]
fn clone_rename_read_only_remove_and_clean() {
    let env = TestEnv::new();
    let img = rich_image(&env, "base");
    let want = listing(&img);
    env.ctl(&["clone", "base", "copy"]).expect_status(0);
    assert_eq!(listing(&env.image_dir().join("copy")), want);
    assert_eq!(xattr(&env.image_dir().join("copy/data")), b"hello");
    env.ctl(&["clone", "base", "copy"])
        .expect_error("Image 'copy' already exists");
    env.ctl(&["clone", "nope", "other"])
        .expect_error("No image 'nope' known");
    env.ctl(&["import-fs", img.to_str().unwrap(), "fs"])
        .expect_status(0);
    assert_eq!(listing(&env.image_dir().join("fs")), want);

    env.ctl(&["rename", "copy", "moved"]).expect_status(0);
    assert!(!env.image_dir().join("copy").exists());
    env.ctl(&["rename", "moved", "base"])
        .expect_error("Image 'base' already exists");

    // read-only: chattr +i; shown by list-images, refuses remove.
    env.ctl(&["read-only", "moved"]).expect_status(0);
    let list = env.ctl(&["list-images", "--no-legend"]);
    let line = list
        .stdout
        .lines()
        .find(|l| l.starts_with("moved "))
        .unwrap()
        .to_string();
    assert!(line.contains(" yes "), "{line}");
    env.ctl(&["remove", "moved"])
        .expect_error("Image 'moved' is read-only");
    let v = env.ctl(&["show-image", "moved", "-p", "ReadOnly", "--value"]);
    assert_eq!(v.stdout, "yes\n");
    env.ctl(&["read-only", "moved", "no"]).expect_status(0);
    let v = env.ctl(&["show-image", "moved", "-p", "Type,Name"]);
    assert_eq!(v.stdout, "Name=moved\nType=directory\n");
    let s = env.ctl(&["image-status", "moved"]);
    s.expect_status(0);
    assert!(
        s.stdout.contains(&format!(
            "Path: {}",
            env.image_dir().join("moved").display()
        )),
        "{}",
        s.stdout
    );
    assert!(s.stdout.contains("RO: writable"), "{}", s.stdout);
    // USAGE is measured.
    let j = env.ctl(&["list-images", "-o", "json"]);
    assert!(j.stdout.contains("\"usage\":"), "{}", j.stdout);
    assert!(!j.stdout.contains("\"usage\":null"), "{}", j.stdout);

    env.ctl(&["remove", "moved", "fs"]).expect_status(0);
    assert!(!env.image_dir().join("moved").exists());
    env.ctl(&["remove", "moved"])
        .expect_error("No image 'moved' known");

    // clean removes hidden leftovers only.
    std::fs::create_dir_all(env.image_dir().join(".#web.1234abcd/etc")).unwrap();
    std::fs::write(env.image_dir().join(".#web.tar.99"), b"x").unwrap();
    let c = env.ctl(&["clean"]);
    c.expect_status(0);
    assert!(
        c.stdout.contains("Removed image '.#web.1234abcd'."),
        "{}",
        c.stdout
    );
    assert!(hidden(&env).is_empty(), "{:?}", hidden(&env));
    assert!(env.image_dir().join("base").exists());
}

#[test]
fn bind_copy_and_show_in_a_running_machine() {
    let env = TestEnv::new();
    let img = env.busybox("live");
    // A symlink in the machine to its own /etc.
    std::os::unix::fs::symlink("/etc", img.join("etclink")).unwrap();
    let hold = env.hold_dir();
    let hostdir = env.dir.join("hostdir");
    std::fs::create_dir(&hostdir).unwrap();
    std::fs::write(hostdir.join("f"), b"from the host\n").unwrap();
    let script = format!(
        "{HOLD}; cat /etc/copied /mnt/bound/f > /ctl/out 2>&1; \
         echo x > /mnt/ro/g 2>/dev/null && echo writable >> /ctl/out; \
         cat /etc/bound/f >> /ctl/out 2>&1"
    );
    let mut machine = env.spawn(&[
        "-q",
        "-D",
        img.to_str().unwrap(),
        &format!("--bind={}:/ctl", hold.display()),
        "/bin/sh",
        "-c",
        &script,
    ]);
    let leader = env
        .wait_registered("live", Duration::from_secs(20))
        .expect("registered");

    // show: machined's property names.
    let s = env.ctl(&["show", "live"]);
    s.expect_status(0);
    for want in [
        "Name=live\n".to_string(),
        format!("Leader={leader}\n"),
        "Class=container\n".into(),
        "Service=netspawn\n".into(),
        format!("RootDirectory={}\n", img.canonicalize().unwrap().display()),
        "State=running\n".into(),
    ] {
        assert!(s.stdout.contains(&want), "{want:?} in {}", s.stdout);
    }
    let v = env.ctl(&["show", "live", "-p", "Leader", "--value"]);
    assert_eq!(v.stdout, format!("{leader}\n"));

    // The image is in use.
    env.ctl(&["remove", "live"])
        .expect_error("in use by running machine 'live'");
    env.ctl(&["rename", "live", "other"])
        .expect_error("in use by running machine 'live'");

    // copy-to through the machine's symlink: the machine's /etc, not the host's.
    env.ctl(&[
        "copy-to",
        "live",
        hostdir.join("f").to_str().unwrap(),
        "/etclink/copied",
    ])
    .expect_status(0);
    assert_eq!(
        std::fs::read(img.join("etc/copied")).unwrap(),
        b"from the host\n"
    );
    assert!(!Path::new("/etc/copied").exists());
    env.ctl(&[
        "copy-to",
        "live",
        hostdir.join("f").to_str().unwrap(),
        "/etclink/copied",
    ])
    .expect_error("already exists");
    env.ctl(&[
        "copy-to",
        "--force",
        "live",
        hostdir.join("f").to_str().unwrap(),
        "/etclink/copied",
    ])
    .expect_status(0);
    // copy-from through the symlink: the machine's passwd.
    let got = env.dir.join("passwd");
    env.ctl(&[
        "copy-from",
        "live",
        "/etclink/passwd",
        got.to_str().unwrap(),
    ])
    .expect_status(0);
    assert_eq!(
        std::fs::read(&got).unwrap(),
        std::fs::read(img.join("etc/passwd")).unwrap()
    );
    env.ctl(&[
        "copy-from",
        "live",
        "/etclink/passwd",
        got.to_str().unwrap(),
    ])
    .expect_error("already exists");
    env.ctl(&["copy-from", "live", "/no/such/file", got.to_str().unwrap()])
        .expect_error("/no/such");

    // bind: a missing destination needs --mkdir; read-only stays read-only;
    // a destination through the symlink lands in the machine's /etc.
    env.ctl(&["bind", "live", hostdir.to_str().unwrap(), "/mnt/bound"])
        .expect_error("--mkdir");
    env.ctl(&[
        "bind",
        "--mkdir",
        "live",
        hostdir.to_str().unwrap(),
        "/mnt/bound",
    ])
    .expect_status(0);
    env.ctl(&[
        "bind",
        "--mkdir",
        "--read-only",
        "live",
        hostdir.to_str().unwrap(),
        "/mnt/ro",
    ])
    .expect_status(0);
    env.ctl(&[
        "bind",
        "--mkdir",
        "live",
        hostdir.to_str().unwrap(),
        "/etclink/bound",
    ])
    .expect_status(0);
    assert!(!Path::new("/etc/bound").exists());
    env.ctl(&["bind", "nope", hostdir.to_str().unwrap(), "/mnt/x"])
        .expect_error("No machine 'nope' known");

    std::fs::write(hold.join("stop"), b"").unwrap();
    assert_eq!(wait_timeout(&mut machine, Duration::from_secs(20)), Some(0));
    let out = std::fs::read_to_string(hold.join("out")).unwrap();
    assert_eq!(
        out, "from the host\nfrom the host\nfrom the host\n",
        "{out}"
    );
    // The host's directory was not written through the read-only bind.
    assert!(!hostdir.join("g").exists());
    // Gone machine: the image can be removed now.
    env.ctl(&["remove", "live"]).expect_status(0);
}

#[test]
fn clone_of_a_btrfs_subvolume_is_a_snapshot() {
    if !have("mkfs.btrfs") || !have("btrfs") {
        skip(
            "clone_of_a_btrfs_subvolume_is_a_snapshot",
            "btrfs-progs is not installed",
        );
        return;
    }
    let env = TestEnv::new();
    let src = env.busybox("bb");
    // A loop-mounted btrfs as the image directory, in the script's own mount
    // namespace (gone, with its loop device, when the script ends).
    let script = format!(
        r#"set -e
        truncate -s 160M "$T/btrfs.img"
        mkfs.btrfs -q "$T/btrfs.img" >/dev/null
        mkdir -p "$T/pool"
        mount -o loop "$T/btrfs.img" "$T/pool"
        btrfs -q subvolume create "$T/pool/sv"
        cp -a {src}/. "$T/pool/sv/"
        export NETSPAWN_IMAGE_DIR="$T/pool"
        "$NETSPAWNCTL" clone sv sv2
        "$NETSPAWNCTL" list-images --no-legend | awk '{{print $1, $2}}'
        stat -c %i "$T/pool/sv2"
        btrfs subvolume show "$T/pool/sv2" | grep -c 'Parent UUID:.*-'
        cmp "$T/pool/sv/bin/busybox" "$T/pool/sv2/bin/busybox"
        "$NETSPAWNCTL" remove sv2
        ls "$T/pool"
        "#,
        src = src.display()
    );
    let mut full = format!("T={}\n", env.dir.display());
    full.push_str(&script);
    let r = env.sh(&full, 120);
    r.expect_status(0);
    assert_eq!(
        r.stdout, "sv subvolume\nsv2 subvolume\n256\n1\nsv\n",
        "{}",
        r.stderr
    );
}

/// Stops the gpg-agent a test's GNUPGHOME started, whatever happens.
struct GpgHome(PathBuf);

impl Drop for GpgHome {
    fn drop(&mut self) {
        let _ = std::process::Command::new("gpgconf")
            .args(["--kill", "all"])
            .env("GNUPGHOME", &self.0)
            .status();
    }
}

#[test]
fn pull_tar_checks_the_signature_with_the_hosts_keyring() {
    if !have("gpg") || !have("gpgconf") {
        skip(
            "pull_tar_checks_the_signature_with_the_hosts_keyring",
            "gpg is not installed",
        );
        return;
    }
    let env = TestEnv::new();
    env.busybox("src");
    let tarball = env.dir.join("web.tar.zst");
    env.ctl(&["export-tar", "src", tarball.to_str().unwrap()])
        .expect_status(0);
    let home = GpgHome(env.dir.join("gnupg"));
    std::fs::create_dir(&home.0).unwrap();
    std::fs::set_permissions(&home.0, std::fs::Permissions::from_mode(0o700)).unwrap();
    let sums = env.dir.join("SHA256SUMS");
    std::fs::write(&sums, format!("{}  web.tar.zst\n", sha256(&tarball))).unwrap();
    let other = env.dir.join("OTHER");
    std::fs::write(&other, "something else\n").unwrap();
    let script = r#"set -e
        gpg -q --batch --passphrase '' --quick-gen-key 'netspawn test <test@example.invalid>' ed25519 sign never
        gpg -q --batch --detach-sign -o "$1.gpg" "$1"
        gpg -q --batch --detach-sign -o "$2.gpg" "$2""#;
    let st = std::process::Command::new("timeout")
        .args(["60", "bash", "-c", script, "sh"])
        .arg(&sums)
        .arg(&other)
        .env("GNUPGHOME", &home.0)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(st.status.success(), "{st:?}");
    let srv = Server::start();
    srv.put(
        "/ok/web.tar.zst",
        Reply::Ok(std::fs::read(&tarball).unwrap()),
    );
    srv.put("/ok/SHA256SUMS", Reply::Ok(std::fs::read(&sums).unwrap()));
    srv.put(
        "/ok/SHA256SUMS.gpg",
        Reply::Ok(std::fs::read(env.dir.join("SHA256SUMS.gpg")).unwrap()),
    );
    srv.put(
        "/forged/web.tar.zst",
        Reply::Ok(std::fs::read(&tarball).unwrap()),
    );
    srv.put(
        "/forged/SHA256SUMS",
        Reply::Ok(std::fs::read(&sums).unwrap()),
    );
    srv.put(
        "/forged/SHA256SUMS.gpg",
        Reply::Ok(std::fs::read(env.dir.join("OTHER.gpg")).unwrap()),
    );
    let pull = |path: &str, name: &str| {
        let o = env
            .ctl_cmd(&["pull-tar", &srv.url(path), name], 60)
            .env("GNUPGHOME", &home.0)
            .output()
            .unwrap();
        Run {
            status: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    };
    pull("/ok/web.tar.zst", "signed").expect_status(0);
    assert!(env.image_dir().join("signed/bin/busybox").exists());
    pull("/forged/web.tar.zst", "forged").expect_error("Signature check");
    assert!(!env.image_dir().join("forged").exists());
    assert!(hidden(&env).is_empty(), "{:?}", hidden(&env));
}
