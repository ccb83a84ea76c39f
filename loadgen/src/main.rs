//! Load generator for TFTP servers (work in progress: see the load-generator issue).

fn main() -> anyhow::Result<()> {
    anyhow::bail!("loadgen is not built yet")
}
