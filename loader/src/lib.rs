//! The λ-NIC loader: ELF object → [`image::LambdaImage`] (pure, no kernel needed), and the
//! kernel backend ([`kernel`]) that loads, attaches and pins lambdas with aya, and test-runs them
//! with BPF_PROG_TEST_RUN.

pub mod btf_types;
pub mod dispatch;
pub mod frames;
pub mod image;
pub mod kernel;
pub mod lambda;
pub mod lineinfo;
pub mod link;
pub mod maps;
pub mod verify;
pub mod vm;

pub use image::{ImageError, LambdaImage};
pub use kernel::{
    AttachMode, Attached, AttachmentRecord, Detached, Host, KernelError, LambdaParams, Listed,
    Liveness, ModeUsed, PinnedMap, TestRunOutcome, TestRunner, VerifierLog, XdpAction, test_run,
};
