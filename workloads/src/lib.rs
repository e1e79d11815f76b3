//! The paper's workloads, as protocol code shared by the lambdas (built for BPF), the CLI
//! client and the native baselines: one definition of each body format and of the work done.
#![no_std]

pub mod grayscale;
