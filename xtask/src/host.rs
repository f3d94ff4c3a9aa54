//! What the server tasks (`k8s`, `pg`) do on the host, written once: run a command and show it,
//! the tail of its output, find a program, list, create and remove folders, write files, quote
//! for a shell, and ask whether a local port answers.

use std::env;
use std::fs;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// Runs `command` to completion, capturing its output. On failure the error names the command,
/// its exit status and the tail of its output.
pub(crate) fn run(command: &mut Command) -> Result<Output, String> {
    let shown = display(command);
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => format!("cannot run `{shown}`: program not found"),
            _ => format!("cannot run `{shown}`: {e}"),
        })?;
    if output.status.success() {
        Ok(output)
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stdout = String::from_utf8_lossy(&output.stdout);
        Err(format!(
            "`{shown}` failed ({}); the end of its output:\n{}{}",
            output.status,
            tail(&stdout, 10),
            tail(&stderr, 25)
        ))
    }
}

/// `command` as a reader would type it (each argument cut at 200 bytes), and the folder it runs
/// in: for messages.
pub(crate) fn display(command: &Command) -> String {
    let mut parts = vec![command.get_program().to_string_lossy().into_owned()];
    parts.extend(command.get_args().map(|a| {
        let a = a.to_string_lossy();
        if a.len() > 200 {
            format!("{}...", &a[..a.floor_char_boundary(200)])
        } else {
            a.into_owned()
        }
    }));
    let mut shown = parts.join(" ");
    if let Some(dir) = command.get_current_dir() {
        shown.push_str(&format!(" (in {})", dir.display()));
    }
    shown
}

/// The last `lines` lines of `text`, ending in a newline unless empty: what an error shows of a
/// long output.
pub(crate) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let mut out = all[all.len().saturating_sub(lines)..].join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    out
}

/// The last `lines` lines of the file at `path`, or why it cannot be read.
pub(crate) fn tail_file(path: &Path, lines: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => tail(&String::from_utf8_lossy(&bytes), lines),
        Err(e) => format!("(cannot read it: {e})\n"),
    }
}

/// Where `program` is on `$PATH`, if anywhere.
pub(crate) fn find_in_path(program: &str) -> Option<PathBuf> {
    env::split_paths(&env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// The names of the entries of `dir`, sorted (names that are not UTF-8 are skipped).
pub(crate) fn list_dir(dir: &Path) -> Result<Vec<String>, String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map_err(|e| format!("cannot list {}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    Ok(names)
}

/// `fs::create_dir_all`, with an error that names the folder.
pub(crate) fn mkdir(dir: &Path) -> Result<(), String> {
    fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))
}

/// Quotes `value` for a POSIX shell when it needs it.
pub(crate) fn shell_quote(value: &str) -> String {
    if !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@".contains(c))
    {
        value.to_owned()
    } else {
        format!("'{}'", value.replace('\'', "'\\''"))
    }
}

/// `fs::remove_dir_all`, with an error that names the folder.
pub(crate) fn remove_dir_all(dir: &Path) -> Result<(), String> {
    fs::remove_dir_all(dir).map_err(|e| format!("cannot remove {}: {e}", dir.display()))
}

/// `fs::write`, with an error that names the file.
pub(crate) fn write_file(path: &Path, contents: impl AsRef<[u8]>) -> Result<(), String> {
    fs::write(path, contents).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Whether something accepts TCP connections on `port` of 127.0.0.1 within `timeout`.
pub(crate) fn port_answers(port: u16, timeout: Duration) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, timeout).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quote("/root/.cache/a-b_c"), "/root/.cache/a-b_c");
        assert_eq!(shell_quote("/a b/it's"), "'/a b/it'\\''s'");
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc\n");
        assert_eq!(tail("", 2), "");
    }
}
