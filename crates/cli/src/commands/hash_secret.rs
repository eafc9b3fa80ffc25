//! `tessera hash-secret password|token`: hashes a secret read from stdin for the `[sql]`
//! config (an Argon2id PHC string, or the SHA-256 of a bearer token).

use anyhow::{Context as _, Result};

/// The flags of `tessera hash-secret`.
#[derive(clap::Args)]
pub struct HashSecretArgs {
    /// `password` or `token`.
    #[arg(value_parser = ["password", "token"])]
    pub kind: String,
}

/// Reads the secret from stdin and prints its hash.
pub fn run(args: &HashSecretArgs) -> Result<()> {
    let mut secret = String::new();
    std::io::stdin().read_line(&mut secret).context("reading the secret from stdin")?;
    let secret = secret.trim_end_matches(['\r', '\n']);
    anyhow::ensure!(!secret.is_empty(), "no secret on stdin");
    match args.kind.as_str() {
        "password" => println!("{}", tessera_sql::auth::hash_password(secret)?),
        _ => println!("{}", tessera_sql::auth::hash_token(secret)),
    }
    Ok(())
}
