//! Control flow: successors, subprograms and their call graph, natural loops, and an analysis
//! order in which every loop body is contiguous (a weak topological order).
//!
//! Instruction indices are slot indices: the second slot of an `lddw` is not an instruction.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

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

/// The successors of one instruction: at most two (fall-through and jump target), held inline
/// so that a graph costs no allocation per instruction. Dereferences to a slice.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Succs {
    len: u8,
    to: [usize; 2],
}

impl Succs {
    /// Adds `to`, unless it is one already.
    fn add(&mut self, to: usize) {
        if !self.contains(&to) && usize::from(self.len) < self.to.len() {
            self.to[usize::from(self.len)] = to;
            self.len += 1;
        }
    }
}

impl std::ops::Deref for Succs {
    type Target = [usize];

    fn deref(&self) -> &[usize] {
        &self.to[..usize::from(self.len)]
    }
}

impl<'a> IntoIterator for &'a Succs {
    type Item = &'a usize;
    type IntoIter = std::slice::Iter<'a, usize>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// The control-flow graph of a whole program.
#[derive(Clone, Debug)]
pub struct Cfg {
    /// Slots in the program.
    pub len: usize,
    /// False for the second slot of an `lddw`.
    pub is_insn: Vec<bool>,
    /// Intra-procedural successors (a call falls through; `exit` has none).
    pub succs: Vec<Succs>,
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

        let mut succs = vec![Succs::default(); len];
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
                succs[pc].add(pc + width);
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
                succs[pc].add(target);
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
    ///
    /// Positions in reverse postorder, predecessors and loop bodies are dense arrays indexed by
    /// position (never keyed maps), so the work is linear in the size of the program when it
    /// has no loops.
    fn find_loops(&mut self) -> Result<(), Located> {
        const NONE: u32 = u32::MAX;
        // (head, body) per loop.
        let mut bodies: Vec<(usize, Vec<usize>)> = Vec::new();
        // Position of each instruction in its subprogram's reverse postorder, NONE outside.
        let mut index = vec![NONE; self.len];
        let mut seen = vec![false; self.len];
        // Body membership, by position, while one loop is collected: the loop's number + 1.
        let mut mark: Vec<u32> = Vec::new();
        for si in 0..self.subprogs.len() {
            let sub = &self.subprogs[si];
            // Without a backward edge there is no cycle, hence no loop and no retreating edge.
            if self.forward_only(sub.entry..sub.end) {
                continue;
            }
            let rpo = self.reverse_postorder(sub.entry, &mut seen);
            let n = rpo.len();
            for (i, &pc) in rpo.iter().enumerate() {
                index[pc] = i as u32;
            }
            // Predecessors within this reverse postorder, as compressed rows by position.
            let mut start = vec![0u32; n + 1];
            for &pc in &rpo {
                for &s in &self.succs[pc] {
                    start[index[s] as usize + 1] += 1;
                }
            }
            for i in 0..n {
                start[i + 1] += start[i];
            }
            let mut fill = start.clone();
            let mut preds = vec![0u32; start[n] as usize];
            for (i, &pc) in rpo.iter().enumerate() {
                for &s in &self.succs[pc] {
                    let j = index[s] as usize;
                    preds[fill[j] as usize] = i as u32;
                    fill[j] += 1;
                }
            }
            let preds_of =
                |i: u32| &preds[start[i as usize] as usize..start[i as usize + 1] as usize];
            // Cooper, Harvey, Kennedy: "A Simple, Fast Dominance Algorithm".
            let mut idom: Vec<u32> = vec![NONE; n];
            idom[0] = 0;
            let mut changed = true;
            while changed {
                changed = false;
                for i in 1..n {
                    let mut new = NONE;
                    for &p in preds_of(i as u32) {
                        if idom[p as usize] == NONE {
                            continue;
                        }
                        new = if new == NONE {
                            p
                        } else {
                            let (mut a, mut b) = (new, p);
                            while a != b {
                                while a > b {
                                    a = idom[a as usize];
                                }
                                while b > a {
                                    b = idom[b as usize];
                                }
                            }
                            a
                        };
                    }
                    if new != NONE && idom[i] != new {
                        idom[i] = new;
                        changed = true;
                    }
                }
            }
            let dominates = |a: u32, mut b: u32| loop {
                if a == b {
                    return true;
                }
                match idom[b as usize] {
                    d if d != b && d != NONE => b = d,
                    _ => return false,
                }
            };
            // Back edges as (head, latch) positions; the first retreating edge whose target does
            // not dominate its source makes the program irreducible.
            let mut latches: Vec<(u32, u32)> = Vec::new();
            for (i, &pc) in rpo.iter().enumerate() {
                for &s in &self.succs[pc] {
                    let (j, i) = (index[s], i as u32);
                    // A retreating edge in reverse postorder closes a cycle.
                    if j <= i {
                        if !dominates(j, i) {
                            return Err(Located::new(ErrorKind::IrreducibleLoop { target: s }, pc));
                        }
                        latches.push((j, i));
                    }
                }
            }
            // Body: the head and everything reaching one of its latches without the head.
            latches.sort_unstable();
            if !latches.is_empty() {
                mark.clear();
                mark.resize(n, 0);
            }
            let mut todo = Vec::new();
            for (k, &(head, _)) in latches.iter().enumerate() {
                if k > 0 && latches[k - 1].0 == head {
                    continue;
                }
                let stamp = bodies.len() as u32 + 1;
                let mut body = vec![rpo[head as usize]];
                mark[head as usize] = stamp;
                todo.extend(latches[k..].iter().take_while(|l| l.0 == head).map(|l| l.1));
                while let Some(i) = todo.pop() {
                    if mark[i as usize] == stamp {
                        continue;
                    }
                    mark[i as usize] = stamp;
                    body.push(rpo[i as usize]);
                    todo.extend_from_slice(preds_of(i));
                }
                bodies.push((rpo[head as usize], body));
            }
            for &pc in &rpo {
                index[pc] = NONE;
            }
        }
        // Outermost first: a loop containing another has the larger body.
        bodies.sort_by_key(|(head, body)| (Reverse(body.len()), *head));
        for (head, body) in &bodies {
            for &pc in body {
                self.loops_at[pc].push(*head);
            }
        }
        Ok(())
    }

    /// Whether every edge out of the instructions of `range` goes to a later instruction.
    fn forward_only(&self, range: std::ops::Range<usize>) -> bool {
        range
            .into_iter()
            .all(|pc| self.succs[pc].iter().all(|&s| s > pc))
    }

    /// The reachable instructions of a subprogram in reverse postorder from `entry`; `seen` is
    /// all false on entry and on return.
    fn reverse_postorder(&self, entry: usize, seen: &mut [bool]) -> Vec<usize> {
        let mut post = Vec::new();
        let mut stack = vec![(entry, 0u8)];
        seen[entry] = true;
        while let Some((pc, i)) = stack.pop() {
            if let Some(&s) = self.succs[pc].get(usize::from(i)) {
                stack.push((pc, i + 1));
                if !seen[s] {
                    seen[s] = true;
                    stack.push((s, 0));
                }
            } else {
                post.push(pc);
            }
        }
        for &pc in &post {
            seen[pc] = false;
        }
        post.reverse();
        post
    }

    /// Positions such that every forward edge goes up and every loop body is contiguous.
    fn order(&mut self) -> Result<(), Located> {
        let mut next = 0u32;
        // Scratch for `order_region`: the index of each representative in its region.
        let mut local = Vec::new();
        for si in 0..self.subprogs.len() {
            let sub = &self.subprogs[si];
            let region = (sub.entry..sub.end).filter(|&pc| self.reachable[pc] && self.is_insn[pc]);
            if self.forward_only(sub.entry..sub.end) {
                // No loops, and every edge goes up: the order of the instructions is one in
                // which every instruction is the smallest ready one (its predecessors are all
                // smaller), which is what `order_region` would find.
                for pc in region {
                    self.pos[pc] = next;
                    next += 1;
                }
                continue;
            }
            let region: Vec<usize> = region.collect();
            if local.is_empty() {
                local = vec![0u32; self.len];
            }
            let order = self.order_region(&region, None, &mut local)?;
            for pc in order {
                self.pos[pc] = next;
                next += 1;
            }
        }
        Ok(())
    }

    /// The order of `region` (the instructions of a subprogram, or the body of the loop
    /// `head` without its inner loops' structure): a topological order of its members —
    /// instructions outside inner loops, and inner loops as one node each, ordered
    /// recursively — smallest first among the ready ones. `local` is scratch space indexed by
    /// instruction.
    fn order_region(
        &self,
        region: &[usize],
        head: Option<usize>,
        local: &mut [u32],
    ) -> Result<Vec<usize>, Located> {
        let depth = head.map_or(0, |h| {
            self.loops_at[h].iter().position(|&x| x == h).unwrap_or(0) + 1
        });
        let rep = |pc: usize| self.loops_at[pc].get(depth).copied().unwrap_or(pc);
        let is_loop = |r: usize| self.loops_at[r].get(depth) == Some(&r);
        // Members (representatives) in increasing order; an inner loop's instructions.
        let mut reps: Vec<usize> = region.iter().map(|&pc| rep(pc)).collect();
        reps.sort_unstable();
        reps.dedup();
        for (i, &r) in reps.iter().enumerate() {
            local[r] = i as u32;
        }
        let m = reps.len();
        let is_member = |local: &[u32], r: usize| reps.get(local[r] as usize) == Some(&r);
        let mut inner: Vec<Vec<usize>> = vec![Vec::new(); m];
        for &pc in region {
            let r = rep(pc);
            if is_loop(r) {
                inner[local[r] as usize].push(pc);
            }
        }
        let in_region = |pc: usize| match head {
            Some(h) => self.loops_at[pc].contains(&h),
            None => true,
        };
        // Edges between members, as compressed rows.
        let mut pairs: Vec<(u32, u32)> = Vec::new();
        for &pc in region {
            for &s in &self.succs[pc] {
                if Some(s) == head || !in_region(s) || rep(s) == rep(pc) {
                    continue;
                }
                if !is_member(local, rep(s)) {
                    continue;
                }
                pairs.push((local[rep(pc)], local[rep(s)]));
            }
        }
        let mut indegree = vec![0u32; m];
        let mut start = vec![0u32; m + 1];
        for &(a, b) in &pairs {
            start[a as usize + 1] += 1;
            indegree[b as usize] += 1;
        }
        for i in 0..m {
            start[i + 1] += start[i];
        }
        let mut fill = start.clone();
        let mut edges = vec![0u32; pairs.len()];
        for &(a, b) in &pairs {
            edges[fill[a as usize] as usize] = b;
            fill[a as usize] += 1;
        }
        let mut ready: BinaryHeap<Reverse<u32>> = (0..m as u32)
            .filter(|&i| indegree[i as usize] == 0)
            .map(Reverse)
            .collect();
        let mut out = Vec::with_capacity(region.len());
        let mut done = 0;
        while let Some(Reverse(i)) = ready.pop() {
            done += 1;
            let r = reps[i as usize];
            if is_loop(r) {
                // `local` is reused by the inner region: this one no longer needs it.
                out.extend(self.order_region(&inner[i as usize], Some(r), local)?);
            } else {
                out.push(r);
            }
            for &s in &edges[start[i as usize] as usize..start[i as usize + 1] as usize] {
                let d = &mut indegree[s as usize];
                *d -= 1;
                if *d == 0 {
                    ready.push(Reverse(s));
                }
            }
        }
        if done != m {
            let stuck = (0..m).find(|&i| indegree[i] > 0).map_or(0, |i| reps[i]);
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
        // When every edge goes to a later instruction, one backward pass sees every successor
        // before its predecessors: the first pass reaches the fixpoint.
        let one_pass = self.forward_only(0..self.len);
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
                    changed = !one_pass;
                }
            }
        }
        live
    }
}
