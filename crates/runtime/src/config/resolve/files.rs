//! The files group: bind mounts (their sources must exist), tmpfs mounts,
//! inaccessible paths, a read-only root.

use std::path::{Path, PathBuf};

use super::{below, ConfigError};
use crate::config::model::Settings;
use crate::spec::{BindSpec, TmpfsSpec};

pub(super) struct Files {
    pub binds: Vec<BindSpec>,
    pub tmpfs: Vec<TmpfsSpec>,
    pub inaccessible: Vec<PathBuf>,
    pub read_only: bool,
}

impl Files {
    /// True if a path the command may be found at lies in a mount (a bind
    /// or tmpfs), so only the container can tell whether it exists.
    pub fn may_provide(&self, cmd: &str, path_var: &str) -> bool {
        let mounted = |p: &Path| {
            self.binds.iter().any(|b| below(p, &b.dest))
                || self.tmpfs.iter().any(|t| below(p, &t.path))
        };
        if cmd.contains('/') {
            return mounted(Path::new(cmd));
        }
        path_var
            .split(':')
            .filter(|d| d.starts_with('/'))
            .any(|d| mounted(Path::new(d)))
    }
}

pub(super) fn resolve(s: &Settings, root: &Path) -> Result<Files, ConfigError> {
    for b in &s.binds {
        // A "+" source is looked up inside the image, as it will be bound.
        let exists = if b.source_in_container {
            crate::sys::open_in_root(root, &b.source, libc::O_PATH).is_ok()
        } else {
            std::fs::symlink_metadata(&b.source).is_ok()
        };
        if !exists {
            return Err(ConfigError::Value {
                flag: "--bind",
                value: b.source.display().to_string(),
                reason: "source path does not exist".into(),
            });
        }
    }
    Ok(Files {
        binds: s.binds.clone(),
        tmpfs: s.tmpfs.clone(),
        inaccessible: s.inaccessible.clone(),
        read_only: s.read_only.unwrap_or(false),
    })
}
