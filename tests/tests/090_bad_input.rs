//! Bad input: one clear line naming the problem, exit status 1, and nothing
//! left behind (no registry entry, no cgroup, no image lock held).

use netspawn_tests::*;

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
fn bad_directories_names_and_commands() {
    let env = TestEnv::new();
    let img = env.busybox("good");
    let d = img.to_str().unwrap();
    let missing = env.dir.join("missing");
    env.netspawn(&["-D", missing.to_str().unwrap(), "/bin/true"])
        .expect_error("does not exist");
    env.netspawn(&["-M", "nosuchimage", "/bin/true"])
        .expect_error("does not exist");
    let file = env.dir.join("afile");
    std::fs::write(&file, "x").unwrap();
    env.netspawn(&["-D", file.to_str().unwrap()])
        .expect_error("is not a directory");
    // No /bin/sh: an empty directory.
    let empty = env.dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    env.netspawn(&["-D", empty.to_str().unwrap()])
        .expect_error("has no /bin/sh");
    // No init for -b.
    env.netspawn(&["-b", "-D", empty.to_str().unwrap()])
        .expect_error("no init found");
    // A command that is not in the image.
    env.netspawn(&["-D", d, "/usr/bin/nonexistent"])
        .expect_error("Command '/usr/bin/nonexistent' not found");
    env.netspawn(&["-D", d, "nonexistent-tool"])
        .expect_error("not found");
    // An absolute symlink in the image pointing at a host program does not count.
    std::os::unix::fs::symlink("/usr/bin/perl", img.join("bin/hostenv")).unwrap();
    env.netspawn(&["-D", d, "/bin/hostenv"])
        .expect_error("not found");
    // Invalid machine names (systemd's hostname rules).
    for bad in ["-x", "a_b", "a..b", "with space", &"x".repeat(65)] {
        env.netspawn(&["-D", d, &format!("--machine={bad}"), "/bin/true"])
            .expect_error("Invalid machine name");
    }
    env.netspawn(&["-D", d, "--hostname=bad_host", "/bin/true"])
        .expect_error("Invalid hostname");
    check_clean(&env);
}

#[test]
fn bad_flags_and_values() {
    let env = TestEnv::new();
    let img = env.busybox("flags");
    let d = img.to_str().unwrap();
    env.netspawn(&["--bogus", "-D", d]).expect_error("--bogus");
    env.netspawn(&["-D", d, "--console=sideways"])
        .expect_error("sideways");
    env.netspawn(&["-D", d, "--register=maybe", "/bin/true"])
        .expect_error("--register");
    env.netspawn(&["-D", d, "--bind=relative/path", "/bin/true"])
        .expect_error("relative/path");
    let missing = env.dir.join("nope");
    env.netspawn(&[
        "-D",
        d,
        &format!("--bind={}:/mnt", missing.display()),
        "/bin/true",
    ])
    .expect_error("does not exist");
    env.netspawn(&["-D", d, "--capability=CAP_BOGUS", "/bin/true"])
        .expect_error("CAP_BOGUS");
    env.netspawn(&["-D", d, "--system-call-filter=not_a_syscall", "/bin/true"])
        .expect_error("not_a_syscall");
    env.netspawn(&["-D", d, "--kill-signal=SIGNOPE", "/bin/true"])
        .expect_error("SIGNOPE");
    env.netspawn(&["-D", d, "-E", "1BAD=x", "/bin/true"])
        .expect_error("1BAD");
    env.netspawn(&["-D", d, "--chdir=relative", "/bin/true"])
        .expect_error("--chdir");
    env.netspawn(&["-D", d, "--uuid=xyz", "/bin/true"])
        .expect_error("--uuid");
    env.netspawn(&["-D", d, "-b", "-a"])
        .expect_error("may not be combined");
    env.netspawn(&["-D", d, "--settings=sometimes", "/bin/true"])
        .expect_error("sometimes");
    env.netspawn(&["-D", d, "--network-zone=waytoolongzonename", "/bin/true"])
        .expect_error("--network-zone");
    env.netspawn(&[
        "-D",
        d,
        "--network-bridge=br0",
        "--network-zone=z",
        "/bin/true",
    ])
    .expect_error("may not be combined");
    env.netspawn(&["-D", d, "-p", "80", "/bin/true"])
        .expect_error("--port");
    env.netspawn(&["-D", d, "--private-users=4294967295:2", "/bin/true"])
        .expect_error("--private-users");
    env.netspawn(&["-D", d, "--private-users-ownership=chown", "/bin/true"])
        .expect_error("needs a user namespace");
    check_clean(&env);
}

#[test]
fn a_failed_exec_is_one_line_and_leaves_nothing() {
    let env = TestEnv::new();
    let img = env.busybox("exec");
    // A file that exists and is executable but cannot be executed.
    std::fs::write(img.join("bin/broken"), b"\x7fELF garbage").unwrap();
    std::os::unix::fs::PermissionsExt::set_mode(
        &mut std::fs::metadata(img.join("bin/broken"))
            .unwrap()
            .permissions(),
        0o755,
    );
    std::fs::set_permissions(
        img.join("bin/broken"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    env.netspawn(&["-q", "-D", img.to_str().unwrap(), "/bin/broken"])
        .expect_error("Failed to execute /bin/broken");
    // A working directory that does not exist in the image.
    env.netspawn(&[
        "-q",
        "-D",
        img.to_str().unwrap(),
        "--chdir=/no/such/dir",
        "/bin/true",
    ])
    .expect_error("/no/such/dir");
    check_clean(&env);
    // The image lock was released: a writable launch works.
    env.netspawn(&["-q", "-D", img.to_str().unwrap(), "/bin/true"])
        .expect_status(0);
}

#[test]
fn a_settings_file_that_is_a_fifo_or_a_device_is_one_line_not_a_hang() {
    let env = TestEnv::new();
    let img = env.busybox("fifo");
    let dir = env.settings_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("fifo.nspawn");
    let c = std::ffi::CString::new(file.to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    env.netspawn(&["-q", "-D", img.to_str().unwrap(), "-M", "fifo", "/bin/true"])
        .expect_error("fifo.nspawn");
    std::fs::remove_file(&file).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &file).unwrap();
    env.netspawn(&["-q", "-D", img.to_str().unwrap(), "-M", "fifo", "/bin/true"])
        .expect_error("fifo.nspawn");
    check_clean(&env);
}
