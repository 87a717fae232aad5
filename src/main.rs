use clap::{Parser, Subcommand};
use depot::config::{RawSettings, Settings};
use std::path::PathBuf;
use std::process::ExitCode;

/// Depot: an artifact gateway. Pipelines push versioned build artifacts, consumers
/// download them (through Depot or by presigned URL), admins manage API tokens.
///
/// Every setting can be given as a flag, a DEPOT_* environment variable, or a key in the
/// TOML file named by --config (flags win over the environment, the environment over the file).
#[derive(Parser)]
#[command(name = "depot", version, about, long_about)]
struct Cli {
    /// TOML configuration file (keys: the setting names in snake_case, e.g. max_upload_bytes)
    #[arg(long, global = true, env = "DEPOT_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server
    Serve {
        #[command(flatten)]
        settings: RawSettings,
    },
    /// Manage tokens directly in the configured metadata store
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token and print it on stdout (nothing else)
    Create {
        /// Make it an admin token
        #[arg(long)]
        admin: bool,
        #[command(flatten)]
        settings: RawSettings,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("depot: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("depot: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { settings } => {
            let settings = Settings::load(settings, cli.config.as_deref())?;
            depot::server::init_logging(settings.log_format);
            depot::server::serve(settings).await
        }
        Command::Token { command: TokenCommand::Create { admin, settings } } => {
            let settings = Settings::load(settings, cli.config.as_deref())?;
            let meta = depot::server::open_meta(&settings).await?;
            let raw = depot::server::create_token(meta.as_ref(), admin, None).await?;
            println!("{raw}");
            Ok(())
        }
    }
}
