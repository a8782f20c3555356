//! `forkprof demo`.

pub fn main(_args: &[String]) -> i32 {
    eprintln!("forkprof demo: not built yet");
    1
}
