//! The memcached lambda's NIC build (`target/lambdas/memcached-nic.o`, `cargo xtask
//! build-ebpf`) against the NFP lowering pass, our verifier and the kernel:
//!
//! - as built, our verifier's `kernel` profile accepts it; the normal build stays refused for
//!   the NFP (its cache, LRU and per-CPU scratch maps and the helpers the NFP lacks);
//! - lowered (and coalesced alone, behind the dispatch prologue a NIC core runs), it passes the
//!   `nfp` profile within one NFP-4000 core's 2,800 instruction slots, calls only helpers the
//!   NIC has and uses only array and hash maps of at most 64-byte elements;
//! - the kernel loads that program (a host load: there is no NFP here), and under
//!   BPF_PROG_TEST_RUN it answers a λ request with no server configured UNAVAILABLE, byte for
//!   byte as the NIC build as built does, and passes what is no request.
//!
//! The real-UDP differential against memcached is `lambdactl/tests/memcached_nic.rs`.

mod common;
use common::*;

use std::os::fd::AsFd as _;

use lambda_ebpf::wire::{LambdaHeader, Status};
use loader::frames::UdpFrame;
use loader::kernel::{load_linked, test_run_packet};
use loader::verify::{Limits, verify_linked};
use nic_offload::{NicModel, coalesce, lower, model};
use verifier::Backend;

const NFP: &str = "nfp-4000";

fn nfp_options(nfp: &NicModel) -> verifier::Options {
    let mut options = Limits::default().options(Backend::Nfp, 1);
    options.nfp_insn_budget = nfp.insn_budget;
    options
}

#[test]
fn memcached_nic_lowered_passes_the_nfp_profile_in_one_core_and_loads_in_the_kernel() {
    let test = "memcached_nic_lowered_passes_the_nfp_profile_in_one_core_and_loads_in_the_kernel";
    let nfp = model(NFP).unwrap();

    // The normal build: still refused, with the reasons the NIC build answers.
    let err = lower(&sample("memcached", rule(9000, None)), nfp)
        .unwrap_err()
        .to_string();
    for reason in [
        "map CACHE has 1664-byte elements",
        "map PENDING is a lru_hash map",
        "helper bpf_xdp_load_bytes",
    ] {
        assert!(err.contains(reason), "normal build: {err}");
    }

    let input = sample("memcached-nic", rule(9000, None));
    let kernel = verify_linked(
        &input.linked,
        &Limits::default().options(Backend::Kernel, 1),
    )
    .unwrap_or_else(|e| panic!("memcached-nic, kernel profile: {e}"));
    let lowered = lower(&input, nfp).unwrap_or_else(|e| panic!("{e}"));
    for insn in &lowered.input.linked.insns {
        if insn.is_helper_call() {
            assert!(nfp.has_helper(insn.imm), "helper {}", insn.imm);
        }
    }
    for map in &lowered.input.linked.maps {
        let bytes = NicModel::elem_bytes(map.key_size, map.value_size);
        assert!(
            bytes <= nfp.max_elem_bytes,
            "map {} has {bytes}-byte elements",
            map.name
        );
    }
    // The lowered lambda itself, with its line info (a refusal names the Rust line).
    verify_linked(&lowered.input.linked, &nfp_options(nfp))
        .unwrap_or_else(|e| panic!("memcached-nic lowered, nfp profile: {e}"));
    // And as a NIC core runs it: behind the dispatch prologue.
    let one = coalesce(std::slice::from_ref(&lowered.input)).unwrap();
    let contract = verify_linked(
        &as_linked("coalesced", &one.insns, &one.maps),
        &nfp_options(nfp),
    )
    .unwrap_or_else(|e| panic!("memcached-nic lowered and coalesced, nfp profile: {e}"));
    assert!(contract.eligible.contains(&Backend::Nfp));
    assert!(one.insns.len() <= nfp.insn_budget);
    println!(
        "memcached-nic: kernel profile as built (at most {} insns per run); lowered {} -> {} \
         slots, {} with the dispatch prologue (budget {}); nfp profile accepted (at most {} \
         insns per run, stack {} B); the normal build is refused ({} reasons)",
        kernel.max_insns_executed,
        lowered.report.insns_before,
        lowered.report.insns_after,
        one.insns.len(),
        nfp.insn_budget,
        contract.max_insns_executed,
        contract.max_stack_bytes,
        err.matches("; ").count() + 1,
    );

    if !kernel_tests_enabled(test) {
        return;
    }
    let core = load_linked(&one.insns, &one.maps, &one.seeds, Some(&one.btf))
        .unwrap_or_else(|e| panic!("the lowered program in the kernel: {e}"));
    let built = load_linked(&input.linked.insns, &input.linked.maps, &input.seeds, None)
        .unwrap_or_else(|e| panic!("memcached-nic as built in the kernel: {e}"));
    // CONFIG is all zero in a fresh load: every request is answered UNAVAILABLE.
    for (i, body) in [&b"get foo"[..], b"set foo bar", b"", b"delete x"]
        .iter()
        .enumerate()
    {
        let mut payload = LambdaHeader::request(3, 0x5eed + i as u64)
            .as_bytes()
            .to_vec();
        payload.extend_from_slice(body);
        let packet = udp_request_frame(9000, false, payload);
        let lowered_answer = test_run_packet(core.prog.as_fd(), &packet).unwrap();
        let built_answer = test_run_packet(built.prog.as_fd(), &packet).unwrap();
        assert_eq!(lowered_answer, built_answer, "body {body:?}");
        assert_eq!(lowered_answer.0, 3, "body {body:?}: XDP_TX");
        let reply = UdpFrame::decode(&lowered_answer.1)
            .unwrap_or_else(|e| panic!("body {body:?}: checksums or lengths: {e}"));
        let header = LambdaHeader::decode(&reply.payload).unwrap();
        assert!(header.is_response());
        assert_eq!(header.status(), Some(Status::Unavailable));
        assert_eq!(header.request_id(), 0x5eed + i as u64);
        assert_eq!(reply.payload.len(), lambda_ebpf::wire::HEADER_LEN);
    }
    let stray = udp_request_frame(53, false, b"not a request".to_vec());
    assert_eq!(
        test_run_packet(core.prog.as_fd(), &stray).unwrap(),
        (2, stray.clone())
    );
    println!("the lowered program loads in the kernel and answers as the object does");
}
