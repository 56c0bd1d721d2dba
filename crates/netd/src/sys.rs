//! The few system calls netd makes that nix only offers as `unsafe` (or not at all), each behind
//! a small safe wrapper whose `SAFETY` comments say why it is sound. Everything else goes
//! through nix's safe API at the call site (sockets, socket options, `recvmmsg`/`sendmmsg`,
//! inotify, poll). The daemon's `fork` stays in `main.rs`: it is sound only while the process
//! has one thread, which no wrapper here could promise.

use std::num::NonZeroUsize;
use std::ops::{Deref, DerefMut};
use std::os::fd::OwnedFd;
use std::ptr::NonNull;

use nix::sys::mman::{mmap_anonymous, munmap, MapFlags, ProtFlags};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// Registers `fd` with the current tokio reactor for `interest`. Must be called inside a tokio
/// runtime (tokio panics otherwise).
pub fn async_fd(fd: OwnedFd, interest: Interest) -> std::io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the OwnedFd moves into the AsyncFd, which owns it from then on: it stays open and
    // is the same descriptor (OwnedFd::as_raw_fd never changes) until the AsyncFd is dropped or
    // gives it back.
    Ok(unsafe { AsyncFd::register_with_interest(fd, interest) }?)
}

/// Zeroed memory in an anonymous mapping of its own: its pages cost nothing until they are
/// written to, whatever the allocator's thresholds (netd may serve a hundred links, most of
/// them idle, each with a DNS listener's buffers).
pub struct AnonBuffer {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is owned by this value alone; moving the owner to another thread moves
// the only way to reach it.
unsafe impl Send for AnonBuffer {}

impl AnonBuffer {
    /// Maps `len` zeroed bytes, readable and writable (at least one byte).
    pub fn new(len: usize) -> std::io::Result<AnonBuffer> {
        let size = NonZeroUsize::new(len).unwrap_or(NonZeroUsize::MIN);
        // SAFETY: a fresh private anonymous mapping at an address the kernel picks: it cannot
        // overlap or alias any memory Rust already knows about.
        let ptr = unsafe {
            mmap_anonymous(
                None,
                size,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE,
            )
        }?;
        Ok(AnonBuffer {
            ptr: ptr.cast(),
            len: size.get(),
        })
    }
}

impl Deref for AnonBuffer {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: ptr/len describe our live mapping, readable, zero-filled by the kernel (so
        // initialized), and only reachable through self.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for AnonBuffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in deref, and writable; the slice borrows self mutably, so it is the
        // only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AnonBuffer {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what new() mapped; no slice of it outlives self.
        let _ = unsafe { munmap(self.ptr.cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anon_buffer_is_zeroed_writable_and_sized() {
        let mut b = AnonBuffer::new(3 * 4096 + 5).unwrap();
        assert_eq!(b.len(), 3 * 4096 + 5);
        assert!(b.iter().all(|x| *x == 0));
        b[4096] = 7;
        let last = b.len() - 1;
        b[last] = 9;
        assert_eq!((b[4096], b[last]), (7, 9));
        let moved = std::thread::spawn(move || b[4096]).join().unwrap();
        assert_eq!(moved, 7);
        assert_eq!(AnonBuffer::new(0).unwrap().len(), 1);
    }
}
