//! A per-user caching reverse proxy. `--help` lists every flag; `--demo` runs everything on
//! this machine.
//!
//! ```text
//! cargo run --release --example reverse_proxy -- --demo
//! cargo run --release --example reverse_proxy -- --upstream http://127.0.0.1:8080 --admin-listen 127.0.0.1:9090
//! ```

use clap::Parser;
use integration_cache::proxy::{init_logging, run_demo, shutdown_signal, Proxy, ProxyArgs};

#[tokio::main]
async fn main() -> Result<(), integration_cache::BoxError> {
    let args = ProxyArgs::parse();
    let default_level = if args.demo { "warn" } else { "info" };
    init_logging(
        args.log_level.as_deref().unwrap_or(default_level),
        args.log_format,
    )?;
    if args.demo {
        run_demo(args, shutdown_signal()).await?;
        return Ok(());
    }
    let proxy = Proxy::from_args(&args)?;
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let admin = match args.admin_listen {
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await?),
        None => None,
    };
    proxy.serve(listener, admin, shutdown_signal()).await?;
    Ok(())
}
