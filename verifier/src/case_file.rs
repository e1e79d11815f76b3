//! The verifier's case-file format (`verifier/tests/cases/*.txt`): one program, the maps it
//! may use and the expected outcome. The verifier's own tests run the corpus; the
//! soundness test against the kernel and `cargo xtask bench verifier` reuse it, all through
//! this one parser.
//!
//! A case file is a header, a line `--`, and uBPF assembly (`#` comments allowed):
//!
//! ```text
//! # what the case shows
//! kind: xdp                       (or `raw <bytes>`; default xdp)
//! map: counters hash 4 8 16       (name, type, key size, value size, max entries, optional `ro`)
//! profiles: kernel vm             (default: all)
//! max-insns: 100                  (optional limits, as in `Options`)
//! nfp-budget: 64
//! expect: accept insns=12 stack=8 (both optional)
//! expect: reject 7 may be NULL    (instruction index, then a substring of the message)
//! eligible: kernel vm             (optional: exactly these backends eligible)
//! --
//! mov %r0, 2
//! exit
//! ```

use crate::{Backend, MapInfo, Options, ProgramInput, ProgramKind, map_type};

/// What a case expects of the verifier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Accepted, optionally with this exact bound and stack.
    Accept {
        insns: Option<u64>,
        stack: Option<u32>,
    },
    /// Refused at instruction `insn` with a message containing `message`.
    Reject { insn: usize, message: String },
}

/// Why a case file could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("case {case}: {detail}")]
pub struct CaseFileError {
    pub case: String,
    pub detail: String,
}

/// One parsed case file; [`CaseFile::input`] assembles its program.
#[derive(Clone, Debug)]
pub struct CaseFile {
    pub name: String,
    pub kind: ProgramKind,
    pub maps: Vec<MapInfo>,
    /// The default options with the header's profiles and limits.
    pub options: Options,
    pub expect: Expect,
    /// `eligible:`: exactly these backends must accept it.
    pub eligible: Option<Vec<Backend>>,
    /// The assembly after the `--` line.
    pub asm: String,
}

/// The map type of a `map:` line's type word.
pub fn map_type_named(name: &str) -> Option<u32> {
    Some(match name {
        "hash" => map_type::HASH,
        "array" => map_type::ARRAY,
        "prog_array" => map_type::PROG_ARRAY,
        "perf" => map_type::PERF_EVENT_ARRAY,
        "percpu_hash" => map_type::PERCPU_HASH,
        "percpu_array" => map_type::PERCPU_ARRAY,
        "lru_hash" => map_type::LRU_HASH,
        "devmap" => map_type::DEVMAP,
        "queue" => map_type::QUEUE,
        "ringbuf" => map_type::RINGBUF,
        _ => return None,
    })
}

fn backend(name: &str) -> Result<Backend, String> {
    Backend::ALL
        .into_iter()
        .find(|b| b.name() == name)
        .ok_or(format!("unknown backend {name}"))
}

impl CaseFile {
    /// Parses the text of case `name` (header only; the assembly is kept as text).
    pub fn parse(name: &str, text: &str) -> Result<CaseFile, CaseFileError> {
        parse(name, text).map_err(|detail| CaseFileError {
            case: name.to_owned(),
            detail,
        })
    }

    /// The program as the verifier takes it: the assembly assembled, with the case's maps.
    pub fn input(&self) -> Result<ProgramInput, CaseFileError> {
        let insns = ebpf_isa::asm::assemble(&self.asm).map_err(|e| CaseFileError {
            case: self.name.clone(),
            detail: format!("assembly: {e}"),
        })?;
        let mut input = ProgramInput::new(self.name.clone(), self.kind, insns);
        input.maps = self.maps.clone();
        Ok(input)
    }

    /// Whether the header sets its own profiles or limits (then it measures those, not the
    /// common path).
    pub fn has_own_options(&self) -> bool {
        self.options != Options::default()
    }
}

fn parse(name: &str, text: &str) -> Result<CaseFile, String> {
    let (header, asm) = text
        .split_once("\n--\n")
        .ok_or("no `--` line between header and assembly")?;
    let mut kind = ProgramKind::Xdp;
    let mut maps = Vec::new();
    let mut options = Options::default();
    let mut expect = None;
    let mut eligible = None;
    for line in header.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line
            .split_once(':')
            .ok_or(format!("bad header line {line}"))?;
        let words: Vec<&str> = value.split_whitespace().collect();
        let num = |w: Option<&&str>| -> Result<u32, String> {
            w.ok_or("missing number")?
                .parse()
                .map_err(|e| format!("{e}"))
        };
        match key.trim() {
            "kind" => {
                kind = match words.first().copied() {
                    Some("xdp") => ProgramKind::Xdp,
                    Some("raw") => ProgramKind::RawMemory {
                        size: num(words.get(1))?,
                    },
                    other => return Err(format!("unknown kind {other:?}")),
                }
            }
            "map" => {
                let type_word = words.get(1).ok_or("map type")?;
                maps.push(MapInfo {
                    name: words.first().ok_or("map name")?.to_string(),
                    map_type: map_type_named(type_word)
                        .ok_or(format!("unknown map type {type_word}"))?,
                    key_size: num(words.get(2))?,
                    value_size: num(words.get(3))?,
                    max_entries: num(words.get(4))?,
                    flags: 0,
                    read_only: words.get(5) == Some(&"ro"),
                });
            }
            "profiles" => {
                options.profiles = words.iter().map(|w| backend(w)).collect::<Result<_, _>>()?;
            }
            "eligible" => {
                eligible = Some(words.iter().map(|w| backend(w)).collect::<Result<_, _>>()?);
            }
            "max-insns" => options.max_insns = u64::from(num(words.first())?),
            "nfp-budget" => options.nfp_insn_budget = num(words.first())? as usize,
            "expect" => {
                expect = Some(match words.first().copied() {
                    Some("accept") => {
                        let mut insns = None;
                        let mut stack = None;
                        for w in &words[1..] {
                            match w.split_once('=') {
                                Some(("insns", v)) => insns = v.parse().ok(),
                                Some(("stack", v)) => stack = v.parse().ok(),
                                _ => return Err(format!("bad accept option {w}")),
                            }
                        }
                        Expect::Accept { insns, stack }
                    }
                    Some("reject") => {
                        let insn = num(words.get(1))? as usize;
                        let message = value
                            .trim()
                            .splitn(3, ' ')
                            .nth(2)
                            .ok_or("reject needs a message")?
                            .trim()
                            .to_string();
                        Expect::Reject { insn, message }
                    }
                    other => return Err(format!("bad expectation {other:?}")),
                })
            }
            other => return Err(format!("unknown header key {other}")),
        }
    }
    Ok(CaseFile {
        name: name.to_owned(),
        kind,
        maps,
        options,
        expect: expect.ok_or("no expect: line")?,
        eligible,
        asm: asm.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_case_parses_and_bad_headers_are_named() {
        let case = CaseFile::parse(
            "c",
            "kind: xdp\nmap: m hash 4 8 16 ro\nexpect: reject 3 may be NULL\n--\nmov %r0, 2\nexit\n",
        )
        .unwrap();
        assert_eq!(case.maps[0].map_type, map_type::HASH);
        assert!(case.maps[0].read_only);
        assert_eq!(
            case.expect,
            Expect::Reject {
                insn: 3,
                message: "may be NULL".into()
            }
        );
        assert!(!case.has_own_options());
        assert_eq!(case.input().unwrap().insns.len(), 2);
        let err =
            CaseFile::parse("d", "map: m tree 4 8 1\nexpect: accept\n--\nexit\n").unwrap_err();
        assert_eq!(err.to_string(), "case d: unknown map type tree");
        assert!(CaseFile::parse("e", "expect: accept\nexit\n").is_err());
    }
}
