//! The container's device policy as a cgroup BPF program
//! (`BPF_PROG_TYPE_CGROUP_DEVICE`) attached to its cgroup2 directory: only
//! the character devices its /dev offers may be opened or created, so a
//! block device node made with mknod cannot be used, even on a tmpfs the
//! guest mounts itself. The hook works on pure cgroup v2 hosts and on hybrid
//! ones (it follows the unified hierarchy), and needs no process migration.

use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// A character device rule: `major`, and `minor` or any (None).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CharDev {
    pub major: u32,
    pub minor: Option<u32>,
}

/// What the container may use: null, zero, full, random, urandom, tty,
/// console, ptmx, net/tun, and the pty slaves (majors 136..=143).
pub const ALLOW: &[CharDev] = &[
    CharDev {
        major: 1,
        minor: Some(3),
    },
    CharDev {
        major: 1,
        minor: Some(5),
    },
    CharDev {
        major: 1,
        minor: Some(7),
    },
    CharDev {
        major: 1,
        minor: Some(8),
    },
    CharDev {
        major: 1,
        minor: Some(9),
    },
    CharDev {
        major: 5,
        minor: Some(0),
    },
    CharDev {
        major: 5,
        minor: Some(1),
    },
    CharDev {
        major: 5,
        minor: Some(2),
    },
    CharDev {
        major: 10,
        minor: Some(200),
    },
];
pub const PTS_MAJORS: (u32, u32) = (136, 143);

/// One eBPF instruction.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

const LDX_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const AND_K: u8 = 0x57; // BPF_ALU64 | BPF_AND | BPF_K
const MOV_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
const JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const JLT_K: u8 = 0xa5; // BPF_JMP | BPF_JLT | BPF_K
const JGT_K: u8 = 0x25; // BPF_JMP | BPF_JGT | BPF_K
const EXIT: u8 = 0x95;
const DEV_CHAR: i32 = 2; // BPF_DEVCG_DEV_CHAR

/// The program: r2 = type, r4 = major, r5 = minor; allow (return 1) the
/// listed character devices, deny (return 0) everything else.
pub fn program() -> Vec<Insn> {
    let mut p = vec![
        insn(LDX_W, 2, 1, 0, 0), // access_type
        insn(AND_K, 2, 0, 0, 0xffff),
        insn(LDX_W, 4, 1, 4, 0), // major
        insn(LDX_W, 5, 1, 8, 0), // minor
    ];
    // Placeholder jump to "deny", patched below.
    let type_check = p.len();
    p.push(insn(JNE_K, 2, 0, 0, DEV_CHAR));
    for d in ALLOW {
        match d.minor {
            Some(minor) => {
                p.push(insn(JNE_K, 4, 0, 3, d.major as i32));
                p.push(insn(JNE_K, 5, 0, 2, minor as i32));
            }
            None => p.push(insn(JNE_K, 4, 0, 2, d.major as i32)),
        }
        p.push(insn(MOV_K, 0, 0, 0, 1));
        p.push(insn(EXIT, 0, 0, 0, 0));
    }
    p.push(insn(JLT_K, 4, 0, 3, PTS_MAJORS.0 as i32));
    p.push(insn(JGT_K, 4, 0, 2, PTS_MAJORS.1 as i32));
    p.push(insn(MOV_K, 0, 0, 0, 1));
    p.push(insn(EXIT, 0, 0, 0, 0));
    let deny = p.len();
    p.push(insn(MOV_K, 0, 0, 0, 0));
    p.push(insn(EXIT, 0, 0, 0, 0));
    p[type_check].off = (deny - type_check - 1) as i16;
    p
}

/// Runs the program as the kernel would, for tests.
pub fn evaluate(prog: &[Insn], dev_type: u32, major: u32, minor: u32) -> u64 {
    let mut r = [0u64; 11];
    let ctx = [dev_type, major, minor];
    let mut pc = 0usize;
    while pc < prog.len() {
        let i = prog[pc];
        let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
        let jump = |cond: bool| {
            if cond {
                pc as i64 + 1 + i.off as i64
            } else {
                pc as i64 + 1
            }
        };
        let next = match i.code {
            LDX_W => {
                let _ = src;
                r[dst] = ctx[(i.off / 4) as usize] as u64;
                pc as i64 + 1
            }
            AND_K => {
                r[dst] &= i.imm as u64;
                pc as i64 + 1
            }
            MOV_K => {
                r[dst] = i.imm as u64;
                pc as i64 + 1
            }
            JNE_K => jump(r[dst] != i.imm as u64),
            JLT_K => jump(r[dst] < i.imm as u64),
            JGT_K => jump(r[dst] > i.imm as u64),
            EXIT => return r[0],
            _ => return 0,
        };
        pc = next as usize;
    }
    0
}

/// `BPF_F_ALLOW_MULTI`: programs attached below ours (a booted guest's
/// systemd, Docker in the guest) run too, and ours still runs for every
/// descendant cgroup, so the guest can only narrow the policy. Attached
/// exclusively (flags 0), the kernel refuses any program below it.
pub const ATTACH_FLAGS: u32 = 1 << 1;

/// Loads the program and attaches it to the cgroup2 directory `cgroup`,
/// with [`ATTACH_FLAGS`].
pub fn attach(cgroup: BorrowedFd<'_>) -> nix::Result<()> {
    let prog = program();
    let license = CString::new("GPL").unwrap_or_default();
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&15u32.to_ne_bytes()); // BPF_PROG_TYPE_CGROUP_DEVICE
    attr[4..8].copy_from_slice(&(prog.len() as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(prog.as_ptr() as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
    attr[48..56].copy_from_slice(b"netspawn");
    // SAFETY: bpf(BPF_PROG_LOAD) reads the attr buffer and the instruction
    // and license memory it points at, all alive for the call.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, 5, attr.as_ptr(), attr.len()) };
    if fd < 0 {
        return Err(nix::Error::last());
    }
    // SAFETY: the kernel just gave us this descriptor.
    let prog_fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&(cgroup.as_raw_fd() as u32).to_ne_bytes());
    attr[4..8].copy_from_slice(&(prog_fd.as_raw_fd() as u32).to_ne_bytes());
    attr[8..12].copy_from_slice(&6u32.to_ne_bytes()); // BPF_CGROUP_DEVICE
    attr[12..16].copy_from_slice(&ATTACH_FLAGS.to_ne_bytes());
    // SAFETY: bpf(BPF_PROG_ATTACH) with a plain attr buffer.
    let r = unsafe { libc::syscall(libc::SYS_bpf, 8, attr.as_ptr(), attr.len()) };
    if r < 0 {
        return Err(nix::Error::last());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_exactly_the_containers_devices() {
        let p = program();
        for d in ALLOW {
            let minor = d.minor.unwrap_or(77);
            assert_eq!(evaluate(&p, 2, d.major, minor), 1, "{d:?}");
            assert_eq!(
                evaluate(&p, 1, d.major, minor),
                0,
                "block device with the same numbers: {d:?}"
            );
        }
        for major in 136..=143 {
            assert_eq!(evaluate(&p, 2, major, 5), 1);
        }
        for (t, ma, mi) in [
            (1, 8, 0),
            (1, 253, 0),
            (2, 1, 1),
            (2, 4, 0),
            (2, 135, 0),
            (2, 144, 0),
            (2, 10, 237),
            (2, 1, 11),
        ] {
            assert_eq!(evaluate(&p, t, ma, mi), 0, "{t} {ma}:{mi}");
        }
        // Access bits in the upper half of access_type do not matter.
        assert_eq!(evaluate(&p, (7 << 16) | 2, 1, 3), 1);
    }

    #[test]
    fn attached_with_allow_multi() {
        // BPF_F_ALLOW_OVERRIDE is 1, BPF_F_ALLOW_MULTI 2 (uapi/linux/bpf.h):
        // only MULTI lets programs below ours run together with it.
        assert_eq!(ATTACH_FLAGS, 2);
    }

    #[test]
    fn the_kernel_accepts_the_program() {
        // Attach to a throwaway cgroup2 directory, if the host allows it.
        let Some(h) = crate::cgroup::Hierarchies::detect().ok() else {
            return;
        };
        let dir = h
            .unified
            .join(format!("netspawn-devtest-{}", std::process::id()));
        if std::fs::create_dir(&dir).is_err() {
            return;
        }
        let child = dir.join("guest");
        let f = std::fs::File::open(&dir).unwrap();
        let r = attach(std::os::fd::AsFd::as_fd(&f));
        // A program below ours (what a guest's systemd or Docker attaches)
        // is refused unless ours allows it.
        let nested = r.as_ref().ok().map(|()| {
            std::fs::create_dir(&child).unwrap();
            let c = std::fs::File::open(&child).unwrap();
            attach(std::os::fd::AsFd::as_fd(&c))
        });
        drop(f);
        let _ = std::fs::remove_dir(&child);
        std::fs::remove_dir(&dir).unwrap();
        r.expect("BPF device program loads and attaches");
        nested
            .unwrap()
            .expect("a second device program attaches in a child cgroup");
    }
}
