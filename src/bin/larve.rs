//! `larve`: one Hive daemon, a queen or a drone. See `larve --help`.

use std::process::ExitCode;

use hive::cli::{self, Command};
use hive::logging;

fn main() -> ExitCode {
    let args = std::env::args_os().skip(1).collect();
    let env_token = std::env::var("HIVE_TOKEN").ok();
    match cli::parse(args, env_token) {
        Ok(Command::Help) => println!("{}", cli::USAGE),
        Ok(Command::Version) => println!("larve {}", hive::VERSION),
        Ok(Command::Run(config)) => {
            logging::init(config.log_level);
            let fatal = hive::larve::run(*config);
            log::error!("{fatal}");
            // Log lines are written by a thread of their own: wait for them before exiting.
            log::logger().flush();
            return ExitCode::from(fatal.exit_code() as u8);
        }
        Err(why) => {
            eprintln!("larve: {why}\n\n{}", cli::USAGE);
            return ExitCode::from(2);
        }
    }
    ExitCode::SUCCESS
}
