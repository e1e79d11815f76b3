//! The NFP lowering pass (`nic_offload::lower`) on real objects and against the real kernel.
//!
//! - The three sample workloads (static-server, memcached, grayscale) are lowered as far as
//!   is sound and then refused, each reason named (the SDK's reply path uses helpers the NFP
//!   lacks; their maps exceed the firmware's entry size).
//! - 50 generated lambdas shaped like SDK lambdas (`.rodata` parameters, per-CPU counters bumped
//!   by a subprogram, a log line through the per-CPU record buffer and the ring buffer) plus a
//!   real object are lowered, coalesced, accepted by our verifier's `nfp` profile for the
//!   NFP-4000 model and loaded by the kernel (host load: there is no NFP here); under
//!   BPF_PROG_TEST_RUN the lowered program gives every seeded request the same action and
//!   output packet as the coalesced program without lowering, and the counters it keeps in
//!   shared maps equal the per-CPU counts summed.

mod common;
use common::*;

use std::os::fd::AsFd as _;
use std::path::Path;

use lambda_ebpf::wire::LambdaHeader;
use loader::kernel::{load_linked, test_run_packet};
use loader::link::{LinkedMap, LinkedMapKind, LinkedProgram};
use loader::maps::MapAccess as _;
use loader::verify::{Limits, verify_linked};
use nic_offload::{CoalesceInput, LowerError, MatchRule, coalesce, lower, model, pack_cores};
use verifier::Backend;

const NFP: &str = "nfp-4000";

#[test]
fn the_sdk_map_names_the_pass_knows_are_the_sdks() {
    use nic_offload::lower::lambda_ebpf_names as names;
    assert_eq!(names::LOG, lambda_ebpf::log::MAP_NAME);
    assert_eq!(names::LOG_SCRATCH, lambda_ebpf::log::SCRATCH_MAP_NAME);
    assert_eq!(names::STATS, lambda_ebpf::stats::MAP_NAME);
}

#[test]
fn the_sample_workloads_lower_as_far_as_is_sound_and_are_refused_by_name() {
    let nfp = model(NFP).unwrap();
    let cases: [(&str, &[&str]); 3] = [
        (
            "static-server",
            &[
                "helper bpf_xdp_load_bytes at instruction",
                "helper bpf_xdp_store_bytes at instruction",
                "helper bpf_csum_diff at instruction",
                "map OBJECTS has 1496-byte elements (key and value rounded up to 8); nfp-4000 takes at most 64",
            ],
        ),
        (
            "memcached",
            &[
                "helper bpf_get_smp_processor_id at instruction",
                "map PENDING is a lru_hash map; nfp-4000 holds only array and hash maps",
                "map CACHE has 1664-byte elements",
                "per-CPU map NEXT_ID is reached through a pointer that leaves the function's registers",
                "per-CPU map SCRATCH is reached through a pointer that leaves the function's registers",
            ],
        ),
        (
            "grayscale",
            &[
                "helper bpf_xdp_load_bytes at instruction",
                "per-CPU map SCRATCH is reached through a pointer that leaves the function's registers",
                "map SCRATCH has 1920-byte elements",
            ],
        ),
    ];
    for (name, expected) in cases {
        let input = sample(name, rule(9000, None));
        let err = lower(&input, nfp).unwrap_err();
        let message = err.to_string();
        assert!(
            message.starts_with(&format!(
                "lambda `{name}` cannot be offloaded to nfp-4000: "
            )),
            "{message}"
        );
        for want in expected {
            assert!(
                message.contains(want),
                "{name}: missing `{want}` in {message}"
            );
        }
        let LowerError::Refused {
            refusals, report, ..
        } = err
        else {
            panic!("{name}: not a refusal");
        };
        // What could be lowered was: the SDK's counters, and the static-server's log lines.
        assert!(
            report
                .maps_lowered
                .contains(&"LNIC_STATS: percpu_array -> array".to_owned()),
            "{name}: {report:?}"
        );
        assert!(report.counters_made_atomic >= 1, "{name}: {report:?}");
        assert!(
            !refusals.iter().any(|r| r.to_string().contains("LNIC_")),
            "{name}: the SDK's own maps lower: {refusals:?}"
        );
        if name == "static-server" {
            assert!(report.log_calls_removed >= 2, "{report:?}");
            assert!(
                !message.contains("ktime") && !message.contains("ringbuf"),
                "{message}"
            );
        }
        println!(
            "{name}: {} slots, {} after lowering what can be ({} refusals; {} log calls \
             removed, {} counters made atomic, {} .rodata loads folded, {} slots removed)",
            report.insns_before,
            report.insns_after,
            refusals.len(),
            report.log_calls_removed,
            report.counters_made_atomic,
            report.rodata_loads_folded,
            report.dead_removed
        );
    }
}

/// The maps of a generated SDK-shaped lambda: its `.rodata` parameters (the mark byte `i` at
/// offset 4 and a 16-bit value at 0), the SDK's per-CPU counters, log ring and record buffer.
fn generated_maps(i: u32) -> Vec<LinkedMap> {
    let mut initial = vec![0u8; 8];
    initial[0..2].copy_from_slice(&(0x4c00u16 + i as u16).to_le_bytes());
    initial[4] = i as u8;
    let declared = |name: &str, map_type, key, value, max| LinkedMap {
        name: name.into(),
        map_type,
        key_size: key,
        value_size: value,
        max_entries: max,
        flags: 0,
        kind: LinkedMapKind::Declared,
        initial: vec![],
    };
    vec![
        LinkedMap {
            name: ".rodata".into(),
            map_type: verifier::map_type::ARRAY,
            key_size: 4,
            value_size: 8,
            max_entries: 1,
            // BPF_F_RDONLY_PROG, as aya creates `.rodata`.
            flags: 0x80,
            kind: LinkedMapKind::GlobalData { read_only: true },
            initial,
        },
        declared(
            lambda_ebpf::stats::MAP_NAME,
            verifier::map_type::PERCPU_ARRAY,
            4,
            8,
            lambda_ebpf::stats::SLOTS,
        ),
        declared(
            lambda_ebpf::log::MAP_NAME,
            verifier::map_type::RINGBUF,
            0,
            0,
            lambda_ebpf::log::RING_BYTES,
        ),
        declared(
            lambda_ebpf::log::SCRATCH_MAP_NAME,
            verifier::map_type::PERCPU_ARRAY,
            4,
            lambda_ebpf::log::RECORD_SIZE as u32,
            1,
        ),
    ]
}

/// Generated lambda `i`, in the SDK's shape: logs a line through the record buffer (stamped
/// with `bpf_ktime_get_ns`), marks the frame with its `.rodata` byte and 16-bit parameter,
/// rewrites one more byte through a helper function ten of them share (variant `i % 10`),
/// counts the XDP action through a `bump` subprogram like the SDK's, and answers XDP_TX
/// (XDP_PASS, counted, for a frame too short).
fn generated(i: u32, rule: MatchRule) -> CoalesceInput {
    let k = i % 10;
    let text = format!(
        "ldxw %r6, [%r1+0]
ldxw %r3, [%r1+4]
mov %r4, %r6
add %r4, 14
jgt %r4, %r3, pass
stw [%r10-4], 0
mov %r2, %r10
add %r2, -4
lddw %r1, map_fd 3
call 1
mov %r7, %r0
jeq %r7, 0, nolog
call 5
stxdw [%r7+0], %r0
sth [%r7+8], 3
stw [%r7+16], 0x676f6c
lddw %r1, map_fd 2
mov %r2, %r7
mov %r3, {record}
mov %r4, 0
call 130
nolog:
lddw %r2, map_value 0+0
ldxb %r3, [%r2+4]
stxb [%r6+0], %r3
ldxh %r3, [%r2+0]
stxh [%r6+2], %r3
ldxb %r1, [%r6+13]
call local sub
stxb [%r6+1], %r0
mov %r1, 3
call local bump
mov %r0, 3
exit
pass:
mov %r1, 2
call local bump
mov %r0, 2
exit
sub:
mov %r0, %r1
xor %r0, {x}
mul %r0, {m}
and %r0, 255
exit
bump:
stxw [%r10-4], %r1
mov %r2, %r10
add %r2, -4
lddw %r1, map_fd 1
call 1
jeq %r0, 0, +3
ldxdw %r1, [%r0+0]
add %r1, 1
stxdw [%r0+0], %r1
exit
",
        record = lambda_ebpf::log::RECORD_SIZE,
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
            maps: generated_maps(i),
            lines: vec![],
        },
        rule,
        seeds: vec![vec![]; 4],
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
    let len = rng.below(120) as usize;
    let body: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
    request_with(rng, port, lambda_id, v6, &body)
}

fn request_with(rng: &mut Rng, port: u16, lambda_id: u32, v6: bool, body: &[u8]) -> Vec<u8> {
    let mut payload = LambdaHeader::request(lambda_id, rng.next())
        .as_bytes()
        .to_vec();
    payload.extend_from_slice(body);
    udp_request_frame(port, v6, payload)
}

/// Slot `slot` of map `name` in a loaded program, summed over CPUs for a per-CPU map.
fn count(loaded: &loader::kernel::LoadedProgram, maps: &[LinkedMap], name: &str, slot: u32) -> u64 {
    let index = maps.iter().position(|m| m.name == name).unwrap();
    let value = loaded.maps[index]
        .lookup(&slot.to_ne_bytes())
        .unwrap()
        .unwrap();
    value
        .chunks(8)
        .map(|c| u64::from_ne_bytes(c.try_into().unwrap()))
        .sum()
}

#[test]
fn lowered_sdk_shaped_lambdas_pass_the_nfp_profile_and_answer_as_before() {
    let nfp = model(NFP).unwrap();
    let mut inputs = vec![sample("baseline-raw-pong", rule(9000, None))];
    for i in 1..=50 {
        inputs.push(generated(i, rule(9100, Some(i))));
    }
    let mut lowered = Vec::new();
    for input in &inputs {
        let out = lower(input, nfp).unwrap_or_else(|e| panic!("{e}"));
        lowered.push(out);
    }
    let gen1 = &lowered[1].report;
    assert_eq!(gen1.log_calls_removed, 2, "{gen1:?}");
    assert_eq!(gen1.rodata_loads_folded, 2, "{gen1:?}");
    assert_eq!(gen1.counters_made_atomic, 1, "{gen1:?}");
    assert_eq!(
        gen1.maps_lowered,
        vec!["LNIC_STATS: percpu_array -> array".to_owned()]
    );
    let before: usize = lowered.iter().map(|l| l.report.insns_before).sum();
    let after: usize = lowered.iter().map(|l| l.report.insns_after).sum();
    let lowered_inputs: Vec<CoalesceInput> = lowered.iter().map(|l| l.input.clone()).collect();

    let plain = coalesce(&inputs).unwrap();
    let whole = coalesce(&lowered_inputs).unwrap();
    let packing = pack_cores(
        nfp,
        &lowered_inputs
            .iter()
            .map(|x| x.linked.insns.len())
            .collect::<Vec<_>>(),
    );
    println!(
        "{} lambdas: {before} slots as written, {after} lowered; coalesced {} without lowering, \
         {} lowered ({} of dispatch); maps {} -> {}; {} core(s) of {NFP} for one copy",
        inputs.len(),
        plain.report.insns_after,
        whole.report.insns_after,
        whole.report.dispatch_insns,
        plain.report.maps_after,
        whole.report.maps_after,
        packing.core_insns.len()
    );
    assert!(whole.report.insns_after <= nfp.insn_budget);

    // Our verifier: the nfp profile refuses the unlowered program and accepts the lowered one.
    let mut options = Limits::default().options(Backend::Nfp, 1);
    options.nfp_insn_budget = nfp.insn_budget;
    let err = verify_linked(&as_linked("coalesced", &plain.insns, &plain.maps), &options)
        .unwrap_err()
        .to_string();
    println!("unlowered, nfp profile: {err}");
    let used_maps = |insns: &[ebpf_isa::Insn]| {
        let mut used: Vec<i32> = insns
            .iter()
            .filter(|i| i.is_lddw() && i.src != 0)
            .map(|i| i.imm)
            .collect();
        used.sort_unstable();
        used.dedup();
        used.len()
    };
    println!(
        "maps used: {} unlowered (the kernel takes at most 64 per program), {} lowered",
        used_maps(&plain.insns),
        used_maps(&whole.insns)
    );
    let contract = verify_linked(&as_linked("coalesced", &whole.insns, &whole.maps), &options)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(contract.eligible, vec![Backend::Nfp]);
    println!(
        "lowered, nfp profile: accepted, at most {} instructions per run",
        contract.max_insns_executed
    );
    for map in &whole.maps {
        assert!(nfp.has_map_type(map.map_type), "{map:?}");
        assert!(
            nic_offload::NicModel::elem_bytes(map.key_size, map.value_size) <= nfp.max_elem_bytes
        );
    }

    if !kernel_tests_enabled("lowered_sdk_shaped_lambdas_pass_the_nfp_profile_and_answer_as_before")
    {
        return;
    }
    // The references: each lambda unlowered, loaded alone; and the unlowered lambdas
    // coalesced in groups of at most 15 (60 maps: the unlowered coalesced program of all 51
    // uses more maps than the kernel allows one program, 64, printed above).
    const GROUP: usize = 15;
    let groups: Vec<_> = inputs
        .chunks(GROUP)
        .map(|group| {
            let c = coalesce(group).unwrap();
            let loaded = load_linked(&c.insns, &c.maps, &c.seeds, Some(&c.btf))
                .unwrap_or_else(|e| panic!("unlowered group: {e}"));
            (c, loaded)
        })
        .collect();
    let alone: Vec<_> = inputs
        .iter()
        .map(|x| {
            load_linked(&x.linked.insns, &x.linked.maps, &x.seeds, None)
                .unwrap_or_else(|e| panic!("{}: {e}", x.name))
        })
        .collect();
    let lowered_loaded = load_linked(&whole.insns, &whole.maps, &whole.seeds, Some(&whole.btf))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut rng = Rng(0x10e5_2026_0009_0009);
    let mut cases: Vec<(u16, u32)> = Vec::new();
    for input in &inputs {
        for _ in 0..4 {
            let id = input.rule.lambda_id.unwrap_or(rng.below(1000) as u32);
            cases.push((input.rule.port, id));
        }
    }
    cases.extend([(9100, 51), (9100, 0), (53, 1)]);
    let (mut compared, mut answered) = (0, 0);
    for (port, id) in cases {
        let v6 = rng.below(3) == 0;
        let packet = request(&mut rng, port, id, v6);
        let target = inputs
            .iter()
            .position(|x| x.rule.port == port && x.rule.lambda_id == Some(id))
            .or_else(|| {
                inputs
                    .iter()
                    .position(|x| x.rule.port == port && x.rule.lambda_id.is_none())
            });
        let expected = match target {
            Some(t) => test_run_packet(alone[t].prog.as_fd(), &packet).unwrap(),
            None => (2, packet.clone()),
        };
        let actual = test_run_packet(lowered_loaded.prog.as_fd(), &packet).unwrap();
        assert_eq!(actual.0, expected.0, "port {port} id {id} v6 {v6}: action");
        assert_eq!(actual.1, expected.1, "port {port} id {id} v6 {v6}: packet");
        // The unlowered coalesced program that holds the target (any one when none does).
        let group = &groups[target.unwrap_or(0) / GROUP].1;
        let coalesced_unlowered = test_run_packet(group.prog.as_fd(), &packet).unwrap();
        assert_eq!(
            coalesced_unlowered, actual,
            "port {port} id {id} v6 {v6}: lowered and unlowered coalesced programs differ"
        );
        compared += 1;
        answered += usize::from(actual.0 == 3);
    }
    // The counters the requests above made: XDP_PASS (slot 2) and XDP_TX (slot 3) of every
    // generated lambda, per-CPU and summed alone, shared and atomic lowered.
    let mut counted = 0;
    for i in 1..=50u32 {
        let name = format!("gen{i}/{}", lambda_ebpf::stats::MAP_NAME);
        // Input 0 is the raw object; generated lambda i is input i.
        for slot in [2, 3] {
            let a = count(
                &alone[i as usize],
                &inputs[i as usize].linked.maps,
                lambda_ebpf::stats::MAP_NAME,
                slot,
            );
            let b = count(&lowered_loaded, &whole.maps, &name, slot);
            assert_eq!(a, b, "{name} slot {slot}: per-CPU sum {a}, shared {b}");
            let (c, loaded) = &groups[i as usize / GROUP];
            let g = count(loaded, &c.maps, &name, slot);
            assert_eq!(
                g, b,
                "{name} slot {slot}: unlowered coalesced {g}, lowered {b}"
            );
            counted += b;
        }
    }
    println!(
        "{compared} requests compared with the lambdas alone and with {} unlowered coalesced \
         programs ({answered} answered with XDP_TX); {counted} counts equal between the \
         per-CPU and the shared counters",
        groups.len()
    );
    assert!(
        answered >= 150,
        "too few answers to mean anything: {answered}"
    );
    assert!(counted >= 200, "the counters counted: {counted}");
}

/// Every program of the verifier's case corpus through the pass: an answer, never a panic; and
/// a program our verifier accepts for the kernel stays accepted once lowered (lowering only
/// removes, folds and rewrites into equivalents; it must not make a safe program unsafe).
#[test]
fn lowering_the_verifiers_case_corpus_never_panics_and_keeps_safe_programs_safe() {
    use verifier::case_file::{CaseFile, Expect};
    let nfp = model(NFP).unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../verifier/tests/cases");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    paths.sort();
    let (mut lowered, mut refused, mut kept_safe) = (0, 0, 0);
    for path in &paths {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let case = CaseFile::parse(&name, &std::fs::read_to_string(path).unwrap()).unwrap();
        if case.kind != verifier::ProgramKind::Xdp {
            continue;
        }
        let Ok(program) = case.input() else { continue };
        let maps: Vec<LinkedMap> = program
            .maps
            .iter()
            .map(|m| LinkedMap {
                name: m.name.clone(),
                map_type: m.map_type,
                key_size: m.key_size,
                value_size: m.value_size,
                max_entries: m.max_entries,
                flags: m.flags,
                kind: if m.read_only {
                    LinkedMapKind::GlobalData { read_only: true }
                } else {
                    LinkedMapKind::Declared
                },
                initial: vec![0x5a; m.value_size as usize],
            })
            .collect();
        let linked = LinkedProgram {
            lambda: name.clone(),
            program: name.clone(),
            section: "xdp".into(),
            insns: program.insns.clone(),
            maps,
            lines: vec![],
        };
        let input = CoalesceInput {
            name: name.clone(),
            seeds: vec![vec![]; linked.maps.len()],
            linked,
            rule: rule(9000, None),
        };
        match lower(&input, nfp) {
            Ok(out) => {
                lowered += 1;
                let options = Limits::default().options(Backend::Kernel, 1);
                if matches!(case.expect, Expect::Accept { .. })
                    && verify_linked(&input.linked, &options).is_ok()
                {
                    verify_linked(&out.input.linked, &options)
                        .unwrap_or_else(|e| panic!("{name}: safe before lowering, not after: {e}"));
                    kept_safe += 1;
                }
            }
            Err(_) => refused += 1,
        }
    }
    println!(
        "case corpus: {lowered} lowered ({kept_safe} safe before and after), {refused} refused"
    );
    assert!(lowered > 50 && kept_safe > 20, "{lowered} {kept_safe}");
}

/// The rewrites the pass makes on the real sample objects (log lines dropped, `.rodata` folded
/// and the branches it decides, per-CPU counters made atomic on shared arrays, dead code
/// removed) keep every answer: the partly lowered sample (refused for the NIC, but runnable on
/// the host) against the object as written, under BPF_PROG_TEST_RUN, over seeded requests,
/// with the same counts.
#[test]
fn the_rewrites_on_the_real_samples_keep_their_answers_and_counts() {
    if !kernel_tests_enabled("the_rewrites_on_the_real_samples_keep_their_answers_and_counts") {
        return;
    }
    let nfp = model(NFP).unwrap();
    let mut rng = Rng(0x5a3b_1e55_0009_2026);
    for name in ["static-server", "memcached", "grayscale"] {
        let input = sample(name, rule(9000, None));
        let Err(LowerError::Refused {
            partial, report, ..
        }) = lower(&input, nfp)
        else {
            panic!("{name}: the NFP takes it?");
        };
        let original = load_linked(&input.linked.insns, &input.linked.maps, &input.seeds, None)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let rewritten = load_linked(
            &partial.linked.insns,
            &partial.linked.maps,
            &partial.seeds,
            None,
        )
        .unwrap_or_else(|e| panic!("{name}, partly lowered: {e}"));
        let mut actions = [0u32; 5];
        for k in 0..60 {
            let v6 = rng.below(3) == 0;
            let port = if k % 10 == 9 { 9001 } else { 9000 };
            let id = rng.below(50) as u32;
            // Every third a body the samples know (the static server's seeded object, a
            // memcached GET) in place of noise.
            let packet = match k % 6 {
                0 => request_with(&mut rng, port, id, v6, b"index.html"),
                3 => request_with(&mut rng, port, id, v6, b"GET hello"),
                _ => request(&mut rng, port, id, v6),
            };
            let expected = test_run_packet(original.prog.as_fd(), &packet).unwrap();
            let actual = test_run_packet(rewritten.prog.as_fd(), &packet).unwrap();
            assert_eq!(actual.0, expected.0, "{name}, request {k}: action");
            assert_eq!(actual.1, expected.1, "{name}, request {k}: packet");
            actions[actual.0 as usize % 5] += 1;
        }
        for slot in 0..lambda_ebpf::stats::SLOTS {
            let a = count(
                &original,
                &input.linked.maps,
                lambda_ebpf::stats::MAP_NAME,
                slot,
            );
            let b = count(
                &rewritten,
                &partial.linked.maps,
                lambda_ebpf::stats::MAP_NAME,
                slot,
            );
            assert_eq!(a, b, "{name}: LNIC_STATS slot {slot}");
        }
        println!(
            "{name}: {} slots as written, {} partly lowered; 60 requests, the same answers \
             (actions pass/tx {}/{}), the same counts",
            report.insns_before, report.insns_after, actions[2], actions[3]
        );
    }
}

/// Seeded mutations of the case corpus and of the generated lambdas through the pass: never a
/// panic; a mutant our verifier accepts stays accepted once lowered; and (as root) a mutant the
/// kernel loads, lowered, loads too and answers seeded packets exactly as the mutant does.
#[test]
fn mutated_programs_lower_without_panics_and_keep_their_answers() {
    use verifier::case_file::CaseFile;
    let nfp = model(NFP).unwrap();
    let kernel =
        kernel_tests_enabled("mutated_programs_lower_without_panics_and_keep_their_answers");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../verifier/tests/cases");
    let mut sources: Vec<CoalesceInput> =
        (1..=10).map(|i| generated(i, rule(9000, None))).collect();
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    paths.sort();
    for path in &paths {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let case = CaseFile::parse(&name, &std::fs::read_to_string(path).unwrap()).unwrap();
        let Ok(program) = case.input() else { continue };
        if case.kind != verifier::ProgramKind::Xdp {
            continue;
        }
        let maps: Vec<LinkedMap> = program
            .maps
            .iter()
            .map(|m| LinkedMap {
                name: m.name.clone(),
                map_type: m.map_type,
                key_size: m.key_size,
                value_size: m.value_size,
                max_entries: m.max_entries,
                flags: m.flags,
                kind: if m.read_only {
                    LinkedMapKind::GlobalData { read_only: true }
                } else {
                    LinkedMapKind::Declared
                },
                initial: if m.read_only {
                    (0..m.value_size).map(|b| b as u8 ^ 0x5a).collect()
                } else {
                    vec![]
                },
            })
            .collect();
        sources.push(CoalesceInput {
            name: name.clone(),
            seeds: vec![vec![]; maps.len()],
            linked: LinkedProgram {
                lambda: name.clone(),
                program: name,
                section: "xdp".into(),
                insns: program.insns,
                maps,
                lines: vec![],
            },
            rule: rule(9000, None),
        });
    }
    let options = Limits::default().options(Backend::Kernel, 1);
    let mut rng = Rng(0x3c0f_fee0_0009_1234);
    let (mut lowered, mut changed, mut kept_safe, mut ran, mut unstable) = (0, 0, 0, 0, 0);
    let mut ran_changed = 0;
    for round in 0..8000 {
        let source = &sources[rng.below(sources.len() as u64) as usize];
        let mut mutant = source.clone();
        let insns = &mut mutant.linked.insns;
        for _ in 0..=rng.below(2) {
            let at = rng.below(insns.len() as u64) as usize;
            let insn = &mut insns[at];
            match rng.below(5) {
                0 => insn.imm = rng.below(8) as i32 - 1,
                1 => insn.off = rng.below(8) as i16 - 2,
                2 => insn.dst = rng.below(11) as u8,
                3 => insn.src = rng.below(11) as u8,
                _ => insn.opcode ^= 1 << rng.below(8),
            }
        }
        let Ok(out) = lower(&mutant, nfp) else {
            continue;
        };
        lowered += 1;
        if out.input.linked.insns != mutant.linked.insns {
            changed += 1;
        }
        if verify_linked(&mutant.linked, &options).is_err() {
            continue;
        }
        verify_linked(&out.input.linked, &options).unwrap_or_else(|e| {
            panic!(
                "round {round} ({}): safe before lowering, not after: {e}",
                source.name
            )
        });
        kept_safe += 1;
        if !kernel || ran >= 400 {
            continue;
        }
        let m = &mutant.linked;
        let Ok(before) = load_linked(&m.insns, &m.maps, &mutant.seeds, None) else {
            continue;
        };
        let l = &out.input.linked;
        let after = load_linked(&l.insns, &l.maps, &out.input.seeds, None).unwrap_or_else(|e| {
            panic!(
                "round {round} ({}): the kernel loads it, not lowered: {e}",
                source.name
            )
        });
        for k in 0..3 {
            let packet = request(&mut rng, 9000, k, k == 2);
            let a = test_run_packet(before.prog.as_fd(), &packet).unwrap();
            let b = test_run_packet(after.prog.as_fd(), &packet).unwrap();
            // A mutant may answer with a pointer's bits (the kernel lets a privileged program
            // read one as a number); kernel addresses vary from run to run, so an answer that
            // is not the same three times is no answer to compare.
            let again = (0..2).map(|_| test_run_packet(before.prog.as_fd(), &packet).unwrap());
            let b_again = test_run_packet(after.prog.as_fd(), &packet).unwrap();
            if again.into_iter().any(|x| x != a) || b_again != b {
                unstable += 1;
                continue;
            }
            let listing = |insns: &[ebpf_isa::Insn]| {
                ebpf_isa::disasm::disassemble(insns)
                    .map(|l| l.join("\n"))
                    .unwrap_or_default()
            };
            assert_eq!(
                a,
                b,
                "round {round} ({}): lowering changed the answer of\n{}\nlowered:\n{}",
                source.name,
                listing(&m.insns),
                listing(&l.insns)
            );
        }
        ran += 1;
        ran_changed += usize::from(out.input.linked.insns != mutant.linked.insns);
    }
    println!(
        "8000 mutants: {lowered} lowered ({changed} changed by it), {kept_safe} safe before and \
         after, {ran} run in the kernel before and after with the same answers, {ran_changed} of \
         them changed by the lowering ({unstable} \
         answers left out: not the same from run to run)"
    );
    assert!(kept_safe > 100, "{kept_safe}");
}
