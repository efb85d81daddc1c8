//! The `tidemark` binary: parses arguments, loads settings, installs logging, runs one
//! command, prints its report (text or JSON, rendered by the command's own
//! `tidemark_agent::cmd::Report`) or turns its failure into one line on stderr, and exits.
//!
//! This is the only place that prints results and errors or chooses exit codes (see
//! `tidemark_agent::exit`). Libraries return typed errors; commands return reports.

use std::process::ExitCode;

use clap::Parser;

use tidemark_agent::cli::args::{Cli, Command, SpoolAction};
use tidemark_agent::cli::config::{self, Settings};
use tidemark_agent::cmd::{self, Format, Report};
use tidemark_agent::exit::{self, Failure};

fn main() -> ExitCode {
    // First of all: an `archive-push` of a segment starts its checks and hashing on the
    // core that the single-threaded start-up below leaves idle.
    tidemark_archive_cmd::early::begin(std::env::args_os());
    // A restore_command that cannot even parse its arguments must still stop recovery:
    // exit 2 would read as "not in the archive" and end recovery early.
    let is_archive_get = std::env::args().nth(1).is_some_and(|a| a == "archive-get")
        || std::env::args().any(|a| a == "archive-get");
    // A panic must not exit 101, which PostgreSQL reads from restore_command as "not in
    // the archive" (recovery would end early, at the wrong point): archive-get exits
    // above 125 (fatal to recovery), everything else with the ordinary failure code.
    exit_on_panic(if is_archive_get {
        exit::RESTORE_FATAL
    } else {
        exit::FAILED
    });
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    exit::OK
                }
                _ if is_archive_get => exit::RESTORE_FATAL,
                _ => exit::USAGE,
            };
            if code == exit::OK {
                let _ = e.print();
            } else {
                eprintln!("tidemark: {}", one_line_usage_error(&e.to_string()));
            }
            return ExitCode::from(code);
        }
    };
    let command_name = match &cli.command {
        Command::ArchivePush { .. } => "archive-push",
        Command::ArchiveGet { .. } => "archive-get",
        Command::Init { .. } => "init",
        Command::Info { .. } => "info",
        Command::Backup(_) => "backup",
        Command::Restore(_) => "restore",
        Command::Plan(_) => "plan",
        Command::Drill(_) => "drill",
        Command::Spool { .. } => "spool",
        Command::Reindex { .. } => "reindex",
        Command::Verify(_) => "verify",
        Command::Expire(_) => "expire",
        Command::Status { .. } => "status",
        Command::Agent => "agent",
    };
    let background_drainer = matches!(
        cli.command,
        Command::Spool {
            action: SpoolAction::Drain {
                background: true,
                ..
            }
        }
    );
    // The replay feed's prefetcher logs to a file of its own and reads and hashes
    // segments on every core.
    let prefetch_worker = matches!(
        cli.command,
        Command::ArchiveGet {
            prefetch_worker: true,
            ..
        }
    );
    let fail_code = |f: &Failure| {
        if is_archive_get {
            exit::RESTORE_FATAL
        } else {
            f.code()
        }
    };

    let settings = match load_settings(&cli) {
        Ok(s) => s,
        Err(f) => return report(command_name, &f, fail_code(&f)),
    };
    let agent = matches!(cli.command, Command::Agent);
    // The background drainer writes a log file of its own: lines there need their time.
    // The agent logs what it runs at info, with the time, unless asked for more.
    init_logging(
        if background_drainer
            || ((prefetch_worker || agent)
                && !matches!(settings.log_level.as_str(), "debug" | "trace"))
        {
            "info"
        } else {
            &settings.log_level
        },
        background_drainer || prefetch_worker || agent,
    );

    let runtime = if prefetch_worker {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tidemark: {command_name}: cannot start the async runtime: {e}");
            return ExitCode::from(if is_archive_get {
                exit::RESTORE_FATAL
            } else {
                exit::FAILED
            });
        }
    };
    let outcome = runtime.block_on(async {
        inject_panic_for_tests(command_name).await;
        run(&cli, &settings).await
    });
    // Dropping the runtime waits for blocking file-system tasks; they are all finished.
    drop(runtime);
    match outcome {
        Ok((report, format)) => {
            print!("{}", report.render(format));
            ExitCode::from(report.code())
        }
        Err(f) => report(command_name, &f, fail_code(&f)),
    }
}

/// Runs one command: its report, and how to render it.
async fn run(cli: &Cli, settings: &Settings) -> Result<(Box<dyn Report>, Format), Failure> {
    let command = &cli.command;
    fn boxed(report: impl Report + 'static, json: bool) -> (Box<dyn Report>, Format) {
        (Box::new(report), Format::json_if(json))
    }
    Ok(match command {
        Command::ArchivePush { path } => {
            boxed(cmd::archive_push::run(settings, path).await?, false)
        }
        Command::ArchiveGet {
            name,
            dest,
            timeline,
            until,
            latest,
            prefetch_worker,
        } => {
            let following = cmd::archive_get::Following {
                timeline: *timeline,
                until: until.clone(),
                latest: *latest,
            };
            if *prefetch_worker {
                boxed(
                    cmd::archive_get::worker(settings, name, dest, &following).await?,
                    false,
                )
            } else {
                boxed(
                    cmd::archive_get::run(settings, name, dest, &following).await?,
                    false,
                )
            }
        }
        Command::Init { json, offline } => boxed(cmd::init::run(settings, *offline).await?, *json),
        Command::Backup(args) => boxed(cmd::backup::run(settings, args).await?, args.json),
        Command::Restore(args) => boxed(cmd::restore::run(settings, args).await?, args.json),
        Command::Plan(args) => boxed(cmd::plan::run(settings, args).await?, args.json),
        Command::Drill(args) => boxed(cmd::drill::run(settings, args).await?, args.json),
        Command::Info { json } => boxed(cmd::info::gather(settings).await?, *json),
        Command::Reindex { json } => boxed(cmd::reindex::run(settings, *json).await?, *json),
        Command::Verify(args) => boxed(cmd::verify::run(settings, args).await?, args.json),
        Command::Expire(args) => boxed(cmd::expire::run(settings, args).await?, args.json),
        Command::Status { json } => boxed(cmd::status::run(settings).await?, *json),
        Command::Agent => boxed(cmd::agent::run(&cli.settings, settings).await?, false),
        Command::Spool { action } => match action {
            SpoolAction::Status { json } => boxed(cmd::spool::status(settings).await?, *json),
            SpoolAction::Drain {
                json,
                background,
                follow,
            } => boxed(
                cmd::spool::drain(settings, *background, *follow).await?,
                *json,
            ),
            SpoolAction::Forget { name } => boxed(cmd::spool::forget(settings, name).await?, false),
        },
    })
}

/// Makes any panic, on any thread, print one line and end the process with `code`.
///
/// The process ends in the hook itself, before unwinding: a panic on a worker thread
/// (a tokio task, a scoped hashing thread) must not be caught and turned into some other
/// exit, and nothing after a broken invariant should go on writing. The one exception is
/// the WAL decoder, pure code with no state to break, whose panic is contained where it
/// runs and turned into a warning.
fn exit_on_panic(code: u8) {
    std::panic::set_hook(Box::new(move |info| {
        // The WAL decoder's panics are caught where it runs and become a warning (its
        // failure must never fail a push: `tidemark_archive_cmd::content`).
        if tidemark_archive_cmd::content::panic_is_contained() {
            return;
        }
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!(
            "tidemark: internal error (a bug in tidemark; please report it): {}{at}; exit {code}",
            message.replace('\n', " ")
        );
        std::process::exit(i32::from(code));
    }));
}

/// Debug builds only: `TIDEMARK_TEST_PANIC=<command>` panics at the start of that
/// command, on the runtime's thread; `<command>:worker` panics on a blocking worker
/// thread whose failure is then propagated the way the code base does it (`expect` on the
/// join). Tests use it to prove what a panic does to the exit code; release builds have
/// no such switch.
async fn inject_panic_for_tests(command: &str) {
    #[cfg(debug_assertions)]
    if let Ok(wanted) = std::env::var("TIDEMARK_TEST_PANIC") {
        if wanted == command {
            panic!("injected by TIDEMARK_TEST_PANIC");
        }
        if wanted == format!("{command}:worker") {
            tokio::task::spawn_blocking(|| panic!("injected by TIDEMARK_TEST_PANIC on a worker"))
                .await
                .expect("the worker panicked");
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = command;
}

/// Clap's multi-line usage error as one line: the message, then the usage it shows.
/// PostgreSQL's log and scripts get one line per failure.
fn one_line_usage_error(rendered: &str) -> String {
    let mut message: Vec<&str> = Vec::new();
    let mut usage = None;
    for line in rendered.lines().map(str::trim) {
        if let Some(u) = line.strip_prefix("Usage: ") {
            usage = Some(u);
        } else if line.is_empty() || line.starts_with("For more information") {
            continue;
        } else if usage.is_none() {
            message.push(line.strip_prefix("error: ").unwrap_or(line));
        }
    }
    let mut out = message.join(" ");
    if let Some(u) = usage {
        out.push_str(&format!(" (usage: {u})"));
    }
    out
}

fn load_settings(cli: &Cli) -> Result<Settings, Failure> {
    let (path, file, warnings) = config::load_file(&cli.settings)?;
    for w in warnings {
        eprintln!("tidemark: warning: {w}");
    }
    Ok(config::resolve(&cli.settings, path, file)?)
}

fn init_logging(level: &str, timestamps: bool) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let fmt = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(filter);
    if timestamps {
        fmt.init();
    } else {
        fmt.without_time().init();
    }
}

/// Prints one line, `tidemark: <command>: <error>: <cause>…`, and returns the exit code.
fn report(command: &str, failure: &Failure, code: u8) -> ExitCode {
    eprintln!("tidemark: {command}: {}", failure.one_line());
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    #[test]
    fn usage_errors_fit_on_one_line() {
        let rendered = "error: the following required arguments were not provided:\n  <PATH>\n\nUsage: tidemark archive-push <PATH>\n\nFor more information, try '--help'.\n";
        assert_eq!(
            super::one_line_usage_error(rendered),
            "the following required arguments were not provided: <PATH> (usage: tidemark archive-push <PATH>)"
        );
    }
}
