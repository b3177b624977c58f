//! duanlian-input: one reader for a link's fields, whoever sends them — the admin API's JSON
//! body, a row of a bulk CSV file, a line of JSON Lines — so `"expires_in": "7d"` means the same
//! and is refused in the same words everywhere.
//!
//! A [`Fields`] reads one field at a time ([`Fields::read`]), parsing each as it comes and
//! keeping every error; then it is judged as a whole against [`Rules`] (the service's domains,
//! whether a past expiry is a mistake) into what the caller needs: a [`duanlian_write::NewLink`]
//! to create, a [`duanlian_write::Patch`] to apply, or a [`duanlian_link::Link`] for a snapshot.
//! [`bulk::read`] reads whole CSV and JSON Lines files into a snapshot table that way.
//!
//! ```
//! use duanlian_input::{Fields, Form, Rules, Value};
//! use duanlian_link::Domain;
//!
//! let domains = [Domain::parse("go.example.cn").expect("domain")];
//! let mut fields = Fields::new(Form::Create);
//! fields.read("url", Value::Text("https://shop.example.cn/item/1"));
//! fields.read("expires_in", Value::Text("7d"));
//! let link = fields.new_link(&Rules::api(&domains, 7), 1_767_225_600).unwrap();
//! assert_eq!(link.validity.expires_at, Some(1_767_225_600 + 7 * 86_400));
//!
//! let mut bad = Fields::new(Form::Create);
//! bad.read("url", Value::Text("ftp://x"));
//! bad.read("max_visits", Value::Text("0"));
//! let errors = bad.new_link(&Rules::api(&domains, 7), 0).unwrap_err();
//! assert_eq!(errors.len(), 2);
//! ```
pub mod bulk;
mod encoding;
mod fields;
pub mod upload;

pub use fields::{FieldError, Fields, Form, Rules, Value, MAX_CODE_LENGTH, MIN_CODE_LENGTH};
