// `sqlx::migrate!` embeds the migration files at compile time; without this the
// crate is not rebuilt when only a migration file changes.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
