//! Fuzzes netd's `.network` parser: any bytes must give a file or a one-line
//! `FILE:LINE: msg` error, never a panic; warnings stay one line naming the
//! file; and matching whatever parsed against a few links must not panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use netd::template::{self, LinkFacts, Virtualization};

fuzz_target!(|data: &[u8]| {
    let file = Path::new("/etc/netspawn/network/fuzz.network");
    match template::parse_bytes(data, file) {
        Ok(parsed) => {
            for w in &parsed.warnings {
                assert!(w.starts_with("/etc/netspawn/network/fuzz.network:"), "{w:?}");
                assert!(!w.contains('\n'), "{w:?}");
            }
            let links = [
                LinkFacts {
                    name: "ve-web".into(),
                    altnames: vec!["ve-a-very-long-name".into()],
                    kind: Some("veth".into()),
                    driver: Some("veth".into()),
                },
                LinkFacts {
                    name: "vz-lab".into(),
                    altnames: Vec::new(),
                    kind: Some("bridge".into()),
                    driver: None,
                },
            ];
            let virts = [
                Virtualization::None,
                Virtualization::Container("systemd-nspawn".into()),
            ];
            for l in &links {
                for v in &virts {
                    let _ = parsed.file.matching.matches(l, v);
                }
            }
        }
        Err(e) => {
            let shown = e.to_string();
            assert!(shown.starts_with("/etc/netspawn/network/fuzz.network:"), "{shown:?}");
            assert!(!shown.contains('\n'), "{shown:?}");
        }
    }
});
