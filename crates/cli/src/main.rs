//! The `tessera` binary: everything is in [`tessera_cli::run`].

fn main() -> anyhow::Result<()> {
    tessera_cli::run(std::env::args_os())
}
