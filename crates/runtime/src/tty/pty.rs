//! Allocating a pty pair on the host's devpts (the launcher's console; its
//! slave becomes the container's /dev/console and standard streams).

use std::os::fd::OwnedFd;
use std::path::PathBuf;

use super::TtyError;

/// An allocated pty pair.
#[derive(Debug)]
pub struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
    /// The slave's path on the host (/dev/pts/N), bind-mounted as /dev/console.
    pub slave_path: PathBuf,
}

/// Allocates a pty pair on the host's devpts.
pub fn open_pty() -> Result<Pty, TtyError> {
    use nix::fcntl::OFlag;
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(TtyError::Pty)?;
    nix::pty::grantpt(&master).map_err(TtyError::Pty)?;
    nix::pty::unlockpt(&master).map_err(TtyError::Pty)?;
    let name = nix::pty::ptsname_r(&master).map_err(TtyError::Pty)?;
    let slave = nix::fcntl::open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(TtyError::Pty)?;
    let master: OwnedFd = master.into();
    Ok(Pty {
        master,
        slave,
        slave_path: PathBuf::from(name),
    })
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    #[test]
    fn pty_round_trip() {
        let pty = open_pty().unwrap();
        assert!(pty.slave_path.starts_with("/dev/pts"));
        super::super::write_all(pty.slave.as_fd(), b"hello").unwrap();
        let mut buf = [0u8; 64];
        let n = nix::unistd::read(pty.master.as_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello");
    }
}
