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

/// Two functions with 5,000 undecided branches each: 10,000 over the whole program exceed the
/// kernel's 8,192 pending branches, but when both are BTF global functions the kernel verifies
/// each on its own, and `Options::global_functions` makes our count per function too.
#[test]
fn jump_sequence_limit_counts_global_functions_apart() {
    let function = "call 7
mov %r6, 0
mov %r7, 0
loop:
jgt %r0, 100, skip
add %r7, 1
skip:
add %r6, 1
jlt %r6, 5000, loop
mov %r0, 2
exit
";
    let text = format!(
        "call local f1\ncall local f2\nmov %r0, 2\nexit\nf1:\n{}f2:\n{}",
        function.replace("loop", "loop1").replace("skip", "skip1"),
        function.replace("loop", "loop2").replace("skip", "skip2"),
    );
    let insns = ebpf_isa::asm::assemble(&text).unwrap();
    let entries: Vec<usize> = insns
        .iter()
        .enumerate()
        .filter(|(_, i)| i.is_local_call())
        .map(|(pc, i)| (pc as i64 + 1 + i64::from(i.imm)) as usize)
        .collect();
    assert_eq!(entries.len(), 2);
    let input = ProgramInput::new("two-globals", ProgramKind::Xdp, insns);
    let mut options = Options {
        profiles: vec![Backend::Kernel],
        ..Options::default()
    };
    let err = verify(&input, &options).unwrap_err().to_string();
    assert!(
        err.contains("10000 conditional jumps") && err.contains("8192 pending branches"),
        "{err}"
    );
    options.global_functions = entries.clone();
    let contract = verify(&input, &options).unwrap();
    assert_eq!(contract.eligible, vec![Backend::Kernel]);
    // Only one of them global: the other counts with the main program, still 5,000 each.
    options.global_functions = vec![entries[0]];
    assert!(verify(&input, &options).is_ok());
}
