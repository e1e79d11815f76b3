//! λ-NIC's static verifier: proves an eBPF program memory-safe and bounded in time and memory,
//! and states how much in a [`Contract`].
//!
//! The stages follow PREVAIL, one file each:
//!
//! 1. [`cfg`] — instructions → basic blocks, subprograms, call graph, natural loops and an
//!    analysis order in which every loop body is contiguous;
//! 2. [`wellformed`] — opcodes, registers, reserved fields, jump and call targets, reachability;
//! 3. [`assertions`] — for every instruction, the closed set of facts it needs to be safe;
//! 4. [`domain`] — abstract values (pointer kinds with offset intervals, scalar intervals,
//!    stack cells, packet ranges proven against `data_end`);
//! 5. [`transfer`] — abstract interpretation over loop-unrolled contexts (see there why);
//! 6. [`checks`] — proves or refutes each assertion against the abstract state;
//! 7. [`bound`] — the loop caps and the longest-path bound on executed instructions, stack depth
//!    over the call chain;
//! 8. [`profile`] — what the `kernel`, `nfp` and `vm` backends accept on top of safety;
//! 9. [`contract`] — the result.
//!
//! The input is a linked program ([`ProgramInput`]), not an ELF object: the loader depends on the
//! verifier, never the other way round.

pub mod assertions;
pub mod bound;
pub mod case_file;
pub mod cfg;
pub mod chain;
pub mod checks;
pub mod contract;
pub mod domain;
pub mod error;
pub mod helpers;
pub mod listing;
pub mod profile;
pub mod transfer;
pub mod wellformed;

use ebpf_isa::Insn;
use serde::Serialize;

pub use contract::Contract;
pub use error::{ErrorKind, Rejection, VerificationError};

/// Default cap on the bound of executed instructions a contract may state. The kernel's own
/// complexity limit is one million processed instructions; a lambda that may run longer than that
/// is not "interactive".
pub const DEFAULT_MAX_INSNS: u64 = 1_000_000;
/// The kernel's per-program stack limit over the whole call chain (MAX_BPF_STACK).
pub const MAX_STACK_BYTES: u32 = 512;
/// Default limit on the memory of the maps a program uses: 1 GiB, a sanity bound for a host.
pub const DEFAULT_MAX_MAP_BYTES: u64 = 1 << 30;
/// Default instruction budget of the NFP offload. The NFP-4000's code store holds a few thousand
/// instructions after the driver's own prologue; 2048 eBPF instructions is a safe default and
/// `Options::nfp_insn_budget` overrides it.
pub const DEFAULT_NFP_INSN_BUDGET: usize = 2048;
/// CPUs assumed for per-CPU maps when the caller does not say.
pub const DEFAULT_NCPUS: u32 = 1;

/// A map the program may reference, by index, from an `lddw` with a pseudo source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MapInfo {
    pub name: String,
    /// `BPF_MAP_TYPE_*`, see [`map_type`].
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
    /// Frozen (`.rodata`) or `BPF_F_RDONLY_PROG`: the program may only read it.
    pub read_only: bool,
}

/// `BPF_MAP_TYPE_*` numbers from the kernel UAPI that the verifier treats specially.
pub mod map_type {
    pub const HASH: u32 = 1;
    pub const ARRAY: u32 = 2;
    pub const PROG_ARRAY: u32 = 3;
    pub const PERF_EVENT_ARRAY: u32 = 4;
    pub const PERCPU_HASH: u32 = 5;
    pub const PERCPU_ARRAY: u32 = 6;
    pub const LRU_HASH: u32 = 9;
    pub const LRU_PERCPU_HASH: u32 = 10;
    pub const LPM_TRIE: u32 = 11;
    pub const DEVMAP: u32 = 14;
    pub const CPUMAP: u32 = 16;
    pub const XSKMAP: u32 = 17;
    pub const QUEUE: u32 = 22;
    pub const STACK: u32 = 23;
    pub const DEVMAP_HASH: u32 = 25;
    pub const RINGBUF: u32 = 27;

    /// Maps whose lookup returns a pointer to a value the program may read (and write).
    pub fn has_values(t: u32) -> bool {
        matches!(
            t,
            HASH | ARRAY | PERCPU_HASH | PERCPU_ARRAY | LRU_HASH | LRU_PERCPU_HASH | LPM_TRIE
        )
    }

    /// Maps that hold one copy of every value per CPU.
    pub fn is_per_cpu(t: u32) -> bool {
        matches!(t, PERCPU_HASH | PERCPU_ARRAY | LRU_PERCPU_HASH)
    }

    /// Maps `bpf_redirect_map` accepts.
    pub fn is_redirect_target(t: u32) -> bool {
        matches!(t, DEVMAP | DEVMAP_HASH | CPUMAP | XSKMAP)
    }
}

/// Where an instruction came from, from the BTF line info.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SourceLine {
    pub file: String,
    pub line: u32,
    pub column: u32,
    pub text: Option<String>,
}

/// The kind of program, which fixes what `r1` points to at entry and which helpers exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ProgramKind {
    /// XDP: `r1` is a read-only `struct xdp_md`.
    Xdp,
    /// A test program (bpf_conformance): `r1` points to `size` readable and writable bytes
    /// (`size` may be 0), `r2` holds `size`.
    RawMemory { size: u32 },
}

/// One linked program: bpf-to-bpf calls are `call` with src = 1 and a relative target, map
/// references are `lddw` with src = 1 (`imm` = index into `maps`) or src = 2 (`imm` = map index,
/// second slot's `imm` = offset into the value).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramInput {
    pub name: String,
    pub insns: Vec<Insn>,
    pub maps: Vec<MapInfo>,
    pub kind: ProgramKind,
    /// Source line per instruction slot; may be empty or shorter than `insns`.
    pub lines: Vec<Option<SourceLine>>,
}

impl ProgramInput {
    /// A program without maps or line info.
    pub fn new(name: impl Into<String>, kind: ProgramKind, insns: Vec<Insn>) -> ProgramInput {
        ProgramInput {
            name: name.into(),
            insns,
            maps: Vec::new(),
            kind,
            lines: Vec::new(),
        }
    }

    pub fn line(&self, insn: usize) -> Option<&SourceLine> {
        self.lines.get(insn).and_then(Option::as_ref)
    }
}

/// A backend a program may run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// XDP in the host kernel (driver or generic mode).
    Kernel,
    /// Netronome NFP hardware offload.
    Nfp,
    /// The userspace VM (rbpf).
    Vm,
}

impl Backend {
    pub const ALL: [Backend; 3] = [Backend::Kernel, Backend::Nfp, Backend::Vm];

    pub fn name(self) -> &'static str {
        match self {
            Backend::Kernel => "kernel",
            Backend::Nfp => "nfp",
            Backend::Vm => "vm",
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What to check and which limits to enforce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// The backends to judge the program for. `verify` fails when none of them accepts it.
    pub profiles: Vec<Backend>,
    /// Largest acceptable bound on executed instructions.
    pub max_insns: u64,
    /// Largest acceptable stack over the call chain (never above [`MAX_STACK_BYTES`]).
    pub max_stack: u32,
    /// Largest acceptable memory of the maps the program uses.
    pub max_map_bytes: u64,
    /// Instruction slots the NFP can hold.
    pub nfp_insn_budget: usize,
    /// CPUs to count per-CPU maps for.
    pub ncpus: u32,
    /// Entries of functions the kernel verifies on their own, not at each call (BTF `FUNC`s
    /// with global linkage, as the coalescer's lambda entries are): limits the kernel applies
    /// per verification run count their paths apart from their callers'.
    pub global_functions: Vec<usize>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            profiles: Backend::ALL.to_vec(),
            max_insns: DEFAULT_MAX_INSNS,
            max_stack: MAX_STACK_BYTES,
            max_map_bytes: DEFAULT_MAX_MAP_BYTES,
            nfp_insn_budget: DEFAULT_NFP_INSN_BUDGET,
            ncpus: DEFAULT_NCPUS,
            global_functions: Vec::new(),
        }
    }
}

/// Verifies one program: Ok with its contract, or every reason it is refused.
pub fn verify(input: &ProgramInput, options: &Options) -> Result<Contract, Rejection> {
    let reject = |errors: Vec<(ErrorKind, usize, String)>| Rejection {
        errors: errors
            .into_iter()
            .map(|(kind, insn, registers)| VerificationError::new(input, kind, insn, registers))
            .collect(),
    };
    let cfg =
        wellformed::check(input).map_err(|e| reject(vec![(e.kind, e.insn, String::new())]))?;
    let analysis =
        transfer::analyse(input, &cfg).map_err(|f| reject(vec![(f.kind, f.insn, f.registers)]))?;
    contract::build(input, &cfg, &analysis, options).map_err(reject)
}
