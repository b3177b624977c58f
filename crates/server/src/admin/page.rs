//! The operator page: HTML, CSS and JavaScript compiled into the binary, served without an API
//! key (the page asks for one and sends it with each API call). Nothing is fetched from
//! elsewhere, which the Content-Security-Policy also enforces, so it works on a closed network.
use crate::Body;
use bytes::Bytes;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{HeaderMap, Response};

const INDEX: &str = include_str!("page/index.html");
const SCRIPT: &str = include_str!("page/app.js");
const STYLE: &str = include_str!("page/app.css");

const POLICY: HeaderValue = HeaderValue::from_static(
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; \
     connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'",
);

/// `zh` when the browser prefers Chinese to English, else `en`.
pub(super) fn language(headers: &HeaderMap) -> &'static str {
    let Some(value) = headers
        .get(hyper::header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
    else {
        return "en";
    };
    let mut best = ("en", -1.0f32);
    for item in value.split(',') {
        let mut parts = item.split(';');
        let tag = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .find_map(|p| p.trim().strip_prefix("q="))
            .and_then(|q| q.parse::<f32>().ok())
            .unwrap_or(1.0);
        let lang = if tag.starts_with("zh") {
            "zh"
        } else if tag.starts_with("en") {
            "en"
        } else {
            continue;
        };
        if q > best.1 {
            best = (lang, q);
        }
    }
    best.0
}

/// The asset at `path`, if it is one of the page's.
pub(super) fn asset(path: &str, headers: &HeaderMap) -> Option<Response<Body>> {
    let (body, kind) = match path {
        "/" | "/index.html" => (
            Bytes::from(INDEX.replacen("{{LANG}}", language(headers), 1)),
            "text/html; charset=utf-8",
        ),
        "/app.js" => (
            Bytes::from_static(SCRIPT.as_bytes()),
            "text/javascript; charset=utf-8",
        ),
        "/app.css" => (
            Bytes::from_static(STYLE.as_bytes()),
            "text/css; charset=utf-8",
        ),
        _ => return None,
    };
    let mut r = Response::new(Body::new(body));
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("content-security-policy", POLICY);
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lang(v: &str) -> &'static str {
        let mut h = HeaderMap::new();
        h.insert(
            hyper::header::ACCEPT_LANGUAGE,
            HeaderValue::from_str(v).expect("value"),
        );
        language(&h)
    }

    #[test]
    fn follows_accept_language() {
        assert_eq!(lang("zh-CN,zh;q=0.9,en;q=0.8"), "zh");
        assert_eq!(lang("en-US,en;q=0.9,zh-CN;q=0.5"), "en");
        assert_eq!(lang("fr-FR, zh-TW;q=0.7"), "zh");
        assert_eq!(lang("de"), "en");
        assert_eq!(language(&HeaderMap::new()), "en");
    }
}
