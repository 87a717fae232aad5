use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use depot::client::{Client, ClientCommand, Connection, ProductCommand, RemoteTokenCommand};
use depot::config::{RawSettings, Settings};
use std::path::PathBuf;
use std::process::ExitCode;

/// Depot: an artifact gateway. Pipelines push versioned build artifacts, consumers
/// download them (through Depot or by presigned URL), admins manage API tokens.
///
/// `depot serve` runs the server. Every server setting can be given as a flag, a DEPOT_*
/// environment variable, or a key in the TOML file named by --config (flags win over the
/// environment, the environment over the file). The other commands are clients of a
/// running server (DEPOT_URL, DEPOT_TOKEN), except `token create`, which writes
/// straight into the configured store. Without DEPOT_TOKEN, in a CI job with an OIDC
/// identity (GitHub Actions with `id-token: write`, or DEPOT_OIDC_TOKEN), a client
/// command exchanges that identity for a short-lived token (trusted publishing; see
/// `depot trust`).
///
/// Client exit codes: 0 ok, 1 other error, 2 usage, 3 auth (401/403), 4 not found,
/// 5 conflict (version exists; for pull: the output file exists, see --force),
/// 6 checksum mismatch, 7 network (also: a redirect to another origin, which is never
/// followed), 8 server error.
///
/// The client sends its token as `Authorization: Bearer`, only to the origin of --url /
/// DEPOT_URL (same scheme, host and port); redirects within it are followed (at most 5).
#[derive(Parser)]
#[command(name = "depot", version, about, long_about)]
struct Cli {
    /// TOML configuration file for the server settings (keys: the setting names in snake_case, e.g. max_upload_bytes)
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
        settings: Box<RawSettings>,
    },
    /// Tokens: create one in the store directly, or register/fetch/prune over the API
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Products over the API: create, delete, grant, revoke
    Product {
        #[command(flatten)]
        connection: Connection,
        #[command(subcommand)]
        command: ProductCommand,
    },
    #[command(flatten)]
    Client(ClientCommand),
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token directly in the configured metadata store and print it on stdout (nothing else)
    Create {
        /// Make it an admin token
        #[arg(long)]
        admin: bool,
        #[command(flatten)]
        settings: Box<RawSettings>,
    },
    /// Print a fresh random token in Depot's format (for DEPOT_ADMIN_TOKEN); stores nothing
    Generate,
    #[command(flatten)]
    Remote(RemoteTokenCommand),
}

/// The command line, with `depot serve --help` listing every route the server answers
/// (from `api::ROUTES`, so the list cannot drift from the router).
fn parse_cli() -> Cli {
    let mut routes = String::from(
        "Routes (each also under /api; see openapi/openapi.yaml or GET /openapi.json):\n",
    );
    for (method, path) in depot::api::ROUTES {
        routes.push_str(&format!("  {method:<8}{path}\n"));
    }
    let command = Cli::command().mut_subcommand("serve", |serve| serve.after_long_help(routes));
    let matches = command.get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|err| err.exit())
}

fn main() -> ExitCode {
    limit_heap_retention();
    let cli = parse_cli();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("depot: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> ExitCode {
    let config = cli.config;
    let result = match cli.command {
        Command::Serve { settings } => {
            return server_result(
                async {
                    let settings = Settings::load(*settings, config.as_deref())?;
                    depot::server::init_logging(settings.log_format);
                    depot::server::serve(settings).await
                }
                .await,
            );
        }
        Command::Token {
            command: TokenCommand::Create { admin, settings },
        } => {
            return server_result(
                async {
                    let settings = Settings::load(*settings, config.as_deref())?;
                    let meta = depot::server::open_meta(&settings).await?;
                    let raw = depot::server::create_token(
                        meta.as_ref(),
                        depot::domain::events::SystemActor::Cli,
                        admin,
                        None,
                    )
                    .await?;
                    println!("{raw}");
                    Ok(())
                }
                .await,
            );
        }
        Command::Token {
            command: TokenCommand::Generate,
        } => {
            println!("{}", depot::auth::generate_token());
            return ExitCode::SUCCESS;
        }
        Command::Token {
            command: TokenCommand::Remote(command),
        } => match Client::new(command.connection()) {
            Ok(client) => client.token(command).await,
            Err(e) => Err(e),
        },
        Command::Product {
            connection,
            command,
        } => match Client::new(&connection) {
            Ok(client) => client.product(command).await,
            Err(e) => Err(e),
        },
        Command::Client(command) => match Client::new(command.connection()) {
            Ok(client) => match client.with_ci_identity().await {
                Ok(client) => client.run(command).await,
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("depot: {}", err.message);
            err.exit_code()
        }
    }
}

fn server_result(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("depot: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// glibc raises its mmap threshold each time a large block is freed, after which multi-MiB
/// upload buffers come from the heap and their pages are kept after free: the process's
/// peak memory then grows with every upload. A fixed 1 MiB threshold keeps large buffers
/// in their own mappings, returned to the system as soon as they are dropped.
/// Fixing that threshold also pins the trim threshold at 128 KiB, and then each arena hands
/// its free top back (and faults it in again) for every few hundred KiB of network buffers
/// a transfer allocates and frees: ~25,000 page faults and a fifth of Depot's CPU per GiB
/// proxied (`perf stat -e page-faults`). Keeping up to 4 MiB free per arena avoids that.
fn limit_heap_retention() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator tuning parameter; it is called before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1024 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 4 * 1024 * 1024);
    }
}
