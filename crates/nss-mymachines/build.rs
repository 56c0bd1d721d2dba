//! Link settings for the NSS module: glibc loads it by its SONAME
//! (`libnss_mymachines.so.2`), and the version script keeps every symbol but
//! the `_nss_mymachines_*` entry points local, so the module cannot clash with
//! (or be bound to by) anything in the host program.

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".to_string());
    let map = format!("{dir}/exports.map");
    println!("cargo:rerun-if-changed=exports.map");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libnss_mymachines.so.2");
    println!("cargo:rustc-cdylib-link-arg=-Wl,--version-script={map}");
}
