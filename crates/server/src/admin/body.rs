//! JSON bodies: a request's, read within the size limit, and the answers'.
use super::problem::Problem;
use super::{Admin, RequestBody};
use crate::Body;
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use serde_json::Value;

impl Admin {
    pub(super) async fn json_body<B: RequestBody>(
        &self,
        req: Request<B>,
    ) -> Result<Value, Problem> {
        if let Some(ct) = req.headers().get(CONTENT_TYPE) {
            let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
            if !ct.starts_with("application/json") && !ct.ends_with("+json") {
                return Err(Problem::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported-media-type",
                    "Unsupported media type",
                    format!("send the body as JSON with Content-Type: application/json (got {ct})"),
                ));
            }
        }
        let bytes = self.raw_body(req).await?;
        serde_json::from_slice(&bytes).map_err(|e| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                "malformed-json",
                "Malformed JSON",
                format!("the body is not valid JSON: {e}"),
            )
        })
    }

    /// The body's bytes, within `--max-body-bytes`.
    pub(super) async fn raw_body<B: RequestBody>(&self, req: Request<B>) -> Result<Bytes, Problem> {
        let limit = self.opts.max_body_bytes;
        let too_large = || {
            Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body-too-large",
                "Request body too large",
                format!("the body limit is {limit} bytes"),
            )
        };
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(too_large());
        }
        Ok(Limited::new(req.into_body(), limit)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    too_large()
                } else {
                    Problem::new(
                        StatusCode::BAD_REQUEST,
                        "bad-body",
                        "Unreadable body",
                        e.to_string(),
                    )
                }
            })?
            .to_bytes())
    }
}

pub(super) fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    let mut r = Response::new(Body::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}
