//! The few btrfs verbs `-x` and `--template=` use, as systemd-nspawn uses
//! them: is a directory a subvolume, snapshot one, destroy one.

use std::ffi::OsStr;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;

use nix::errno::Errno;

const BTRFS_SUPER_MAGIC: i64 = 0x9123_683E;
/// The inode number of a subvolume's root directory.
const FIRST_FREE_OBJECTID: u64 = 256;
/// `_IOW(0x94, 23, struct btrfs_ioctl_vol_args_v2)` (4096 bytes).
const IOC_SNAP_CREATE_V2: libc::c_ulong = 0x5000_9417;
/// `_IOW(0x94, 15, struct btrfs_ioctl_vol_args)` (4096 bytes).
const IOC_SNAP_DESTROY: libc::c_ulong = 0x5000_940f;
const SUBVOL_RDONLY: u64 = 1 << 1;

/// `struct btrfs_ioctl_vol_args_v2`.
#[repr(C)]
struct VolArgsV2 {
    fd: i64,
    transid: u64,
    flags: u64,
    unused: [u64; 4],
    name: [u8; 4040],
}

/// `struct btrfs_ioctl_vol_args`.
#[repr(C)]
struct VolArgs {
    fd: i64,
    name: [u8; 4088],
}

/// True if the directory `fd` is the root of a btrfs subvolume.
pub fn is_subvolume(fd: BorrowedFd<'_>) -> bool {
    let Ok(st) = nix::sys::stat::fstat(fd) else {
        return false;
    };
    if st.st_ino != FIRST_FREE_OBJECTID || st.st_mode & libc::S_IFMT != libc::S_IFDIR {
        return false;
    }
    nix::sys::statfs::fstatfs(fd)
        .map(|s| s.filesystem_type().0 == BTRFS_SUPER_MAGIC)
        .unwrap_or(false)
}

/// Snapshots the subvolume `src` as `name` in the directory `parent` (on
/// the same btrfs file system).
pub fn snapshot(
    src: BorrowedFd<'_>,
    parent: BorrowedFd<'_>,
    name: &OsStr,
    read_only: bool,
) -> nix::Result<()> {
    let bytes = name.as_bytes();
    let mut args = Box::new(VolArgsV2 {
        fd: i64::from(src.as_raw_fd()),
        transid: 0,
        flags: if read_only { SUBVOL_RDONLY } else { 0 },
        unused: [0; 4],
        name: [0; 4040],
    });
    if bytes.len() >= args.name.len() || bytes.contains(&b'/') {
        return Err(Errno::EINVAL);
    }
    args.name[..bytes.len()].copy_from_slice(bytes);
    // SAFETY: the ioctl reads a struct of the size its number encodes.
    let r = unsafe { libc::ioctl(parent.as_raw_fd(), IOC_SNAP_CREATE_V2 as _, &*args) };
    Errno::result(r).map(drop)
}

/// Destroys the subvolume `name` in `parent`, with what is in it.
pub fn destroy(parent: BorrowedFd<'_>, name: &OsStr) -> nix::Result<()> {
    let bytes = name.as_bytes();
    let mut args = Box::new(VolArgs {
        fd: 0,
        name: [0; 4088],
    });
    if bytes.len() >= args.name.len() || bytes.contains(&b'/') {
        return Err(Errno::EINVAL);
    }
    args.name[..bytes.len()].copy_from_slice(bytes);
    // SAFETY: the ioctl reads a struct of the size its number encodes.
    let r = unsafe { libc::ioctl(parent.as_raw_fd(), IOC_SNAP_DESTROY as _, &*args) };
    Errno::result(r).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argument_structs_have_the_kernels_size() {
        assert_eq!(size_of::<VolArgsV2>(), 4096);
        assert_eq!(size_of::<VolArgs>(), 4096);
    }
}
