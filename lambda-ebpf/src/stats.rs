//! The counters every SDK lambda keeps: one count per XDP action (their sum is the number of
//! invocations), one per λ status of the responses it sent, and how many packets were not λ
//! requests at all.
//!
//! They live in the per-CPU array map [`MAP_NAME`] (key: the slot index below, value: a `u64`
//! per CPU), which [`serve`](crate::xdp::serve) bumps on every invocation. Per-CPU, so the
//! increments need no atomics (the JIT-less VM has none, and atomics on one shared cache line
//! would cost every CPU); userspace sums the copies. The layout is defined here once and read
//! by the loader and `lambdactl stats`, like the wire header.
//!
//! The counting itself ([`serve_counted`]) is generic over the frame and the counters, so the
//! host tests run the very code the kernel runs, over a byte buffer and an array.

use crate::frame::Frame;
use crate::request::{LambdaMatch, Request, Verdict};
use crate::wire::Status;

/// The name of the SDK's counter map in every object built with the SDK.
pub const MAP_NAME: &str = "LNIC_STATS";

/// First of the [`ACTIONS`] slots: slot `SLOT_ACTION_BASE + a` counts XDP action `a`
/// (0 ABORTED, 1 DROP, 2 PASS, 3 TX, 4 REDIRECT). Every invocation ends in exactly one action,
/// so there is no separate invocation counter: it would cost a map update per packet to
/// store a sum userspace can make.
pub const SLOT_ACTION_BASE: u32 = 0;
/// How many XDP actions have a slot.
pub const ACTIONS: u32 = 5;
/// First of the [`STATUSES`] slots: slot `SLOT_STATUS_BASE + s` counts responses sent with λ
/// status `s` (0 OK … 5 INTERNAL).
pub const SLOT_STATUS_BASE: u32 = SLOT_ACTION_BASE + ACTIONS;
/// How many λ statuses have a slot.
pub const STATUSES: u32 = Status::ALL.len() as u32;
/// Slot: packets that were not a λ request for this lambda (passed to the host stack).
pub const SLOT_NOT_REQUEST: u32 = SLOT_STATUS_BASE + STATUSES;
/// The number of slots, the map's `max_entries`.
pub const SLOTS: u32 = SLOT_NOT_REQUEST + 1;

/// The XDP action names, indexed by action code.
pub const ACTION_NAMES: [&str; ACTIONS as usize] = [
    "XDP_ABORTED",
    "XDP_DROP",
    "XDP_PASS",
    "XDP_TX",
    "XDP_REDIRECT",
];

/// Where the counts go: the per-CPU map in a lambda, an array in tests.
pub trait Counters {
    /// Adds one to `slot` (always below [`SLOTS`]).
    fn bump(&self, slot: u32);
}

/// Counts one invocation that ended with XDP action `action`.
#[inline(always)]
pub fn record_action<C: Counters>(counters: &C, action: u32) {
    // The SDK only returns actions 0..=3; the bound keeps any other value out of the next slots.
    if action < ACTIONS {
        counters.bump(SLOT_ACTION_BASE + action);
    }
}

/// Counts one response sent with raw λ status `status`.
#[inline(always)]
pub fn record_status<C: Counters>(counters: &C, status: u16) {
    if u32::from(status) < STATUSES {
        counters.bump(SLOT_STATUS_BASE + u32::from(status));
    }
}

/// Parses `frame`, runs `handler` on a λ request for this lambda (passing everything else) and
/// counts the outcome in `counters`. Returns the XDP action. This is the body of
/// [`serve`](crate::xdp::serve).
///
/// Each count is made where its fact is known, not carried to one place: values that live on
/// only some paths and meet at a join are what the λ-NIC verifier (which joins paths) cannot
/// follow.
#[inline(always)]
pub fn serve_counted<F, C, H>(
    frame: &mut F,
    port: u16,
    lambda: LambdaMatch,
    counters: &C,
    handler: H,
) -> u32
where
    F: Frame,
    C: Counters,
    H: FnOnce(&mut F, &Request) -> Verdict,
{
    let verdict = match Request::parse(frame, port, lambda) {
        Some(request) => {
            let verdict = handler(frame, &request);
            // The status is read back from the response rather than taken from the handler:
            // `reply` may have replaced it (TOO_LARGE), and this counts what actually went out.
            if verdict == Verdict::Reply {
                if let Some(status) = request.response_status(frame) {
                    record_status(counters, status);
                }
            }
            verdict
        }
        None => {
            counters.bump(SLOT_NOT_REQUEST);
            Verdict::Pass
        }
    };
    let action = verdict.xdp_action();
    record_action(counters, action);
    action
}

/// The counters summed over CPUs, by meaning. Built by userspace from the map's slots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Every invocation: the sum of the action counts.
    pub invocations: u64,
    /// Per XDP action code (see [`ACTION_NAMES`]).
    pub actions: [u64; ACTIONS as usize],
    /// Responses sent, per λ status (in [`Status::ALL`] order).
    pub statuses: [u64; STATUSES as usize],
    /// Packets that were not λ requests for this lambda.
    pub not_requests: u64,
}

impl StatsSnapshot {
    /// Reads the slots (index = slot, as in the map); missing slots count as 0.
    pub fn from_slots(slots: &[u64]) -> StatsSnapshot {
        let at = |slot: u32| slots.get(slot as usize).copied().unwrap_or(0);
        let actions: [u64; ACTIONS as usize] =
            core::array::from_fn(|a| at(SLOT_ACTION_BASE + a as u32));
        StatsSnapshot {
            invocations: actions.iter().fold(0u64, |sum, &n| sum.wrapping_add(n)),
            actions,
            statuses: core::array::from_fn(|s| at(SLOT_STATUS_BASE + s as u32)),
            not_requests: at(SLOT_NOT_REQUEST),
        }
    }

    /// The count for XDP action code `action` (0 for codes without a slot).
    pub fn action(&self, action: u32) -> u64 {
        self.actions.get(action as usize).copied().unwrap_or(0)
    }

    /// The count of responses sent with `status`.
    pub fn status(&self, status: Status) -> u64 {
        self.statuses[status.to_wire() as usize]
    }

    /// What was counted since `earlier` (counters only grow; a counter that went down, e.g.
    /// because the map was recreated, counts from zero).
    pub fn since(&self, earlier: &StatsSnapshot) -> StatsSnapshot {
        let d = |now: u64, then: u64| now.checked_sub(then).unwrap_or(now);
        StatsSnapshot {
            invocations: d(self.invocations, earlier.invocations),
            actions: core::array::from_fn(|i| d(self.actions[i], earlier.actions[i])),
            statuses: core::array::from_fn(|i| d(self.statuses[i], earlier.statuses[i])),
            not_requests: d(self.not_requests, earlier.not_requests),
        }
    }
}

#[cfg(test)]
mod tests {
    use core::cell::RefCell;
    use std::vec::Vec;

    use super::*;
    use crate::request::tests::{BufFrame, ipv4_packet, udp_payload};

    /// Counters over a plain array, as the map would hold them on one CPU.
    struct ArrayCounters(RefCell<[u64; SLOTS as usize]>);

    impl Counters for ArrayCounters {
        fn bump(&self, slot: u32) {
            self.0.borrow_mut()[slot as usize] += 1;
        }
    }

    impl ArrayCounters {
        fn new() -> ArrayCounters {
            ArrayCounters(RefCell::new([0; SLOTS as usize]))
        }
        fn snapshot(&self) -> StatsSnapshot {
            StatsSnapshot::from_slots(&self.0.borrow()[..])
        }
    }

    const PORT: u16 = 9000;

    /// Runs `handler` through the counting serve on a request with `body`, or on a datagram
    /// that is not a λ request when `body` is `None`.
    fn run(
        counters: &ArrayCounters,
        body: Option<&[u8]>,
        handler: impl FnOnce(&mut BufFrame, &Request) -> Verdict,
    ) -> u32 {
        let payload: Vec<u8> = match body {
            Some(body) => udp_payload(7, 1, body),
            None => b"not a lambda request at all".to_vec(),
        };
        let mut frame = BufFrame::new(&ipv4_packet(PORT, &payload), 512);
        serve_counted(&mut frame, PORT, LambdaMatch::Any, counters, handler)
    }

    #[test]
    fn slots_are_contiguous_and_distinct() {
        assert_eq!(SLOT_ACTION_BASE, 0);
        assert_eq!(SLOT_STATUS_BASE, 5);
        assert_eq!(SLOT_NOT_REQUEST, 11);
        assert_eq!(SLOTS, 12);
        // The action slots follow the kernel's codes, which `Verdict` produces.
        for (verdict, name) in [
            (Verdict::Aborted, "XDP_ABORTED"),
            (Verdict::Drop, "XDP_DROP"),
            (Verdict::Pass, "XDP_PASS"),
            (Verdict::Reply, "XDP_TX"),
        ] {
            assert_eq!(ACTION_NAMES[verdict.xdp_action() as usize], name);
        }
    }

    #[test]
    fn answered_requests_count_their_status_and_tx() {
        let c = ArrayCounters::new();
        for _ in 0..3 {
            let action = run(&c, Some(b"x"), |f, r| r.reply(f, Status::Ok, b"hi"));
            assert_eq!(action, 3);
        }
        run(&c, Some(b"y"), |f, r| r.reply(f, Status::NotFound, b""));
        // The status that went out, not the one asked for: too large becomes TOO_LARGE.
        run(&c, Some(b"z"), |f, r| {
            r.reply(f, Status::Ok, &[b'a'; crate::MAX_BODY + 1])
        });
        let s = c.snapshot();
        assert_eq!(s.invocations, 5);
        assert_eq!(s.action(3), 5);
        assert_eq!(s.status(Status::Ok), 3);
        assert_eq!(s.status(Status::NotFound), 1);
        assert_eq!(s.status(Status::TooLarge), 1);
        assert_eq!(s.not_requests, 0);
        assert_eq!(s.actions.iter().sum::<u64>(), s.invocations);
    }

    #[test]
    fn other_traffic_and_unanswered_requests_count_no_status() {
        let c = ArrayCounters::new();
        let mut called = false;
        assert_eq!(
            run(&c, None, |_, _| {
                called = true;
                Verdict::Reply
            }),
            2
        );
        assert!(!called, "the handler never sees a non-request");
        assert_eq!(run(&c, Some(b"a"), |_, _| Verdict::Drop), 1);
        assert_eq!(run(&c, Some(b"b"), |_, _| Verdict::Pass), 2);
        assert_eq!(run(&c, Some(b"c"), |_, _| Verdict::Aborted), 0);
        let s = c.snapshot();
        assert_eq!(s.invocations, 4);
        assert_eq!(s.actions, [1, 1, 2, 0, 0]);
        assert_eq!(s.statuses, [0; 6]);
        assert_eq!(s.not_requests, 1);
    }

    #[test]
    fn record_ignores_codes_without_a_slot() {
        let c = ArrayCounters::new();
        record_action(&c, 9);
        record_status(&c, 77);
        let s = c.snapshot();
        assert_eq!(s.invocations, 0);
        assert_eq!(s.actions, [0; 5]);
        assert_eq!(s.statuses, [0; 6]);
    }

    #[test]
    fn snapshots_subtract_and_tolerate_short_or_reset_maps() {
        let slots: Vec<u64> = (0..u64::from(SLOTS)).map(|i| i * 10).collect();
        let now = StatsSnapshot::from_slots(&slots);
        assert_eq!(now.actions, [0, 10, 20, 30, 40]);
        assert_eq!(now.invocations, 100);
        assert_eq!(now.status(Status::Ok), 50);
        assert_eq!(now.status(Status::Internal), 100);
        assert_eq!(now.not_requests, 110);
        let short = StatsSnapshot::from_slots(&slots[..3]);
        assert_eq!(short.actions, [0, 10, 20, 0, 0]);
        assert_eq!(short.invocations, 30);
        let d = now.since(&short);
        assert_eq!(d.invocations, 70);
        assert_eq!(d.actions, [0, 0, 0, 30, 40]);
        // A counter that went down was reset: it counts from zero.
        let reset = StatsSnapshot::from_slots(&[0, 3]);
        assert_eq!(reset.since(&now).actions[1], 3);
    }
}
