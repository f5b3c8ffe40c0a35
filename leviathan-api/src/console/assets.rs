//! The stylesheet, the script and the icon, compiled into the binary and served with a version in their
//! URL, so browsers may keep them for a year and still see a new build's at once.

use std::sync::LazyLock;

use axum::{
    extract::Path,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use leviathan_core::Sha256Digest;

use super::{Console, error::ConsoleError};

/// Name, content type and content of each asset.
const ASSETS: [(&str, &str, &str); 3] = [
    (
        "console.css",
        "text/css; charset=utf-8",
        include_str!("assets/console.css"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/console.js"),
    ),
    ("icon.svg", "image/svg+xml", include_str!("assets/icon.svg")),
];

/// A digest of every asset: it changes whenever one does.
static VERSION: LazyLock<String> = LazyLock::new(|| {
    let all: String = ASSETS.iter().map(|(_, _, body)| *body).collect();
    Sha256Digest::of(all.as_bytes()).to_hex()[..12].to_owned()
});

/// The URL of asset `name`, with the build's version.
pub(crate) fn url(console: &Console, name: &str) -> String {
    console.link(&format!("/assets/{name}?v={}", *VERSION))
}

pub(crate) async fn serve(Path(name): Path<String>) -> Result<Response, ConsoleError> {
    let Some((_, kind, body)) = ASSETS.iter().find(|(n, _, _)| *n == name) else {
        return Err(ConsoleError::NotFound(format!("no asset `{name}`")));
    };
    let mut response = (*body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    Ok(response)
}
