//! Differential tests: our hand-written URL and RFC 3339 parsers against the `url` crate (the
//! WHATWG URL standard browsers follow) and the `time` crate. Whatever we accept must parse there
//! too and mean the same: the same scheme and host for a URL, the same instant for a time.
//! `PROPTEST_CASES` raises the number of cases.
use proptest::prelude::*;

fn host_char() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9]{1,10}",
        "[A-Za-z0-9-]{1,10}",
        "[a-z]{1,5}\\.[a-z]{2,4}",
        "[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}",
        "\\[[0-9a-f:]{2,20}\\]",
        ".{0,6}",
    ]
}

fn url_like() -> impl Strategy<Value = String> {
    (
        prop_oneof!["https?", "HTTPS?", "ftp", "[a-z]{1,5}"],
        prop_oneof!["://", ":/", ":", "//"],
        host_char(),
        prop_oneof!["", ":[0-9]{1,6}", ":", ":x"],
        prop_oneof![
            "",
            "/[a-zA-Z0-9/._~%-]{0,20}",
            "/商品/[0-9]{1,3}",
            "/[^ #?]{0,12}"
        ],
        prop_oneof!["", "\\?[a-z=&%0-9]{0,16}", "\\?.{0,8}"],
        prop_oneof!["", "#[a-z]{0,6}", "#.{0,4}"],
    )
        .prop_map(|(s, sep, h, port, path, q, f)| format!("{s}{sep}{h}{port}{path}{q}{f}"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn accepted_urls_parse_the_same_in_the_url_crate(input in url_like()) {
        if let Ok(ours) = duanlian_link::parse_url(&input) {
            let theirs = url::Url::parse(&ours);
            prop_assert!(theirs.is_ok(), "we accept {ours:?} (from {input:?}); url says {theirs:?}");
            let theirs = theirs.expect("checked");
            prop_assert!(matches!(theirs.scheme(), "http" | "https"), "{ours:?}");
            prop_assert!(theirs.username().is_empty() && theirs.password().is_none(), "{ours:?}");
            // Our host is lowercase without port or trailing dot; theirs is the WHATWG
            // serialisation (IPv4 normalised, IPv6 bracketed and compressed).
            let host = duanlian_link::url_host(&ours).unwrap_or_default();
            let their_host = theirs.host_str().unwrap_or_default().trim_end_matches('.').to_owned();
            let same = host == their_host
                || theirs.host().is_some_and(|h| matches!(h, url::Host::Ipv4(_) | url::Host::Ipv6(_)));
            prop_assert!(same, "host {host:?} vs {their_host:?} in {ours:?}");
        }
    }

    #[test]
    fn accepted_times_are_the_same_instant_in_the_time_crate(
        y in 1000i32..=9999, mo in 1u8..=12, d in 1u8..=31,
        h in 0u8..=23, mi in 0u8..=59, s in 0u8..=59,
        frac in prop_oneof![Just(String::new()), "\\.[0-9]{1,9}"],
        zone in prop_oneof![Just("Z".to_owned()), "[+-](0[0-9]|1[0-9]|2[0-3]):[0-5][0-9]"],
    ) {
        let text = format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{frac}{zone}");
        let ours = duanlian_link::parse_rfc3339(&text);
        let theirs = time::OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc3339)
            .map(|t| t.unix_timestamp());
        match (ours, theirs) {
            (Some(a), Ok(b)) => prop_assert_eq!(a, b, "{}", text),
            (None, Err(_)) => {}
            (a, b) => prop_assert!(false, "{text}: ours {a:?}, time's {b:?}"),
        }
    }
}

#[test]
fn known_differences_are_only_the_documented_extensions() {
    // A plain date (midnight UTC) and a space or lowercase separator are our documented
    // extensions to RFC 3339; the time crate refuses them, and they mean what we say.
    assert_eq!(
        duanlian_link::parse_rfc3339("2026-12-01"),
        Some(1_796_083_200)
    );
    assert_eq!(
        duanlian_link::parse_rfc3339("2026-12-01 08:00:00+08:00"),
        Some(1_796_083_200)
    );
}
