//! The image directory: `list-images` and `bootstrap`.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use netspawn_common::names::check_machine_name;
use netspawn_common::paths::Paths;
use serde_json::{json, Value};

use super::list::print_json;
use super::table::Table;
use super::timefmt::format_timestamp;
use super::{CtlError, ListOptions, OutputMode};

/// The inode flag chattr +i sets; machined shows such images as read-only.
const FS_IMMUTABLE_FL: libc::c_long = 0x10;

/// One image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub name: String,
    pub path: PathBuf,
    /// "directory" (the only kind netspawn runs).
    pub kind: &'static str,
    pub read_only: bool,
    /// Birth time, µs since the epoch; 0 if the filesystem does not record it.
    pub created_usec: u64,
    pub modified_usec: u64,
    /// `NAME.nspawn` next to the image, if there is one.
    pub settings: Option<PathBuf>,
}

fn usec(t: std::io::Result<std::time::SystemTime>) -> u64 {
    t.ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_micros() as u64)
}

fn read_only(path: &Path) -> bool {
    let Ok(dir) = std::fs::File::open(path) else {
        return false;
    };
    let mut flags: libc::c_long = 0;
    // SAFETY: FS_IOC_GETFLAGS writes one long into `flags`.
    let r = unsafe { libc::ioctl(dir.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut flags) };
    let immutable = r == 0 && flags & FS_IMMUTABLE_FL != 0;
    let ro_mount = nix::sys::statvfs::fstatvfs(&dir)
        .is_ok_and(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY));
    immutable || ro_mount
}

/// The directory images in `dir` (hidden names and names that are not valid
/// machine names are skipped), sorted by name. A missing directory has none.
pub fn scan(dir: &Path) -> Result<Vec<Image>, CtlError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => {
            return Err(CtlError::Images {
                path: dir.to_path_buf(),
                err,
            })
        }
    };
    let mut out = Vec::new();
    for de in rd.flatten() {
        let Some(name) = de.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if name.starts_with('.') || check_machine_name(&name).is_err() {
            continue;
        }
        let path = de.path();
        // Follows symlinks, as machined lists a symlink to a directory.
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if !meta.is_dir() {
            continue;
        }
        let settings = dir.join(format!("{name}.nspawn"));
        out.push(Image {
            read_only: read_only(&path),
            created_usec: usec(meta.created()),
            modified_usec: usec(meta.modified()),
            settings: settings.is_file().then_some(settings),
            kind: "directory",
            path,
            name,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The `list-images` table (machinectl's columns; USAGE is not measured).
pub fn render_table(images: &[Image], no_legend: bool) -> String {
    let mut t = Table::new(&["name", "type", "ro", "usage", "created", "modified"]);
    for i in images {
        t.push(vec![
            i.name.clone(),
            i.kind.to_string(),
            if i.read_only { "yes" } else { "no" }.to_string(),
            String::new(),
            format_timestamp(i.created_usec),
            format_timestamp(i.modified_usec),
        ]);
    }
    let mut out = String::new();
    if !t.is_empty() {
        out.push_str(&t.render(!no_legend));
    }
    if !no_legend {
        if t.is_empty() {
            out.push_str("No images.\n");
        } else {
            out.push_str(&format!("\n{} images listed.\n", t.len()));
        }
    }
    out
}

/// JSON for `list-images -o json` (machinectl's names plus path and settings).
pub fn to_json(images: &[Image]) -> Value {
    Value::Array(
        images
            .iter()
            .map(|i| {
                json!({
                    "name": i.name,
                    "type": i.kind,
                    "ro": i.read_only,
                    "usage": Value::Null,
                    "created": (i.created_usec > 0).then_some(i.created_usec),
                    "modified": (i.modified_usec > 0).then_some(i.modified_usec),
                    "path": i.path.to_string_lossy(),
                    "settings": i.settings.as_ref().map(|p| p.to_string_lossy()),
                })
            })
            .collect(),
    )
}

/// `netspawnctl list-images`.
pub fn list_images(opts: &ListOptions) -> Result<i32, CtlError> {
    let images = scan(&Paths::from_env().image_dir)?;
    match opts.output {
        OutputMode::Short => std::io::stdout()
            .lock()
            .write_all(render_table(&images, opts.no_legend).as_bytes())?,
        mode => print_json(&to_json(&images), mode)?,
    }
    Ok(0)
}

/// Which image `bootstrap` makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootstrapKind {
    /// From the host's static busybox.
    Busybox,
    /// With debootstrap.
    Debian {
        suite: String,
        mirror: Option<String>,
    },
}

/// Where `bootstrap NAME [--directory=DIR]` puts the image, after checking
/// NAME against the machine-name rules.
pub fn bootstrap_destination(
    name: &str,
    directory: Option<&Path>,
    image_dir: &Path,
) -> Result<PathBuf, CtlError> {
    check_machine_name(name).map_err(|reason| CtlError::InvalidName {
        name: name.to_string(),
        reason,
    })?;
    Ok(directory.map_or_else(|| image_dir.join(name), Path::to_path_buf))
}

/// `netspawnctl bootstrap busybox|debian NAME`.
pub fn bootstrap(
    kind: &BootstrapKind,
    name: &str,
    directory: Option<&Path>,
) -> Result<i32, CtlError> {
    let dest = bootstrap_destination(name, directory, &Paths::from_env().image_dir)?;
    match kind {
        BootstrapKind::Busybox => crate::bootstrap::busybox(&dest)?,
        BootstrapKind::Debian { suite, mirror } => {
            let opts = crate::bootstrap::DebianOptions {
                suite: suite.clone(),
                mirror: mirror.clone(),
                include: vec![],
            };
            crate::bootstrap::debian(&dest, &opts, &mut |line| eprintln!("{line}"))?
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destination() {
        let d = bootstrap_destination("web", None, Path::new("/var/lib/machines")).unwrap();
        assert_eq!(d, PathBuf::from("/var/lib/machines/web"));
        let d = bootstrap_destination("web", Some(Path::new("/srv/x")), Path::new("/m")).unwrap();
        assert_eq!(d, PathBuf::from("/srv/x"));
        let err = bootstrap_destination("a_b", None, Path::new("/m")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Invalid machine name 'a_b': character '_' is not allowed (only letters, digits, '-' and '.')"
        );
    }

    #[test]
    fn scans_directories_only() {
        let tmp = std::env::temp_dir().join(format!("netspawn-ctl-images-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(tmp.join("web/etc")).unwrap();
        std::fs::create_dir_all(tmp.join(".hidden")).unwrap();
        std::fs::create_dir_all(tmp.join("bad_name")).unwrap();
        std::fs::write(tmp.join("web.nspawn"), "[Exec]\n").unwrap();
        std::fs::write(tmp.join("file"), "").unwrap();
        let images = scan(&tmp).unwrap();
        assert_eq!(images.len(), 1);
        assert_eq!(images[0].name, "web");
        assert_eq!(images[0].settings, Some(tmp.join("web.nspawn")));
        assert!(!images[0].read_only);
        let text = render_table(&images, false);
        assert!(
            text.starts_with("NAME TYPE      RO USAGE CREATED"),
            "{text}"
        );
        assert!(text.contains("\nweb  directory no -"), "{text}");
        assert!(text.ends_with("\n1 images listed.\n"), "{text}");
        assert_eq!(to_json(&images)[0]["ro"], false);
        std::fs::remove_dir_all(&tmp).unwrap();
        assert!(scan(&tmp).unwrap().is_empty());
    }
}
