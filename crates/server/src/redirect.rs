//! The redirect answer, as a pure function of request and index.
use bytes::Bytes;
use duanlian_index::Index;
use duanlian_link::{host_key, merge_query, now_secs, Code, HostBuf, State};
use http_body_util::Full;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE, HOST, LOCATION};
use hyper::{Method, Request, Response, StatusCode};

/// The response body type of every answer.
pub type Body = Full<Bytes>;

const TEXT: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");

/// Answers one request on the redirect listener.
///
/// Never panics and never allocates for a redirect beyond the response itself; every failure
/// is a status code.
pub fn respond<B>(index: &Index, req: &Request<B>) -> Response<Body> {
    // hyper writes no body for HEAD (but keeps Content-Length), so HEAD needs no case of its own.
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    // HTTP/1.1 requires Host; an absolute-form request line carries it in the URI instead.
    let host = match req.headers().get(HOST) {
        Some(h) => h.as_bytes(),
        None => match req.uri().authority() {
            Some(a) => a.as_str().as_bytes(),
            None => return text(StatusCode::BAD_REQUEST, "missing Host header\n"),
        },
    };
    let mut buf = HostBuf::default();
    let Some(domain) = host_key(host, &mut buf) else {
        return not_found();
    };
    let Some(code) = req.uri().path().strip_prefix('/') else {
        return text(StatusCode::BAD_REQUEST, "bad request target\n");
    };
    // A trailing slash, a second segment or a stray character can never name a link.
    if !Code::is_valid(code.as_bytes()) {
        return not_found();
    }
    index.resolve(domain, code, |link| {
        let Some(link) = link else {
            return not_found();
        };
        // Permanent links skip the clock; bounded ones are decided here, on every read.
        if link.validity.is_bounded() {
            match link.validity.state_at(now_secs()) {
                State::Active => {}
                State::Pending => return not_found(),
                State::Expired => return text(StatusCode::GONE, "this link has expired\n"),
            }
        }
        let location = match req.uri().query() {
            // Only a request with a query string pays for building a new URL.
            Some(q) if link.forward_query && !q.is_empty() => {
                HeaderValue::from_maybe_shared(Bytes::from(merge_query(link.url, q.as_bytes())))
            }
            _ => HeaderValue::from_bytes(link.url),
        };
        let Ok(location) = location else {
            // Unreachable for links that passed the link model; refuse rather than emit it.
            return text(StatusCode::INTERNAL_SERVER_ERROR, "invalid stored target\n");
        };
        let mut r = Response::new(Body::default());
        *r.status_mut() = StatusCode::from_u16(link.redirect.status()).unwrap_or(StatusCode::FOUND);
        r.headers_mut().insert(LOCATION, location);
        r
    })
}

fn not_found() -> Response<Body> {
    text(StatusCode::NOT_FOUND, "not found\n")
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, TEXT);
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use duanlian_index::Change;
    use duanlian_link::{parse_url, Domain, Link, Redirect, Validity};

    fn index() -> Index {
        let index = Index::empty();
        let put = |code: &str, redirect, validity| {
            index.apply(
                1,
                Change::Put(Link {
                    domain: Domain::parse("go.example.cn").expect("domain"),
                    code: Code::parse(code).expect("code"),
                    url: parse_url(&format!("https://t.example/{code}")).expect("url"),
                    redirect,
                    validity,
                    created_at: 0,
                    forward_query: true,
                }),
            )
        };
        put("ok", Redirect::Found, Validity::ALWAYS);
        put("perm", Redirect::Permanent, Validity::ALWAYS);
        put(
            "old",
            Redirect::Found,
            Validity::new(None, Some(1)).expect("window"),
        );
        put(
            "later",
            Redirect::Found,
            Validity::new(Some(i64::MAX - 1), None).expect("window"),
        );
        index
    }

    fn get(index: &Index, method: &str, host: Option<&str>, uri: &str) -> Response<Body> {
        let mut b = Request::builder().method(method).uri(uri);
        if let Some(h) = host {
            b = b.header(HOST, h);
        }
        respond(index, &b.body(()).expect("request"))
    }

    #[test]
    fn statuses() {
        let ix = index();
        let r = get(&ix, "GET", Some("Go.Example.CN:80"), "/ok");
        assert_eq!(r.status(), 302);
        assert_eq!(r.headers()[LOCATION], "https://t.example/ok");
        assert_eq!(
            get(&ix, "GET", Some("go.example.cn"), "/perm").status(),
            308
        );
        assert_eq!(get(&ix, "GET", Some("go.example.cn"), "/old").status(), 410);
        assert_eq!(
            get(&ix, "GET", Some("go.example.cn"), "/later").status(),
            404
        );
        assert_eq!(get(&ix, "GET", Some("go.example.cn"), "/ok/").status(), 404);
        assert_eq!(get(&ix, "GET", Some("go.example.cn"), "/").status(), 404);
        assert_eq!(get(&ix, "GET", Some("other.cn"), "/ok").status(), 404);
        assert_eq!(get(&ix, "POST", Some("go.example.cn"), "/ok").status(), 405);
        assert_eq!(get(&ix, "GET", None, "/ok").status(), 400);
        assert_eq!(
            get(&ix, "GET", None, "http://go.example.cn/ok").status(),
            302
        );
        assert_eq!(get(&ix, "HEAD", Some("go.example.cn"), "/ok").status(), 302);
        let q = get(&ix, "GET", Some("go.example.cn"), "/ok?utm=1");
        assert_eq!(q.status(), 302);
        assert_eq!(q.headers()[LOCATION], "https://t.example/ok?utm=1");
    }
}
