//! Loading an nft ruleset through libnftables in this process, instead of running `nft -f`.
//!
//! libnftables is what the `nft` command is built on: the same parser, the same single
//! netlink transaction, the same error messages with line numbers. Its netlink socket is
//! opened by the calling thread, so it lands in the namespace that thread has entered. The
//! library is opened at run time (`dlopen`), so egret builds without its headers and a host
//! without it gets an error naming the package to install.
#![allow(unsafe_code)]

use crate::CaptureError;
use libloading::{Library, Symbol};
use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::sync::{Mutex, OnceLock};

/// The library's soname (Debian's `libnftables1`, installed with `nftables`).
const SONAME: &str = "libnftables.so.1";

/// `NFT_CTX_DEFAULT`.
const NFT_CTX_DEFAULT: c_uint = 0;

type CtxNew = unsafe extern "C" fn(c_uint) -> *mut c_void;
type CtxFn = unsafe extern "C" fn(*mut c_void) -> c_int;
type CtxFree = unsafe extern "C" fn(*mut c_void);
type RunCmd = unsafe extern "C" fn(*mut c_void, *const c_char) -> c_int;
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

/// Run `script` (an nft ruleset file's text) as one transaction. A refusal carries the text
/// `nft -f` would have printed, with the same line numbers.
pub(crate) fn run(script: &str) -> Result<(), CaptureError> {
    let lib = library()?;
    let ctx_new: Symbol<CtxNew> = symbol(lib, "nft_ctx_new")?;
    let buffer_error: Symbol<CtxFn> = symbol(lib, "nft_ctx_buffer_error")?;
    let buffer_output: Symbol<CtxFn> = symbol(lib, "nft_ctx_buffer_output")?;
    let run_cmd: Symbol<RunCmd> = symbol(lib, "nft_run_cmd_from_buffer")?;
    let get_error: Symbol<GetBuffer> = symbol(lib, "nft_ctx_get_error_buffer")?;
    let ctx_free: Symbol<CtxFree> = symbol(lib, "nft_ctx_free")?;
    let refused = |stderr: String| CaptureError::Command {
        command: "nft -f - (libnftables, in-process)".into(),
        stderr,
    };
    let text =
        CString::new(script).map_err(|_| refused("the ruleset contains a NUL byte".into()))?;

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
        let rc = run_cmd(ctx, text.as_ptr());
        let result = if rc == 0 {
            Ok(())
        } else {
            let err = get_error(ctx);
            let message = if err.is_null() {
                String::new()
            } else {
                CStr::from_ptr(err).to_string_lossy().trim().to_string()
            };
            Err(refused(if message.is_empty() {
                format!("nft_run_cmd_from_buffer returned {rc}")
            } else {
                message
            }))
        };
        ctx_free(ctx);
        result
    }
}
