//! The resources group: resource limits, the OOM score adjustment and the
//! CPU affinity of the payload (applied in the container by
//! [`crate::exec`]), and the machine's cgroup: its resource-control
//! properties (the persisted drop-ins of `netspawnctl set-property`, then
//! `--property=`, which wins) and its place (`--slice=`, else the cgroup
//! parent), enforced by [`crate::cgroup`].

use netspawn_common::paths::Paths;

use super::ConfigError;
use crate::config::model::{CpuSet, Rlimit, Settings, RLIMITS};
use crate::config::property::{dropin, slice_path, Limits};

pub(super) struct Resources {
    pub rlimits: Vec<(u32, Rlimit)>,
    pub oom_score_adjust: Option<i32>,
    pub cpu_affinity: Option<CpuSet>,
}

pub(super) fn resolve(s: &Settings) -> Resources {
    Resources {
        rlimits: RLIMITS
            .iter()
            .zip(s.rlimits.iter())
            .filter_map(|((_, res), l)| l.map(|l| (*res, l)))
            .collect(),
        oom_score_adjust: s.oom_score_adjust,
        cpu_affinity: s.cpu_affinity.clone(),
    }
}

/// The machine's cgroup placement and properties.
pub(super) struct CgroupPlan {
    pub limits: Limits,
    pub parent: String,
}

pub(super) fn resolve_cgroup(
    o: &crate::config::cli::Options,
    machine: &str,
    paths: &Paths,
) -> Result<CgroupPlan, ConfigError> {
    let persisted =
        dropin::load(paths, machine).map_err(|e| ConfigError::Property(e.to_string()))?;
    let given: Limits = o.property.iter().cloned().collect();
    let parent = match &o.slice {
        Some(s) => slice_path(s).map_err(|e| ConfigError::Property(e.to_string()))?,
        None => paths.cgroup_parent.clone(),
    };
    let limits = persisted.overlaid(&given);
    // What this host cannot enforce is refused with the other bad input.
    crate::cgroup::preflight(&limits).map_err(|e| ConfigError::Property(e.to_string()))?;
    Ok(CgroupPlan { limits, parent })
}
