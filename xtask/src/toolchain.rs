//! Installs what building lambdas needs, once: the `rust-src` component and bpf-linker.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The bpf-linker release we build with. Pinned: a newer one may need a newer LLVM.
pub const BPF_LINKER_VERSION: &str = "0.13.0";

fn sysroot() -> Result<PathBuf> {
    let out = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .context("running rustc --print sysroot")?;
    if !out.status.success() {
        bail!("rustc --print sysroot failed");
    }
    Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()))
}

/// `-Z build-std=core` needs the standard library's source.
pub fn ensure_rust_src() -> Result<()> {
    let library = sysroot()?.join("lib/rustlib/src/rust/library/core");
    if library.is_dir() {
        return Ok(());
    }
    println!("xtask: installing the rust-src component (needed to build core for BPF)");
    let status = Command::new("rustup")
        .args(["component", "add", "rust-src"])
        .status()
        .context("running rustup component add rust-src")?;
    if !status.success() {
        bail!("rustup component add rust-src failed ({status})");
    }
    Ok(())
}

/// bpf-linker must be the pinned version and must load the toolchain's current libLLVM (a
/// toolchain update renames that library and leaves an older bpf-linker unable to start).
pub fn ensure_bpf_linker() -> Result<()> {
    if let Ok(out) = Command::new("bpf-linker").arg("--version").output() {
        let version = String::from_utf8_lossy(&out.stdout);
        if out.status.success() && version.trim() == format!("bpf-linker {BPF_LINKER_VERSION}") {
            return Ok(());
        }
        println!(
            "xtask: bpf-linker present but unusable or not {BPF_LINKER_VERSION} ({}): reinstalling",
            version.trim()
        );
    } else {
        println!("xtask: bpf-linker not found: installing {BPF_LINKER_VERSION}");
    }
    install_bpf_linker()
}

fn install_bpf_linker() -> Result<()> {
    let llvm = toolchain_libllvm()?;
    let file_name = llvm
        .file_name()
        .and_then(|n| n.to_str())
        .context("libLLVM path has no file name")?
        .to_owned();
    // libLLVM.so.22.1-rust-1.95.0-stable → LLVM major 22 → bpf-linker feature llvm-22.
    let major = file_name
        .strip_prefix("libLLVM.so.")
        .and_then(|rest| rest.split('.').next())
        .filter(|m| m.chars().all(|c| c.is_ascii_digit()) && !m.is_empty())
        .with_context(|| format!("cannot read the LLVM major version from {file_name}"))?
        .to_owned();

    // bpf-linker links against `LLVM_PREFIX/lib/libLLVM.so` and keeps that directory as its
    // runpath, so the prefix must outlive `cargo clean`: keep it in the user's cache.
    let prefix = cache_dir().join(format!("llvm-prefix-{file_name}"));
    let lib = prefix.join("lib");
    std::fs::create_dir_all(&lib).with_context(|| format!("creating {}", lib.display()))?;
    for link in ["libLLVM.so", file_name.as_str()] {
        let path = lib.join(link);
        let _ = std::fs::remove_file(&path);
        std::os::unix::fs::symlink(&llvm, &path)
            .with_context(|| format!("linking {} → {}", path.display(), llvm.display()))?;
    }
    println!(
        "xtask: building bpf-linker {BPF_LINKER_VERSION} against the toolchain's LLVM {major} ({}); this takes about a minute",
        llvm.display()
    );
    let status = Command::new("cargo")
        .args([
            "install",
            &format!("bpf-linker@{BPF_LINKER_VERSION}"),
            "--locked",
            "--force",
            "--no-default-features",
            "--features",
            &format!("llvm-{major}"),
        ])
        .env("LLVM_PREFIX", &prefix)
        .status()
        .context("running cargo install bpf-linker")?;
    if !status.success() {
        bail!("cargo install bpf-linker failed ({status})");
    }
    Ok(())
}

/// The toolchain's own `libLLVM.so.<version>-rust-*`.
fn toolchain_libllvm() -> Result<PathBuf> {
    let lib = sysroot()?.join("lib");
    let mut found = None;
    for entry in std::fs::read_dir(&lib).with_context(|| format!("listing {}", lib.display()))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.starts_with("libLLVM.so.") && name.contains("-rust-") {
            found = Some(path);
        }
    }
    found.with_context(|| {
        format!(
            "no libLLVM.so.*-rust-* in {}: is this a rustup toolchain?",
            lib.display()
        )
    })
}

fn cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    base.join("lnic")
}
