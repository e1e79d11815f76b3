//! Protocol code shared by the paper's workloads: the lambda (built for BPF, where every loop
//! must be bounded and every access checked), the CLI client and the native baseline
//! (`lambdactl baseline`) run the very same functions, so they cannot disagree on an answer.
#![no_std]

#[cfg(test)]
extern crate std;

pub mod grayscale;
pub mod memcached;
pub mod static_content;
