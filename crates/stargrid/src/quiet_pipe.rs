//! Output piped into a reader that stops early (`stargrid nodes | head`) ends the program
//! quietly with status 0, as other command-line tools do. Rust programs ignore `SIGPIPE`, so a
//! write to a closed pipe fails with `EPIPE`: `println!` then panics, and a write through a
//! file returns the error. [`install`] turns exactly that panic into a quiet exit, and
//! [`is_broken_pipe`] tells `main` when an error is only that.

/// Makes a panic of `println!` on a closed standard output end the program quietly; any other
/// panic is reported as before.
pub fn install() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info.payload_as_str().unwrap_or("");
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(0);
        }
        report(info);
    }));
}

/// Whether `e` is a write to a closed pipe, at any depth of its causes.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
