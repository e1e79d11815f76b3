//! Malformed input never panics the loader or the verifier: every input gives an `Ok` or an
//! `Err` whose message says something.
//!
//! 1. [`mutated_objects`]: mutations of the real sample objects (`target/lambdas/*.o`, built
//!    by `cargo xtask build-ebpf`) — bit flips, bytes overwritten with boundary values,
//!    truncation at every section boundary and at random offsets, chunks removed or duplicated,
//!    and corrupted ELF header, section header, symbol and relocation fields — fed to
//!    `LambdaImage::parse`, `link_xdp` and, when linking succeeds, the verifier.
//! 2. [`random_programs`]: random instruction streams into `verifier::verify`.
//! 3. [`mutated_cases`]: the programs of `verifier/tests/cases/` with a few instructions
//!    changed, inserted, removed or swapped, into `verifier::verify`.
//!
//! This is the stable, bounded companion of the `cargo fuzz` targets in `fuzz/`: a few thousand
//! inputs per run, seeded and reproducible. Every input gets its own generator derived from the
//! seed and its index, so a failure reported as "seed S, index I" replays alone with
//! `MALFORMED_SEED=S MALFORMED_INDEX=I`. `MALFORMED_COUNT` sets the number of random inputs per
//! part; a failing object input is also written to the test's scratch directory, ready for
//! `cargo fuzz run elf <file>`.
//!
//! Without the sample objects part 1 says so and passes, except under `CI=true`.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::fmt;
use std::hash::{DefaultHasher, Hash as _, Hasher as _};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::{Duration, Instant};

use ebpf_isa::{Insn, opcode as op};
use loader::link::link_xdp;
use loader::verify::verifier_input;
use loader::{LambdaImage, LambdaParams};
use verifier::{MapInfo, Options, ProgramInput, ProgramKind, map_type, verify};

/// Seed when `MALFORMED_SEED` does not say.
const DEFAULT_SEED: u64 = 0x6d61_6c66_6f72_6d65;
/// Object mutations per run (spread over the objects) when `MALFORMED_COUNT` does not say.
const OBJECT_MUTATIONS: u64 = 5_000;
/// Random instruction streams per run, each verified as XDP and as raw memory.
const RANDOM_PROGRAMS: u64 = 5_000;
/// Mutated case programs per run.
const CASE_MUTATIONS: u64 = 2_500;
/// Distinct failure places printed with an example input.
const SHOWN: usize = 10;

// ---------------------------------------------------------------------------------------------
// Running one input with panics caught

thread_local! {
    /// Set while a guarded call runs on this thread: its panic message is kept, not printed.
    static CAPTURING: Cell<bool> = const { Cell::new(false) };
    static CAPTURED: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Installs (once per process) a panic hook that keeps the message of a panic inside
/// [`guarded`] instead of printing it — thousands of inputs could otherwise bury the report —
/// and leaves every other panic (the test's own assertions, other tests) to the default hook.
fn install_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if CAPTURING.with(Cell::get) {
                CAPTURED.with(|c| *c.borrow_mut() = Some(info.to_string()));
            } else {
                previous(info);
            }
        }));
    });
}

/// Runs `f`; a panic becomes `Err` with its message and location.
fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    install_hook();
    CAPTURING.with(|c| c.set(true));
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    CAPTURING.with(|c| c.set(false));
    result.map_err(|_| {
        CAPTURED
            .with(|c| c.borrow_mut().take())
            .unwrap_or_else(|| "panic without a message".to_owned())
    })
}

// ---------------------------------------------------------------------------------------------
// Configuration and the generator

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

fn env_number(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

fn seed() -> u64 {
    env_number("MALFORMED_SEED").unwrap_or(DEFAULT_SEED)
}

/// The indices to run: all `count` of them, or only `MALFORMED_INDEX` when replaying one.
fn indices(count: u64) -> std::ops::Range<u64> {
    let count = env_number("MALFORMED_COUNT").unwrap_or(count);
    match env_number("MALFORMED_INDEX") {
        Some(i) => i..i + 1,
        None => 0..count,
    }
}

/// splitmix64: tiny, seedable, and any 64-bit state is a fine start, so one generator per
/// input costs nothing.
struct Rng(u64);

impl Rng {
    /// The generator of input `index` of a part (`part` keeps the parts' streams apart).
    fn for_input(seed: u64, part: u64, index: u64) -> Rng {
        let mut rng = Rng(seed ^ part.wrapping_mul(0xa076_1d64_78bd_642f));
        rng.0 ^= index.wrapping_mul(0xe703_7ed1_a0b4_28db);
        rng.next();
        rng
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.index(items.len())]
    }
}

/// Failures of one part, printed together at the end.
#[derive(Default)]
struct Failures(Vec<String>);

impl Failures {
    fn push(&mut self, what: String) {
        self.0.push(what);
    }

    /// Prints the first input of every distinct panic location (the same bug usually fails
    /// many inputs) with a count per location, and fails if there was any failure.
    fn assert_none(&self, part: &str) {
        let place = |f: &str| -> String {
            f.lines()
                .find_map(|l| l.trim().strip_prefix("panicked at "))
                .unwrap_or("(no panic: empty message)")
                .to_owned()
        };
        let mut places = std::collections::BTreeMap::<String, usize>::new();
        for f in &self.0 {
            let count = places.entry(place(f)).or_default();
            if *count == 0 && places.len() <= SHOWN {
                eprintln!("{f}\n");
            }
            *places.get_mut(&place(f)).expect("just inserted") += 1;
        }
        for (place, n) in &places {
            eprintln!("{n:>5} × {place}");
        }
        assert!(
            self.0.is_empty(),
            "{part}: {} inputs panicked or gave an error without a message, at {} places \
             (one input for each above)",
            self.0.len(),
            places.len()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The ELF layout, read by hand so that mutations can aim at its fields

const SHDR_SIZE: usize = 64;
const SYM_SIZE: usize = 24;
const SHT_SYMTAB: u32 = 2;
const SHT_RELA: u32 = 4;
const SHT_NOBITS: u32 = 8;
const SHT_REL: u32 = 9;

fn read_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn read_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// One section of the original object.
struct Section {
    name: String,
    /// File offset of its section header.
    header_at: usize,
    ty: u32,
    offset: usize,
    size: usize,
}

impl Section {
    /// Its bytes in the file (none for `.bss`-like sections).
    fn range(&self, file_len: usize) -> Option<std::ops::Range<usize>> {
        let end = self.offset.checked_add(self.size)?;
        (self.ty != SHT_NOBITS && self.size > 0 && end <= file_len).then_some(self.offset..end)
    }
}

/// A sample object and where its structures are.
struct Object {
    name: String,
    bytes: Vec<u8>,
    shoff: usize,
    sections: Vec<Section>,
    /// Offsets of every truncation point worth trying: section starts and ends, the section
    /// header table and each entry of it.
    boundaries: Vec<usize>,
}

impl Object {
    fn read(path: &Path) -> Result<Object, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let name = path
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let bad = || format!("{name}: not an ELF64 object this test understands");
        let shoff = read_u64(&bytes, 0x28).ok_or_else(bad)? as usize;
        let shnum = usize::from(read_u16(&bytes, 0x3c).ok_or_else(bad)?);
        let shstrndx = usize::from(read_u16(&bytes, 0x3e).ok_or_else(bad)?);
        let mut sections = Vec::new();
        for i in 0..shnum {
            let h = shoff + i * SHDR_SIZE;
            sections.push(Section {
                name: String::new(),
                header_at: h,
                ty: read_u32(&bytes, h + 4).ok_or_else(bad)?,
                offset: read_u64(&bytes, h + 24).ok_or_else(bad)? as usize,
                size: read_u64(&bytes, h + 32).ok_or_else(bad)? as usize,
            });
        }
        let names_at = sections.get(shstrndx).map_or(0, |s| s.offset);
        for section in &mut sections {
            let at = names_at + read_u32(&bytes, section.header_at).unwrap_or(0) as usize;
            let at = at.min(bytes.len());
            let end = bytes[at..]
                .iter()
                .position(|&b| b == 0)
                .map_or(bytes.len(), |n| at + n);
            section.name = String::from_utf8_lossy(&bytes[at..end]).into_owned();
        }
        let mut boundaries: Vec<usize> = sections
            .iter()
            .flat_map(|s| [s.offset, s.offset + s.size])
            .chain((0..=shnum).map(|i| shoff + i * SHDR_SIZE))
            .chain([0, 1, 4, 16, 20, 0x40])
            .filter(|&b| b < bytes.len())
            .collect();
        boundaries.sort_unstable();
        boundaries.dedup();
        Ok(Object {
            name,
            bytes,
            shoff,
            sections,
            boundaries,
        })
    }

    /// Sections whose contents the loader interprets (code, maps, BTF, relocations, symbols),
    /// as opposed to DWARF, which is most of the file and which the loader ignores: mutating
    /// those finds more.
    fn structural(&self) -> Vec<std::ops::Range<usize>> {
        self.sections
            .iter()
            .filter(|s| !s.name.starts_with(".debug") && !s.name.is_empty() && s.name != ".comment")
            .filter_map(|s| s.range(self.bytes.len()))
            .collect()
    }

    fn sections_of(&self, ty: &[u32]) -> Vec<&Section> {
        self.sections
            .iter()
            .filter(|s| ty.contains(&s.ty))
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Object mutations

/// Widths of the fields a mutation can overwrite.
#[derive(Clone, Copy, Debug)]
enum Width {
    U8,
    U16,
    U32,
    U64,
}

impl Width {
    fn bytes(self) -> usize {
        match self {
            Width::U8 => 1,
            Width::U16 => 2,
            Width::U32 => 4,
            Width::U64 => 8,
        }
    }
}

/// One change to an object, printable so a failure says what was done.
#[derive(Clone, Debug)]
enum Mutation {
    FlipBit {
        at: usize,
        bit: u8,
    },
    SetByte {
        at: usize,
        value: u8,
    },
    Truncate {
        len: usize,
    },
    RemoveChunk {
        at: usize,
        len: usize,
    },
    DuplicateChunk {
        at: usize,
        len: usize,
    },
    SetField {
        what: String,
        at: usize,
        width: Width,
        value: u64,
    },
}

impl fmt::Display for Mutation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mutation::FlipBit { at, bit } => write!(f, "flip bit {bit} of byte {at:#x}"),
            Mutation::SetByte { at, value } => write!(f, "byte {at:#x} = {value:#04x}"),
            Mutation::Truncate { len } => write!(f, "truncate to {len:#x} bytes"),
            Mutation::RemoveChunk { at, len } => write!(f, "remove {len} bytes at {at:#x}"),
            Mutation::DuplicateChunk { at, len } => write!(f, "duplicate {len} bytes at {at:#x}"),
            Mutation::SetField {
                what,
                at,
                width,
                value,
            } => write!(f, "{what} (at {at:#x}, {width:?}) = {value:#x}"),
        }
    }
}

impl Mutation {
    fn apply(&self, bytes: &mut Vec<u8>) {
        match *self {
            Mutation::FlipBit { at, bit } => {
                if let Some(b) = bytes.get_mut(at) {
                    *b ^= 1 << bit;
                }
            }
            Mutation::SetByte { at, value } => {
                if let Some(b) = bytes.get_mut(at) {
                    *b = value;
                }
            }
            Mutation::Truncate { len } => bytes.truncate(len),
            Mutation::RemoveChunk { at, len } => {
                let end = at.saturating_add(len).min(bytes.len());
                if at < end {
                    bytes.drain(at..end);
                }
            }
            Mutation::DuplicateChunk { at, len } => {
                let end = at.saturating_add(len).min(bytes.len());
                if at < end {
                    let chunk = bytes[at..end].to_vec();
                    bytes.splice(end..end, chunk);
                }
            }
            Mutation::SetField {
                at, width, value, ..
            } => {
                let n = width.bytes();
                if let Some(field) = bytes.get_mut(at..at + n) {
                    field.copy_from_slice(&value.to_le_bytes()[..n]);
                }
            }
        }
    }
}

/// Boundary values for a field of `width` that held `old`, in a file of `file_len` bytes:
/// the values parsers mishandle (zero, all ones, sign boundaries, just past the end of the
/// file, off by one or by an entry).
fn interesting(rng: &mut Rng, width: Width, old: u64, file_len: usize) -> u64 {
    let len = file_len as u64;
    let value = match rng.below(14) {
        0 => 0,
        1 => 1,
        2 => u64::MAX,
        3 => 0x7f,
        4 => 0x80,
        5 => 0xff,
        6 => 0x7fff_ffff,
        7 => 0x8000_0000,
        8 => len,
        9 => len + 1,
        10 => old.wrapping_add(1),
        11 => old.wrapping_sub(1),
        12 => old.wrapping_add(rng.pick(&[4, 8, 16, 24, 64, 0x1000])),
        _ => old.wrapping_mul(2),
    };
    match width {
        Width::U8 => value & 0xff,
        Width::U16 => value & 0xffff,
        Width::U32 => value & 0xffff_ffff,
        Width::U64 => value,
    }
}

/// ELF header fields: name, offset, width.
const EHDR_FIELDS: [(&str, usize, Width); 13] = [
    ("e_ident[EI_CLASS]", 4, Width::U8),
    ("e_ident[EI_DATA]", 5, Width::U8),
    ("e_type", 0x10, Width::U16),
    ("e_machine", 0x12, Width::U16),
    ("e_entry", 0x18, Width::U64),
    ("e_phoff", 0x20, Width::U64),
    ("e_shoff", 0x28, Width::U64),
    ("e_ehsize", 0x34, Width::U16),
    ("e_phentsize", 0x36, Width::U16),
    ("e_phnum", 0x38, Width::U16),
    ("e_shentsize", 0x3a, Width::U16),
    ("e_shnum", 0x3c, Width::U16),
    ("e_shstrndx", 0x3e, Width::U16),
];

/// Section header fields: name, offset in the entry, width.
const SHDR_FIELDS: [(&str, usize, Width); 9] = [
    ("sh_name", 0, Width::U32),
    ("sh_type", 4, Width::U32),
    ("sh_flags", 8, Width::U64),
    ("sh_offset", 24, Width::U64),
    ("sh_size", 32, Width::U64),
    ("sh_link", 40, Width::U32),
    ("sh_info", 44, Width::U32),
    ("sh_addralign", 48, Width::U64),
    ("sh_entsize", 56, Width::U64),
];

/// Symbol fields.
const SYM_FIELDS: [(&str, usize, Width); 6] = [
    ("st_name", 0, Width::U32),
    ("st_info", 4, Width::U8),
    ("st_other", 5, Width::U8),
    ("st_shndx", 6, Width::U16),
    ("st_value", 8, Width::U64),
    ("st_size", 16, Width::U64),
];

/// Relocation fields (`r_info` split into its symbol and type halves).
const REL_FIELDS: [(&str, usize, Width); 4] = [
    ("r_offset", 0, Width::U64),
    ("r_info.type", 8, Width::U32),
    ("r_info.sym", 12, Width::U32),
    ("r_addend", 16, Width::U64),
];

fn field(
    rng: &mut Rng,
    object: &Object,
    what: String,
    at: usize,
    width: Width,
) -> Option<Mutation> {
    let old = match width {
        Width::U8 => u64::from(*object.bytes.get(at)?),
        Width::U16 => u64::from(read_u16(&object.bytes, at)?),
        Width::U32 => u64::from(read_u32(&object.bytes, at)?),
        Width::U64 => read_u64(&object.bytes, at)?,
    };
    let value = interesting(rng, width, old, object.bytes.len());
    Some(Mutation::SetField {
        what,
        at,
        width,
        value,
    })
}

/// A random offset: half the time anywhere, half the time inside a section the loader reads.
fn offset(rng: &mut Rng, object: &Object) -> usize {
    let structural = object.structural();
    if structural.is_empty() || rng.chance(2) {
        return rng.index(object.bytes.len());
    }
    let range = structural[rng.index(structural.len())].clone();
    range.start + rng.index(range.len())
}

/// A chunk length: mostly small, sometimes a page.
fn chunk_len(rng: &mut Rng) -> usize {
    let max = rng.pick(&[8, 64, 4096]);
    1 + rng.index(max)
}

/// One random mutation of `object`; `None` when the chosen kind has nothing to aim at.
fn mutation(rng: &mut Rng, object: &Object) -> Option<Mutation> {
    let len = object.bytes.len();
    Some(match rng.below(11) {
        0 | 1 => Mutation::FlipBit {
            at: offset(rng, object),
            bit: rng.below(8) as u8,
        },
        2 => Mutation::SetByte {
            at: offset(rng, object),
            value: rng.pick(&[0, 0xff, 0x7f, 0x80]),
        },
        3 => Mutation::Truncate {
            len: if rng.chance(2) {
                rng.index(len)
            } else {
                // Just before or after a boundary: off-by-one length checks.
                let b = rng.pick(&object.boundaries);
                (b + rng.index(3)).saturating_sub(1)
            },
        },
        4 => Mutation::RemoveChunk {
            at: offset(rng, object),
            len: chunk_len(rng),
        },
        5 => Mutation::DuplicateChunk {
            at: offset(rng, object),
            len: chunk_len(rng),
        },
        6 => {
            let (name, at, width) = rng.pick(&EHDR_FIELDS);
            field(rng, object, name.to_owned(), at, width)?
        }
        7 | 8 => {
            let s = &object.sections[rng.index(object.sections.len())];
            let (name, at, width) = rng.pick(&SHDR_FIELDS);
            let what = format!("{name} of section `{}`", s.name);
            field(rng, object, what, s.header_at + at, width)?
        }
        9 => {
            let symtabs = object.sections_of(&[SHT_SYMTAB]);
            let s = symtabs.get(rng.index(symtabs.len()))?;
            let count = s.size / SYM_SIZE;
            let i = rng.index(count);
            let (name, at, width) = rng.pick(&SYM_FIELDS);
            let what = format!("{name} of symbol {i}");
            field(rng, object, what, s.offset + i * SYM_SIZE + at, width)?
        }
        _ => {
            let rels = object.sections_of(&[SHT_REL, SHT_RELA]);
            let s = rels.get(rng.index(rels.len()))?;
            let entry = if s.ty == SHT_RELA { 24 } else { 16 };
            let i = rng.index(s.size / entry);
            let fields = if s.ty == SHT_RELA {
                &REL_FIELDS[..]
            } else {
                &REL_FIELDS[..3]
            };
            let (name, at, width) = rng.pick(fields);
            let what = format!("{name} of relocation {i} in `{}`", s.name);
            field(rng, object, what, s.offset + i * entry + at, width)?
        }
    })
}

/// What happened to one input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Outcome {
    ParseError,
    LinkError,
    Rejected,
    Accepted,
    /// Linked to a program already verified in this run (same code and maps).
    SameProgram,
}

/// Runs one object through parse → link → verify. `seen` holds the programs already verified:
/// most mutations leave the code alone, and verifying the same program again finds nothing.
fn run_object(bytes: &[u8], name: &str, seen: &mut HashSet<u64>) -> Result<Outcome, String> {
    if let Err(e) = LambdaImage::parse(bytes, name) {
        return nonempty("parse", e.to_string(), Outcome::ParseError);
    }
    let linked = match link_xdp(bytes, name, &LambdaParams::default()) {
        Ok((_, linked)) => linked,
        Err(e) => return nonempty("link_xdp", e.to_string(), Outcome::LinkError),
    };
    let input = verifier_input(&linked);
    let mut hasher = DefaultHasher::new();
    input.insns.hash(&mut hasher);
    format!("{:?}", input.maps).hash(&mut hasher);
    if !seen.insert(hasher.finish()) {
        return Ok(Outcome::SameProgram);
    }
    match verify(&input, &Options::default()) {
        Ok(_) => Ok(Outcome::Accepted),
        Err(rejection) if rejection.errors.is_empty() => {
            Err("verify: a rejection with no errors".to_owned())
        }
        Err(rejection) => nonempty("verify", rejection.to_string(), Outcome::Rejected),
    }
}

fn nonempty(stage: &str, message: String, outcome: Outcome) -> Result<Outcome, String> {
    if message.trim().is_empty() {
        Err(format!("{stage}: an error with an empty message"))
    } else {
        Ok(outcome)
    }
}

fn lambdas_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/lambdas")
}

fn objects() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(lambdas_dir())
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "o"))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Saves a failing input where `cargo fuzz run elf <file>` can replay it.
fn save(name: &str, index: u64, bytes: &[u8]) -> String {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("malformed-input");
    let path = dir.join(format!("{name}-{index}.o"));
    match std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, bytes)) {
        Ok(()) => path.display().to_string(),
        Err(e) => format!("(not saved: {e})"),
    }
}

/// What the object inputs gave so far.
#[derive(Default)]
struct Tally {
    failures: Failures,
    /// Programs already verified (see [`run_object`]).
    seen: HashSet<u64>,
    outcomes: std::collections::BTreeMap<Outcome, u64>,
    /// The slowest input and what it was: a hang-in-waiting shows here first.
    slowest: (Duration, String),
    count: u64,
}

impl Tally {
    /// Runs one input; false when it failed (panicked or gave an empty message).
    fn check(&mut self, bytes: &[u8], object: &Object, label: String) -> bool {
        let t = Instant::now();
        let result = guarded(|| run_object(bytes, &object.name, &mut self.seen)).and_then(|r| r);
        let took = t.elapsed();
        if took > self.slowest.0 {
            self.slowest = (took, label.clone());
        }
        self.count += 1;
        match result {
            Ok(outcome) => {
                *self.outcomes.entry(outcome).or_default() += 1;
                true
            }
            Err(message) => {
                self.failures.push(format!("{label}\n  {message}"));
                false
            }
        }
    }
}

#[test]
fn mutated_objects() {
    let paths = objects();
    if paths.is_empty() {
        let reason = format!(
            "no sample objects in {} (run `cargo xtask build-ebpf`)",
            lambdas_dir().display()
        );
        assert!(!in_ci(), "{reason}");
        println!("skipped: {reason}");
        return;
    }
    let objects: Vec<Object> = paths
        .iter()
        .map(|p| Object::read(p))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{e}"));
    let seed = seed();
    let started = Instant::now();
    let mut tally = Tally::default();

    // The originals first: their programs enter the cache of verified programs, so mutations
    // that leave the code alone cost no verification.
    for object in &objects {
        let label = format!("{} (unmodified)", object.name);
        tally.check(&object.bytes, object, label);
    }

    // Truncation at every boundary of every object: deterministic, no generator involved.
    if env_number("MALFORMED_INDEX").is_none() {
        for object in &objects {
            for &len in &object.boundaries {
                let label = format!("{}: truncated to {len:#x} bytes", object.name);
                tally.check(&object.bytes[..len], object, label);
            }
        }
    }

    // Random mutations, one to three stacked, round-robin over the objects.
    for index in indices(OBJECT_MUTATIONS) {
        let object = &objects[(index % objects.len() as u64) as usize];
        let mut rng = Rng::for_input(seed, 1, index);
        let mut bytes = object.bytes.clone();
        let mut done = Vec::new();
        let stacked = if rng.chance(3) { 1 + rng.below(3) } else { 1 };
        for _ in 0..stacked {
            if let Some(m) = mutation(&mut rng, object) {
                m.apply(&mut bytes);
                done.push(m.to_string());
            }
        }
        let label = format!(
            "seed {seed:#x}, index {index}: {} with {}",
            object.name,
            done.join(", then ")
        );
        if !tally.check(&bytes, object, label)
            && let Some(last) = tally.failures.0.last_mut()
        {
            last.push_str(&format!("\n  input: {}", save(&object.name, index, &bytes)));
        }
    }

    let Tally {
        failures,
        seen: _,
        outcomes,
        slowest,
        count,
    } = tally;
    println!(
        "malformed objects: {count} inputs from {} objects (section header table at {:#x} in {}), \
         seed {seed:#x}, {:.1} s; slowest {:.1} ms ({})",
        objects.len(),
        objects[0].shoff,
        objects[0].name,
        started.elapsed().as_secs_f64(),
        slowest.0.as_secs_f64() * 1e3,
        slowest.1
    );
    for (outcome, n) in &outcomes {
        println!("  {outcome:?}: {n}");
    }
    println!("  panics or empty messages: {}", failures.0.len());
    failures.assert_none("malformed objects");
}

// ---------------------------------------------------------------------------------------------
// Programs into the verifier

/// Opcodes the verifier accepts (so that random programs get past the shape checks), plus
/// atomics and sign-extending forms; one time in ten the opcode is any byte.
const OPCODES: &[u8] = &[
    0x04, 0x07, 0x0c, 0x0f, 0x14, 0x17, 0x1c, 0x1f, 0x24, 0x27, 0x2c, 0x2f, 0x34, 0x37, 0x3c, 0x3f,
    0x44, 0x47, 0x4c, 0x4f, 0x54, 0x57, 0x5c, 0x5f, 0x64, 0x67, 0x6c, 0x6f, 0x74, 0x77, 0x7c, 0x7f,
    0x84, 0x87, 0x94, 0x97, 0x9c, 0x9f, 0xa4, 0xa7, 0xac, 0xaf, 0xb4, 0xb7, 0xbc, 0xbf, 0xc4, 0xc7,
    0xcc, 0xcf, 0xd4, 0xdc, 0xd7, 0x05, 0x06, 0x15, 0x16, 0x1d, 0x1e, 0x25, 0x2d, 0x35, 0x3d, 0x45,
    0x4d, 0x55, 0x5d, 0x65, 0x6d, 0x75, 0x7d, 0xa5, 0xad, 0xb5, 0xbd, 0xc5, 0xcd, 0xd5, 0xdd, 0x85,
    0x8d, 0x95, 0x18, 0x61, 0x69, 0x71, 0x79, 0x81, 0x89, 0x91, 0x62, 0x6a, 0x72, 0x7a, 0x63, 0x6b,
    0x73, 0x7b, 0xc3, 0xdb,
];

/// Immediates and offsets near the edges: zero, ±1, sizes of things, sign boundaries.
fn interesting_imm(rng: &mut Rng) -> i32 {
    match rng.below(6) {
        0 => rng.pick(&[0, 1, -1, 2, 4, 8, 14, 16, 32, 64, 512, -512]),
        1 => rng.pick(&[i32::MIN, i32::MAX, 0x7fff, -0x8000, 0xffff, 1 << 16]),
        2 => rng.below(8) as i32 - 4,
        _ => rng.next() as i32,
    }
}

/// A register: mostly r0–r9, sometimes r10 (read-only) or any 4-bit value.
fn register(rng: &mut Rng) -> u8 {
    match rng.below(40) {
        0 => rng.below(16) as u8,
        1 => 10,
        _ => rng.below(10) as u8,
    }
}

/// A jump distance that mostly lands inside a program of `len` slots.
fn jump(rng: &mut Rng, len: usize) -> i16 {
    if rng.chance(10) {
        rng.next() as i16
    } else {
        (rng.below(len as u64 + 2) as i64 - 2).clamp(-32768, 32767) as i16
    }
}

/// A memory displacement: small, in the stack frame, or anything.
fn displacement(rng: &mut Rng) -> i16 {
    match rng.below(4) {
        0 => -(8 * (1 + rng.below(64) as i16)),
        1 => rng.below(64) as i16,
        2 => rng.pick(&[-512, -520, -1, 0, 4, 8, 16]),
        _ => rng.next() as i16,
    }
}

/// Helpers the verifier knows for XDP, and a few it does not.
const HELPERS: &[i32] = &[
    1, 2, 3, 5, 6, 7, 8, 12, 23, 28, 44, 51, 54, 65, 130, 131, 181, 0, 999,
];

/// One random instruction for a program of `len` slots. Nine times in ten its fields are
/// consistent with its opcode (reserved fields zero), so the program gets past the shape checks
/// and into the analysis; otherwise anything goes.
fn random_insn(rng: &mut Rng, len: usize) -> Insn {
    if rng.chance(10) {
        let opcode = if rng.chance(2) {
            rng.next() as u8
        } else {
            rng.pick(OPCODES)
        };
        let (dst, src) = (rng.below(16) as u8, rng.below(16) as u8);
        return Insn::new(opcode, dst, src, rng.next() as i16, interesting_imm(rng));
    }
    let (dst, src) = (register(rng), register(rng));
    match rng.below(12) {
        0..=3 => {
            let class = rng.pick(&[op::CLASS_ALU, op::CLASS_ALU64]);
            let operation = rng.pick(&[
                op::ALU_ADD,
                op::ALU_SUB,
                op::ALU_MUL,
                op::ALU_DIV,
                op::ALU_OR,
                op::ALU_AND,
                op::ALU_LSH,
                op::ALU_RSH,
                op::ALU_MOD,
                op::ALU_XOR,
                op::ALU_MOV,
                op::ALU_ARSH,
            ]);
            if rng.chance(2) {
                Insn::new(
                    class | operation | op::SRC_K,
                    dst,
                    0,
                    0,
                    interesting_imm(rng),
                )
            } else {
                Insn::new(class | operation | op::SRC_X, dst, src, 0, 0)
            }
        }
        4 => match rng.below(3) {
            0 => Insn::new(op::CLASS_ALU64 | op::ALU_NEG, dst, 0, 0, 0),
            1 => Insn::new(
                op::CLASS_ALU | op::ALU_END,
                dst,
                0,
                0,
                rng.pick(&[16, 32, 64]),
            ),
            // Signed division and sign-extending moves: `off` selects them.
            _ => Insn::new(
                op::CLASS_ALU64 | rng.pick(&[op::ALU_DIV, op::ALU_MOD, op::ALU_MOV]) | op::SRC_X,
                dst,
                src,
                rng.pick(&[1, 8, 16, 32]),
                0,
            ),
        },
        5 | 6 => {
            let class = rng.pick(&[op::CLASS_JMP, op::CLASS_JMP32]);
            let operation = rng.pick(&[
                op::JMP_JEQ,
                op::JMP_JGT,
                op::JMP_JGE,
                op::JMP_JSET,
                op::JMP_JNE,
                op::JMP_JSGT,
                op::JMP_JSGE,
                op::JMP_JLT,
                op::JMP_JLE,
                op::JMP_JSLT,
                op::JMP_JSLE,
            ]);
            let off = jump(rng, len);
            if rng.chance(2) {
                Insn::new(
                    class | operation | op::SRC_K,
                    dst,
                    0,
                    off,
                    interesting_imm(rng),
                )
            } else {
                Insn::new(class | operation | op::SRC_X, dst, src, off, 0)
            }
        }
        7 => Insn::new(op::CLASS_JMP | op::JMP_JA, 0, 0, jump(rng, len), 0),
        8 => {
            let size = rng.pick(&[op::SIZE_B, op::SIZE_H, op::SIZE_W, op::SIZE_DW]);
            let mode = if rng.chance(5) {
                op::MODE_MEMSX
            } else {
                op::MODE_MEM
            };
            Insn::new(op::CLASS_LDX | size | mode, dst, src, displacement(rng), 0)
        }
        9 => {
            let size = rng.pick(&[op::SIZE_B, op::SIZE_H, op::SIZE_W, op::SIZE_DW]);
            match rng.below(3) {
                0 => Insn::new(
                    op::CLASS_ST | size | op::MODE_MEM,
                    dst,
                    0,
                    displacement(rng),
                    interesting_imm(rng),
                ),
                1 => Insn::new(
                    op::CLASS_STX | size | op::MODE_MEM,
                    dst,
                    src,
                    displacement(rng),
                    0,
                ),
                _ => Insn::new(
                    op::CLASS_STX | rng.pick(&[op::SIZE_W, op::SIZE_DW]) | op::MODE_ATOMIC,
                    dst,
                    src,
                    displacement(rng),
                    rng.pick(&[
                        op::ATOMIC_ADD,
                        op::ATOMIC_OR | op::ATOMIC_FETCH,
                        op::ATOMIC_XCHG,
                        op::ATOMIC_CMPXCHG,
                    ]),
                ),
            }
        }
        10 => {
            if rng.chance(4) {
                Insn::new(op::CALL, 0, op::CALL_LOCAL, 0, i32::from(jump(rng, len)))
            } else {
                Insn::new(op::CALL, 0, op::CALL_HELPER, 0, rng.pick(HELPERS))
            }
        }
        _ => Insn::new(op::EXIT, 0, 0, 0, 0),
    }
}

/// A map index: mostly one that exists, sometimes one past the end.
fn map_index(rng: &mut Rng, maps: usize) -> i32 {
    if maps == 0 || rng.chance(8) {
        maps as i32
    } else {
        rng.index(maps) as i32
    }
}

/// `lddw` of a map (`imm` = map index) or of a constant: two slots.
fn random_lddw(rng: &mut Rng, maps: usize) -> [Insn; 2] {
    let dst = register(rng);
    match rng.below(3) {
        0 => [
            Insn::new(op::LDDW, dst, op::PSEUDO_MAP_FD, 0, map_index(rng, maps)),
            Insn::new(0, 0, 0, 0, 0),
        ],
        1 => [
            Insn::new(op::LDDW, dst, op::PSEUDO_MAP_VALUE, 0, map_index(rng, maps)),
            Insn::new(0, 0, 0, 0, rng.pick(&[0, 4, 8, 63, 64])),
        ],
        _ => [
            Insn::new(op::LDDW, dst, 0, 0, interesting_imm(rng)),
            Insn::new(0, 0, 0, 0, interesting_imm(rng)),
        ],
    }
}

fn random_maps(rng: &mut Rng) -> Vec<MapInfo> {
    let kinds = [
        (map_type::HASH, 4, 8, 16),
        (map_type::ARRAY, 4, 64, 1),
        (map_type::PERCPU_ARRAY, 4, 16, 4),
        (map_type::PROG_ARRAY, 4, 4, 8),
        (map_type::RINGBUF, 0, 0, 4096),
        (map_type::DEVMAP, 4, 4, 4),
    ];
    (0..rng.below(3))
        .map(|i| {
            let (map_type, key_size, value_size, max_entries) = rng.pick(&kinds);
            MapInfo {
                name: format!("m{i}"),
                map_type,
                key_size,
                value_size,
                max_entries,
                flags: 0,
                read_only: rng.chance(5),
            }
        })
        .collect()
}

/// Verifies `input` with panics caught; Err says what went wrong.
fn run_program(input: &ProgramInput, options: &Options) -> Result<bool, String> {
    match guarded(|| {
        verify(input, options)
            .map(|_| ())
            .map_err(|r| r.to_string())
    })? {
        Ok(()) => Ok(true),
        Err(text) if text.trim().is_empty() => Err("a rejection with an empty message".into()),
        Err(_) => Ok(false),
    }
}

fn listing(insns: &[Insn]) -> String {
    insns
        .iter()
        .enumerate()
        .map(|(i, insn)| format!("    {i:>3}: {insn:?}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn random_programs() {
    let seed = seed();
    let started = Instant::now();
    let mut failures = Failures::default();
    let (mut accepted, mut rejected) = (0u64, 0u64);
    for index in indices(RANDOM_PROGRAMS) {
        let mut rng = Rng::for_input(seed, 2, index);
        let len = 1 + rng.index(32);
        let mut insns = Vec::new();
        // Half the programs first give every register a constant, so that they get past
        // "read before written" and into the analysis and the bound.
        if rng.chance(2) {
            for reg in [0, 2, 3, 4, 5, 6, 7, 8, 9] {
                insns.push(Insn::new(
                    op::CLASS_ALU64 | op::ALU_MOV | op::SRC_K,
                    reg,
                    0,
                    0,
                    interesting_imm(&mut rng),
                ));
            }
        }
        let maps = random_maps(&mut rng);
        let body = insns.len() + len;
        while insns.len() < body {
            if rng.chance(12) {
                insns.extend(random_lddw(&mut rng, maps.len()));
            } else {
                insns.push(random_insn(&mut rng, body));
            }
        }
        // Mostly end in `exit`, or nothing could be accepted.
        if !rng.chance(5) {
            insns.push(Insn::new(op::EXIT, 0, 0, 0, 0));
        }
        let size = rng.pick(&[0, 1, 8, 64, 4096]);
        for kind in [ProgramKind::Xdp, ProgramKind::RawMemory { size }] {
            let mut input = ProgramInput::new("random", kind, insns.clone());
            input.maps = maps.clone();
            match run_program(&input, &Options::default()) {
                Ok(true) => accepted += 1,
                Ok(false) => rejected += 1,
                Err(message) => failures.push(format!(
                    "seed {seed:#x}, index {index}, {kind:?}, maps {maps:?}: {message}\n{}",
                    listing(&insns)
                )),
            }
        }
    }
    println!(
        "random programs: {} verified (seed {seed:#x}), {accepted} accepted, {rejected} \
         rejected, {} panics or empty messages, {:.1} s",
        accepted + rejected + failures.0.len() as u64,
        failures.0.len(),
        started.elapsed().as_secs_f64()
    );
    failures.assert_none("random programs");
}

/// A case of `verifier/tests/cases/` (read by `verifier::case_file`): its program, kind and maps.
struct CaseProgram {
    name: String,
    input: ProgramInput,
}

fn case_programs() -> Vec<CaseProgram> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../verifier/tests/cases");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    paths.sort();
    let mut cases = Vec::new();
    for path in paths {
        let name = path
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let Ok(case) = verifier::case_file::CaseFile::parse(&name, &text) else {
            continue;
        };
        // Cases the assembler refuses test the assembler, not the verifier.
        let Ok(input) = case.input() else {
            continue;
        };
        cases.push(CaseProgram { name, input });
    }
    cases
}

/// One change to a program: a field of one instruction, or the instruction list itself.
fn mutate_program(rng: &mut Rng, insns: &mut Vec<Insn>) -> String {
    let len = insns.len();
    if len == 0 {
        insns.push(random_insn(rng, 1));
        return "added an instruction to an empty program".into();
    }
    let i = rng.index(len);
    match rng.below(10) {
        0 => {
            insns[i].opcode = if rng.chance(3) {
                rng.next() as u8
            } else {
                rng.pick(OPCODES)
            };
            format!("opcode of {i} = {:#04x}", insns[i].opcode)
        }
        1 => {
            insns[i].dst = rng.below(16) as u8;
            format!("dst of {i} = r{}", insns[i].dst)
        }
        2 => {
            insns[i].src = rng.below(16) as u8;
            format!("src of {i} = {}", insns[i].src)
        }
        3 => {
            let delta = rng.pick(&[-8, -4, -2, -1, 1, 2, 4, 8, 256, -256]);
            insns[i].off = insns[i].off.wrapping_add(delta);
            format!("off of {i} += {delta}")
        }
        4 => {
            insns[i].imm = interesting_imm(rng);
            format!("imm of {i} = {}", insns[i].imm)
        }
        5 => {
            insns.insert(i, random_insn(rng, len));
            format!("inserted {:?} at {i}", insns[i])
        }
        6 => {
            insns.remove(i);
            format!("removed {i}")
        }
        7 => {
            let j = rng.index(len);
            insns.swap(i, j);
            format!("swapped {i} and {j}")
        }
        8 => {
            insns.insert(i, insns[i]);
            format!("duplicated {i}")
        }
        _ => {
            insns.truncate(i);
            format!("truncated to {i}")
        }
    }
}

#[test]
fn mutated_cases() {
    let cases = case_programs();
    assert!(
        !cases.is_empty(),
        "no case programs in verifier/tests/cases"
    );
    let seed = seed();
    let started = Instant::now();
    let mut failures = Failures::default();
    let (mut accepted, mut rejected) = (0u64, 0u64);
    for index in indices(CASE_MUTATIONS) {
        let mut rng = Rng::for_input(seed, 3, index);
        let case = &cases[rng.index(cases.len())];
        let mut input = case.input.clone();
        let done: Vec<String> = (0..1 + rng.below(3))
            .map(|_| mutate_program(&mut rng, &mut input.insns))
            .collect();
        // Sometimes the other program kind: the same code against another context.
        if rng.chance(5) {
            input.kind = match input.kind {
                ProgramKind::Xdp => ProgramKind::RawMemory {
                    size: rng.pick(&[0, 8, 64]),
                },
                ProgramKind::RawMemory { .. } => ProgramKind::Xdp,
            };
        }
        let mut options = Options::default();
        if rng.chance(5) {
            options.max_insns = rng.pick(&[1, 16, 1000]);
            options.nfp_insn_budget = rng.pick(&[0, 1, 8]);
        }
        match run_program(&input, &options) {
            Ok(true) => accepted += 1,
            Ok(false) => rejected += 1,
            Err(message) => failures.push(format!(
                "seed {seed:#x}, index {index}: case {} with {} ({:?}): {message}\n{}",
                case.name,
                done.join(", then "),
                input.kind,
                listing(&input.insns)
            )),
        }
    }
    println!(
        "mutated cases: {} programs from {} cases (seed {seed:#x}), {accepted} accepted, \
         {rejected} rejected, {} panics or empty messages, {:.1} s",
        accepted + rejected + failures.0.len() as u64,
        cases.len(),
        failures.0.len(),
        started.elapsed().as_secs_f64()
    );
    failures.assert_none("mutated cases");
}
