//! RFC 9457 problem details: every admin API error is `application/problem+json`.
use crate::Body;
use bytes::Bytes;
use duanlian_write::WriteError;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde_json::{json, Value};

/// One invalid input field: its name, a stable code (`duanlian_input::FieldError::code`) and
/// the reason in English.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldError {
    pub(crate) name: String,
    pub(crate) code: &'static str,
    pub(crate) reason: String,
}

impl FieldError {
    /// As `invalid_fields` lists it.
    pub(crate) fn json(&self) -> Value {
        json!({"name": self.name, "code": self.code, "reason": self.reason})
    }
}

pub(crate) fn field(
    name: impl Into<String>,
    code: &'static str,
    reason: impl std::fmt::Display,
) -> FieldError {
    FieldError {
        name: name.into(),
        code,
        reason: reason.to_string(),
    }
}

/// A problem to answer with.
#[derive(Debug)]
pub(crate) struct Problem {
    status: StatusCode,
    slug: &'static str,
    title: &'static str,
    detail: String,
    fields: Vec<FieldError>,
}

impl Problem {
    pub(crate) fn new(
        status: StatusCode,
        slug: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Problem {
        Problem {
            status,
            slug,
            title,
            detail: detail.into(),
            fields: Vec::new(),
        }
    }

    pub(crate) fn invalid(fields: Vec<FieldError>) -> Problem {
        let detail = fields
            .iter()
            .map(|f| format!("{}: {}", f.name, f.reason))
            .collect::<Vec<_>>()
            .join("; ");
        Problem {
            fields,
            ..Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-fields",
                "Invalid fields",
                detail,
            )
        }
    }

    pub(crate) fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }

    pub(crate) fn response(self) -> Response<Body> {
        let mut body = json!({
            "type": format!("/problems/{}", self.slug),
            "title": self.title,
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        if !self.fields.is_empty() {
            body["invalid_fields"] =
                Value::Array(self.fields.iter().map(FieldError::json).collect());
        }
        let mut r = Response::new(Body::new(Bytes::from(body.to_string())));
        *r.status_mut() = self.status;
        r.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        r
    }
}

pub(super) fn write_problem(e: WriteError) -> Problem {
    match &e {
        WriteError::Conflict { .. } => Problem::new(
            StatusCode::CONFLICT,
            "code-taken",
            "Code taken",
            e.to_string(),
        ),
        WriteError::NotFound { .. } => Problem::not_found(e.to_string()),
        WriteError::Invalid(le) => Problem::invalid(vec![field(le.field(), le.code(), le)]),
        WriteError::CodeSpaceExhausted(_) => Problem::new(
            StatusCode::CONFLICT,
            "code-space-exhausted",
            "No free code",
            e.to_string(),
        ),
        WriteError::ReadOnly => read_only(),
        WriteError::NotHere(why) => cluster_node(why),
        WriteError::NoSpace(_) => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no-space",
            "Writes unavailable: the disk is full",
            e.to_string(),
        ),
        WriteError::Unavailable(_) => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Writes unavailable",
            e.to_string(),
        ),
        WriteError::BadFile(why) => Problem::invalid(vec![field("path", "bad_file", why)]),
        WriteError::Failed(why) => internal(why),
    }
}

/// What a cluster node answers for the data-directory and snapshot-file operations.
fn cluster_node(why: &str) -> Problem {
    Problem::new(StatusCode::CONFLICT, "cluster-node", "Cluster node", why)
}

fn read_only() -> Problem {
    Problem::new(
        StatusCode::FORBIDDEN,
        "read-only",
        "Read-only node",
        "this node serves a snapshot without a data directory; start it with --data-dir to accept writes",
    )
}

pub(super) fn internal(why: &str) -> Problem {
    tracing::error!(error = why, "admin API internal error");
    Problem::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "Internal error",
        why.to_owned(),
    )
}
