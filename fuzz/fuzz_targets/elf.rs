//! Arbitrary bytes → `LambdaImage::parse` → `link_xdp` → `verifier::verify`: the whole path an
//! object a user brings takes before any backend sees it. Any input must give Ok or Err; a
//! panic, an abort or a hang is a bug.

#![no_main]

use libfuzzer_sys::fuzz_target;
use loader::{LambdaImage, LambdaParams};

fuzz_target!(|data: &[u8]| {
    // Parse on its own first: `link_xdp` parses again, but an image error must not depend on
    // what linking would do.
    if let Err(e) = LambdaImage::parse(data, "fuzz") {
        assert!(
            !e.to_string().trim().is_empty(),
            "an image error without a message"
        );
        return;
    }
    match loader::link::link_xdp(data, "fuzz", &LambdaParams::default()) {
        Ok((_, linked)) => {
            let input = loader::verify::verifier_input(&linked);
            if let Err(rejection) = verifier::verify(&input, &verifier::Options::default()) {
                assert!(
                    !rejection.to_string().trim().is_empty(),
                    "a rejection without a message"
                );
            }
        }
        Err(e) => assert!(
            !e.to_string().trim().is_empty(),
            "a link error without a message"
        ),
    }
});
