//! `tessera completions SHELL`: the shell's completion script for every command and flag,
//! generated from the command line's own definition (so it never falls behind).

use anyhow::Result;
use clap::CommandFactory as _;
use clap_complete::Shell;

/// `tessera completions SHELL`.
#[derive(clap::Args, Debug)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell. Install e.g. with
    /// `tessera completions bash > /etc/bash_completion.d/tessera`.
    pub shell: Shell,
}

/// The completion script for `shell`.
pub fn script(shell: Shell) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut crate::Cli::command(), "tessera", &mut out);
    out
}

/// Prints the script on stdout.
pub fn run(args: &CompletionsArgs) -> Result<()> {
    use std::io::Write as _;
    std::io::stdout().write_all(&script(args.shell))?;
    Ok(())
}
