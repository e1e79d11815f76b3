//! The bridge to the `verifier` crate: a linked program as the verifier's input, so every
//! backend can refuse what the verifier rejects before the kernel or the VM sees it.

use thiserror::Error;
use verifier::{Contract, MapInfo, Options, ProgramInput, ProgramKind, Rejection, SourceLine};

use crate::lambda::LambdaParams;
use crate::link::{LinkError, LinkedMapKind, LinkedProgram, link_xdp};

/// Why an object did not pass our verifier.
#[derive(Debug, Error)]
pub enum VerifyError {
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("the λ-NIC verifier rejected `{program}`:\n{rejection}")]
    Rejected {
        program: String,
        rejection: Box<Rejection>,
    },
}

/// The limits a deployment puts on a program's contract (the verifier refuses a program whose
/// contract exceeds them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    /// Largest acceptable bound on instructions executed per run.
    pub max_insns: u64,
    /// Largest acceptable stack over the call chain, in bytes.
    pub max_stack: u32,
    /// Largest acceptable memory of the program's maps, in bytes.
    pub max_map_bytes: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_insns: verifier::DEFAULT_MAX_INSNS,
            max_stack: verifier::MAX_STACK_BYTES,
            max_map_bytes: verifier::DEFAULT_MAX_MAP_BYTES,
        }
    }
}

impl Limits {
    /// Verifier options judging `backend` with these limits, per-CPU maps counted `ncpus` times.
    pub fn options(&self, backend: verifier::Backend, ncpus: u32) -> Options {
        Options {
            profiles: vec![backend],
            max_insns: self.max_insns,
            max_stack: self.max_stack,
            max_map_bytes: self.max_map_bytes,
            ncpus,
            ..Options::default()
        }
    }
}

/// Links an object's XDP program and verifies it: its contract, or why not.
pub fn verify_object(
    bytes: &[u8],
    name: &str,
    params: &LambdaParams,
    options: &Options,
) -> Result<(LinkedProgram, Contract), VerifyError> {
    let (_, linked) = link_xdp(bytes, name, params)?;
    let contract = verify_linked(&linked, options)?;
    Ok((linked, contract))
}

/// Verifies a linked program.
pub fn verify_linked(linked: &LinkedProgram, options: &Options) -> Result<Contract, VerifyError> {
    verifier::verify(&verifier_input(linked), options).map_err(|rejection| VerifyError::Rejected {
        program: format!("{}/{}", linked.lambda, linked.program),
        rejection: Box::new(rejection),
    })
}

/// The verifier's view of a linked XDP program: its code, its maps (indexed as the code's map
/// references are) and the source line of every instruction.
pub fn verifier_input(linked: &LinkedProgram) -> ProgramInput {
    let maps = linked
        .maps
        .iter()
        .map(|m| MapInfo {
            name: m.name.clone(),
            map_type: m.map_type,
            key_size: m.key_size,
            value_size: m.value_size,
            max_entries: m.max_entries,
            flags: m.flags,
            read_only: matches!(m.kind, LinkedMapKind::GlobalData { read_only: true }),
        })
        .collect();
    let lines = linked
        .lines
        .iter()
        .map(|line| {
            line.as_ref().map(|l| SourceLine {
                file: l.file.clone(),
                line: l.line,
                column: l.column,
                text: (!l.text.trim().is_empty()).then(|| l.text.clone()),
            })
        })
        .collect();
    ProgramInput {
        name: format!("{}/{}", linked.lambda, linked.program),
        insns: linked.insns.clone(),
        maps,
        kind: ProgramKind::Xdp,
        lines,
    }
}
