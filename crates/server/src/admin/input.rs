//! Request bodies to write operations, naming every invalid field. The fields themselves are
//! read by `duanlian_input`, the same reader bulk files go through.
use super::problem::{field, FieldError};
use duanlian_input::{Fields, Form};
use duanlian_link::{now_secs, Domain};
use duanlian_write::{NewLink, Patch};
use serde_json::{Map, Value};

/// What the API needs to know to judge a link's fields.
pub(crate) struct Rules<'a> {
    pub(crate) domains: &'a [Domain],
    pub(crate) default_code_length: usize,
}

impl Rules<'_> {
    fn input(&self) -> duanlian_input::Rules<'_> {
        duanlian_input::Rules::api(self.domains, self.default_code_length)
    }
}

fn problems(errors: Vec<duanlian_input::FieldError>) -> Vec<FieldError> {
    errors
        .into_iter()
        .map(|e| field(e.field, e.code, e.reason))
        .collect()
}

fn object<'v>(v: &'v Value, what: &str) -> Result<&'v Map<String, Value>, Vec<FieldError>> {
    v.as_object()
        .ok_or_else(|| vec![field(what, "not_object", "must be a JSON object")])
}

/// `POST /api/v1/links`.
pub(crate) fn create(body: &Value, rules: &Rules<'_>) -> Result<NewLink, Vec<FieldError>> {
    let obj = object(body, "body")?;
    Fields::from_object(Form::Create, obj)
        .new_link(&rules.input(), now_secs())
        .map_err(problems)
}

/// The most links one batch request may create.
pub(crate) const MAX_BATCH: usize = 10_000;

/// `POST /api/v1/links/batch`: `{"links": [ ... ]}`.
pub(crate) fn batch(body: &Value, rules: &Rules<'_>) -> Result<Vec<NewLink>, Vec<FieldError>> {
    let obj = object(body, "body")?;
    if let Some(k) = obj.keys().find(|k| *k != "links") {
        return Err(vec![field(
            k.as_str(),
            "unknown_field",
            "unknown field (known: links)",
        )]);
    }
    let Some(list) = obj.get("links").and_then(Value::as_array) else {
        return Err(vec![field(
            "links",
            "required",
            "is required, as an array of links",
        )]);
    };
    if list.is_empty() || list.len() > MAX_BATCH {
        return Err(vec![field(
            "links",
            "batch_size",
            format!("must hold 1 to {MAX_BATCH} links, not {}", list.len()),
        )]);
    }
    let (input, now) = (rules.input(), now_secs());
    let mut out = Vec::with_capacity(list.len());
    let mut all = Vec::new();
    for (i, item) in list.iter().enumerate() {
        let Some(obj) = item.as_object() else {
            all.push(field(
                format!("links[{i}]"),
                "not_object",
                "must be a JSON object",
            ));
            continue;
        };
        let mut fields = Fields::new(Form::Create).with_prefix(format!("links[{i}]."));
        fields.read_object(obj);
        match fields.new_link(&input, now) {
            Ok(l) => out.push(l),
            Err(errors) => all.extend(problems(errors)),
        }
        // A batch with thousands of bad rows needs no thousands of messages.
        if all.len() >= 100 {
            break;
        }
    }
    if all.is_empty() {
        Ok(out)
    } else {
        Err(all)
    }
}

/// `PATCH /api/v1/links/{domain}/{code}`.
pub(crate) fn patch(body: &Value, rules: &Rules<'_>) -> Result<Patch, Vec<FieldError>> {
    let obj = object(body, "body")?;
    Fields::from_object(Form::Patch, obj)
        .patch(&rules.input(), now_secs())
        .map_err(problems)
}
