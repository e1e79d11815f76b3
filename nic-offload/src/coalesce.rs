//! The workload optimizer: coalesce every lambda deployed on an interface into one program with
//! no tail calls, which is what a NIC core can run (and, on the host, saves the tail call).
//!
//! The output program is:
//!
//! ```text
//! dispatch:   parse Ethernet → IPv4 (any IHL) or IPv6 → UDP, read the destination port and the
//!             λ header's lambda_id; compare them against each rule in code (rules with a
//!             lambda id first, then "any id" rules, each group in the order given); on a match
//!             `r1 = ctx; call <lambda entry>; exit`; nothing matches → XDP_PASS
//! functions:  every lambda's functions as bpf-to-bpf subprograms, identical ones once
//! ```
//!
//! - **Map relocations are merged**: each lambda's map indices are renumbered into one table.
//!   A lambda's declared maps stay its own (`<lambda>/<MAP>`: state is per lambda, as in the
//!   tail-call deployment); read-only global data with the same definition and contents (the
//!   same object serving the same parameters, or constant pools) is one map.
//! - **Identical subprograms are merged**: functions are compared after renumbering, with
//!   calls compared by the identity of their callee, so two lambdas built from the same SDK
//!   share its out-of-line functions, and two deployments of one object share all their code
//!   unless their maps differ.
//! - **Unreachable code is removed**: whatever the dispatch cannot reach (functions no longer
//!   called, instructions no path reaches) is dropped and jumps and calls are re-targeted.
//!
//! The dispatch reads only what routing needs; each lambda still checks its own port, lambda
//! id and header (its `.rodata` parameters are kept), so a request reaches exactly the code and
//! the answer it would get from the lambda alone.

use std::collections::HashMap;

use ebpf_isa::{Insn, opcode as op};
use loader::link::{LinkedMap, LinkedMapKind, LinkedProgram};
use serde::Serialize;

use crate::model::NicModel;
use crate::plan::DISPATCH_PER_RULE_INSNS;

/// Which requests a lambda serves: UDP destination port and λ lambda id (`None`: any id).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct MatchRule {
    pub port: u16,
    pub lambda_id: Option<u32>,
}

/// One deployed lambda: its linked program (with its `.rodata` parameters written in), the
/// rule that routes to it, and the records to seed into each of its maps (by map index).
#[derive(Clone, Debug)]
pub struct CoalesceInput {
    pub name: String,
    pub linked: LinkedProgram,
    pub rule: MatchRule,
    pub seeds: Vec<Vec<(Vec<u8>, Vec<u8>)>>,
}

impl CoalesceInput {
    /// A lambda object linked for `rule` (its port and lambda id written into its `.rodata`),
    /// with the seed records it ships for its maps.
    pub fn from_object(
        bytes: &[u8],
        name: &str,
        rule: MatchRule,
    ) -> Result<CoalesceInput, loader::link::LinkError> {
        let params = loader::LambdaParams {
            port: rule.port,
            lambda_id: rule.lambda_id,
        };
        let (image, linked) = loader::link::link_xdp(bytes, name, &params)?;
        let seeds = linked
            .maps
            .iter()
            .map(|m| {
                image
                    .seed(&m.name)
                    .map(|s| s.records().map(|(k, v)| (k.to_vec(), v.to_vec())).collect())
                    .unwrap_or_default()
            })
            .collect();
        Ok(CoalesceInput {
            name: name.to_owned(),
            linked,
            rule,
            seeds,
        })
    }
}

/// Sizes before and after, and what each step removed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CoalesceReport {
    pub lambdas: usize,
    /// Instruction slots of the lambdas as separate programs.
    pub insns_before: usize,
    /// Slots of the generated dispatch.
    pub dispatch_insns: usize,
    /// Slots of the coalesced program.
    pub insns_after: usize,
    pub functions_before: usize,
    /// Functions dropped as duplicates of another.
    pub functions_merged: usize,
    /// Slots no path from the dispatch reaches, removed.
    pub unreachable_removed: usize,
    pub maps_before: usize,
    pub maps_after: usize,
}

/// The coalesced program, ready for the verifier and for loading.
#[derive(Clone, Debug)]
pub struct Coalesced {
    pub insns: Vec<Insn>,
    pub maps: Vec<LinkedMap>,
    /// Seed records by map index.
    pub seeds: Vec<Vec<(Vec<u8>, Vec<u8>)>>,
    /// Where each lambda's entry ended up, in input order.
    pub entries: Vec<usize>,
    /// One BTF `FUNC` per function, lambda entries global (see [`crate::btf`]): load with it
    /// on the host, where it keeps the kernel's verification cost per lambda what it is alone.
    pub btf: loader::kernel::ProgramBtf,
    pub report: CoalesceReport,
}

/// Why coalescing failed.
#[derive(Debug, thiserror::Error)]
pub enum CoalesceError {
    #[error("nothing to coalesce")]
    Empty,
    #[error("lambda `{lambda}` has no instructions")]
    EmptyLambda { lambda: String },
    #[error(
        "lambdas `{first}` and `{second}` both serve port {port}, lambda id {id}: a request could go to either"
    )]
    DuplicateRule {
        first: String,
        second: String,
        port: u16,
        id: String,
    },
    #[error("lambda `{lambda}`: {what} at instruction {insn}")]
    Malformed {
        lambda: String,
        insn: usize,
        what: &'static str,
    },
    #[error("the coalesced program has {len} instruction slots; the kernel takes at most {max}")]
    TooLarge { len: usize, max: usize },
}

/// The kernel's limit on a program's instruction slots (BPF_COMPLEXITY_LIMIT_INSNS).
const MAX_SLOTS: usize = 1_000_000;
/// `BPF_JMP | BPF_JA`.
const JA: u8 = 0x05;

/// The dispatch, with one `call local +0` placeholder per rule, in rule order.
fn dispatch(rules: &[(usize, MatchRule)]) -> Vec<Insn> {
    // Packet loads below are of network-order fields with a little-endian load, so each
    // constant is byte-swapped into the value the load yields.
    //
    // A UDP datagram that is not a λ request (too short, another magic or version) goes to
    // its port's any-id rule, as behind the tail-call dispatcher (a memcached reply reaches
    // the memcached lambda so): its "lambda id" register then holds a value no rule with an
    // id compares equal to.
    let not_lambda = (0..=u32::MAX)
        .find(|v| {
            !rules
                .iter()
                .any(|(_, r)| r.lambda_id.map(u32::swap_bytes) == Some(*v))
        })
        .expect("fewer rules than lambda ids");
    let mut text = format!(
        "mov %r6, %r1
ldxw %r2, [%r6+0]
ldxw %r3, [%r6+4]
mov %r4, %r2
add %r4, 14
jgt %r4, %r3, pass
ldxh %r5, [%r2+12]
jeq %r5, 0x0008, ipv4
jne %r5, 0xdd86, pass
mov %r4, %r2
add %r4, 54
jgt %r4, %r3, pass
ldxb %r5, [%r2+20]
jne %r5, 17, pass
add %r2, 54
ja udp
ipv4:
mov %r4, %r2
add %r4, 34
jgt %r4, %r3, pass
ldxb %r5, [%r2+23]
jne %r5, 17, pass
ldxb %r5, [%r2+14]
and %r5, 15
lsh %r5, 2
jlt %r5, 20, pass
add %r2, 14
add %r2, %r5
udp:
mov %r4, %r2
add %r4, 8
jgt %r4, %r3, pass
ldxh %r7, [%r2+2]
mov32 %r8, {not_lambda:#x}
mov %r4, %r2
add %r4, 32
jgt %r4, %r3, rules
ldxh %r5, [%r2+8]
jne %r5, {magic:#x}, rules
ldxb %r5, [%r2+10]
jne %r5, {version}, rules
ldxw %r8, [%r2+12]
rules:
",
        magic = lambda_ebpf::wire::MAGIC.swap_bytes(),
        version = lambda_ebpf::wire::VERSION,
    );
    for (n, (_, rule)) in rules.iter().enumerate() {
        text.push_str(&format!(
            "jne32 %r7, {:#x}, next{n}\n",
            u32::from(rule.port.swap_bytes())
        ));
        if let Some(id) = rule.lambda_id {
            text.push_str(&format!("jne32 %r8, {:#x}, next{n}\n", id.swap_bytes()));
        }
        // The call's distance is patched once the entry's position is known.
        text.push_str(&format!("mov %r1, %r6\ncall local +0\nexit\nnext{n}:\n"));
    }
    text.push_str("pass:\nmov %r0, 2\nexit\n");
    ebpf_isa::asm::assemble(&text).expect("the dispatch template assembles")
}

/// The start of every function of a linked program: 0 and every local call's target.
fn function_starts(lambda: &str, insns: &[Insn]) -> Result<Vec<usize>, CoalesceError> {
    let mut starts = vec![0];
    for (pc, insn) in insns.iter().enumerate() {
        if insn.is_local_call() {
            let target = pc as i64 + 1 + i64::from(insn.imm);
            if target < 0 || target as usize >= insns.len() {
                return Err(CoalesceError::Malformed {
                    lambda: lambda.to_owned(),
                    insn: pc,
                    what: "a call outside the program",
                });
            }
            starts.push(target as usize);
        }
    }
    starts.sort_unstable();
    starts.dedup();
    Ok(starts)
}

/// One function of the coalesced program: its code with map references already renumbered,
/// and for each local call in it (by offset) the callee's function id.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Function {
    code: Vec<Insn>,
    calls: Vec<(usize, usize)>,
}

fn is_map_ref(insn: Insn) -> bool {
    insn.is_lddw() && matches!(insn.src, op::PSEUDO_MAP_FD | op::PSEUDO_MAP_VALUE)
}

/// The successors of `pc` inside its function (calls fall through).
fn successors(insns: &[Insn], pc: usize) -> Vec<usize> {
    let insn = insns[pc];
    if insn.is_exit() {
        return vec![];
    }
    if insn.is_lddw() {
        return vec![pc + 2];
    }
    let class = insn.class();
    if (class == op::CLASS_JMP || class == op::CLASS_JMP32) && !insn.is_helper_call() {
        if insn.is_local_call() || insn.opcode == 0x85 || insn.opcode == 0x8d {
            return vec![pc + 1];
        }
        if insn.opcode == JA {
            return vec![(pc as i64 + 1 + i64::from(insn.off)) as usize];
        }
        if insn.opcode == op::JA32 {
            return vec![(pc as i64 + 1 + i64::from(insn.imm)) as usize];
        }
        return vec![pc + 1, (pc as i64 + 1 + i64::from(insn.off)) as usize];
    }
    vec![pc + 1]
}

/// Functions move independently, so each must be self-contained, as the kernel requires of
/// subprograms: every jump lands inside its own function, and the last slot is an `exit` or an
/// unconditional jump (no falling into the next function).
fn check_functions(
    lambda: &str,
    insns: &[Insn],
    bounds: &[(usize, usize)],
) -> Result<(), CoalesceError> {
    let malformed = |insn, what| {
        Err(CoalesceError::Malformed {
            lambda: lambda.to_owned(),
            insn,
            what,
        })
    };
    for &(start, end) in bounds {
        let mut pc = start;
        let mut last = start;
        while pc < end {
            last = pc;
            if insns[pc].is_lddw() {
                if pc + 1 >= end {
                    return malformed(pc, "an lddw cut off at the end of its function");
                }
                pc += 2;
                continue;
            }
            if !insns[pc].is_local_call() {
                for target in successors(insns, pc) {
                    if target < start || target > end || (target == end && target != pc + 1) {
                        return malformed(pc, "a jump out of its function");
                    }
                }
            }
            pc += 1;
        }
        let tail = insns[last];
        if !(tail.is_exit() || tail.opcode == JA || tail.opcode == op::JA32) {
            return malformed(last, "a function that falls through into the next");
        }
    }
    Ok(())
}

/// Coalesces `inputs` into one program.
pub fn coalesce(inputs: &[CoalesceInput]) -> Result<Coalesced, CoalesceError> {
    if inputs.is_empty() {
        return Err(CoalesceError::Empty);
    }
    // Rules with an id first, so an "any id" rule on the same port does not shadow them.
    let mut rules: Vec<(usize, MatchRule)> = inputs
        .iter()
        .enumerate()
        .map(|(i, x)| (i, x.rule))
        .collect();
    rules.sort_by_key(|(i, r)| (r.lambda_id.is_none(), *i));
    for pair in rules.windows(2) {
        let ((a, ra), (b, rb)) = (pair[0], pair[1]);
        if ra == rb {
            return Err(CoalesceError::DuplicateRule {
                first: inputs[a].name.clone(),
                second: inputs[b].name.clone(),
                port: ra.port,
                id: ra.lambda_id.map_or("any".into(), |id| id.to_string()),
            });
        }
    }

    // Merged map table.
    let mut maps: Vec<LinkedMap> = Vec::new();
    let mut seeds: Vec<Vec<(Vec<u8>, Vec<u8>)>> = Vec::new();
    let mut map_index: Vec<Vec<usize>> = Vec::new();
    let mut maps_before = 0;
    for input in inputs {
        let mut local = Vec::new();
        for (m, map) in input.linked.maps.iter().enumerate() {
            maps_before += 1;
            let shareable = matches!(map.kind, LinkedMapKind::GlobalData { read_only: true });
            let existing = shareable
                .then(|| {
                    maps.iter().position(|other| {
                        other.kind == map.kind
                            && other.map_type == map.map_type
                            && other.key_size == map.key_size
                            && other.value_size == map.value_size
                            && other.max_entries == map.max_entries
                            && other.flags == map.flags
                            && other.initial == map.initial
                    })
                })
                .flatten();
            let index = match existing {
                Some(index) => index,
                None => {
                    let mut merged = map.clone();
                    if !shareable {
                        merged.name = format!("{}/{}", input.name, map.name);
                    }
                    maps.push(merged);
                    seeds.push(input.seeds.get(m).cloned().unwrap_or_default());
                    maps.len() - 1
                }
            };
            local.push(index);
        }
        map_index.push(local);
    }

    // Functions, interned by content (callees by identity).
    let mut functions: Vec<Function> = Vec::new();
    let mut interned: HashMap<Function, usize> = HashMap::new();
    let mut entries_fn = Vec::new();
    let mut functions_before = 0;
    let mut insns_before = 0;
    for (l, input) in inputs.iter().enumerate() {
        let insns = &input.linked.insns;
        if insns.is_empty() {
            return Err(CoalesceError::EmptyLambda {
                lambda: input.name.clone(),
            });
        }
        insns_before += insns.len();
        let starts = function_starts(&input.name, insns)?;
        functions_before += starts.len();
        let bounds: Vec<(usize, usize)> = starts
            .iter()
            .enumerate()
            .map(|(k, &s)| (s, starts.get(k + 1).copied().unwrap_or(insns.len())))
            .collect();
        check_functions(&input.name, insns, &bounds)?;
        // Callees before callers: the call graph is acyclic (the kernel refuses recursion),
        // so intern in an order where every callee is done first.
        let mut ids: Vec<Option<usize>> = vec![None; bounds.len()];
        let mut remaining: Vec<usize> = (0..bounds.len()).collect();
        while !remaining.is_empty() {
            let before = remaining.len();
            remaining.retain(|&f| {
                let (start, end) = bounds[f];
                let mut code = insns[start..end].to_vec();
                let mut calls = Vec::new();
                for (off, insn) in code.iter_mut().enumerate() {
                    if is_map_ref(*insn) {
                        let Some(&global) = usize::try_from(insn.imm)
                            .ok()
                            .and_then(|m| map_index[l].get(m))
                        else {
                            // Left for the verifier to refuse, with its own message.
                            continue;
                        };
                        insn.imm = global as i32;
                    }
                    if insn.is_local_call() {
                        let target = (start + off) as i64 + 1 + i64::from(insn.imm);
                        let callee = starts.binary_search(&(target as usize)).expect("a start");
                        let Some(id) = ids[callee] else {
                            return true; // callee not interned yet
                        };
                        calls.push((off, id));
                        insn.imm = 0;
                    }
                }
                let function = Function { code, calls };
                let next = functions.len();
                let id = *interned.entry(function.clone()).or_insert(next);
                if id == next {
                    functions.push(function);
                }
                ids[f] = Some(id);
                false
            });
            if remaining.len() == before {
                return Err(CoalesceError::Malformed {
                    lambda: input.name.clone(),
                    insn: bounds[remaining[0]].0,
                    what: "recursive calls",
                });
            }
        }
        entries_fn.push(ids[0].expect("entry interned"));
    }
    let functions_merged = functions_before - functions.len();

    // Layout: dispatch, then the functions the dispatch reaches, in first-seen order.
    let mut dispatch_code = dispatch(&rules);
    let dispatch_insns = dispatch_code.len();
    let mut reachable = vec![false; functions.len()];
    let mut stack: Vec<usize> = entries_fn.clone();
    while let Some(f) = stack.pop() {
        if !std::mem::replace(&mut reachable[f], true) {
            stack.extend(functions[f].calls.iter().map(|&(_, c)| c));
        }
    }
    let mut start_of = vec![usize::MAX; functions.len()];
    let mut at = dispatch_insns;
    for (f, function) in functions.iter().enumerate() {
        if reachable[f] {
            start_of[f] = at;
            at += function.code.len();
        }
    }
    let mut insns = Vec::with_capacity(at);
    let mut n = 0;
    for (pc, insn) in dispatch_code.iter_mut().enumerate() {
        if insn.is_local_call() {
            let target = start_of[entries_fn[rules[n].0]];
            insn.imm = (target as i64 - pc as i64 - 1) as i32;
            n += 1;
        }
    }
    insns.extend_from_slice(&dispatch_code);
    for (f, function) in functions.iter().enumerate() {
        if !reachable[f] {
            continue;
        }
        let base = insns.len();
        insns.extend_from_slice(&function.code);
        for &(off, callee) in &function.calls {
            let pc = base + off;
            insns[pc].imm = (start_of[callee] as i64 - pc as i64 - 1) as i32;
        }
    }
    let (insns, unreachable_removed) = remove_unreachable(insns);
    if insns.len() > MAX_SLOTS {
        return Err(CoalesceError::TooLarge {
            len: insns.len(),
            max: MAX_SLOTS,
        });
    }
    // Entries after the removal: follow the dispatch's calls again.
    let mut entries = vec![0; inputs.len()];
    let mut n = 0;
    for (pc, insn) in insns.iter().enumerate().take(dispatch_insns) {
        if insn.is_local_call() {
            entries[rules[n].0] = (pc as i64 + 1 + i64::from(insn.imm)) as usize;
            n += 1;
        }
    }
    let functions_after: usize = reachable.iter().filter(|&&r| r).count();
    let mut starts = vec![0];
    starts.extend(
        insns
            .iter()
            .enumerate()
            .filter(|(_, i)| i.is_local_call())
            .map(|(pc, i)| (pc as i64 + 1 + i64::from(i.imm)) as usize),
    );
    starts.sort_unstable();
    starts.dedup();
    let mut global = vec![false; starts.len()];
    let mut names: Vec<String> = (0..starts.len()).map(|k| format!("lnic_fn_{k}")).collect();
    names[0] = "lnic_dispatch".into();
    for (l, &entry) in entries.iter().enumerate().rev() {
        let k = starts
            .binary_search(&entry)
            .expect("entries are call targets");
        global[k] = true;
        names[k] = format!("lnic_{}", inputs[l].name);
    }
    let btf = crate::btf::program_btf(&starts, &global, &names);
    let report = CoalesceReport {
        lambdas: inputs.len(),
        insns_before,
        dispatch_insns,
        insns_after: insns.len(),
        functions_before,
        functions_merged: functions_merged + (functions.len() - functions_after),
        unreachable_removed,
        maps_before,
        maps_after: maps.len(),
    };
    Ok(Coalesced {
        insns,
        maps,
        seeds,
        entries,
        btf,
        report,
    })
}

/// Drops every slot no path from instruction 0 reaches (following jumps and calls), then
/// re-targets jumps and calls. Returns the program and how many slots went.
fn remove_unreachable(insns: Vec<Insn>) -> (Vec<Insn>, usize) {
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
            work.push((pc as i64 + 1 + i64::from(insns[pc].imm)) as usize);
        }
        work.extend(successors(&insns, pc));
    }
    let removed = seen.iter().filter(|&&s| !s).count();
    if removed == 0 {
        return (insns, 0);
    }
    // new_index[pc] for kept slots; a jump to a removed slot cannot exist (it would be seen).
    let mut new_index = vec![usize::MAX; insns.len() + 1];
    let mut next = 0;
    for pc in 0..insns.len() {
        if seen[pc] {
            new_index[pc] = next;
            next += 1;
        }
    }
    new_index[insns.len()] = next;
    let mut out = Vec::with_capacity(next);
    for (pc, insn) in insns.iter().enumerate() {
        if !seen[pc] {
            continue;
        }
        let mut insn = *insn;
        let new_pc = new_index[pc] as i64;
        let retarget = |target: i64| new_index[target as usize] as i64 - new_pc - 1;
        let class = insn.class();
        if insn.is_local_call() || insn.opcode == op::JA32 {
            insn.imm = retarget(pc as i64 + 1 + i64::from(insn.imm)) as i32;
        } else if (class == op::CLASS_JMP || class == op::CLASS_JMP32)
            && !insn.is_exit()
            && insn.opcode != 0x85
            && insn.opcode != 0x8d
        {
            insn.off = retarget(pc as i64 + 1 + i64::from(insn.off)) as i16;
        }
        out.push(insn);
    }
    (out, removed)
}

/// Instruction slots of the dispatch without any rule (parsing and the XDP_PASS exit).
pub fn dispatch_fixed_insns() -> usize {
    dispatch(&[]).len()
}

/// How lambdas pack into NIC cores.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Packing {
    /// The core of each lambda, or `None` when it alone exceeds a core's budget.
    pub core_of: Vec<Option<usize>>,
    /// Instruction slots of each core's coalesced program (dispatch included).
    pub core_insns: Vec<usize>,
}

/// How lambdas of `sizes` instruction slots pack into NIC cores of `model`: each core runs one
/// coalesced program of its own dispatch and lambdas; first-fit by decreasing size.
pub fn pack_cores(model: &NicModel, sizes: &[usize]) -> Packing {
    let fixed = dispatch_fixed_insns();
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(sizes[i]));
    let mut used: Vec<usize> = Vec::new();
    let mut core_of = vec![None; sizes.len()];
    for i in order {
        let need = sizes[i] + DISPATCH_PER_RULE_INSNS;
        if fixed + need > model.insn_budget {
            continue;
        }
        let core = match used.iter().position(|&u| u + need <= model.insn_budget) {
            Some(core) => core,
            None => {
                used.push(fixed);
                used.len() - 1
            }
        };
        used[core] += need;
        core_of[i] = Some(core);
    }
    Packing {
        core_of,
        core_insns: used,
    }
}

/// One NIC core's share of a set of lambdas: which lambdas (indices into the input, in input
/// order) and the coalesced program of them alone, with its own dispatch.
#[derive(Clone, Debug)]
pub struct CoreProgram {
    pub members: Vec<usize>,
    pub coalesced: Coalesced,
}

/// A set of lambdas split over NIC cores by their coalesced size.
#[derive(Clone, Debug)]
pub struct CoreSplit {
    pub cores: Vec<CoreProgram>,
    /// The core of each lambda, or `None` when its coalesced program alone exceeds a core.
    pub core_of: Vec<Option<usize>>,
}

/// Splits `inputs` over cores of `model`, each core one coalesced program within the model's
/// instruction budget. First fit by decreasing size, like [`pack_cores`], but each fit is
/// judged on the program coalescing would really build: lambdas that share functions (every
/// SDK lambda shares the SDK's out-of-line copies and sums) cost a core less together than
/// their sizes add up to, and the dispatch grows by its real size per rule.
pub fn coalesce_per_core(
    model: &NicModel,
    inputs: &[CoalesceInput],
) -> Result<CoreSplit, CoalesceError> {
    let mut order: Vec<usize> = (0..inputs.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(inputs[i].linked.insns.len()));
    let mut cores: Vec<CoreProgram> = Vec::new();
    let mut core_of = vec![None; inputs.len()];
    let build = |members: &[usize]| -> Result<Coalesced, CoalesceError> {
        let chosen: Vec<CoalesceInput> = members.iter().map(|&i| inputs[i].clone()).collect();
        coalesce(&chosen)
    };
    for i in order {
        let mut placed = false;
        for (c, core) in cores.iter_mut().enumerate() {
            let mut members = core.members.clone();
            members.push(i);
            members.sort_unstable();
            let candidate = build(&members)?;
            if candidate.insns.len() <= model.insn_budget {
                *core = CoreProgram {
                    members,
                    coalesced: candidate,
                };
                core_of[i] = Some(c);
                placed = true;
                break;
            }
        }
        if placed {
            continue;
        }
        let alone = build(&[i])?;
        if alone.insns.len() <= model.insn_budget {
            core_of[i] = Some(cores.len());
            cores.push(CoreProgram {
                members: vec![i],
                coalesced: alone,
            });
        }
    }
    Ok(CoreSplit { cores, core_of })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lambda(name: &str, text: &str, port: u16, id: Option<u32>) -> CoalesceInput {
        CoalesceInput {
            name: name.into(),
            linked: LinkedProgram {
                lambda: name.into(),
                program: name.into(),
                section: "xdp".into(),
                insns: ebpf_isa::asm::assemble(text).unwrap(),
                maps: vec![],
                lines: vec![],
            },
            rule: MatchRule {
                port,
                lambda_id: id,
            },
            seeds: vec![],
        }
    }

    #[test]
    fn identical_functions_merge_and_calls_are_retargeted() {
        // Two lambdas with the same helper function and different entries.
        let a = "mov %r0, 3\ncall local sub\nexit\nsub:\nmov %r0, 1\nexit";
        let b = "mov %r0, 4\ncall local sub\nexit\nsub:\nmov %r0, 1\nexit";
        let out = coalesce(&[lambda("a", a, 9000, Some(1)), lambda("b", b, 9000, None)]).unwrap();
        assert_eq!(out.report.functions_before, 4);
        assert_eq!(out.report.functions_merged, 1);
        assert_eq!(
            out.report.insns_after,
            out.report.dispatch_insns + 3 + 3 + 2
        );
        // Every local call lands on a function start.
        for (pc, insn) in out.insns.iter().enumerate() {
            if insn.is_local_call() {
                let target = (pc as i64 + 1 + i64::from(insn.imm)) as usize;
                assert!(target >= out.report.dispatch_insns && target < out.insns.len());
            }
        }
        // The rule with an id comes first even though "any" was not given last.
        assert!(out.entries[0] < out.entries[1]);
    }

    #[test]
    fn duplicate_rules_are_refused_and_unreachable_code_goes() {
        let a = "mov %r0, 2\nexit";
        let err = coalesce(&[lambda("a", a, 9000, None), lambda("b", a, 9000, None)]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "lambdas `a` and `b` both serve port 9000, lambda id any: a request could go to either"
        );
        // `ja +1` skips a dead instruction, which is removed and the jump re-targeted.
        let dead = "ja +1\nmov %r0, 7\nmov %r0, 2\nexit";
        let out = coalesce(&[lambda("d", dead, 1, None)]).unwrap();
        assert_eq!(out.report.unreachable_removed, 1);
        let entry = out.entries[0];
        assert_eq!(out.insns[entry], Insn::new(JA, 0, 0, 0, 0));
        assert!(matches!(coalesce(&[]), Err(CoalesceError::Empty)));
        // Code that cannot be moved function by function is refused, not rearranged.
        let across = "mov %r0, 1\ncall local sub\nja +2\nsub:\nmov %r0, 2\nexit";
        assert_eq!(
            coalesce(&[lambda("x", across, 1, None)])
                .unwrap_err()
                .to_string(),
            "lambda `x`: a jump out of its function at instruction 2"
        );
        let falls = "call local sub\nmov %r0, 1\nsub:\nmov %r0, 2\nexit";
        assert_eq!(
            coalesce(&[lambda("y", falls, 1, None)])
                .unwrap_err()
                .to_string(),
            "lambda `y`: a function that falls through into the next at instruction 1"
        );
    }

    #[test]
    fn cores_pack_first_fit_decreasing() {
        let model = crate::model::model("nfp-4000").unwrap();
        let fixed = dispatch_fixed_insns();
        let packing = pack_cores(model, &[1500, 1300, 1000, 3000]);
        assert_eq!(packing.core_of, vec![Some(0), Some(1), Some(0), None]);
        assert_eq!(
            packing.core_insns,
            vec![fixed + 1500 + 1000 + 10, fixed + 1300 + 5]
        );
        // The fixed part and the per-rule size are what the coalescer generates.
        let out = coalesce(&[lambda("a", "mov %r0, 2\nexit", 1, Some(1))]).unwrap();
        assert_eq!(out.report.dispatch_insns, fixed + DISPATCH_PER_RULE_INSNS);
    }

    #[test]
    fn cores_are_split_by_the_coalesced_size_so_shared_functions_count_once() {
        let model = crate::model::model("nfp-4000").unwrap();
        // Three lambdas, each an entry of its own and the same 1,500-slot function: their
        // sizes add up to three cores' worth of sizes, but they share the function.
        let shared = "mov %r0, 1\n".repeat(1500) + "exit";
        let with_entry = |k: u32| format!("mov %r0, {k}\ncall local sub\nexit\nsub:\n{shared}");
        let huge = "mov %r0, 1\n".repeat(model.insn_budget) + "exit";
        let inputs = [
            lambda("a", &with_entry(1), 9000, Some(1)),
            lambda("b", &with_entry(2), 9000, Some(2)),
            lambda("huge", &huge, 9001, None),
            lambda("c", &with_entry(3), 9000, Some(3)),
        ];
        let sizes: Vec<usize> = inputs.iter().map(|x| x.linked.insns.len()).collect();
        assert_eq!(pack_cores(model, &sizes).core_insns.len(), 3);
        let split = coalesce_per_core(model, &inputs).unwrap();
        assert_eq!(split.core_of, vec![Some(0), Some(0), None, Some(0)]);
        assert_eq!(split.cores.len(), 1);
        let core = &split.cores[0];
        assert_eq!(core.members, vec![0, 1, 3]);
        assert_eq!(core.coalesced.report.functions_merged, 2);
        assert!(core.coalesced.insns.len() <= model.insn_budget);
    }
}
