//! `forkprof top`.

pub fn main(_args: &[String]) -> i32 {
    eprintln!("forkprof top: not built yet");
    1
}
