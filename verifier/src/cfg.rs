//! Control flow: successors, subprograms and their call graph, natural loops, and an analysis
//! order in which every loop body is contiguous (a weak topological order).
//!
//! Instruction indices are slot indices: the second slot of an `lddw` is not an instruction.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use ebpf_isa::{Insn, opcode as op};

use crate::error::{ErrorKind, Located};

/// Most frames of bpf-to-bpf calls, the kernel's MAX_CALL_FRAMES.
pub const MAX_CALL_FRAMES: usize = 8;

/// One subprogram: `entry..end` slots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subprog {
    pub entry: usize,
    pub end: usize,
    /// `(call instruction, callee subprogram index)`.
    pub calls: Vec<(usize, usize)>,
}

/// The control-flow graph of a whole program.
#[derive(Clone, Debug)]
pub struct Cfg {
    /// Slots in the program.
    pub len: usize,
    /// False for the second slot of an `lddw`.
    pub is_insn: Vec<bool>,
    /// Intra-procedural successors (a call falls through; `exit` has none).
    pub succs: Vec<Vec<usize>>,
    pub subprog_of: Vec<usize>,
    pub subprogs: Vec<Subprog>,
    /// Reachable from the entry of its subprogram.
    pub reachable: Vec<bool>,
    /// Heads of the loops containing each instruction, outermost first.
    pub loops_at: Vec<Vec<usize>>,
    /// Position of each instruction in the analysis order.
    pub pos: Vec<u32>,
    /// Frames in the longest call chain.
    pub max_frames: usize,
}

/// The target of a jump or local call at `pc`, if it is one.
pub fn jump_target(insn: Insn, pc: usize) -> Option<i64> {
    let class = insn.class();
    if class != op::CLASS_JMP && class != op::CLASS_JMP32 {
        return None;
    }
    let next = pc as i64 + 1;
    match op::operation(insn.opcode) {
        op::JMP_EXIT => None,
        op::JMP_CALL => insn.is_local_call().then(|| next + i64::from(insn.imm)),
        op::JMP_JA if insn.opcode == op::JA32 => Some(next + i64::from(insn.imm)),
        _ => Some(next + i64::from(insn.off)),
    }
}

/// Whether execution may continue at `pc + width` after `insn`.
fn falls_through(insn: Insn) -> bool {
    let class = insn.class();
    if class != op::CLASS_JMP && class != op::CLASS_JMP32 {
        return true;
    }
    !matches!(op::operation(insn.opcode), op::JMP_EXIT | op::JMP_JA)
}

impl Cfg {
    /// Builds the graph of an instruction list whose opcodes are valid.
    pub fn build(insns: &[Insn]) -> Result<Cfg, Located> {
        let len = insns.len();
        let mut is_insn = vec![true; len];
        let mut pc = 0;
        while pc < len {
            if insns[pc].is_lddw() {
                if pc + 1 >= len {
                    return Err(Located::new(ErrorKind::IncompleteLddw, pc));
                }
                is_insn[pc + 1] = false;
                pc += 2;
            } else {
                pc += 1;
            }
        }
        // Subprogram entries: 0 and every local call target.
        let mut entries = vec![0usize];
        for (pc, insn) in insns.iter().enumerate() {
            if is_insn[pc] && insn.is_local_call() {
                let target = jump_target(*insn, pc).unwrap_or(-1);
                if target < 0 || target as usize >= len {
                    return Err(Located::new(ErrorKind::CallOutOfRange { target }, pc));
                }
                if !is_insn[target as usize] {
                    return Err(Located::new(
                        ErrorKind::JumpIntoLddw {
                            target: target as usize,
                        },
                        pc,
                    ));
                }
                entries.push(target as usize);
            }
        }
        entries.sort_unstable();
        entries.dedup();
        let mut subprogs: Vec<Subprog> = entries
            .iter()
            .enumerate()
            .map(|(i, &entry)| Subprog {
                entry,
                end: entries.get(i + 1).copied().unwrap_or(len),
                calls: Vec::new(),
            })
            .collect();
        let mut subprog_of = vec![0; len];
        for (i, sub) in subprogs.iter().enumerate() {
            subprog_of[sub.entry..sub.end].fill(i);
        }

        let mut succs = vec![Vec::new(); len];
        for pc in 0..len {
            if !is_insn[pc] {
                continue;
            }
            let insn = insns[pc];
            let width = if insn.is_lddw() { 2 } else { 1 };
            let sub = &subprogs[subprog_of[pc]];
            if falls_through(insn) {
                if pc + width >= sub.end {
                    return Err(Located::new(ErrorKind::FallsOffEnd, pc));
                }
                succs[pc].push(pc + width);
            }
            if insn.opcode == op::CALL {
                continue;
            }
            if let Some(target) = jump_target(insn, pc) {
                if target < 0 || target as usize >= len {
                    return Err(Located::new(ErrorKind::JumpOutOfRange { target, len }, pc));
                }
                let target = target as usize;
                if !is_insn[target] {
                    return Err(Located::new(ErrorKind::JumpIntoLddw { target }, pc));
                }
                if subprog_of[target] != subprog_of[pc] {
                    return Err(Located::new(
                        ErrorKind::JumpAcrossSubprograms { from: pc },
                        pc,
                    ));
                }
                if !succs[pc].contains(&target) {
                    succs[pc].push(target);
                }
            }
        }

        // Reachability from the main entry, through the calls of reachable code.
        let mut reachable = vec![false; len];
        let mut todo = vec![0usize];
        while let Some(pc) = todo.pop() {
            if std::mem::replace(&mut reachable[pc], true) {
                continue;
            }
            todo.extend(succs[pc].iter().copied());
            if insns[pc].is_local_call() {
                todo.push(jump_target(insns[pc], pc).unwrap_or(0) as usize);
            }
        }
        for pc in 0..len {
            if is_insn[pc] && insns[pc].is_local_call() && reachable[pc] {
                let target = jump_target(insns[pc], pc).unwrap_or(0) as usize;
                let callee = subprog_of[target];
                subprogs[subprog_of[pc]].calls.push((pc, callee));
            }
        }
        let max_frames = call_depth(&subprogs)?;

        let mut cfg = Cfg {
            len,
            is_insn,
            succs,
            subprog_of,
            subprogs,
            reachable,
            loops_at: vec![Vec::new(); len],
            pos: vec![0; len],
            max_frames,
        };
        cfg.find_loops()?;
        cfg.order()?;
        Ok(cfg)
    }

    /// Natural loops from dominator back edges; a cycle without one is irreducible and refused.
    fn find_loops(&mut self) -> Result<(), Located> {
        let mut bodies: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for sub in self.subprogs.clone() {
            let rpo = self.reverse_postorder(sub.entry);
            let index: BTreeMap<usize, usize> =
                rpo.iter().enumerate().map(|(i, &pc)| (pc, i)).collect();
            let mut preds: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
            for &pc in &rpo {
                for &s in &self.succs[pc] {
                    preds.entry(s).or_default().push(pc);
                }
            }
            // Cooper, Harvey, Kennedy: "A Simple, Fast Dominance Algorithm".
            let mut idom: Vec<Option<usize>> = vec![None; rpo.len()];
            idom[0] = Some(0);
            let mut changed = true;
            while changed {
                changed = false;
                for i in 1..rpo.len() {
                    let mut new: Option<usize> = None;
                    for p in preds.get(&rpo[i]).into_iter().flatten() {
                        let p = index[p];
                        if idom[p].is_none() {
                            continue;
                        }
                        new = Some(match new {
                            None => p,
                            Some(mut a) => {
                                let mut b = p;
                                while a != b {
                                    while a > b {
                                        a = idom[a].unwrap_or(0);
                                    }
                                    while b > a {
                                        b = idom[b].unwrap_or(0);
                                    }
                                }
                                a
                            }
                        });
                    }
                    if new.is_some() && idom[i] != new {
                        idom[i] = new;
                        changed = true;
                    }
                }
            }
            let dominates = |a: usize, b: usize| {
                let (a, mut b) = (index[&a], index[&b]);
                loop {
                    if a == b {
                        return true;
                    }
                    match idom[b] {
                        Some(d) if d != b => b = d,
                        _ => return false,
                    }
                }
            };
            for &pc in &rpo {
                for &s in &self.succs[pc] {
                    // A retreating edge in reverse postorder closes a cycle.
                    if index[&s] <= index[&pc] {
                        if !dominates(s, pc) {
                            return Err(Located::new(ErrorKind::IrreducibleLoop { target: s }, pc));
                        }
                        // Body: the head and everything reaching the latch without the head.
                        let body = bodies.entry(s).or_default();
                        let mut todo = vec![pc];
                        if !body.contains(&s) {
                            body.push(s);
                        }
                        while let Some(n) = todo.pop() {
                            if body.contains(&n) {
                                continue;
                            }
                            body.push(n);
                            todo.extend(preds.get(&n).into_iter().flatten().copied());
                        }
                    }
                }
            }
        }
        // Outermost first: a loop containing another has the larger body.
        let mut heads: Vec<(usize, usize)> = bodies.iter().map(|(h, b)| (b.len(), *h)).collect();
        heads.sort_by_key(|&(size, head)| (Reverse(size), head));
        for (_, head) in heads {
            for &pc in &bodies[&head] {
                self.loops_at[pc].push(head);
            }
        }
        Ok(())
    }

    fn reverse_postorder(&self, entry: usize) -> Vec<usize> {
        let mut post = Vec::new();
        let mut seen = vec![false; self.len];
        let mut stack = vec![(entry, 0usize)];
        seen[entry] = true;
        while let Some((pc, i)) = stack.pop() {
            if let Some(&s) = self.succs[pc].get(i) {
                stack.push((pc, i + 1));
                if !seen[s] {
                    seen[s] = true;
                    stack.push((s, 0));
                }
            } else {
                post.push(pc);
            }
        }
        post.reverse();
        post
    }

    /// Positions such that every forward edge goes up and every loop body is contiguous.
    fn order(&mut self) -> Result<(), Located> {
        let mut next = 0u32;
        for sub in self.subprogs.clone() {
            let region: Vec<usize> = (sub.entry..sub.end)
                .filter(|&pc| self.reachable[pc] && self.is_insn[pc])
                .collect();
            let order = self.order_region(&region, None)?;
            for pc in order {
                self.pos[pc] = next;
                next += 1;
            }
        }
        Ok(())
    }

    fn order_region(&self, region: &[usize], head: Option<usize>) -> Result<Vec<usize>, Located> {
        let depth = head.map_or(0, |h| {
            self.loops_at[h].iter().position(|&x| x == h).unwrap_or(0) + 1
        });
        let rep = |pc: usize| self.loops_at[pc].get(depth).copied().unwrap_or(pc);
        let mut members: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for &pc in region {
            members.entry(rep(pc)).or_default().push(pc);
        }
        let in_region = |pc: usize| match head {
            Some(h) => self.loops_at[pc].contains(&h),
            None => true,
        };
        let mut indegree: BTreeMap<usize, usize> = members.keys().map(|&r| (r, 0)).collect();
        let mut edges: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for &pc in region {
            for &s in &self.succs[pc] {
                if Some(s) == head || !in_region(s) || rep(s) == rep(pc) {
                    continue;
                }
                edges.entry(rep(pc)).or_default().push(rep(s));
                *indegree.entry(rep(s)).or_default() += 1;
            }
        }
        let mut ready: BinaryHeap<Reverse<usize>> = indegree
            .iter()
            .filter(|&(_, &d)| d == 0)
            .map(|(&r, _)| Reverse(r))
            .collect();
        let mut out = Vec::with_capacity(region.len());
        let mut done = 0;
        while let Some(Reverse(r)) = ready.pop() {
            done += 1;
            if self.loops_at[r].get(depth) == Some(&r) {
                out.extend(self.order_region(&members[&r], Some(r))?);
            } else {
                out.push(r);
            }
            for &s in edges.get(&r).into_iter().flatten() {
                if let Some(d) = indegree.get_mut(&s) {
                    *d -= 1;
                    if *d == 0 {
                        ready.push(Reverse(s));
                    }
                }
            }
        }
        if done != members.len() {
            let stuck = indegree
                .iter()
                .find(|&(_, &d)| d > 0)
                .map_or(0, |(&r, _)| r);
            return Err(Located::new(
                ErrorKind::IrreducibleLoop { target: stuck },
                stuck,
            ));
        }
        Ok(out)
    }
}

/// Longest call chain in frames; recursion is refused.
fn call_depth(subprogs: &[Subprog]) -> Result<usize, Located> {
    // Depth-first over the call graph from the main program, tracking the active chain.
    fn visit(
        subprogs: &[Subprog],
        sub: usize,
        chain: &mut Vec<usize>,
        memo: &mut Vec<Option<usize>>,
    ) -> Result<usize, Located> {
        if let Some(d) = memo[sub] {
            return Ok(d);
        }
        chain.push(sub);
        let mut deepest = 0;
        for &(pc, callee) in &subprogs[sub].calls {
            if chain.contains(&callee) {
                return Err(Located::new(
                    ErrorKind::RecursiveCall {
                        target: subprogs[callee].entry,
                    },
                    pc,
                ));
            }
            let d = visit(subprogs, callee, chain, memo)?;
            if chain.len() + d > MAX_CALL_FRAMES {
                return Err(Located::new(
                    ErrorKind::CallDepth {
                        depth: chain.len() + d,
                        max: MAX_CALL_FRAMES,
                    },
                    pc,
                ));
            }
            deepest = deepest.max(d);
        }
        chain.pop();
        memo[sub] = Some(deepest + 1);
        Ok(deepest + 1)
    }
    let mut memo = vec![None; subprogs.len()];
    visit(subprogs, 0, &mut Vec::new(), &mut memo)
}

/// Registers an instruction reads and writes, as bit masks (bit `r` for `r<r>`). A call reads
/// `r1`–`r5` and clobbers `r0`–`r5`, whatever the callee; `exit` reads `r0`. Over-approximating
/// the reads is harmless: liveness only decides which abstract states are kept apart.
pub fn uses_defs(insn: Insn) -> (u16, u16) {
    let bit = |r: u8| 1u16 << (r & 15);
    let x = op::source(insn.opcode) == op::SRC_X;
    match insn.class() {
        op::CLASS_ALU | op::CLASS_ALU64 => {
            let operation = op::operation(insn.opcode);
            let mut uses = 0;
            if x && operation != op::ALU_END {
                uses |= bit(insn.src);
            }
            if operation != op::ALU_MOV {
                uses |= bit(insn.dst);
            }
            (uses, bit(insn.dst))
        }
        op::CLASS_LD => (0, bit(insn.dst)),
        op::CLASS_LDX => (bit(insn.src), bit(insn.dst)),
        op::CLASS_ST => (bit(insn.dst), 0),
        op::CLASS_STX => {
            let mut uses = bit(insn.dst) | bit(insn.src);
            let mut defs = 0;
            if op::mode(insn.opcode) == op::MODE_ATOMIC {
                if insn.imm == op::ATOMIC_CMPXCHG {
                    uses |= bit(0);
                    defs |= bit(0);
                } else if insn.imm & op::ATOMIC_FETCH != 0 {
                    defs |= bit(insn.src);
                }
            }
            (uses, defs)
        }
        _ => match op::operation(insn.opcode) {
            op::JMP_JA => (0, 0),
            op::JMP_CALL => (0b11_1110, 0b11_1111),
            op::JMP_EXIT => (bit(0), 0),
            _ => {
                let mut uses = bit(insn.dst);
                if x {
                    uses |= bit(insn.src);
                }
                (uses, 0)
            }
        },
    }
}

impl Cfg {
    /// Registers live before each instruction (bit `r` for `r<r>`), by the usual backward
    /// fixpoint over the intra-procedural graph.
    pub fn live_registers(&self, insns: &[Insn]) -> Vec<u16> {
        let mut live = vec![0u16; self.len];
        let mut changed = true;
        while changed {
            changed = false;
            for pc in (0..self.len).rev() {
                if !self.is_insn[pc] {
                    continue;
                }
                let out = self.succs[pc]
                    .iter()
                    .fold(0u16, |acc, &s| acc | live.get(s).copied().unwrap_or(0));
                let (uses, defs) = uses_defs(insns[pc]);
                let new = uses | (out & !defs);
                if new != live[pc] {
                    live[pc] = new;
                    changed = true;
                }
            }
        }
        live
    }
}
