//! The benchmark floor: the same hyper server as `duanlian serve`, answering every request with
//! one fixed 302 and no lookup, so `benches/floor.py` and `benches/callgrind.py --floor` can
//! tell what a redirect costs beyond serving HTTP at all. A bench program, not part of the CLI:
//!
//! ```sh
//! cargo build --release --example bench-floor
//! target/release/examples/bench-floor --listen 127.0.0.1:8090 --threads 1
//! ```
use std::sync::Arc;

fn main() -> anyhow::Result<()> {
    let mut listen: std::net::SocketAddr = "127.0.0.1:8080".parse()?;
    let mut threads = 1;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => listen = value.parse()?,
            "--threads" => threads = value.parse()?,
            other => anyhow::bail!("unknown flag {other} (known: --listen ADDR, --threads N)"),
        }
    }
    let location = hyper::header::HeaderValue::from_static(
        "https://shop.example.com/item/123456789?utm_source=sms&utm_campaign=c123",
    );
    let opts = duanlian_server::Options {
        listen,
        threads,
        ..duanlian_server::Options::default()
    };
    let floor = Arc::new(duanlian_server::FixedRedirect(location));
    duanlian_server::run(floor, &opts, Arc::default())?;
    Ok(())
}
