//! The field reader as the API and bulk files use it.
use duanlian_input::{Fields, Form, Rules, Value};
use duanlian_link::Domain;
use serde_json::json;

fn domains() -> Vec<Domain> {
    vec![
        Domain::parse("go.example.cn").expect("ok"),
        Domain::parse("s.example.com").expect("ok"),
    ]
}

fn create(body: serde_json::Value) -> Result<duanlian_write::NewLink, Vec<String>> {
    let d = domains();
    Fields::from_object(Form::Create, body.as_object().expect("ok"))
        .new_link(&Rules::api(&d, 7), 1_000_000)
        .map_err(|e| e.into_iter().map(|e| e.to_string()).collect())
}

#[test]
fn bad_targets_name_the_url() {
    for url in [
        "javascript:alert(1)",
        "https://a.example/\r\nSet-Cookie: x=1",
        "https://a.example/\u{0}",
        "/relative/path",
        "https://go.example.cn/loop",
        "https://S.EXAMPLE.COM:443/loop",
        "",
    ] {
        let errs = create(json!({ "url": url })).expect_err(url);
        assert!(
            errs.iter().all(|e| e.starts_with("url: ")),
            "{url}: {errs:?}"
        );
    }
}

#[test]
fn every_bad_field_is_named_at_once() {
    let errs = create(
        json!({"url": "ftp://x", "colour": "red", "code_length": 1000, "forward_query": "yes"}),
    )
    .expect_err("refused");
    let named: Vec<&str> = errs
        .iter()
        .map(|e| e.split(':').next().expect("ok"))
        .collect();
    for f in ["url", "colour", "code_length", "forward_query"] {
        assert!(named.contains(&f), "{f} in {errs:?}");
    }
}

#[test]
fn a_csv_cell_and_a_json_value_mean_the_same() {
    let d = domains();
    let rules = Rules::bulk(d.first());
    let mut text = Fields::new(Form::Bulk);
    let mut json_fields = Fields::new(Form::Bulk);
    let cells = [
        (
            "url",
            "https://shop.example.cn/item/1",
            json!("https://shop.example.cn/item/1"),
        ),
        ("code", "x7Kp2Qa", json!("x7Kp2Qa")),
        (
            "expires_at",
            "2027-01-01T00:00:00+08:00",
            json!("2027-01-01T00:00:00+08:00"),
        ),
        ("valid_since", "1700000000", json!(1_700_000_000)),
        ("max_visits", "20", json!(20)),
        ("redirect", "301", json!(301)),
        ("forward_query", "override", json!("override")),
    ];
    for (k, t, j) in &cells {
        text.read(k, Value::Text(t));
        json_fields.read(k, Value::Json(j));
    }
    let a = text.link(&rules, 5).expect("ok");
    let b = json_fields.link(&rules, 5).expect("ok");
    assert_eq!(a, b);
    assert_eq!(a.validity.expires_at, Some(1_798_732_800));
    assert_eq!(a.validity.max_visits, Some(20));
}

#[test]
fn a_patch_cannot_move_a_link_and_null_removes() {
    let d = domains();
    let obj = json!({"domain": "s.example.com", "code": "abc"});
    let errs = Fields::from_object(Form::Patch, obj.as_object().expect("ok"))
        .patch(&Rules::api(&d, 7), 0)
        .expect_err("refused");
    assert_eq!(errs.len(), 2);
    let obj = json!({"max_visits": null, "expires_at": null, "expired_url": null});
    let p = Fields::from_object(Form::Patch, obj.as_object().expect("ok"))
        .patch(&Rules::api(&d, 7), 0)
        .expect("ok");
    assert_eq!(p.max_visits, Some(None));
    assert_eq!(p.expires_at, Some(None));
    assert_eq!(p.expired_url, Some(None));
    assert_eq!(p.url, None);
}

#[test]
fn past_expiries_are_a_mistake_in_a_request_but_history_in_a_file() {
    let d = domains();
    let body = json!({"url": "https://a.example/", "expires_at": 10});
    let errs = create(body.clone()).expect_err("refused");
    assert_eq!(errs, ["expires_at: is in the past"]);
    let mut row = Fields::new(Form::Bulk);
    row.read_object(body.as_object().expect("ok"));
    row.read("code", Value::Text("old"));
    let link = row.link(&Rules::bulk(d.first()), 1_000_000).expect("ok");
    assert_eq!(link.validity.expires_at, Some(10));
}
