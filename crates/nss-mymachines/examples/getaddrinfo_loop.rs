//! Informational timing: calls glibc's `getaddrinfo` in a loop for each name
//! given and prints the mean time per call. Run it where the private
//! nsswitch.conf and registry are in place (see the crate README), e.g.
//! `getaddrinfo_loop 20000 web onlyinhosts`.

use std::ffi::CString;
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(iterations) = args.next().and_then(|n| n.parse::<u32>().ok()) else {
        eprintln!("usage: getaddrinfo_loop ITERATIONS NAME...");
        std::process::exit(1);
    };
    for name in args {
        let Ok(c_name) = CString::new(name.as_str()) else {
            eprintln!("{name}: contains NUL");
            continue;
        };
        // SAFETY: zeroed addrinfo is a valid "no hints" value; fields set below.
        let mut hints: libc::addrinfo = unsafe { std::mem::zeroed() };
        hints.ai_family = libc::AF_UNSPEC;
        hints.ai_socktype = libc::SOCK_STREAM;
        let mut failures = 0u32;
        let start = Instant::now();
        for _ in 0..iterations {
            let mut res: *mut libc::addrinfo = std::ptr::null_mut();
            // SAFETY: valid C string, hints and out-pointer; the result is freed.
            let rc =
                unsafe { libc::getaddrinfo(c_name.as_ptr(), std::ptr::null(), &hints, &mut res) };
            if rc == 0 {
                // SAFETY: res came from a successful getaddrinfo.
                unsafe { libc::freeaddrinfo(res) };
            } else {
                failures += 1;
            }
        }
        let per_call = start.elapsed().as_secs_f64() * 1e6 / f64::from(iterations.max(1));
        println!("{name}: {iterations} calls, {per_call:.2} us/call, {failures} failures");
    }
}
