//! Random instruction lists never panic the verifier: every one is accepted or rejected.

use ebpf_isa::Insn;
use verifier::{MapInfo, Options, ProgramInput, ProgramKind, map_type, verify};

/// xorshift64*: a small seeded generator, so failures reproduce from the seed alone.
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

/// Opcodes that are valid, so that programs get past the shape checks often.
const OPCODES: &[u8] = &[
    0x07, 0x0f, 0x17, 0x1f, 0x27, 0x37, 0x3f, 0x47, 0x57, 0x5f, 0x67, 0x77, 0x87, 0x97, 0xa7, 0xb7,
    0xbf, 0xc7, 0x04, 0x0c, 0x14, 0x24, 0x34, 0x54, 0x64, 0x74, 0xb4, 0xbc, 0xdc, 0xd4, 0x05, 0x15,
    0x1d, 0x25, 0x2d, 0x35, 0x45, 0x55, 0x5d, 0x65, 0xa5, 0xad, 0xb5, 0xc5, 0x16, 0x26, 0xa6, 0x85,
    0x95, 0x61, 0x69, 0x71, 0x79, 0x62, 0x6a, 0x72, 0x7a, 0x63, 0x6b, 0x73, 0x7b, 0xc3, 0xdb, 0x18,
    0x91, 0x89,
];

fn random_insn(rng: &mut Rng, len: usize) -> Insn {
    let opcode = if rng.below(10) == 0 {
        rng.next() as u8
    } else {
        OPCODES[rng.below(OPCODES.len() as u64) as usize]
    };
    let reg = |rng: &mut Rng| {
        if rng.below(8) == 0 {
            rng.below(16) as u8
        } else {
            rng.below(11) as u8
        }
    };
    let dst = reg(rng);
    let src = if opcode == 0x85 {
        rng.below(3) as u8
    } else {
        reg(rng)
    };
    let off = match rng.below(4) {
        0 => (rng.below(len as u64 + 2) as i16) - 1,
        1 => -(rng.below(520) as i16),
        2 => rng.below(32) as i16,
        _ => rng.next() as i16,
    };
    let imm = match rng.below(4) {
        0 => rng.below(16) as i32,
        1 => [1, 2, 3, 5, 7, 12, 44, 65][rng.below(8) as usize],
        2 => (rng.below(len as u64 + 2) as i32) - 1,
        _ => rng.next() as i32,
    };
    Insn::new(opcode, dst, src, off, imm)
}

#[test]
fn random_programs_never_panic() {
    let mut rng = Rng(0x5eed_1a3b_da7a_0001);
    let maps = vec![
        MapInfo {
            name: "h".into(),
            map_type: map_type::HASH,
            key_size: 4,
            value_size: 8,
            max_entries: 4,
            flags: 0,
            read_only: false,
        },
        MapInfo {
            name: "p".into(),
            map_type: map_type::PROG_ARRAY,
            key_size: 4,
            value_size: 4,
            max_entries: 4,
            flags: 0,
            read_only: false,
        },
    ];
    let (mut accepted, mut rejected) = (0, 0);
    for i in 0..4000 {
        let len = 1 + rng.below(24) as usize;
        let mut insns: Vec<Insn> = (0..len).map(|_| random_insn(&mut rng, len)).collect();
        if rng.below(2) == 0 {
            insns.push(Insn::new(0xb7, 0, 0, 0, 0));
            insns.push(Insn::new(0x95, 0, 0, 0, 0));
        }
        let kind = if i % 3 == 0 {
            ProgramKind::RawMemory { size: 16 }
        } else {
            ProgramKind::Xdp
        };
        let mut input = ProgramInput::new(format!("random{i}"), kind, insns);
        input.maps = maps.clone();
        match verify(&input, &Options::default()) {
            Ok(_) => accepted += 1,
            Err(rejection) => {
                // Displaying must not panic either.
                let _ = rejection.to_string();
                rejected += 1;
            }
        }
    }
    println!("random programs: {accepted} accepted, {rejected} rejected");
}

/// The case corpus' programs with one to three fields mutated: these get deep into the
/// analysis (most random programs stop at the shape checks).
#[test]
fn mutated_cases_never_panic() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases");
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .expect("tests/cases exists")
        .flatten()
        .map(|e| e.path())
        .collect();
    // Sorted, so the seed alone reproduces a run.
    paths.sort();
    let mut programs = Vec::new();
    for case in paths {
        let text = std::fs::read_to_string(case).unwrap_or_default();
        if let Some((_, asm)) = text.split_once("\n--\n")
            && let Ok(insns) = ebpf_isa::asm::assemble(asm)
        {
            programs.push(insns);
        }
    }
    let maps = vec![MapInfo {
        name: "m".into(),
        map_type: map_type::HASH,
        key_size: 4,
        value_size: 8,
        max_entries: 4,
        flags: 0,
        read_only: false,
    }];
    let mut rng = Rng(0x00c0_ffee_0000_0042);
    let (mut accepted, mut rejected) = (0, 0);
    for i in 0..3000 {
        let mut insns = programs[rng.below(programs.len() as u64) as usize].clone();
        for _ in 0..1 + rng.below(3) {
            let at = rng.below(insns.len() as u64) as usize;
            let insn = &mut insns[at];
            match rng.below(5) {
                0 => insn.opcode = OPCODES[rng.below(OPCODES.len() as u64) as usize],
                1 => insn.dst = rng.below(11) as u8,
                2 => insn.src = rng.below(11) as u8,
                3 => insn.off = insn.off.wrapping_add(rng.below(17) as i16 - 8),
                _ => insn.imm = insn.imm.wrapping_add(rng.below(17) as i32 - 8),
            }
        }
        let mut input = ProgramInput::new(format!("mutant{i}"), ProgramKind::Xdp, insns);
        input.maps = maps.clone();
        match verify(&input, &Options::default()) {
            Ok(_) => accepted += 1,
            Err(rejection) => {
                let _ = rejection.to_string();
                rejected += 1;
            }
        }
    }
    println!("mutated cases: {accepted} accepted, {rejected} rejected");
}
