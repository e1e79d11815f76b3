//! Runs a bare instruction sequence (not a lambda object) in the kernel with
//! BPF_PROG_TEST_RUN, with the bpf_conformance convention: `r1` points at a block of memory,
//! `r2` holds its length, and `r0` at `exit` is the answer. The kernel is the reference the
//! userspace VM's engines are compared with.
//!
//! # How
//!
//! The kernel has no program type whose context is "a pointer to some bytes and their length",
//! so the program is loaded as an XDP program (the bpf_conformance project's libbpf plugin does
//! the same) behind a short prologue of our own:
//!
//! ```text
//!     r2 = *(u32 *)(r1 + 4)      ; ctx->data_end
//!     r1 = *(u32 *)(r1 + 0)      ; ctx->data         → the program's r1
//!     r0 = r1
//!     r0 += LEN
//!     if r0 <= r2 goto +2        ; proves [data, data + LEN) to the verifier
//!     r0 = 0
//!     exit                       ; (never taken: the packet is at least LEN bytes)
//!     r2 = LEN                   ; the program's r2
//!     r0 = 0                     ; no pointer left in r0
//!     <the program, unchanged>
//! ```
//!
//! The program's own jumps and bpf-to-bpf calls are relative, so they need no fixing. The memory
//! is the packet (`data_in`), padded with zeros to 14 bytes because XDP test runs refuse
//! anything shorter than an Ethernet header; the verifier still only allows the program the
//! `LEN` bytes the prologue proved.
//!
//! # 64-bit results
//!
//! BPF_PROG_TEST_RUN reports `retval` as a `u32` for XDP (and for every type that could carry
//! this context): the kernel truncates `r0`. The libbpf plugin of bpf_conformance prints that
//! `u32`, so against the kernel it can only compare the low 32 bits. Here a second load gets the
//! high half: the prologue is followed by `call <program>; r0 >>= 32; exit`, which runs the
//! program as a bpf-to-bpf subprogram (its `exit`s return to the wrapper). If the kernel refuses
//! that second form (for example because the program reads `r0` before writing it, which is
//! uninitialised in a subprogram, or the extra frame pushes the stack past 512 bytes), the result
//! keeps only the low 32 bits and says so ([`KernelValue::high`] is `None`).

use std::{
    ffi::c_void,
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use ebpf_isa::{Insn, encode};

use super::{VERIFIER_LOG_TAIL, VerifierLog};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
/// An XDP test run wants at least an Ethernet header's worth of packet.
const MIN_PACKET: usize = 14;
/// `XDP_PACKET_HEADROOM`.
const XDP_HEADROOM: usize = 256;
/// `SKB_DATA_ALIGN(sizeof(struct skb_shared_info))` on 64-bit kernels.
const XDP_TAILROOM: usize = 320;
/// The kernel's limit on instructions for a privileged load.
const MAX_INSNS: usize = 1_000_000;
/// Size of the buffer for the verifier log of a rejected program.
const LOG_SIZE: usize = 1 << 20;

/// Why a program could not be run in the kernel.
#[derive(Debug, thiserror::Error)]
pub enum RawRunError {
    /// The verifier refused the program. `log` holds the last lines of its log.
    #[error("the kernel verifier rejected the program ({errno}):\n{log}")]
    VerifierRejected { errno: io::Error, log: String },
    /// Not allowed to load BPF programs.
    #[error(
        "permission denied while {operation}: needs CAP_BPF + CAP_NET_ADMIN, or CAP_SYS_ADMIN (run as root) ({source})"
    )]
    PermissionDenied {
        operation: &'static str,
        #[source]
        source: io::Error,
    },
    /// The program has no instructions.
    #[error("the program is empty")]
    EmptyProgram,
    /// The program is longer than the kernel takes.
    #[error("the program has {len} instruction slots; the kernel takes at most {max}")]
    ProgramTooLarge { len: usize, max: usize },
    /// The memory does not fit an XDP test-run packet.
    #[error("{len} bytes of memory do not fit an XDP test-run packet (at most {max} bytes)")]
    MemoryTooLarge { len: usize, max: usize },
    /// Creating or filling one of the program's maps failed.
    #[error("map `{map}`: {source}")]
    Map {
        map: String,
        #[source]
        source: crate::maps::MapError,
    },
    /// A `bpf()` call failed for another reason.
    #[error("{operation}: {source}")]
    Syscall {
        operation: &'static str,
        #[source]
        source: io::Error,
    },
}

/// What the kernel returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelValue {
    /// The low 32 bits of `r0` (what BPF_PROG_TEST_RUN reports).
    pub low: u32,
    /// The high 32 bits of `r0`, when the second (wrapped) run could give them.
    pub high: Option<u32>,
}

impl KernelValue {
    /// The full 64-bit `r0`, if both halves are known.
    pub fn full(self) -> Option<u64> {
        self.high
            .map(|high| (u64::from(high) << 32) | u64::from(self.low))
    }

    /// Whether `value` agrees with what the kernel reported: all 64 bits when both halves are
    /// known, otherwise the low 32 bits only.
    pub fn agrees_with(self, value: u64) -> bool {
        match self.full() {
            Some(full) => full == value,
            None => value as u32 == self.low,
        }
    }

    /// How many bits [`KernelValue::agrees_with`] compares.
    pub fn bits(self) -> u32 {
        if self.high.is_some() { 64 } else { 32 }
    }
}

impl std::fmt::Display for KernelValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.full() {
            Some(full) => write!(f, "{full:#x}"),
            None => write!(f, "{:#x} (low 32 bits only)", self.low),
        }
    }
}

/// The largest memory block [`run_raw_in_kernel`] can pass (the XDP test-run limit).
pub fn max_raw_memory() -> usize {
    page_size().saturating_sub(XDP_HEADROOM + XDP_TAILROOM)
}

/// Runs `code` in the kernel with `r1` = a copy of `memory` and `r2` = its length, and returns
/// `r0` (see the module documentation for how, and for the 32/64-bit caveat).
pub fn run_raw_in_kernel(code: &[Insn], memory: &[u8]) -> Result<KernelValue, RawRunError> {
    if code.is_empty() {
        return Err(RawRunError::EmptyProgram);
    }
    let max_memory = max_raw_memory();
    if memory.len() > max_memory {
        return Err(RawRunError::MemoryTooLarge {
            len: memory.len(),
            max: max_memory,
        });
    }
    // Fits: max_memory is far below i32::MAX.
    let len = memory.len() as i32;
    let prologue = prologue(len);
    let max_code = MAX_INSNS - prologue.len() - WRAPPER.len();
    if code.len() > max_code {
        return Err(RawRunError::ProgramTooLarge {
            len: code.len(),
            max: max_code,
        });
    }
    let mut packet = memory.to_vec();
    if packet.len() < MIN_PACKET {
        packet.resize(MIN_PACKET, 0);
    }

    let mut direct = prologue.clone();
    direct.extend_from_slice(code);
    let prog = load_xdp(&direct)?;
    let low = test_run(&prog, &packet)?;
    drop(prog);

    let mut wrapped = prologue;
    wrapped.extend_from_slice(&WRAPPER);
    wrapped.extend_from_slice(code);
    let high = match load_xdp(&wrapped) {
        Ok(prog) => Some(test_run(&prog, &packet)?),
        Err(RawRunError::VerifierRejected { .. }) => None,
        Err(e) => return Err(e),
    };
    Ok(KernelValue { low, high })
}

/// `insns` with every map reference (`lddw` with a map pseudo source, `imm` = map index, as
/// `loader::link` and the verifier number them) pointed at the file descriptor of map `imm` in
/// `fds`. An index with no fd is left as it is: the kernel then refuses the program.
pub fn with_map_fds(insns: &[Insn], fds: &[OwnedFd]) -> Vec<Insn> {
    use std::os::fd::AsRawFd as _;
    let mut out = insns.to_vec();
    for insn in &mut out {
        if insn.is_lddw()
            && matches!(
                insn.src,
                ebpf_isa::opcode::PSEUDO_MAP_FD | ebpf_isa::opcode::PSEUDO_MAP_VALUE
            )
            && let Some(fd) = usize::try_from(insn.imm).ok().and_then(|m| fds.get(m))
        {
            insn.imm = fd.as_raw_fd();
        }
    }
    out
}

/// Loads `insns` as an XDP program; on failure, loads it again with a log to say why.
pub fn load_xdp(insns: &[Insn]) -> Result<OwnedFd, RawRunError> {
    load_xdp_bound(insns, 0)
}

/// Loads `insns` as an XDP program for hardware offload to the device `prog_ifindex`
/// (`bpf_attr.prog_ifindex`, which aya 0.14 cannot set): the kernel hands the program to the
/// driver's offload JIT, and the result can only attach with `XDP_FLAGS_HW_MODE` to that
/// device. `prog_ifindex` 0 is an ordinary host load. On failure, loads it again with a log to
/// say why; an offload refusal without a log is [`RawRunError::Syscall`] with the errno.
pub fn load_xdp_bound(insns: &[Insn], prog_ifindex: u32) -> Result<OwnedFd, RawRunError> {
    load_xdp_with(insns, prog_ifindex, None)
}

/// [`load_xdp_bound`] with BTF function information (see [`ProgramBtf`]).
pub fn load_xdp_with(
    insns: &[Insn],
    prog_ifindex: u32,
    btf: Option<&ProgramBtf>,
) -> Result<OwnedFd, RawRunError> {
    load_xdp_full(insns, prog_ifindex, btf, None)
}

/// An ordinary host load of `insns` under the program name `name` (what `bpftool prog`
/// shows; at most 15 bytes are kept).
pub fn load_xdp_named(insns: &[Insn], name: &str) -> Result<OwnedFd, RawRunError> {
    load_xdp_full(insns, 0, None, Some(name))
}

/// [`load_xdp_named`] with BTF function information (see [`ProgramBtf`]).
pub fn load_xdp_named_with(
    insns: &[Insn],
    name: &str,
    btf: Option<&ProgramBtf>,
) -> Result<OwnedFd, RawRunError> {
    load_xdp_full(insns, 0, btf, Some(name))
}

fn load_xdp_full(
    insns: &[Insn],
    prog_ifindex: u32,
    btf: Option<&ProgramBtf>,
    name: Option<&str>,
) -> Result<OwnedFd, RawRunError> {
    let bytes = encode(insns);
    let btf_fd = match btf {
        Some(btf) => Some(btf_load(&btf.blob)?),
        None => None,
    };
    let func = btf
        .zip(btf_fd.as_ref())
        .map(|(b, fd)| (fd, b.func_info.as_slice()));
    let prog_load = |code: &[u8], log: Option<&mut [u8]>, ifindex: u32| {
        prog_load_full(code, log, ifindex, func, name)
    };
    let first = match prog_load(&bytes, None, prog_ifindex) {
        Ok(fd) => return Ok(fd),
        Err(e) => e,
    };
    let mut log = vec![0u8; LOG_SIZE];
    if let Ok(fd) = prog_load(&bytes, Some(&mut log), prog_ifindex) {
        // Loaded the second time round: nothing to report.
        return Ok(fd);
    }
    let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
    let text = String::from_utf8_lossy(&log[..end]).into_owned();
    if text.trim().is_empty() {
        if matches!(first.raw_os_error(), Some(libc::EPERM)) {
            return Err(RawRunError::PermissionDenied {
                operation: "loading a program",
                source: first,
            });
        }
        return Err(RawRunError::Syscall {
            operation: "BPF_PROG_LOAD",
            source: first,
        });
    }
    Err(RawRunError::VerifierRejected {
        errno: first,
        log: VerifierLog::new(text).trimmed(VERIFIER_LOG_TAIL),
    })
}

/// `call +2; r0 >>= 32; exit`: runs the program that follows as a subprogram and returns the
/// high half of its `r0`.
const WRAPPER: [Insn; 3] = [
    Insn::new(0x85, 0, 1, 0, 2),  // call pc+1+2 (bpf-to-bpf)
    Insn::new(0x77, 0, 0, 0, 32), // r0 >>= 32
    Insn::new(0x95, 0, 0, 0, 0),  // exit
];

fn prologue(len: i32) -> Vec<Insn> {
    vec![
        Insn::new(0x61, 2, 1, 4, 0),   // r2 = *(u32 *)(r1 + 4): data_end
        Insn::new(0x61, 1, 1, 0, 0),   // r1 = *(u32 *)(r1 + 0): data
        Insn::new(0xbf, 0, 1, 0, 0),   // r0 = r1
        Insn::new(0x07, 0, 0, 0, len), // r0 += len
        Insn::new(0xbd, 0, 2, 2, 0),   // if r0 <= r2 goto +2
        Insn::new(0xb7, 0, 0, 0, 0),   // r0 = 0
        Insn::new(0x95, 0, 0, 0, 0),   // exit
        Insn::new(0xb7, 2, 0, 0, len), // r2 = len
        Insn::new(0xb7, 0, 0, 0, 0),   // r0 = 0
    ]
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size)
        .ok()
        .filter(|&s| s > 0)
        .unwrap_or(4096)
}

/// `union bpf_attr` for BPF_PROG_LOAD, up to `expected_attach_type` (the kernel zero-fills the
/// rest).
#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    prog_btf_fd: u32,
    func_info_rec_size: u32,
    func_info: u64,
    func_info_cnt: u32,
    line_info_rec_size: u32,
    line_info: u64,
    line_info_cnt: u32,
    attach_btf_id: u32,
}

/// BTF for a program that exists only as instructions: the raw BTF blob (header, types,
/// strings) and one `(insn_off, type_id)` record per function, sorted, the first at 0. With
/// it, functions whose BTF `FUNC` has global linkage are verified once, on their own, instead
/// of at every call site.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProgramBtf {
    pub blob: Vec<u8>,
    pub func_info: Vec<[u32; 2]>,
}

/// `union bpf_attr` for BPF_PROG_TEST_RUN.
#[repr(C)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// The `bpf(2)` system call; the kernel may write results back into `attr`.
///
/// # Safety
/// `attr` must be a valid `bpf_attr` prefix for `cmd`, and every pointer in it must point at
/// memory valid for what the command reads or writes.
unsafe fn bpf<A>(cmd: libc::c_long, attr: &mut A) -> io::Result<libc::c_long> {
    // SAFETY: the caller guarantees `attr` fits `cmd`; its size goes with it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut A as *mut c_void,
            size_of::<A>() as u32,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// BPF_BTF_LOAD: the BTF object's file descriptor, or the kernel's reason in its log.
fn btf_load(blob: &[u8]) -> Result<OwnedFd, RawRunError> {
    const BPF_BTF_LOAD: libc::c_long = 18;
    #[repr(C)]
    struct BtfLoadAttr {
        btf: u64,
        btf_log_buf: u64,
        btf_size: u32,
        btf_log_size: u32,
        btf_log_level: u32,
    }
    let mut log = vec![0u8; 64 * 1024];
    let mut attr = BtfLoadAttr {
        btf: blob.as_ptr() as u64,
        btf_log_buf: log.as_mut_ptr() as u64,
        btf_size: blob.len() as u32,
        btf_log_size: log.len() as u32,
        btf_log_level: 1,
    };
    // SAFETY: the blob and the log buffer outlive the call, with the sizes given.
    match unsafe { bpf(BPF_BTF_LOAD, &mut attr) } {
        // SAFETY: the kernel just returned this fd to us.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
        Err(source) if source.raw_os_error() == Some(libc::EPERM) => {
            Err(RawRunError::PermissionDenied {
                operation: "loading BTF",
                source,
            })
        }
        Err(errno) => {
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            Err(RawRunError::VerifierRejected {
                errno,
                log: format!("BTF: {}", String::from_utf8_lossy(&log[..end]).trim()),
            })
        }
    }
}

fn prog_load_full(
    code: &[u8],
    log: Option<&mut [u8]>,
    prog_ifindex: u32,
    func: Option<(&OwnedFd, &[[u32; 2]])>,
    name: Option<&str>,
) -> io::Result<OwnedFd> {
    // Names show in `bpftool prog`: a device-bound load is the offload probe or an offload.
    let label: &[u8] = match name {
        Some(name) => name.as_bytes(),
        None if prog_ifindex == 0 => b"conformance",
        None => b"lnic_offload",
    };
    let keep = label.len().min(15);
    let mut name = [0u8; 16];
    name[..keep].copy_from_slice(&label[..keep]);
    let (log_level, log_size, log_buf) = match log {
        Some(buf) => (1, buf.len() as u32, buf.as_mut_ptr() as u64),
        None => (0, 0, 0),
    };
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_XDP,
        insn_cnt: (code.len() / 8) as u32,
        insns: code.as_ptr() as u64,
        license: c"GPL".as_ptr() as u64,
        log_level,
        log_size,
        log_buf,
        kern_version: 0,
        prog_flags: 0,
        prog_name: name,
        prog_ifindex,
        expected_attach_type: BPF_XDP,
        prog_btf_fd: func.map_or(0, |(fd, _)| fd.as_raw_fd() as u32),
        func_info_rec_size: if func.is_some() { 8 } else { 0 },
        func_info: func.map_or(0, |(_, info)| info.as_ptr() as u64),
        func_info_cnt: func.map_or(0, |(_, info)| info.len() as u32),
        line_info_rec_size: 0,
        line_info: 0,
        line_info_cnt: 0,
        attach_btf_id: 0,
    };
    // SAFETY: the instructions, license and log buffer outlive the call, and the sizes given
    // are theirs.
    let fd = unsafe { bpf(BPF_PROG_LOAD, &mut attr) }?;
    // SAFETY: the kernel just returned this fd to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn test_run(prog: &OwnedFd, packet: &[u8]) -> Result<u32, RawRunError> {
    test_run_into(prog, packet, &mut []).map(|(retval, _, _)| retval)
}

/// Runs the loaded XDP program `prog` once on `packet`: the kernel-measured time of the run
/// in nanoseconds (it includes the kernel's fixed per-run timing cost).
pub fn test_run_ns(prog: std::os::fd::BorrowedFd<'_>, packet: &[u8]) -> Result<u32, RawRunError> {
    // SAFETY: as in `test_run_packet`: borrowed, never closed.
    let owned = std::mem::ManuallyDrop::new(unsafe { OwnedFd::from_raw_fd(prog.as_raw_fd()) });
    test_run_into(&owned, packet, &mut []).map(|(_, _, ns)| ns)
}

/// Runs the loaded XDP program `prog` once on `packet` (BPF_PROG_TEST_RUN): its return value
/// (the XDP action) and the packet as the program left it.
pub fn test_run_packet(
    prog: std::os::fd::BorrowedFd<'_>,
    packet: &[u8],
) -> Result<(u32, Vec<u8>), RawRunError> {
    // A program may grow the packet into the headroom and tailroom; a page holds any result.
    let mut out = vec![0u8; page_size().max(packet.len() + XDP_HEADROOM + XDP_TAILROOM)];
    // SAFETY: the fd is borrowed for the call only; `OwnedFd` is needed by the shared code,
    // which never closes it (ManuallyDrop).
    let owned = std::mem::ManuallyDrop::new(unsafe { OwnedFd::from_raw_fd(prog.as_raw_fd()) });
    let (retval, len, _) = test_run_into(&owned, packet, &mut out)?;
    out.truncate(len);
    Ok((retval, out))
}

fn test_run_into(
    prog: &OwnedFd,
    packet: &[u8],
    out: &mut [u8],
) -> Result<(u32, usize, u32), RawRunError> {
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        retval: 0,
        data_size_in: packet.len() as u32,
        data_size_out: out.len() as u32,
        data_in: packet.as_ptr() as u64,
        data_out: if out.is_empty() {
            0
        } else {
            out.as_mut_ptr() as u64
        },
        repeat: 1,
        duration: 0,
        ctx_size_in: 0,
        ctx_size_out: 0,
        ctx_in: 0,
        ctx_out: 0,
        flags: 0,
        cpu: 0,
        batch_size: 0,
        _pad: 0,
    };
    // SAFETY: the packet outlives the call and only is read; the output buffer, when given,
    // is `data_size_out` bytes that we own.
    match unsafe { bpf(BPF_PROG_TEST_RUN, &mut attr) } {
        Ok(_) => Ok((attr.retval, attr.data_size_out as usize, attr.duration)),
        Err(source) if source.raw_os_error() == Some(libc::EPERM) => {
            Err(RawRunError::PermissionDenied {
                operation: "test-running a program",
                source,
            })
        }
        Err(source) => Err(RawRunError::Syscall {
            operation: "BPF_PROG_TEST_RUN",
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_compare_on_the_bits_the_kernel_reported() {
        let low_only = KernelValue {
            low: 0x4433_2211,
            high: None,
        };
        assert!(low_only.agrees_with(0x8877_6655_4433_2211));
        assert!(!low_only.agrees_with(0x4433_2212));
        assert_eq!(low_only.bits(), 32);
        assert_eq!(low_only.full(), None);
        let both = KernelValue {
            low: 0x4433_2211,
            high: Some(0x8877_6655),
        };
        assert_eq!(both.full(), Some(0x8877_6655_4433_2211));
        assert!(both.agrees_with(0x8877_6655_4433_2211));
        assert!(!both.agrees_with(0x8977_6655_4433_2211));
        assert_eq!(both.to_string(), "0x8877665544332211");
    }

    #[test]
    fn the_kernel_gives_all_64_bits_and_sees_the_memory() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: BPF_PROG_LOAD needs root");
            return;
        }
        // r0 = 0x8877665544332211 (lddw); exit
        let lddw = [
            Insn::new(0x18, 0, 0, 0, 0x4433_2211),
            Insn::new(0, 0, 0, 0, 0x8877_6655_u32 as i32),
            Insn::new(0x95, 0, 0, 0, 0),
        ];
        let v = run_raw_in_kernel(&lddw, &[]).unwrap();
        assert_eq!(v.full(), Some(0x8877_6655_4433_2211));
        // r0 = *(u64 *)(r1 + 2) + r2
        let load = [
            Insn::new(0x79, 0, 1, 2, 0),
            Insn::new(0x0f, 0, 2, 0, 0),
            Insn::new(0x95, 0, 0, 0, 0),
        ];
        let memory = [0xaa, 0xbb, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88];
        let v = run_raw_in_kernel(&load, &memory).unwrap();
        assert_eq!(v.full(), Some(0x8877_6655_4433_2211 + 10));
        // One byte past the memory: the verifier must refuse, as the VM would fault.
        let past = [Insn::new(0x71, 0, 1, 10, 0), Insn::new(0x95, 0, 0, 0, 0)];
        match run_raw_in_kernel(&past, &memory) {
            Err(RawRunError::VerifierRejected { log, .. }) => assert!(!log.is_empty()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn empty_and_oversized_inputs_are_refused_before_any_syscall() {
        assert!(matches!(
            run_raw_in_kernel(&[], &[]),
            Err(RawRunError::EmptyProgram)
        ));
        let exit = [Insn::new(0x95, 0, 0, 0, 0)];
        let big = vec![0u8; max_raw_memory() + 1];
        assert!(matches!(
            run_raw_in_kernel(&exit, &big),
            Err(RawRunError::MemoryTooLarge { .. })
        ));
    }
}
