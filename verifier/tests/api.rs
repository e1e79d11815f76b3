//! The public API's outputs: a rejection's display and a contract's JSON.

use verifier::{Backend, Options, ProgramInput, ProgramKind, SourceLine, verify};

#[test]
fn rejection_display_shows_message_listing_registers_and_source_line() {
    let insns =
        ebpf_isa::asm::assemble("ldxw %r2, [%r1+0]\nldxw %r3, [%r1+4]\nldxb %r0, [%r2+0]\nexit")
            .unwrap();
    let mut input = ProgramInput::new("demo", ProgramKind::Xdp, insns);
    input.lines = vec![
        None,
        None,
        Some(SourceLine {
            file: "src/main.rs".into(),
            line: 61,
            column: 9,
            text: Some("let b = data[0];".into()),
        }),
    ];
    let rejection = verify(&input, &Options::default()).unwrap_err();
    let text = rejection.to_string();
    println!("{text}");
    assert!(
        text.contains("error at instruction 2: packet read"),
        "{text}"
    );
    assert!(text.contains(">     2: ldxb %r0, [%r2]"), "{text}");
    assert!(
        text.contains("registers: r0=uninit r2=packet(off=0)"),
        "{text}"
    );
    assert!(text.contains("at src/main.rs:61:9"), "{text}");
    assert!(text.contains("| let b = data[0];"), "{text}");
}

#[test]
fn contract_serializes_to_json() {
    let insns = ebpf_isa::asm::assemble("call 5\nmov %r0, 2\nexit").unwrap();
    let input = ProgramInput::new("clock", ProgramKind::Xdp, insns);
    let contract = verify(&input, &Options::default()).unwrap();
    assert_eq!(contract.max_insns_executed, 3);
    assert_eq!(contract.eligible, vec![Backend::Kernel, Backend::Vm]);
    let json = serde_json::to_value(&contract).unwrap();
    assert_eq!(json["helpers_used"][0][1], "bpf_ktime_get_ns");
    assert_eq!(json["refused"][0][0], "nfp");
}
