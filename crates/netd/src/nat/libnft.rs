//! nftables commands run in-process through libnftables, the library the
//! `nft` program is built on (Debian's `libnftables1`, which `nftables`
//! depends on), loaded when first needed. The ruleset is still the typed
//! schema of the `nftables` crate, serialised to its JSON form, exactly
//! what `nft -j -f -` reads; only the process is gone. Starting `nft` costs
//! about 3 ms here (ten shared libraries to load and relocate), more than
//! the work: it was most of netd's time to its first link's answer, when
//! the table is made.
//!
//! Without the library (another distribution's name for it, a missing
//! symbol), [`run`] says so and the caller runs `nft` as before.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::sync::{Mutex, OnceLock};

use nix::libc;

/// `NFT_CTX_OUTPUT_JSON`: JSON output, and (libnftables before 1.0.7 has
/// no input flags) JSON input, as `nft -j`.
const OUTPUT_JSON: c_uint = 1 << 4;

type Ctx = *mut c_void;

type CtxNew = unsafe extern "C" fn(u32) -> Ctx;
type CtxFree = unsafe extern "C" fn(Ctx);
type SetFlags = unsafe extern "C" fn(Ctx, c_uint);
type Buffer = unsafe extern "C" fn(Ctx) -> c_int;
type GetBuffer = unsafe extern "C" fn(Ctx) -> *const c_char;
type RunCmd = unsafe extern "C" fn(Ctx, *const c_char) -> c_int;

/// The entry points used, from the library's stable ABI (`LIBNFTABLES_1`).
struct Lib {
    ctx_new: CtxNew,
    ctx_free: CtxFree,
    output_set_flags: SetFlags,
    buffer_output: Buffer,
    buffer_error: Buffer,
    get_output_buffer: GetBuffer,
    get_error_buffer: GetBuffer,
    run_cmd_from_buffer: RunCmd,
}

static LIB: OnceLock<Option<Lib>> = OnceLock::new();
/// One command at a time: a context is not shared, but the library keeps
/// some global state (its xtables and GMP set-up).
static CALLS: Mutex<()> = Mutex::new(());

fn load() -> Option<Lib> {
    // SAFETY: a NUL-terminated name; the handle is never closed, so the
    // symbols below stay valid for the life of the process.
    let handle = unsafe { libc::dlopen(c"libnftables.so.1".as_ptr(), libc::RTLD_NOW) };
    if handle.is_null() {
        tracing::debug!("libnftables.so.1 not loaded; running nft instead");
        return None;
    }
    macro_rules! sym {
        ($name:literal, $ty:ty) => {{
            // SAFETY: a NUL-terminated name and a live handle.
            let p = unsafe { libc::dlsym(handle, $name.as_ptr()) };
            if p.is_null() {
                tracing::debug!("libnftables lacks {:?}; running nft instead", $name);
                return None;
            }
            // SAFETY: the symbol is the libnftables function of that name,
            // whose C signature is the field's type (libnftables.h).
            unsafe { std::mem::transmute::<*mut c_void, $ty>(p) }
        }};
    }
    Some(Lib {
        ctx_new: sym!(c"nft_ctx_new", CtxNew),
        ctx_free: sym!(c"nft_ctx_free", CtxFree),
        output_set_flags: sym!(c"nft_ctx_output_set_flags", SetFlags),
        buffer_output: sym!(c"nft_ctx_buffer_output", Buffer),
        buffer_error: sym!(c"nft_ctx_buffer_error", Buffer),
        get_output_buffer: sym!(c"nft_ctx_get_output_buffer", GetBuffer),
        get_error_buffer: sym!(c"nft_ctx_get_error_buffer", GetBuffer),
        run_cmd_from_buffer: sym!(c"nft_run_cmd_from_buffer", RunCmd),
    })
}

/// What a command gave: its output (JSON), or the library's error text
/// (the same lines `nft` prints on stderr).
pub type Ran = Result<String, String>;

/// Runs one command (`nft -j` syntax: a JSON ruleset, or a plain command
/// such as `list table inet netspawn`, whose output is then JSON) in the
/// calling thread's network namespace. `None` when libnftables is not
/// available.
pub fn run(cmd: &str) -> Option<Ran> {
    let lib = LIB.get_or_init(load).as_ref()?;
    let Ok(cmd) = CString::new(cmd) else {
        return Some(Err("command contains a NUL byte".into()));
    };
    let _one = CALLS.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: the context is made, used and freed here, by one thread at a
    // time; the buffers it returns are copied before it is freed.
    unsafe {
        let ctx = (lib.ctx_new)(0);
        if ctx.is_null() {
            return Some(Err("libnftables: cannot make a context".into()));
        }
        (lib.output_set_flags)(ctx, OUTPUT_JSON);
        (lib.buffer_output)(ctx);
        (lib.buffer_error)(ctx);
        let rc = (lib.run_cmd_from_buffer)(ctx, cmd.as_ptr());
        let text = |p: *const c_char| match p.is_null() {
            true => String::new(),
            false => CStr::from_ptr(p).to_string_lossy().into_owned(),
        };
        let out = text((lib.get_output_buffer)(ctx));
        let err = text((lib.get_error_buffer)(ctx));
        (lib.ctx_free)(ctx);
        Some(if rc == 0 { Ok(out) } else { Err(err) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// In a network namespace of its own (root only; skipped otherwise):
    /// a table made from JSON, listed back as JSON, refused input reported
    /// with nft's words, the table deleted.
    #[test]
    fn json_in_and_out_in_a_private_namespace() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED: needs root (a network namespace)");
            return;
        }
        std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare");
            let Some(made) =
                run(r#"{"nftables":[{"add":{"table":{"family":"inet","name":"t1"}}}]}"#)
            else {
                eprintln!("SKIPPED: no libnftables.so.1 here");
                return;
            };
            made.expect("table made");
            let listed = run("list table inet t1").unwrap().expect("listed");
            let v: serde_json::Value = serde_json::from_str(&listed).expect("JSON");
            assert!(
                v["nftables"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|o| o["table"]["name"] == "t1"),
                "{listed}"
            );
            let missing = run("list table inet nosuch").unwrap().unwrap_err();
            assert!(missing.contains("No such file or directory"), "{missing}");
            let bad = run(r#"{"nftables":[{"add":{"chain":{"family":"inet"}}}]}"#)
                .unwrap()
                .unwrap_err();
            assert!(!bad.is_empty());
            run(r#"{"nftables":[{"delete":{"table":{"family":"inet","name":"t1"}}}]}"#)
                .unwrap()
                .expect("deleted");
            assert!(run("list table inet t1").unwrap().is_err());
        })
        .join()
        .unwrap();
    }
}
