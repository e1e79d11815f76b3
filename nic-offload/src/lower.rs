//! Lowering for a NIC: rewrites one lambda (before coalescing) into code the offload accepts,
//! where that is semantically sound, and refuses with a named reason where it is not.
//!
//! Every SDK lambda uses features the NFP lacks: its attach-time parameters are `.rodata`
//! global data (the nfp driver refuses the read-only map flag), its counters are a per-CPU
//! array (the firmware holds only array and hash maps), and a lambda that logs writes records
//! into a ring buffer with `bpf_ringbuf_output` and `bpf_ktime_get_ns` (neither helper exists
//! offloaded). The pass, in order:
//!
//! 1. **Logs become no-ops** (a documented loss: logs are not available offloaded). Every
//!    `bpf_ringbuf_output` into the SDK's log ring returns 0 ("written") without writing, and
//!    every lookup in the SDK's per-CPU record buffer returns NULL, which is the SDK's own
//!    "no buffer: skip the line" path. Nothing else reads either map.
//! 2. **Constants are propagated and decided branches folded**, then code no path reaches
//!    and instructions whose result nobody reads are removed, repeatedly. This is what takes
//!    the skipped log lines (and their `bpf_ktime_get_ns` calls) out.
//! 3. **Helpers** the model lacks that remain are refused, each by name and instruction.
//! 4. **`.rodata` loads are folded**: a load at a constant offset from a pointer into
//!    read-only global data (whose contents the link fixed) becomes `mov` of the value, so the
//!    map disappears. Read-only data that is reached any other way (a variable offset, a pointer
//!    handed to a helper or a function, stored, returned) is refused.
//! 5. **Per-CPU maps become shared maps** (`percpu_array` → `array`, `percpu_hash` →
//!    `hash`) when every access to their values is a counter increment — `load; add K; store
//!    back` with the loaded register dead afterwards — which becomes one atomic add
//!    (`lock add [p+o], K`, the NFP's `BPF_XADD`). Why that is sound: the program never reads
//!    the counts, so no answer depends on them, and a shared count under atomic adds equals the
//!    sum over CPUs of per-CPU counts, which is all userspace reads from them (`lambdactl
//!    stats` sums the copies; a shared map has one). Any other access (a read that is used, a
//!    store, `bpf_map_update_elem` on it) would see other cores' writes or race with them, and
//!    is refused.
//! 6. **Maps are checked against the model**: only used maps remain (renumbered), each must be
//!    a type the firmware holds (an LRU hash is refused: a plain hash would refuse inserts when
//!    full where the LRU evicts) and its element must fit the firmware's entry size.
//!
//! The analysis is per function (bpf-to-bpf calls clobber `r0`–`r5` and keep `r6`–`r9`), over
//! registers only: a map pointer that is spilled to the stack, passed to a function or a
//! helper, or merges with another value at a join where it is then used, counts as escaped,
//! so a map whose pointers escape is never rewritten, only refused.

use std::collections::{BTreeMap, BTreeSet};

use ebpf_isa::{Insn, opcode as op};
use loader::link::{LinkedMap, LinkedMapKind};
use serde::Serialize;
use verifier::map_type;

use crate::coalesce::CoalesceInput;
use crate::model::NicModel;

/// `bpf_map_lookup_elem`.
const LOOKUP: i32 = 1;
/// `bpf_ringbuf_output`.
const RINGBUF_OUTPUT: i32 = 130;
/// `BPF_JMP | BPF_JA`.
const JA: u8 = op::CLASS_JMP | op::JMP_JA;
/// `BPF_CALLX`: a call through a register, which nothing here follows.
const CALLX: u8 = 0x8d;

/// Why a lambda cannot run on the NIC: one problem, named.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
pub enum Refusal {
    #[error("helper {helper} at {} is not available on {nic}", at(.insns))]
    Helper {
        helper: String,
        /// Every call site, in order.
        insns: Vec<usize>,
        nic: &'static str,
    },
    #[error(
        "read-only global {map} is {what} at instruction {insn}: only loads at a constant offset fold into the code, and {nic} cannot hold read-only global data"
    )]
    Rodata {
        map: String,
        insn: usize,
        what: &'static str,
        nic: &'static str,
    },
    #[error(
        "per-CPU map {map} is {what} at instruction {insn}: on {nic} its cores share one copy, so only counter increments (load, add a constant, store back, the loaded value unused) can be lowered, into atomic adds"
    )]
    PerCpu {
        map: String,
        insn: usize,
        what: &'static str,
        nic: &'static str,
    },
    #[error("map {map} is a {kind} map; {nic} holds only array and hash maps{why}")]
    MapType {
        map: String,
        kind: String,
        nic: &'static str,
        why: &'static str,
    },
    #[error("map {map} has flags {flags:#x}; the nfp driver refuses any map flags")]
    MapFlags { map: String, flags: u32 },
    #[error(
        "map {map} has {bytes}-byte elements (key and value rounded up to 8); {nic} takes at most {max}"
    )]
    EntrySize {
        map: String,
        bytes: u32,
        max: u32,
        nic: &'static str,
    },
}

/// Why lowering failed.
#[derive(Debug, thiserror::Error)]
pub enum LowerError {
    #[error("lambda `{lambda}` cannot be offloaded to {nic}: {}", list(.refusals))]
    Refused {
        lambda: String,
        nic: &'static str,
        refusals: Vec<Refusal>,
        /// What the pass did before it gave up (what would be lowered).
        report: Box<LowerReport>,
        /// The lambda with every sound rewrite made: not for the NIC (the refusals stand),
        /// but it runs on the host, which is how the rewrites are tested on real objects.
        partial: Box<CoalesceInput>,
    },
    #[error("lambda `{lambda}`: {what} at instruction {insn}")]
    Malformed {
        lambda: String,
        insn: usize,
        what: &'static str,
    },
}

/// `instruction 4` or `instructions 4, 9, 12`.
fn at(insns: &[usize]) -> String {
    let list = insns
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    if insns.len() == 1 {
        format!("instruction {list}")
    } else {
        format!("instructions {list}")
    }
}

fn list(refusals: &[Refusal]) -> String {
    refusals
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// What lowering did to one lambda.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LowerReport {
    pub lambda: String,
    pub insns_before: usize,
    pub insns_after: usize,
    /// `bpf_ringbuf_output` calls made no-ops and log-buffer lookups made NULL.
    pub log_calls_removed: usize,
    /// Conditional jumps whose direction was known, folded.
    pub branches_folded: usize,
    /// Slots removed: unreachable, or computing what nobody reads.
    pub dead_removed: usize,
    /// Loads from `.rodata` replaced by their value.
    pub rodata_loads_folded: usize,
    /// Counter increments made atomic adds.
    pub counters_made_atomic: usize,
    /// `map: from -> to` for every map whose type changed.
    pub maps_lowered: Vec<String>,
    /// Maps no longer used, dropped.
    pub maps_dropped: Vec<String>,
    /// What the lowered lambda no longer does (e.g. logging).
    pub losses: Vec<String>,
}

impl LowerReport {
    /// `1299 -> 1026 slots (0 log calls removed, 3 .rodata loads folded, …)`: what the pass
    /// did, in one line (the maps it lowered and what was lost are in their own fields).
    pub fn summary(&self) -> String {
        format!(
            "{} -> {} slots ({} log calls removed, {} .rodata loads folded, {} counters made atomic, {} branches folded, {} slots removed)",
            self.insns_before,
            self.insns_after,
            self.log_calls_removed,
            self.rodata_loads_folded,
            self.counters_made_atomic,
            self.branches_folded,
            self.dead_removed
        )
    }
}

/// A lambda lowered for a NIC model: coalesce it like any other.
#[derive(Clone, Debug)]
pub struct Lowered {
    pub input: CoalesceInput,
    pub report: LowerReport,
}

/// Lowers `input` for `model` (see the module documentation), or says every reason it cannot.
pub fn lower(input: &CoalesceInput, model: &'static NicModel) -> Result<Lowered, LowerError> {
    let lambda = input.name.clone();
    let mut insns = input.linked.insns.clone();
    let mut maps = input.linked.maps.clone();
    let mut lines = input.linked.lines.clone();
    // The slot of the object each slot came from: refusals name the object's instructions.
    let mut origin: Vec<usize> = (0..insns.len()).collect();
    let mut report = LowerReport {
        lambda: lambda.clone(),
        insns_before: insns.len(),
        ..LowerReport::default()
    };
    let malformed = |(insn, what)| LowerError::Malformed {
        lambda: lambda.clone(),
        insn,
        what,
    };
    check_shape(&insns, maps.len()).map_err(malformed)?;
    let mut refusals = Vec::new();

    // 1. Logs.
    let log_ring = maps
        .iter()
        .position(|m| m.name == lambda_ebpf_names::LOG && m.map_type == map_type::RINGBUF);
    let log_scratch = maps
        .iter()
        .position(|m| m.name == lambda_ebpf_names::LOG_SCRATCH && map_type::is_per_cpu(m.map_type));
    let flow = analyse(&insns);
    for call in &flow.helper_calls {
        let map = match call.r1 {
            Val::MapPtr(m) => Some(m as usize),
            _ => None,
        };
        let is_log_output = call.id == RINGBUF_OUTPUT && map.is_some() && map == log_ring;
        let is_log_buffer = call.id == LOOKUP && map.is_some() && map == log_scratch;
        if is_log_output || is_log_buffer {
            insns[call.pc] = mov64_imm(0, 0);
            report.log_calls_removed += 1;
        }
    }
    if report.log_calls_removed > 0 {
        report.losses.push(
            "log lines (lambda_ebpf::log) are dropped: the NIC has no ring buffer to carry them"
                .into(),
        );
    }

    // 2. Constants, branches, dead code.
    simplify(&mut insns, &mut lines, &mut origin, &mut report);

    // 3. Helpers the model lacks, each once with all its call sites.
    let mut missing: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (pc, insn) in insns.iter().enumerate() {
        if insn.is_helper_call() && !model.has_helper(insn.imm) {
            let helper = verifier::helpers::lookup(insn.imm)
                .map_or_else(|| format!("#{}", insn.imm), |h| h.name.to_owned());
            missing.entry(helper).or_default().push(origin[pc]);
        }
    }
    refusals.extend(missing.into_iter().map(|(helper, insns)| Refusal::Helper {
        helper,
        insns,
        nic: model.name,
    }));

    // 4. `.rodata`, and 5. per-CPU counters.
    let flow = analyse(&insns);
    let live = liveness(&insns);
    let targets = jump_targets(&insns);
    let is_rodata = |m: u32| {
        maps.get(m as usize)
            .is_some_and(|map| matches!(map.kind, LinkedMapKind::GlobalData { read_only: true }))
    };
    let is_per_cpu = |m: u32| {
        maps.get(m as usize)
            .is_some_and(|map| map_type::is_per_cpu(map.map_type))
    };
    let name = |m: u32| {
        maps.get(m as usize)
            .map_or_else(|| format!("#{m}"), |x| x.name.clone())
    };
    for (&m, &pc) in &flow.escaped {
        if is_rodata(m) {
            refusals.push(Refusal::Rodata {
                map: name(m),
                insn: origin[pc],
                what: "reached through a pointer that leaves the function's registers",
                nic: model.name,
            });
        } else if is_per_cpu(m) {
            refusals.push(Refusal::PerCpu {
                map: name(m),
                insn: origin[pc],
                what: "reached through a pointer that leaves the function's registers",
                nic: model.name,
            });
        }
    }
    for call in &flow.helper_calls {
        if let Val::MapPtr(m) = call.r1
            && is_per_cpu(m)
            && call.id != LOOKUP
            && !flow.escaped.contains_key(&m)
        {
            refusals.push(Refusal::PerCpu {
                map: name(m),
                insn: origin[call.pc],
                what: "changed by a helper other than a lookup",
                nic: model.name,
            });
        }
    }
    let mut consumed = BTreeSet::new();
    let mut rewrites: Vec<(usize, Insn)> = Vec::new();
    for access in &flow.accesses {
        let m = access.map;
        if flow.escaped.contains_key(&m) || consumed.contains(&access.pc) {
            continue;
        }
        if is_rodata(m) {
            let folded = match (access.kind, access.off) {
                (AccessKind::Load, Some(off)) => {
                    fold_load(&maps[m as usize], insns[access.pc], off)
                }
                (AccessKind::Load, None) => Err("loaded at a variable offset"),
                _ => Err("written"),
            };
            match folded {
                Ok(insn) => {
                    rewrites.push((access.pc, insn));
                    report.rodata_loads_folded += 1;
                }
                Err(what) => refusals.push(Refusal::Rodata {
                    map: name(m),
                    insn: origin[access.pc],
                    what,
                    nic: model.name,
                }),
            }
        } else if is_per_cpu(m) {
            match access.kind {
                AccessKind::AtomicAdd => {}
                AccessKind::Load => match counter_increment(&insns, access.pc, &live, &targets) {
                    Some(rewrite) => {
                        consumed.insert(access.pc + 2);
                        rewrites.extend(rewrite);
                        report.counters_made_atomic += 1;
                    }
                    None => refusals.push(Refusal::PerCpu {
                        map: name(m),
                        insn: origin[access.pc],
                        what: "read (the value is used)",
                        nic: model.name,
                    }),
                },
                AccessKind::Store | AccessKind::OtherAtomic => refusals.push(Refusal::PerCpu {
                    map: name(m),
                    insn: origin[access.pc],
                    what: "written other than by a counter increment",
                    nic: model.name,
                }),
            }
        }
    }
    for (pc, insn) in rewrites {
        insns[pc] = insn;
    }
    simplify(&mut insns, &mut lines, &mut origin, &mut report);

    // 6. Maps: drop the unused, lower the per-CPU, check the rest.
    let used: BTreeSet<usize> = insns
        .iter()
        .filter(|i| is_map_ref(**i))
        .filter_map(|i| usize::try_from(i.imm).ok())
        .collect();
    let mut renumber = vec![None; maps.len()];
    let mut kept_maps = Vec::new();
    let mut seeds = Vec::new();
    for (m, map) in maps.iter_mut().enumerate() {
        if !used.contains(&m) {
            report.maps_dropped.push(map.name.clone());
            continue;
        }
        let per_cpu_refused = refusals
            .iter()
            .any(|r| matches!(r, Refusal::PerCpu { map: n, .. } if *n == map.name));
        let seeded = input
            .seeds
            .get(m)
            .is_some_and(|records| !records.is_empty());
        if map_type::is_per_cpu(map.map_type) && seeded && !per_cpu_refused {
            // Every CPU's copy starts from the record: shared, the sum would start lower.
            refusals.push(Refusal::PerCpu {
                map: map.name.clone(),
                insn: first_ref(&insns, m).map_or(0, |pc| origin[pc]),
                what: "seeded with records (each CPU's copy starts from them)",
                nic: model.name,
            });
        } else if map_type::is_per_cpu(map.map_type) && !per_cpu_refused {
            let shared = match map.map_type {
                map_type::PERCPU_ARRAY => Some(map_type::ARRAY),
                map_type::PERCPU_HASH => Some(map_type::HASH),
                _ => None,
            };
            if let Some(shared) = shared {
                report.maps_lowered.push(format!(
                    "{}: {} -> {}",
                    map.name,
                    map.type_name(),
                    loader::image::map_type_name(shared)
                ));
                map.map_type = shared;
            }
        }
        if matches!(map.kind, LinkedMapKind::GlobalData { read_only: true }) {
            // Listed already with the access that kept it.
            if !refusals
                .iter()
                .any(|r| matches!(r, Refusal::Rodata { map: n, .. } if *n == map.name))
            {
                refusals.push(Refusal::Rodata {
                    map: map.name.clone(),
                    insn: first_ref(&insns, m).map_or(0, |pc| origin[pc]),
                    what: "referenced",
                    nic: model.name,
                });
            }
        } else if !model.has_map_type(map.map_type)
            && !refusals
                .iter()
                .any(|r| matches!(r, Refusal::PerCpu { map: n, .. } if *n == map.name))
        {
            refusals.push(Refusal::MapType {
                map: map.name.clone(),
                kind: map.type_name(),
                nic: model.name,
                why: match map.map_type {
                    map_type::LRU_HASH | map_type::LRU_PERCPU_HASH => {
                        " (an LRU hash evicts when full; a plain hash would refuse the insert instead)"
                    }
                    _ => "",
                },
            });
        }
        let read_only = matches!(map.kind, LinkedMapKind::GlobalData { read_only: true });
        if map.flags != 0 && !read_only {
            refusals.push(Refusal::MapFlags {
                map: map.name.clone(),
                flags: map.flags,
            });
        }
        let bytes = NicModel::elem_bytes(map.key_size, map.value_size);
        if bytes > model.max_elem_bytes && map.map_type != map_type::PERF_EVENT_ARRAY {
            refusals.push(Refusal::EntrySize {
                map: map.name.clone(),
                bytes,
                max: model.max_elem_bytes,
                nic: model.name,
            });
        }
        renumber[m] = Some(kept_maps.len());
        kept_maps.push(map.clone());
        seeds.push(input.seeds.get(m).cloned().unwrap_or_default());
    }
    for insn in insns.iter_mut().filter(|i| is_map_ref(**i)) {
        // Every referenced map was kept.
        insn.imm = renumber[insn.imm as usize].expect("a used map is kept") as i32;
    }
    report.insns_after = insns.len();
    let mut linked = input.linked.clone();
    linked.insns = insns;
    linked.maps = kept_maps;
    linked.lines = lines;
    let lowered = CoalesceInput {
        name: input.name.clone(),
        linked,
        rule: input.rule,
        seeds,
    };
    if !refusals.is_empty() {
        return Err(LowerError::Refused {
            lambda,
            nic: model.name,
            refusals,
            report: Box::new(report),
            partial: Box::new(lowered),
        });
    }
    Ok(Lowered {
        input: lowered,
        report,
    })
}

/// The SDK's map names (defined in `lambda_ebpf`, which this crate does not link: it is the
/// eBPF side; the names are part of the object format and tested against the SDK's constants).
pub mod lambda_ebpf_names {
    /// `lambda_ebpf::log::MAP_NAME`.
    pub const LOG: &str = "LNIC_LOG";
    /// `lambda_ebpf::log::SCRATCH_MAP_NAME`.
    pub const LOG_SCRATCH: &str = "LNIC_LOG_SCRATCH";
    /// `lambda_ebpf::stats::MAP_NAME`.
    pub const STATS: &str = "LNIC_STATS";
}

/// Branch folding and dead-code removal until nothing changes.
fn simplify(
    insns: &mut Vec<Insn>,
    lines: &mut Vec<Option<loader::lineinfo::LineInfo>>,
    origin: &mut Vec<usize>,
    report: &mut LowerReport,
) {
    loop {
        let flow = analyse(insns);
        let mut changed = false;
        for (insn, state) in insns.iter_mut().zip(&flow.at) {
            let Some(state) = state else { continue };
            if let Some(taken) = decided(*insn, state) {
                let off = if taken { insn.off } else { 0 };
                *insn = Insn::new(JA, 0, 0, off, 0);
                report.branches_folded += 1;
                changed = true;
            }
        }
        let live = liveness(insns);
        let reachable = reachable(insns);
        let mut keep = vec![true; insns.len()];
        let mut pc = 0;
        while pc < insns.len() {
            let insn = insns[pc];
            let width = if insn.is_lddw() { 2 } else { 1 };
            let dead = !reachable[pc]
                || (insn.opcode == JA && insn.off == 0)
                || (is_pure(insn) && live[pc] & (1 << insn.dst) == 0 && insn.dst != 10);
            if dead {
                let end = (pc + width).min(insns.len());
                keep[pc..end].fill(false);
            }
            pc += width;
        }
        let removed = keep.iter().filter(|&&k| !k).count();
        if removed > 0 {
            report.dead_removed += removed;
            compact(insns, lines, &keep);
            let mut k = keep.iter();
            origin.retain(|_| *k.next().unwrap_or(&true));
            changed = true;
        }
        if !changed {
            return;
        }
    }
}

/// The direction of conditional jump `insn` when the state decides it.
fn decided(insn: Insn, state: &State) -> Option<bool> {
    let class = insn.class();
    if class != op::CLASS_JMP && class != op::CLASS_JMP32 {
        return None;
    }
    let operation = op::operation(insn.opcode);
    if matches!(operation, op::JMP_JA | op::JMP_CALL | op::JMP_EXIT) || insn.opcode == CALLX {
        return None;
    }
    let Val::Const(a) = state[insn.dst as usize & 15] else {
        return None;
    };
    let b = if op::source(insn.opcode) == op::SRC_X {
        match state[insn.src as usize & 15] {
            Val::Const(b) => b,
            _ => return None,
        }
    } else {
        i64::from(insn.imm) as u64
    };
    let (a, b, sa, sb) = if class == op::CLASS_JMP32 {
        let (a, b) = (a as u32, b as u32);
        (
            u64::from(a),
            u64::from(b),
            i64::from(a as i32),
            i64::from(b as i32),
        )
    } else {
        (a, b, a as i64, b as i64)
    };
    Some(match operation {
        op::JMP_JEQ => a == b,
        op::JMP_JNE => a != b,
        op::JMP_JGT => a > b,
        op::JMP_JGE => a >= b,
        op::JMP_JLT => a < b,
        op::JMP_JLE => a <= b,
        op::JMP_JSGT => sa > sb,
        op::JMP_JSGE => sa >= sb,
        op::JMP_JSLT => sa < sb,
        op::JMP_JSLE => sa <= sb,
        op::JMP_JSET => a & b != 0,
        _ => return None,
    })
}

/// `mov64 dst, imm`.
fn mov64_imm(dst: u8, imm: i32) -> Insn {
    Insn::new(op::CLASS_ALU64 | op::ALU_MOV | op::SRC_K, dst, 0, 0, imm)
}

/// The `mov` that replaces load `insn` at `off` into read-only `map`.
fn fold_load(map: &LinkedMap, insn: Insn, off: i64) -> Result<Insn, &'static str> {
    if op::mode(insn.opcode) != op::MODE_MEM {
        return Err("loaded with sign extension");
    }
    let size = op::size_bytes(op::size(insn.opcode));
    let at = off + i64::from(insn.off);
    let bytes = usize::try_from(at)
        .ok()
        .and_then(|at| map.initial.get(at..at.checked_add(size)?))
        .ok_or("loaded outside its contents")?;
    let mut value = [0u8; 8];
    value[..size].copy_from_slice(bytes);
    let value = u64::from_le_bytes(value);
    if let Ok(imm) = i32::try_from(value as i64) {
        Ok(mov64_imm(insn.dst, imm))
    } else if let Ok(v) = u32::try_from(value) {
        // A 32-bit mov zero-extends.
        Ok(Insn::new(
            op::CLASS_ALU | op::ALU_MOV | op::SRC_K,
            insn.dst,
            0,
            0,
            v as i32,
        ))
    } else {
        Err("loaded as a 64-bit value wider than an immediate")
    }
}

/// The rewrite of the counter increment whose load is at `pc`:
/// `ldx rA, [rP+o]; add rA, K; stx [rP+o], rA` with `rA` dead after it and no jump into its
/// middle becomes `mov rA, K; lock add [rP+o], rA; nop`.
fn counter_increment(
    insns: &[Insn],
    pc: usize,
    live: &[u16],
    targets: &BTreeSet<usize>,
) -> Option<Vec<(usize, Insn)>> {
    let (load, add, store) = (insns[pc], *insns.get(pc + 1)?, *insns.get(pc + 2)?);
    let size = op::size(load.opcode);
    let wide = size == op::SIZE_DW;
    if op::mode(load.opcode) != op::MODE_MEM || !(wide || size == op::SIZE_W) {
        return None;
    }
    let (a, p) = (load.dst, load.src);
    let add_class = if wide { op::CLASS_ALU64 } else { op::CLASS_ALU };
    let add_ok = add.opcode == add_class | op::ALU_ADD | op::SRC_K && add.dst == a;
    let store_ok = store.opcode == op::CLASS_STX | op::MODE_MEM | size
        && store.dst == p
        && store.src == a
        && store.off == load.off;
    let dead_after = live[pc + 2] & (1 << a) == 0;
    let straight = !targets.contains(&(pc + 1)) && !targets.contains(&(pc + 2));
    (a != p && add_ok && store_ok && dead_after && straight).then(|| {
        let mov = if wide {
            mov64_imm(a, add.imm)
        } else {
            Insn::new(op::CLASS_ALU | op::ALU_MOV | op::SRC_K, a, 0, 0, add.imm)
        };
        vec![
            (pc, mov),
            (
                pc + 1,
                Insn::new(
                    op::CLASS_STX | op::MODE_ATOMIC | size,
                    p,
                    a,
                    load.off,
                    op::ATOMIC_ADD,
                ),
            ),
            (pc + 2, Insn::new(JA, 0, 0, 0, 0)),
        ]
    })
}

fn is_map_ref(insn: Insn) -> bool {
    insn.is_lddw() && matches!(insn.src, op::PSEUDO_MAP_FD | op::PSEUDO_MAP_VALUE)
}

fn first_ref(insns: &[Insn], map: usize) -> Option<usize> {
    insns
        .iter()
        .position(|i| is_map_ref(*i) && i.imm as usize == map)
}

/// An instruction whose only effect is writing its destination register.
fn is_pure(insn: Insn) -> bool {
    matches!(insn.class(), op::CLASS_ALU | op::CLASS_ALU64) || insn.is_lddw()
}

fn is_jump(insn: Insn) -> bool {
    let class = insn.class();
    (class == op::CLASS_JMP || class == op::CLASS_JMP32)
        && !insn.is_exit()
        && insn.opcode != op::CALL
        && insn.opcode != CALLX
}

fn jump_target(pc: usize, insn: Insn) -> i64 {
    let delta = if insn.opcode == op::JA32 {
        i64::from(insn.imm)
    } else {
        i64::from(insn.off)
    };
    pc as i64 + 1 + delta
}

fn call_target(pc: usize, insn: Insn) -> i64 {
    pc as i64 + 1 + i64::from(insn.imm)
}

/// Every jump and call lands on an instruction, every `lddw` has its second slot and every
/// map reference names one of the program's `maps` maps.
fn check_shape(insns: &[Insn], maps: usize) -> Result<(), (usize, &'static str)> {
    if insns.is_empty() {
        return Err((0, "an empty program"));
    }
    let mut second = vec![false; insns.len()];
    for (pc, insn) in insns.iter().enumerate() {
        if second[pc] {
            continue;
        }
        if insn.is_lddw() {
            if pc + 1 >= insns.len() {
                return Err((pc, "a truncated 64-bit load"));
            }
            second[pc + 1] = true;
        }
    }
    for (pc, insn) in insns.iter().enumerate() {
        if second[pc] {
            continue;
        }
        let target = if is_jump(*insn) {
            Some(jump_target(pc, *insn))
        } else if insn.is_local_call() {
            Some(call_target(pc, *insn))
        } else {
            None
        };
        if let Some(t) = target
            && (t < 0 || t as usize >= insns.len() || second[t as usize])
        {
            return Err((pc, "a jump or call outside the program"));
        }
        if insn.opcode == CALLX {
            return Err((pc, "a call through a register"));
        }
        if is_map_ref(*insn) && usize::try_from(insn.imm).map_or(true, |m| m >= maps) {
            return Err((pc, "a reference to a map the program does not have"));
        }
    }
    match insns.last() {
        Some(last) if last.is_exit() || last.opcode == JA || last.opcode == op::JA32 => Ok(()),
        Some(_) => Err((insns.len() - 1, "code that runs off the end")),
        None => Err((0, "no instructions")),
    }
}

/// Successors of `pc` inside its function (a local call returns to `pc + 1`).
fn successors(insns: &[Insn], pc: usize) -> Vec<usize> {
    let insn = insns[pc];
    if insn.is_exit() {
        return vec![];
    }
    if insn.is_lddw() {
        return vec![pc + 2];
    }
    if is_jump(insn) {
        let target = jump_target(pc, insn) as usize;
        if insn.opcode == JA || insn.opcode == op::JA32 {
            return vec![target];
        }
        return vec![pc + 1, target];
    }
    vec![pc + 1]
}

fn function_starts(insns: &[Insn]) -> BTreeSet<usize> {
    // No function at all in an empty program (what dead-code removal can leave of one whose
    // every path is cut).
    let mut starts = BTreeSet::new();
    if !insns.is_empty() {
        starts.insert(0);
    }
    starts.extend(
        insns
            .iter()
            .enumerate()
            .filter(|(_, i)| i.is_local_call())
            .map(|(pc, i)| call_target(pc, *i) as usize),
    );
    starts
}

/// Slots a path from instruction 0 reaches, following jumps and calls.
fn reachable(insns: &[Insn]) -> Vec<bool> {
    let mut seen = vec![false; insns.len()];
    let mut work = vec![0usize];
    while let Some(pc) = work.pop() {
        if pc >= insns.len() || std::mem::replace(&mut seen[pc], true) {
            continue;
        }
        if insns[pc].is_lddw() && pc + 1 < insns.len() {
            seen[pc + 1] = true;
        }
        if insns[pc].is_local_call() {
            work.push(call_target(pc, insns[pc]) as usize);
        }
        work.extend(successors(insns, pc));
    }
    seen
}

/// Jump and call targets.
fn jump_targets(insns: &[Insn]) -> BTreeSet<usize> {
    let mut out = BTreeSet::new();
    for (pc, insn) in insns.iter().enumerate() {
        if is_jump(*insn) {
            out.insert(jump_target(pc, *insn) as usize);
        } else if insn.is_local_call() {
            out.insert(call_target(pc, *insn) as usize);
        }
    }
    out
}

/// Drops the slots not in `keep` and re-targets jumps and calls: a jump to a dropped slot
/// lands on the next kept one (a dropped slot is a no-op that falls through, or unreachable).
fn compact(
    insns: &mut Vec<Insn>,
    lines: &mut Vec<Option<loader::lineinfo::LineInfo>>,
    keep: &[bool],
) {
    let mut new_index = vec![0usize; insns.len() + 1];
    let mut next = insns.len();
    let kept = keep.iter().filter(|&&k| k).count();
    let mut n = kept;
    for pc in (0..insns.len()).rev() {
        if keep[pc] {
            n -= 1;
            next = n;
        }
        new_index[pc] = next;
    }
    new_index[insns.len()] = kept;
    let mut out = Vec::with_capacity(kept);
    for (pc, insn) in insns.iter().enumerate() {
        if !keep[pc] {
            continue;
        }
        let mut insn = *insn;
        let new_pc = new_index[pc] as i64;
        // An lddw's second slot carries no target.
        let second = pc > 0 && insns[pc - 1].is_lddw() && keep[pc - 1];
        if !second {
            if insn.is_local_call() {
                insn.imm = (new_index[call_target(pc, insn) as usize] as i64 - new_pc - 1) as i32;
            } else if is_jump(insn) {
                let delta = new_index[jump_target(pc, insn) as usize] as i64 - new_pc - 1;
                if insn.opcode == op::JA32 {
                    insn.imm = delta as i32;
                } else {
                    insn.off = delta as i16;
                }
            }
        }
        out.push(insn);
    }
    if lines.len() == insns.len() {
        *lines = lines
            .iter()
            .zip(keep)
            .filter(|(_, k)| **k)
            .map(|(l, _)| l.clone())
            .collect();
    } else {
        lines.clear();
    }
    *insns = out;
}

/// The argument registers helper `id` reads (all five when it is unknown).
fn helper_args(id: i32) -> u16 {
    verifier::helpers::lookup(id).map_or(0b11_1110, |h| {
        ((1u16 << (h.args.len() + 1)) - 1) & 0b11_1110
    })
}

/// Registers read and written by one instruction: `(uses, defs)` as bit sets.
fn uses_defs(insn: Insn) -> (u16, u16) {
    let bit = |r: u8| 1u16 << (r & 15);
    let args = 0b11_1110u16; // r1..r5
    let clobber = 0b11_1111u16; // r0..r5
    match insn.class() {
        op::CLASS_ALU | op::CLASS_ALU64 => {
            let operation = op::operation(insn.opcode);
            let src = if op::source(insn.opcode) == op::SRC_X && operation != op::ALU_END {
                bit(insn.src)
            } else {
                0
            };
            let dst = if operation == op::ALU_MOV {
                0
            } else {
                bit(insn.dst)
            };
            (src | dst, bit(insn.dst))
        }
        op::CLASS_LDX => (bit(insn.src), bit(insn.dst)),
        op::CLASS_ST => (bit(insn.dst), 0),
        op::CLASS_STX => {
            if op::mode(insn.opcode) == op::MODE_ATOMIC {
                let fetch = insn.imm & op::ATOMIC_FETCH != 0;
                let r0 = if insn.imm == op::ATOMIC_CMPXCHG {
                    bit(0)
                } else {
                    0
                };
                (
                    bit(insn.dst) | bit(insn.src) | r0,
                    if fetch { bit(insn.src) | r0 } else { 0 },
                )
            } else {
                (bit(insn.dst) | bit(insn.src), 0)
            }
        }
        op::CLASS_LD => {
            if insn.is_lddw() {
                (0, bit(insn.dst))
            } else {
                // Legacy packet loads read the context in r6.
                (bit(6) | bit(insn.src), clobber)
            }
        }
        _ if insn.is_exit() => (bit(0), 0),
        _ if insn.opcode == op::CALL => {
            let uses = if insn.is_helper_call() {
                helper_args(insn.imm)
            } else {
                args
            };
            (uses, clobber)
        }
        _ => {
            let src = if op::source(insn.opcode) == op::SRC_X {
                bit(insn.src)
            } else {
                0
            };
            let ja = insn.opcode == JA || insn.opcode == op::JA32;
            (if ja { 0 } else { bit(insn.dst) | src }, 0)
        }
    }
}

/// Registers live after each slot.
fn liveness(insns: &[Insn]) -> Vec<u16> {
    liveness_in_out(insns).1
}

/// Registers live before and after each slot.
fn liveness_in_out(insns: &[Insn]) -> (Vec<u16>, Vec<u16>) {
    let n = insns.len();
    let mut live_in = vec![0u16; n];
    let mut live_out = vec![0u16; n];
    let is_second: Vec<bool> = (0..n).map(|pc| pc > 0 && insns[pc - 1].is_lddw()).collect();
    loop {
        let mut changed = false;
        for pc in (0..n).rev() {
            if is_second[pc] {
                continue;
            }
            let out = successors(insns, pc)
                .into_iter()
                .filter(|&s| s < n)
                .fold(0, |acc, s| acc | live_in[s]);
            let (mut uses, defs) = uses_defs(insns[pc]);
            if insns[pc].is_local_call() {
                // A function reads the arguments its entry has live.
                let callee = call_target(pc, insns[pc]) as usize;
                uses = live_in.get(callee).copied().unwrap_or(uses) & 0b11_1110;
            }
            let inn = uses | (out & !defs);
            if out != live_out[pc] || inn != live_in[pc] {
                live_out[pc] = out;
                live_in[pc] = inn;
                changed = true;
            }
        }
        if !changed {
            return (live_in, live_out);
        }
    }
}

/// What a register holds, as far as the lowering cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Val {
    Unknown,
    Const(u64),
    /// A map (as a helper's map argument).
    MapPtr(u32),
    /// A pointer into a value of the map (maybe NULL), at an offset when known.
    Value {
        map: u32,
        off: Option<i64>,
    },
    /// Something about the map merged with something else: using it loses track of the map.
    Lost(u32),
}

impl Val {
    fn map(self) -> Option<u32> {
        match self {
            Val::MapPtr(m) | Val::Value { map: m, .. } | Val::Lost(m) => Some(m),
            _ => None,
        }
    }
}

type State = [Val; 11];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AccessKind {
    Load,
    Store,
    AtomicAdd,
    OtherAtomic,
}

#[derive(Clone, Copy, Debug)]
struct Access {
    pc: usize,
    map: u32,
    off: Option<i64>,
    kind: AccessKind,
}

#[derive(Clone, Copy, Debug)]
struct HelperCall {
    pc: usize,
    id: i32,
    r1: Val,
}

#[derive(Default)]
struct Flow {
    at: Vec<Option<State>>,
    /// Maps whose pointers escaped, with the first instruction where one did.
    escaped: BTreeMap<u32, usize>,
    accesses: Vec<Access>,
    helper_calls: Vec<HelperCall>,
}

impl Flow {
    fn escape(&mut self, val: Val, pc: usize) {
        if let Some(m) = val.map() {
            self.escaped.entry(m).or_insert(pc);
        }
    }

    fn access(&mut self, base: Val, pc: usize, kind: AccessKind) {
        match base {
            Val::Value { map, off } => self.accesses.push(Access { pc, map, off, kind }),
            other => self.escape(other, pc),
        }
    }
}

fn join(a: Val, b: Val, pc: usize, flow: &mut Flow) -> Val {
    if a == b {
        return a;
    }
    match (a, b) {
        (Val::Value { map: m, .. }, Val::Value { map: n, .. }) if m == n => {
            Val::Value { map: m, off: None }
        }
        _ => match (a.map(), b.map()) {
            (Some(m), Some(n)) if m != n => {
                flow.escape(a, pc);
                flow.escape(b, pc);
                Val::Unknown
            }
            (Some(m), _) | (_, Some(m)) => Val::Lost(m),
            (None, None) => Val::Unknown,
        },
    }
}

/// Forward analysis of every function from an unknown entry state.
fn analyse(insns: &[Insn]) -> Flow {
    let n = insns.len();
    let mut flow = Flow {
        at: vec![None; n],
        ..Flow::default()
    };
    let starts = function_starts(insns);
    let (live_in, live_out) = liveness_in_out(insns);
    let mut work: Vec<usize> = Vec::new();
    for &s in &starts {
        flow.at[s] = Some([Val::Unknown; 11]);
        work.push(s);
    }
    // Functions returning a map pointer, and where.
    let mut returns: BTreeMap<usize, (Val, usize)> = BTreeMap::new();
    let mut accesses: BTreeMap<usize, Access> = BTreeMap::new();
    let mut calls: BTreeMap<usize, HelperCall> = BTreeMap::new();
    while let Some(pc) = work.pop() {
        let Some(mut s) = flow.at[pc] else { continue };
        let insn = insns[pc];
        let before = flow.accesses.len();
        step(insns, pc, &mut s, &mut flow, &mut calls, &live_in);
        for a in flow.accesses.drain(before..) {
            accesses.insert(a.pc, a);
        }
        if insn.is_exit() && s[0].map().is_some() {
            let start = *starts.range(..=pc).next_back().unwrap_or(&0);
            returns.entry(start).or_insert((s[0], pc));
        }
        for next in successors(insns, pc) {
            if next >= n {
                continue;
            }
            let merged = match flow.at[next] {
                None => s,
                Some(old) => {
                    let mut m = old;
                    for r in 0..11 {
                        m[r] = join(old[r], s[r], next, &mut flow);
                    }
                    m
                }
            };
            if flow.at[next] != Some(merged) {
                flow.at[next] = Some(merged);
                work.push(next);
            }
        }
    }
    // A map pointer returned to a caller that reads r0 escapes.
    if !returns.is_empty() {
        for (pc, insn) in insns.iter().enumerate() {
            if insn.is_local_call()
                && let Some(&(val, at)) = returns.get(&(call_target(pc, *insn) as usize))
                && live_out[pc] & 1 != 0
            {
                flow.escape(val, at);
            }
        }
    }
    flow.accesses = accesses.into_values().collect();
    flow.helper_calls = calls.into_values().collect();
    flow
}

/// The transfer function of one instruction.
fn step(
    insns: &[Insn],
    pc: usize,
    s: &mut State,
    flow: &mut Flow,
    calls: &mut BTreeMap<usize, HelperCall>,
    live_in: &[u16],
) {
    let insn = insns[pc];
    let dst = (insn.dst as usize).min(10);
    let src = (insn.src as usize).min(10);
    let x = op::source(insn.opcode) == op::SRC_X;
    match insn.class() {
        op::CLASS_ALU | op::CLASS_ALU64 => {
            let wide = insn.class() == op::CLASS_ALU64;
            let operation = op::operation(insn.opcode);
            let b = if x && operation != op::ALU_END {
                s[src]
            } else if wide {
                Val::Const(i64::from(insn.imm) as u64)
            } else {
                Val::Const(u64::from(insn.imm as u32))
            };
            let a = s[dst];
            let out = match (operation, a, b) {
                (op::ALU_MOV, _, b) if insn.off == 0 && (wide || b.map().is_none()) => match b {
                    Val::Const(v) if !wide => Val::Const(v & 0xffff_ffff),
                    b => b,
                },
                (op::ALU_ADD | op::ALU_SUB, Val::Value { map, off }, Val::Const(c)) if wide => {
                    let c = if operation == op::ALU_SUB {
                        (c as i64).wrapping_neg()
                    } else {
                        c as i64
                    };
                    Val::Value {
                        map,
                        off: off.and_then(|o| o.checked_add(c)),
                    }
                }
                (op::ALU_ADD | op::ALU_SUB, Val::Value { map, .. }, Val::Unknown) if wide => {
                    Val::Value { map, off: None }
                }
                (_, Val::Const(a), Val::Const(b)) if insn.off == 0 => {
                    match alu(operation, a, b, wide) {
                        Some(v) => Val::Const(v),
                        None => Val::Unknown,
                    }
                }
                _ => {
                    if operation != op::ALU_MOV {
                        flow.escape(a, pc);
                    }
                    flow.escape(b, pc);
                    Val::Unknown
                }
            };
            s[dst] = out;
        }
        op::CLASS_LDX => {
            flow.access(s[src], pc, AccessKind::Load);
            s[dst] = Val::Unknown;
        }
        op::CLASS_ST => flow.access(s[dst], pc, AccessKind::Store),
        op::CLASS_STX => {
            flow.escape(s[src], pc);
            if op::mode(insn.opcode) == op::MODE_ATOMIC {
                let kind = if insn.imm == op::ATOMIC_ADD {
                    AccessKind::AtomicAdd
                } else {
                    AccessKind::OtherAtomic
                };
                flow.access(s[dst], pc, kind);
                if insn.imm & op::ATOMIC_FETCH != 0 {
                    s[src] = Val::Unknown;
                }
                if insn.imm == op::ATOMIC_CMPXCHG {
                    s[0] = Val::Unknown;
                }
            } else {
                flow.access(s[dst], pc, AccessKind::Store);
            }
        }
        op::CLASS_LD => {
            if insn.is_lddw() {
                let next = insns.get(pc + 1).copied().unwrap_or_default();
                s[dst] = match insn.src {
                    op::PSEUDO_MAP_FD => Val::MapPtr(insn.imm as u32),
                    op::PSEUDO_MAP_VALUE => Val::Value {
                        map: insn.imm as u32,
                        off: Some(i64::from(next.imm)),
                    },
                    op::PSEUDO_NONE => {
                        Val::Const(u64::from(insn.imm as u32) | (u64::from(next.imm as u32) << 32))
                    }
                    _ => Val::Unknown,
                };
            } else {
                for r in s.iter_mut().take(6) {
                    *r = Val::Unknown;
                }
            }
        }
        _ if insn.is_exit() => {}
        _ if insn.is_helper_call() => {
            let call = HelperCall {
                pc,
                id: insn.imm,
                r1: s[1],
            };
            calls.insert(pc, call);
            let args = helper_args(insn.imm);
            for (r, val) in s.iter().enumerate().take(6).skip(1) {
                if args & (1 << r) != 0 && !(r == 1 && matches!(val, Val::MapPtr(_))) {
                    flow.escape(*val, pc);
                }
            }
            s[0] = match (insn.imm, s[1]) {
                (LOOKUP, Val::MapPtr(m)) => Val::Value {
                    map: m,
                    off: Some(0),
                },
                _ => Val::Unknown,
            };
            for r in s.iter_mut().take(6).skip(1) {
                *r = Val::Unknown;
            }
        }
        _ if insn.opcode == op::CALL => {
            // The arguments the callee reads leave this function's view.
            let reads = live_in
                .get(call_target(pc, insn) as usize)
                .copied()
                .unwrap_or(0b11_1110);
            for (r, &val) in s.iter().enumerate().take(6).skip(1) {
                if reads & (1 << r) != 0 {
                    flow.escape(val, pc);
                }
            }
            for r in s.iter_mut().take(6) {
                *r = Val::Unknown;
            }
        }
        _ => {
            // Conditional jumps compare; comparing a pointer (a NULL check) keeps it.
        }
    }
}

/// Constant arithmetic, for branch folding (`None`: not worked out here).
fn alu(operation: u8, a: u64, b: u64, wide: bool) -> Option<u64> {
    let v = if wide {
        match operation {
            op::ALU_ADD => a.wrapping_add(b),
            op::ALU_SUB => a.wrapping_sub(b),
            op::ALU_MUL => a.wrapping_mul(b),
            op::ALU_OR => a | b,
            op::ALU_AND => a & b,
            op::ALU_XOR => a ^ b,
            op::ALU_LSH if b < 64 => a << b,
            op::ALU_RSH if b < 64 => a >> b,
            op::ALU_MOV => b,
            _ => return None,
        }
    } else {
        let (a, b) = (a as u32, b as u32);
        u64::from(match operation {
            op::ALU_ADD => a.wrapping_add(b),
            op::ALU_SUB => a.wrapping_sub(b),
            op::ALU_MUL => a.wrapping_mul(b),
            op::ALU_OR => a | b,
            op::ALU_AND => a & b,
            op::ALU_XOR => a ^ b,
            op::ALU_LSH if b < 32 => a << b,
            op::ALU_RSH if b < 32 => a >> b,
            op::ALU_MOV => b,
            _ => return None,
        })
    };
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coalesce::MatchRule;
    use loader::link::LinkedProgram;

    fn map(name: &str, map_type: u32, key: u32, value: u32, kind: LinkedMapKind) -> LinkedMap {
        LinkedMap {
            name: name.into(),
            map_type,
            key_size: key,
            value_size: value,
            max_entries: 1,
            flags: 0,
            kind,
            initial: vec![],
        }
    }

    fn rodata(initial: &[u8]) -> LinkedMap {
        LinkedMap {
            initial: initial.to_vec(),
            flags: 0x80,
            ..map(
                ".rodata",
                map_type::ARRAY,
                4,
                initial.len() as u32,
                LinkedMapKind::GlobalData { read_only: true },
            )
        }
    }

    fn input(text: &str, maps: Vec<LinkedMap>) -> CoalesceInput {
        CoalesceInput {
            name: "t".into(),
            linked: LinkedProgram {
                lambda: "t".into(),
                program: "t".into(),
                section: "xdp".into(),
                insns: ebpf_isa::asm::assemble(text).unwrap(),
                maps,
                lines: vec![],
            },
            rule: MatchRule {
                port: 9000,
                lambda_id: None,
            },
            seeds: vec![],
        }
    }

    #[test]
    fn an_empty_program_is_malformed_not_a_panic() {
        let mut empty = input("exit", vec![]);
        empty.linked.insns.clear();
        match lower(&empty, nfp()) {
            Err(LowerError::Malformed { what, .. }) => assert_eq!(what, "an empty program"),
            other => panic!("{other:?}"),
        }
        assert!(function_starts(&[]).is_empty());
    }

    fn nfp() -> &'static NicModel {
        crate::model::model("nfp-4000").unwrap()
    }

    fn refusals(err: LowerError) -> Vec<String> {
        match err {
            LowerError::Refused { refusals, .. } => {
                refusals.iter().map(ToString::to_string).collect()
            }
            other => panic!("{other}"),
        }
    }

    fn text(insns: &[Insn]) -> String {
        let mut out = ebpf_isa::disasm::disassemble(insns).unwrap().join("\n");
        out.push('\n');
        out
    }

    const DECLARED: LinkedMapKind = LinkedMapKind::Declared;

    #[test]
    fn rodata_loads_fold_into_immediates_and_the_map_goes() {
        // A u16, a u32 with the top bit set and a byte, as the SDK's parameters are read.
        let data = [0x28, 0x23, 0, 0, 0x01, 0, 0, 0x80, 7];
        let src = "lddw %r2, map_value 0+0
ldxh %r0, [%r2+0]
ldxw %r3, [%r2+4]
add %r0, %r3
lddw %r2, map_value 0+8
ldxb %r3, [%r2+0]
add %r0, %r3
exit";
        let out = lower(&input(src, vec![rodata(&data)]), nfp()).unwrap();
        assert_eq!(out.report.rodata_loads_folded, 3);
        assert!(out.input.linked.maps.is_empty());
        assert_eq!(out.report.maps_dropped, vec![".rodata".to_owned()]);
        let listing = text(&out.input.linked.insns);
        assert!(!listing.contains("map_value"), "{listing}");
        // 0x80000001 does not fit a sign-extended immediate: a 32-bit mov, which zero-extends.
        assert!(
            listing.contains("mov32 %r3, 0x80000001") || listing.contains("mov32 %r3, -2147483647"),
            "{listing}"
        );
        assert_eq!(out.report.insns_after, 6, "{listing}");
    }

    #[test]
    fn a_rodata_pointer_that_escapes_is_refused() {
        // Handed to a helper as a key: the helper reads it, nothing to fold.
        let src = "lddw %r1, map_fd 1
lddw %r2, map_value 0+0
call 1
mov %r0, 2
exit";
        let maps = vec![
            rodata(&[1, 2, 3, 4]),
            map("M", map_type::HASH, 4, 8, DECLARED),
        ];
        let got = refusals(lower(&input(src, maps), nfp()).unwrap_err());
        assert_eq!(
            got,
            vec![
                "read-only global .rodata is reached through a pointer that leaves the \
                 function's registers at instruction 4: only loads at a constant offset fold \
                 into the code, and nfp-4000 cannot hold read-only global data"
            ]
        );
    }

    const BUMP: &str = "stxw [%r10-4], %r1
mov %r2, %r10
add %r2, -4
lddw %r1, map_fd 0
call 1
jeq %r0, 0, +3
ldxdw %r1, [%r0+0]
add %r1, 1
stxdw [%r0+0], %r1
exit";

    #[test]
    fn per_cpu_counters_become_atomic_adds_on_a_shared_array() {
        let src = format!("mov %r1, 3\ncall local bump\nmov %r0, 2\nexit\nbump:\n{BUMP}");
        let maps = vec![map("LNIC_STATS", map_type::PERCPU_ARRAY, 4, 8, DECLARED)];
        let out = lower(&input(&src, maps), nfp()).unwrap();
        assert_eq!(out.report.counters_made_atomic, 1);
        assert_eq!(
            out.report.maps_lowered,
            vec!["LNIC_STATS: percpu_array -> array".to_owned()]
        );
        assert_eq!(out.input.linked.maps[0].map_type, map_type::ARRAY);
        let listing = text(&out.input.linked.insns);
        assert!(listing.contains("lock add [%r0], %r1"), "{listing}");
        assert!(!listing.contains("stxdw"), "{listing}");
        // The nop left by the store is gone and the null check re-targeted onto the exit.
        assert_eq!(
            out.report.insns_after,
            out.report.insns_before - 1,
            "{listing}"
        );
    }

    #[test]
    fn a_per_cpu_value_that_is_used_is_refused() {
        // The incremented value is returned: every core would see the others' increments.
        let src = BUMP.replace("exit", "mov %r0, %r1\nexit");
        let maps = vec![map("NEXT_ID", map_type::PERCPU_ARRAY, 4, 8, DECLARED)];
        let src = format!("mov %r1, 0\n{src}");
        let got = refusals(lower(&input(&src, maps), nfp()).unwrap_err());
        assert_eq!(
            got,
            vec![
                "per-CPU map NEXT_ID is read (the value is used) at instruction 8: on nfp-4000 \
                 its cores share one copy, so only counter increments (load, add a constant, \
                 store back, the loaded value unused) can be lowered, into atomic adds",
                "per-CPU map NEXT_ID is written other than by a counter increment at \
                 instruction 10: on nfp-4000 its cores share one copy, so only counter \
                 increments (load, add a constant, store back, the loaded value unused) can be \
                 lowered, into atomic adds"
            ]
        );
        // A store that is no increment.
        let src = "stw [%r10-4], 0
mov %r2, %r10
add %r2, -4
lddw %r1, map_fd 0
call 1
jeq %r0, 0, +1
stdw [%r0+0], 9
mov %r0, 2
exit";
        let maps = vec![map("S", map_type::PERCPU_HASH, 4, 8, DECLARED)];
        let got = refusals(lower(&input(src, maps), nfp()).unwrap_err());
        assert!(
            got[0].starts_with(
                "per-CPU map S is written other than by a counter increment at instruction 7"
            ),
            "{got:?}"
        );
    }

    #[test]
    fn log_lines_are_dropped_with_their_clock_reads() {
        // The SDK's `line_with`: a record in the per-CPU scratch buffer, stamped with
        // bpf_ktime_get_ns, copied into the ring buffer.
        let src = "stw [%r10-4], 0
mov %r2, %r10
add %r2, -4
lddw %r1, map_fd 1
call 1
mov %r6, %r0
jeq %r6, 0, done
call 5
stxdw [%r6+0], %r0
sth [%r6+8], 3
lddw %r1, map_fd 0
mov %r2, %r6
mov %r3, 144
mov %r4, 0
call 130
done:
mov %r0, 2
exit";
        let maps = vec![
            map("LNIC_LOG", map_type::RINGBUF, 0, 0, DECLARED),
            map("LNIC_LOG_SCRATCH", map_type::PERCPU_ARRAY, 4, 144, DECLARED),
        ];
        let out = lower(&input(src, maps), nfp()).unwrap();
        assert_eq!(out.report.log_calls_removed, 2);
        assert_eq!(out.report.branches_folded, 1);
        assert!(out.input.linked.maps.is_empty());
        assert_eq!(out.report.losses.len(), 1);
        // Only the dead store of the lookup key remains before the return.
        assert_eq!(
            text(&out.input.linked.insns),
            "stw [%r10-4], 0\nmov %r0, 2\nexit\n"
        );
        // A clock read whose value is used is refused by name.
        let got = refusals(lower(&input("call 5\nexit", vec![]), nfp()).unwrap_err());
        assert_eq!(
            got,
            vec!["helper bpf_ktime_get_ns at instruction 0 is not available on nfp-4000"]
        );
    }

    #[test]
    fn maps_the_firmware_cannot_hold_are_refused_by_name() {
        let src = "lddw %r1, map_fd 0
lddw %r1, map_fd 1
stw [%r10-4], 0
mov %r2, %r10
add %r2, -4
call 1
mov %r0, 2
exit";
        let maps = vec![
            map("PENDING", map_type::LRU_HASH, 4, 32, DECLARED),
            map("CACHE", map_type::HASH, 256, 1404, DECLARED),
        ];
        // The first lddw is dead and goes: only CACHE is used.
        let got = refusals(lower(&input(src, maps.clone()), nfp()).unwrap_err());
        assert_eq!(
            got,
            vec![
                "map CACHE has 1664-byte elements (key and value rounded up to 8); nfp-4000 \
                 takes at most 64"
            ]
        );
        let src = src
            .replacen("map_fd 1", "map_fd 0", 2)
            .replacen("map_fd 0", "map_fd 1", 1);
        let got = refusals(lower(&input(&src, maps), nfp()).unwrap_err());
        assert_eq!(
            got,
            vec![
                "map PENDING is a lru_hash map; nfp-4000 holds only array and hash maps (an LRU \
                 hash evicts when full; a plain hash would refuse the insert instead)"
            ]
        );
    }

    #[test]
    fn map_flags_and_seeded_per_cpu_counters_are_refused() {
        let src = format!("mov %r1, 3\ncall local bump\nmov %r0, 2\nexit\nbump:\n{BUMP}");
        // A hash without preallocation: the driver refuses any flags.
        let mut hash = map("H", map_type::HASH, 4, 8, DECLARED);
        hash.flags = 1;
        let got = refusals(lower(&input(&src, vec![hash]), nfp()).unwrap_err());
        assert_eq!(
            got,
            vec!["map H has flags 0x1; the nfp driver refuses any map flags"]
        );
        // A per-CPU counter seeded with a start value: each CPU's copy starts from it.
        let mut seeded = input(&src, vec![map("C", map_type::PERCPU_ARRAY, 4, 8, DECLARED)]);
        seeded.seeds = vec![vec![(vec![0; 4], vec![5, 0, 0, 0, 0, 0, 0, 0])]];
        let got = refusals(lower(&seeded, nfp()).unwrap_err());
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].starts_with("per-CPU map C is seeded with records (each CPU's copy starts from them) at instruction 7"),
            "{got:?}"
        );
    }

    #[test]
    fn malformed_code_is_an_error_not_a_panic() {
        for (src, what) in [
            ("ja +5\nexit", "a jump or call outside the program"),
            ("mov %r0, 1", "code that runs off the end"),
        ] {
            let err = lower(&input(src, vec![]), nfp()).unwrap_err().to_string();
            assert!(err.contains(what), "{err}");
        }
        let err = lower(
            &input("lddw %r1, map_fd 2\nmov %r0, 2\nexit", vec![]),
            nfp(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("a reference to a map the program does not have"),
            "{err}"
        );
        let mut bad = input("exit", vec![]);
        bad.linked.insns = vec![Insn::new(op::LDDW, 0, 0, 0, 0)];
        let err = lower(&bad, nfp()).unwrap_err().to_string();
        assert!(err.contains("a truncated 64-bit load"), "{err}");
    }
}
