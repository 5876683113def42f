//! Helpers shared by the integration tests: throwaway databases and the real `callgate` binary.

#[allow(dead_code, reason = "only the interop tests run baresip")]
pub(crate) mod baresip;
pub(crate) mod databases;
#[allow(dead_code, reason = "only the call tests start a gateway")]
pub(crate) mod gateway;
#[allow(dead_code, reason = "only the interop tests run kamailio")]
pub(crate) mod kamailio;
#[allow(dead_code, reason = "only the call tests record RTP")]
pub(crate) mod rtp;
#[allow(dead_code, reason = "only the call tests run SIPp")]
pub(crate) mod sipp;
#[allow(dead_code, reason = "only the TLS trunk tests run a TLS PBX")]
pub(crate) mod tls;

use std::process::{Child, Command, Stdio};

pub(crate) use databases::TestDatabase;

/// The `callgate` binary pointed at one test database.
pub(crate) struct Callgate {
    database: TestDatabase,
}

impl Callgate {
    /// Uses `database`, migrated with `callgate migrate` first.
    pub(crate) fn migrated(database: TestDatabase) -> Self {
        let callgate = Self { database };
        callgate.run(&["migrate"]).success();
        callgate
    }

    /// Uses `database` as it is.
    pub(crate) fn unmigrated(database: TestDatabase) -> Self {
        Self { database }
    }

    /// The database URL the binary is given.
    pub(crate) fn database_url(&self) -> &str {
        self.database.url()
    }

    /// Runs `callgate --database URL ARGS…`.
    pub(crate) fn run(&self, args: &[&str]) -> Outcome {
        let mut full = vec!["--database", self.database.url()];
        full.extend_from_slice(args);
        callgate(&full)
    }

    /// Starts `callgate --database URL ARGS…` in the background, stderr captured.
    pub(crate) fn spawn(&self, args: &[&str]) -> Child {
        command()
            .arg("--database")
            .arg(self.database.url())
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("test setup: start the callgate binary")
    }

    /// Every trunk and widget as `list --json` prints them: compared before and after a refused command.
    pub(crate) fn snapshot(&self) -> String {
        let trunks = self.run(&["trunk", "list", "--json"]).success();
        let widgets = self.run(&["widget", "list", "--json"]).success();
        format!("{trunks}{widgets}")
    }

    /// Runs a command that must be refused: exit status `code`, nothing on stdout, exactly one stderr line
    /// starting with `error: ` and containing `message`, and no change to trunks or widgets. Returns the line.
    pub(crate) fn refused(&self, args: &[&str], code: i32, message: &str) -> String {
        let before = self.snapshot();
        let outcome = self.run(args);
        let line = outcome.failure(code);
        assert!(
            line.contains(message),
            "`callgate {}`: expected {message:?} in {line:?}",
            outcome.args
        );
        assert_eq!(
            self.snapshot(),
            before,
            "`callgate {}` changed the database",
            outcome.args
        );
        line
    }
}

/// The binary, without the `CALLGATE_*` variables of the test's environment.
fn command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_callgate"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("CALLGATE_") {
            command.env_remove(name);
        }
    }
    command
}

/// Runs `callgate ARGS…`.
pub(crate) fn callgate(args: &[&str]) -> Outcome {
    let output = command()
        .args(args)
        .output()
        .expect("test setup: run the callgate binary");
    Outcome {
        args: args.join(" "),
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// What one run of the binary did.
pub(crate) struct Outcome {
    args: String,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Outcome {
    /// What the run wrote on stderr (log lines, errors).
    pub(crate) fn stderr(&self) -> &str {
        &self.stderr
    }

    /// Asserts exit status 0 and returns stdout.
    pub(crate) fn success(self) -> String {
        assert_eq!(
            self.code,
            Some(0),
            "`callgate {}` failed: {}",
            self.args,
            self.stderr
        );
        self.stdout
    }

    /// Asserts exit status `code`, empty stdout and a single `error: ` line on stderr; returns that line.
    pub(crate) fn failure(&self, code: i32) -> String {
        assert_eq!(
            self.code,
            Some(code),
            "`callgate {}`: stderr {:?}",
            self.args,
            self.stderr
        );
        assert_eq!(self.stdout, "", "`callgate {}` printed to stdout", self.args);
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "`callgate {}`: stderr is not one line: {:?}",
            self.args,
            self.stderr
        );
        assert!(
            lines[0].starts_with("error: "),
            "`callgate {}`: {:?}",
            self.args,
            lines[0]
        );
        lines[0].to_owned()
    }
}

/// Kills a peer process (baresip, Kamailio) at the end of a test and, when the test is failing, prints its
/// log with the directory holding its config.
#[allow(dead_code, reason = "only the interop tests run such peers")]
pub(crate) fn end_peer(child: Option<Child>, name: &str, directory: &std::path::Path, log: &str) {
    if let Some(mut child) = child {
        let _ = child.kill();
        let _ = child.wait();
    }
    if std::thread::panicking() {
        eprintln!("--- {name} ({}) ---\n{log}", directory.display());
    }
}
