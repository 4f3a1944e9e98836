//! `larve`: one Hive daemon, a queen or a drone; and `larve task|drone|events ...`, a client of a
//! queen. See `larve --help` and `larve task --help`.

use std::process::ExitCode;

use hive::cli::{self, Command, Environment};
use hive::{control, logging, signals};

fn main() -> ExitCode {
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    // `larve reap ROOT`: the reaper a drone that runs commands starts beside itself.
    if let [command, root] = &args[..]
        && command == "reap"
    {
        logging::init(log::LevelFilter::Info);
        let code = hive::exec::reaper::run(root.into());
        log::logger().flush();
        return ExitCode::from(code);
    }
    let env = Environment::read();
    let command = cli::parse(args, &env);
    if matches!(
        command,
        Ok(Command::Help(_) | Command::Control(_) | Command::Version)
    ) {
        signals::die_on_closed_pipe();
    }
    match command {
        Ok(Command::Help(text)) => println!("{text}"),
        Ok(Command::Control(control)) => {
            let (target, request) = *control;
            return ExitCode::from(control::run(&target, &request));
        }
        Ok(Command::Version) => println!("larve {}", hive::VERSION),
        Ok(Command::Run(config)) => {
            // Before any thread exists, so every thread inherits it (see `signals.rs`).
            if let Err(e) = signals::block_stop_signals() {
                eprintln!("larve: cannot set up the signal mask: {e}");
                return ExitCode::from(1);
            }
            logging::init(config.log_level);
            let fatal = hive::larve::run(*config);
            log::error!("{fatal}");
            // Log lines are written by a thread of their own: wait for them before exiting.
            log::logger().flush();
            return ExitCode::from(fatal.exit_code() as u8);
        }
        Err(mistake) => {
            eprintln!("larve: {mistake}");
            return ExitCode::from(2);
        }
    }
    ExitCode::SUCCESS
}
