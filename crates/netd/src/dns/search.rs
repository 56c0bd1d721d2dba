//! The search domains a link's clients get (DHCPv4 options 15 and 119, and
//! the RA's DNSSL option, RFC 8106): `ZONE.netspawn` then `netspawn` on a
//! zone's bridge `vz-ZONE`, `netspawn` on any other link. With them, a
//! guest's stub resolver turns `alpha` into `alpha.ZONE.netspawn`, which
//! netd's DNS answers (see [`super::answer`]), so names work from any
//! resolver that reads resolv.conf, not only from those that ask LLMNR.

use super::answer::DEFAULT_DOMAIN;

/// The prefix of zone bridges (`vz-ZONE`).
const ZONE_PREFIX: &str = "vz-";

/// The search domains for clients on the host-side link `link`, most
/// specific first. The first one is also the DHCP domain name (option 15).
pub fn search_domains(link: &str) -> Vec<String> {
    let mut out = Vec::with_capacity(2);
    if let Some(zone) = link.strip_prefix(ZONE_PREFIX).filter(|z| valid_label(z)) {
        out.push(format!("{}.{DEFAULT_DOMAIN}", zone.to_ascii_lowercase()));
    }
    out.push(DEFAULT_DOMAIN.to_string());
    out
}

/// Whether `s` is one DNS label of the characters zone names may have.
fn valid_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && !s.starts_with('-')
        && !s.ends_with('-')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones_get_their_own_domain_first() {
        assert_eq!(search_domains("vz-lab"), ["lab.netspawn", "netspawn"]);
        assert_eq!(search_domains("vz-Lab2"), ["lab2.netspawn", "netspawn"]);
        assert_eq!(search_domains("ve-web"), ["netspawn"]);
        assert_eq!(search_domains("vb-web"), ["netspawn"]);
        // Not a zone name that makes a DNS label.
        assert_eq!(search_domains("vz-"), ["netspawn"]);
        assert_eq!(search_domains("vz-a_b"), ["netspawn"]);
        assert_eq!(search_domains("vz-a.b"), ["netspawn"]);
    }
}
