//! `tessera man`: man pages generated from the command line's own definition — `tessera.1`
//! and one page per subcommand (`tessera-sql.1`, `tessera-cluster-status.1`, …) written into
//! a directory, or `tessera.1` printed.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use clap::CommandFactory as _;

/// `tessera man [--out DIR]`.
#[derive(clap::Args, Debug)]
pub struct ManArgs {
    /// Write every page into this directory (e.g. /usr/local/share/man/man1); without it,
    /// print tessera.1 on stdout.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// Writes the pages, or prints the top one.
pub fn run(args: &ManArgs) -> Result<()> {
    let command = crate::Cli::command();
    match &args.out {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            let written = write_pages(&command, "tessera", dir)?;
            println!("wrote {written} man pages to {}", dir.display());
        }
        None => clap_mangen::Man::new(command).render(&mut std::io::stdout())?,
    }
    Ok(())
}

/// Writes `command`'s page as `name.1` into `dir`, then its subcommands' as `name-sub.1`;
/// returns how many pages it wrote.
fn write_pages(command: &clap::Command, name: &str, dir: &Path) -> Result<usize> {
    // A subcommand's page is titled with its whole path (`tessera-cluster-status`).
    let command = command.clone().name(name.to_string()).display_name(name.replace('-', " "));
    let file = dir.join(format!("{name}.1"));
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone()).render(&mut page)?;
    std::fs::write(&file, page).with_context(|| format!("writing {}", file.display()))?;
    let mut written = 1;
    for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
        written += write_pages(sub, &format!("{name}-{}", sub.get_name()), dir)?;
    }
    Ok(written)
}
