//! The resources group: resource limits, the OOM score adjustment and the
//! CPU affinity of the payload (applied in the container by
//! [`crate::exec`]).

use crate::config::model::{CpuSet, Rlimit, Settings, RLIMITS};

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
