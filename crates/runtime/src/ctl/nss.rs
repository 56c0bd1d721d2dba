//! `netspawnctl install-nss` / `uninstall-nss`: put the NSS module in the
//! multiarch library directory and add `mymachines` to the `passwd:`,
//! `group:` and `hosts:` lines of nsswitch.conf (see [`nsswitch`]),
//! idempotently, only when asked.
//! `--root=DIR` works on another tree (tests, image builds).

use std::path::{Path, PathBuf};

use super::{nsswitch, CtlError};

/// The module's installed name.
pub const SONAME: &str = "libnss_mymachines.so.2";

/// The multiarch directory glibc loads NSS modules from, as seen from `root`:
/// the one that holds libnss_files.so.2, else /usr/lib/<arch>-linux-gnu.
pub fn library_dir(root: &Path) -> PathBuf {
    let triplet = format!("{}-linux-gnu", std::env::consts::ARCH);
    for d in [
        format!("usr/lib/{triplet}"),
        format!("lib/{triplet}"),
        "usr/lib64".into(),
        "usr/lib".into(),
    ] {
        if root.join(&d).join("libnss_files.so.2").exists() {
            return root.join(d);
        }
    }
    root.join(format!("usr/lib/{triplet}"))
}

/// The built module: `--library=`, else `libnss_mymachines.so` next to our executable.
fn built_library(library: Option<&Path>) -> Result<PathBuf, CtlError> {
    if let Some(l) = library {
        return Ok(l.to_path_buf());
    }
    let exe = std::env::current_exe()
        .map_err(|e| CtlError::Usage(format!("cannot find our executable: {e}")))?;
    let dir = exe.parent().unwrap_or(Path::new("/"));
    for name in ["libnss_mymachines.so", SONAME] {
        let p = dir.join(name);
        if p.exists() {
            return Ok(p);
        }
    }
    Err(CtlError::Usage(format!(
        "no {SONAME} next to {}; pass --library=PATH",
        exe.display()
    )))
}

fn io(what: &str, path: &Path, e: std::io::Error) -> CtlError {
    CtlError::Usage(format!("{what} {}: {e}", path.display()))
}

/// Writes `text` to `path` atomically, keeping the file's permissions.
fn replace_file(path: &Path, text: &str) -> Result<(), CtlError> {
    let tmp = path.with_extension("netspawn-tmp");
    std::fs::write(&tmp, text).map_err(|e| io("write", &tmp, e))?;
    if let Ok(md) = std::fs::metadata(path) {
        let _ = std::fs::set_permissions(&tmp, md.permissions());
    }
    std::fs::rename(&tmp, path).map_err(|e| io("replace", path, e))
}

pub fn install(root: &Path, library: Option<&Path>) -> Result<i32, CtlError> {
    let src = built_library(library)?;
    let dir = library_dir(root);
    std::fs::create_dir_all(&dir).map_err(|e| io("create", &dir, e))?;
    let dst = dir.join(SONAME);
    let tmp = dir.join(format!(".{SONAME}.netspawn-tmp"));
    std::fs::copy(&src, &tmp).map_err(|e| io("copy", &src, e))?;
    std::fs::rename(&tmp, &dst).map_err(|e| io("install", &dst, e))?;
    let conf = root.join("etc/nsswitch.conf");
    let old = std::fs::read_to_string(&conf).unwrap_or_default();
    let new = nsswitch::add_mymachines(&old);
    if new != old {
        replace_file(&conf, &new)?;
    }
    println!(
        "Installed {} and enabled mymachines in {}.",
        dst.display(),
        conf.display()
    );
    Ok(0)
}

pub fn uninstall(root: &Path) -> Result<i32, CtlError> {
    let conf = root.join("etc/nsswitch.conf");
    if let Ok(old) = std::fs::read_to_string(&conf) {
        let new = nsswitch::remove_mymachines(&old);
        if new != old {
            replace_file(&conf, &new)?;
        }
    }
    let dst = library_dir(root).join(SONAME);
    match std::fs::remove_file(&dst) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("remove", &dst, e)),
    }
    println!(
        "Removed {} and mymachines from {}.",
        dst.display(),
        conf.display()
    );
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_and_uninstall_are_idempotent_in_a_root() {
        let root = std::env::temp_dir().join(format!("netspawn-nss-{}", std::process::id()));
        let lib = root.join("build/libnss_mymachines.so");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir_all(lib.parent().unwrap()).unwrap();
        std::fs::write(&lib, b"\x7fELF").unwrap();
        std::fs::write(
            root.join("etc/nsswitch.conf"),
            "passwd: files\nhosts:          files dns\n",
        )
        .unwrap();
        install(&root, Some(&lib)).unwrap();
        install(&root, Some(&lib)).unwrap();
        let conf = std::fs::read_to_string(root.join("etc/nsswitch.conf")).unwrap();
        assert_eq!(conf.matches("mymachines").count(), 3, "{conf}");
        assert!(
            conf.contains("hosts:          files mymachines dns"),
            "{conf}"
        );
        assert!(conf.contains("passwd: files mymachines\n"), "{conf}");
        assert!(
            conf.contains("group:          files mymachines\n"),
            "{conf}"
        );
        assert!(library_dir(&root).join(SONAME).exists());
        uninstall(&root).unwrap();
        uninstall(&root).unwrap();
        let conf = std::fs::read_to_string(root.join("etc/nsswitch.conf")).unwrap();
        assert!(!conf.contains("mymachines"), "{conf}");
        assert!(!library_dir(&root).join(SONAME).exists());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
