//! `leviathan token show|rotate`.

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

/// The control plane's bearer token.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Print the token (from LEVIATHAN_CONTROL_PLANE_TOKEN, else the token file) on stdout
    Show {
        /// The token file [default: ~/.leviathan/control-plane-token]
        #[arg(long, value_name = "PATH", env = "LEVIATHAN_TOKEN_FILE")]
        token_file: Option<PathBuf>,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Write a new random token to the token file (mode 0600); restart `leviathan serve` and
    /// update the workers' secret afterwards
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
        "a new token was written to {}; restart `leviathan serve` and give workers the new token (`leviathan token show`)",
        file.display()
    );
    Ok(())
}
