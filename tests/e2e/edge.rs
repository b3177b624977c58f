//! Edge cases of the redirect path through the real binary: percent-escaped codes.
use crate::util::{build_snapshot, s, KeepAlive, Response, Server, TempDir};

const CSV: &str = "domain,code,url,redirect,expires_at,valid_since\n\
                   go.example.cn,x7Kp2Qa,https://shop.example.com/item/42?utm_source=sms,,,\n\
                   go.example.cn,a-b_c,https://example.com/dash,301,,\n";

fn server(extra: &[&str]) -> (TempDir, Server) {
    let dir = TempDir::new();
    let snap = build_snapshot(&dir, CSV);
    let mut args = vec!["--snapshot", s(&snap), "--threads", "1"];
    args.extend_from_slice(extra);
    let server = Server::start(&args);
    (dir, server)
}

fn answer(r: &Response) -> (u16, Option<&str>) {
    (r.status, r.header("location"))
}

#[test]
fn percent_escaped_codes_redirect_like_plain_ones() {
    let (_dir, srv) = server(&[]);
    let plain = srv.request("GET", "go.example.cn", "/x7Kp2Qa");
    assert_eq!(
        answer(&plain),
        (302, Some("https://shop.example.com/item/42?utm_source=sms"))
    );
    let escaped = [
        "/%78%37Kp2Qa",
        "/%78%37%4b%70%32%51%61",
        "/x7Kp2Q%61",
        "/%78%37%4B%70%32%51%61",
    ];
    for path in escaped {
        let r = srv.request("GET", "go.example.cn", path);
        assert_eq!(answer(&r), answer(&plain), "{path}");
        assert_eq!(
            srv.request("HEAD", "go.example.cn", path).status,
            302,
            "HEAD {path}"
        );
    }
    // The query string is still forwarded.
    let plain = srv.request("GET", "go.example.cn", "/x7Kp2Qa?ref=qr");
    let r = srv.request("GET", "go.example.cn", "/%78%37Kp2Qa?ref=qr");
    assert_eq!(answer(&r), answer(&plain));
    assert_eq!(plain.status, 302);
    // Only the code is decoded: the query string goes on as it came, escapes and all.
    let r = srv.request("GET", "go.example.cn", "/%78%37Kp2Qa?q=%zz%2F");
    assert_eq!(
        answer(&r),
        (
            302,
            Some("https://shop.example.com/item/42?utm_source=sms&q=%zz%2F")
        )
    );
    let r = srv.request("GET", "go.example.cn", "/a%2Db%5Fc");
    assert_eq!(answer(&r), (301, Some("https://example.com/dash")));
    // The same on one keep-alive connection (its first request and the ones after).
    let mut conn = KeepAlive::connect(srv.port).expect("connect");
    for path in escaped.iter().chain(&["/x7Kp2Qa"]) {
        let r = conn.get("go.example.cn", path).expect("keep-alive request");
        assert_eq!(
            answer(&r),
            (302, Some("https://shop.example.com/item/42?utm_source=sms")),
            "keep-alive {path}"
        );
    }
}

/// Encoded slashes, malformed escapes, decoded bytes no code holds, decoded codes too long.
fn no_code_paths() -> Vec<String> {
    let mut paths: Vec<String> = [
        "/%2Fx7Kp2Qa",
        "/%2fx",
        "/x7Kp2Qa%2F",
        "/%2F",
        "/%zz",
        "/%",
        "/%4",
        "/x7Kp2Qa%",
        "/%%78",
        "/%25",
        "/%00",
        "/%20x7Kp2Qa",
        "/%C3%A9",
        "/%2E%2E%2Fx7Kp2Qa",
        "/%78%37Kp2Qa/",
    ]
    .map(String::from)
    .to_vec();
    paths.push(format!("/{}", "%61".repeat(65)));
    paths
}

#[test]
fn escapes_that_spell_no_code_are_not_found() {
    let (_dir, srv) = server(&[]);
    let mut conn = KeepAlive::connect(srv.port).expect("connect");
    for path in no_code_paths() {
        let r = srv.request("GET", "go.example.cn", &path);
        assert_eq!(answer(&r), (404, None), "{path}");
        assert!(r.body.contains("not found"), "{path}: {}", r.body);
        let r = conn
            .get("go.example.cn", &path)
            .expect("keep-alive request");
        assert_eq!(r.status, 404, "keep-alive {path}");
    }
    // Nothing broke on the way.
    assert_eq!(srv.request("GET", "go.example.cn", "/x7Kp2Qa").status, 302);
}

#[test]
fn escapes_that_spell_no_code_follow_the_domains_not_found_url() {
    let (_dir, srv) = server(&[
        "--not-found-url",
        "go.example.cn=https://www.example.cn/404",
    ]);
    for path in no_code_paths() {
        let r = srv.request("GET", "go.example.cn", &path);
        assert_eq!(
            answer(&r),
            (302, Some("https://www.example.cn/404")),
            "{path}"
        );
    }
    let r = srv.request("GET", "go.example.cn", "/%78%37Kp2Qa");
    assert_eq!(
        answer(&r),
        (302, Some("https://shop.example.com/item/42?utm_source=sms"))
    );
}
