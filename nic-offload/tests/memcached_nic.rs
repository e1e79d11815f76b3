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
//!   byte as the NIC build as built does, and passes what is no request;
//! - with a server in `CONFIG`, the lowered program and the object turn GETs and SETs into the
//!   same memcached requests (checked against the text memcached expects) and memcached's
//!   replies (a hit, a miss, STORED, an error, one split over two datagrams, one matching no
//!   request) into the same λ responses, byte for byte, with valid checksums.
//!
//! The real-UDP differential against memcached is `lambdactl/tests/memcached_nic.rs`.

mod common;
use common::*;

use std::os::fd::AsFd as _;

use lambda_ebpf::wire::{HEADER_LEN, LambdaHeader, Status};
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
        assert_eq!(reply.payload.len(), HEADER_LEN);
    }
    let stray = udp_request_frame(53, false, b"not a request".to_vec());
    assert_eq!(
        test_run_packet(core.prog.as_fd(), &stray).unwrap(),
        (2, stray.clone())
    );

    // With memcached at 10.0.0.9:11211 (the requests come to 10.0.0.1:9000 from 10.0.0.2).
    let config_seeds = |maps: &[loader::link::LinkedMap]| -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
        maps.iter()
            // A coalesced program names each lambda's maps `<lambda>/<map>`.
            .map(|map| match map.name.rsplit('/').next() {
                Some("CONFIG") => vec![(0u32.to_ne_bytes().to_vec(), config())],
                _ => Vec::new(),
            })
            .collect()
    };
    let core = load_linked(
        &one.insns,
        &one.maps,
        &config_seeds(&one.maps),
        Some(&one.btf),
    )
    .unwrap_or_else(|e| panic!("the lowered program in the kernel: {e}"));
    let built = load_linked(
        &input.linked.insns,
        &input.linked.maps,
        &config_seeds(&input.linked.maps),
        None,
    )
    .unwrap_or_else(|e| panic!("memcached-nic as built in the kernel: {e}"));
    let both = |packet: &[u8], what: &str| -> (u32, Vec<u8>) {
        let lowered_answer = test_run_packet(core.prog.as_fd(), packet).unwrap();
        let built_answer = test_run_packet(built.prog.as_fd(), packet).unwrap();
        assert_eq!(lowered_answer, built_answer, "{what}: lowered vs as built");
        lowered_answer
    };
    let value = vec![b'v'; 700];
    let exchanges: [Exchange; 4] = [
        (
            b"get foo",
            b"get foo\r\n",
            b"END\r\n",
            Status::NotFound,
            b"",
        ),
        (
            &[&b"set foo "[..], &value].concat(),
            &[&b"set foo 0 0 0700\r\n"[..], &value, b"\r\n"].concat(),
            b"STORED\r\n",
            Status::Ok,
            b"",
        ),
        (
            b"get foo",
            b"get foo\r\n",
            &[&b"VALUE foo 0 700\r\n"[..], &value, b"\r\nEND\r\n"].concat(),
            Status::Ok,
            &value,
        ),
        (
            b"set k x",
            b"set k 0 0 0001\r\nx\r\n",
            b"SERVER_ERROR out of memory storing object\r\n",
            Status::Unavailable,
            b"",
        ),
    ];
    for (i, (body, text, reply, status, answer_body)) in exchanges.iter().enumerate() {
        let what = format!("exchange {i} ({:?})", String::from_utf8_lossy(body));
        let mut payload = LambdaHeader::request(5, 0xabc0 + i as u64)
            .as_bytes()
            .to_vec();
        payload.extend_from_slice(body);
        let (action, packet) = both(&udp_request_frame(9000, false, payload), &what);
        assert_eq!(action, 3, "{what}: forwarded with XDP_TX");
        let request = UdpFrame::decode(&packet)
            .unwrap_or_else(|e| panic!("{what}: memcached request checksums or lengths: {e}"));
        assert_eq!(request.dst.to_string(), "10.0.0.9:11211", "{what}");
        assert_eq!(request.src.to_string(), "10.0.0.1:9000", "{what}");
        assert_eq!(request.dst_mac, SERVER_MAC, "{what}");
        assert_eq!(
            &request.payload[2..8],
            &[0, 0, 0, 1, 0, 0],
            "{what}: frame header"
        );
        assert_eq!(&request.payload[8..], *text, "{what}: memcached text");
        // memcached's reply, to the id the request carried.
        let mut datagram = request.payload[..2].to_vec();
        datagram.extend_from_slice(&[0, 0, 0, 1, 0, 0]);
        datagram.extend_from_slice(reply);
        let (action, packet) = both(&server_reply(datagram.clone()), &what);
        assert_eq!(action, 3, "{what}: answered with XDP_TX");
        let response = UdpFrame::decode(&packet)
            .unwrap_or_else(|e| panic!("{what}: λ response checksums or lengths: {e}"));
        assert_eq!(response.dst.to_string(), "10.0.0.2:40000", "{what}");
        let header = LambdaHeader::decode(&response.payload).unwrap();
        assert!(header.is_response(), "{what}");
        assert_eq!(header.request_id(), 0xabc0 + i as u64, "{what}");
        assert_eq!(header.lambda_id(), 5, "{what}");
        assert_eq!(header.status(), Some(*status), "{what}");
        assert_eq!(
            &response.payload[HEADER_LEN..],
            *answer_body,
            "{what}: body"
        );
        // The same reply again matches no pending request: dropped.
        assert_eq!(
            both(&server_reply(datagram), &what).0,
            1,
            "{what}: replayed"
        );
    }
    // A reply memcached split over two datagrams: TOO_LARGE, then the second one dropped.
    let mut payload = LambdaHeader::request(5, 0xabcf).as_bytes().to_vec();
    payload.extend_from_slice(b"get big");
    let (_, packet) = both(&udp_request_frame(9000, false, payload), "split");
    let id = UdpFrame::decode(&packet).unwrap().payload[..2].to_vec();
    let part = |sequence: u8| {
        let mut datagram = id.clone();
        datagram.extend_from_slice(&[0, sequence, 0, 2, 0, 0]);
        datagram.extend_from_slice(&[b'x'; 1000]);
        server_reply(datagram)
    };
    let (action, packet) = both(&part(0), "split, first datagram");
    assert_eq!(action, 3);
    let response = UdpFrame::decode(&packet).unwrap();
    let header = LambdaHeader::decode(&response.payload).unwrap();
    assert_eq!(header.status(), Some(Status::TooLarge));
    assert_eq!(response.payload.len(), HEADER_LEN);
    assert_eq!(both(&part(1), "split, second datagram").0, 1);
    println!(
        "the lowered program loads in the kernel and answers as the object does: unconfigured, \
         {} GET/SET exchanges with memcached's replies, replays and a split reply",
        exchanges.len()
    );
}

/// A λ request body, the memcached text it must become, memcached's reply text, and the λ
/// status and body that reply must become.
type Exchange<'a> = (&'a [u8], &'a [u8], &'a [u8], Status, &'a [u8]);

const SERVER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 9];

/// `CONFIG` for memcached at 10.0.0.9:11211 ([`SERVER_MAC`]), no flags.
fn config() -> Vec<u8> {
    let mut bytes = vec![10, 0, 0, 9];
    bytes.extend_from_slice(&SERVER_MAC);
    bytes.extend_from_slice(&11211u16.to_be_bytes());
    bytes.extend_from_slice(&[0; 4]);
    bytes
}

/// A datagram from memcached (10.0.0.9:11211) to the lambda's address (10.0.0.1:9000).
fn server_reply(payload: Vec<u8>) -> Vec<u8> {
    UdpFrame {
        src_mac: SERVER_MAC,
        dst_mac: [2, 0, 0, 0, 0, 1],
        src: "10.0.0.9:11211".parse().unwrap(),
        dst: "10.0.0.1:9000".parse().unwrap(),
        payload,
    }
    .encode()
    .unwrap()
}
