//! The NIC builds of the paper's workloads, `static-server-nic.o` and `grayscale-nic.o` (from
//! `cargo xtask build-ebpf`), against the NFP lowering, our verifier and the kernel.
//!
//! - Each passes our verifier's `kernel` profile as built and, lowered, its `nfp` profile
//!   within the NFP-4000 model's instruction budget.
//! - Under BPF_PROG_TEST_RUN (root), the NIC build as built and lowered (both loaded in the
//!   kernel: a host load, there is no NFP here) answer seeded generated requests — IPv4 with
//!   and without options, IPv6 — with the action and bytes of the normal build, with valid
//!   checksums: static-server over many names and content lengths (and a name whose hash
//!   collides with a stored one), grayscale over every fragment shape with random pixels.

mod common;
use common::*;

use std::os::fd::AsFd as _;

use lambda_ebpf::wire::{LambdaHeader, Status};
use loader::frames::UdpFrame;
use loader::kernel::{LoadedProgram, load_linked, test_run_packet, verified_insns};
use loader::maps::{MapAccess as _, UpdateFlags};
use loader::verify::{Limits, verify_linked};
use nic_offload::{CoalesceInput, NicModel, coalesce, lower, model};
use verifier::Backend;
use workloads::grayscale::{self, Dimensions, IMAGE_HEADER_LEN, MAX_FRAGMENTS};
use workloads::static_content::{self, NAME_MAX, nic as layout};

const NFP: &str = "nfp-4000";
const PORT: u16 = 9000;

fn nfp_options(nfp: &NicModel) -> verifier::Options {
    let mut options = Limits::default().options(Backend::Nfp, 1);
    options.nfp_insn_budget = nfp.insn_budget;
    options
}

/// The NIC build of `name` lowered for the NFP-4000 and coalesced alone (the program an
/// offload would load), after checking both verifier profiles; prints the slot counts.
fn lowered_for_nfp(name: &str) -> nic_offload::Coalesced {
    let nfp = model(NFP).unwrap();
    let nic_name = format!("{name}-nic");
    let input = sample(&nic_name, rule(PORT, None));
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
    assert!(lowered.input.linked.insns.len() <= nfp.insn_budget);
    assert!(one.insns.len() <= nfp.insn_budget);
    println!(
        "{nic_name}: {} slots as built (kernel profile: at most {} insns per run); lowered \
         {} -> {} slots, {} coalesced alone, of the {NFP} budget of {}; nfp profile accepted \
         (at most {} insns per run)",
        input.linked.insns.len(),
        kernel.max_insns_executed,
        lowered.report.insns_before,
        lowered.report.insns_after,
        one.insns.len(),
        nfp.insn_budget,
        contract.max_insns_executed
    );
    one
}

#[test]
fn static_server_and_grayscale_nic_builds_pass_the_kernel_and_nfp_profiles() {
    for name in ["static-server", "grayscale"] {
        let one = lowered_for_nfp(name);
        // The scratch map and the 1,496-byte objects are gone: every map fits 64 bytes.
        for map in &one.maps {
            assert!(
                NicModel::elem_bytes(map.key_size, map.value_size) <= 64,
                "{name}: {} has {}-byte elements",
                map.name,
                NicModel::elem_bytes(map.key_size, map.value_size)
            );
        }
    }
}

/// The three programs a differential compares: the normal build, the NIC build as built,
/// and the NIC build lowered and coalesced for the NFP.
struct Three {
    normal: LoadedProgram,
    nic: LoadedProgram,
    lowered: LoadedProgram,
}

/// The most instructions the kernel's verifier may process to accept each NIC build (as built
/// or lowered). Kernel 6.18 takes about 533,000 for static-server-nic and 271,000 for
/// grayscale-nic (the normal builds 10,930 and 36,820): within the limit of one million, not
/// by much (see README, "static-server and grayscale on the NIC"). Before the fixes these
/// bounds guard, both went past it.
const VERIFIER_BOUNDS: &[(&str, u32)] = &[("static-server", 700_000), ("grayscale", 400_000)];

fn load_three(name: &str) -> Three {
    let normal = sample(name, rule(PORT, None));
    let nic = sample(&format!("{name}-nic"), rule(PORT, None));
    let lowered = lowered_for_nfp(name);
    let three = load_three_of(name, &normal, &nic, &lowered);
    let bound = VERIFIER_BOUNDS.iter().find(|(n, _)| *n == name).unwrap().1;
    for (program, which) in [
        (&three.normal, "normal build"),
        (&three.nic, "NIC build"),
        (&three.lowered, "NIC build lowered"),
    ] {
        let processed = verified_insns(program.prog.as_fd()).unwrap();
        println!("{name}, {which}: the kernel's verifier processed {processed} instructions");
        if which != "normal build" {
            assert!(processed <= bound, "{name}, {which}: {processed} > {bound}");
        }
    }
    three
}

fn load_three_of(
    name: &str,
    normal: &CoalesceInput,
    nic: &CoalesceInput,
    lowered: &nic_offload::Coalesced,
) -> Three {
    Three {
        normal: load_linked(
            &normal.linked.insns,
            &normal.linked.maps,
            &normal.seeds,
            None,
        )
        .unwrap_or_else(|e| panic!("{name}: {e}")),
        nic: load_linked(&nic.linked.insns, &nic.linked.maps, &nic.seeds, None)
            .unwrap_or_else(|e| panic!("{name}-nic: {e}")),
        lowered: load_linked(
            &lowered.insns,
            &lowered.maps,
            &lowered.seeds,
            Some(&lowered.btf),
        )
        .unwrap_or_else(|e| panic!("{name}-nic lowered: {e}")),
    }
}

/// The map named `name` of a loaded program.
fn map<'a>(program: &'a LoadedProgram, name: &str) -> &'a loader::maps::KernelMap {
    program
        .maps
        .iter()
        .find(|m| m.spec().name.ends_with(name))
        .unwrap_or_else(|| panic!("no map {name}"))
}

/// Runs `packet` through all three; asserts equal actions and bytes, and returns the status
/// of the answer (which must be a valid λ response).
fn compare(three: &Three, packet: &[u8], what: &str) -> Status {
    let expected = test_run_packet(three.normal.prog.as_fd(), packet).unwrap();
    for (program, which) in [(&three.nic, "as built"), (&three.lowered, "lowered")] {
        let actual = test_run_packet(program.prog.as_fd(), packet).unwrap();
        assert_eq!(actual.0, expected.0, "{what}: action, NIC build {which}");
        assert_eq!(actual.1, expected.1, "{what}: packet, NIC build {which}");
    }
    assert_eq!(expected.0, 3, "{what}: answered (XDP_TX)");
    let reply = UdpFrame::decode(&expected.1)
        .unwrap_or_else(|e| panic!("{what}: reply checksums or lengths: {e}"));
    let header = LambdaHeader::decode(&reply.payload).unwrap();
    assert!(header.is_response(), "{what}");
    header.status().unwrap()
}

/// The IP shape of request `i`: IPv6, IPv4, or IPv4 with options (4 to 40 bytes).
fn shape(rng: &mut Rng, i: usize) -> (bool, usize) {
    match i % 3 {
        0 => (true, 0),
        1 => (false, 0),
        _ => (false, 4 * (1 + rng.below(10) as usize)),
    }
}

/// Writes `content` under `name` into the normal build's OBJECTS (one record) and the NIC
/// builds' (the chunk records of `workloads::static_content::nic`).
fn store_object(three: &Three, name: &[u8], content: &[u8], generation: u16) {
    let mut key = vec![0u8; NAME_MAX];
    key[..name.len()].copy_from_slice(name);
    let normal = map(&three.normal, "OBJECTS");
    let mut value = (content.len() as u32).to_ne_bytes().to_vec();
    value.extend_from_slice(content);
    value.resize(normal.spec().value_size as usize, 0);
    normal.update(&key, &value, UpdateFlags::Any).unwrap();
    for program in [&three.nic, &three.lowered] {
        let objects = map(program, "OBJECTS");
        for (key, chunk) in layout::records(name, content, generation).unwrap() {
            objects
                .update(&key.to_bytes(), &chunk.data, UpdateFlags::Any)
                .unwrap();
        }
    }
}

/// Two different names (zero-padded) with the same NIC-layout hash, found by search.
fn colliding_names() -> (Vec<u8>, Vec<u8>) {
    let mut seen = std::collections::HashMap::new();
    for i in 0u32.. {
        let name = format!("c{i:x}").into_bytes();
        let mut padded = [0u8; NAME_MAX];
        padded[..name.len()].copy_from_slice(&name);
        if let Some(other) = seen.insert(layout::name_hash(&padded), name.clone()) {
            return (other, name);
        }
    }
    unreachable!()
}

#[test]
fn static_server_nic_answers_as_the_normal_build() {
    let test = "static_server_nic_answers_as_the_normal_build";
    if !kernel_tests_enabled(test) {
        // The verifier part alone, without root.
        lowered_for_nfp("static-server");
        return;
    }
    let three = load_three("static-server");
    let mut rng = Rng(0x5747_1c5e_2026_1130);
    // Names of 1 to 64 bytes (the word boundaries of the name read) and contents of 0 to
    // 1,428 bytes (the chunk boundaries of the fill), random bytes; index.html is seeded.
    let name_lens = [1, 2, 7, 8, 9, 15, 16, 17, 55, 56, 57, 63, 64];
    let content_lens = [
        0, 1, 7, 8, 9, 55, 56, 57, 63, 64, 111, 112, 113, 126, 200, 255, 256, 500, 1000, 1427, 1428,
    ];
    let mut objects = vec![(
        static_content::INDEX_NAME.to_vec(),
        static_content::INDEX_HTML.to_vec(),
    )];
    for (i, &content_len) in content_lens.iter().enumerate() {
        let name_len = name_lens[i % name_lens.len()];
        // Printable, no zero byte (a name is zero-padded), distinct by its first bytes.
        let mut name: Vec<u8> = (0..name_len).map(|_| b'a' + rng.below(26) as u8).collect();
        name[0] = b'A' + i as u8;
        let content = rng.bytes(content_len);
        store_object(&three, &name, &content, rng.below(3) as u16);
        objects.push((name, content));
    }
    let (stored, collides) = colliding_names();
    store_object(&three, &stored, b"the stored one", 0);
    objects.push((stored, b"the stored one".to_vec()));

    let (mut compared, mut statuses) = (0, std::collections::BTreeMap::new());
    let mut ask = |name: &[u8], rng: &mut Rng, i: usize, expect: Option<&[u8]>| {
        let (v6, options) = shape(rng, i);
        let header = LambdaHeader::request(1, rng.next());
        let packet = lambda_request_frame(&header, name, PORT, v6, options);
        let what = format!(
            "name {:?} v6 {v6} options {options}",
            String::from_utf8_lossy(name)
        );
        let status = compare(&three, &packet, &what);
        if let Some(content) = expect {
            assert_eq!(status, Status::Ok, "{what}");
            let reply = test_run_packet(three.lowered.prog.as_fd(), &packet).unwrap();
            let payload = UdpFrame::decode(&reply.1).unwrap().payload;
            assert_eq!(&payload[24..], content, "{what}: content");
        }
        *statuses.entry(status.name()).or_insert(0) += 1;
        compared += 1;
    };
    for i in 0..3 * objects.len() {
        let (name, content) = &objects[i % objects.len()];
        ask(name, &mut rng, i, Some(content));
    }
    // Absent names of every length, the colliding one, and bad requests (empty, 65 bytes,
    // and bodies far longer than a name).
    for i in 0..24 {
        let len = 1 + rng.below(NAME_MAX as u64) as usize;
        let name: Vec<u8> = (0..len).map(|_| b'a' + rng.below(26) as u8).collect();
        ask(&name, &mut rng, i, None);
    }
    for i in 0..3 {
        ask(&collides, &mut rng, i, None);
    }
    for (i, len) in [0, 0, 0, 65, 65, 65, 200, 1000, 1428]
        .into_iter()
        .enumerate()
    {
        let body = rng.bytes(len);
        ask(&body, &mut rng, i, None);
    }
    assert_eq!(statuses.get("OK"), Some(&(3 * objects.len())));
    assert!(statuses.get("NOT_FOUND").is_some_and(|&n| n >= 27));
    assert_eq!(statuses.get("BAD_REQUEST"), Some(&9));

    // A missing chunk: the NIC builds say INTERNAL (the normal build has no chunks).
    let (name, content) = &objects[objects.len() / 2];
    assert!(content.len() > layout::CHUNK);
    for program in [&three.nic, &three.lowered] {
        let objects = map(program, "OBJECTS");
        let (key, _) = layout::records(name, content, 0).unwrap().next().unwrap();
        // Whatever generation it was stored under: delete its first content chunk.
        let mut deleted = false;
        for generation in 0..3 {
            let key = layout::ChunkKey { generation, ..key };
            deleted |= objects.delete(&key.to_bytes()).is_ok();
        }
        assert!(deleted);
        let header = LambdaHeader::request(1, 7);
        let packet = lambda_request_frame(&header, name, PORT, false, 0);
        let (action, reply) = test_run_packet(program.prog.as_fd(), &packet).unwrap();
        assert_eq!(action, 3);
        let payload = UdpFrame::decode(&reply).unwrap().payload;
        let header = LambdaHeader::decode(&payload).unwrap();
        assert_eq!(header.status(), Some(Status::Internal));
        assert_eq!(payload.len(), 24, "an empty body");
    }
    // Not a request for it: passed untouched.
    let stray = udp_request_frame(53, false, vec![0; 30]);
    for program in [&three.normal, &three.nic, &three.lowered] {
        assert_eq!(
            test_run_packet(program.prog.as_fd(), &stray).unwrap(),
            (2, stray.clone())
        );
    }
    println!(
        "static-server: {compared} requests ({} objects of 0 to 1428 bytes, names of 1 to 64 \
         bytes, a colliding name) answered byte for byte as the normal build by the NIC build \
         as built and lowered: {statuses:?}; a deleted chunk answers INTERNAL",
        objects.len()
    );
}

/// One grayscale request fragment: its header fields and body.
struct Fragment {
    index: u16,
    count: u16,
    body: Vec<u8>,
    what: String,
}

/// Fragments of every shape: the first (with the image header), middle and last ones of
/// random images, whole images of one fragment, and every kind of broken layout.
fn fragments(rng: &mut Rng) -> Vec<Fragment> {
    let mut out = Vec::new();
    let mut push = |index: u16, count: u16, body: Vec<u8>, what: &str| {
        out.push(Fragment {
            index,
            count,
            body,
            what: what.into(),
        })
    };
    let mut body = vec![0u8; lambda_ebpf::MAX_BODY];
    for round in 0..12 {
        let (w, h) = match round {
            0 => (1, 1),
            1 => (474, 1),
            2 => (475, 1),
            3 => (4096, 4096),
            _ => (1 + rng.below(700) as u32, 1 + rng.below(300) as u32),
        };
        let dims = Dimensions::new(w, h).unwrap();
        let count = dims.fragment_count();
        let mut picks = vec![0, count - 1, count / 2];
        picks.push(rng.below(u64::from(count)) as u16);
        for index in picks {
            // Only the pixels this fragment carries are generated.
            let pixels = dims.fragment_pixels(index);
            let fragment_rgb = rng.bytes(pixels.len() * 3);
            let at = if index == 0 { IMAGE_HEADER_LEN } else { 0 };
            if index == 0 {
                body[..IMAGE_HEADER_LEN].copy_from_slice(&dims.encode());
            }
            body[at..at + fragment_rgb.len()].copy_from_slice(&fragment_rgb);
            let len = at + fragment_rgb.len();
            push(
                index,
                count,
                body[..len].to_vec(),
                &format!("{w}x{h} fragment {index}/{count}"),
            );
        }
    }
    let header = |w: u16, h: u16| {
        let mut b = w.to_be_bytes().to_vec();
        b.extend(h.to_be_bytes());
        b
    };
    let with = |mut head: Vec<u8>, rgb: usize, rng: &mut Rng| {
        head.extend(rng.bytes(rgb));
        head
    };
    // Broken layouts, each answered BAD_REQUEST or TOO_LARGE.
    let b = with(vec![], 5, rng);
    push(3, 2, b, "index past the count");
    let b = with(vec![], 3, rng);
    push(0, 0, b, "count 0");
    let b = with(vec![], 3, rng);
    push(0, 1, b, "fragment 0 without a header");
    let b = with(header(0, 5), 3, rng);
    push(0, 1, b, "a zero side");
    let b = with(header(4097, 1), 3, rng);
    push(0, 1, b, "a side over 4096");
    let b = with(header(100, 10), 474 * 3, rng);
    push(0, 2, b, "count not matching the header");
    let b = with(header(10, 10), 100 * 3 + 1, rng);
    push(0, 1, b, "pixel bytes not whole pixels");
    let b = with(header(10, 10), 99 * 3, rng);
    push(0, 1, b, "too few pixels for the header");
    let b = with(header(2, 2), 0, rng);
    push(0, 1, b, "a header and no pixels");
    let b = with(vec![], 473 * 3, rng);
    push(1, 3, b, "a middle fragment short of 474 pixels");
    let b = with(vec![], 52 * 3 + 2, rng);
    push(2, 3, b, "a last fragment of partial pixels");
    let b = with(vec![], 475 * 3, rng);
    push(2, 3, b, "more than 474 pixels");
    let b = with(vec![], 3, rng);
    push(
        1,
        (MAX_FRAGMENTS + 1) as u16,
        b,
        "more fragments than the largest image",
    );
    let b = with(vec![], 1, rng);
    push(1, 2, b, "one byte");
    push(0, 1, vec![], "an empty body");
    let b = with(vec![], 1429, rng);
    push(1, 3, b, "a body over MAX_BODY");
    let b = with(vec![], 1500, rng);
    push(0, 1, b, "a body of 1500 bytes");
    out
}

#[test]
fn grayscale_nic_answers_as_the_normal_build() {
    let test = "grayscale_nic_answers_as_the_normal_build";
    if !kernel_tests_enabled(test) {
        lowered_for_nfp("grayscale");
        return;
    }
    let three = load_three("grayscale");
    let mut rng = Rng(0x6a4a_7e5c_2026_1130);
    let (mut compared, mut statuses) = (0, std::collections::BTreeMap::new());
    let fragments = fragments(&mut rng);
    for (i, fragment) in fragments.iter().enumerate() {
        for round in 0..3 {
            let (v6, options) = shape(&mut rng, i + round);
            let mut header = LambdaHeader::request(1, rng.next());
            header.set_fragment(fragment.index, fragment.count);
            let packet = lambda_request_frame(&header, &fragment.body, PORT, v6, options);
            let what = format!("{} v6 {v6} options {options}", fragment.what);
            let status = compare(&three, &packet, &what);
            // The answer is the reference's (`workloads::grayscale::respond`, the baseline's).
            let mut expected = vec![0u8; lambda_ebpf::MAX_BODY];
            let reference = grayscale::respond(
                fragment.index,
                fragment.count,
                &fragment.body,
                &mut expected,
            );
            let reply = test_run_packet(three.lowered.prog.as_fd(), &packet).unwrap();
            let payload = UdpFrame::decode(&reply.1).unwrap().payload;
            match reference {
                Ok(len) => {
                    assert_eq!(status, Status::Ok, "{what}");
                    assert_eq!(&payload[24..], &expected[..len], "{what}: gray bytes");
                }
                Err(refused) => {
                    assert_eq!(status, refused, "{what}");
                    assert_eq!(payload.len(), 24, "{what}: an empty body");
                }
            }
            *statuses.entry(status.name()).or_insert(0) += 1;
            compared += 1;
        }
    }
    assert!(statuses.get("OK").is_some_and(|&n| n >= 48 * 3));
    assert!(statuses.contains_key("BAD_REQUEST") && statuses.contains_key("TOO_LARGE"));
    println!(
        "grayscale: {compared} fragments ({} shapes x IPv6, IPv4, IPv4 with options) answered \
         byte for byte as the normal build and the reference by the NIC build as built and \
         lowered: {statuses:?}",
        fragments.len()
    );
}
