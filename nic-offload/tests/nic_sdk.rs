//! The SDK's NIC build (`lambda-ebpf` feature `nic`, objects `target/lambdas/<name>-nic.o`
//! from `cargo xtask build-ebpf`) against the NFP lowering pass, our verifier and the kernel.
//!
//! - whoami-nic, pong-nic and counter-nic, lowered, pass our verifier's `nfp` profile, and the
//!   NIC build passes its `kernel` profile as built; the normal builds are still refused, by
//!   the names of the helpers the NFP lacks.
//! - 50 whoami-nic lambdas (ids 1..=50) and pong-nic, lowered and split over NFP-4000 cores by
//!   coalesced size (fewer cores than their own sizes add up to: the SDK's shared functions
//!   are in each core once), each core's program passing the `nfp` profile and loading in the kernel (a host
//!   load: there is no NFP here), answer seeded requests under BPF_PROG_TEST_RUN — IPv4 with
//!   and without options, IPv6, bodies of many lengths — byte for byte as the normal build of
//!   the same lambda loaded alone, with valid checksums.

mod common;
use common::*;

use std::os::fd::AsFd as _;

use lambda_ebpf::wire::LambdaHeader;
use loader::frames::UdpFrame;
use loader::kernel::{load_linked, test_run_packet};
use loader::verify::{Limits, verify_linked};
use nic_offload::{CoalesceInput, NicModel, coalesce, coalesce_per_core, lower, model, pack_cores};
use verifier::Backend;

const NFP: &str = "nfp-4000";

fn nfp_options(nfp: &NicModel) -> verifier::Options {
    let mut options = Limits::default().options(Backend::Nfp, 1);
    options.nfp_insn_budget = nfp.insn_budget;
    options
}

#[test]
fn nic_builds_pass_the_nfp_profile_and_normal_builds_are_refused_by_helper_name() {
    let nfp = model(NFP).unwrap();
    for name in ["whoami", "pong", "counter"] {
        // The normal build: refused, each missing helper named (no regression in the message).
        let err = lower(&sample(name, rule(9000, Some(7))), nfp)
            .unwrap_err()
            .to_string();
        for helper in ["bpf_xdp_load_bytes", "bpf_csum_diff"] {
            assert!(
                err.contains(&format!("helper {helper} at instruction")),
                "{name}: {err}"
            );
        }

        let nic_name = format!("{name}-nic");
        let input = sample(&nic_name, rule(9000, Some(7)));
        // Our verifier's kernel profile takes the NIC build as built.
        let kernel = verify_linked(
            &input.linked,
            &Limits::default().options(Backend::Kernel, 1),
        )
        .unwrap_or_else(|e| panic!("{nic_name}, kernel profile: {e}"));
        let lowered = lower(&input, nfp).unwrap_or_else(|e| panic!("{e}"));
        for insn in &lowered.input.linked.insns {
            if insn.is_helper_call() {
                assert!(nfp.has_helper(insn.imm), "{nic_name}: helper {}", insn.imm);
            }
        }
        let one = coalesce(std::slice::from_ref(&lowered.input)).unwrap();
        let contract = verify_linked(
            &as_linked("coalesced", &one.insns, &one.maps),
            &nfp_options(nfp),
        )
        .unwrap_or_else(|e| panic!("{nic_name}, lowered, nfp profile: {e}"));
        assert_eq!(contract.eligible, vec![Backend::Nfp]);
        assert!(one.insns.len() <= nfp.insn_budget);
        println!(
            "{nic_name}: kernel profile at most {} insns per run; lowered {} -> {} slots, \
             coalesced {} slots, nfp profile accepted (at most {} insns per run); normal \
             build refused: {err}",
            kernel.max_insns_executed,
            lowered.report.insns_before,
            lowered.report.insns_after,
            one.insns.len(),
            contract.max_insns_executed
        );
    }
}

/// A λ request frame with a random body of `len` bytes; `options` bytes of IPv4 options.
fn request(
    rng: &mut Rng,
    port: u16,
    lambda_id: u32,
    v6: bool,
    len: usize,
    options: usize,
) -> Vec<u8> {
    let header = LambdaHeader::request(lambda_id, rng.next());
    let body = rng.bytes(len);
    lambda_request_frame(&header, &body, port, v6, options)
}

#[test]
fn fifty_whoami_nic_and_pong_nic_lowered_per_core_answer_as_the_normal_build() {
    let test = "fifty_whoami_nic_and_pong_nic_lowered_per_core_answer_as_the_normal_build";
    let nfp = model(NFP).unwrap();
    // (normal build, NIC build) of each lambda, same rule.
    let mut pairs = vec![(
        sample("pong", rule(9000, None)),
        sample("pong-nic", rule(9000, None)),
    )];
    for id in 1..=50 {
        pairs.push((
            sample("whoami", rule(9100, Some(id))),
            sample("whoami-nic", rule(9100, Some(id))),
        ));
    }
    let lowered: Vec<CoalesceInput> = pairs
        .iter()
        .map(|(_, nic)| lower(nic, nfp).unwrap_or_else(|e| panic!("{e}")).input)
        .collect();
    let sizes: Vec<usize> = lowered.iter().map(|x| x.linked.insns.len()).collect();
    let split = coalesce_per_core(nfp, &lowered).unwrap();
    assert!(
        split.core_of.iter().all(Option::is_some),
        "a lambda exceeds one core: {:?}",
        split.core_of
    );
    assert!(split.cores.len() <= nfp.cores as usize);
    // The SDK's parser, reply rewrite and copies are shared functions: a core holds one copy
    // of them, so the set takes fewer cores than its lambdas' sizes add up to.
    let by_size = pack_cores(nfp, &sizes).core_insns.len();
    assert!(
        split.cores.len() < by_size,
        "{} cores by coalesced size, {by_size} by the lambdas' own sizes",
        split.cores.len()
    );
    let programs: Vec<_> = split.cores.iter().map(|c| c.coalesced.clone()).collect();
    let options = nfp_options(nfp);
    let mut worst = 0;
    for (core, program) in programs.iter().enumerate() {
        assert!(program.insns.len() <= nfp.insn_budget, "core {core}");
        let contract = verify_linked(
            &as_linked("coalesced", &program.insns, &program.maps),
            &options,
        )
        .unwrap_or_else(|e| panic!("core {core}, nfp profile: {e}"));
        assert!(contract.eligible.contains(&Backend::Nfp));
        worst = worst.max(contract.max_insns_executed);
    }
    println!(
        "{} lambdas lowered: {} slots in all, packed into {} {NFP} cores (largest core program \
         {} slots; {by_size} cores by the lambdas' own sizes); every core program passes the nfp \
         profile (at most {worst} insns per run)",
        lowered.len(),
        sizes.iter().sum::<usize>(),
        programs.len(),
        programs.iter().map(|p| p.insns.len()).max().unwrap()
    );

    if !kernel_tests_enabled(test) {
        return;
    }
    let loaded: Vec<_> = programs
        .iter()
        .map(|c| {
            load_linked(&c.insns, &c.maps, &c.seeds, Some(&c.btf))
                .unwrap_or_else(|e| panic!("core program: {e}"))
        })
        .collect();
    let normal: Vec<_> = pairs
        .iter()
        .map(|(x, _)| {
            load_linked(&x.linked.insns, &x.linked.maps, &x.seeds, None)
                .unwrap_or_else(|e| panic!("{}: {e}", x.name))
        })
        .collect();
    let lengths = [
        0, 1, 3, 4, 5, 12, 31, 32, 33, 43, 44, 45, 63, 64, 65, 100, 127, 200, 255, 256, 300, 700,
        1000, 1400,
    ];
    let mut rng = Rng(0x0009_2026_11ce_5d4b);
    let (mut compared, mut answered, mut with_options) = (0, 0, 0);
    for (i, (normal_input, _)) in pairs.iter().enumerate() {
        let rule = normal_input.rule;
        let program = &loaded[split.core_of[i].unwrap()];
        for round in 0..6 {
            let v6 = round % 3 == 0;
            let len = if round < 3 {
                lengths[rng.below(lengths.len() as u64) as usize]
            } else {
                rng.below(1429) as usize
            };
            let options = if !v6 && round == 4 {
                4 * (1 + rng.below(10) as usize)
            } else {
                0
            };
            let id = rule.lambda_id.unwrap_or(rng.below(1000) as u32);
            let packet = request(&mut rng, rule.port, id, v6, len, options);
            let expected = test_run_packet(normal[i].prog.as_fd(), &packet).unwrap();
            let actual = test_run_packet(program.prog.as_fd(), &packet).unwrap();
            let what = format!(
                "{} id {id} v6 {v6} body {len} options {options}",
                normal_input.name
            );
            assert_eq!(actual.0, expected.0, "{what}: action");
            assert_eq!(actual.1, expected.1, "{what}: packet");
            assert_eq!(actual.0, 3, "{what}: answered");
            let reply = UdpFrame::decode(&actual.1)
                .unwrap_or_else(|e| panic!("{what}: reply checksums or lengths: {e}"));
            let header = LambdaHeader::decode(&reply.payload).unwrap();
            assert!(header.is_response(), "{what}");
            compared += 1;
            answered += usize::from(actual.0 == 3);
            with_options += usize::from(options > 0);
        }
    }
    // Not addressed to any lambda: both pass it untouched.
    let stray = request(&mut rng, 53, 1, false, 10, 0);
    for program in &loaded {
        assert_eq!(
            test_run_packet(program.prog.as_fd(), &stray).unwrap(),
            (2, stray.clone())
        );
    }
    println!(
        "{compared} requests ({with_options} over IPv4 with options) answered byte for byte as \
         the normal build ({answered} XDP_TX, checksums valid); {} core programs loaded",
        loaded.len()
    );
}
