//! Visit statistics: who followed a link, kept cheap enough for the redirect path.
//!
//! The redirect path classifies the client ([`Device::of`], bots included), builds a [`Click`]
//! (one allocation; the address anonymised) and hands it to [`Recorder::record`], which never
//! blocks: a full queue drops the click and counts it. A writer thread appends clicks to a
//! day- and size-rotated log of tab-separated lines and keeps per-link, per-day aggregates
//! ([`Stats`]) that reports read without touching the log. The aggregates are written to day
//! summaries every minute, so raw click logs (compressed once closed, kept for a shorter time,
//! capped in size and never allowed to eat the disk's reserve) can go long before the
//! statistics do; at start the summaries are loaded and the raw log since replayed.
//!
//! ```
//! use duanlian_clicks::{Click, Device, Recorder, RecorderOptions};
//!
//! let dir = std::env::temp_dir().join(format!("dl-clicks-doc-{}", std::process::id()));
//! let (recorder, writer, _) = Recorder::start(&dir, RecorderOptions::default())?;
//! let ua = b"Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15";
//! let device = Device::of(Some(ua));
//! recorder.record(Click::new(1_764_000_000, "go.example.cn", "x7Kp2Qa",
//!     Some(b"https://weibo.com/"), device, "203.0.113.9".parse()?));
//! writer.finish(); // drains the queue
//! let day = 1_764_000_000 / 86_400;
//! let report = recorder.stats().report("go.example.cn", "x7Kp2Qa", day, day, 10);
//! assert_eq!((report.human, report.bot), (1, 0));
//! assert_eq!(report.referrers[0].0, "weibo.com");
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
mod checkpoint;
mod error;
mod event;
mod log;
mod recorder;
mod stats;

pub use error::ClickError;
pub use event::{anonymise, is_bot, Click, Device};
pub use log::{encode_line, parse_line, read_logs, ReadReport};
pub use recorder::{Forward, Recorder, RecorderOptions, Writer};
pub use stats::{Report, Stats, DIRECT, OTHER_REFERRERS};
