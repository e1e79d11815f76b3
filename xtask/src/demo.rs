use std::path::Path;
pub fn run(_r: &Path, _c: u32, _m: &str) -> anyhow::Result<()> {
    anyhow::bail!("todo")
}
