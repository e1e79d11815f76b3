//! The static-server in the real kernel through BPF_PROG_TEST_RUN: crafted frames in, the
//! rewritten frame out, checked with the same checks a receiving kernel makes. Also the ELF
//! model of the real object, and the CLI's errors for bad input.

mod common;

use std::net::SocketAddr;

use common::*;
use lambda_ebpf::wire::{HEADER_LEN, LambdaHeader, Status};
use loader::frames::UdpFrame;
use loader::{LambdaImage, LambdaParams, TestRunner, XdpAction, test_run};

const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0c];
const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x05];

fn object_bytes() -> Vec<u8> {
    std::fs::read(lambda_object("static-server")).unwrap()
}

fn request_frame(client: &str, server: &str, lambda_id: u32, body: &[u8]) -> Vec<u8> {
    let mut payload = LambdaHeader::request(lambda_id, 0x5eed).as_bytes().to_vec();
    payload.extend_from_slice(body);
    UdpFrame {
        src_mac: CLIENT_MAC,
        dst_mac: SERVER_MAC,
        src: client.parse().unwrap(),
        dst: server.parse().unwrap(),
        payload,
    }
    .encode()
    .unwrap()
}

fn any_lambda(port: u16) -> LambdaParams {
    LambdaParams {
        port,
        lambda_id: None,
    }
}

/// The default `index.html`, read from the object's own seed section (not from the source).
fn seeded_index() -> Vec<u8> {
    let image = LambdaImage::parse(&object_bytes(), "static-server").unwrap();
    let seed = image.seed("OBJECTS").expect("static-server seeds OBJECTS");
    let (key, value) = seed.records().next().expect("one record");
    assert!(key.starts_with(b"index.html\0"));
    let len = u32::from_ne_bytes(value[..4].try_into().unwrap()) as usize;
    value[4..4 + len].to_vec()
}

/// Runs one frame and, when the program answered, checks and decodes the answer.
fn run_frame(frame: &[u8], params: &LambdaParams) -> (XdpAction, Vec<u8>) {
    let outcome = test_run(&object_bytes(), "static-server", frame, 1, params).expect("test run");
    (outcome.action, outcome.packet_out)
}

fn answer(client: &str, server: &str, lambda_id: u32, body: &[u8]) -> (LambdaHeader, Vec<u8>) {
    let (action, out) = run_frame(
        &request_frame(client, server, lambda_id, body),
        &any_lambda(9000),
    );
    assert_eq!(action, XdpAction::Tx, "a request is answered in place");
    let reply = UdpFrame::decode(&out).expect("lengths and checksums valid");
    assert_eq!(reply.dst_mac, CLIENT_MAC);
    assert_eq!(reply.src_mac, SERVER_MAC);
    assert_eq!(reply.src, server.parse::<SocketAddr>().unwrap());
    assert_eq!(reply.dst, client.parse::<SocketAddr>().unwrap());
    let header = LambdaHeader::decode(&reply.payload).unwrap();
    assert!(header.is_response());
    assert_eq!(header.lambda_id(), lambda_id);
    assert_eq!(header.request_id(), 0x5eed);
    (header, reply.payload[HEADER_LEN..].to_vec())
}

#[test]
fn answers_index_html_over_ipv4_and_ipv6() {
    if !kernel_tests_enabled("answers_index_html_over_ipv4_and_ipv6") {
        return;
    }
    let index = seeded_index();
    for (client, server) in [
        ("10.1.0.2:40000", "10.1.0.1:9000"),
        ("[fd01::2]:40000", "[fd01::1]:9000"),
    ] {
        let (header, body) = answer(client, server, 3, b"index.html");
        assert_eq!(header.status(), Some(Status::Ok), "{server}");
        assert_eq!(body, index, "{server}");
    }
}

#[test]
fn unknown_objects_and_bad_names_get_error_statuses() {
    if !kernel_tests_enabled("unknown_objects_and_bad_names_get_error_statuses") {
        return;
    }
    let (client, server) = ("10.1.0.2:40000", "10.1.0.1:9000");
    let (header, body) = answer(client, server, 1, b"missing.html");
    assert_eq!(
        (header.status(), body.as_slice()),
        (Some(Status::NotFound), &b""[..])
    );
    let (header, body) = answer(client, server, 1, b"");
    assert_eq!(
        (header.status(), body.as_slice()),
        (Some(Status::BadRequest), &b""[..])
    );
    let (header, _) = answer(client, server, 1, &[b'a'; 65]);
    assert_eq!(
        header.status(),
        Some(Status::BadRequest),
        "names longer than 64 bytes"
    );
    let (header, _) = answer(client, server, 1, b"index.htm");
    assert_eq!(
        header.status(),
        Some(Status::NotFound),
        "no prefix matching"
    );
}

#[test]
fn everything_that_is_not_a_request_passes_untouched() {
    if !kernel_tests_enabled("everything_that_is_not_a_request_passes_untouched") {
        return;
    }
    let good = request_frame("10.1.0.2:40000", "10.1.0.1:9000", 1, b"index.html");
    let mut cases: Vec<(String, Vec<u8>)> = vec![
        (
            "other port".into(),
            request_frame("10.1.0.2:40000", "10.1.0.1:9001", 1, b"index.html"),
        ),
        ("Ethernet header only".into(), good[..14].to_vec()),
        ("all zeros".into(), vec![0; 64]),
        ("all ones".into(), vec![0xff; 128]),
    ];
    for cut in [20, 33, 41, 42, 50, 65] {
        cases.push((format!("truncated to {cut} bytes"), good[..cut].to_vec()));
    }
    let mut response = good.clone();
    response[42 + 3] = 1; // RESPONSE flag: never answer an answer
    cases.push(("a λ response".into(), response));
    let mut bad_magic = good.clone();
    bad_magic[42] = b'X';
    cases.push(("bad magic".into(), bad_magic));
    let mut bad_ip_checksum = good.clone();
    bad_ip_checksum[24] ^= 0x55;
    cases.push(("bad IPv4 header checksum".into(), bad_ip_checksum));
    // Seeded garbage: the same 200 frames every run.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for n in 0..200 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let mut frame = good.clone();
        let at = 14 + (state as usize) % (frame.len() - 14);
        frame[at] ^= (state >> 32) as u8 | 1;
        frame.truncate(14 + (state >> 40) as usize % (frame.len() - 13));
        cases.push((format!("mutated frame #{n}"), frame));
    }
    // Loaded once: verifying the program is the slow part, not running it.
    let runner = TestRunner::load(&object_bytes(), "static-server", &any_lambda(9000)).unwrap();
    for (what, frame) in cases {
        let outcome = runner
            .run(&frame, 1)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let (action, out) = (outcome.action, outcome.packet_out);
        if what.starts_with("mutated") && action == XdpAction::Tx {
            // A mutation can leave a valid request (a changed body byte): then the answer
            // must be a valid frame.
            UdpFrame::decode(&out).unwrap_or_else(|e| panic!("{what}: answered badly: {e}"));
            continue;
        }
        assert_eq!(action, XdpAction::Pass, "{what}");
        assert_eq!(out, frame, "{what}: passed packets are not modified");
    }
}

#[test]
fn port_and_lambda_id_come_from_attach_time_parameters() {
    if !kernel_tests_enabled("port_and_lambda_id_come_from_attach_time_parameters") {
        return;
    }
    let on_9100 = request_frame("10.1.0.2:40000", "10.1.0.1:9100", 5, b"index.html");
    assert_eq!(run_frame(&on_9100, &any_lambda(9000)).0, XdpAction::Pass);
    assert_eq!(run_frame(&on_9100, &any_lambda(9100)).0, XdpAction::Tx);
    let only_5 = LambdaParams {
        port: 9100,
        lambda_id: Some(5),
    };
    assert_eq!(run_frame(&on_9100, &only_5).0, XdpAction::Tx);
    let for_6 = request_frame("10.1.0.2:40000", "10.1.0.1:9100", 6, b"index.html");
    assert_eq!(run_frame(&for_6, &only_5).0, XdpAction::Pass);
}

#[test]
fn the_real_object_has_the_expected_shape() {
    // Pure ELF parsing: no kernel needed.
    let image = LambdaImage::parse(&object_bytes(), "static-server").unwrap();
    let program = image.xdp_program();
    assert_eq!(program.name, "static_server");
    assert!(
        program.insn_count > 100 && program.insn_count < 4096,
        "{}",
        program.insn_count
    );
    let objects = image.map("OBJECTS").expect("the OBJECTS map");
    assert_eq!(objects.type_name(), "hash");
    assert_eq!(
        (objects.key_size, objects.value_size),
        (64, 4 + lambda_ebpf::MAX_BODY as u32)
    );
    for global in ["LNIC_PORT", "LNIC_LAMBDA_ID", "LNIC_MATCH_ANY_ID"] {
        assert!(image.global(global).is_some(), "{global}");
    }
    assert_eq!(image.seed("OBJECTS").unwrap().record_count(), 1);
    let own_line = image
        .line_info
        .entries()
        .iter()
        // In the program's own section: the compiler may move parts of the handler into
        // `.text` subprograms, whose lines come first.
        .find(|l| l.file.ends_with("samples/src/bin/static-server.rs") && l.section == "xdp")
        .expect("line info points into the lambda's own source");
    assert!(own_line.line > 0);
    assert!(
        image.source_line("xdp", 0).is_some(),
        "the first instruction has a line"
    );
    assert!(
        image.has_btf && image.has_line_info(),
        "built with BTF and line info"
    );
}

/// A minimal BPF ELF whose XDP program reads past the end of the XDP context.
fn rejected_object() -> Vec<u8> {
    use object::write::{Object, Symbol, SymbolSection};
    use object::{
        Architecture, BinaryFormat, Endianness, SectionKind, SymbolFlags, SymbolKind, SymbolScope,
    };
    const PROGRAM: [u8; 16] = [
        0x61, 0x10, 0x00, 0x01, 0, 0, 0, 0, // r0 = *(u32 *)(r1 + 256): no such context field
        0x95, 0, 0, 0, 0, 0, 0, 0, // exit
    ];
    let mut obj = Object::new(BinaryFormat::Elf, Architecture::Bpf, Endianness::Little);
    let text = obj.add_section(Vec::new(), b"xdp".to_vec(), SectionKind::Text);
    obj.append_section_data(text, &PROGRAM, 8);
    obj.add_symbol(Symbol {
        name: b"reads_past_ctx".to_vec(),
        value: 0,
        size: PROGRAM.len() as u64,
        kind: SymbolKind::Text,
        scope: SymbolScope::Linkage,
        weak: false,
        section: SymbolSection::Section(text),
        flags: SymbolFlags::None,
    });
    let license = obj.add_section(Vec::new(), b"license".to_vec(), SectionKind::Data);
    obj.append_section_data(license, b"GPL\0", 1);
    obj.write().unwrap()
}

fn stderr_of(args: &[&str]) -> String {
    let out = lambdactl(args);
    assert!(!out.status.success(), "lambdactl {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_input_gets_clear_errors() {
    if !kernel_tests_enabled("bad_input_gets_clear_errors") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("lnic-bad-input-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = dir.join("notes.txt");
    std::fs::write(&text, "not an object").unwrap();
    let rejected = dir.join("rejected.o");
    std::fs::write(&rejected, rejected_object()).unwrap();
    let packet = dir.join("request.bin");
    std::fs::write(
        &packet,
        request_frame("10.1.0.2:1", "10.1.0.1:9000", 1, b"x"),
    )
    .unwrap();
    let object = lambda_object("static-server");
    let (text, rejected, packet, object) = (
        text.to_str().unwrap(),
        rejected.to_str().unwrap(),
        packet.to_str().unwrap(),
        object.to_str().unwrap(),
    );

    let err = stderr_of(&["test-run", text, "--packet-file", packet]);
    assert!(err.to_lowercase().contains("not an elf"), "{err}");
    let err = stderr_of(&["test-run", "/proc/self/exe", "--packet-file", packet]);
    assert!(err.contains("BPF"), "an x86 ELF is not a BPF object: {err}");
    let err = stderr_of(&["attach", object, "--iface", "lnic-no-such-if"]);
    assert!(err.contains("lnic-no-such-if"), "{err}");
    let err = stderr_of(&["-n", "lnic-no-such-netns", "ls"]);
    assert!(err.contains("lnic-no-such-netns"), "{err}");
    // Our verifier refuses it first, naming the instruction; skipping it, the kernel's does.
    let err = stderr_of(&["test-run", rejected, "--packet-file", packet]);
    assert!(err.contains("λ-NIC verifier rejected"), "{err}");
    assert!(err.contains("error at instruction 0"), "{err}");
    let err = stderr_of(&[
        "test-run",
        rejected,
        "--packet-file",
        packet,
        "--skip-verify",
    ]);
    assert!(err.contains("kernel verifier rejected"), "{err}");
    assert!(
        err.contains("invalid bpf_context access"),
        "the kernel's log is shown: {err}"
    );

    // Without privileges: the same command as an unprivileged user names the capability.
    let out = run(
        "setpriv",
        &[
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            env!("CARGO_BIN_EXE_lambdactl"),
            "test-run",
            object,
            "--packet-file",
            packet,
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("CAP_BPF") || err.contains("CAP_SYS_ADMIN"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn echo_edits_the_body_in_place_and_answers_with_it() {
    if !kernel_tests_enabled("echo_edits_the_body_in_place_and_answers_with_it") {
        return;
    }
    let bytes = std::fs::read(lambda_object("echo")).unwrap();
    let runner = TestRunner::load(&bytes, "echo", &any_lambda(9000)).unwrap();
    let long: Vec<u8> = (0..300).map(|i| b"abcdefghij"[i % 10]).collect();
    for (client, server) in [
        ("10.1.0.2:40000", "10.1.0.1:9000"),
        ("[fd01::2]:40000", "[fd01::1]:9000"),
    ] {
        for body in [&b""[..], b"x", b"Mixed Case 123", &long[..]] {
            let outcome = runner
                .run(&request_frame(client, server, 2, body), 1)
                .unwrap();
            assert_eq!(outcome.action, XdpAction::Tx);
            let reply = UdpFrame::decode(&outcome.packet_out).expect("valid lengths and checksums");
            let header = LambdaHeader::decode(&reply.payload).unwrap();
            assert_eq!(header.status(), Some(Status::Ok));
            let mut expected = body.to_vec();
            let shouted = expected.len().min(64);
            expected[..shouted].make_ascii_uppercase();
            assert_eq!(
                &reply.payload[HEADER_LEN..],
                expected.as_slice(),
                "{server}"
            );
        }
    }
}

#[test]
fn a_verifier_rejection_names_the_rust_source_line() {
    if !kernel_tests_enabled("a_verifier_rejection_names_the_rust_source_line") {
        return;
    }
    let object = workspace_root().join("target/lambdas/rejected/unchecked-packet-read.o");
    assert!(
        object.is_file(),
        "{} is missing: run `cargo xtask build-ebpf`",
        object.display()
    );
    // Ours: the reason, the instruction in context and the Rust line.
    let err = stderr_of(&["test-run", object.to_str().unwrap(), "--request-body", "x"]);
    assert!(err.contains("λ-NIC verifier rejected"), "{err}");
    assert!(
        err.contains("beyond the 0 bytes proven by a data_end check"),
        "{err}"
    );
    assert!(
        err.contains("unchecked-packet-read.rs:13")
            && err.contains("let first_byte = unsafe { *(ctx.data() as *const u8) };"),
        "the offending Rust line: {err}"
    );
    // The kernel's, with our verifier skipped.
    let err = stderr_of(&[
        "test-run",
        object.to_str().unwrap(),
        "--request-body",
        "x",
        "--skip-verify",
    ]);
    assert!(err.contains("kernel verifier rejected"), "{err}");
    assert!(
        err.contains("invalid access to packet"),
        "the kernel's reason: {err}"
    );
    assert!(
        err.contains(
            "let first_byte = unsafe { *(ctx.data() as *const u8) }; @ unchecked-packet-read.rs:"
        ),
        "the offending Rust line, from BTF line info: {err}"
    );
}

#[test]
fn inspect_shows_the_image_without_loading_it() {
    let object = lambda_object("static-server");
    let shown = lambdactl_ok(&["inspect", object.to_str().unwrap()]);
    for expected in [
        "static_server (section xdp, Xdp,",
        "samples/src/bin/static-server.rs, lines",
        "OBJECTS hash: key 64 B, value 1432 B, max 256 entries",
        "LNIC_PORT (.rodata, 2 B)",
        "seed: 1 record(s) for OBJECTS",
        "BTF: yes; line info:",
    ] {
        assert!(
            shown.contains(expected),
            "missing {expected:?} in:\n{shown}"
        );
    }
}
