//! `slapctl`: parses the command line, runs the command, prints its table or JSON.

use clap::Parser;
use ops::ctl::{self, Cli};

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    match ctl::run(cli).await {
        Ok(output) => {
            if json {
                println!("{}", output.json);
            } else if !output.text.is_empty() {
                println!("{}", output.text);
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("slapctl: {e}");
            std::process::ExitCode::from(e.exit_code())
        }
    }
}
