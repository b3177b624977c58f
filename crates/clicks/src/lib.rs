//! Visit statistics: who followed a link, kept cheap enough for the redirect path.
//!
//! The redirect path classifies the client ([`Device::of`], bots included) and hands a
//! [`Visit`] to [`Recorder::record`], which counts it (a batch at a time) in per-link, per-day
//! aggregates ([`Stats`]) that reports read without touching the log, and writes its log line into a
//! buffer of the calling thread's: nothing allocated, no other thread woken. A writer thread
//! takes the buffers every 20 ms and appends them to a day- and size-rotated log of
//! tab-separated lines ([`Click`] is a line read back). The aggregates are written to day
//! summaries every minute, so raw click logs (compressed once closed, kept for a shorter time,
//! capped in size and never allowed to eat the disk's reserve) can go long before the
//! statistics do; at start the summaries are loaded and the raw log since replayed.
//!
//! ```
//! use duanlian_clicks::{Device, Recorder, RecorderOptions, Visit};
//!
//! let dir = std::env::temp_dir().join(format!("dl-clicks-doc-{}", std::process::id()));
//! let (recorder, writer, _) = Recorder::start(&dir, RecorderOptions::default())?;
//! let ua = b"Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15";
//! let device = Device::of(Some(ua));
//! recorder.record(Visit::new(1_764_000_000, "go.example.cn", "x7Kp2Qa",
//!     Some(b"https://weibo.com/"), device, "203.0.113.9".parse()?));
//! writer.finish(); // writes what was recorded to the log
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
mod table;

pub use error::ClickError;
pub use event::{anonymise, is_bot, Click, Device, Visit};
pub use log::{encode_line, parse_line, read_logs, ReadReport};
pub use recorder::{Forward, Recorder, RecorderOptions, Writer};
pub use stats::{Report, Stats, DIRECT, OTHER_REFERRERS};
