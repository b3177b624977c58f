//! The TOML configuration file of `duanlian serve`, the lowest of three layers: file, then
//! environment variables (`DUANLIAN_...`), then flags.
//!
//! The file has no schema of its own: its keys are the ids of `serve`'s flags (`args.rs`), and
//! every value goes through the same clap parser a flag's value does, so a range or a period is
//! checked in one place. The layers are merged into one command line that clap parses again:
//! the file's values for settings neither a flag nor the environment gave, then the flags as
//! given (the environment is read by clap itself for what is left).
use crate::args::ServeArgs;
use anyhow::{anyhow, Context, Result};
use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Args, FromArgMatches};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;

/// Flags the file cannot set: the file itself, and the per-domain URLs, which have their own
/// `[domain."go.example.cn"]` sections.
const NOT_IN_FILE: &[&str] = &[
    "config",
    "help",
    "expired_urls",
    "not_found_urls",
    "root_urls",
    "hsts",
];

/// The keys of a `[domain."..."]` section and the flag each one feeds.
const DOMAIN_KEYS: &[(&str, &str)] = &[
    ("expired_url", "expired-url"),
    ("not_found_url", "not-found-url"),
    ("root_url", "root-url"),
    ("hsts", "hsts"),
];

/// `serve`'s flags alone, as clap sees them.
fn serve_command() -> clap::Command {
    ServeArgs::augment_args(clap::Command::new("serve"))
}

/// `serve`'s settings from a file under the environment and the flags.
pub(crate) struct Layered {
    pub(crate) args: ServeArgs,
    /// The merged settings, for [`describe`].
    pub(crate) matches: ArgMatches,
    /// Settings a flag gave (`true`) or an environment variable (`false`): the rest are the
    /// file's or defaults, which a message names as the file's keys.
    pub(crate) outside: Vec<(String, bool)>,
}

impl Layered {
    /// `serve`'s own checks, their complaints in the file's words for what the file set.
    pub(crate) fn check(self, file: &Path) -> Result<crate::settings::Settings> {
        let outside = self.outside;
        crate::settings::Settings::check(self.args).map_err(|e| {
            let msg = in_file_terms(&format!("{e:#}"), &outside);
            anyhow!("{}: {msg}", file.display())
        })
    }
}

/// A message about `serve`'s settings in the words the user wrote: `--admin-listen` stays a flag
/// if a flag gave it, becomes `DUANLIAN_ADMIN_LISTEN` if the environment did, and else the file's
/// key `admin_listen` (set there, or where to set it); `--root-url go.example.cn=URL` becomes
/// the file's `[domain."go.example.cn"] root_url = "URL"`.
fn in_file_terms(msg: &str, outside: &[(String, bool)]) -> String {
    let cmd = serve_command();
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(at) = rest.find("--") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let end = after
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
            .unwrap_or(after.len());
        let flag = &after[..end];
        rest = &after[end..];
        let Some(arg) = cmd.get_arguments().find(|a| a.get_long() == Some(flag)) else {
            out.push_str(&format!("--{flag}"));
            continue;
        };
        let id = arg.get_id().as_str();
        match outside.iter().find(|(k, _)| k == id) {
            Some((_, true)) => out.push_str(&format!("--{flag}")),
            Some((_, false)) => out.push_str(
                &arg.get_env()
                    .map_or_else(|| format!("--{flag}"), |e| e.to_string_lossy().into_owned()),
            ),
            None => match DOMAIN_KEYS.iter().find(|(_, long)| *long == flag) {
                // ` DOMAIN=VALUE` follows: the section's line.
                Some((key, _)) => {
                    let value = rest.strip_prefix(' ').unwrap_or(rest);
                    let v_end = value.find(": ").unwrap_or(value.len());
                    match value[..v_end].split_once('=') {
                        Some((domain, v)) => {
                            out.push_str(&format!("[domain.\"{domain}\"] {key} = \"{v}\""));
                            rest = &value[v_end..];
                        }
                        None => out.push_str(key),
                    }
                }
                None => out.push_str(id),
            },
        }
    }
    out.push_str(rest);
    out
}

/// The settings of `serve` with `file` under the environment and the flags of `given` (the
/// `serve` subcommand's matches).
pub(crate) fn layered(file: &Path, given: &ArgMatches) -> Result<Layered> {
    let name = file.display();
    let text = std::fs::read_to_string(file).with_context(|| format!("{name}"))?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| anyhow!("{name}: {e}"))?;
    let cmd = serve_command();
    let mut argv: Vec<OsString> = vec!["serve".into()];
    for (key, value) in &table {
        if key == "domain" {
            argv.extend(domain_sections(value).map_err(|e| anyhow!("{name}: {e}"))?);
            continue;
        }
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_id() == key.as_str() && !NOT_IN_FILE.contains(&key.as_str()))
            .ok_or_else(|| anyhow!("{name}: unknown key `{key}` (known: {})", known(&cmd)))?;
        let values = file_values(arg, value).map_err(|e| anyhow!("{name}: {key}: {e}"))?;
        // Checked alone, so a bad value is reported under its key even when a flag overrides it.
        cmd.clone()
            .try_get_matches_from(std::iter::once(OsString::from("serve")).chain(values.clone()))
            .map_err(|e| anyhow!("{name}: {key}: {}", clap_reason(&e)))?;
        let overridden = matches!(
            given.value_source(key),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        );
        if !overridden {
            argv.extend(values);
        }
    }
    for arg in cmd.get_arguments() {
        let id = arg.get_id().as_str();
        if given.value_source(id) == Some(ValueSource::CommandLine) {
            argv.extend(given_values(arg, given));
        }
    }
    let merged = cmd
        .clone()
        .try_get_matches_from(argv)
        .map_err(|e| anyhow!("{name}: {}", clap_reason(&e)))?;
    let args = ServeArgs::from_arg_matches(&merged).map_err(|e| anyhow!("{name}: {e}"))?;
    let outside = cmd
        .get_arguments()
        .filter_map(|a| {
            let id = a.get_id().as_str();
            match given.value_source(id) {
                Some(ValueSource::CommandLine) => Some((id.to_owned(), true)),
                Some(ValueSource::EnvVariable) => Some((id.to_owned(), false)),
                _ => None,
            }
        })
        .collect();
    Ok(Layered {
        args,
        matches: merged,
        outside,
    })
}

fn known(cmd: &clap::Command) -> String {
    let mut keys: Vec<&str> = cmd
        .get_arguments()
        .map(|a| a.get_id().as_str())
        .filter(|id| !NOT_IN_FILE.contains(id))
        .collect();
    keys.push("[domain.\"NAME\"]");
    keys.join(", ")
}

/// A file value as the command-line arguments that say the same.
fn file_values(arg: &clap::Arg, value: &toml::Value) -> Result<Vec<OsString>, String> {
    let long = arg.get_long().unwrap_or_default();
    let flag = |v: String| OsString::from(format!("--{long}={v}"));
    let scalar = |v: &toml::Value| match v {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        _ => Err("must be a string, a whole number or true/false".to_string()),
    };
    match (arg.get_action(), value) {
        (ArgAction::SetTrue, toml::Value::Boolean(true)) => Ok(vec![format!("--{long}").into()]),
        (ArgAction::SetTrue, toml::Value::Boolean(false)) => Ok(Vec::new()),
        (ArgAction::SetTrue, _) => Err("must be true or false".into()),
        (ArgAction::Append, toml::Value::Array(items)) => items
            .iter()
            .map(|v| scalar(v).map(flag))
            .collect::<Result<_, _>>(),
        (_, toml::Value::Array(_)) => Err("takes one value, not a list".into()),
        (_, v) => Ok(vec![flag(scalar(v)?)]),
    }
}

/// What was given for `arg` on the command line, as arguments again.
fn given_values(arg: &clap::Arg, given: &ArgMatches) -> Vec<OsString> {
    let id = arg.get_id().as_str();
    let long = arg.get_long().unwrap_or_default();
    if matches!(arg.get_action(), ArgAction::SetTrue) {
        return if given.get_flag(id) {
            vec![format!("--{long}").into()]
        } else {
            Vec::new()
        };
    }
    given
        .get_raw(id)
        .into_iter()
        .flatten()
        .map(|v| {
            let mut a = OsString::from(format!("--{long}="));
            a.push(v);
            a
        })
        .collect()
}

/// `[domain."go.example.cn"]` sections as `--expired-url go.example.cn=URL` and the like. They
/// come before the flags in the merged command line, so a flag for the same domain and field
/// wins, as the later value does when the policies are built.
fn domain_sections(value: &toml::Value) -> Result<Vec<OsString>, String> {
    let toml::Value::Table(domains) = value else {
        return Err("domain: must be tables, as [domain.\"go.example.cn\"]".into());
    };
    let mut out = Vec::new();
    for (domain, section) in domains {
        let toml::Value::Table(section) = section else {
            return Err(format!("domain.{domain}: must be a table"));
        };
        for (key, url) in section {
            let Some((_, long)) = DOMAIN_KEYS.iter().find(|(k, _)| k == key) else {
                return Err(format!(
                    "domain.{domain}: unknown key `{key}` (known: expired_url, not_found_url, root_url, hsts)"
                ));
            };
            let toml::Value::String(url) = url else {
                return Err(format!("domain.{domain}.{key}: must be a string"));
            };
            out.push(format!("--{long}={domain}={url}").into());
        }
    }
    Ok(out)
}

/// A clap error's reason, without its `error:` prefix and usage hints.
fn clap_reason(e: &clap::Error) -> String {
    let text = e.to_string();
    let first = text.lines().next().unwrap_or_default();
    first.strip_prefix("error: ").unwrap_or(first).to_string()
}

/// The effective settings as a configuration file (API keys only counted): what `config check`
/// prints, and a file `serve --config` reads back to the same settings.
pub(crate) fn describe(m: &ArgMatches) -> String {
    let cmd = serve_command();
    let mut out = String::new();
    // A JSON string is a TOML basic string too (the same escapes).
    let quoted = |v: &str| serde_json::Value::from(v).to_string();
    let scalar = |v: &str| {
        if v.parse::<i64>().is_ok() {
            v.to_string()
        } else {
            quoted(v)
        }
    };
    for arg in cmd.get_arguments() {
        let id = arg.get_id().as_str();
        if NOT_IN_FILE.contains(&id) {
            continue;
        }
        let values: Vec<String> = m
            .get_raw(id)
            .into_iter()
            .flatten()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        let line = match arg.get_action() {
            ArgAction::SetTrue => format!("{id} = {}", m.get_flag(id)),
            _ if id == "api_keys" => format!("# api_keys: {} configured", values.len()),
            ArgAction::Append => format!(
                "{id} = [{}]",
                values
                    .iter()
                    .map(|v| quoted(v))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            _ => match values.first() {
                Some(v) => format!("{id} = {}", scalar(v)),
                None => format!("# {id}: not set"),
            },
        };
        out.push_str(&line);
        out.push('\n');
    }
    // Per-domain URLs: the last one given for a domain and field is the one in effect.
    let mut sections: BTreeMap<String, BTreeMap<&str, String>> = BTreeMap::new();
    for (key, id) in [
        ("expired_url", "expired_urls"),
        ("not_found_url", "not_found_urls"),
        ("root_url", "root_urls"),
        ("hsts", "hsts"),
    ] {
        for v in m.get_raw(id).into_iter().flatten() {
            let v = v.to_string_lossy();
            if let Some((domain, url)) = v.split_once('=') {
                sections
                    .entry(domain.to_string())
                    .or_default()
                    .insert(key, url.to_string());
            }
        }
    }
    for (domain, fields) in sections {
        out.push_str(&format!("\n[domain.{}]\n", quoted(&domain)));
        for (key, url) in fields {
            out.push_str(&format!("{key} = {}\n", quoted(&url)));
        }
    }
    out
}
