//! The server's credentials (a CA, its certificate, the service-account keys, the users' tokens)
//! and the two kubeconfigs the tests read.

use std::fs;
use std::io::Read;
use std::process::Command;

use super::config::Config;
use super::{ADMIN_USER, RESTRICTED_USER};
use crate::host::{mkdir, run, write_file};

/// Creates what is missing: a CA, the server's certificate for 127.0.0.1 and localhost, the
/// service-account key pair, and the two users' tokens. All are kept across `down`/`up`.
pub(super) fn make_credentials(config: &Config) -> Result<(), String> {
    mkdir(&config.state_dir.join("pki"))?;
    let openssl = |args: &[&str]| {
        let mut command = Command::new("openssl");
        command.args(args).current_dir(config.state_dir.join("pki"));
        command
    };
    if !config.pki("ca.crt").exists() {
        run(&mut openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "3650",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-subj",
            "/CN=lease-xtask-local-ca",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]))?;
        let _ = fs::remove_file(config.pki("apiserver.crt"));
    }
    if !config.pki("apiserver.crt").exists() {
        write_file(
            &config.pki("apiserver.ext"),
            "basicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth\n\
             subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,\
             DNS:kubernetes.default,DNS:kubernetes.default.svc\n",
        )?;
        run(&mut openssl(&[
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "apiserver.key",
            "-out",
            "apiserver.csr",
            "-subj",
            "/CN=kube-apiserver",
        ]))?;
        run(&mut openssl(&[
            "x509",
            "-req",
            "-in",
            "apiserver.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "3650",
            "-extfile",
            "apiserver.ext",
            "-out",
            "apiserver.crt",
        ]))?;
    }
    if !config.pki("sa.pub").exists() {
        run(&mut openssl(&["genrsa", "-out", "sa.key", "2048"]))?;
        run(&mut openssl(&[
            "rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub",
        ]))?;
    }
    // An administrator, and one user with no rights until a Role grants them (for RBAC tests).
    let mut lines = String::new();
    for (user, groups) in [(ADMIN_USER, "system:masters"), (RESTRICTED_USER, "")] {
        let path = config.state_dir.join(format!("{user}.token"));
        if !path.exists() {
            write_file(&path, random_hex(24)? + "\n")?;
        }
        let token = config.token(user)?;
        if groups.is_empty() {
            lines.push_str(&format!("{token},{user},uid-{user}\n"));
        } else {
            lines.push_str(&format!("{token},{user},uid-{user},\"{groups}\"\n"));
        }
    }
    let tokens = config.pki("tokens.csv");
    write_file(&tokens, lines)
}

/// The administrator's and the restricted user's kubeconfigs (the server, our CA, a token).
pub(super) fn write_kubeconfigs(config: &Config) -> Result<(), String> {
    for user in [ADMIN_USER, RESTRICTED_USER] {
        let text = format!(
            "apiVersion: v1\n\
             kind: Config\n\
             clusters:\n\
             - name: lease-local\n\
             \x20 cluster:\n\
             \x20   server: {server}\n\
             \x20   certificate-authority: {ca}\n\
             users:\n\
             - name: {user}\n\
             \x20 user:\n\
             \x20   token: {token}\n\
             contexts:\n\
             - name: lease-local\n\
             \x20 context:\n\
             \x20   cluster: lease-local\n\
             \x20   user: {user}\n\
             \x20   namespace: default\n\
             current-context: lease-local\n",
            server = config.url(""),
            ca = yaml_quote(&config.pki("ca.crt").display().to_string()),
            token = config.token(user)?,
        );
        let path = config.kubeconfig(user);
        write_file(&path, text)?;
    }
    Ok(())
}

/// `bytes` random bytes from the kernel, in hex: a bearer token.
fn random_hex(bytes: usize) -> Result<String, String> {
    let mut buf = vec![0u8; bytes];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| format!("cannot read /dev/urandom: {e}"))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// A YAML double-quoted string.
fn yaml_quote(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}
