//! `pyro-agent`: PID 1 of every pyro microVM and the guest end of the agent channel.
//!
//! The binary is `main.rs`; the library exists so that a test-only agent (`pyro-test-agent`) can run
//! the same code with some replies forged, as a hostile guest would.
//!
//! At boot it mounts the pseudo file systems, loads the kernel modules the initramfs carries, mounts the
//! environment's read-only base image and then serves requests on the virtio-serial port: the guest is
//! *ready*. An `activate` request makes it one VM's own (clock, entropy, identity, its writable disk and the
//! overlay root commands run in); `exec` runs commands; `power_off` ends the VM. The agent itself stays
//! outside the overlay root, and commands run without the capabilities that could reach it
//! (see [`privileges`]).

pub mod activate;
mod archive;
mod confine;
mod disks;
mod exec;
mod files;
mod freeze;
mod init;
mod net;
mod path_ops;
mod payload;
mod port;
mod privileges;
mod processes;
mod reaper;
pub mod serve;
mod services;
mod shells;
mod snapview;
mod sys;
mod watch;

/// Runs the agent: boot duties when PID 1, then the request loop. `forger`, for tests only, may
/// answer requests in place of the agent.
pub fn run(forger: Option<&'static dyn serve::Forger>) {
    if let Some(forger) = forger {
        serve::set_forger(forger);
    }
    let is_init = std::process::id() == 1;
    privileges::protect_agent();
    std::panic::set_hook(Box::new(|info| {
        log(&format!("panic: {info}"));
    }));
    if is_init {
        if let Err(err) = init::boot() {
            log(&format!("boot failed: {err}"));
            init::power_off();
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build();
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(err) => {
            log(&format!("cannot start the runtime: {err}"));
            if is_init {
                init::power_off();
            }
            std::process::exit(1);
        }
    };
    if let Err(err) = runtime.block_on(serve::serve()) {
        log(&format!("agent stopped: {err}"));
    }
    if is_init {
        init::power_off();
    }
}

/// Writes one line to the console (the VM's serial log on the host).
pub fn log(message: &str) {
    eprintln!("pyro-agent: {message}");
}
