//! `looper-node`: the Looper daemon. `looper-node --datadir DIR [--config FILE] ...`; see
//! `looper-node --help`.

use clap::Parser;
use looper_node::config::{Args, Config};
use looper_node::node::LooperNode;
use looper_node::seed::SeedOrigin;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = match Config::load(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("looper-node: {e}");
            std::process::exit(2);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,ldk_node=warn,nostr_relay_pool=warn".into());
    if config.log_json {
        tracing_subscriber::fmt().json().with_env_filter(filter).init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let node = LooperNode::start(config).await?;
        let (seed_path, origin) = &node.seed;
        match origin {
            SeedOrigin::Created => println!(
                "created a new seed at {} - back it up: it is the only way to recover funds",
                seed_path.display()
            ),
            SeedOrigin::Restored => println!("restored the seed into {}", seed_path.display()),
            SeedOrigin::Loaded => println!("seed: {}", seed_path.display()),
        }
        let token_path = node.config.datadir.join(looper_node::seed::API_TOKEN_FILE_NAME);
        node.run(
            async {
                let _ = tokio::signal::ctrl_c().await;
            },
            move |addr| {
                println!("control API on http://{addr} (token in {})", token_path.display());
            },
        )
        .await?;
        Ok(())
    })
}
