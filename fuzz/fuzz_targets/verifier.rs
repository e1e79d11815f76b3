//! Arbitrary bytes → header + instruction slots → `verifier::verify`, as an XDP program and as
//! a raw-memory program. Any input must give Ok or Err: a panic, an abort or a hang is a bug.
//! The input format is in `src/lib.rs`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Decoding the untrimmed code exercises the length check on every input, not only on
    // inputs whose length happens to be a multiple of eight.
    let _ = ebpf_isa::decode(data.get(lambda_nic_fuzz::HEADER..).unwrap_or_default());
    let Some(case) = lambda_nic_fuzz::verifier_case(data) else {
        return;
    };
    for input in [&case.xdp, &case.raw] {
        if let Err(rejection) = verifier::verify(input, &case.options) {
            // Rendering the rejection runs the listing code (disassembly with context and
            // register states), which has its own ways to go wrong.
            let text = rejection.to_string();
            assert!(!text.trim().is_empty(), "a rejection without a message");
        }
    }
});
