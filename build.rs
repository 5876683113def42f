//! Bundles the click-to-call widget at build time: `widget/` (our JavaScript and JsSIP from npm, pinned by
//! `widget/package-lock.json`) becomes one minified script, `$OUT_DIR/widget.js`, which `src/widget`
//! embeds in the binary. Needs node and npm; nothing is fetched at run time.
//!
//! The npm packages are installed into `$OUT_DIR/npm`, not `widget/node_modules`: every target directory
//! (several cargo builds run on one machine) gets its own tree, cargo's lock on the target directory
//! already keeps two builds out of one `OUT_DIR`, and the source tree is never written. npm's download
//! cache (`~/.npm`) is shared and safe for concurrent use, so a second target directory installs from it.

use std::env;
use std::fs;
use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

const INSTALL_HINT: &str = "install nodejs and npm (Debian/Ubuntu: `apt-get install -y nodejs npm`)";

/// Written into the installed tree after a successful `npm ci`: the package.json and lock file it came from.
const INSTALLED_STAMP: &str = ".callgate-installed-lock";

fn main() -> ExitCode {
    match build() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            // cargo shows a failed build script's stderr; this line is the part that says what to do.
            eprintln!("error: could not build the widget (widget/ -> widget.js): {message}");
            ExitCode::FAILURE
        }
    }
}

fn build() -> Result<(), String> {
    for input in [
        "widget/src",
        "widget/build.mjs",
        "widget/package.json",
        "widget/package-lock.json",
    ] {
        println!("cargo:rerun-if-changed={input}");
    }
    let manifest_dir = PathBuf::from(env_var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(env_var("OUT_DIR")?);
    let widget_dir = manifest_dir.join("widget");
    let npm_dir = out_dir.join("npm");

    install_packages(&widget_dir, &npm_dir)?;
    let bundle = out_dir.join("widget.js");
    let mut node = Command::new("node");
    node.arg(widget_dir.join("build.mjs"))
        .arg("--outfile")
        .arg(&bundle)
        .arg("--node-modules")
        .arg(npm_dir.join("node_modules"));
    run(&mut node, "node build.mjs")?;
    match fs::metadata(&bundle) {
        Ok(metadata) if metadata.len() > 0 => Ok(()),
        _ => Err(format!("node build.mjs wrote no {}", bundle.display())),
    }
}

/// `npm ci` of the build packages (no devDependencies: those are the browser tests' tools) into
/// `npm_dir`, skipped when the tree there was installed from the same package.json and lock file.
fn install_packages(widget_dir: &Path, npm_dir: &Path) -> Result<(), String> {
    let lock = read(&widget_dir.join("package-lock.json"))?;
    let manifest = read(&widget_dir.join("package.json"))?;
    let installed_from = [manifest.as_slice(), lock.as_slice()].concat();
    let stamp = npm_dir.join("node_modules").join(INSTALLED_STAMP);
    if fs::read(&stamp).is_ok_and(|installed| installed == installed_from) {
        return Ok(());
    }
    fs::create_dir_all(npm_dir).map_err(|error| io_error("create", npm_dir, &error))?;
    write(&npm_dir.join("package.json"), &manifest)?;
    write(&npm_dir.join("package-lock.json"), &lock)?;
    let mut npm = Command::new("npm");
    npm.current_dir(npm_dir).args([
        "ci",
        "--omit=dev",
        // esbuild's install script only re-checks the platform binary npm already placed.
        "--ignore-scripts",
        "--no-audit",
        "--no-fund",
        "--prefer-offline",
        "--loglevel=warn",
    ]);
    run(&mut npm, "npm ci")?;
    write(&stamp, &installed_from)
}

/// Runs a tool with its output on stderr (a build script's stdout is read by cargo as directives).
fn run(command: &mut Command, what: &str) -> Result<(), String> {
    let program = command.get_program().to_string_lossy().into_owned();
    let status = command
        .stdin(Stdio::null())
        .stdout(io::stderr())
        .status()
        .map_err(|error| match error.kind() {
            ErrorKind::NotFound => format!("`{program}` was not found; {INSTALL_HINT}"),
            _ => format!("could not start `{program}`: {error}; {INSTALL_HINT}"),
        })?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{what}` failed ({status}; its output is above). Check that npm can reach its registry, \
             or {INSTALL_HINT}"
        ))
    }
}

fn env_var(name: &str) -> Result<String, String> {
    env::var(name).map_err(|_| format!("cargo did not set {name}"))
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    fs::read(path).map_err(|error| io_error("read", path, &error))
}

fn write(path: &Path, contents: &[u8]) -> Result<(), String> {
    fs::write(path, contents).map_err(|error| io_error("write", path, &error))
}

fn io_error(action: &str, path: &Path, error: &io::Error) -> String {
    format!("cannot {action} {}: {error}", path.display())
}
