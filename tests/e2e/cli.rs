//! The `duanlian snapshot` commands and their error messages.
use crate::util::{run, s, snapshot_build, stderr, stdout, Server, TempDir};
use std::process::Output;

/// A failure the way a person should see it: exit code 1, one clean message, no panic.
fn assert_clean_failure(o: &Output, expect: &str) {
    let err = stderr(o);
    assert_eq!(
        o.status.code(),
        Some(1),
        "exit status {:?}, stderr: {err}",
        o.status
    );
    assert!(!err.contains("panicked"), "panic: {err}");
    assert!(err.contains(expect), "expected {expect:?} in: {err}");
}

fn build(dir: &TempDir, name: &str, contents: &str, extra: &[&str]) -> Output {
    let input = dir.file(name, contents.as_bytes());
    snapshot_build(&input, &dir.path("out.snap"), extra)
}

#[test]
fn build_inspect_verify_round_trip() {
    let dir = TempDir::new();
    let o = build(
        &dir,
        "links.csv",
        "code,url,domain,redirect\nabc,https://a.example/1,Go.Example.CN,301\nabd,https://a.example/2,,\n",
        &["--default-domain", "s.example.com"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("2 links"));
    let snap = dir.path("out.snap");
    let i = run(&["snapshot", "inspect", s(&snap)]);
    assert!(i.status.success());
    let text = stdout(&i);
    assert!(text.contains("format version  5"), "{text}");
    assert!(text.contains("links           2"), "{text}");
    assert!(text.contains("sequence        0"), "{text}");
    assert!(
        text.contains("go.example.cn") && text.contains("s.example.com"),
        "{text}"
    );
    let v = run(&["snapshot", "verify", s(&snap)]);
    assert!(v.status.success(), "{}", stderr(&v));
    assert!(stdout(&v).contains("ok: 2 links on 2 domains"));
}

#[test]
fn jsonl_input_builds_the_same_links() {
    let dir = TempDir::new();
    let o = build(
        &dir,
        "links.jsonl",
        "{\"domain\":\"go.example.cn\",\"code\":\"j1\",\"url\":\"https://a.example/1\",\"redirect\":308}\n\n\
         {\"domain\":\"go.example.cn\",\"code\":\"j2\",\"url\":\"https://a.example/2\",\"expires_at\":4000000000,\"valid_since\":null}\n",
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v = run(&["snapshot", "verify", s(&dir.path("out.snap"))]);
    assert!(
        stdout(&v).contains("ok: 2 links on 1 domain (1 with an expiry)"),
        "{}",
        stdout(&v)
    );
}

#[test]
fn bad_rows_name_file_line_and_field() {
    let dir = TempDir::new();
    let cases: &[(&str, &str, &str)] = &[
        ("a.csv", "domain,code,url\ngo.example.cn,ok,https://a.example/\ngo.example.cn,bad/code,https://a.example/\n", "a.csv:3: code: code has '/'"),
        ("b.csv", "domain,code,url\ngo.example.cn,x,javascript:alert(1)\n", "b.csv:2: url: url must start with http:// or https://"),
        ("c.csv", "domain,code,url\ngo.example.cn,x,\"https://a.example/\r\nSet-Cookie: a=b\"\n", "c.csv:2: url: url has a control character or white space at byte 18"),
        ("d.csv", "domain,code,url\nbad_domain,x,https://a.example/\n", "d.csv:2: domain: not a host name"),
        ("e.csv", "domain,code,url,redirect\ngo.example.cn,x,https://a.example/,303\n", "e.csv:2: redirect: redirect 303 is not one of 301, 302, 307, 308"),
        ("f.csv", "domain,code,url,expires_at\ngo.example.cn,x,https://a.example/,tomorrow\n", "f.csv:2: expires_at: \"tomorrow\" is neither UTC seconds nor an RFC 3339 time"),
        ("g.csv", "domain,code,url\ngo.example.cn,x\n", "g.csv:2: row: has 2 fields, the header has 3"),
        ("h.csv", "domain,code,link\ngo.example.cn,x,https://a.example/\n", "h.csv:1: header: unknown column \"link\""),
        ("i.csv", "domain,url\ngo.example.cn,https://a.example/\n", "i.csv:1: header: required column \"code\" is missing"),
        ("j.csv", "code,url\nx,https://a.example/\n", "j.csv:2: domain: missing, and no --default-domain given"),
        ("k.csv", "domain,code,url\ngo.example.cn,x,\n", "k.csv:2: url: is required"),
        ("l.csv", "domain,code,url,valid_since,expires_at\ngo.example.cn,x,https://a.example/,20,10\n", "l.csv:2: valid_since: valid_since must be before expires_at"),
        ("m.jsonl", "{\"domain\":\"go.example.cn\",\"code\":\"x\",\"url\":\"https://a/\",\"colour\":1}\n", "m.jsonl:1: colour: unknown field"),
        ("n.jsonl", "{\"code\":\"x\",\"url\":\"https://a/\"}\n{not json\n", "n.jsonl:2: row: not valid JSON"),
        ("o.jsonl", "{\"domain\":\"go.example.cn\",\"code\":7,\"url\":\"https://a/\"}\n", "o.jsonl:1: code: must be a string"),
        ("p.jsonl", "[1,2]\n", "p.jsonl:1: row: expected a JSON object"),
    ];
    for (name, contents, expect) in cases {
        let o = build(
            &dir,
            name,
            contents,
            &["--default-domain", "d.example"][..if name.starts_with('j') { 0 } else { 2 }],
        );
        assert_clean_failure(&o, expect);
        assert!(
            !dir.path("out.snap").exists(),
            "{name}: a failed build must not leave a snapshot"
        );
    }
    let crlf = build(
        &dir,
        "q.csv",
        "domain,code,url\r\ngo.example.cn,x,https://a.example/\r\ngo.example.cn,y,ftp://a\r\n",
        &[],
    );
    assert_clean_failure(&crlf, "q.csv:3: url");
    let bad_utf8 = build(
        &dir,
        "r.csv",
        "domain,code,url\ngo.example.cn,\u{fffd},https://a/\n",
        &[],
    );
    assert_clean_failure(&bad_utf8, "r.csv:2: code");
}

#[test]
fn duplicates_are_listed_with_both_lines() {
    let dir = TempDir::new();
    let o = build(
        &dir,
        "dup.csv",
        "domain,code,url\ngo.example.cn,a,https://x/1\ngo.example.cn,b,https://x/2\nGO.example.cn,a,https://x/3\ns.example.com,a,https://x/4\ngo.example.cn,b,https://x/5\n",
        &[],
    );
    assert_clean_failure(&o, "dup.csv: 2 duplicate (domain, code) pairs");
    let err = stderr(&o);
    assert!(
        err.contains("dup.csv:4: code: go.example.cn/a already defined at line 2"),
        "{err}"
    );
    assert!(
        err.contains("dup.csv:6: code: go.example.cn/b already defined at line 3"),
        "{err}"
    );
}

#[test]
fn input_problems_are_named() {
    let dir = TempDir::new();
    let missing = dir.path("missing.csv");
    let o = snapshot_build(&missing, &dir.path("o.snap"), &[]);
    assert_clean_failure(&o, "missing.csv");
    let txt = dir.file("links.txt", b"code,url\n");
    let o = snapshot_build(&txt, &dir.path("o.snap"), &[]);
    assert_clean_failure(&o, "pass --format csv or --format jsonl");
}

#[test]
fn malformed_snapshots_get_clean_messages_from_every_command() {
    let dir = TempDir::new();
    let good = build(
        &dir,
        "g.csv",
        "domain,code,url\ngo.example.cn,a,https://x/1\ngo.example.cn,b,https://x/2\n",
        &[],
    );
    assert!(good.status.success());
    let bytes = std::fs::read(dir.path("out.snap")).expect("read");
    let mut flipped = bytes.clone();
    let mid = bytes.len() / 2;
    flipped[mid] ^= 0x40;
    let mut header_flip = bytes.clone();
    header_flip[30] ^= 1;
    let mut version = bytes.clone();
    version[8] = 9;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty.snap", vec![], "file is empty"),
        (
            "magic.snap",
            b"PK\x03\x04 this is a zip file, not a snapshot at all, padding padding padding"
                .to_vec(),
            "bad magic",
        ),
        (
            "short.snap",
            bytes[..20].to_vec(),
            "truncated: 20 bytes, the header says 64",
        ),
        ("cut.snap", bytes[..bytes.len() - 7].to_vec(), "truncated"),
        ("flip.snap", flipped, "checksum mismatch"),
        ("header.snap", header_flip, "header checksum mismatch"),
        ("version.snap", version, "unsupported format version 9"),
    ];
    for (name, contents, expect) in cases {
        let p = dir.file(name, &contents);
        for cmd in ["inspect", "verify"] {
            let o = run(&["snapshot", cmd, s(&p)]);
            assert_clean_failure(&o, expect);
            assert_clean_failure(&o, name);
        }
        let o = run(&["serve", "--snapshot", s(&p), "--listen", "127.0.0.1:0"]);
        assert_clean_failure(&o, expect);
    }
    let o = run(&["snapshot", "inspect", s(&dir.0)]);
    assert_eq!(o.status.code(), Some(1), "a directory: {}", stderr(&o));
    let o = run(&["snapshot", "verify", s(&dir.path("nope.snap"))]);
    assert_clean_failure(&o, "nope.snap");
}

#[test]
fn golden_snapshot_opens_with_the_cli() {
    let golden = concat!(env!("CARGO_MANIFEST_DIR"), "/data/golden/snapshot-v1.snap");
    let o = run(&["snapshot", "verify", golden]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("ok: 45 links on 2 domains"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn crlf_and_bom_csv_files_build() {
    let dir = TempDir::new();
    let o = build(
        &dir,
        "win.csv",
        "\u{feff}domain,code,url\r\ngo.example.cn,a,https://x.example/1\r\ngo.example.cn,b,\"https://x.example/2\"\r\n",
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v = run(&["snapshot", "verify", s(&dir.path("out.snap"))]);
    assert!(stdout(&v).contains("ok: 2 links"), "{}", stderr(&v));
}

#[test]
fn help_states_each_default_once() {
    for cmd in [
        &["serve", "--help"][..],
        &["snapshot", "build", "--help"],
        &["compact", "--help"],
        &["snapshot", "publish", "--help"],
    ] {
        let help = stdout(&run(cmd));
        assert!(help.contains("[default:"), "{cmd:?}: {help}");
        for entry in help.split("\n      -") {
            assert!(
                !(entry.contains("Default is") && entry.contains("[default:")),
                "{cmd:?} says its default twice: {entry}"
            );
        }
    }
}

/// Every `serve` flag can come from the environment, and the README's manual names every one.
#[test]
fn every_serve_flag_has_a_variable_and_a_readme_entry() {
    let help = stdout(&run(&["serve", "--help"]));
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let mut entries: Vec<String> = Vec::new();
    for line in help.lines() {
        let indent = line.len() - line.trim_start().len();
        if line.trim_start().starts_with('-') && indent <= 6 {
            entries.push(String::new());
        }
        if let Some(entry) = entries.last_mut() {
            entry.push_str(line);
            entry.push('\n');
        }
    }
    assert!(entries.len() > 30, "{help}");
    for entry in &entries {
        let flag = entry
            .split_whitespace()
            .find(|w| w.starts_with("--"))
            .map(|w| w.trim_end_matches(','))
            .unwrap_or_default();
        if flag == "--help" {
            continue;
        }
        assert!(
            entry.contains("[env: DUANLIAN_"),
            "{flag} has no environment variable: {entry}"
        );
        assert!(
            readme.contains(&format!("`{flag}")),
            "the README does not name {flag}"
        );
    }
}

/// One run names every bad row (up to 100, then a count), so a file is fixed in one pass.
/// Excel in China saves "CSV" as GBK: `auto` reads it, a forced UTF-8 says what to do.
#[test]
fn snapshot_build_reads_gbk_from_excel() {
    let dir = TempDir::new();
    let text =
        "domain,code,url,expired_url\ngo.example.cn,gbk1,https://shop.example.cn/商品?颜色=红,\n";
    let (gbk, _, unmappable) = encoding_rs::GBK.encode(text);
    assert!(!unmappable);
    let input = dir.file("excel.csv", &gbk);
    let utf8 = dir.file("utf8.csv", text.as_bytes());
    let mut locations = Vec::new();
    for (file, out) in [(&input, "gbk.snap"), (&utf8, "utf8.snap")] {
        let out = dir.path(out);
        let o = snapshot_build(file, &out, &[]);
        assert!(o.status.success(), "{}", stderr(&o));
        let srv = Server::start(&["--snapshot", s(&out)]);
        let r = srv.request("GET", "go.example.cn", "/gbk1");
        assert_eq!(r.status, 302);
        locations.push(r.header("location").map(str::to_owned));
    }
    assert_eq!(locations[0], locations[1]);
    let location = locations[0].clone().unwrap_or_default();
    assert!(
        location.starts_with("https://shop.example.cn/%E5%95%86%E5%93%81?"),
        "{location}"
    );
    let out = dir.path("forced.snap");
    let o = snapshot_build(&input, &out, &["--encoding", "utf-8"]);
    assert_clean_failure(&o, "excel.csv:2: url: not valid UTF-8");
    assert!(stderr(&o).contains("encoding gbk"), "{}", stderr(&o));
}

#[test]
fn snapshot_build_names_every_bad_row() {
    let dir = TempDir::new();
    let o = build(
        &dir,
        "links.csv",
        "domain,code,url\ngo.example.cn,ok1,https://a.example/\ngo.example.cn,b1,ftp://x/\ngo.example.cn,ok2,https://a.example/2\ngo.example.cn,b 2,https://a.example/3\n,b3,https://a.example/4\n",
        &[],
    );
    assert_clean_failure(&o, "links.csv:3: url");
    let err = stderr(&o);
    assert!(err.contains("links.csv:5: code"), "{err}");
    assert!(err.contains("links.csv:6: domain"), "{err}");
    assert!(!err.contains(":2:") && !err.contains(":4:"), "{err}");
    let mut csv = String::from("domain,code,url\n");
    for i in 0..105 {
        csv.push_str(&format!("go.example.cn,c{i},not-a-url\n"));
    }
    let o = build(&dir, "many.csv", &csv, &[]);
    assert_clean_failure(&o, "many.csv:101: url");
    let err = stderr(&o);
    assert!(!err.contains("many.csv:102:"), "{err}");
    assert!(err.contains("many.csv: ... and 5 more bad rows"), "{err}");
    // Blank lines (CRLF ones too, as Excel writes them) are skipped and still counted, and a
    // quoted cell over two lines is one row on its first line.
    let o = build(
        &dir,
        "excel.csv",
        "domain,code,url\r\ngo.example.cn,a,https://a.example/\r\n\r\n\"go.example.cn\",\"q\",\"https://a.example/\r\nx\"\r\n\r\ngo.example.cn,b,ftp://x\r\n\r\n",
        &[],
    );
    assert_clean_failure(&o, "excel.csv:4: url");
    let err = stderr(&o);
    assert!(err.contains("excel.csv:7: url"), "{err}");
}

/// `snapshot build --help` names every column a bulk file may have.
#[test]
fn snapshot_build_help_names_every_column() {
    let o = run(&["snapshot", "build", "--help"]);
    assert!(o.status.success());
    let help = stdout(&o);
    for column in duanlian_input::Form::Bulk.fields() {
        assert!(help.contains(column), "{column} missing from: {help}");
    }
    assert!(help.contains("--encoding"), "{help}");
}

/// A failed write names the file asked for, not the temporary file beside it.
#[test]
fn a_failed_write_names_the_output_file() {
    let dir = TempDir::new();
    let input = dir.file(
        "links.csv",
        b"domain,code,url\ngo.example.cn,a,https://a.example/\n",
    );
    let output = dir.path("missing/out.snap");
    let o = snapshot_build(&input, &output, &[]);
    assert_clean_failure(
        &o,
        &format!("{}: No such file or directory", output.display()),
    );
    assert!(!stderr(&o).contains(".tmp."), "{}", stderr(&o));
}
