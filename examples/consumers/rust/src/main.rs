//! `cargo run -p contacts-consumer -- --bootstrap 127.0.0.1:9092 --registry http://127.0.0.1:8081`

use clap::Parser as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let opts = contacts_consumer::Options::parse();
    let summary = contacts_consumer::run(&opts, &mut std::io::stdout().lock()).await?;
    eprintln!("{}", serde_json::to_string(&summary)?);
    Ok(())
}
