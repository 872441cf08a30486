use std::path::PathBuf;

use clap::Args;

use crate::exit;
use crate::load::{Loaded, load};

#[derive(Args)]
pub(crate) struct ValidateArgs {
    /// Job files to check.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

pub(crate) fn main(args: &ValidateArgs) -> anyhow::Result<u8> {
    let mut code = exit::SUCCESS;
    for path in &args.files {
        match load(path) {
            Ok(Loaded::Valid(file)) => {
                for job in &file.jobs {
                    let n = job.tasks.len();
                    println!(
                        "{}: job {}: {n} task{}",
                        path.display(),
                        job.name,
                        if n == 1 { "" } else { "s" }
                    );
                }
            }
            Ok(Loaded::Invalid(diags)) => {
                eprintln!("{diags}");
                code = exit::FAILED;
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                code = exit::FAILED;
            }
        }
    }
    Ok(code)
}
