//! `leviathan token show|rotate` (the static admin token's file) and `leviathan token
//! create|list|revoke|rotate-key` (signed tokens, through a running control plane).

use std::{path::PathBuf, process::ExitCode};

use leviathan::api::{
    BearerToken,
    token::{self, TOKEN_ENV, TokenFileError},
};

use super::{
    error::{CliError, finish},
    output::{init_logging, print_json},
    source::OutputArgs,
};

mod signed;

/// The control plane's tokens.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Create a signed token (admin): its secret is printed once, the log records its id only
    Create(signed::CreateArgs),
    /// List the signed tokens: ids, names, roles, expiry, last use (never a secret)
    List(signed::ListArgs),
    /// Revoke a signed token by id or name; it is refused from now on
    Revoke(signed::RevokeArgs),
    /// Make a new key sign new tokens; tokens signed before stay valid until they expire
    RotateKey(signed::ApiArgs),
    /// Print the static admin token (from LEVIATHAN_CONTROL_PLANE_TOKEN, else the token file)
    Show {
        /// The token file [default: ~/.leviathan/control-plane-token]
        #[arg(long, value_name = "PATH", env = "LEVIATHAN_TOKEN_FILE")]
        token_file: Option<PathBuf>,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Write a new random static admin token to the token file (mode 0600); restart
    /// `leviathan serve` afterwards
    Rotate {
        /// The token file [default: ~/.leviathan/control-plane-token]
        #[arg(long, value_name = "PATH", env = "LEVIATHAN_TOKEN_FILE")]
        token_file: Option<PathBuf>,
        #[command(flatten)]
        output: OutputArgs,
    },
}

pub(crate) async fn run(args: Args) -> ExitCode {
    init_logging("warn", false);
    finish(match args.command {
        Command::Show { token_file, output } => show(token_file, output),
        Command::Rotate { token_file, output } => rotate(token_file, output),
        Command::Create(args) => signed::create(args).await,
        Command::List(args) => signed::list(args).await,
        Command::Revoke(args) => signed::revoke(args).await,
        Command::RotateKey(args) => signed::rotate_key(args).await,
    })
}

fn token_file(given: Option<PathBuf>) -> Result<PathBuf, CliError> {
    given.or_else(token::default_token_file).ok_or_else(|| {
        CliError::usage("no token file: HOME is unset; give --token-file or LEVIATHAN_TOKEN_FILE")
    })
}

fn show(file: Option<PathBuf>, output: OutputArgs) -> Result<(), CliError> {
    let file = token_file(file)?;
    let resolved = token::resolve(std::env::var(TOKEN_ENV).ok(), &file, false).map_err(|e| match e {
        TokenFileError::NotFound { path } => CliError::failure(format!(
            "no token file at {}; `leviathan serve` creates one on first start, `leviathan token rotate` creates one now",
            path.display()
        )),
        other => other.into(),
    })?;
    if output.json {
        return print_json(&serde_json::json!({
            "token": resolved.token.expose(),
            "source": resolved.source.to_string(),
        }));
    }
    println!("{}", resolved.token.expose());
    Ok(())
}

fn rotate(file: Option<PathBuf>, output: OutputArgs) -> Result<(), CliError> {
    let file = token_file(file)?;
    let token = BearerToken::generate().map_err(|e| CliError::failure(e.to_string()))?;
    token::write_token_file(&file, &token)?;
    if std::env::var(TOKEN_ENV).is_ok_and(|v| !v.trim().is_empty()) {
        eprintln!("warning: {TOKEN_ENV} is set and takes precedence over the token file");
    }
    if output.json {
        return print_json(&serde_json::json!({"token_file": file, "rotated": true}));
    }
    println!(
        "a new static admin token was written to {}; restart `leviathan serve` (workers hold tokens of their own, minted per attempt)",
        file.display()
    );
    Ok(())
}
