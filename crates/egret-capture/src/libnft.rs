//! Loading an nft ruleset through libnftables in this process, instead of running `nft -f`.
//!
//! libnftables is what the `nft` command is built on: the same parser, the same single
//! netlink transaction, the same error messages. Its netlink socket is opened by the calling
//! thread, so it lands in the namespace that thread has entered. The library is opened at run
//! time (`dlopen`), so egret builds without its headers and a host without it gets an error
//! naming the package to install.
//!
//! The ruleset is handed over as a file (an in-memory `memfd`), as `nft -f` reads it:
//! libnftables 1.0 reports an error in a buffer given to `nft_run_cmd_from_buffer` without its
//! line number and quoting the first line; in a file, with `LINE:COLUMN` and the right line.
#![allow(unsafe_code)]

use crate::CaptureError;
use libloading::{Library, Symbol};
use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Mutex, OnceLock};

/// The library's soname (Debian's `libnftables1`, installed with `nftables`).
const SONAME: &str = "libnftables.so.1";

/// `NFT_CTX_DEFAULT`.
const NFT_CTX_DEFAULT: c_uint = 0;

type CtxNew = unsafe extern "C" fn(c_uint) -> *mut c_void;
type CtxFn = unsafe extern "C" fn(*mut c_void) -> c_int;
type CtxFree = unsafe extern "C" fn(*mut c_void);
type RunFile = unsafe extern "C" fn(*mut c_void, *const c_char) -> c_int;
type GetBuffer = unsafe extern "C" fn(*mut c_void) -> *const c_char;

/// The library, opened once per process.
fn library() -> Result<&'static Library, CaptureError> {
    static LIB: OnceLock<Result<Library, String>> = OnceLock::new();
    // SAFETY: libnftables runs no initialisation code with requirements on the caller.
    LIB.get_or_init(|| unsafe { Library::new(SONAME) }.map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|detail| CaptureError::NftLibrary {
            detail: detail.clone(),
        })
}

fn symbol<'l, T>(lib: &'l Library, name: &str) -> Result<Symbol<'l, T>, CaptureError> {
    // SAFETY: each name is looked up with the signature libnftables.h declares for it.
    unsafe { lib.get::<T>(name.as_bytes()) }.map_err(|e| CaptureError::NftLibrary {
        detail: format!("{SONAME} has no {name}: {e}"),
    })
}

/// What a refusal calls the ruleset file instead of its `/proc/self/fd/N` path.
const SHOWN_NAME: &str = "ruleset";

/// An in-memory file holding `script`.
fn ruleset_file(script: &str) -> std::io::Result<OwnedFd> {
    use nix::sys::memfd::{memfd_create, MFdFlags};
    let fd = memfd_create("egret-ruleset", MFdFlags::MFD_CLOEXEC)?;
    let mut file = std::fs::File::from(fd);
    file.write_all(script.as_bytes())?;
    // libnftables opens the path anew, with an offset of its own: no rewind needed.
    Ok(OwnedFd::from(file))
}

/// Run `script` (an nft ruleset file's text) as one transaction. A refusal carries the text
/// `nft -f` would have printed, with the same line numbers.
pub(crate) fn run(script: &str) -> Result<(), CaptureError> {
    let lib = library()?;
    let ctx_new: Symbol<CtxNew> = symbol(lib, "nft_ctx_new")?;
    let buffer_error: Symbol<CtxFn> = symbol(lib, "nft_ctx_buffer_error")?;
    let buffer_output: Symbol<CtxFn> = symbol(lib, "nft_ctx_buffer_output")?;
    let run_file: Symbol<RunFile> = symbol(lib, "nft_run_cmd_from_filename")?;
    let get_error: Symbol<GetBuffer> = symbol(lib, "nft_ctx_get_error_buffer")?;
    let ctx_free: Symbol<CtxFree> = symbol(lib, "nft_ctx_free")?;
    let refused = |stderr: String| CaptureError::Command {
        command: "nft -f - (libnftables, in-process)".into(),
        stderr,
    };
    let file = ruleset_file(script).map_err(|e| refused(format!("memfd for the ruleset: {e}")))?;
    let path_text = format!("/proc/self/fd/{}", file.as_raw_fd());
    let path = CString::new(path_text.clone()).expect("no NUL in a /proc path");

    // libnftables keeps process-wide state (symbol tables, the gmp allocator hooks) that its
    // contexts share without locking; attaches on different threads take turns.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    // SAFETY: the context is created, used by this thread only and freed before returning;
    // the error buffer is copied out before the context is freed.
    unsafe {
        let ctx = ctx_new(NFT_CTX_DEFAULT);
        if ctx.is_null() {
            return Err(refused(format!("nft_ctx_new in {SONAME} failed")));
        }
        // Messages go to buffers, not to egret's own stdout and stderr.
        buffer_output(ctx);
        buffer_error(ctx);
        let rc = run_file(ctx, path.as_ptr());
        let result = if rc == 0 {
            Ok(())
        } else {
            let err = get_error(ctx);
            let message = if err.is_null() {
                String::new()
            } else {
                CStr::from_ptr(err)
                    .to_string_lossy()
                    .trim()
                    .replace(&path_text, SHOWN_NAME)
            };
            Err(refused(if message.is_empty() {
                format!("nft_run_cmd_from_filename returned {rc}")
            } else {
                message
            }))
        };
        ctx_free(ctx);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_ruleset_says_what_and_on_which_line_as_nft_does() {
        // A syntax error stops libnftables before it touches the kernel: nothing is loaded.
        let script = "table inet egret_unit_test {\n\tchain c {\n\t\tnot-a-statement\n\t}\n}\n";
        match run(script) {
            Err(CaptureError::Command { command, stderr }) => {
                assert!(command.contains("libnftables"), "{command}");
                assert!(stderr.contains("ruleset:3:"), "no line number: {stderr}");
                assert!(stderr.contains("not-a-statement"), "{stderr}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
}
