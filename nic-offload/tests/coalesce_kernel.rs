//! The coalescer against the real kernel: the sample lambdas plus 50 generated ones, coalesced
//! into one program, pass our verifier and the kernel's (BPF_PROG_LOAD), and under
//! BPF_PROG_TEST_RUN give every generated request the same action and the same output packet
//! as the lambda its rule routes to, run alone (or XDP_PASS, untouched, when no rule matches).
//! Seeded, so a failure reproduces.

mod common;
use common::*;

use lambda_ebpf::wire::LambdaHeader;
use loader::kernel::{load_linked, test_run_ns, test_run_packet, verified_insns};
use loader::link::LinkedProgram;
use loader::verify::{Limits, verify_linked};
use nic_offload::{CoalesceInput, MatchRule, coalesce};
use std::os::fd::AsFd as _;
use verifier::Backend;

/// Generated lambda `i`: marks the frame with its number, and through a helper function that
/// ten of them share (variant `i % 10`) rewrites one more byte; answers XDP_TX.
fn generated(i: u32, rule: MatchRule) -> CoalesceInput {
    let k = i % 10;
    let text = format!(
        "ldxw %r6, [%r1+0]
ldxw %r3, [%r1+4]
mov %r4, %r6
add %r4, 14
jgt %r4, %r3, pass
stb [%r6+0], {i}
ldxb %r1, [%r6+13]
call local sub
stxb [%r6+1], %r0
mov %r0, 3
exit
pass:
mov %r0, 2
exit
sub:
mov %r0, %r1
xor %r0, {x}
mul %r0, {m}
and %r0, 255
exit
",
        x = 0x5a ^ k,
        m = 3 + 2 * k,
    );
    let name = format!("gen{i}");
    CoalesceInput {
        name: name.clone(),
        linked: LinkedProgram {
            lambda: name.clone(),
            program: name,
            section: "xdp".into(),
            insns: ebpf_isa::asm::assemble(&text).unwrap(),
            maps: vec![],
            lines: vec![],
        },
        rule,
        seeds: vec![],
    }
}

/// xorshift64*: seeded, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn request(rng: &mut Rng, port: u16, lambda_id: u32, v6: bool) -> Vec<u8> {
    let mut payload = LambdaHeader::request(lambda_id, rng.next())
        .as_bytes()
        .to_vec();
    match rng.below(4) {
        0 => payload.extend_from_slice(b"index.html"),
        1 => payload.extend_from_slice(b"hello, coalesced world"),
        2 => {}
        _ => {
            let len = rng.below(200) as usize;
            payload.extend((0..len).map(|_| rng.next() as u8));
        }
    }
    udp_request_frame(port, v6, payload)
}

#[test]
fn coalesced_samples_and_50_generated_lambdas_answer_as_the_lambdas_alone() {
    if !kernel_tests_enabled(
        "coalesced_samples_and_50_generated_lambdas_answer_as_the_lambdas_alone",
    ) {
        return;
    }
    let mut inputs = vec![
        sample("static-server", rule(9000, None)),
        sample("counter", rule(9001, Some(8))),
        sample("pong", rule(9002, None)),
    ];
    for i in 1..=50 {
        inputs.push(generated(i, rule(9100, Some(i))));
    }
    let coalesced = coalesce(&inputs).unwrap();
    let r = &coalesced.report;
    println!(
        "coalesced {} lambdas: {} instruction slots before, {} after ({} of dispatch); {} of {} \
         functions merged, {} unreachable slots removed; maps {} -> {}",
        r.lambdas,
        r.insns_before,
        r.insns_after,
        r.dispatch_insns,
        r.functions_merged,
        r.functions_before,
        r.unreachable_removed,
        r.maps_before,
        r.maps_after
    );
    // The 50 generated lambdas share 10 helper variants: 40 functions merge at least.
    assert!(r.functions_merged >= 40, "{r:?}");
    assert!(r.insns_after < r.insns_before + r.dispatch_insns, "{r:?}");

    // Our verifier, kernel profile.
    let program = as_linked("coalesced", &coalesced.insns, &coalesced.maps);
    let options = Limits::default().options(Backend::Kernel, 1);
    let contract = verify_linked(&program, &options).unwrap();
    println!(
        "verified: at most {} instructions per run, {} bytes of stack",
        contract.max_insns_executed, contract.max_stack_bytes
    );

    // The kernel's verifier, and the differential run.
    let whole = load_linked(
        &coalesced.insns,
        &coalesced.maps,
        &coalesced.seeds,
        Some(&coalesced.btf),
    )
    .unwrap();
    let alone: Vec<_> = inputs
        .iter()
        .map(|x| load_linked(&x.linked.insns, &x.linked.maps, &x.seeds, None).unwrap())
        .collect();
    let cost = |p: &loader::kernel::LoadedProgram| verified_insns(p.prog.as_fd()).unwrap();
    let alone_cost: u32 = alone.iter().map(cost).sum();
    let static_calls = load_linked(&coalesced.insns, &coalesced.maps, &coalesced.seeds, None)
        .map(|p| cost(&p).to_string())
        .unwrap_or_else(|e| format!("refused ({})", e.to_string().lines().last().unwrap_or("")));
    println!(
        "kernel verifier: {} instructions processed for the coalesced program with global \
         entries, {static_calls} with static ones; {alone_cost} for the lambdas loaded alone",
        cost(&whole)
    );

    let mut rng = Rng(0x1a4b_d1c0_ffee_0009);
    let mut compared = 0;
    let mut answered = 0;
    let mut unmatched = 0;
    let mut cases: Vec<(u16, u32)> = Vec::new();
    for input in &inputs {
        for _ in 0..3 {
            let id = input.rule.lambda_id.unwrap_or(rng.below(1000) as u32);
            cases.push((input.rule.port, id));
        }
    }
    // Requests no rule matches: another port, an id nobody serves on a port with ids only.
    cases.extend([(9003, 1), (9001, 9), (9100, 51), (53, 0), (9100, 0)]);
    for (port, id) in cases {
        let v6 = rng.below(3) == 0;
        let packet = request(&mut rng, port, id, v6);
        let target = inputs
            .iter()
            .position(|x| x.rule.port == port && x.rule.lambda_id.is_none_or(|want| want == id));
        // A rule with an id wins over an "any" rule on the same port.
        let target = inputs
            .iter()
            .position(|x| x.rule.port == port && x.rule.lambda_id == Some(id))
            .or(target);
        let expected = match target {
            Some(t) => test_run_packet(alone[t].prog.as_fd(), &packet).unwrap(),
            None => {
                unmatched += 1;
                (2, packet.clone())
            }
        };
        let actual = test_run_packet(whole.prog.as_fd(), &packet).unwrap();
        assert_eq!(
            actual.0, expected.0,
            "port {port} id {id} v6 {v6}: action differs (target {target:?})"
        );
        assert_eq!(
            actual.1, expected.1,
            "port {port} id {id} v6 {v6}: output packet differs (target {target:?})"
        );
        if actual.0 == 3 {
            answered += 1;
        }
        compared += 1;
    }
    // Per-request cost of the dispatch: the same static-server request on the program alone
    // and on the coalesced one (kernel-measured, median of 301 interleaved runs; figures only,
    // the machine is shared).
    let packet = request(&mut Rng(11), 9000, 1, false);
    let (mut one, mut all) = (Vec::new(), Vec::new());
    for _ in 0..301 {
        one.push(test_run_ns(alone[0].prog.as_fd(), &packet).unwrap());
        all.push(test_run_ns(whole.prog.as_fd(), &packet).unwrap());
    }
    one.sort_unstable();
    all.sort_unstable();
    println!(
        "static-server request: {} ns alone, {} ns coalesced (median of 301 BPF_PROG_TEST_RUN runs)",
        one[150], all[150]
    );
    println!(
        "{compared} requests compared ({answered} answered with XDP_TX, {unmatched} matched no rule)"
    );
    assert!(
        answered >= 150,
        "too few answers to mean anything: {answered}"
    );
}

#[test]
fn a_coalesced_nic_ready_set_passes_the_nfp_profile_and_the_sdk_samples_do_not() {
    let mut inputs = vec![sample("baseline-raw-pong", rule(9000, None))];
    for i in 1..=50 {
        inputs.push(generated(i, rule(9100, Some(i))));
    }
    let coalesced = coalesce(&inputs).unwrap();
    let program = as_linked("coalesced", &coalesced.insns, &coalesced.maps);
    let mut options = Limits::default().options(Backend::Nfp, 1);
    options.nfp_insn_budget = nic_offload::model("nfp-4000").unwrap().insn_budget;
    let contract = verify_linked(&program, &options).unwrap();
    assert_eq!(contract.eligible, vec![Backend::Nfp]);
    println!(
        "nfp: {} slots ({} before coalescing), at most {} instructions per run",
        coalesced.report.insns_after, coalesced.report.insns_before, contract.max_insns_executed
    );

    // The kernel takes it too (where we may load programs).
    if kernel_tests_enabled("a_coalesced_nic_ready_set_passes_the_kernel_verifier") {
        let loaded = load_linked(
            &coalesced.insns,
            &coalesced.maps,
            &coalesced.seeds,
            Some(&coalesced.btf),
        )
        .unwrap();
        let packet = request(&mut Rng(7), 9100, 42, false);
        let (action, out) = test_run_packet(loaded.prog.as_fd(), &packet).unwrap();
        assert_eq!(action, 3, "generated lambda 42 answers XDP_TX");
        assert_eq!(out[0], 42, "and marks the frame with its number");
    }

    let sdk = coalesce(&[sample("echo", rule(9001, None))]).unwrap();
    let program = as_linked("coalesced", &sdk.insns, &sdk.maps);
    let err = verify_linked(&program, &options).unwrap_err().to_string();
    assert!(
        err.contains("the NFP offloads only array and hash maps"),
        "{err}"
    );
}
