//! What every backend shares about running a lambda: the attach-time parameters written into
//! its `.rodata` globals, and the XDP verdict it returns.

use std::fmt;

/// `.rodata` global: the UDP port the lambda serves (`u16`).
pub const GLOBAL_PORT: &str = "LNIC_PORT";
/// `.rodata` global: the lambda id the lambda answers (`u32`).
pub const GLOBAL_LAMBDA_ID: &str = "LNIC_LAMBDA_ID";
/// `.rodata` global: 1 = answer any lambda id, 0 = only [`GLOBAL_LAMBDA_ID`] (`u8`).
pub const GLOBAL_MATCH_ANY_ID: &str = "LNIC_MATCH_ANY_ID";

/// The values the loader writes into the lambda's `.rodata` globals before load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LambdaParams {
    /// UDP port served ([`GLOBAL_PORT`]).
    pub port: u16,
    /// `Some(id)`: answer only this lambda id; `None`: answer any ([`GLOBAL_MATCH_ANY_ID`]).
    pub lambda_id: Option<u32>,
}

impl LambdaParams {
    /// The `.rodata` globals these parameters set, with their little-endian bytes.
    pub fn global_values(&self) -> [(&'static str, Vec<u8>); 3] {
        [
            (GLOBAL_PORT, self.port.to_le_bytes().to_vec()),
            (
                GLOBAL_LAMBDA_ID,
                self.lambda_id.unwrap_or(0).to_le_bytes().to_vec(),
            ),
            (
                GLOBAL_MATCH_ANY_ID,
                vec![u8::from(self.lambda_id.is_none())],
            ),
        ]
    }
}

impl Default for LambdaParams {
    fn default() -> Self {
        LambdaParams {
            port: lambda_ebpf::wire::DEFAULT_PORT,
            lambda_id: None,
        }
    }
}

/// An XDP verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpAction {
    Aborted,
    Drop,
    Pass,
    Tx,
    Redirect,
    /// A return value outside the five actions (the kernel treats it as aborted).
    Other(u32),
}

impl XdpAction {
    pub fn from_code(code: u32) -> XdpAction {
        match code {
            0 => XdpAction::Aborted,
            1 => XdpAction::Drop,
            2 => XdpAction::Pass,
            3 => XdpAction::Tx,
            4 => XdpAction::Redirect,
            other => XdpAction::Other(other),
        }
    }

    pub fn code(self) -> u32 {
        match self {
            XdpAction::Aborted => 0,
            XdpAction::Drop => 1,
            XdpAction::Pass => 2,
            XdpAction::Tx => 3,
            XdpAction::Redirect => 4,
            XdpAction::Other(c) => c,
        }
    }

    /// `XDP_PASS`, `XDP_TX`, …
    pub fn name(self) -> String {
        match self {
            XdpAction::Aborted => "XDP_ABORTED".into(),
            XdpAction::Drop => "XDP_DROP".into(),
            XdpAction::Pass => "XDP_PASS".into(),
            XdpAction::Tx => "XDP_TX".into(),
            XdpAction::Redirect => "XDP_REDIRECT".into(),
            XdpAction::Other(c) => format!("unknown action {c}"),
        }
    }
}

impl fmt::Display for XdpAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}
