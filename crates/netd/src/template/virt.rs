//! What netd itself runs in (systemd-detect-virt's answer), for
//! `[Match] Virtualization=`: the one part of the templates that does I/O
//! besides the loader.

/// Whether, and in what, netd itself runs (systemd-detect-virt's answer).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Virtualization {
    /// On bare metal, or in a VM that was not detected.
    #[default]
    None,
    /// In a virtual machine of this technology (`kvm`, `qemu`, ...).
    Vm(String),
    /// In a container of this technology (`systemd-nspawn`, `docker`, ...).
    Container(String),
}

/// Technologies systemd-detect-virt names for virtual machines.
pub const VM_IDS: [&str; 19] = [
    "qemu",
    "kvm",
    "amazon",
    "zvm",
    "vmware",
    "microsoft",
    "oracle",
    "powervm",
    "xen",
    "bochs",
    "uml",
    "parallels",
    "bhyve",
    "qnx",
    "acrn",
    "apple",
    "sre",
    "google",
    "vm-other",
];

impl Virtualization {
    /// Detects a container the way systemd does for one: `/run/systemd/container`,
    /// else `container=` in PID 1's environment (as netspawn and other
    /// managers set it). Virtual machines are not detected (reported as
    /// [`Virtualization::None`]); nothing in netd's templates depends on them.
    pub fn detect() -> Virtualization {
        if let Ok(s) = std::fs::read_to_string("/run/systemd/container") {
            let s = s.trim();
            if !s.is_empty() {
                return Virtualization::Container(s.to_string());
            }
        }
        if let Ok(env) = std::fs::read("/proc/1/environ") {
            for var in env.split(|b| *b == 0) {
                if let Some(v) = var.strip_prefix(b"container=") {
                    if !v.is_empty() {
                        return Virtualization::Container(String::from_utf8_lossy(v).into_owned());
                    }
                }
            }
        }
        Virtualization::None
    }
}

/// Technologies systemd-detect-virt names for containers.
pub const CONTAINER_IDS: [&str; 11] = [
    "openvz",
    "lxc",
    "lxc-libvirt",
    "systemd-nspawn",
    "docker",
    "podman",
    "rkt",
    "wsl",
    "proot",
    "pouch",
    "container-other",
];
