//! The admin API in-process: `Admin::handle` takes any request body, so these run without a
//! listener or a process, against a small in-memory writer.
use bytes::Bytes;
use duanlian_index::{Change, Index};
use duanlian_link::{Code, Domain};
use duanlian_server::{Admin, AdminOptions};
use duanlian_write::{
    random_code, Compacted, Op, Outcome, WriteError, WriteFuture, Writes, Written,
};
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Creates straight into the index: enough to exercise everything in front of a writer.
#[derive(Debug)]
struct Memory {
    index: Arc<Index>,
    seq: AtomicU64,
}

impl Writes for Memory {
    fn submit(&self, op: Op) -> WriteFuture<'_, Written> {
        Box::pin(async move {
            let Op::Create(new) = op else {
                return Err(WriteError::Failed("only creates in this test".into()));
            };
            let mut links = Vec::new();
            for n in new {
                let code = match n.code.clone() {
                    Some(c) => c,
                    None => Code::parse_new(&random_code(n.code_length)?)
                        .map_err(WriteError::Invalid)?,
                };
                let link = n.into_link(code, 1_764_000_000);
                let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
                self.index.apply(seq, Change::Put(link.clone()));
                links.push(link);
            }
            Ok(Written {
                outcome: Outcome::Created(links),
                revision: None,
            })
        })
    }

    fn compact(&self) -> WriteFuture<'_, Compacted> {
        Box::pin(async { Err(WriteError::NotHere("no journal here".into())) })
    }

    fn load_bulk<'a>(&'a self, _path: &'a Path) -> WriteFuture<'a, Compacted> {
        Box::pin(async { Err(WriteError::NotHere("no bulk files here".into())) })
    }
}

fn admin() -> Admin {
    let index = Arc::new(Index::empty());
    let opts = AdminOptions {
        domains: vec![Domain::parse("go.example.cn").expect("domain")],
        api_keys: vec!["k".into()],
        max_body_bytes: 1024,
        ..AdminOptions::default()
    };
    let writes = Arc::new(Memory {
        index: index.clone(),
        seq: AtomicU64::new(0),
    });
    Admin::new(opts, index, writes)
}

async fn call(
    admin: &Admin,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: &str,
) -> (StatusCode, Value) {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json");
    if let Some(k) = key {
        req = req.header("authorization", format!("Bearer {k}"));
    }
    let req = req
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("request");
    let res = admin.handle(req).await;
    let status = res.status();
    let bytes = res.into_body().collect().await.expect("body").to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn creates_reads_and_refuses_in_process() {
    let a = admin();
    let (status, link) = call(
        &a,
        "POST",
        "/api/v1/links",
        Some("k"),
        r#"{"url":"https://shop.example.com/1","code":"abc1"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{link}");
    assert_eq!(link["short_url"], "https://go.example.cn/abc1");
    let (status, got) = call(&a, "GET", "/api/v1/links/go.example.cn/abc1", Some("k"), "").await;
    assert_eq!(
        (status, &got["url"]),
        (StatusCode::OK, &json!("https://shop.example.com/1"))
    );
    let (status, problem) = call(
        &a,
        "POST",
        "/api/v1/links",
        Some("k"),
        r#"{"url":"ftp://x"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem["invalid_fields"][0]["name"], "url", "{problem}");
    let (status, _) = call(&a, "POST", "/api/v1/links", None, "{}").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let big = format!(r#"{{"url":"https://a.example/{}"}}"#, "x".repeat(2000));
    let (status, _) = call(&a, "POST", "/api/v1/links", Some("k"), &big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let (status, problem) = call(&a, "POST", "/api/v1/admin/compact", Some("k"), "").await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
}
