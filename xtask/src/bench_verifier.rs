//! `cargo xtask bench verifier`: our verifier's time against the kernel's, program by program.
//!
//! For every program of three corpora —
//!
//! - the sample lambdas (`target/lambdas/*.o`, linked with `loader::link::link_xdp`),
//! - the XDP cases of `verifier/tests/cases/` that expect acceptance,
//! - the bpf_conformance programs (`../shared/conformance/bpf_conformance/tests`), verified by
//!   us as raw-memory programs and loaded into the kernel as XDP behind a short prologue that
//!   turns the packet into their memory (the same convention as `loader::kernel::raw_run`)
//!
//! — it measures `verifier::verify` in this process (which also computes the bounds: executed
//! instructions, stack, map memory, backend eligibility) and the kernel's BPF_PROG_LOAD of the
//! same code with real maps: the wall-clock time of the syscall (verification, JIT, fd) and the
//! kernel's own "verification time" from its statistics log (BPF_LOG_STATS, whole µs). The two
//! are interleaved program by program in rounds (which one goes first alternates), and the
//! report gives medians across rounds, per program and per instruction slot, as ratios
//! ours / kernel. Only programs both sides accept are compared; the others are counted.
//!
//! Then linearity on loop-free code: straight-line XDP programs of 1 Ki to 32 Ki slots (ALU
//! operations and packet loads checked once against `data_end`), ns per slot for both at each
//! size.
//!
//! The verifier is timed as built: a debug build would measure the compiler's lack of
//! optimisation, so a debug xtask re-runs itself from a release build. Needs root
//! (BPF_PROG_LOAD, BPF_MAP_CREATE). The header names the machine and commit; the same data goes
//! to `target/bench/verifier-<commit>.json`.

use std::fmt::Write as _;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use ebpf_isa::{Insn, opcode as op};
use loader::LambdaParams;
use loader::link::{LinkedMapKind, link_xdp};
use loader::verify::verifier_input;
use serde_json::json;
use verifier::case_file::{CaseFile, Expect};
use verifier::{Backend, MapInfo, Options, ProgramInput, ProgramKind};

use crate::bench::{Header, median, require_root};

/// What `cargo xtask bench verifier` measures; see the module docs.
pub struct VerifierOptions {
    /// Rounds (programs interleaved within each, medians across them).
    pub rounds: u32,
    /// Verifications and loads of each program per round (their mean is the round's figure);
    /// scaled down for the long linearity programs.
    pub repeat: u32,
    /// Largest straight-line program for the linearity check, in slots.
    pub max_size: usize,
}

/// Smallest straight-line program of the linearity check; sizes double up to `max_size`.
const MIN_LINEAR_SIZE: usize = 1024;
/// Packet bytes the straight-line programs prove once and then read.
const LINEAR_WINDOW: i32 = 64;
/// Set by the debug build when it re-runs itself in release, so the release build never
/// recurses (it would not anyway: it has no debug assertions).
const REEXEC_ENV: &str = "LNIC_BENCH_VERIFIER_RELEASE";

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_MAP_FREEZE: libc::c_long = 22;
const BPF_PROG_TYPE_XDP: u32 = 6;
/// `BPF_F_RDONLY_PROG`: the program may only read the map.
const BPF_F_RDONLY_PROG: u32 = 1 << 7;
/// `BPF_LOG_STATS`: the log then holds only the statistics, among them the verification time.
const BPF_LOG_STATS: u32 = 4;
/// Enough for the statistics lines (and the end of a rejection's log).
const LOG_BYTES: usize = 64 * 1024;

/// Entry point: re-runs in release when built in debug, then measures.
pub fn verifier(root: &Path, opts: &VerifierOptions) -> Result<()> {
    require_root()?;
    if opts.rounds == 0 || opts.repeat == 0 {
        bail!("--rounds and --repeat must be at least 1");
    }
    if cfg!(debug_assertions) && std::env::var_os(REEXEC_ENV).is_none() {
        return rerun_in_release(root);
    }
    run(root, opts)
}

/// `cargo run --release -p xtask` with this process's arguments: an unoptimised verifier
/// against the kernel's optimised one would measure the build profile, not the verifier.
fn rerun_in_release(root: &Path) -> Result<()> {
    println!("==> xtask is a debug build: re-running the benchmark from a release build");
    let status = Command::new(crate::cargo())
        .current_dir(root)
        .args(["run", "--quiet", "--release", "--package", "xtask", "--"])
        .args(std::env::args_os().skip(1))
        .env(REEXEC_ENV, "1")
        .status()
        .context("running the release build of xtask")?;
    if !status.success() {
        bail!("the release build of the benchmark failed ({status})");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// bpf(2)

/// `bpf(2)` with an attribute block of `N` bytes; the return value (an fd or 0).
fn bpf<const N: usize>(cmd: libc::c_long, attr: &mut [u8; N]) -> std::io::Result<i64> {
    // SAFETY: `attr` is a valid, writable block of `N` bytes for the duration of the call, and
    // every pointer stored in it points to memory that outlives the call.
    let ret = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), N as libc::c_uint) };
    if ret < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(ret)
}

/// `bpf(2)` for a command that returns a new file descriptor.
fn bpf_fd<const N: usize>(cmd: libc::c_long, attr: &mut [u8; N]) -> std::io::Result<OwnedFd> {
    let fd = bpf(cmd, attr)?;
    // SAFETY: on success these commands return a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn put_u32(attr: &mut [u8], at: usize, v: u32) {
    attr[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put_u64(attr: &mut [u8], at: usize, v: u64) {
    attr[at..at + 8].copy_from_slice(&v.to_ne_bytes());
}

/// A map as the kernel should create it, with its initial contents for global data.
struct KernelMap {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    flags: u32,
    read_only: bool,
    /// Value of key 0 (global data); empty for declared maps.
    initial: Vec<u8>,
}

impl KernelMap {
    fn from_info(m: &MapInfo) -> KernelMap {
        KernelMap {
            map_type: m.map_type,
            key_size: m.key_size,
            value_size: m.value_size,
            max_entries: m.max_entries,
            flags: m.flags,
            read_only: m.read_only,
            initial: Vec::new(),
        }
    }

    /// BPF_MAP_CREATE, then for global data its value and, read-only, BPF_MAP_FREEZE, so the
    /// kernel sees the map exactly as the kernel backend leaves it.
    fn create(&self) -> std::io::Result<OwnedFd> {
        let mut attr = [0u8; 72];
        put_u32(&mut attr, 0, self.map_type);
        put_u32(&mut attr, 4, self.key_size);
        put_u32(&mut attr, 8, self.value_size);
        put_u32(&mut attr, 12, self.max_entries);
        let flags = self.flags | if self.read_only { BPF_F_RDONLY_PROG } else { 0 };
        put_u32(&mut attr, 16, flags);
        let fd = bpf_fd(BPF_MAP_CREATE, &mut attr)?;
        if !self.initial.is_empty() {
            let key = 0u32.to_ne_bytes();
            let mut value = self.initial.clone();
            value.resize(self.value_size as usize, 0);
            let mut attr = [0u8; 32];
            put_u32(&mut attr, 0, fd.as_raw_fd() as u32);
            put_u64(&mut attr, 8, key.as_ptr() as u64);
            put_u64(&mut attr, 16, value.as_ptr() as u64);
            bpf(BPF_MAP_UPDATE_ELEM, &mut attr)?;
        }
        if self.read_only {
            let mut attr = [0u8; 8];
            put_u32(&mut attr, 0, fd.as_raw_fd() as u32);
            bpf(BPF_MAP_FREEZE, &mut attr)?;
        }
        Ok(fd)
    }
}

/// What one BPF_PROG_LOAD gave.
struct KernelLoad {
    /// Wall clock around the syscall, ns.
    wall_ns: f64,
    /// The kernel's "verification time", µs.
    verify_us: Option<f64>,
    /// The kernel's "processed N insns".
    processed: Option<u64>,
}

/// Loads `insns` as XDP with statistics logging; Err carries the end of the kernel's log.
fn prog_load(insns: &[Insn], log: &mut [u8]) -> Result<KernelLoad, String> {
    let code = ebpf_isa::encode(insns);
    let license = b"GPL\0";
    log.fill(0);
    let mut attr = [0u8; 128];
    put_u32(&mut attr, 0, BPF_PROG_TYPE_XDP);
    put_u32(&mut attr, 4, insns.len() as u32);
    put_u64(&mut attr, 8, code.as_ptr() as u64);
    put_u64(&mut attr, 16, license.as_ptr() as u64);
    put_u32(&mut attr, 24, BPF_LOG_STATS);
    put_u32(&mut attr, 28, log.len() as u32);
    put_u64(&mut attr, 32, log.as_mut_ptr() as u64);
    attr[48..56].copy_from_slice(b"vfybench");
    let start = Instant::now();
    let result = bpf_fd(BPF_PROG_LOAD, &mut attr);
    let wall_ns = start.elapsed().as_nanos() as f64;
    let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
    let text = String::from_utf8_lossy(&log[..end]);
    match result {
        Ok(fd) => {
            drop(fd);
            Ok(KernelLoad {
                wall_ns,
                verify_us: number_after(&text, "verification time "),
                processed: number_after(&text, "processed ").map(|n| n as u64),
            })
        }
        Err(e) => {
            let tail: Vec<&str> = text.lines().rev().take(6).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            Err(format!("{e}: {}", tail.join(" | ")))
        }
    }
}

/// The number following `label` in the kernel's log.
fn number_after(text: &str, label: &str) -> Option<f64> {
    let rest = &text[text.find(label)? + label.len()..];
    rest.split_whitespace().next()?.parse().ok()
}

// ---------------------------------------------------------------------------------------------
// The programs

/// One program, as we verify it and as the kernel loads it.
struct Bench {
    group: &'static str,
    name: String,
    input: ProgramInput,
    /// The code the kernel loads: map fds patched in, and for conformance programs the
    /// prologue in front.
    kernel_insns: Vec<Insn>,
    /// Keeps the maps alive while the kernel code refers to their fds.
    _maps: Vec<OwnedFd>,
}

impl Bench {
    fn new(
        group: &'static str,
        name: String,
        input: ProgramInput,
        maps: &[KernelMap],
    ) -> Result<Bench> {
        let fds = maps
            .iter()
            .map(KernelMap::create)
            .collect::<std::io::Result<Vec<_>>>()
            .with_context(|| format!("{group} {name}: creating its maps"))?;
        let kernel_insns = match input.kind {
            ProgramKind::RawMemory { size } => raw_memory_prologue(size, &input.insns),
            ProgramKind::Xdp => loader::kernel::with_map_fds(&input.insns, &fds),
        };
        Ok(Bench {
            group,
            name,
            input,
            kernel_insns,
            _maps: fds,
        })
    }
}

/// The sample lambdas, linked as the kernel backend links them.
fn samples(root: &Path) -> Result<Vec<Bench>> {
    let dir = crate::lambdas_dir(root);
    let mut out = Vec::new();
    for path in files(&dir, "o") {
        let name = stem(&path);
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let (_, linked) = link_xdp(&bytes, &name, &LambdaParams::default())
            .with_context(|| format!("linking {}", path.display()))?;
        let maps: Vec<KernelMap> = linked
            .maps
            .iter()
            .map(|m| KernelMap {
                map_type: m.map_type,
                key_size: m.key_size,
                value_size: m.value_size,
                max_entries: m.max_entries,
                flags: m.flags,
                read_only: matches!(m.kind, LinkedMapKind::GlobalData { read_only: true }),
                initial: m.initial.clone(),
            })
            .collect();
        out.push(Bench::new("sample", name, verifier_input(&linked), &maps)?);
    }
    if out.is_empty() {
        bail!("no sample objects in {}", dir.display());
    }
    Ok(out)
}

/// The XDP cases that expect acceptance (`verifier::case_file` reads them).
fn cases(root: &Path) -> Result<Vec<Bench>> {
    let dir = root.join("verifier").join("tests").join("cases");
    let mut out = Vec::new();
    for path in files(&dir, "txt") {
        let name = stem(&path);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let case = CaseFile::parse(&name, &text)?;
        // Cases with their own limits or profiles measure those, not the common path.
        if case.kind != ProgramKind::Xdp
            || !matches!(case.expect, Expect::Accept { .. })
            || case.has_own_options()
        {
            continue;
        }
        let input = case.input()?;
        let kernel_maps: Vec<KernelMap> = input.maps.iter().map(KernelMap::from_info).collect();
        out.push(Bench::new("case", name, input, &kernel_maps)?);
    }
    Ok(out)
}

/// The bpf_conformance programs that expect a result (the rest are meant to be refused).
fn conformance(root: &Path) -> Vec<Bench> {
    // Wherever the machine keeps the suite (see ebpf_isa::conformance::find_suite).
    let dir = ebpf_isa::conformance::find_suite()
        .map(|suite| suite.join("tests"))
        .unwrap_or_else(|| root.join("../shared/conformance/bpf_conformance/tests"));
    let mut out = Vec::new();
    for path in files(&dir, "data") {
        let Ok(test) = ebpf_isa::conformance::load_test(&path) else {
            continue;
        };
        if !matches!(test.expected, ebpf_isa::conformance::Expected::Result(_))
            || test.program.is_empty()
        {
            continue;
        }
        let kind = ProgramKind::RawMemory {
            size: test.memory.len() as u32,
        };
        let name = stem(&path);
        let input = ProgramInput::new(name.clone(), kind, test.program);
        if let Ok(bench) = Bench::new("conformance", name, input, &[]) {
            out.push(bench);
        }
    }
    out
}

/// A raw-memory program as an XDP program: `r1` = packet start, `r2` = `size`, after a bounds
/// check that proves `size` packet bytes to the kernel's verifier (the check never fails in a
/// real run: the caller supplies the memory as the packet).
fn raw_memory_prologue(size: u32, program: &[Insn]) -> Vec<Insn> {
    let size = size as i32;
    let ldxw = op::CLASS_LDX | op::SIZE_W | op::MODE_MEM;
    let mut out = vec![
        Insn::new(ldxw, 2, 1, 4, 0), // r2 = ctx->data_end
        Insn::new(ldxw, 1, 1, 0, 0), // r1 = ctx->data
        Insn::new(op::CLASS_ALU64 | op::ALU_MOV | op::SRC_X, 0, 1, 0, 0),
        Insn::new(op::CLASS_ALU64 | op::ALU_ADD | op::SRC_K, 0, 0, 0, size),
        Insn::new(op::CLASS_JMP | op::JMP_JLE | op::SRC_X, 0, 2, 2, 0), // if r0 <= r2 skip 2
        Insn::new(op::CLASS_ALU64 | op::ALU_MOV | op::SRC_K, 0, 0, 0, 0),
        Insn::new(op::EXIT, 0, 0, 0, 0),
        Insn::new(op::CLASS_ALU64 | op::ALU_MOV | op::SRC_K, 2, 0, 0, size),
        Insn::new(op::CLASS_ALU64 | op::ALU_MOV | op::SRC_K, 0, 0, 0, 0),
    ];
    out.extend_from_slice(program);
    out
}

/// A loop-free XDP program of exactly `slots` slots: one bounds check of [`LINEAR_WINDOW`]
/// packet bytes, then packet loads inside the window mixed with ALU operations, then `exit`.
/// Every instruction after the check runs once on the one path, so both verifiers should
/// spend the same work on each.
fn straight_line(slots: usize) -> Vec<Insn> {
    let ldx =
        |size: u8, dst, src, off| Insn::new(op::CLASS_LDX | size | op::MODE_MEM, dst, src, off, 0);
    let alu_k = |operation: u8, dst, imm| {
        Insn::new(op::CLASS_ALU64 | operation | op::SRC_K, dst, 0, 0, imm)
    };
    let alu_x = |operation: u8, dst, src| {
        Insn::new(op::CLASS_ALU64 | operation | op::SRC_X, dst, src, 0, 0)
    };
    let mut out = vec![
        ldx(op::SIZE_W, 2, 1, 0), // r2 = data
        ldx(op::SIZE_W, 3, 1, 4), // r3 = data_end
        alu_k(op::ALU_MOV, 0, 0),
        alu_x(op::ALU_MOV, 4, 2),
        alu_k(op::ALU_ADD, 4, LINEAR_WINDOW),
        // if r4 > r3: jump to the final exit (patched below).
        Insn::new(op::CLASS_JMP | op::JMP_JGT | op::SRC_X, 4, 3, 0, 0),
    ];
    let check = out.len() - 1;
    let mut i = 0i32;
    while out.len() < slots.saturating_sub(1) {
        let insn = match i % 6 {
            0 => ldx(op::SIZE_B, 5, 2, (i % LINEAR_WINDOW) as i16),
            1 => alu_x(op::ALU_ADD, 0, 5),
            2 => alu_k(op::ALU_XOR, 0, i.wrapping_mul(0x9e37)),
            3 => ldx(op::SIZE_H, 6, 2, ((i % (LINEAR_WINDOW - 1)) & !1) as i16),
            4 => alu_x(op::ALU_SUB, 0, 6),
            _ => alu_k(op::ALU_AND, 0, 0x00ff_ffff),
        };
        out.push(insn);
        i += 1;
    }
    out.push(Insn::new(op::EXIT, 0, 0, 0, 0));
    let exit = out.len() - 1;
    out[check].off = (exit - check - 1) as i16;
    out
}

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == ext))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

// ---------------------------------------------------------------------------------------------
// Measuring

/// The figures of one program, one value per round.
#[derive(Default)]
struct Figures {
    ours_ns: Vec<f64>,
    kernel_ns: Vec<f64>,
    kernel_verify_us: Vec<f64>,
    /// Our bound on executed instructions, and the kernel's processed instructions.
    bound: u64,
    processed: Option<u64>,
    profile: KernelProfile,
}

impl Figures {
    fn ours(&self) -> f64 {
        median(&self.ours_ns)
    }

    fn kernel(&self) -> f64 {
        median(&self.kernel_ns)
    }

    fn kernel_verify_ns(&self) -> Option<f64> {
        (!self.kernel_verify_us.is_empty()).then(|| median(&self.kernel_verify_us) * 1e3)
    }
}

/// Mean ns of `repeat` runs of `verifier::verify`, the bound on executed instructions, and
/// what our `kernel` profile said (a program can pass `verify` on the strength of another
/// backend alone).
fn time_ours(
    input: &ProgramInput,
    options: &Options,
    repeat: u32,
) -> Result<(f64, u64, KernelProfile), String> {
    let mut last = None;
    let start = Instant::now();
    for _ in 0..repeat {
        let contract = verifier::verify(input, options).map_err(|r| {
            let first = r.to_string();
            let first = first.lines().next().unwrap_or_default().to_owned();
            format!("our verifier rejected it: {first}")
        })?;
        last = Some(contract);
    }
    let ns = start.elapsed().as_nanos() as f64 / f64::from(repeat);
    let contract = last.ok_or("no verification ran")?;
    let profile = match contract.refused.iter().find(|(b, _)| *b == Backend::Kernel) {
        Some((_, reason)) => KernelProfile::Refused(reason.clone()),
        None if contract.eligible.contains(&Backend::Kernel) => KernelProfile::Eligible,
        None => KernelProfile::NotJudged,
    };
    Ok((ns, contract.max_insns_executed, profile))
}

/// Our `kernel` profile's verdict on a program.
#[derive(Clone, Debug, Default)]
enum KernelProfile {
    #[default]
    NotJudged,
    Eligible,
    Refused(String),
}

/// Mean ns (wall clock) and mean kernel-reported µs of `repeat` loads.
fn time_kernel(
    insns: &[Insn],
    repeat: u32,
    log: &mut [u8],
) -> Result<(f64, Option<f64>, Option<u64>), String> {
    let (mut wall, mut verify, mut processed) = (0.0, Some(0.0), None);
    for _ in 0..repeat {
        let load = prog_load(insns, log)?;
        wall += load.wall_ns;
        verify = verify.zip(load.verify_us).map(|(a, b)| a + b);
        processed = load.processed;
    }
    let n = f64::from(repeat);
    Ok((wall / n, verify.map(|v| v / n), processed))
}

/// Measures `programs` over `rounds`, each program's two sides back to back (the first side
/// alternating by round and program). Programs either side refuses are dropped with the reason.
fn measure(
    programs: &[Bench],
    rounds: u32,
    repeat: impl Fn(&Bench) -> u32,
    options: &Options,
    refused: &mut Vec<String>,
) -> Vec<(usize, Figures)> {
    let mut log = vec![0u8; LOG_BYTES];
    // One unmeasured verification each first: it warms the caches, drops what we reject, and
    // gives our kernel profile's verdict before the kernel's is known (the side that runs first
    // alternates).
    let mut figures: Vec<Option<Figures>> = programs
        .iter()
        .map(|p| match time_ours(&p.input, options, 1) {
            Ok((_, _, profile)) => Some(Figures {
                profile,
                ..Figures::default()
            }),
            Err(e) => {
                refused.push(format!("{} {}: {e}", p.group, p.name));
                None
            }
        })
        .collect();
    for round in 0..rounds {
        for (i, p) in programs.iter().enumerate() {
            let Some(f) = figures[i].as_mut() else {
                continue;
            };
            let n = repeat(p);
            let ours_first = (i + round as usize).is_multiple_of(2);
            let mut result = Ok(());
            for side in 0..2 {
                if result.is_err() {
                    break;
                }
                result = if (side == 0) == ours_first {
                    time_ours(&p.input, options, n).map(|(ns, bound, profile)| {
                        f.ours_ns.push(ns);
                        f.bound = bound;
                        f.profile = profile;
                    })
                } else {
                    time_kernel(&p.kernel_insns, n, &mut log)
                        .map(|(ns, us, processed)| {
                            f.kernel_ns.push(ns);
                            if let Some(us) = us {
                                f.kernel_verify_us.push(us);
                            }
                            f.processed = processed;
                        })
                        .map_err(|e| match &f.profile {
                            // Only the kernel rejects what our kernel profile accepts: a
                            // soundness disagreement, which the report must not bury.
                            KernelProfile::Eligible => format!(
                                "DISAGREEMENT: our kernel profile accepts it, the kernel \
                                 rejected it: {e}"
                            ),
                            KernelProfile::Refused(reason) => format!(
                                "the kernel rejected it (so does our kernel profile: \
                                 {reason}): {e}"
                            ),
                            KernelProfile::NotJudged => format!("the kernel rejected it: {e}"),
                        })
                };
            }
            if let Err(e) = result {
                refused.push(format!("{} {}: {e}", p.group, p.name));
                figures[i] = None;
            }
        }
    }
    figures
        .into_iter()
        .enumerate()
        .filter_map(|(i, f)| f.map(|f| (i, f)))
        .collect()
}

fn run(root: &Path, opts: &VerifierOptions) -> Result<()> {
    let header = Header::collect(root);
    let options = Options::default();

    let mut groups: Vec<(&str, Vec<Bench>)> = vec![
        ("sample", samples(root)?),
        ("case", cases(root)?),
        ("conformance", conformance(root)),
    ];
    let mut text = String::new();
    let _ = writeln!(text, "{}", header.line_for("verifier"));
    let _ = writeln!(
        text,
        "ours = verifier::verify in-process (safety + bounds + profiles), release build; \
         kernel = BPF_PROG_LOAD wall clock (verifier + JIT + fd), and the kernel's own \
         \"verification time\" (BPF_LOG_STATS, whole µs); medians of {} rounds × {} repeats",
        opts.rounds, opts.repeat
    );
    let mut json_groups = Vec::new();
    let mut refused = Vec::new();
    for (group, programs) in &mut groups {
        let measured = measure(
            programs,
            opts.rounds,
            |_| opts.repeat,
            &options,
            &mut refused,
        );
        let _ = writeln!(
            text,
            "{group}: {} of {} programs accepted by both",
            measured.len(),
            programs.len()
        );
        let show_each = *group == "sample";
        if show_each {
            let _ = writeln!(
                text,
                "  {:<20} {:>6} {:>10} {:>11} {:>11} {:>9} {:>9} {:>9} {:>9}",
                "program",
                "slots",
                "ours µs",
                "load µs",
                "kverify µs",
                "ours/load",
                "ours/kver",
                "ns/slot",
                "bound"
            );
        }
        let mut rows = Vec::new();
        let (mut sum_ours, mut sum_kernel, mut sum_kverify, mut slots) = (0.0, 0.0, 0.0, 0usize);
        let mut ratios = Vec::new();
        for (i, f) in &measured {
            let p = &programs[*i];
            let n = p.input.insns.len();
            let (ours, kernel) = (f.ours(), f.kernel());
            sum_ours += ours;
            sum_kernel += kernel;
            sum_kverify += f.kernel_verify_ns().unwrap_or(0.0);
            slots += n;
            ratios.push(ours / kernel);
            if show_each {
                let kver = f.kernel_verify_ns();
                let _ = writeln!(
                    text,
                    "  {:<20} {n:>6} {:>10.1} {:>11.1} {:>11} {:>8.2}× {:>9} {:>9.0} {:>9}",
                    p.name,
                    ours / 1e3,
                    kernel / 1e3,
                    kver.map_or("n/a".into(), |v| format!("{:.0}", v / 1e3)),
                    ours / kernel,
                    kver.filter(|&v| v > 0.0)
                        .map_or("n/a".into(), |v| format!("{:.2}×", ours / v)),
                    ours / n as f64,
                    f.bound
                );
            }
            rows.push(json!({
                "program": p.name, "slots": n,
                "ours_ns": ours, "kernel_load_ns": kernel,
                "kernel_verification_ns": f.kernel_verify_ns(),
                "ours_rounds_ns": f.ours_ns, "kernel_load_rounds_ns": f.kernel_ns,
                "ratio_ours_to_kernel_load": ours / kernel,
                "our_bound_insns": f.bound, "kernel_processed_insns": f.processed,
            }));
        }
        if !measured.is_empty() {
            let geo = (ratios.iter().map(|r| r.ln()).sum::<f64>() / ratios.len() as f64).exp();
            let _ = writeln!(
                text,
                "  total {slots} slots: ours {:.1} µs ({:.0} ns/slot), kernel load {:.1} µs \
                 ({:.0} ns/slot), kernel verification {:.0} µs; ours/load {:.2}× (sum), per \
                 program median {:.2}×, geometric mean {:.2}×",
                sum_ours / 1e3,
                sum_ours / slots as f64,
                sum_kernel / 1e3,
                sum_kernel / slots as f64,
                sum_kverify / 1e3,
                sum_ours / sum_kernel,
                median(&ratios),
                geo
            );
        }
        json_groups.push(json!({
            "group": group, "programs": programs.len(), "compared": measured.len(),
            "sum_ours_ns": sum_ours, "sum_kernel_load_ns": sum_kernel,
            "sum_kernel_verification_ns": sum_kverify, "slots": slots,
            "ratio_sum": sum_ours / sum_kernel, "ratio_median": median(&ratios),
            "results": rows,
        }));
        print!("{text}");
        text.clear();
    }

    // Linearity.
    let mut sizes = Vec::new();
    let mut size = MIN_LINEAR_SIZE;
    while size <= opts.max_size.max(MIN_LINEAR_SIZE) {
        sizes.push(size);
        size *= 2;
    }
    let linear: Vec<Bench> = sizes
        .iter()
        .map(|&n| {
            let input =
                ProgramInput::new(format!("straight-{n}"), ProgramKind::Xdp, straight_line(n));
            Bench::new("linear", format!("{n}"), input, &[])
        })
        .collect::<Result<_>>()?;
    // The same work per size: fewer repeats for longer programs, at least one.
    let scaled = |p: &Bench| {
        ((u64::from(opts.repeat) * MIN_LINEAR_SIZE as u64 / p.input.insns.len() as u64).max(1))
            as u32
    };
    let measured = measure(&linear, opts.rounds, scaled, &options, &mut refused);
    let _ = writeln!(
        text,
        "linearity: straight-line XDP programs (ALU + checked packet loads), ns per slot"
    );
    let _ = writeln!(
        text,
        "  {:>6} {:>10} {:>9} {:>10} {:>9} {:>11} {:>9}",
        "slots", "ours µs", "ns/slot", "load µs", "ns/slot", "kverify µs", "ours/load"
    );
    let mut linear_rows = Vec::new();
    for (i, f) in &measured {
        let n = linear[*i].input.insns.len();
        let (ours, kernel) = (f.ours(), f.kernel());
        let _ = writeln!(
            text,
            "  {n:>6} {:>10.1} {:>9.1} {:>10.1} {:>9.1} {:>11} {:>8.2}×",
            ours / 1e3,
            ours / n as f64,
            kernel / 1e3,
            kernel / n as f64,
            f.kernel_verify_ns()
                .map_or("n/a".into(), |v| format!("{:.0}", v / 1e3)),
            ours / kernel
        );
        linear_rows.push(json!({
            "slots": n, "ours_ns": ours, "ours_ns_per_slot": ours / n as f64,
            "kernel_load_ns": kernel, "kernel_load_ns_per_slot": kernel / n as f64,
            "kernel_verification_ns": f.kernel_verify_ns(),
            "ours_rounds_ns": f.ours_ns, "kernel_load_rounds_ns": f.kernel_ns,
            "our_bound_insns": f.bound, "kernel_processed_insns": f.processed,
        }));
    }
    if let (Some((first, a)), Some((last, b))) = (measured.first(), measured.last()) {
        let per = |i: usize, ns: f64| ns / linear[i].input.insns.len() as f64;
        let _ = writeln!(
            text,
            "  ns/slot at the largest size over the smallest: ours {:.2}×, kernel load {:.2}× \
             (1.00 = linear)",
            per(*last, b.ours()) / per(*first, a.ours()),
            per(*last, b.kernel()) / per(*first, a.kernel())
        );
    }
    if !refused.is_empty() {
        let _ = writeln!(text, "not compared ({}):", refused.len());
        for r in &refused {
            let _ = writeln!(text, "  {r}");
        }
    }
    print!("{text}");

    let report = json!({
        "suite": "verifier",
        "machine": header.json(),
        "rounds": opts.rounds,
        "repeat": opts.repeat,
        "groups": json_groups,
        "linearity": linear_rows,
        "not_compared": refused,
    });
    let out_dir = root.join("target").join("bench");
    std::fs::create_dir_all(&out_dir)?;
    let path = out_dir.join(format!("verifier-{}.json", header.commit));
    std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
    println!("written to {}", path.display());
    Ok(())
}
