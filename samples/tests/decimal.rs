//! The samples' fixed-width decimal digits on the host, against `format!`: the normal build's
//! `/ 10` and, with `--features nic`, the NIC build's shifts-and-adds division.

#[allow(dead_code)]
#[path = "../src/shared/decimal.rs"]
mod decimal;

/// xorshift64: seeded, no dependency.
fn values() -> Vec<u64> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut out: Vec<u64> = (0..200_000)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Spread over every magnitude, not only 20-digit numbers.
            x >> (i % 64)
        })
        .collect();
    let mut power = 1u64;
    for _ in 0..20 {
        out.extend([power - 1, power, power + 1, power.wrapping_mul(9)]);
        power = power.wrapping_mul(10);
    }
    out.extend([0, 9, 10, 19, 20, 99, u64::MAX, u64::MAX - 1, u64::MAX / 10]);
    out
}

#[test]
fn padded_digits_match_format_for_every_magnitude() {
    for n in values() {
        let mut out = [b'#'; 24];
        decimal::write_padded::<24, 20>(&mut out, 2, n);
        assert_eq!(&out[..2], b"##");
        assert_eq!(&out[22..], b"##");
        assert_eq!(
            std::str::from_utf8(&out[2..22]).unwrap(),
            format!("{n:020}"),
            "{n}"
        );
        // Too few digits: the top ones are lost, the rest are right.
        let mut short = [0u8; 10];
        decimal::write_padded::<10, 10>(&mut short, 0, n);
        assert_eq!(
            std::str::from_utf8(&short).unwrap(),
            format!("{:010}", n % 10_000_000_000),
            "{n}"
        );
    }
}
