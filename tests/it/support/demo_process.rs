//! `tessera demo` as a separate process (the very command line of the `tessera` binary, see
//! [`crate::cli_process`]), its stdout and stderr collected as it runs. Dropping it stops the
//! demo as a person does (SIGINT, by its process id), and kills it if it does not end.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running `tessera demo`.
pub(crate) struct DemoProcess {
    child: Child,
    output: Arc<Mutex<String>>,
}

impl DemoProcess {
    /// Starts `tessera ARGS...` (`args[0]` is `demo`).
    pub(crate) fn start(args: &[&str]) -> Self {
        let mut child = crate::cli_process::command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the demo starts");
        let output = Arc::new(Mutex::new(String::new()));
        for stream in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let output = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let mut out = output.lock().unwrap_or_else(|p| p.into_inner());
                    out.push_str(&line);
                    out.push('\n');
                }
            });
        }
        DemoProcess { child, output }
    }

    /// What it printed so far.
    pub(crate) fn text(&self) -> String {
        self.output.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Waits until it printed `what`; panics with its output if it did not within `timeout`
    /// or ended first.
    pub(crate) fn wait_for(&mut self, what: &str, timeout: Duration) -> String {
        let until = Instant::now() + timeout;
        while !self.text().contains(what) {
            let exited = self.child.try_wait().expect("wait").is_some();
            assert!(Instant::now() < until && !exited, "the demo never printed {what:?}:\n{}", self.text());
            std::thread::sleep(Duration::from_millis(200));
        }
        self.text()
    }

    /// SIGINT, as Ctrl-C; its exit status if it ended within `timeout`.
    pub(crate) fn interrupt(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let _ = Command::new("kill").args(["-INT", &self.child.id().to_string()]).status();
        let until = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                // The output threads read the last lines.
                std::thread::sleep(Duration::from_millis(300));
                return Some(status);
            }
            if Instant::now() > until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for DemoProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() && self.interrupt(Duration::from_secs(60)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
