//! `leviathan k8s job-spec`: the Job the Kubernetes executor would submit for an attempt, as a
//! dry run operators can read or `kubectl apply`.

use std::{collections::BTreeMap, process::ExitCode, time::Duration};

use leviathan::core::{
    AttemptId, AttemptSpec, TargetId, TaskId, executor::protocol, secret::Secret,
};
use leviathan_exec_k8s::{EXECUTOR_IMAGE, K8S_NAMESPACE, K8sConfig, job_spec};

use super::{
    error::{CliError, finish},
    output::init_logging,
};

/// Kubernetes: what the executor submits.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Print the Job of one attempt (YAML, or JSON with --output json); defaults come from the
    /// scheduler's variables (LEVIATHAN_EXECUTOR_IMAGE, LEVIATHAN_K8S_NAMESPACE,
    /// LEVIATHAN_WORKER_CONTROL_PLANE_URL, LEVIATHAN_WORKER_SERVICE_ACCOUNT,
    /// LEVIATHAN_SECRET_NAME, LEVIATHAN_CLAUDE_MODEL). Secrets appear only as references. As the
    /// scheduler's Jobs do, the worker takes its token from the attempt's own Secret
    /// (`<job>-token`, key `control-plane-token`): mint one with
    /// `POST /v1/attempts/{id}/token` and create that Secret beside the Job.
    JobSpec(JobSpecArgs),
}

#[derive(clap::Args, Debug)]
struct JobSpecArgs {
    /// Target id
    #[arg(long, value_name = "ID")]
    target: TargetId,
    /// Task id
    #[arg(long, value_name = "ID")]
    task: TaskId,
    /// Attempt id
    #[arg(long, value_name = "ID")]
    attempt: AttemptId,
    /// Clone URL of the target repository
    #[arg(long, value_name = "URL")]
    repo_url: String,
    /// Branch the worker checks out and opens the pull request against
    #[arg(long, value_name = "BRANCH", default_value = "main")]
    branch: String,
    /// 1-based number of the attempt at its task
    #[arg(long, value_name = "N", default_value_t = 1)]
    attempt_number: u32,
    /// The attempt's deadline in seconds (the Job's activeDeadlineSeconds)
    #[arg(long, value_name = "SECONDS", default_value_t = 900)]
    deadline_secs: u64,
    /// Worker image [default: LEVIATHAN_EXECUTOR_IMAGE, else leviathan-worker:local]
    #[arg(long, value_name = "IMAGE")]
    image: Option<String>,
    /// Namespace [default: LEVIATHAN_K8S_NAMESPACE, else leviathan]
    #[arg(long, value_name = "NAMESPACE")]
    namespace: Option<String>,
    /// Extra, non-secret worker setting (repeatable), e.g. LEVIATHAN_MODEL_PROVIDER=openai
    #[arg(long = "env", value_name = "NAME=VALUE", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// Output format
    #[arg(long, value_enum, default_value = "yaml")]
    output: Format,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Format {
    Yaml,
    Json,
}

fn parse_env(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not NAME=VALUE"))?;
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err(format!("`{name}` is not a variable name"));
    }
    if protocol::RESERVED_VARIABLES.contains(&name) {
        return Err(format!(
            "`{name}` is set by the executor (credentials come from the secret)"
        ));
    }
    Ok((name.to_owned(), value.to_owned()))
}

pub(crate) async fn run(args: Args) -> ExitCode {
    init_logging("warn", false);
    finish(match args.command {
        Command::JobSpec(args) => print_job_spec(args),
    })
}

fn print_job_spec(args: JobSpecArgs) -> Result<(), CliError> {
    // The flags stand in for their variables, so they are validated the same way.
    let flag = |variable: &str| match variable {
        EXECUTOR_IMAGE => args.image.as_ref().map(|_| "--image"),
        K8S_NAMESPACE => args.namespace.as_ref().map(|_| "--namespace"),
        _ => None,
    };
    let config = K8sConfig::from_lookup(|name| match name {
        EXECUTOR_IMAGE if args.image.is_some() => args.image.clone(),
        K8S_NAMESPACE if args.namespace.is_some() => args.namespace.clone(),
        _ => std::env::var(name).ok(),
    })
    .map_err(|e| match flag(e.variable) {
        Some(flag) => CliError::usage(format!("{flag}: {}", e.reason)),
        None => CliError::usage(e.to_string()),
    })?;
    let spec = AttemptSpec {
        attempt_id: args.attempt,
        attempt_number: args.attempt_number,
        task_id: args.task,
        target_id: args.target,
        repo_url: args.repo_url,
        base_branch: args.branch,
        deadline: Duration::from_secs(args.deadline_secs),
        env: args.env.into_iter().collect::<BTreeMap<_, _>>(),
        // Only its presence shapes the Job (a reference to the attempt's Secret), never its value.
        worker_token: Some(Secret::new(String::new())),
    };
    let job = job_spec(&spec, &config);
    let text = match args.output {
        Format::Yaml => serde_yaml_ng::to_string(&job)
            .map_err(|e| CliError::failure(format!("cannot encode the Job: {e}")))?,
        Format::Json => serde_json::to_string_pretty(&job)
            .map(|json| json + "\n")
            .map_err(|e| CliError::failure(format!("cannot encode the Job: {e}")))?,
    };
    print!("{text}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_arguments() {
        assert_eq!(
            parse_env("LEVIATHAN_MODEL_PROVIDER=openai"),
            Ok(("LEVIATHAN_MODEL_PROVIDER".to_owned(), "openai".to_owned()))
        );
        assert_eq!(parse_env("A=b=c"), Ok(("A".to_owned(), "b=c".to_owned())));
        assert!(parse_env("novalue").unwrap_err().contains("NAME=VALUE"));
        assert!(
            parse_env("GITHUB_TOKEN=x")
                .unwrap_err()
                .contains("set by the executor")
        );
    }
}
