//! A thin safe wrapper over `dpdk-sys`: the EAL, packet mempools, owned mbufs and ethdev ports.
//!
//! This crate owns every `unsafe` call into DPDK that the rest of vipd needs, and it encodes
//! DPDK's lifetime rules in the borrow checker instead of in comments: an [`Eal`] outlives every
//! [`Mempool`] created from it (`Mempool<'eal>`), and a mempool outlives every [`Mbuf`] taken
//! from it and every [`Port`] whose receive queues refill from it (`Mbuf<'pool>`,
//! `Port<'pool>`). Dropping an [`Mbuf`] frees it, dropping a [`Port`] stops and closes the device,
//! dropping a [`Mempool`] frees it and dropping the [`Eal`] calls `rte_eal_cleanup`.
//!
//! The EAL initialises once per process ([`Eal::init`]); tests that need DPDK therefore live one
//! per integration-test file (cargo runs each file as its own process).
//!
//! [`Mbuf`] has the shape of `dataplane::PacketBuf` (`data`, `data_mut`, `headroom`, `prepend`,
//! `adj`, `truncate`) so the engine can implement that trait for it. Mbufs are treated as
//! single-segment: [`Port::configure`] refuses an MTU whose frames would not fit one mbuf.
//!
//! A long-running engine whose I/O must be `'static` leaks the process-lifetime objects instead
//! of threading lifetimes through: `let eal: &'static Eal = Box::leak(Box::new(Eal::init(..)?));`,
//! the same for the `Mempool` and `Port`, then [`Port::queues`] gives one `PortQueue<'static>`
//! per lcore. (The EAL is then never cleaned up, which is what a daemon wants anyway.)
//!
//! When `dpdk-sys` was built without DPDK (no libdpdk or libclang on the build machine) this crate
//! is empty (`cfg(dpdk_missing)`); `dpdk_sys::AVAILABLE` says which build you have.

#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![cfg(not(dpdk_missing))]

use std::ffi::{c_char, c_int, CStr, CString};
use std::marker::PhantomData;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicBool, Ordering};

use dpdk_sys as sys;

/// Ethernet header (14) + one VLAN tag (4) + FCS (4): what a frame adds to the MTU.
const FRAME_OVERHEAD: u32 = 22;

/// Errors from DPDK calls; each message says what failed and what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DpdkError {
    /// `Eal::init` was called a second time in this process.
    #[error(
        "rte_eal_init already ran in this process; it runs once per process (DPDK cannot \
         re-initialise after a failure or after cleanup), so share the Eal or start a new \
         process (tests: one EAL test file per process)"
    )]
    AlreadyInitialized,
    /// An argument contained a NUL byte and cannot be passed to C.
    #[error("argument {arg:?} contains a NUL byte; remove it")]
    NulInArgument {
        /// The offending argument.
        arg: String,
    },
    /// `rte_eal_init` failed.
    #[error("rte_eal_init failed: {reason} (rte_errno {errno}); {hint}")]
    EalInit {
        /// `rte_errno` after the failure.
        errno: i32,
        /// `rte_strerror(errno)`.
        reason: String,
        /// What to do about it.
        hint: &'static str,
    },
    /// `rte_eal_init` left arguments it does not understand.
    #[error("the EAL did not consume arguments {unparsed:?}; pass only EAL options to Eal::init")]
    UnparsedArguments {
        /// The arguments left over.
        unparsed: Vec<String>,
    },
    /// No ethdev port has this id.
    #[error(
        "port {port_id} does not exist ({available} ports are available); create one with \
         --vdev=net_ring0 (or net_null0, net_af_packet0,iface=eth0) or bind a NIC to vfio-pci"
    )]
    UnknownPort {
        /// The id asked for.
        port_id: u16,
        /// How many ports the EAL probed.
        available: u16,
    },
    /// No ethdev port has this name.
    #[error("no port is named {name:?}; vdev ports are named after their --vdev (e.g. net_ring0)")]
    UnknownPortName {
        /// The name asked for.
        name: String,
    },
    /// A port setting is outside what the device or the mempool supports.
    #[error("port {port_id}: {what}")]
    PortConfig {
        /// The port.
        port_id: u16,
        /// What is wrong and what to change.
        what: String,
    },
    /// The port's link stayed down.
    #[error(
        "port {port_id}: the link is down after waiting {waited_ms} ms; check the cable or the \
         peer (for net_af_packet / net_tap: the kernel interface and its peer must be up), or \
         wait longer"
    )]
    LinkDown {
        /// The port.
        port_id: u16,
        /// How long it was given.
        waited_ms: u64,
    },
    /// A DPDK call returned an error.
    #[error("{call} failed: {reason} (errno {errno})")]
    Call {
        /// The DPDK function.
        call: &'static str,
        /// The (positive) errno it returned or set.
        errno: i32,
        /// `rte_strerror(errno)`.
        reason: String,
    },
}

impl DpdkError {
    fn call(call: &'static str, errno: i32) -> DpdkError {
        DpdkError::Call {
            call,
            errno,
            reason: strerror(errno),
        }
    }
}

/// Maps a DPDK return code (negative errno on failure) to a `Result`.
fn check(call: &'static str, ret: c_int) -> Result<c_int, DpdkError> {
    if ret < 0 {
        Err(DpdkError::call(call, -ret))
    } else {
        Ok(ret)
    }
}

/// `rte_errno` of the calling thread.
fn rte_errno() -> i32 {
    // SAFETY: reads a thread-local integer; no preconditions.
    unsafe { sys::shim_rte_errno() }
}

/// DPDK's description of an errno value (covers DPDK's own codes as well as libc's).
fn strerror(errno: i32) -> String {
    // SAFETY: rte_strerror accepts any value and returns a pointer to a NUL-terminated string
    // (static or thread-local), valid until the next call on this thread; we copy it at once.
    let msg = unsafe { sys::rte_strerror(errno) };
    if msg.is_null() {
        return format!("errno {errno}");
    }
    // SAFETY: non-null and NUL-terminated per rte_strerror's contract.
    unsafe { CStr::from_ptr(msg) }
        .to_string_lossy()
        .into_owned()
}

/// DPDK reports "no hugepages reserved" as EACCES; this is the hint when that is the cause.
const NO_HUGEPAGES_HINT: &str = "no free hugepages (HugePages_Free is 0 in /proc/meminfo): \
     reserve some (echo 512 > /proc/sys/vm/nr_hugepages, with hugetlbfs mounted on /dev/hugepages) \
     or run without them: --no-huge -m 256";

/// `HugePages_Free` of /proc/meminfo, if readable.
fn free_hugepages() -> Option<u64> {
    std::fs::read_to_string("/proc/meminfo")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("HugePages_Free:"))?
        .trim()
        .parse()
        .ok()
}

fn eal_hint(errno: i32) -> &'static str {
    match errno {
        libc_errno::ENOMEM => {
            "not enough hugepage memory: use --no-huge -m 256 or set /proc/sys/vm/nr_hugepages \
             (and mount hugetlbfs)"
        }
        libc_errno::EACCES => {
            "permission denied: run as root (or with CAP_SYS_ADMIN, CAP_IPC_LOCK), or use \
             --no-huge --in-memory"
        }
        libc_errno::EINVAL => {
            "an EAL argument is unknown or invalid, or a PMD plugin failed to load (see the EAL \
             log on stderr; EAL options are documented in the DPDK Linux guide)"
        }
        libc_errno::ENODEV => {
            "a --vdev / -a device has no driver or the buses could not be scanned: check the \
             device name and that its PMD is installed in the EAL plugin directory (Debian: \
             /usr/lib/x86_64-linux-gnu/dpdk/pmds-23.0, packages librte-net-*23)"
        }
        libc_errno::ENOTSUP => {
            "a driver failed to probe its device (e.g. net_af_packet's iface does not exist, or \
             a NIC is not bound to vfio-pci); see the EAL log on stderr"
        }
        libc_errno::EALREADY => "rte_eal_init already ran in this process; start a new process",
        libc_errno::EAGAIN => {
            "a bus or system resource is unavailable: another DPDK process may use the same \
             --file-prefix; use a unique --file-prefix or --in-memory"
        }
        _ => "see the EAL log on stderr",
    }
}

/// The few errno values the error hints distinguish (Linux numbering; DPDK is Linux-only here).
mod libc_errno {
    pub const EACCES: i32 = 13;
    pub const EAGAIN: i32 = 11;
    pub const EALREADY: i32 = 114;
    pub const EINVAL: i32 = 22;
    pub const ENODEV: i32 = 19;
    pub const ENOMEM: i32 = 12;
    pub const ENOTSUP: i32 = 95;
}

/// Set by the first `Eal::init` and never cleared: DPDK keeps partial state after a failed
/// `rte_eal_init` (a retry fails with options "already set") and cannot re-initialise after
/// `rte_eal_cleanup`, so this wrapper calls it at most once per process.
static EAL_INIT_CALLED: AtomicBool = AtomicBool::new(false);

/// The initialised DPDK environment abstraction layer; one per process.
///
/// Dropping it calls `rte_eal_cleanup`; the borrow checker keeps every [`Mempool`], [`Port`] and
/// [`Mbuf`] from outliving it. It is `Sync` (its methods are thread-safe queries) but not `Send`:
/// DPDK wants `rte_eal_cleanup` on the thread that initialised it (the main lcore).
#[derive(Debug)]
pub struct Eal {
    _not_send: PhantomData<*const ()>,
}

// SAFETY: `&Eal` only exposes thread-safe DPDK queries (port lookup, vdev creation, which DPDK
// serialises internally); the thread-affine part, cleanup, needs ownership and `Eal` is !Send.
unsafe impl Sync for Eal {}

impl Eal {
    /// Initialises the EAL with `args`, the EAL options without a program name, e.g.
    /// `["--no-huge", "-m", "256", "--in-memory", "-l", "0", "--vdev=net_ring0"]`.
    ///
    /// Fails with [`DpdkError::EalInit`] (naming the fix) when DPDK refuses the arguments or the
    /// machine; DPDK's own log on stderr has the details. Only the first call in a process
    /// reaches DPDK: later ones fail with [`DpdkError::AlreadyInitialized`], whatever the first
    /// one returned.
    pub fn init(args: &[&str]) -> Result<Eal, DpdkError> {
        let mut c_args = Vec::with_capacity(args.len() + 1);
        for arg in std::iter::once(&"vipd").chain(args) {
            let c = CString::new(*arg).map_err(|_| DpdkError::NulInArgument {
                arg: (*arg).to_string(),
            })?;
            c_args.push(c);
        }
        if EAL_INIT_CALLED.swap(true, Ordering::AcqRel) {
            return Err(DpdkError::AlreadyInitialized);
        }
        // DPDK may keep pointers into argv after init (and getopt permutes it), so the strings
        // and the array live for the rest of the process. Bounded: once per process.
        let argv: &'static mut [*mut c_char] = Vec::leak(
            c_args
                .into_iter()
                .map(CString::into_raw)
                .chain(std::iter::once(ptr::null_mut()))
                .collect(),
        );
        let argc = argv.len() - 1; // without the terminating null
        let argc_c = c_int::try_from(argc).map_err(|_| DpdkError::EalInit {
            errno: libc_errno::EINVAL,
            reason: "too many arguments".into(),
            hint: "pass fewer EAL arguments",
        })?;
        // SAFETY: argv holds argc valid NUL-terminated strings plus a null terminator, all
        // leaked ('static), and EAL_INIT_CALLED guarantees this is the process's only call.
        let ret = unsafe { sys::rte_eal_init(argc_c, argv.as_mut_ptr()) };
        if ret < 0 {
            let errno = rte_errno();
            let no_huge = args.contains(&"--no-huge");
            let hint = if errno == libc_errno::EACCES && !no_huge && free_hugepages() == Some(0) {
                NO_HUGEPAGES_HINT
            } else {
                eal_hint(errno)
            };
            return Err(DpdkError::EalInit {
                errno,
                reason: strerror(errno),
                hint,
            });
        }
        let eal = Eal {
            _not_send: PhantomData,
        };
        // ret counts the parsed arguments; argv[ret + 1..argc] (after getopt's permutation) are
        // the ones the EAL left alone, argv[0] being the program name.
        let parsed = usize::try_from(ret).unwrap_or(0) + 1;
        if parsed < argc {
            let unparsed = argv[parsed..argc]
                .iter()
                // SAFETY: every entry below argc is one of our leaked, NUL-terminated strings.
                .map(|&p| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
                .collect();
            drop(eal); // rte_eal_cleanup
            return Err(DpdkError::UnparsedArguments { unparsed });
        }
        Ok(eal)
    }

    /// The link state of port `port` without waiting, as [`Port::link`] reports it, for code
    /// that no longer holds the [`Port`] (a control thread watching the links while the lcores
    /// own the queues). An unknown port id is an error, never undefined behaviour.
    pub fn port_link(&self, port: u16) -> Result<Link, DpdkError> {
        link_of(port)
    }

    /// Sets port `port`'s link administratively up or down while the lcores keep polling (as
    /// testpmd's `set link-down port` does); not every driver supports it.
    pub fn set_port_link(&self, port: u16, up: bool) -> Result<(), DpdkError> {
        set_link_of(port, up)
    }

    /// How many ethdev ports the EAL has (probed or created with [`Eal::create_vdev`]).
    pub fn port_count(&self) -> u16 {
        // SAFETY: no preconditions once the EAL is up (guaranteed by &self).
        unsafe { sys::rte_eth_dev_count_avail() }
    }

    /// The id of the port named `name` (a vdev's name, e.g. `net_ring0`, or a PCI address).
    pub fn port_by_name(&self, name: &str) -> Result<u16, DpdkError> {
        let unknown = || DpdkError::UnknownPortName {
            name: name.to_string(),
        };
        let c_name = CString::new(name).map_err(|_| unknown())?;
        let mut port_id = 0u16;
        // SAFETY: c_name is NUL-terminated; port_id is a valid out-pointer.
        let ret = unsafe { sys::rte_eth_dev_get_port_by_name(c_name.as_ptr(), &mut port_id) };
        if ret < 0 {
            return Err(unknown());
        }
        Ok(port_id)
    }

    /// Creates a virtual device at run time, like `--vdev=name,args`, and returns its port id.
    /// Fails with [`DpdkError::Call`] when no loaded PMD matches `name`.
    pub fn create_vdev(&self, name: &str, args: &str) -> Result<u16, DpdkError> {
        let nul = |arg: &str| DpdkError::NulInArgument {
            arg: arg.to_string(),
        };
        let c_name = CString::new(name).map_err(|_| nul(name))?;
        let c_args = CString::new(args).map_err(|_| nul(args))?;
        // SAFETY: both strings are NUL-terminated and outlive the call.
        check("rte_vdev_init", unsafe {
            sys::rte_vdev_init(c_name.as_ptr(), c_args.as_ptr())
        })?;
        self.port_by_name(name)
    }

    /// Creates two `net_ring` ports wired back to back: what one transmits the other receives.
    /// Returns their ids; DPDK names them `net_ring_<name_a>` and `net_ring_<name_b>`. The rings
    /// live until the process exits.
    pub fn create_ring_pair(&self, name_a: &str, name_b: &str) -> Result<(u16, u16), DpdkError> {
        let nul = |arg: &str| DpdkError::NulInArgument {
            arg: arg.to_string(),
        };
        let ring = |suffix: &str| -> Result<NonNull<sys::rte_ring>, DpdkError> {
            let name = format!("{name_a}_{suffix}");
            let c_name = CString::new(name.as_str()).map_err(|_| nul(&name))?;
            // SAFETY: c_name is NUL-terminated; DPDK copies the name. 1024 is a power of two as
            // rte_ring_create requires; flags 0 = multi-producer/multi-consumer.
            let ring =
                unsafe { sys::rte_ring_create(c_name.as_ptr(), 1024, sys::SOCKET_ID_ANY, 0) };
            NonNull::new(ring).ok_or_else(|| DpdkError::call("rte_ring_create", rte_errno()))
        };
        let a_to_b = ring("ab")?.as_ptr();
        let b_to_a = ring("ba")?.as_ptr();
        let port = |name: &str, rx: *mut sys::rte_ring, tx: *mut sys::rte_ring| {
            let c_name = CString::new(name).map_err(|_| nul(name))?;
            // SAFETY: c_name is NUL-terminated; rx and tx point at one live ring each (count 1),
            // which we never free, so they outlive the port.
            let ret = unsafe { sys::rte_eth_from_rings(c_name.as_ptr(), &rx, 1, &tx, 1, 0) };
            if ret < 0 {
                return Err(DpdkError::call("rte_eth_from_rings", rte_errno()));
            }
            u16::try_from(ret).map_err(|_| DpdkError::call("rte_eth_from_rings", 0))
        };
        Ok((port(name_a, b_to_a, a_to_b)?, port(name_b, a_to_b, b_to_a)?))
    }
}

impl Drop for Eal {
    fn drop(&mut self) {
        // SAFETY: returns a pointer to the EAL's NUL-terminated runtime directory path, valid
        // until cleanup; we copy it at once.
        let runtime_dir = unsafe {
            let dir = sys::rte_eal_get_runtime_dir();
            (!dir.is_null()).then(|| CStr::from_ptr(dir).to_string_lossy().into_owned())
        };
        // SAFETY: every object that used the EAL borrowed this Eal and is gone; Eal is !Send, so
        // this runs on the thread that initialised it.
        unsafe { sys::rte_eal_cleanup() };
        // DPDK 22.11 leaves its runtime directory (/var/run/dpdk/<file-prefix>) behind. Remove it
        // when it is empty (--no-shconf); a directory other processes still use is not empty.
        if let Some(dir) = runtime_dir {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// EAL options for a process that uses only virtual devices (tests, pcap tools): no hugepages
/// (256 MiB of ordinary memory), no PCI scan, no shared config, no telemetry, lcore 0, quiet
/// logs, and `--file-prefix=<prefix>` so concurrent processes never share DPDK state. Append
/// `--vdev=...` options to it.
pub fn virtual_device_args(prefix: &str) -> Vec<String> {
    let mut args: Vec<String> = [
        "--no-huge",
        "-m",
        "256",
        "--no-pci",
        "--no-shconf",
        "--no-telemetry",
        "-l",
        "0",
        "--log-level=*:error",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(format!("--file-prefix={prefix}"));
    args
}

/// Removes DPDK's runtime directory for a file prefix when dropped, if it is empty: an EAL that
/// is leaked (for `'static` lcore I/O) or failed to start never cleans up after itself.
#[derive(Debug)]
pub struct RuntimeDir(String);

impl RuntimeDir {
    /// Guards the runtime directory of `--file-prefix=<prefix>`.
    pub fn new(prefix: &str) -> RuntimeDir {
        RuntimeDir(prefix.to_string())
    }
}

impl Drop for RuntimeDir {
    fn drop(&mut self) {
        let mut bases = vec!["/var/run/dpdk".to_string(), "/tmp/dpdk".to_string()];
        if let Ok(xdg) = std::env::var("XDG_RUNTIME_DIR") {
            bases.push(format!("{xdg}/dpdk"));
        }
        for base in bases {
            // Only an empty directory is removed; anything else is left alone.
            let _ = std::fs::remove_dir(format!("{base}/{}", self.0));
        }
    }
}

/// Makes the calling thread (not created by DPDK) an EAL thread with its own lcore id, so it
/// gets a per-lcore cache in every mempool (allocation and free then rarely touch the shared
/// ring). Returns the lcore id; a thread that already has one keeps it. Fails when every lcore id
/// (`RTE_MAX_LCORE`) is taken.
pub fn register_thread() -> Result<u32, DpdkError> {
    if let Some(id) = lcore_id() {
        return Ok(id);
    }
    // SAFETY: registers the calling thread with the EAL (which the caller initialised: it
    // exists for the process's life once `Eal::init` succeeded, and this crate never cleans it
    // up while threads run); no pointers are involved.
    let ret = unsafe { sys::rte_thread_register() };
    if ret < 0 {
        return Err(DpdkError::call("rte_thread_register", rte_errno()));
    }
    lcore_id().ok_or_else(|| DpdkError::call("rte_thread_register", libc_errno::EINVAL))
}

/// The EAL lcore id of the calling thread, or `None` for a thread DPDK did not create.
pub fn lcore_id() -> Option<u32> {
    // SAFETY: reads a thread-local; no preconditions.
    let id = unsafe { sys::shim_rte_lcore_id() };
    (id != u32::MAX).then_some(id) // LCORE_ID_ANY
}

/// A pool of packet mbufs (`rte_pktmbuf_pool_create`), freed on drop.
#[derive(Debug)]
pub struct Mempool<'eal> {
    pool: NonNull<sys::rte_mempool>,
    _eal: PhantomData<&'eal Eal>,
}

// SAFETY: DPDK mempools created with default flags are multi-producer/multi-consumer; allocating
// and freeing from any thread is supported.
unsafe impl Send for Mempool<'_> {}
// SAFETY: as above; `&Mempool` only allocates and reads immutable properties.
unsafe impl Sync for Mempool<'_> {}

impl<'eal> Mempool<'eal> {
    /// `RTE_MBUF_DEFAULT_BUF_SIZE`: 2048 bytes of frame after a 128-byte headroom.
    pub const DEFAULT_DATA_ROOM: u16 = sys::RTE_MBUF_DEFAULT_BUF_SIZE as u16;

    /// Creates a pool named `name` (unique per process, at most 25 bytes) of `n` mbufs, a per-lcore
    /// cache of `cache` mbufs (at most 512 and `n / 1.5`), and `data_room` bytes per mbuf
    /// including the headroom ([`Mempool::DEFAULT_DATA_ROOM`] fits 1500-byte MTU frames).
    pub fn new(
        _eal: &'eal Eal,
        name: &str,
        n: u32,
        cache: u32,
        data_room: u16,
    ) -> Result<Mempool<'eal>, DpdkError> {
        let c_name = CString::new(name).map_err(|_| DpdkError::NulInArgument {
            arg: name.to_string(),
        })?;
        // SAFETY: c_name is NUL-terminated and DPDK copies it; the other arguments are plain
        // values that DPDK validates.
        let pool = unsafe {
            sys::rte_pktmbuf_pool_create(
                c_name.as_ptr(),
                n,
                cache,
                0,
                data_room,
                sys::rte_socket_id() as c_int,
            )
        };
        NonNull::new(pool)
            .map(|pool| Mempool {
                pool,
                _eal: PhantomData,
            })
            .ok_or_else(|| DpdkError::call("rte_pktmbuf_pool_create", rte_errno()))
    }

    /// Takes one mbuf with an empty frame and the default headroom; `None` when the pool is empty.
    pub fn alloc(&self) -> Option<Mbuf<'_>> {
        // SAFETY: self.pool is a live packet mempool.
        let m = unsafe { sys::shim_rte_pktmbuf_alloc(self.pool.as_ptr()) };
        NonNull::new(m).map(|m| Mbuf {
            m,
            _pool: PhantomData,
        })
    }

    /// Takes one mbuf and copies `frame` into it; `None` when the pool is empty or the frame
    /// does not fit.
    pub fn alloc_frame(&self, frame: &[u8]) -> Option<Mbuf<'_>> {
        let mut m = self.alloc()?;
        m.append(frame.len())?.copy_from_slice(frame);
        Some(m)
    }

    /// Bytes per mbuf including the headroom (the `data_room` it was created with).
    pub fn data_room(&self) -> u16 {
        // SAFETY: self.pool is a live packet mempool (its private area holds the data room).
        unsafe { sys::shim_rte_pktmbuf_data_room_size(self.pool.as_ptr()) }
    }

    /// Mbufs currently free in the pool (including per-lcore caches).
    pub fn available(&self) -> u32 {
        // SAFETY: self.pool is live; the count is a racy snapshot, which is all it claims.
        unsafe { sys::rte_mempool_avail_count(self.pool.as_ptr()) }
    }

    /// The raw pool, for FFI the wrapper does not cover.
    pub fn as_ptr(&self) -> *mut sys::rte_mempool {
        self.pool.as_ptr()
    }
}

impl Drop for Mempool<'_> {
    fn drop(&mut self) {
        // SAFETY: every Mbuf and Port using this pool borrowed it and is gone, so no mbuf of it
        // is in use.
        unsafe { sys::rte_mempool_free(self.pool.as_ptr()) };
    }
}

/// One packet buffer owned by Rust; freed back to its pool on drop.
///
/// The frame is the mbuf's first segment; vipd configures ports so frames fit one segment.
#[derive(Debug)]
#[repr(transparent)]
pub struct Mbuf<'pool> {
    m: NonNull<sys::rte_mbuf>,
    _pool: PhantomData<&'pool Mempool<'pool>>,
}

// SAFETY: an Mbuf is uniquely owned; DPDK allows freeing an mbuf on any thread.
unsafe impl Send for Mbuf<'_> {}

impl<'pool> Mbuf<'pool> {
    /// The frame's bytes.
    #[inline]
    pub fn data(&self) -> &[u8] {
        // SAFETY: we own the mbuf; buf_addr + data_off (what rte_pktmbuf_mtod computes) points
        // at data_len initialised bytes of its first segment, valid while we hold &self. The
        // fields are read in Rust rather than through the C shim: this is the hottest accessor.
        unsafe {
            let m = self.m.as_ptr();
            let start = (*m).buf_addr.cast::<u8>().add(usize::from((*m).data_off));
            std::slice::from_raw_parts(start, usize::from((*m).data_len))
        }
    }

    /// The frame's bytes, writable.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in data(); &mut self makes the access exclusive.
        unsafe {
            let m = self.m.as_ptr();
            let start = (*m).buf_addr.cast::<u8>().add(usize::from((*m).data_off));
            std::slice::from_raw_parts_mut(start, usize::from((*m).data_len))
        }
    }

    /// Number of segments: 1 for a frame in one buffer. The wrapper's accessors see only the
    /// first segment, so callers must not process a chained mbuf as a whole frame.
    #[inline]
    pub fn segments(&self) -> u16 {
        // SAFETY: we own a live mbuf; a plain field read.
        unsafe { (*self.m.as_ptr()).nb_segs }
    }

    /// Whether the whole frame is in this one buffer (no chained segments).
    #[inline]
    pub fn is_contiguous(&self) -> bool {
        self.segments() <= 1
    }

    /// Length of the frame in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        // SAFETY: we own a live mbuf; a plain field read.
        usize::from(unsafe { (*self.m.as_ptr()).data_len })
    }

    /// Whether the frame is empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Free bytes in front of the frame.
    #[inline]
    pub fn headroom(&self) -> usize {
        // SAFETY: we own a live mbuf; rte_pktmbuf_headroom is the data_off field.
        usize::from(unsafe { (*self.m.as_ptr()).data_off })
    }

    /// Free bytes behind the frame.
    #[inline]
    pub fn tailroom(&self) -> usize {
        // SAFETY: we own a live mbuf.
        usize::from(unsafe { sys::shim_rte_pktmbuf_tailroom(self.m.as_ptr()) })
    }

    /// Grows the frame at the front by `len` bytes (content unspecified). Returns false, changing
    /// nothing, when the headroom is too small.
    #[inline]
    pub fn prepend(&mut self, len: usize) -> bool {
        let Ok(len) = u16::try_from(len) else {
            return false;
        };
        // SAFETY: we own the mbuf exclusively. This is rte_pktmbuf_prepend in Rust (it is on
        // the encapsulation path): check the headroom, then move the start back by len.
        unsafe {
            let m = self.m.as_ptr();
            if len > (*m).data_off {
                return false;
            }
            (*m).data_off -= len;
            (*m).data_len += len;
            (*m).pkt_len += u32::from(len);
        }
        true
    }

    /// Removes `len` bytes from the front. Returns false, changing nothing, if the frame is
    /// shorter.
    #[inline]
    pub fn adj(&mut self, len: usize) -> bool {
        let Ok(len) = u16::try_from(len) else {
            return false;
        };
        // SAFETY: we own the mbuf exclusively. This is rte_pktmbuf_adj in Rust: check len
        // against data_len, then move the start forward by len.
        unsafe {
            let m = self.m.as_ptr();
            if len > (*m).data_len {
                return false;
            }
            (*m).data_len -= len;
            (*m).data_off += len;
            (*m).pkt_len -= u32::from(len);
        }
        true
    }

    /// Shortens the frame to `len` bytes; a no-op when it is already that short.
    #[inline]
    pub fn truncate(&mut self, len: usize) {
        let cur = self.len();
        if len >= cur {
            return;
        }
        // cur fits u16 (it is a data_len), and so does the smaller difference.
        let cut = (cur - len) as u16;
        // SAFETY: we own the mbuf exclusively; cut <= data_len of the (single) segment, so the
        // trim cannot fail.
        unsafe { sys::shim_rte_pktmbuf_trim(self.m.as_ptr(), cut) };
    }

    /// Grows the frame at the back by `len` bytes and returns them (content unspecified);
    /// `None`, changing nothing, when the tailroom is too small.
    pub fn append(&mut self, len: usize) -> Option<&mut [u8]> {
        let len16 = u16::try_from(len).ok()?;
        // SAFETY: we own the mbuf exclusively; rte_pktmbuf_append checks the tailroom and returns
        // NULL without changes when it is too small, else a pointer to `len` bytes inside the
        // mbuf's buffer that are now part of the frame.
        unsafe {
            let tail = sys::shim_rte_pktmbuf_append(self.m.as_ptr(), len16);
            if tail.is_null() {
                return None;
            }
            Some(std::slice::from_raw_parts_mut(tail.cast::<u8>(), len))
        }
    }

    /// Prefetches the frame's first cache line (call a few packets ahead of processing).
    #[inline]
    pub fn prefetch(&self) {
        // SAFETY: prefetching is a hint and never faults; the address is inside our mbuf.
        unsafe { sys::shim_rte_prefetch0(sys::shim_rte_pktmbuf_mtod(self.m.as_ptr())) };
    }

    /// Frees many mbufs, 32 per call into DPDK: unshared single-segment mbufs go straight back
    /// to their pool's per-lcore cache (`rte_mempool_put_bulk`), others through
    /// `rte_pktmbuf_free`. Cheaper than dropping them one by one.
    pub fn free_bulk<I: IntoIterator<Item = Mbuf<'pool>>>(mbufs: I) {
        const CHUNK: usize = 32;
        let mut raw = [ptr::null_mut::<sys::rte_mbuf>(); CHUNK];
        let mut n = 0usize;
        for m in mbufs {
            raw[n] = m.into_raw().as_ptr(); // n < CHUNK: flushed below when it reaches it
            n += 1;
            if n == CHUNK {
                // SAFETY: raw[..n] are mbufs we owned (into_raw gave up their Drop).
                unsafe { sys::shim_rte_pktmbuf_free_bulk_fast(raw.as_mut_ptr(), n as u32) };
                n = 0;
            }
        }
        if n > 0 {
            // SAFETY: as above.
            unsafe { sys::shim_rte_pktmbuf_free_bulk_fast(raw.as_mut_ptr(), n as u32) };
        }
    }

    /// Gives up ownership without freeing; pair with [`Mbuf::from_raw`].
    pub fn into_raw(self) -> NonNull<sys::rte_mbuf> {
        let m = self.m;
        std::mem::forget(self);
        m
    }

    /// Takes ownership of a raw mbuf.
    ///
    /// # Safety
    /// `m` must be a valid, single-owner mbuf (nobody else frees or uses it) allocated from a
    /// mempool that outlives `'pool`.
    pub unsafe fn from_raw(m: NonNull<sys::rte_mbuf>) -> Mbuf<'pool> {
        Mbuf {
            m,
            _pool: PhantomData,
        }
    }
}

impl Drop for Mbuf<'_> {
    fn drop(&mut self) {
        // SAFETY: we own the mbuf and its pool is alive ('pool).
        unsafe { sys::shim_rte_pktmbuf_free(self.m.as_ptr()) };
    }
}

/// How to configure a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortConfig {
    /// Receive queues (one per polling lcore).
    pub rx_queues: u16,
    /// Transmit queues (one per polling lcore).
    pub tx_queues: u16,
    /// Spread received flows over the receive queues by an IP/TCP/UDP hash (ignored for one
    /// queue); `None` = no RSS.
    pub rss: Option<Rss>,
    /// MTU in bytes (L3 payload; the frame adds 14-22 bytes of Ethernet, VLAN and FCS).
    pub mtu: u16,
    /// Descriptors per receive queue (DPDK rounds to what the device supports).
    pub rx_descriptors: u16,
    /// Descriptors per transmit queue (DPDK rounds to what the device supports).
    pub tx_descriptors: u16,
}

impl Default for PortConfig {
    fn default() -> Self {
        PortConfig {
            rx_queues: 1,
            tx_queues: 1,
            rss: None,
            mtu: 1500,
            rx_descriptors: 1024,
            tx_descriptors: 1024,
        }
    }
}

/// Receive-side scaling settings of a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rss {
    /// The Toeplitz key; `None` keeps the device's own. A key longer than the device's key size
    /// is cut to it (a key repeating a 16-bit pattern, the symmetric kind, stays symmetric).
    pub key: Option<&'static [u8]>,
    /// When the device has no RSS (e.g. `net_af_packet`, which spreads over its queues by
    /// itself): `true` makes that a configuration error, `false` configures the port without
    /// RSS ([`Port::rss_enabled`] tells which happened).
    pub required: bool,
}

/// Link state of a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Link {
    /// Whether the link is up.
    pub up: bool,
    /// Speed in Mbit/s (0 when unknown).
    pub speed_mbps: u32,
    /// Full duplex.
    pub full_duplex: bool,
}

/// Basic port counters (`rte_eth_stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortStats {
    /// Frames received.
    pub ipackets: u64,
    /// Frames sent.
    pub opackets: u64,
    /// Bytes received.
    pub ibytes: u64,
    /// Bytes sent.
    pub obytes: u64,
    /// Frames dropped by the device because the receive queues were full.
    pub imissed: u64,
    /// Erroneous frames received.
    pub ierrors: u64,
    /// Frames that failed to send.
    pub oerrors: u64,
    /// Receive failures because the mempool was empty.
    pub rx_nombuf: u64,
}

/// A configured ethdev port; stopped and closed on drop.
#[derive(Debug)]
pub struct Port<'pool> {
    id: u16,
    rx_queues: u16,
    tx_queues: u16,
    started: bool,
    rss_enabled: bool,
    _pool: PhantomData<&'pool Mempool<'pool>>,
}

impl<'pool> Port<'pool> {
    /// Configures port `id` with `config`, its receive queues refilling from `pool`. The port
    /// is left stopped; call [`Port::start`].
    pub fn configure(
        pool: &'pool Mempool<'_>,
        id: u16,
        config: &PortConfig,
    ) -> Result<Port<'pool>, DpdkError> {
        // SAFETY: plain query.
        if unsafe { sys::rte_eth_dev_is_valid_port(id) } == 0 {
            return Err(DpdkError::UnknownPort {
                port_id: id,
                // SAFETY: plain query.
                available: unsafe { sys::rte_eth_dev_count_avail() },
            });
        }
        let bad = |what: String| DpdkError::PortConfig { port_id: id, what };
        let mut info = sys::rte_eth_dev_info::default();
        // SAFETY: id is a valid port; info is a valid out-pointer.
        check("rte_eth_dev_info_get", unsafe {
            sys::rte_eth_dev_info_get(id, &mut info)
        })?;
        if config.rx_queues == 0 || config.rx_queues > info.max_rx_queues {
            return Err(bad(format!(
                "{} rx queues requested; the device supports 1..={}",
                config.rx_queues, info.max_rx_queues
            )));
        }
        if config.tx_queues == 0 || config.tx_queues > info.max_tx_queues {
            return Err(bad(format!(
                "{} tx queues requested; the device supports 1..={}",
                config.tx_queues, info.max_tx_queues
            )));
        }
        if config.mtu < info.min_mtu || config.mtu > info.max_mtu {
            return Err(bad(format!(
                "MTU {} is outside the device's {}..={}",
                config.mtu, info.min_mtu, info.max_mtu
            )));
        }
        let frame_room = u32::from(pool.data_room()).saturating_sub(sys::RTE_PKTMBUF_HEADROOM);
        if u32::from(config.mtu) + FRAME_OVERHEAD > frame_room {
            return Err(bad(format!(
                "MTU {} needs {} bytes per mbuf after the headroom but the mempool has {}; \
                 lower the MTU or create the mempool with a larger data_room",
                config.mtu,
                u32::from(config.mtu) + FRAME_OVERHEAD,
                frame_room
            )));
        }

        let mut conf = sys::rte_eth_conf::default();
        conf.rxmode.mtu = u32::from(config.mtu);
        // The key must outlive rte_eth_dev_configure, which copies it.
        let mut rss_key = [0u8; 64];
        let mut rss_enabled = false;
        if let (Some(rss), true) = (config.rss, config.rx_queues > 1) {
            // SAFETY: constant getters.
            let wanted = unsafe {
                sys::shim_rte_eth_rss_ip()
                    | sys::shim_rte_eth_rss_tcp()
                    | sys::shim_rte_eth_rss_udp()
            };
            let hash = wanted & info.flow_type_rss_offloads;
            if hash == 0 && rss.required {
                return Err(bad(
                    "the device does not support RSS over IP/TCP/UDP; use one rx queue or an \
                     rss mode that does not require it (auto, off)"
                        .to_string(),
                ));
            }
            if hash != 0 {
                conf.rxmode.mq_mode = sys::RTE_ETH_MQ_RX_RSS;
                conf.rx_adv_conf.rss_conf.rss_hf = hash;
                if let Some(key) = rss.key {
                    // Devices that do not say use the common 40-byte key.
                    let size = match usize::from(info.hash_key_size) {
                        0 => 40,
                        n => n,
                    };
                    if key.len() < size || size > rss_key.len() {
                        return Err(bad(format!(
                            "the RSS key has {} bytes but the device wants {size}; give a key \
                             of at least {size} bytes",
                            key.len()
                        )));
                    }
                    rss_key[..size].copy_from_slice(&key[..size]);
                    conf.rx_adv_conf.rss_conf.rss_key = rss_key.as_mut_ptr();
                    conf.rx_adv_conf.rss_conf.rss_key_len = size as u8; // size <= 64
                }
                rss_enabled = true;
            }
        }
        // SAFETY: id is valid, conf is a fully initialised configuration.
        check("rte_eth_dev_configure", unsafe {
            sys::rte_eth_dev_configure(id, config.rx_queues, config.tx_queues, &conf)
        })?;
        // From here on, a failure must still close the port: Port's Drop does that.
        let port = Port {
            id,
            rx_queues: config.rx_queues,
            tx_queues: config.tx_queues,
            started: false,
            rss_enabled,
            _pool: PhantomData,
        };
        if rss_enabled && !conf.rx_adv_conf.rss_conf.rss_key.is_null() {
            // Some PMDs (net_null among them) ignore the key given to rte_eth_dev_configure;
            // setting it again explicitly makes every device use it.
            let mut rss_conf = conf.rx_adv_conf.rss_conf;
            // SAFETY: id is configured; rss_conf points at rss_key (alive for this scope).
            let ret = unsafe { sys::rte_eth_dev_rss_hash_update(id, &mut rss_conf) };
            if ret < 0 {
                return Err(bad(format!(
                    "the device did not accept the RSS key ({}); use rss mode device-key or off",
                    strerror(-ret)
                )));
            }
        }
        let (mut nb_rx, mut nb_tx) = (config.rx_descriptors, config.tx_descriptors);
        // SAFETY: id is configured; both are valid in/out pointers.
        check("rte_eth_dev_adjust_nb_rx_tx_desc", unsafe {
            sys::rte_eth_dev_adjust_nb_rx_tx_desc(id, &mut nb_rx, &mut nb_tx)
        })?;
        // SOCKET_ID_ANY (-1) when the device has no NUMA node, which DPDK accepts as "any".
        // SAFETY: plain query.
        let socket = unsafe { sys::rte_eth_dev_socket_id(id) } as u32;
        for q in 0..config.rx_queues {
            // SAFETY: id is configured with rx_queues queues; null rx_conf = device defaults;
            // the pool outlives the port ('pool), so the queue never refills from a freed pool.
            check("rte_eth_rx_queue_setup", unsafe {
                sys::rte_eth_rx_queue_setup(id, q, nb_rx, socket, ptr::null(), pool.as_ptr())
            })?;
        }
        for q in 0..config.tx_queues {
            // SAFETY: id is configured with tx_queues queues; null tx_conf = device defaults.
            check("rte_eth_tx_queue_setup", unsafe {
                sys::rte_eth_tx_queue_setup(id, q, nb_tx, socket, ptr::null())
            })?;
        }
        Ok(port)
    }

    /// The port id.
    pub fn id(&self) -> u16 {
        self.id
    }

    /// Whether the port was configured with RSS (asked for, several RX queues, and supported
    /// by the device).
    pub fn rss_enabled(&self) -> bool {
        self.rss_enabled
    }

    /// The RSS key the device is using (read back from the device; empty without RSS).
    pub fn rss_key(&self) -> Result<Vec<u8>, DpdkError> {
        if !self.rss_enabled {
            return Ok(Vec::new());
        }
        let mut key = [0u8; 64];
        let mut conf = sys::rte_eth_rss_conf {
            rss_key: key.as_mut_ptr(),
            rss_key_len: 64,
            ..Default::default()
        };
        // SAFETY: valid port; conf points at a 64-byte buffer, larger than any device key
        // (DPDK copies at most the device's hash_key_size into it).
        check("rte_eth_dev_rss_hash_conf_get", unsafe {
            sys::rte_eth_dev_rss_hash_conf_get(self.id, &mut conf)
        })?;
        let mut info = sys::rte_eth_dev_info::default();
        // SAFETY: valid port; info is a valid out-pointer.
        check("rte_eth_dev_info_get", unsafe {
            sys::rte_eth_dev_info_get(self.id, &mut info)
        })?;
        let len = match usize::from(info.hash_key_size) {
            0 => 40,
            n => n.min(key.len()),
        };
        Ok(key[..len].to_vec())
    }

    /// The name of the device's driver (e.g. `net_af_packet`, `net_ring`).
    pub fn driver_name(&self) -> String {
        let mut info = sys::rte_eth_dev_info::default();
        // SAFETY: id is a valid port; info is a valid out-pointer.
        if unsafe { sys::rte_eth_dev_info_get(self.id, &mut info) } < 0
            || info.driver_name.is_null()
        {
            return String::new();
        }
        // SAFETY: driver_name points at the driver's static NUL-terminated name.
        unsafe { CStr::from_ptr(info.driver_name) }
            .to_string_lossy()
            .into_owned()
    }

    /// Starts the port (its queues begin to receive and send).
    pub fn start(&mut self) -> Result<(), DpdkError> {
        // SAFETY: the port is configured with all queues set up.
        check("rte_eth_dev_start", unsafe {
            sys::rte_eth_dev_start(self.id)
        })?;
        self.started = true;
        Ok(())
    }

    /// Stops the port; [`Port::start`] starts it again.
    pub fn stop(&mut self) -> Result<(), DpdkError> {
        // SAFETY: the port is configured; &mut self means no burst runs concurrently.
        check("rte_eth_dev_stop", unsafe {
            sys::rte_eth_dev_stop(self.id)
        })?;
        self.started = false;
        Ok(())
    }

    /// Sets the link administratively up or down (`rte_eth_dev_set_link_up/down`); not every
    /// driver supports it.
    pub fn set_link(&mut self, up: bool) -> Result<(), DpdkError> {
        set_link_of(self.id, up)
    }

    /// Accepts frames for any destination MAC (or stops doing so).
    pub fn set_promiscuous(&mut self, on: bool) -> Result<(), DpdkError> {
        // SAFETY: the port is configured.
        let ret = unsafe {
            if on {
                sys::rte_eth_promiscuous_enable(self.id)
            } else {
                sys::rte_eth_promiscuous_disable(self.id)
            }
        };
        check("rte_eth_promiscuous_enable/disable", ret).map(drop)
    }

    /// The current link state, without waiting for autonegotiation.
    pub fn link(&self) -> Result<Link, DpdkError> {
        link_of(self.id)
    }

    /// Polls the link every 10 ms until it is up or `timeout` passed; a link still down is
    /// [`DpdkError::LinkDown`], naming what to check.
    pub fn wait_for_link(&self, timeout: std::time::Duration) -> Result<Link, DpdkError> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let link = self.link()?;
            if link.up {
                return Ok(link);
            }
            if std::time::Instant::now() >= deadline {
                return Err(DpdkError::LinkDown {
                    port_id: self.id,
                    waited_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// The port's counters since start (or the last reset).
    pub fn stats(&self) -> Result<PortStats, DpdkError> {
        let mut s = sys::rte_eth_stats::default();
        // SAFETY: valid port; s is a valid out-pointer.
        check("rte_eth_stats_get", unsafe {
            sys::rte_eth_stats_get(self.id, &mut s)
        })?;
        Ok(PortStats {
            ipackets: s.ipackets,
            opackets: s.opackets,
            ibytes: s.ibytes,
            obytes: s.obytes,
            imissed: s.imissed,
            ierrors: s.ierrors,
            oerrors: s.oerrors,
            rx_nombuf: s.rx_nombuf,
        })
    }

    /// The port's MAC address.
    pub fn mac(&self) -> Result<[u8; 6], DpdkError> {
        let mut addr = sys::rte_ether_addr::default();
        // SAFETY: valid port; addr is a valid out-pointer.
        check("rte_eth_macaddr_get", unsafe {
            sys::rte_eth_macaddr_get(self.id, &mut addr)
        })?;
        Ok(addr.addr_bytes)
    }

    /// Splits a started port into one [`PortQueue`] per queue index (RX queue `i` with TX
    /// queue `i`), each usable from its own lcore. The port cannot stop while they exist.
    pub fn queues(&mut self) -> Result<Vec<PortQueue<'_>>, DpdkError> {
        if !self.started {
            return Err(DpdkError::PortConfig {
                port_id: self.id,
                what: "queues() needs a started port; call start() first".to_string(),
            });
        }
        Ok((0..self.rx_queues.max(self.tx_queues))
            .map(|queue| PortQueue {
                port_id: self.id,
                queue,
                rx: queue < self.rx_queues,
                tx: queue < self.tx_queues,
                _port: PhantomData,
            })
            .collect())
    }

    /// Receives up to `N` frames from `queue` into `out[..n]` and returns `n`. Slots that held
    /// mbufs are overwritten (their mbufs freed). Returns 0 when the port is stopped or has no
    /// such queue.
    #[inline]
    pub fn rx_burst<const N: usize>(
        &mut self,
        queue: u16,
        out: &mut [Option<Mbuf<'pool>>; N],
    ) -> usize {
        if queue >= self.rx_queues || !self.started {
            debug_assert!(
                queue < self.rx_queues,
                "rx queue {queue} >= {}",
                self.rx_queues
            );
            return 0;
        }
        // SAFETY: started and queue < rx_queues (checked above); &mut self keeps other threads
        // off the port; its queues refill from the pool it borrows for 'pool.
        unsafe { rx_burst_raw(self.id, queue, out) }
    }

    /// Queues the mbufs in `pkts` (the `Some` slots, in order) for sending on `queue` and
    /// returns how many the device took. Taken slots become `None`; the mbufs the device did not
    /// take (its queue was full) stay in their slots for the caller to retry or drop. Sends
    /// nothing when the port is stopped or has no such queue.
    #[inline]
    pub fn tx_burst<const N: usize>(
        &mut self,
        queue: u16,
        pkts: &mut [Option<Mbuf<'_>>; N],
    ) -> usize {
        if queue >= self.tx_queues || !self.started {
            debug_assert!(
                queue < self.tx_queues,
                "tx queue {queue} >= {}",
                self.tx_queues
            );
            return 0;
        }
        // SAFETY: started and queue < tx_queues (checked above); &mut self keeps other threads
        // off the port.
        unsafe { tx_burst_raw(self.id, queue, pkts) }
    }
}

impl Drop for Port<'_> {
    fn drop(&mut self) {
        // SAFETY: &mut self: no burst is running. Closing frees the queues' mbufs while their
        // pool is still alive ('pool). Errors are ignored: there is nothing left to do.
        unsafe {
            if self.started {
                sys::rte_eth_dev_stop(self.id);
            }
            sys::rte_eth_dev_close(self.id);
        }
    }
}

/// One queue index of a started port, for one lcore: RX and/or TX queue `queue()`.
///
/// Made by [`Port::queues`], which hands out each index once, so two threads never poll the same
/// queue; the mutable borrow of the port keeps it started while any `PortQueue` exists.
#[derive(Debug)]
pub struct PortQueue<'port> {
    port_id: u16,
    queue: u16,
    rx: bool,
    tx: bool,
    _port: PhantomData<&'port ()>,
}

impl<'port> PortQueue<'port> {
    /// The port id.
    pub fn port_id(&self) -> u16 {
        self.port_id
    }

    /// The queue index.
    pub fn queue(&self) -> u16 {
        self.queue
    }

    /// Like [`Port::rx_burst`] on this queue; 0 when the port has no RX queue of this index.
    #[inline]
    pub fn rx_burst<const N: usize>(&mut self, out: &mut [Option<Mbuf<'port>>; N]) -> usize {
        if !self.rx {
            return 0;
        }
        // SAFETY: Port::queues made this handle from a started port whose mutable borrow keeps
        // it started for 'port, gave each index to one handle only, and &mut self keeps the
        // handle on one thread; the port's pool outlives the port borrow 'port.
        unsafe { rx_burst_raw(self.port_id, self.queue, out) }
    }

    /// Receives up to `N` frames and hands each to `each`, in order; returns how many. The
    /// cheapest receive: no `Option` slots in between.
    #[inline]
    pub fn rx_burst_with<const N: usize>(&mut self, mut each: impl FnMut(Mbuf<'port>)) -> usize {
        if !self.rx {
            return 0;
        }
        let mut raw = [ptr::null_mut::<sys::rte_mbuf>(); N];
        let want = u16::try_from(N).unwrap_or(u16::MAX);
        // SAFETY: as in rx_burst (started port, this handle's own queue, one thread); raw has
        // room for `want` pointers.
        let n =
            unsafe { sys::shim_rte_eth_rx_burst(self.port_id, self.queue, raw.as_mut_ptr(), want) };
        let n = usize::from(n).min(N);
        for &m in &raw[..n] {
            if let Some(m) = NonNull::new(m) {
                // Received mbufs are ours now, from the port's pool (outlives 'port).
                each(Mbuf {
                    m,
                    _pool: PhantomData,
                });
            }
        }
        n
    }

    /// Like [`Port::tx_burst`] on this queue; 0 when the port has no TX queue of this index.
    #[inline]
    pub fn tx_burst<const N: usize>(&mut self, pkts: &mut [Option<Mbuf<'_>>; N]) -> usize {
        if !self.tx {
            return 0;
        }
        // SAFETY: as in rx_burst, for the TX queue.
        unsafe { tx_burst_raw(self.port_id, self.queue, pkts) }
    }
}

/// The body of every RX burst.
///
/// # Safety
/// `port_id` is started, `queue` is one of its RX queues, no other thread polls that queue, and
/// the queue's mempool outlives `'pool`.
#[inline]
unsafe fn rx_burst_raw<'pool, const N: usize>(
    port_id: u16,
    queue: u16,
    out: &mut [Option<Mbuf<'pool>>; N],
) -> usize {
    let mut raw = [ptr::null_mut::<sys::rte_mbuf>(); N];
    let want = u16::try_from(N).unwrap_or(u16::MAX);
    // SAFETY: the port is started and queue is one of its RX queues (the caller's contract:
    // DPDK does not check either on the fast path); raw has room for `want` pointers; only
    // this thread polls the queue.
    let n = unsafe { sys::shim_rte_eth_rx_burst(port_id, queue, raw.as_mut_ptr(), want) };
    let n = usize::from(n).min(N);
    for (slot, &m) in out.iter_mut().zip(&raw[..n]) {
        // Received mbufs are ours now and come from `pool` ('pool).
        *slot = NonNull::new(m).map(|m| Mbuf {
            m,
            _pool: PhantomData,
        });
    }
    n
}

/// The body of every TX burst.
///
/// # Safety
/// `port_id` is started, `queue` is one of its TX queues and no other thread uses that queue.
#[inline]
unsafe fn tx_burst_raw<const N: usize>(
    port_id: u16,
    queue: u16,
    pkts: &mut [Option<Mbuf<'_>>; N],
) -> usize {
    let mut raw = [ptr::null_mut::<sys::rte_mbuf>(); N];
    let mut slot_of = [0usize; N];
    let mut count = 0usize;
    for (i, slot) in pkts.iter().enumerate() {
        if let Some(m) = slot {
            raw[count] = m.m.as_ptr(); // count <= i < N
            slot_of[count] = i;
            count += 1;
        }
    }
    let count16 = u16::try_from(count).unwrap_or(u16::MAX);
    // SAFETY: the port is started and queue is one of its TX queues (the caller's contract);
    // raw[..count16] are valid mbufs we own; the device takes ownership of the first `sent`
    // of them, which we then forget below.
    let sent = unsafe { sys::shim_rte_eth_tx_burst(port_id, queue, raw.as_mut_ptr(), count16) };
    let sent = usize::from(sent).min(count);
    for &i in &slot_of[..sent] {
        if let Some(m) = pkts[i].take() {
            // The driver owns it now and frees it after sending.
            std::mem::forget(m);
        }
    }
    sent
}

/// `rte_eth_dev_set_link_up/down` for port `id` (needs an initialised EAL).
fn set_link_of(id: u16, up: bool) -> Result<(), DpdkError> {
    // SAFETY: ethdev validates the id (-ENODEV for an unknown port); link up/down is a control
    // path operation drivers allow while the data path polls (testpmd's `set link-down port`).
    let ret = unsafe {
        if up {
            sys::rte_eth_dev_set_link_up(id)
        } else {
            sys::rte_eth_dev_set_link_down(id)
        }
    };
    check("rte_eth_dev_set_link_up/down", ret).map(drop)
}

/// `rte_eth_link_get_nowait` for port `id` (needs an initialised EAL).
fn link_of(id: u16) -> Result<Link, DpdkError> {
    let mut link = sys::rte_eth_link::default();
    // SAFETY: ethdev validates the id (-ENODEV for an unknown port); link is a valid
    // out-pointer. Callers hold an `Eal` or a `Port`, so the EAL is initialised.
    check("rte_eth_link_get_nowait", unsafe {
        sys::rte_eth_link_get_nowait(id, &mut link)
    })?;
    Ok(Link {
        up: u32::from(link.link_status()) == sys::RTE_ETH_LINK_UP,
        speed_mbps: link.link_speed,
        full_duplex: u32::from(link.link_duplex()) == sys::RTE_ETH_LINK_FULL_DUPLEX,
    })
}
