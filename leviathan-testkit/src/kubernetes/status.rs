//! API errors as real `meta/v1 Status` objects, so clients see the codes, reasons and messages a
//! real API server sends (`kube::Error::Api` carries them through).

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Status, StatusCause, StatusDetails};

use super::kind::Kind;

/// An error answer: HTTP code, machine-readable reason and message.
#[derive(Clone, Debug)]
pub(crate) struct ApiError {
    code: u16,
    reason: &'static str,
    message: String,
    /// Boxed: most errors have none, and the struct travels in every `Result`.
    details: Option<Box<StatusDetails>>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: String) -> Self {
        Self {
            code,
            reason,
            message,
            details: None,
        }
    }

    fn with_details(mut self, kind: Kind, name: &str) -> Self {
        self.details = Some(Box::new(StatusDetails {
            name: Some(name.to_owned()),
            group: Some(kind.group().to_owned()).filter(|g| !g.is_empty()),
            kind: Some(kind.plural().to_owned()),
            ..StatusDetails::default()
        }));
        self
    }

    /// 404 for a named object.
    pub(crate) fn not_found(kind: Kind, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", kind.qualified()),
        )
        .with_details(kind, name)
    }

    /// 404 for a path this server does not serve.
    pub(crate) fn no_route() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource".to_owned(),
        )
    }

    /// 409 on create of an existing name.
    pub(crate) fn already_exists(kind: Kind, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", kind.qualified()),
        )
        .with_details(kind, name)
    }

    /// 403 as RBAC phrases it for the anonymous user.
    pub(crate) fn forbidden(kind: Kind, verb: &str, namespace: &str) -> Self {
        let group = kind.group();
        Self::new(
            403,
            "Forbidden",
            format!(
                "{} is forbidden: User \"system:anonymous\" cannot {verb} resource \"{}\" in API group \"{group}\" in the namespace \"{namespace}\"",
                kind.qualified(),
                kind.plural()
            ),
        )
        .with_details(kind, "")
    }

    /// 500 with the API server's wording.
    pub(crate) fn internal(message: &str) -> Self {
        Self::new(
            500,
            "InternalError",
            format!("Internal error occurred: {message}"),
        )
    }

    /// 422 for an object that fails validation; `causes` are `(field, message)` pairs.
    pub(crate) fn invalid(
        kind: Kind,
        type_name: &str,
        name: &str,
        causes: Vec<(String, String)>,
    ) -> Self {
        let summary = causes
            .iter()
            .map(|(field, message)| format!("{field}: {message}"))
            .collect::<Vec<_>>();
        let group = match kind.group() {
            "" => String::new(),
            group => format!(".{group}"),
        };
        let mut error = Self::new(
            422,
            "Invalid",
            format!(
                "{type_name}{group} \"{name}\" is invalid: {}",
                summary.join(", ")
            ),
        )
        .with_details(kind, name);
        if let Some(details) = error.details.as_mut() {
            details.kind = Some(type_name.to_owned());
            details.causes = Some(
                causes
                    .into_iter()
                    .map(|(field, message)| StatusCause {
                        field: Some(field),
                        message: Some(message),
                        reason: Some("FieldValueInvalid".to_owned()),
                    })
                    .collect(),
            );
        }
        error
    }

    /// 400 for a malformed request.
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message.into())
    }

    /// 405 for a verb this resource does not support.
    pub(crate) fn method_not_allowed(verb: &str) -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource ({verb})"),
        )
    }

    /// 410 for a resourceVersion older than the retained history.
    pub(crate) fn expired(requested: u64, oldest: u64) -> Self {
        Self::new(
            410,
            "Expired",
            format!("too old resource version: {requested} ({oldest})"),
        )
    }

    /// The `Status` object for this error.
    pub(crate) fn to_status(&self) -> Status {
        Status {
            code: Some(i32::from(self.code)),
            details: self.details.as_deref().cloned(),
            message: Some(self.message.clone()),
            metadata: Default::default(),
            reason: Some(self.reason.to_owned()),
            status: Some("Failure".to_owned()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (code, axum::Json(self.to_status())).into_response()
    }
}
