//! Request extraction with the API's own errors: bodies read under a limit, JSON parsed with the
//! position of a syntax error or the path of a misplaced value, queries and path segments
//! refused with a 400 that says which parameter is wrong.

use axum::{
    body::{Body, BodyDataStream},
    extract::{FromRequest, FromRequestParts, Query, Request},
    http::{HeaderMap, header, request::Parts},
};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use leviathan_core::{
    Sha256Digest,
    auth::{Action, Principal, authorize},
    canonical::check_exact_integers,
    digest::Sha256Hasher,
};
use serde::de::DeserializeOwned;
use serde_json::error::Category;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::ApiError;
use crate::{code::ErrorCode, state::ApiState};

/// 413 for a body over `limit` bytes.
fn too_large(limit: u64) -> ApiError {
    ApiError::new(
        ErrorCode::BodyTooLarge,
        format!("the request body exceeds the limit of {limit} bytes"),
    )
}

/// Reads a whole body, refusing one over `limit` bytes: at once when `Content-Length` says so,
/// else as soon as the bytes received pass the limit. The buffer grows with the bytes that
/// arrived, never with what `Content-Length` claims.
pub(crate) async fn read_limited(
    headers: &HeaderMap,
    body: Body,
    limit: u64,
) -> Result<Bytes, ApiError> {
    let mut chunks = LimitedChunks::new(headers, body, limit)?;
    let mut buf = BytesMut::new();
    while let Some(chunk) = chunks.next().await? {
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// A body spooled to an unnamed temporary file (removed when dropped), with its SHA-256.
pub(crate) struct Spooled {
    file: tokio::fs::File,
    len: u64,
    /// The digest of the content, computed as it arrived.
    pub(crate) sha256: Sha256Digest,
}

impl Spooled {
    /// The content, read back into memory.
    pub(crate) async fn into_bytes(mut self) -> Result<Bytes, ApiError> {
        let mut content = Vec::with_capacity(usize::try_from(self.len).unwrap_or(0));
        self.file.rewind().await.map_err(spool_error)?;
        self.file
            .read_to_end(&mut content)
            .await
            .map_err(spool_error)?;
        Ok(Bytes::from(content))
    }
}

fn spool_error(error: std::io::Error) -> ApiError {
    ApiError::internal("cannot spool the upload", &error)
}

/// Writes a body to a temporary file as it arrives, hashing each chunk, and refuses it as
/// [`read_limited`] does: memory holds one chunk at a time, whatever the body's size.
pub(crate) async fn spool_hashed(
    headers: &HeaderMap,
    body: Body,
    limit: u64,
) -> Result<Spooled, ApiError> {
    let mut chunks = LimitedChunks::new(headers, body, limit)?;
    let spool = tempfile::tempfile().map_err(spool_error)?;
    let mut file = tokio::fs::File::from_std(spool);
    let mut hasher = Sha256Hasher::new();
    while let Some(chunk) = chunks.next().await? {
        hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(spool_error)?;
    }
    file.flush().await.map_err(spool_error)?;
    Ok(Spooled {
        file,
        len: chunks.received,
        sha256: hasher.finish(),
    })
}

/// The chunks of a body, refused once they pass a limit.
struct LimitedChunks {
    stream: BodyDataStream,
    limit: u64,
    received: u64,
}

impl LimitedChunks {
    /// Refuses at once a body whose `Content-Length` is over `limit`.
    fn new(headers: &HeaderMap, body: Body, limit: u64) -> Result<Self, ApiError> {
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit) {
            return Err(too_large(limit));
        }
        Ok(Self {
            stream: body.into_data_stream(),
            limit,
            received: 0,
        })
    }

    /// The next chunk; 413 as soon as the bytes received pass the limit.
    async fn next(&mut self) -> Result<Option<Bytes>, ApiError> {
        let Some(chunk) = self.stream.next().await else {
            return Ok(None);
        };
        let chunk = chunk.map_err(|e| {
            ApiError::bad_request(format!("the request body could not be read: {e}"))
        })?;
        self.received += chunk.len() as u64;
        if self.received > self.limit {
            return Err(too_large(self.limit));
        }
        Ok(Some(chunk))
    }
}

/// Line and column (both 1-based) of a byte offset.
fn line_column(text: &[u8], offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let column = before.len()
        - before
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |p| p + 1)
        + 1;
    (line, column)
}

/// Parses a JSON body: integers that cannot be stored exactly → 422 `inexact_number`; syntax
/// errors → 400 `malformed_json` with line and column; a wrong shape → 422 `invalid_request`
/// naming the field.
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if let Err(inexact) = check_exact_integers(bytes) {
        let (line, column) = line_column(bytes, inexact.offset);
        return Err(ApiError::new(
            ErrorCode::InexactNumber,
            format!("{inexact} (line {line}, column {column})"),
        ));
    }
    let plain = match serde_json::from_slice(bytes) {
        Ok(value) => return Ok(value),
        Err(plain) => plain,
    };
    // Tracking the path costs on every field, so only a body that failed is decoded again with
    // it, to name the offending field.
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize::<_, T>(&mut de).map_err(|e| {
        let path = e.path().to_string();
        json_error(e.into_inner(), &path)
    })?;
    de.end().map_err(|e| json_error(e, "."))?;
    // The two decoders agree; should they ever not, the plain decoder's error stands.
    Err(json_error(plain, "."))
}

fn json_error(error: serde_json::Error, path: &str) -> ApiError {
    match error.classify() {
        Category::Data => {
            let field = missing_field(&error.to_string(), path);
            ApiError::invalid_request(format!("field `{field}`: {error}"))
        }
        Category::Syntax | Category::Eof | Category::Io => ApiError::new(
            ErrorCode::MalformedJson,
            format!(
                "the body is not valid JSON: {} at line {}, column {}",
                strip_position(&error.to_string()),
                error.line(),
                error.column()
            ),
        ),
    }
}

/// serde reports a missing field at the enclosing object; name the field itself.
pub(crate) fn missing_field(message: &str, path: &str) -> String {
    match message
        .strip_prefix("missing field `")
        .and_then(|m| m.split('`').next())
    {
        Some(missing) if path == "." => missing.to_owned(),
        Some(missing) => format!("{path}.{missing}"),
        None => path.to_owned(),
    }
}

/// serde_json appends " at line L column C"; the API says it once, its own way.
fn strip_position(message: &str) -> &str {
    message
        .rfind(" at line ")
        .map_or(message, |i| &message[..i])
}

/// A JSON body read under the configured limit and parsed by [`parse_json`].
#[derive(Debug)]
pub(crate) struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<ApiState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &ApiState) -> Result<Self, ApiError> {
        let limit = state.config().limits.json_body_bytes as u64;
        let (parts, body) = request.into_parts();
        let bytes = read_limited(&parts.headers, body, limit).await?;
        parse_json(&bytes).map(Self)
    }
}

/// A query string; a malformed one is a 400 naming the parameter.
#[derive(Debug)]
pub(crate) struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| Self(v))
            .map_err(|rejection| ApiError::bad_request(rejection.body_text()))
    }
}

/// The principal a request authenticated as (put there by the bearer middleware): every
/// protected handler takes it and asks [`Caller::may`] before it acts.
#[derive(Clone, Debug)]
pub(crate) struct Caller(pub Principal);

impl Caller {
    /// 403 unless the rule book lets this principal do `action`.
    pub(crate) fn may(&self, action: Action<'_>) -> Result<(), ApiError> {
        authorize(&self.0, action).map_err(|refusal| ApiError::forbidden(&refusal))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(ApiError::unauthorized)
    }
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Shape {
        name: String,
        items: Vec<u32>,
    }

    #[test]
    fn syntax_errors_say_where() {
        let err =
            parse_json::<Shape>(b"{\n  \"name\": \"x\",\n  \"items\": [1, 2,]\n}").unwrap_err();
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        assert_eq!(err.code(), ErrorCode::MalformedJson);
        assert!(
            err.message().contains("line 3, column 18"),
            "{}",
            err.message()
        );
        let trailing = parse_json::<Shape>(br#"{"name":"x","items":[]} x"#).unwrap_err();
        assert_eq!(trailing.code(), ErrorCode::MalformedJson);
        let empty = parse_json::<Shape>(b"").unwrap_err();
        assert_eq!(empty.code(), ErrorCode::MalformedJson);
    }

    #[test]
    fn shape_errors_name_the_field() {
        let err = parse_json::<Shape>(br#"{"name":"x","items":[1,"two"]}"#).unwrap_err();
        assert_eq!(err.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            err.message().starts_with("field `items[1]`"),
            "{}",
            err.message()
        );
        let missing = parse_json::<Shape>(br#"{"name":"x"}"#).unwrap_err();
        assert!(
            missing.message().starts_with("field `items`"),
            "{}",
            missing.message()
        );
    }

    #[test]
    fn inexact_integers_are_refused_with_their_position() {
        let err =
            parse_json::<serde_json::Value>(b"{\"a\":\n 123456789012345678901234}").unwrap_err();
        assert_eq!(err.code(), ErrorCode::InexactNumber);
        assert!(
            err.message().contains("line 2, column 2"),
            "{}",
            err.message()
        );
    }
}
