//! The `sotto` command (issue 7). Skeleton.
fn main() {
    println!("sotto: not yet implemented");
}
