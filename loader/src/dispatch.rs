//! match+lambda: the dispatcher that puts many lambdas behind one interface.
//!
//! One XDP program per interface parses the packet once (Ethernet, IPv4 with options or IPv6,
//! UDP, the λ header), looks up `(UDP destination port, lambda id)` in the [`MATCH_MAP`] hash and
//! tail-calls the lambda's slot in the [`SLOTS_MAP`] program array. A rule may instead match
//! every lambda id on a port ([`MatchRule::any_id`]); the exact rule wins. A UDP datagram that is
//! not a λ request goes to the port's any-id rule when there is one (as it would reach a lambda
//! attached alone, e.g. a memcached reply), and everything else is `XDP_PASS`ed.
//!
//! The program is generated here from assembly rather than built from Rust: it is fixed
//! infrastructure, a few dozen instructions, and the loader must be able to install it without
//! a separately built object. Our verifier and the kernel's both check it (see the tests and
//! `kernel::deploy`). This module is pure (no kernel); [`crate::kernel`] installs it.

use std::fmt;
use std::str::FromStr;

use ebpf_isa::Insn;
use lambda_ebpf::wire::{MAGIC, VERSION};

use crate::maps::{MapSpec, MapType};

/// The match table: [`MatchKey`] → slot (`u32`, little-endian) in [`SLOTS_MAP`].
pub const MATCH_MAP: &str = "LNIC_MATCH";
/// The program array the dispatcher tail-calls into.
pub const SLOTS_MAP: &str = "LNIC_SLOTS";
/// The dispatcher's own per-CPU counters, indexed by [`DispatchCounter`].
pub const DSTATS_MAP: &str = "LNIC_DSTATS";
/// Lambdas one interface can hold: the size of the match table and the program array.
pub const MAX_LAMBDAS: u32 = 4096;
/// Map index of each map in the generated program's `lddw map_fd` references.
const MATCH_INDEX: usize = 0;
const SLOTS_INDEX: usize = 1;
const DSTATS_INDEX: usize = 2;

/// The dispatcher's counters, in slot order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DispatchCounter {
    /// A rule matched and the slot was tail-called.
    Dispatched = 0,
    /// A UDP datagram no rule matched (passed to the host stack).
    NoRule = 1,
    /// A rule matched but its slot held no program (passed). Deploy fills the slot before the
    /// rule, so this stays 0 unless someone edits the maps by hand.
    EmptySlot = 2,
}

impl DispatchCounter {
    pub const ALL: [DispatchCounter; 3] = [
        DispatchCounter::Dispatched,
        DispatchCounter::NoRule,
        DispatchCounter::EmptySlot,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DispatchCounter::Dispatched => "dispatched",
            DispatchCounter::NoRule => "no_rule",
            DispatchCounter::EmptySlot => "empty_slot",
        }
    }
}

/// The three maps, in the order the program's map indices use.
pub fn map_specs() -> [MapSpec; 3] {
    [
        MapSpec {
            name: MATCH_MAP.to_owned(),
            map_type: MapType::Hash,
            key_size: MatchKey::SIZE as u32,
            value_size: 4,
            max_entries: MAX_LAMBDAS,
            flags: 0,
        },
        MapSpec {
            name: SLOTS_MAP.to_owned(),
            map_type: MapType::Other(verifier::map_type::PROG_ARRAY),
            key_size: 4,
            value_size: 4,
            max_entries: MAX_LAMBDAS,
            flags: 0,
        },
        MapSpec {
            name: DSTATS_MAP.to_owned(),
            map_type: MapType::PerCpuArray,
            key_size: 4,
            value_size: 8,
            max_entries: DispatchCounter::ALL.len() as u32,
            flags: 0,
        },
    ]
}

/// A match rule: the UDP destination port, and one lambda id or any.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct MatchRule {
    pub port: u16,
    /// `None`: every lambda id on the port (and the port's non-λ datagrams).
    pub lambda_id: Option<u32>,
}

impl MatchRule {
    pub fn exact(port: u16, lambda_id: u32) -> MatchRule {
        MatchRule {
            port,
            lambda_id: Some(lambda_id),
        }
    }

    pub fn any_id(port: u16) -> MatchRule {
        MatchRule {
            port,
            lambda_id: None,
        }
    }

    /// The key of this rule in [`MATCH_MAP`].
    pub fn key(&self) -> MatchKey {
        MatchKey::new(self.port, self.lambda_id)
    }

    /// The attach-time parameters a lambda behind this rule is loaded with: it then accepts
    /// exactly what the dispatcher sends it, and would do the same attached alone.
    pub fn params(&self) -> crate::LambdaParams {
        crate::LambdaParams {
            port: self.port,
            lambda_id: self.lambda_id,
        }
    }

    /// Which rule the dispatcher picks for a datagram to `port` with λ lambda id `lambda_id`
    /// (`None`: not a λ request), among `rules`: the exact one, else the port's any-id one.
    /// The VM backend routes with this, so both backends follow one definition.
    pub fn select<'a, T>(
        rules: impl IntoIterator<Item = (&'a MatchRule, T)> + Clone,
        port: u16,
        lambda_id: Option<u32>,
    ) -> Option<T> {
        if let Some(id) = lambda_id
            && let Some((_, t)) = rules
                .clone()
                .into_iter()
                .find(|(r, _)| r.port == port && r.lambda_id == Some(id))
        {
            return Some(t);
        }
        rules
            .into_iter()
            .find(|(r, _)| r.port == port && r.lambda_id.is_none())
            .map(|(_, t)| t)
    }
}

impl fmt::Display for MatchRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.lambda_id {
            Some(id) => write!(f, "port={},id={id}", self.port),
            None => write!(f, "port={},id=any", self.port),
        }
    }
}

/// Why a `--match` text is not a rule.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("`{0}` is not KEY=VALUE (expected e.g. port=9000,id=7)")]
    NotKeyValue(String),
    #[error("unknown match field `{0}` (expected port and optionally id)")]
    UnknownField(String),
    #[error("match field `{0}` given twice")]
    Repeated(String),
    #[error("port `{0}` is not a UDP port (1-65535)")]
    BadPort(String),
    #[error("lambda id `{0}` is not a number from 0 to 4294967295 (or `any`)")]
    BadId(String),
    #[error("a match rule needs port=PORT")]
    NoPort,
}

impl FromStr for MatchRule {
    type Err = RuleError;

    /// `port=9000`, `port=9000,id=7` or `port=9000,id=any`.
    fn from_str(text: &str) -> Result<MatchRule, RuleError> {
        let mut port = None;
        let mut lambda_id = None;
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| RuleError::NotKeyValue(part.to_owned()))?;
            match key.trim() {
                "port" => {
                    if port.is_some() {
                        return Err(RuleError::Repeated("port".into()));
                    }
                    let p = value
                        .trim()
                        .parse::<u16>()
                        .ok()
                        .filter(|&p| p != 0)
                        .ok_or_else(|| RuleError::BadPort(value.to_owned()))?;
                    port = Some(p);
                }
                "id" => {
                    if lambda_id.is_some() {
                        return Err(RuleError::Repeated("id".into()));
                    }
                    let v = value.trim();
                    lambda_id = Some(if v == "any" || v == "*" {
                        None
                    } else {
                        Some(
                            v.parse::<u32>()
                                .map_err(|_| RuleError::BadId(value.to_owned()))?,
                        )
                    });
                }
                other => return Err(RuleError::UnknownField(other.to_owned())),
            }
        }
        Ok(MatchRule {
            port: port.ok_or(RuleError::NoPort)?,
            lambda_id: lambda_id.flatten(),
        })
    }
}

/// A [`MATCH_MAP`] key as the dispatcher builds it on its stack: the port's and the lambda
/// id's wire (big-endian) bytes, copied from the packet unchanged, and a kind byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MatchKey([u8; MatchKey::SIZE]);

impl MatchKey {
    pub const SIZE: usize = 8;
    const KIND_EXACT: u8 = 0;
    const KIND_ANY: u8 = 1;

    pub fn new(port: u16, lambda_id: Option<u32>) -> MatchKey {
        let mut key = [0u8; Self::SIZE];
        key[0..2].copy_from_slice(&port.to_be_bytes());
        key[2] = if lambda_id.is_some() {
            Self::KIND_EXACT
        } else {
            Self::KIND_ANY
        };
        key[4..8].copy_from_slice(&lambda_id.unwrap_or(0).to_be_bytes());
        MatchKey(key)
    }

    pub fn bytes(&self) -> &[u8; Self::SIZE] {
        &self.0
    }

    /// The rule a key stands for, or `None` for bytes no rule encodes to.
    pub fn rule(bytes: &[u8]) -> Option<MatchRule> {
        let b: [u8; Self::SIZE] = bytes.try_into().ok()?;
        let port = u16::from_be_bytes([b[0], b[1]]);
        let id = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
        let rule = match b[2] {
            Self::KIND_EXACT => MatchRule::exact(port, id),
            Self::KIND_ANY if id == 0 => MatchRule::any_id(port),
            _ => return None,
        };
        (b[3] == 0 && port != 0).then_some(rule)
    }
}

/// The dispatcher in assembly (see [`ebpf_isa::asm`]). Registers: r6 the context (kept for the
/// tail call), r2/r3 packet start/end, r4 the UDP header. The key lives at fp-8, the counter
/// index at fp-12. Loads of multi-byte packet fields keep their wire bytes: the key compares
/// bytes, so no byte swapping is needed.
fn assembly() -> String {
    let count = |label: &str, counter: DispatchCounter| {
        format!(
            "{label}:
    stw [%r10-12], {slot}
    lddw %r1, map_fd {DSTATS_INDEX}
    mov %r2, %r10
    add %r2, -12
    call 1
    jeq %r0, 0, {label}_done
    mov %r1, 1
    lock add [%r0+0], %r1
{label}_done:
",
            slot = counter as u32
        )
    };
    let magic = MAGIC.to_be_bytes();
    format!(
        "    mov %r6, %r1
    ldxw %r2, [%r1+0]
    ldxw %r3, [%r1+4]
    mov %r4, %r2
    add %r4, 14
    jgt %r4, %r3, pass
    # EtherType, loaded little-endian: 0x0008 is IPv4 (08 00), 0xdd86 IPv6 (86 dd).
    ldxh %r5, [%r2+12]
    jeq %r5, 0x0008, ipv4
    jeq %r5, 0xdd86, ipv6
    ja pass
ipv4:
    mov %r4, %r2
    add %r4, 34
    jgt %r4, %r3, pass
    ldxb %r5, [%r2+23]
    jne %r5, 17, pass
    # More-fragments flag and fragment offset (wire bytes 20-21, masked as loaded): a later
    # fragment has no UDP header of its own.
    ldxh %r5, [%r2+20]
    and %r5, 0xff3f
    jne %r5, 0, pass
    ldxb %r5, [%r2+14]
    and %r5, 0x0f
    lsh %r5, 2
    jlt %r5, 20, pass
    mov %r4, %r2
    add %r4, 14
    add %r4, %r5
    ja udp
ipv6:
    mov %r4, %r2
    add %r4, 54
    jgt %r4, %r3, pass
    ldxb %r5, [%r2+20]
    jne %r5, 17, pass
udp:
    mov %r5, %r4
    add %r5, 8
    jgt %r5, %r3, pass
    # Key for the port's any-id rule: port, kind 1, padding, id 0.
    ldxh %r7, [%r4+2]
    stxh [%r10-8], %r7
    stb [%r10-6], 1
    stb [%r10-5], 0
    stw [%r10-4], 0
    mov %r5, %r4
    add %r5, 32
    jgt %r5, %r3, lookup_any
    ldxb %r5, [%r4+8]
    jne %r5, {m0}, lookup_any
    ldxb %r5, [%r4+9]
    jne %r5, {m1}, lookup_any
    ldxb %r5, [%r4+10]
    jne %r5, {version}, lookup_any
    # A λ request: first the exact rule for its lambda id.
    ldxw %r5, [%r4+12]
    stxw [%r10-4], %r5
    stb [%r10-6], 0
    lddw %r1, map_fd {MATCH_INDEX}
    mov %r2, %r10
    add %r2, -8
    call 1
    jne %r0, 0, found
    stb [%r10-6], 1
    stw [%r10-4], 0
lookup_any:
    lddw %r1, map_fd {MATCH_INDEX}
    mov %r2, %r10
    add %r2, -8
    call 1
    jeq %r0, 0, no_rule
found:
    ldxw %r7, [%r0+0]
{dispatched}    mov %r1, %r6
    lddw %r2, map_fd {SLOTS_INDEX}
    mov %r3, %r7
    call 12
    # Only reached when the slot is empty.
{empty}    ja pass
{no_rule}pass:
    mov %r0, 2
    exit
",
        m0 = magic[0],
        m1 = magic[1],
        version = VERSION,
        dispatched = count("count_dispatched", DispatchCounter::Dispatched),
        empty = count("count_empty", DispatchCounter::EmptySlot),
        no_rule = count("no_rule", DispatchCounter::NoRule),
    )
}

/// The dispatcher's instructions; `lddw map_fd N` refers to the N-th map of [`map_specs`].
pub fn program() -> Vec<Insn> {
    ebpf_isa::asm::assemble(&assembly())
        .unwrap_or_else(|e| unreachable!("the dispatcher's own assembly is valid: {e}"))
}

/// The dispatcher as our verifier sees it.
pub fn verifier_input() -> verifier::ProgramInput {
    let maps = map_specs()
        .iter()
        .map(|spec| verifier::MapInfo {
            name: spec.name.clone(),
            map_type: spec.map_type.raw(),
            key_size: spec.key_size,
            value_size: spec.value_size,
            max_entries: spec.max_entries,
            flags: spec.flags,
            read_only: false,
        })
        .collect();
    verifier::ProgramInput {
        name: "lnic_dispatch".into(),
        insns: program(),
        maps,
        kind: verifier::ProgramKind::Xdp,
        lines: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_print_and_round_trip_through_keys() {
        let cases = [
            ("port=9000", MatchRule::any_id(9000)),
            ("port=9000,id=7", MatchRule::exact(9000, 7)),
            (" port = 1 , id = any ", MatchRule::any_id(1)),
            (
                "id=4294967295,port=65535",
                MatchRule::exact(65535, u32::MAX),
            ),
        ];
        for (text, rule) in cases {
            assert_eq!(text.parse::<MatchRule>(), Ok(rule), "{text}");
            assert_eq!(rule.to_string().parse::<MatchRule>(), Ok(rule));
            assert_eq!(MatchKey::rule(rule.key().bytes()), Some(rule));
        }
        assert_eq!(
            MatchRule::exact(9000, 0).key(),
            MatchKey::new(9000, Some(0))
        );
        assert_ne!(
            MatchRule::exact(9000, 0).key(),
            MatchRule::any_id(9000).key()
        );
    }

    #[test]
    fn bad_rules_are_named() {
        let bad = [
            ("", RuleError::NoPort),
            ("id=7", RuleError::NoPort),
            ("port=0", RuleError::BadPort("0".into())),
            ("port=70000", RuleError::BadPort("70000".into())),
            ("port=9000,id=-1", RuleError::BadId("-1".into())),
            ("port=9000,ip=1", RuleError::UnknownField("ip".into())),
            ("port", RuleError::NotKeyValue("port".into())),
            ("port=1,port=2", RuleError::Repeated("port".into())),
        ];
        for (text, err) in bad {
            assert_eq!(text.parse::<MatchRule>(), Err(err), "{text}");
        }
        assert_eq!(MatchKey::rule(&[0; 3]), None);
        let mut key = *MatchRule::any_id(1).key().bytes();
        key[7] = 1;
        assert_eq!(MatchKey::rule(&key), None, "any-id key with an id");
    }

    #[test]
    fn selection_prefers_the_exact_rule() {
        let rules = [
            MatchRule::any_id(9000),
            MatchRule::exact(9000, 7),
            MatchRule::exact(9001, 7),
        ];
        let pick = |port, id| MatchRule::select(rules.iter().zip(0..), port, id);
        assert_eq!(pick(9000, Some(7)), Some(1));
        assert_eq!(pick(9000, Some(8)), Some(0));
        assert_eq!(pick(9000, None), Some(0));
        assert_eq!(pick(9001, Some(7)), Some(2));
        assert_eq!(pick(9001, Some(8)), None);
        assert_eq!(pick(9002, Some(7)), None);
    }

    #[test]
    fn our_verifier_accepts_the_dispatcher_for_the_kernel() {
        let input = verifier_input();
        let options = verifier::Options {
            profiles: vec![verifier::Backend::Kernel],
            ..verifier::Options::default()
        };
        let contract = verifier::verify(&input, &options).unwrap_or_else(|e| panic!("{e}"));
        assert!(contract.eligible.contains(&verifier::Backend::Kernel));
        assert!(
            contract
                .helpers_used
                .iter()
                .any(|(id, _)| *id == verifier::helpers::TAIL_CALL),
            "{:?}",
            contract.helpers_used
        );
        // Straight-line code plus three counter blocks: small and bounded.
        assert!(contract.max_insns_executed < 150, "{contract:?}");
    }
}
