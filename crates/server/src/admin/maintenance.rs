//! Operating the node: metrics, compaction, loading a bulk snapshot.
use super::body::json_response;
use super::problem::{field, internal, write_problem, Problem};
use super::{Admin, Answer, RequestBody};
use crate::Body;
use bytes::Bytes;
use duanlian_write::Operation;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value};

impl Admin {
    pub(super) fn metrics(&self) -> Answer {
        let Some((metrics, health)) = &self.metrics else {
            return Err(Problem::not_found("metrics are not enabled"));
        };
        let mut r = Response::new(Body::new(Bytes::from(metrics.render(
            &self.index,
            health,
            self.writes.as_ref(),
        ))));
        r.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        Ok(r)
    }

    pub(super) async fn compact(&self) -> Answer {
        if let Some(e) = self.writes.refuses(Operation::Compact) {
            return Err(write_problem(e));
        }
        let result = self.writes.compact().await;
        if let Some((metrics, _)) = &self.metrics {
            metrics.record_compaction("api", result.is_ok());
        }
        let report = result.map_err(write_problem)?;
        Ok(json_response(
            StatusCode::OK,
            &json!({
                "sequence": report.sequence,
                "links": report.links,
                "segments_removed": report.segments_removed,
                "elapsed_ms": report.elapsed.as_millis() as u64,
            }),
        ))
    }

    fn tls_handle(&self) -> Result<std::sync::Arc<crate::Tls>, Problem> {
        self.tls.clone().ok_or_else(|| {
            Problem::new(
                StatusCode::CONFLICT,
                "no-tls",
                "TLS not enabled",
                "this node serves plain HTTP; start it with --tls-cert and --tls-key, --tls-dir or --acme-directory",
            )
        })
    }

    pub(super) fn tls_certificates(&self) -> Answer {
        let tls = self.tls_handle()?;
        Ok(json_response(
            StatusCode::OK,
            &json!({ "certificates": certificates_json(&tls.certificates()) }),
        ))
    }

    pub(super) async fn tls_reload(&self) -> Answer {
        let tls = self.tls_handle()?;
        let reloaded = tokio::task::spawn_blocking(move || tls.reload())
            .await
            .map_err(|e| internal(&e.to_string()))?;
        match reloaded {
            Ok(certs) => Ok(json_response(
                StatusCode::OK,
                &json!({ "certificates": certificates_json(&certs) }),
            )),
            // The files are at fault: nothing changed, as with a bad snapshot.
            Err(e) => Err(Problem::invalid(vec![field("certificates", "bad_file", e)])),
        }
    }

    pub(super) async fn reload<B: RequestBody>(&self, req: Request<B>) -> Answer {
        if let Some(e) = self.writes.refuses(Operation::LoadBulk) {
            return Err(write_problem(e));
        }
        let Some(reloader) = self.reloader.clone() else {
            return Err(Problem::new(
                StatusCode::CONFLICT,
                "no-reload",
                "Snapshot loading not enabled",
                "this node serves its built-in links only; start it with --data-dir or --snapshot",
            ));
        };
        let body = self.json_body(req).await?;
        let path = match body.as_object().map(|o| (o.get("path"), o.len())) {
            Some((Some(Value::String(p)), 1)) => std::path::PathBuf::from(p),
            _ => {
                return Err(Problem::invalid(vec![field(
                    "path",
                    "required",
                    "send {\"path\": \"/path/to/file.snap\"} and nothing else",
                )]))
            }
        };
        match reloader.reload(&path).await {
            Ok(r) => Ok(json_response(
                StatusCode::OK,
                &json!({
                    "path": r.path.display().to_string(),
                    "links": r.links,
                    "elapsed_ms": r.elapsed.as_millis() as u64,
                }),
            )),
            Err(e) if e.is_bad_file() => Err(Problem::invalid(vec![field("path", "bad_file", e)])),
            Err(crate::ReloadError::Write(e)) => Err(write_problem(e)),
            Err(e) => Err(internal(&e.to_string())),
        }
    }
}

fn certificates_json(certs: &[crate::CertificateInfo]) -> Value {
    let now = duanlian_link::now_secs();
    certs
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "file": c.file.display().to_string(),
                "not_after": duanlian_link::format_rfc3339(c.not_after),
                "seconds_left": c.not_after - now,
            })
        })
        .collect()
}
