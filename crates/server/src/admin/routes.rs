//! Routing: the request target to a handler, behind the API key.
use super::page;
use super::problem::Problem;
use super::{Admin, Answer, RequestBody};
use crate::Body;
use hyper::header::{HeaderValue, AUTHORIZATION, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};

impl Admin {
    /// `None` when the request may go on; else why not, for the 401's detail (a key that was
    /// sent and is wrong is told apart from none sent: the fixes differ).
    fn refusal<B>(&self, req: &Request<B>) -> Option<&'static str> {
        let given = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
            .or_else(|| req.headers().get("x-api-key").map(|v| v.as_bytes()));
        let Some(given) = given else {
            return Some(
                "no API key sent: send one as 'Authorization: Bearer KEY' or 'X-Api-Key: KEY'",
            );
        };
        // Every key is compared in full, so timing tells nothing about which key or how much
        // of it matched.
        let known = self.opts.api_keys.iter().fold(false, |ok, key| {
            ok | constant_time_eq(key.as_bytes(), given)
        });
        (!known).then_some(
            "the API key sent is not one this node accepts (a typo, or a key that was replaced?)",
        )
    }

    pub(super) async fn route<B: RequestBody>(&self, req: Request<B>) -> Answer {
        let path = req.uri().path().to_owned();
        if path == "/metrics" {
            return self.metrics();
        }
        if req.method() == Method::GET || req.method() == Method::HEAD {
            if let Some(r) = page::asset(&path, req.headers()) {
                return Ok(r);
            }
        }
        let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
        let Some(rest) = segments.strip_prefix(&["api", "v1"]) else {
            return Err(Problem::not_found(format!("no such endpoint: {path}")));
        };
        if let Some(why) = self.refusal(&req) {
            return Err(Problem::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Unauthorized",
                why,
            ));
        }
        let method = req.method().clone();
        match (rest, &method) {
            (["domains"], &Method::GET) => Ok(self.domains()),
            (["links"], &Method::GET) => self.list(req.uri().query().unwrap_or("")).await,
            (["links"], &Method::POST) => self.create(req).await,
            (["links", "batch"], &Method::POST) => self.batch(req).await,
            (["links", "import"], &Method::POST) => self.import(req).await,
            (["links", domain, code], &Method::GET) => self.get(domain, code),
            (["links", domain, code, image @ ("qr.svg" | "qr.png")], &Method::GET) => {
                self.qr(domain, code, image, req.uri().query().unwrap_or(""))
            }
            (["links", domain, code, "stats"], &Method::GET) => {
                self.stats(domain, code, req.uri().query().unwrap_or(""))
            }
            (["links", domain, code], &Method::PATCH) => self.patch(domain, code, req).await,
            (["links", domain, code], &Method::DELETE) => self.delete(domain, code).await,
            (["admin", "compact"], &Method::POST) => self.compact().await,
            (["admin", "snapshot"], &Method::POST) => self.reload(req).await,
            (["admin", "tls"], &Method::GET) => self.tls_certificates(),
            (["admin", "tls", "reload"], &Method::POST) => self.tls_reload().await,
            (
                ["domains"]
                | ["links"]
                | ["links", "batch"]
                | ["links", _, _]
                | ["admin", "compact"]
                | ["admin", "snapshot"]
                | ["admin", "tls"]
                | ["admin", "tls", "reload"],
                _,
            ) => Err(Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
                format!("{method} is not allowed on {path}"),
            )),
            _ => Err(Problem::not_found(format!("no such endpoint: {path}"))),
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// `a=1&b=x%2Fy` into decoded pairs (`+` is a space, as in forms), by the WHATWG
/// `application/x-www-form-urlencoded` rules.
pub(super) fn parse_query(q: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(q.as_bytes()).into_owned().collect()
}

/// Adds `WWW-Authenticate` to 401 answers, as RFC 9110 asks.
pub(crate) fn finish(mut r: Response<Body>) -> Response<Body> {
    if r.status() == StatusCode::UNAUTHORIZED {
        r.headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        assert_eq!(
            parse_query("domain=go.example.cn&cursor=a.cn%2Fx&limit=5&q=a+b&bad=%zz&end=%4"),
            vec![
                ("domain".into(), "go.example.cn".into()),
                ("cursor".into(), "a.cn/x".into()),
                ("limit".into(), "5".into()),
                ("q".into(), "a b".into()),
                ("bad".into(), "%zz".into()),
                ("end".into(), "%4".into()),
            ]
        );
    }

    #[test]
    fn key_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
