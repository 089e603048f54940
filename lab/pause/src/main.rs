//! `hybridnet-pause`: the process of the lab's pause image (`make images`, docs/images.md). As PID 1
//! of a pod sandbox it holds the pod's namespaces, reaps orphaned children and exits 0 on SIGINT or
//! SIGTERM (PID 1 gets no default signal action, so the handlers are required for a prompt stop).

use std::ffi::c_int;

extern "C" fn exit_now(_: c_int) {
    // SAFETY: _exit is async-signal-safe.
    unsafe { libc::_exit(0) }
}

extern "C" fn reap(_: c_int) {
    // SAFETY: waitpid is async-signal-safe; a null status pointer is allowed.
    while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } > 0 {}
}

fn install(signal: c_int, handler: extern "C" fn(c_int)) -> std::io::Result<()> {
    // SAFETY: a zeroed sigaction is valid (empty mask, no flags) before the handler is set.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = handler as usize;
    action.sa_flags = libc::SA_RESTART;
    // SAFETY: `action` is initialised and outlives the call; the old action is not wanted.
    if unsafe { libc::sigaction(signal, &action, std::ptr::null_mut()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn main() {
    if std::env::args()
        .skip(1)
        .any(|a| a == "--version" || a == "-v")
    {
        println!("hybridnet-pause {}", env!("CARGO_PKG_VERSION"));
        return;
    }
    for (name, signal, handler) in [
        ("SIGINT", libc::SIGINT, exit_now as extern "C" fn(c_int)),
        ("SIGTERM", libc::SIGTERM, exit_now),
        ("SIGCHLD", libc::SIGCHLD, reap),
    ] {
        if let Err(e) = install(signal, handler) {
            eprintln!("hybridnet-pause: installing the {name} handler: {e}");
            std::process::exit(1);
        }
    }
    loop {
        // SAFETY: pause has no preconditions; it returns after each handled signal.
        unsafe { libc::pause() };
    }
}
