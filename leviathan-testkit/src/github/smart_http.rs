//! Smart-HTTP git: every request outside the REST prefix is handed to the real `git http-backend`
//! CGI program, after GitHub-style authentication, with the request body streamed to its stdin and
//! its stdout streamed back as the response.

use std::{process::Stdio, sync::Arc};

use axum::{
    body::{Body, Bytes},
    extract::{Request, State},
    http::{
        HeaderMap, HeaderName, HeaderValue, StatusCode,
        header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, WWW_AUTHENTICATE},
    },
    response::{IntoResponse as _, Response},
};
use futures::StreamExt as _;
use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader},
    process::ChildStdout,
};

use super::{
    repo,
    state::{Caller, Shared, valid_name},
};

/// Upper bound on the CGI header block, so a misbehaving backend cannot make us buffer forever.
const MAX_CGI_HEADER_BYTES: usize = 64 * 1024;

/// A request path split into the repository and the git-specific rest, e.g. `info/refs`.
struct GitPath<'a> {
    owner: &'a str,
    name: &'a str,
    rest: &'a str,
}

impl<'a> GitPath<'a> {
    /// Accepts `/<owner>/<name>.git/<rest>` and, like GitHub, `/<owner>/<name>/<rest>`.
    fn parse(path: &'a str) -> Option<Self> {
        let mut parts = path.strip_prefix('/')?.splitn(3, '/');
        let owner = parts.next()?;
        let repo = parts.next()?;
        let rest = parts.next()?;
        let name = repo.strip_suffix(".git").unwrap_or(repo);
        let rest_ok = !rest.is_empty()
            && rest
                .split('/')
                .all(|segment| !segment.is_empty() && segment != "..");
        (valid_name(owner) && valid_name(name) && rest_ok).then_some(Self { owner, name, rest })
    }

    /// Pushes: the receive-pack advertisement or the receive-pack RPC.
    fn is_push(&self, query: &str) -> bool {
        self.rest == "git-receive-pack"
            || (self.rest == "info/refs"
                && query
                    .split('&')
                    .any(|pair| pair == "service=git-receive-pack"))
    }
}

/// Axum handler for everything that is not REST.
pub(super) async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Some(target) = GitPath::parse(parts.uri.path()) else {
        return (StatusCode::NOT_FOUND, "Not Found\n").into_response();
    };
    if shared.repo_meta(target.owner, target.name).is_none() {
        return (StatusCode::NOT_FOUND, "Repository not found.\n").into_response();
    }
    let query = parts.uri.query().unwrap_or("");
    let needs_token = target.is_push(query) || shared.clone_requires_token;
    let remote_user = match shared.authenticate(&parts.headers) {
        Caller::User(user) => Some(user),
        Caller::Anonymous if !needs_token => None,
        Caller::Anonymous => return unauthorized(""),
        Caller::Invalid => {
            return unauthorized(
                "Invalid username or token. Password authentication is not supported for Git operations.\n",
            );
        }
    };
    let reject_pushes = shared.lock().reject_pushes;
    let cgi = Cgi {
        path_info: format!("/{}/{}.git/{}", target.owner, target.name, target.rest),
        method: parts.method.to_string(),
        query: query.to_owned(),
        remote_user,
        reject_pushes,
    };
    match cgi.run(&shared, &parts.headers, body).await {
        Ok(response) => response,
        Err(error) => {
            tracing::warn!(error = %format!("{error:#}"), "git http-backend failed");
            (
                StatusCode::BAD_GATEWAY,
                format!("git http-backend failed: {error:#}\n"),
            )
                .into_response()
        }
    }
}

/// GitHub's challenge; git answers it with HTTP Basic credentials from a helper or askpass.
fn unauthorized(message: &'static str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"GitHub\""),
        )],
        message,
    )
        .into_response()
}

/// One authorised invocation of `git http-backend`.
struct Cgi {
    path_info: String,
    method: String,
    query: String,
    remote_user: Option<String>,
    reject_pushes: bool,
}

impl Cgi {
    async fn run(
        self,
        shared: &Shared,
        headers: &HeaderMap,
        body: Body,
    ) -> anyhow::Result<Response> {
        let mut command = repo::git(shared.home());
        command
            .arg("http-backend")
            .env("GIT_PROJECT_ROOT", shared.repos_root())
            .env("GIT_HTTP_EXPORT_ALL", "1")
            .env("PATH_INFO", &self.path_info)
            .env("REQUEST_METHOD", &self.method)
            .env("QUERY_STRING", &self.query)
            .env("REMOTE_ADDR", "127.0.0.1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (header, variable) in [
            (CONTENT_TYPE, "CONTENT_TYPE"),
            (CONTENT_LENGTH, "CONTENT_LENGTH"),
            (CONTENT_ENCODING, "HTTP_CONTENT_ENCODING"),
            (HeaderName::from_static("git-protocol"), "GIT_PROTOCOL"),
        ] {
            if let Some(value) = headers.get(header).and_then(|value| value.to_str().ok()) {
                command.env(variable, value);
            }
        }
        if let Some(user) = &self.remote_user {
            command.env("REMOTE_USER", user);
        }
        if self.reject_pushes {
            command.env(repo::REJECT_PUSHES_ENV, "1");
        }
        let mut child = command.spawn()?;
        let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            anyhow::bail!("git http-backend was spawned without pipes");
        };

        // Feed the request body while the response is read, so neither side can fill a pipe and stall.
        tokio::spawn(async move {
            let mut chunks = body.into_data_stream();
            while let Some(Ok(chunk)) = chunks.next().await {
                if stdin.write_all(&chunk).await.is_err() {
                    break;
                }
            }
            // Dropping stdin closes it: the backend sees the end of the request body.
        });
        // Reap the process and surface its stderr once it is done.
        tokio::spawn(async move {
            match child.wait_with_output().await {
                Ok(output) if !output.status.success() => tracing::warn!(
                    status = %output.status,
                    stderr = %String::from_utf8_lossy(&output.stderr),
                    "git http-backend exited with an error"
                ),
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "waiting for git http-backend failed"),
            }
        });

        let mut stdout = BufReader::new(stdout);
        let mut response = Response::builder();
        let mut status = StatusCode::OK;
        let mut header_bytes = 0;
        loop {
            let mut line = String::new();
            let read = stdout.read_line(&mut line).await?;
            header_bytes += read;
            anyhow::ensure!(
                read > 0,
                "git http-backend ended before the end of its CGI headers"
            );
            anyhow::ensure!(
                header_bytes <= MAX_CGI_HEADER_BYTES,
                "git http-backend sent oversized CGI headers"
            );
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                break;
            }
            let Some((name, value)) = line.split_once(':') else {
                anyhow::bail!("malformed CGI header line {line:?}");
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("status") {
                let code = value.split_whitespace().next().unwrap_or_default();
                status = code
                    .parse::<u16>()
                    .ok()
                    .and_then(|code| StatusCode::from_u16(code).ok())
                    .unwrap_or(StatusCode::BAD_GATEWAY);
            } else {
                response = response.header(name.trim(), value);
            }
        }
        Ok(response
            .status(status)
            .body(Body::from_stream(stream_body(stdout)))?)
    }
}

/// The rest of the backend's stdout, chunk by chunk as it arrives.
fn stream_body(
    stdout: BufReader<ChildStdout>,
) -> impl futures::Stream<Item = std::io::Result<Bytes>> {
    futures::stream::try_unfold(stdout, |mut stdout| async move {
        let chunk = stdout.fill_buf().await?;
        if chunk.is_empty() {
            return Ok(None);
        }
        let bytes = Bytes::copy_from_slice(chunk);
        stdout.consume(bytes.len());
        Ok(Some((bytes, stdout)))
    })
}
