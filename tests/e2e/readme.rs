//! The README's examples, run as written: a server started as its first set-up command starts one
//! (no arguments, in an empty directory, so on the sample links), then every shell example of the
//! quick start, the admin API and the statistics in order, with `duanlian` on `PATH`.
//!
//! Two things are changed, as a reader would change them: the server's ports (picked free, so the
//! test runs beside others; the README says 8080 and 8081), and a generated code, which the README
//! shows from its own run. A `console` block's `$ ` lines are commands and the lines after them
//! their output: a JSON answer must have the README's fields with the same values (codes and times
//! apart), other output the README's lines (times apart; an answer with `...` in it is an
//! example, and only has to succeed). Blocks that need what a test cannot have (`/var/lib`, real
//! certificates, NATS, the benchmarks' peers) and the set-up commands themselves are left out, and
//! named on stderr.
use crate::util::{Server, TempDir};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

const README: &str = include_str!("../../README.md");

/// A fenced block: its info string and its lines.
struct Block<'a> {
    lang: &'a str,
    line: usize,
    lines: Vec<&'a str>,
}

fn blocks(text: &str) -> Vec<Block<'_>> {
    let mut out = Vec::new();
    let mut open: Option<Block<'_>> = None;
    for (i, line) in text.lines().enumerate() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(lang)) => {
                open = Some(Block {
                    lang: lang.trim(),
                    line: i + 1,
                    lines: Vec::new(),
                })
            }
            (Some(_), Some(_)) => out.extend(open.take()),
            (Some(b), None) => b.lines.push(line),
            (None, None) => {}
        }
    }
    out
}

/// What a test cannot run: the set-up commands (this run is the second; the server below is
/// the first) and examples for machines with certificates, NATS or the benchmarks' peers.
fn runnable(b: &Block<'_>) -> bool {
    let text = b.lines.join("\n");
    let needs = [
        "cargo ",
        "/var/lib",
        "/etc/",
        "nats",
        "benches/",
        "../shared",
        "pip ",
    ];
    matches!(b.lang, "sh" | "console") && !needs.iter().any(|n| text.contains(n))
}

struct Shell<'a> {
    dir: &'a Path,
    path: String,
    /// Variable assignments from earlier `sh` blocks, run before each command.
    prelude: String,
    /// Text of the README to put in place of other text (ports, generated codes).
    swaps: Vec<(String, String)>,
}

impl Shell<'_> {
    fn swap(&self, s: &str) -> String {
        self.swaps
            .iter()
            .fold(s.to_owned(), |s, (from, to)| s.replace(from, to))
    }

    /// Runs `cmd` (as the README writes it); its exit status and stdout.
    fn run(&self, cmd: &str) -> (bool, String) {
        let script = self.swap(&format!("{}\n{}", self.prelude, cmd));
        let o = Command::new("bash")
            .args(["-c", &script])
            .current_dir(self.dir)
            .env("PATH", &self.path)
            .output()
            .expect("bash");
        let mut out = String::from_utf8_lossy(&o.stdout).into_owned();
        if !o.status.success() {
            out.push_str(&String::from_utf8_lossy(&o.stderr));
        }
        (o.status.success(), out)
    }

    /// Runs `cmd`, which must succeed without an API problem; its stdout.
    fn checked(&self, at: &str, cmd: &str) -> String {
        let (ok, out) = self.run(cmd);
        assert!(ok, "{at}: `{cmd}` failed: {out}");
        assert!(
            !out.contains("/problems/"),
            "{at}: `{cmd}` answered a problem: {out}"
        );
        out
    }
}

/// Values that differ from run to run.
const VOLATILE: [&str; 4] = ["code", "short_url", "created", "created_at"];

fn starts_with_a_time(line: &str) -> bool {
    let b = line.as_bytes();
    b.len() > 11 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-' && b[10] == b'T'
}

#[test]
fn the_readme_examples_run_as_written() {
    let dir = TempDir::new();
    // On free ports (the harness adds them), in an empty directory.
    let srv = Server::start_in(Some(&dir.0), &[]);
    let bin = Path::new(env!("CARGO_BIN_EXE_duanlian"));
    let path = format!(
        "{}:{}",
        bin.parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut sh = Shell {
        dir: &dir.0,
        path,
        prelude: "set -e".into(),
        swaps: vec![
            ("127.0.0.1:8080".into(), format!("127.0.0.1:{}", srv.port)),
            (
                "127.0.0.1:8081".into(),
                format!("127.0.0.1:{}", srv.admin_port),
            ),
        ],
    };
    let (mut ran, mut skipped) = (0, Vec::new());
    for b in blocks(README) {
        if !matches!(b.lang, "sh" | "console") {
            continue;
        }
        if !runnable(&b) {
            skipped.push(b.line);
            continue;
        }
        let at = format!("README.md:{}", b.line);
        if b.lang == "sh" {
            for cmd in b
                .lines
                .iter()
                .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            {
                // Assignments stay for the commands after them.
                let name = cmd.split('=').next().unwrap_or("");
                if !name.is_empty() && name.bytes().all(|c| c.is_ascii_uppercase() || c == b'_') {
                    sh.prelude.push('\n');
                    sh.prelude.push_str(cmd);
                    continue;
                }
                sh.checked(&at, cmd);
                ran += 1;
            }
            continue;
        }
        // A console block: `$ command`, then its output up to the next command.
        let mut steps: Vec<(&str, Vec<&str>)> = Vec::new();
        for line in &b.lines {
            match line.strip_prefix("$ ") {
                Some(cmd) => steps.push((cmd, Vec::new())),
                None => {
                    if let Some(step) = steps.last_mut() {
                        step.1.push(line);
                    }
                }
            }
        }
        for (cmd, expected) in steps {
            let out = sh.checked(&at, cmd);
            ran += 1;
            let want = sh.swap(&expected.join("\n"));
            if let Ok(Value::Object(want)) = serde_json::from_str::<Value>(&want) {
                let got: Value = serde_json::from_str(&out)
                    .unwrap_or_else(|e| panic!("{at}: `{cmd}` is not JSON ({e}): {out}"));
                let mut keys: Vec<&String> = want.keys().collect();
                let mut got_keys: Vec<&String> = got
                    .as_object()
                    .map(|o| o.keys().collect())
                    .unwrap_or_default();
                keys.sort();
                got_keys.sort();
                assert_eq!(keys, got_keys, "{at}: `{cmd}` answers other fields");
                for (k, v) in &want {
                    if !VOLATILE.contains(&k.as_str()) {
                        assert_eq!(&got[k], v, "{at}: `{cmd}`: {k}");
                    }
                }
                // The README's generated code is this run's from here on.
                if let (Some(theirs), Some(ours)) = (want["code"].as_str(), got["code"].as_str()) {
                    sh.swaps.push((theirs.to_owned(), ours.to_owned()));
                }
            } else if !want.contains("...") {
                let got: Vec<&str> = out.lines().map(|l| l.trim_end_matches('\r')).collect();
                for line in want.lines().filter(|l| !starts_with_a_time(l)) {
                    assert!(
                        got.contains(&line),
                        "{at}: `{cmd}`: no line {line:?} in:\n{out}"
                    );
                }
            }
        }
    }
    eprintln!(
        "README: {ran} example commands run; blocks at lines {skipped:?} left out (set-up commands, or they need /var/lib, certificates, NATS or the benchmarks' peers)"
    );
    assert!(ran >= 10, "only {ran} README commands found");
}
