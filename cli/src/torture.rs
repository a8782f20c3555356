//! `forkprof torture`.

pub fn main(_args: &[String]) -> i32 {
    eprintln!("forkprof torture: not built yet");
    1
}
