//! The `tessera` binary: everything is in [`tessera_server::cli`].

fn main() -> anyhow::Result<()> {
    tessera_server::cli::run(std::env::args_os())
}
