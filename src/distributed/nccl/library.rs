//! Finding and loading libnccl: the two routes the module docs of `nccl` describe (cudarc's
//! loader, else `dlopen("libnccl.so.2")`), and each entry point called through whichever was found.
use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::OnceLock;

use cudarc::nccl::{result, sys};

use crate::error::Error;

/// The entry points this backend calls; all exist since NCCL 2.4.
pub(super) const SYMBOLS: [&str; 9] = [
    "ncclGetVersion",
    "ncclGetUniqueId",
    "ncclCommInitRank",
    "ncclAllReduce",
    "ncclBroadcast",
    "ncclCommDestroy",
    "ncclCommAbort",
    "ncclCommGetAsyncError",
    "ncclGetErrorString",
];

/// `ncclInProgress`: only non-blocking communicators return it, and it is not a failure.
pub(super) const IN_PROGRESS: c_int = 7;

/// An NCCL call that did not succeed: the `ncclResult_t` code and NCCL's text for it.
pub(super) struct Failure {
    pub(super) code: c_int,
    pub(super) text: String,
}

impl Failure {
    pub(super) fn into_error(self, what: &str, detail: Option<String>) -> Error {
        let detail = detail
            .filter(|d| !d.is_empty())
            .map(|d| format!("; NCCL says: {d}"))
            .unwrap_or_default();
        Error::Dist(format!(
            "{what} failed: {} (ncclResult_t {}){detail}",
            self.text, self.code
        ))
    }
}

pub(super) type NcclResult<T> = std::result::Result<T, Failure>;

// The C signatures, with every enum passed and returned as a plain int: a Rust enum that receives
// a value it does not list (a newer NCCL's new error code) would be undefined behaviour.
pub(super) type GetVersionFn = unsafe extern "C" fn(*mut c_int) -> c_int;
pub(super) type GetUniqueIdFn = unsafe extern "C" fn(*mut sys::ncclUniqueId) -> c_int;
pub(super) type CommInitRankFn =
    unsafe extern "C" fn(*mut sys::ncclComm_t, c_int, sys::ncclUniqueId, c_int) -> c_int;
pub(super) type AllReduceFn = unsafe extern "C" fn(
    *const c_void,
    *mut c_void,
    usize,
    c_int,
    c_int,
    sys::ncclComm_t,
    sys::cudaStream_t,
) -> c_int;
pub(super) type BroadcastFn = unsafe extern "C" fn(
    *const c_void,
    *mut c_void,
    usize,
    c_int,
    c_int,
    sys::ncclComm_t,
    sys::cudaStream_t,
) -> c_int;
pub(super) type CommFn = unsafe extern "C" fn(sys::ncclComm_t) -> c_int;
pub(super) type AsyncErrorFn = unsafe extern "C" fn(sys::ncclComm_t, *mut c_int) -> c_int;
pub(super) type ErrorStringFn = unsafe extern "C" fn(c_int) -> *const c_char;
pub(super) type LastErrorFn = unsafe extern "C" fn(sys::ncclComm_t) -> *const c_char;

/// `libnccl.so.2` opened by us, with the entry points resolved once.
pub(super) struct OwnLib {
    pub(super) get_version: GetVersionFn,
    pub(super) get_unique_id: GetUniqueIdFn,
    pub(super) comm_init_rank: CommInitRankFn,
    pub(super) all_reduce: AllReduceFn,
    pub(super) broadcast: BroadcastFn,
    pub(super) comm_destroy: CommFn,
    pub(super) comm_abort: CommFn,
    pub(super) comm_get_async_error: AsyncErrorFn,
    pub(super) get_error_string: ErrorStringFn,
    /// Only since NCCL 2.13.
    pub(super) get_last_error: Option<LastErrorFn>,
}

pub(super) const RTLD_NOW: c_int = 2;

#[repr(C)]
pub(super) struct DlInfo {
    pub(super) dli_fname: *const c_char,
    pub(super) _fbase: *mut c_void,
    pub(super) _sname: *const c_char,
    pub(super) _saddr: *mut c_void,
}

// In libc itself since glibc 2.34; libloading (through cudarc) links them anyway.
extern "C" {
    pub(super) fn dlopen(filename: *const c_char, flag: c_int) -> *mut c_void;
    pub(super) fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
    pub(super) fn dlerror() -> *mut c_char;
    pub(super) fn dladdr(addr: *const c_void, info: *mut DlInfo) -> c_int;
}

/// # Safety
/// `F` must be an `unsafe extern "C" fn` type matching the C signature of `name`.
pub(super) unsafe fn symbol<F: Copy>(handle: *mut c_void, name: &str) -> Option<F> {
    debug_assert_eq!(size_of::<F>(), size_of::<*mut c_void>());
    let name = std::ffi::CString::new(name).ok()?;
    // SAFETY: `handle` came from a successful dlopen and `name` is NUL-terminated.
    let p = unsafe { dlsym(handle, name.as_ptr()) };
    // SAFETY: the caller guarantees `F` is the function pointer type of this symbol, and function
    // pointers have the size of `*mut c_void` on every platform glibc supports.
    (!p.is_null()).then(|| unsafe { std::mem::transmute_copy::<*mut c_void, F>(&p) })
}

/// The file a loaded function lives in, for logs.
pub(super) fn file_of(addr: *const c_void) -> Option<String> {
    let mut info = DlInfo {
        dli_fname: std::ptr::null(),
        _fbase: std::ptr::null_mut(),
        _sname: std::ptr::null(),
        _saddr: std::ptr::null_mut(),
    };
    // SAFETY: dladdr only reads `addr` as a number and fills `info`; `dli_fname` then points at
    // the loader's copy of the name, valid while the library stays loaded (we never close it).
    unsafe {
        if dladdr(addr, &mut info) == 0 || info.dli_fname.is_null() {
            return None;
        }
        Some(
            CStr::from_ptr(info.dli_fname)
                .to_string_lossy()
                .into_owned(),
        )
    }
}

impl OwnLib {
    pub(super) fn open() -> std::result::Result<(OwnLib, String), String> {
        // SAFETY: plain dlopen of a library name; NCCL's constructors have no preconditions. The
        // handle is never closed, so the function pointers below stay valid for the process.
        let handle = unsafe { dlopen(c"libnccl.so.2".as_ptr(), RTLD_NOW) };
        if handle.is_null() {
            // SAFETY: dlerror returns NULL or a NUL-terminated message owned by libc.
            let why = unsafe {
                let e = dlerror();
                if e.is_null() {
                    "unknown error".to_string()
                } else {
                    CStr::from_ptr(e).to_string_lossy().into_owned()
                }
            };
            return Err(format!("dlopen(\"libnccl.so.2\"): {why}"));
        }
        let missing = |name: &str| format!("libnccl.so.2 has no symbol {name}");
        macro_rules! resolve {
            ($name:literal) => {
                // SAFETY: each field's type spells the C prototype of that NCCL function.
                unsafe { symbol(handle, $name) }.ok_or_else(|| missing($name))?
            };
        }
        let lib = OwnLib {
            get_version: resolve!("ncclGetVersion"),
            get_unique_id: resolve!("ncclGetUniqueId"),
            comm_init_rank: resolve!("ncclCommInitRank"),
            all_reduce: resolve!("ncclAllReduce"),
            broadcast: resolve!("ncclBroadcast"),
            comm_destroy: resolve!("ncclCommDestroy"),
            comm_abort: resolve!("ncclCommAbort"),
            comm_get_async_error: resolve!("ncclCommGetAsyncError"),
            get_error_string: resolve!("ncclGetErrorString"),
            // SAFETY: as above.
            get_last_error: unsafe { symbol(handle, "ncclGetLastError") },
        };
        let file =
            file_of(lib.get_version as *const c_void).unwrap_or_else(|| "libnccl.so.2".to_string());
        Ok((lib, format!("{file} (opened as libnccl.so.2)")))
    }

    pub(super) fn check(&self, code: c_int) -> NcclResult<()> {
        if code == 0 || code == IN_PROGRESS {
            return Ok(());
        }
        // SAFETY: ncclGetErrorString accepts any code and returns a static string.
        let p = unsafe { (self.get_error_string)(code) };
        Err(Failure {
            code,
            text: cstr_or(p, "unknown NCCL error"),
        })
    }
}

pub(super) fn cstr_or(p: *const c_char, fallback: &str) -> String {
    if p.is_null() {
        fallback.to_string()
    } else {
        // SAFETY: NCCL's strings are NUL-terminated and outlive this copy.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

/// Where the NCCL entry points come from (see the module docs).
#[derive(Clone, Copy)]
pub(super) enum Lib {
    Cudarc { has_last_error: bool },
    Own(&'static OwnLib),
}

/// The library found, and the file it came from; looked up once per process.
pub(super) fn find() -> std::result::Result<(Lib, &'static str), String> {
    static FOUND: OnceLock<std::result::Result<(Lib, String), String>> = OnceLock::new();
    static OWN: OnceLock<OwnLib> = OnceLock::new();
    let found = FOUND.get_or_init(|| {
        let cudarc = match from_cudarc() {
            Ok(found) => return Ok(found),
            Err(why) => why,
        };
        match OwnLib::open() {
            Ok((lib, file)) => Ok((Lib::Own(OWN.get_or_init(|| lib)), file)),
            Err(own) => Err(format!(
                "cannot load NCCL: cudarc's loader: {cudarc}; {own}. Put the directory holding \
                 libnccl.so.2 (pip: site-packages/nvidia/nccl/lib) on LD_LIBRARY_PATH"
            )),
        }
    });
    match found {
        Ok((lib, file)) => Ok((*lib, file.as_str())),
        Err(why) => Err(why.clone()),
    }
}

pub(super) fn from_cudarc() -> std::result::Result<(Lib, String), String> {
    // SAFETY: only tries to dlopen cudarc's candidate names.
    if !unsafe { sys::is_culib_present() } {
        return Err(format!(
            "none of {:?} found",
            cudarc::get_lib_name_candidates("nccl")
        ));
    }
    // SAFETY: the library was just found, so culib() opens it instead of panicking.
    let lib = unsafe { sys::culib() };
    // SAFETY: reads a symbol's address as a plain pointer; nothing is called through it.
    let lookup = |name: &str| unsafe { lib.get::<*mut c_void>(name.as_bytes()) }.map(|s| *s);
    for name in SYMBOLS {
        if let Err(e) = lookup(name) {
            // cudarc would panic on the first call to it.
            return Err(format!("its libnccl lacks {name} ({e})"));
        }
    }
    // The `nccl-02028` bindings: a later NCCL may return result codes they do not list, which
    // cudarc reads into a Rust enum (undefined behaviour, or taken for success).
    let version = result::get_nccl_version()
        .map_err(|e| format!("ncclGetVersion failed ({})", from_cudarc_error(e).text))?;
    if version >= 22900 {
        return Err(format!(
            "its libnccl is NCCL {}, newer than cudarc's NCCL 2.28 bindings",
            version_text(version)
        ));
    }
    let file = lookup("ncclGetVersion")
        .ok()
        .and_then(|p| file_of(p as *const c_void))
        .unwrap_or_else(|| "libnccl.so".to_string());
    let has_last_error = lookup("ncclGetLastError").is_ok();
    Ok((
        Lib::Cudarc { has_last_error },
        format!("{file} (found by cudarc's loader)"),
    ))
}

pub(super) fn from_cudarc_error(e: result::NcclError) -> Failure {
    // SAFETY: ncclGetErrorString accepts any code and returns a static string.
    let p = unsafe { sys::ncclGetErrorString(e.0) };
    Failure {
        code: e.0 as c_int,
        text: cstr_or(p, "unknown NCCL error"),
    }
}

impl Lib {
    pub(super) fn version(self) -> NcclResult<c_int> {
        match self {
            Lib::Cudarc { .. } => result::get_nccl_version().map_err(from_cudarc_error),
            Lib::Own(l) => {
                let mut v = 0;
                // SAFETY: writes one int through a valid pointer.
                l.check(unsafe { (l.get_version)(&mut v) })?;
                Ok(v)
            }
        }
    }

    pub(super) fn unique_id(self) -> NcclResult<sys::ncclUniqueId> {
        match self {
            Lib::Cudarc { .. } => result::get_uniqueid().map_err(from_cudarc_error),
            Lib::Own(l) => {
                let mut id = sys::ncclUniqueId { internal: [0; 128] };
                // SAFETY: writes 128 bytes into `id`, which has exactly that size.
                l.check(unsafe { (l.get_unique_id)(&mut id) })?;
                Ok(id)
            }
        }
    }

    pub(super) fn init_rank(
        self,
        nranks: c_int,
        id: sys::ncclUniqueId,
        rank: c_int,
    ) -> NcclResult<sys::ncclComm_t> {
        let mut comm: sys::ncclComm_t = std::ptr::null_mut();
        match self {
            // SAFETY: `comm` is a valid out-pointer; the id and ranks were checked by the caller.
            Lib::Cudarc { .. } => unsafe { result::comm_init_rank(&mut comm, nranks, id, rank) }
                .map(drop)
                .map_err(from_cudarc_error)?,
            // SAFETY: as above.
            Lib::Own(l) => l.check(unsafe { (l.comm_init_rank)(&mut comm, nranks, id, rank) })?,
        }
        Ok(comm)
    }

    /// # Safety
    /// `buf` must hold `count` elements of `dtype` on the communicator's device, and stay alive
    /// until `stream` (of that device) has run the reduction.
    pub(super) unsafe fn all_reduce_sum(
        self,
        buf: *mut c_void,
        count: usize,
        dtype: sys::ncclDataType_t,
        comm: sys::ncclComm_t,
        stream: sys::cudaStream_t,
    ) -> NcclResult<()> {
        match self {
            // SAFETY: guaranteed by the caller; in place (send = receive) is allowed by NCCL.
            Lib::Cudarc { .. } => unsafe {
                result::all_reduce(
                    buf,
                    buf,
                    count,
                    dtype,
                    sys::ncclRedOp_t::ncclSum,
                    comm,
                    stream,
                )
            }
            .map(drop)
            .map_err(from_cudarc_error),
            Lib::Own(l) => l.check(
                // SAFETY: as above.
                unsafe {
                    (l.all_reduce)(
                        buf,
                        buf,
                        count,
                        dtype as c_int,
                        sys::ncclRedOp_t::ncclSum as c_int,
                        comm,
                        stream,
                    )
                },
            ),
        }
    }

    /// # Safety
    /// `buf` must hold `bytes` bytes on the communicator's device, and stay alive until `stream`
    /// (of that device) has run the broadcast.
    pub(super) unsafe fn broadcast_bytes(
        self,
        buf: *mut c_void,
        bytes: usize,
        root: c_int,
        comm: sys::ncclComm_t,
        stream: sys::cudaStream_t,
    ) -> NcclResult<()> {
        let u8 = sys::ncclDataType_t::ncclUint8;
        match self {
            Lib::Cudarc { .. } => {
                // SAFETY: guaranteed by the caller; in place is allowed by NCCL.
                unsafe { result::broadcast(buf, buf, bytes, u8, root, comm, stream) }
                    .map(drop)
                    .map_err(from_cudarc_error)
            }
            Lib::Own(l) => {
                // SAFETY: as above.
                let code =
                    unsafe { (l.broadcast)(buf, buf, bytes, u8 as c_int, root, comm, stream) };
                l.check(code)
            }
        }
    }

    /// # Safety
    /// `comm` must be live: neither destroyed nor aborted.
    pub(super) unsafe fn destroy(self, comm: sys::ncclComm_t) -> NcclResult<()> {
        match self {
            // SAFETY: guaranteed by the caller.
            Lib::Cudarc { .. } => unsafe { result::comm_destroy(comm) }
                .map(drop)
                .map_err(from_cudarc_error),
            // SAFETY: as above.
            Lib::Own(l) => l.check(unsafe { (l.comm_destroy)(comm) }),
        }
    }

    /// # Safety
    /// `comm` must be live: neither destroyed nor aborted.
    pub(super) unsafe fn abort(self, comm: sys::ncclComm_t) -> NcclResult<()> {
        match self {
            // SAFETY: guaranteed by the caller.
            Lib::Cudarc { .. } => unsafe { result::comm_abort(comm) }
                .map(drop)
                .map_err(from_cudarc_error),
            // SAFETY: as above.
            Lib::Own(l) => l.check(unsafe { (l.comm_abort)(comm) }),
        }
    }

    /// `Err` when the call fails or when the communicator holds an asynchronous error.
    ///
    /// # Safety
    /// `comm` must be live.
    pub(super) unsafe fn async_error(self, comm: sys::ncclComm_t) -> NcclResult<()> {
        match self {
            Lib::Cudarc { .. } => {
                let mut state = sys::ncclResult_t::ncclSuccess;
                // SAFETY: guaranteed by the caller; `state` is a valid out-pointer.
                unsafe { sys::ncclCommGetAsyncError(comm, &mut state) }
                    .result()
                    .map_err(from_cudarc_error)?;
                state.result().map(drop).map_err(from_cudarc_error)
            }
            Lib::Own(l) => {
                let mut state = 0;
                // SAFETY: guaranteed by the caller; `state` is a valid out-pointer.
                l.check(unsafe { (l.comm_get_async_error)(comm, &mut state) })?;
                l.check(state)
            }
        }
    }

    /// NCCL's description of the last failure on `comm` (NCCL >= 2.13), often naming the peer.
    ///
    /// # Safety
    /// `comm` must be live.
    pub(super) unsafe fn last_error(self, comm: sys::ncclComm_t) -> Option<String> {
        let p = match self {
            Lib::Cudarc { has_last_error } => {
                if !has_last_error {
                    return None;
                }
                // SAFETY: guaranteed by the caller; the symbol was found when the library was
                // chosen, so cudarc's lazy lookup cannot panic.
                unsafe { sys::ncclGetLastError(comm) }
            }
            // SAFETY: guaranteed by the caller.
            Lib::Own(l) => unsafe { (l.get_last_error?)(comm) },
        };
        (!p.is_null()).then(|| cstr_or(p, ""))
    }
}

/// NCCL's version code as text: 22809 is 2.28.9 (codes before 2.9 were major*1000 + minor*100).
pub(super) fn version_text(v: c_int) -> String {
    if v >= 20900 {
        format!("{}.{}.{}", v / 10000, v / 100 % 100, v % 100)
    } else {
        format!("{}.{}.{}", v / 1000, v / 100 % 10, v % 100)
    }
}
