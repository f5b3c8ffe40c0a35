//! Signed tokens through a running control plane: create, list, revoke, rotate the key.

use std::path::PathBuf;

use leviathan::api::{
    client::ControlPlaneClient,
    wire::{CreateTokenRequest, Role, TokenInfo},
};

use crate::cli::{
    error::CliError,
    output::print_json,
    source::{API_URL_ENV, OutputArgs, client},
};

/// The control plane to ask, and the admin token to ask with.
#[derive(clap::Args, Debug)]
pub(crate) struct ApiArgs {
    /// The control plane (e.g. http://127.0.0.1:8000)
    #[arg(long, value_name = "URL", env = API_URL_ENV)]
    api: String,
    /// Token file used when LEVIATHAN_CONTROL_PLANE_TOKEN is not set
    /// [default: ~/.leviathan/control-plane-token]
    #[arg(long, value_name = "PATH", env = "LEVIATHAN_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    #[command(flatten)]
    output: OutputArgs,
}

impl ApiArgs {
    fn client(&self) -> Result<ControlPlaneClient, CliError> {
        client(&self.api, self.token_file.as_deref())
    }
}

/// `token create`.
#[derive(clap::Args, Debug)]
pub(crate) struct CreateArgs {
    /// reader, operator, scheduler or admin
    #[arg(long, value_parser = parse_role)]
    role: Role,
    /// How long it lives (`30d`, `12h`, `90min`; at most 365 days)
    #[arg(long, value_name = "DURATION", default_value = "30d", value_parser = humantime::parse_duration)]
    ttl: std::time::Duration,
    /// A name to list and revoke it by (unique among live tokens)
    #[arg(long)]
    name: Option<String>,
    #[command(flatten)]
    api: ApiArgs,
}

/// `token list`.
#[derive(clap::Args, Debug)]
pub(crate) struct ListArgs {
    #[command(flatten)]
    api: ApiArgs,
}

/// `token revoke`.
#[derive(clap::Args, Debug)]
pub(crate) struct RevokeArgs {
    /// The token's id (`tok-…`) or name
    token: String,
    /// Why (recorded in `token.revoked`)
    #[arg(long)]
    reason: Option<String>,
    #[command(flatten)]
    api: ApiArgs,
}

fn parse_role(raw: &str) -> Result<Role, String> {
    raw.parse::<Role>().map_err(|e| e.to_string())
}

pub(crate) async fn create(args: CreateArgs) -> Result<(), CliError> {
    let request = CreateTokenRequest {
        role: args.role,
        ttl_seconds: Some(args.ttl.as_secs()),
        name: args.name,
    };
    let issued = args.api.client()?.create_token(&request).await?;
    if args.api.output.json {
        return print_json(&issued);
    }
    let info = &issued.info.issued;
    eprintln!(
        "created {} token `{}`{}, expiring {}; it is shown this once:",
        info.role,
        info.token_id,
        info.name
            .as_deref()
            .map(|n| format!(" (`{n}`)"))
            .unwrap_or_default(),
        info.expires
    );
    println!("{}", issued.token);
    Ok(())
}

pub(crate) async fn list(args: ListArgs) -> Result<(), CliError> {
    let tokens = args.api.client()?.list_tokens().await?;
    if args.api.output.json {
        return print_json(&tokens);
    }
    println!(
        "{:<22} {:<16} {:<9} {:<27} {:<27} STATE",
        "ID", "NAME", "ROLE", "EXPIRES", "LAST USE"
    );
    for token in &tokens {
        println!("{}", row(token));
    }
    Ok(())
}

fn row(token: &TokenInfo) -> String {
    let info = &token.issued;
    let name = match (&info.name, &info.attempt_id) {
        (Some(name), _) => name.clone(),
        (None, Some(attempt)) => attempt.to_string(),
        (None, None) => "-".to_owned(),
    };
    let last_use = token.last_used.map_or("-".to_owned(), |t| t.to_string());
    let state = token
        .revoked_at
        .map_or("live".to_owned(), |t| format!("revoked {t}"));
    format!(
        "{:<22} {:<16} {:<9} {:<27} {:<27} {state}",
        info.token_id,
        name,
        info.role.as_str(),
        info.expires.to_string(),
        last_use
    )
}

pub(crate) async fn revoke(args: RevokeArgs) -> Result<(), CliError> {
    let client = args.api.client()?;
    let revoked = client
        .revoke_token(&args.token, args.reason.as_deref())
        .await?;
    if args.api.output.json {
        return print_json(&revoked);
    }
    match revoked.duplicate {
        true => println!("token `{}` was revoked already", revoked.token_id),
        false => println!("revoked token `{}`", revoked.token_id),
    }
    Ok(())
}

pub(crate) async fn rotate_key(args: ApiArgs) -> Result<(), CliError> {
    let rotated = args.client()?.rotate_key().await?;
    if args.output.json {
        return print_json(&rotated);
    }
    println!(
        "key `{}` signs new tokens; tokens signed before stay valid until they expire",
        rotated.key_id
    );
    Ok(())
}
