//! `up`, `down` and `status` of a lab.

use super::graph::Live;
use super::model::Lab;

/// The addresses of the lab's running machines, from the registry.
pub fn live_addresses(lab: &Lab) -> Live {
    let reg = crate::ctl::registry();
    let mut out = Live::new();
    for m in &lab.machines {
        if let Ok(Some(e)) = reg.get(&m.name) {
            out.insert(
                m.name.clone(),
                e.addresses.iter().map(|a| a.to_string()).collect(),
            );
        }
    }
    out
}
