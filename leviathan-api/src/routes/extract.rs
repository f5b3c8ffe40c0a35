//! Request extraction with the API's own errors: bodies read under a limit, JSON parsed with the
//! position of a syntax error or the path of a misplaced value, queries and path segments
//! refused with a 400 that says which parameter is wrong.

use axum::{
    body::Body,
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
    read_each(headers, body, limit, |_| {}).await
}

/// [`read_limited`], hashing the body chunk by chunk as it arrives.
pub(crate) async fn read_hashed(
    headers: &HeaderMap,
    body: Body,
    limit: u64,
) -> Result<(Bytes, Sha256Digest), ApiError> {
    let mut hasher = Sha256Hasher::new();
    let content = read_each(headers, body, limit, |chunk| hasher.update(chunk)).await?;
    Ok((content, hasher.finish()))
}

/// Reads a body under `limit`, showing each chunk to `each` as it arrives.
async fn read_each(
    headers: &HeaderMap,
    body: Body,
    limit: u64,
    mut each: impl FnMut(&[u8]),
) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large(limit));
    }
    let mut buf = BytesMut::new();
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::bad_request(format!("the request body could not be read: {e}"))
        })?;
        if (buf.len() + chunk.len()) as u64 > limit {
            return Err(too_large(limit));
        }
        each(&chunk);
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
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
