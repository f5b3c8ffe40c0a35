//! `serve --gateway FILE`: the model gateway's configuration file. The upstreams' keys are named
//! by environment variable, never written in the file or on the command line.

use std::{collections::BTreeMap, path::Path, time::Duration};

use leviathan::{
    api::gateway::{Budgets, GatewayConfig, Limit, PriceTable, Upstream},
    core::{id::TargetId, secret::Secret},
};
use serde::Deserialize;

use super::error::CliError;

/// The file, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    anthropic: Option<UpstreamFile>,
    openai: Option<UpstreamFile>,
    /// Replaces the shipped price table.
    prices: Option<PriceTable>,
    #[serde(default)]
    budgets: BudgetsFile,
    default_max_tokens: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpstreamFile {
    base_url: String,
    /// The environment variable that holds the key; absent for servers without authentication.
    key_env: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BudgetsFile {
    #[serde(default)]
    attempt: Limit,
    attempt_wall_seconds: Option<u64>,
    #[serde(default)]
    target_day: Limit,
    #[serde(default)]
    targets: BTreeMap<TargetId, Limit>,
    #[serde(default)]
    global_day: Limit,
}

/// Reads the gateway's configuration from `path`, each key from the variable it names.
pub(crate) fn load(path: &Path) -> Result<GatewayConfig, CliError> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::usage(format!("--gateway {shown}: {e}")))?;
    let file: File = serde_yaml_ng::from_str(&text)
        .map_err(|e| CliError::usage(format!("--gateway {shown}: {e}")))?;
    let upstream = |name: &str, upstream: Option<UpstreamFile>| {
        upstream
            .map(|u| {
                if !(u.base_url.starts_with("http://") || u.base_url.starts_with("https://")) {
                    return Err(CliError::usage(format!(
                        "--gateway {shown}: {name}.base_url: must be an http:// or https:// URL"
                    )));
                }
                let key = match &u.key_env {
                    None => None,
                    Some(var) => Some(Secret::new(std::env::var(var).map_err(|_| {
                        CliError::usage(format!(
                            "--gateway {shown}: {name}.key_env: the variable `{var}` is not set"
                        ))
                    })?)),
                };
                Ok(Upstream::new(u.base_url, key))
            })
            .transpose()
    };
    let mut budgets = Budgets::default();
    budgets.attempt = file.budgets.attempt;
    budgets.attempt_wall = file.budgets.attempt_wall_seconds.map(Duration::from_secs);
    budgets.target_day = file.budgets.target_day;
    budgets.targets = file.budgets.targets;
    budgets.global_day = file.budgets.global_day;
    let mut config = GatewayConfig::new(
        upstream("anthropic", file.anthropic)?,
        upstream("openai", file.openai)?,
    )
    .with_budgets(budgets);
    if let Some(prices) = file.prices {
        config = config.with_prices(prices);
    }
    if let Some(tokens) = file.default_max_tokens {
        config.default_max_tokens = tokens.max(1);
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        file
    }

    #[test]
    fn a_file_names_upstreams_budgets_and_the_variable_of_each_key() {
        let file = write(
            "anthropic: { base_url: 'http://127.0.0.1:9/', key_env: PATH }\n\
             budgets:\n  attempt: { calls: 5, usd: 0.5 }\n  attempt_wall_seconds: 600\n  targets: { demo: { tokens: 1000 } }\n",
        );
        let config = load(file.path()).unwrap();
        let anthropic = config.anthropic.unwrap();
        assert_eq!(anthropic.base_url, "http://127.0.0.1:9");
        assert_eq!(
            anthropic.key.unwrap().expose(),
            std::env::var("PATH").unwrap()
        );
        assert!(config.openai.is_none());
        assert_eq!(config.budgets.attempt.calls, Some(5));
        assert_eq!(config.budgets.attempt_wall, Some(Duration::from_secs(600)));
        let demo = TargetId::new("demo").unwrap();
        assert_eq!(config.budgets.target_limit(&demo).tokens, Some(1000));
    }

    #[test]
    fn bad_files_say_what_and_where() {
        let unset =
            write("openai: { base_url: 'http://x', key_env: LEVIATHAN_NO_SUCH_VARIABLE_1 }\n");
        let message = format!("{:?}", load(unset.path()).unwrap_err());
        assert!(message.contains("openai.key_env"), "{message}");
        let typo = write("budgets: { atempt: { calls: 1 } }\n");
        let message = format!("{:?}", load(typo.path()).unwrap_err());
        assert!(message.contains("atempt"), "{message}");
        let scheme = write("anthropic: { base_url: 'ftp://x' }\n");
        assert!(format!("{:?}", load(scheme.path()).unwrap_err()).contains("anthropic.base_url"));
    }
}
