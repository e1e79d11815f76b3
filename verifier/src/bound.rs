//! Bounded time and memory.
//!
//! **Loops.** The analysis ([`crate::transfer`]) unrolls every loop: a program point inside
//! loops is analysed once per combination of iteration counts of its enclosing loops (and per
//! call site of its subprogram). A back edge increments its loop's count. Because no state is
//! ever widened, the states of iteration *n* are exactly the abstract semantics of the *n*-th
//! iteration, and a loop stops when its continuation condition becomes infeasible, i.e. when its
//! trip count is proven. The graph of (point, counts) nodes is acyclic, so the longest path
//! through it — counted in executed instructions — is a sound bound on any execution: every
//! concrete run follows a path of feasible nodes. A loop is refused, naming its head, when
//! (a) its count exceeds [`MAX_LOOP_ITERATIONS`], or (b) the state at its head repeats from one
//! iteration to the next, which means the abstraction can see no progress and the unrolling
//! would never end. We chose unrolling over widening with a loop-counter domain because it
//! gives exact trip counts for the loops lambdas use (counters compared with constants or with
//! bounded values), keeps the bound a plain longest path, and mirrors the kernel's own
//! path-exploring behaviour, which is our oracle.
//!
//! **Stack.** Each subprogram's frame is as deep as its deepest access (rounded up to 8 bytes);
//! the whole-chain bound is the deepest sum over call chains.

use crate::cfg::Cfg;
use crate::domain::STACK_SIZE;

/// Iterations after which a loop is refused as unbounded. 65,536 covers a byte-wise walk over
/// the largest packet XDP can see (MAX_PACKET_OFF + 1) and any loop over a map's value.
pub const MAX_LOOP_ITERATIONS: u32 = 1 << 16;

/// Abstract instruction steps after which the analysis gives up: the kernel's own complexity
/// limit (BPF_COMPLEXITY_LIMIT_INSNS), so we never spend more than the kernel would.
pub const MAX_ANALYSIS_STEPS: u64 = 1_000_000;

/// The iteration counts of the loops around `to` when the edge `from → to` is taken with
/// `counts` around `from`; `Err(head)` when the edge is a back edge past the cap.
pub fn next_counts(cfg: &Cfg, from: usize, to: usize, counts: &[u32]) -> Result<Vec<u32>, usize> {
    let outer = &cfg.loops_at[from];
    let inner = &cfg.loops_at[to];
    let mut next = Vec::with_capacity(inner.len());
    for (i, head) in inner.iter().enumerate() {
        if outer.get(i) == Some(head) {
            let count = counts.get(i).copied().unwrap_or(0);
            if *head == to && i + 1 == inner.len() {
                // A back edge to `to`, the innermost loop around it.
                if count + 1 > MAX_LOOP_ITERATIONS {
                    return Err(to);
                }
                next.push(count + 1);
                return Ok(next);
            }
            next.push(count);
        } else {
            // Entering a loop: only through its head, by reducibility.
            next.push(0);
        }
    }
    Ok(next)
}

/// Bytes a frame of `depth` used bytes takes: rounded up to 8 (a stack slot).
pub fn frame_bytes(depth: i64) -> u32 {
    let depth = depth.clamp(0, STACK_SIZE);
    ((depth + 7) / 8 * 8) as u32
}

/// Deepest stack over every call chain from the main program.
pub fn stack_chain(cfg: &Cfg, depths: &[i64]) -> u32 {
    fn visit(cfg: &Cfg, depths: &[i64], sub: usize, memo: &mut [Option<u32>], guard: usize) -> u32 {
        if let Some(d) = memo[sub] {
            return d;
        }
        let own = frame_bytes(depths.get(sub).copied().unwrap_or(0));
        // `guard` bounds the recursion; the call graph is acyclic (checked in cfg).
        let deepest = if guard == 0 {
            0
        } else {
            cfg.subprogs[sub]
                .calls
                .iter()
                .map(|&(_, callee)| visit(cfg, depths, callee, memo, guard - 1))
                .max()
                .unwrap_or(0)
        };
        let total = own + deepest;
        memo[sub] = Some(total);
        total
    }
    let mut memo = vec![None; cfg.subprogs.len()];
    visit(cfg, depths, 0, &mut memo, cfg.subprogs.len())
}
