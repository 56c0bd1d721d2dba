//! `install` and `uninstall` of the CNI plugin `netspawn-cni` (docs/cni.md):
//! copied from beside netspawnctl into the directories runtimes search for
//! plugins, `/opt/cni/bin` (containerd, CNI's default) and `/usr/lib/cni`
//! (Debian's podman), or those of `NETSPAWN_CNI_BIN_DIR` (colon-separated;
//! tests set it so they never write the real ones).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use super::LifecycleError;

/// The plugin's file name (a CNI configuration's `"type"`).
pub const PLUGIN: &str = "netspawn-cni";
/// Where the plugin goes unless `NETSPAWN_CNI_BIN_DIR` says otherwise.
const DEFAULT_DIRS: &str = "/opt/cni/bin:/usr/lib/cni";

fn dirs() -> Vec<PathBuf> {
    let v = std::env::var("NETSPAWN_CNI_BIN_DIR")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| DEFAULT_DIRS.to_string());
    v.split(':')
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .collect()
}

/// The plugin built beside netspawnctl, if there is one.
fn source() -> Option<PathBuf> {
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join(PLUGIN)))
        .filter(|p| p.is_file())
}

/// Copies the plugin into each directory (a file beside it, renamed over
/// it, so a runtime never runs half a binary). Returns what was installed,
/// or None when no plugin was built beside netspawnctl.
pub fn install() -> Result<Option<Vec<PathBuf>>, LifecycleError> {
    let Some(src) = source() else {
        return Ok(None);
    };
    let mut done = Vec::new();
    for dir in dirs() {
        fs::create_dir_all(&dir).map_err(LifecycleError::io("make", &dir))?;
        let dst = dir.join(PLUGIN);
        let tmp = dir.join(format!(".#{PLUGIN}.{}", std::process::id()));
        let copied = fs::copy(&src, &tmp)
            .and_then(|_| fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)))
            .and_then(|()| fs::rename(&tmp, &dst));
        if let Err(e) = copied {
            let _ = fs::remove_file(&tmp);
            return Err(LifecycleError::io("write", &dst)(e));
        }
        done.push(dst);
    }
    Ok(Some(done))
}

/// Removes the plugin from each directory; returns what was removed.
pub fn uninstall() -> Result<Vec<PathBuf>, LifecycleError> {
    let mut gone = Vec::new();
    for dir in dirs() {
        let p = dir.join(PLUGIN);
        match fs::remove_file(&p) {
            Ok(()) => gone.push(p),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(LifecycleError::io("remove", &p)(e)),
        }
    }
    Ok(gone)
}
