//! `k8s install`: the host tools `up` needs (with apt), and kube-apiserver built from Debian's
//! `kubernetes` source package with Debian's Go, beside Debian's etcd, both cached.

use std::collections::BTreeSet;
use std::env;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use super::K8S_VERSION;
use super::config::Config;
use crate::host::{find_in_path, list_dir, mkdir, remove_dir_all, run, write_file};

/// Debian's Go that builds it (GOPATH mode, from the source's vendor/ folder).
const GO_VERSION: &str = "1.19";
/// The Debian package with github.com/modern-go/reflect2 1.0.2 (see [`replace_reflect2`]).
const REFLECT2_PACKAGE: &str = "golang-github-modern-go-reflect2-dev";

/// Host tools `up` needs, and the Debian package that provides each.
const HOST_TOOLS: [(&str, &str); 6] = [
    ("curl", "curl"),
    ("openssl", "openssl"),
    ("kill", "procps"),
    ("apt-get", "apt"),
    ("dpkg", "dpkg"),
    ("tar", "tar"),
];

/// Runs `apt-get update` at most once per xtask run.
struct Apt {
    updated: bool,
}

impl Apt {
    fn update(&mut self) -> Result<(), String> {
        if !self.updated {
            println!("xtask k8s: apt-get update");
            run(Command::new("apt-get").args(["update", "-qq"]))?;
            self.updated = true;
        }
        Ok(())
    }
}

/// Installs missing host tools with apt and builds the binaries unless they are cached.
pub(super) fn install(config: &Config) -> Result<(), String> {
    let mut apt = Apt { updated: false };
    let missing: BTreeSet<&str> = HOST_TOOLS
        .iter()
        .filter(|(tool, _)| find_in_path(tool).is_none())
        .map(|&(_, package)| package)
        .collect();
    if !missing.is_empty() {
        if find_in_path("apt-get").is_none() {
            return Err(format!(
                "missing packages {missing:?} and no apt-get to install them with"
            ));
        }
        apt.update()?;
        println!(
            "xtask k8s: apt-get install {}",
            missing.iter().copied().collect::<Vec<_>>().join(" ")
        );
        run(Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    if config.apiserver_bin().is_file() && config.etcd_bin().is_file() {
        println!(
            "xtask k8s: kube-apiserver v{K8S_VERSION} and etcd are cached in {}",
            config.bin_dir.display()
        );
        return Ok(());
    }
    build(config, &mut apt)
}

/// Builds kube-apiserver from Debian's `kubernetes` source package with Debian's Go, unpacks
/// Debian's etcd, and caches both in `config.bin_dir`.
fn build(config: &Config, apt: &mut Apt) -> Result<(), String> {
    let started = Instant::now();
    println!(
        "xtask k8s: building kube-apiserver v{K8S_VERSION} from Debian's source package into {} \
         (about 4 minutes, once)",
        config.bin_dir.display()
    );
    remove_stale_work_dirs(&config.cache_dir);
    let work = config
        .cache_dir
        .join(format!("work-{}", std::process::id()));
    let root = work.join("root");
    mkdir(&root)?;
    mkdir(&config.bin_dir)?;

    ensure_deb_src()?;
    apt.update()?;
    let go_pkg = format!("golang-{GO_VERSION}-go");
    let go_src_pkg = format!("golang-{GO_VERSION}-src");
    // Downloaded and unpacked, not installed: no service is started, the system's Go is untouched.
    let debs = ["etcd-server", &go_pkg, &go_src_pkg, REFLECT2_PACKAGE];
    println!(
        "xtask k8s: apt-get download {}; apt-get source kubernetes",
        debs.join(" ")
    );
    run(Command::new("apt-get")
        .args(["download", "-qq"])
        .args(debs)
        .current_dir(&work))?;
    run(Command::new("apt-get")
        .args(["source", "--download-only", "-qq", "kubernetes"])
        .current_dir(&work))?;
    let listing = list_dir(&work)?;
    for deb in listing.iter().filter(|n| n.ends_with(".deb")) {
        run(Command::new("dpkg")
            .arg("-x")
            .arg(work.join(deb))
            .arg(&root))?;
    }
    let orig = listing
        .iter()
        .find(|n| n.starts_with("kubernetes_") && n.contains(".orig.tar."))
        .ok_or_else(|| {
            format!(
                "`apt-get source kubernetes` left no kubernetes_*.orig.tar.* in {}",
                work.display()
            )
        })?;
    println!("xtask k8s: unpacking {orig}");
    run(Command::new("tar").arg("xf").arg(orig).current_dir(&work))?;
    let src_name = list_dir(&work)?
        .into_iter()
        .find(|n| n.starts_with("kubernetes-1.") && work.join(n).is_dir())
        .ok_or_else(|| format!("{orig} did not unpack into kubernetes-1.*"))?;
    if !src_name.contains(K8S_VERSION) {
        println!(
            "xtask k8s: warning: Debian's source is {src_name}, expected {K8S_VERSION}; building it"
        );
    }

    replace_reflect2(&root, &work.join(&src_name))?;

    // Upstream 1.20 builds in GOPATH mode from its vendor/ folder: no module download is needed.
    let goroot = root.join(format!("usr/lib/go-{GO_VERSION}"));
    let gopath = work.join("gopath");
    mkdir(&gopath.join("src/k8s.io"))?;
    let src = gopath.join("src/k8s.io/kubernetes");
    symlink(work.join(&src_name), &src)
        .map_err(|e| format!("cannot link {}: {e}", src.display()))?;
    let path = format!(
        "{}:{}",
        goroot.join("bin").display(),
        env::var("PATH").unwrap_or_default()
    );
    let go = |args: &[&str]| {
        let mut command = Command::new(goroot.join("bin/go"));
        command
            .args(args)
            .current_dir(&src)
            .env("PWD", &src)
            .env("GOROOT", &goroot)
            .env("GOPATH", &gopath)
            .env("GOCACHE", work.join("gocache"))
            .env("CGO_ENABLED", "0")
            .env("GO111MODULE", "off")
            .env("GOFLAGS", "")
            .env("PATH", &path);
        command
    };

    // The one generated file the source tarball lacks: pkg/generated/openapi.
    println!("xtask k8s: generating pkg/generated/openapi");
    let openapi_gen = work.join("openapi-gen");
    run(go(&["build", "-o"])
        .arg(&openapi_gen)
        .arg("k8s.io/kubernetes/vendor/k8s.io/kube-openapi/cmd/openapi-gen"))?;
    let dirs = openapi_input_dirs(&src)?;
    run(Command::new(&openapi_gen)
        .arg("-i")
        .arg(dirs)
        .args([
            "-p",
            "k8s.io/kubernetes/pkg/generated/openapi",
            "-O",
            "zz_generated.openapi",
            "-h",
            "vendor/k8s.io/code-generator/hack/boilerplate.go.txt",
            "-r",
        ])
        .arg(work.join("openapi-violations.report"))
        .current_dir(&src)
        .env("PWD", &src)
        .env("GOROOT", &goroot)
        .env("GOPATH", &gopath)
        .env("GO111MODULE", "off")
        .env("PATH", &path))?;

    println!("xtask k8s: go build k8s.io/kubernetes/cmd/kube-apiserver (the long part)");
    let mut ldflags = String::from("-s -w");
    for package in ["client-go/pkg/version", "component-base/version"] {
        let v = format!("k8s.io/kubernetes/vendor/k8s.io/{package}");
        ldflags.push_str(&format!(
            " -X {v}.gitVersion=v{K8S_VERSION} -X {v}.gitMajor=1 -X {v}.gitMinor=20 \
             -X {v}.gitTreeState=clean"
        ));
    }
    let built = work.join("kube-apiserver");
    run(go(&["build", "-trimpath", "-ldflags", &ldflags, "-o"])
        .arg(&built)
        .arg("k8s.io/kubernetes/cmd/kube-apiserver"))?;
    let version = run(Command::new(&built).arg("--version"))?;
    // Into the cache: etcd first, kube-apiserver last, each by rename, so a cache with
    // kube-apiserver in it is complete.
    install_file(&root.join("usr/bin/etcd"), &config.etcd_bin())?;
    install_file(&built, &config.apiserver_bin())?;
    remove_dir_all(&work)?;
    println!(
        "xtask k8s: built {} in {:.0} s",
        String::from_utf8_lossy(&version.stdout).trim(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Kubernetes 1.20 vendors github.com/modern-go/reflect2 v1.0.1, which breaks under Go 1.18 and
/// later: every JSON answer with a map in it (labels, annotations, a `LeaseList`) panics in
/// `reflect2.(*UnsafeMapType).Key`. Debian's packaged reflect2 is 1.0.2, which fixes that and
/// keeps the same API: it replaces the vendored copy.
fn replace_reflect2(root: &Path, src: &Path) -> Result<(), String> {
    let packaged = root.join("usr/share/gocode/src/github.com/modern-go/reflect2");
    let vendored = src.join("vendor/github.com/modern-go/reflect2");
    let is_code =
        |name: &str| (name.ends_with(".go") || name.ends_with(".s")) && !name.ends_with("_test.go");
    let new_files: Vec<String> = list_dir(&packaged)?
        .into_iter()
        .filter(|n| is_code(n))
        .collect();
    if new_files.is_empty() {
        return Err(format!(
            "{REFLECT2_PACKAGE} has no Go files in {}",
            packaged.display()
        ));
    }
    println!("xtask k8s: replacing the vendored reflect2 v1.0.1 with Debian's {REFLECT2_PACKAGE}");
    for name in list_dir(&vendored)?.into_iter().filter(|n| is_code(n)) {
        let path = vendored.join(name);
        fs::remove_file(&path).map_err(|e| format!("cannot remove {}: {e}", path.display()))?;
    }
    for name in new_files {
        let (from, to) = (packaged.join(&name), vendored.join(&name));
        fs::copy(&from, &to)
            .map_err(|e| format!("cannot copy {} to {}: {e}", from.display(), to.display()))?;
    }
    Ok(())
}

/// `apt-get source` needs a deb-src entry: derive one from the machine's own Debian sources.
fn ensure_deb_src() -> Result<(), String> {
    let dir = Path::new("/etc/apt/sources.list.d");
    let mut sources: Vec<PathBuf> = list_dir(dir)
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.ends_with(".sources") || n.ends_with(".list"))
        .map(|n| dir.join(n))
        .collect();
    sources.push(PathBuf::from("/etc/apt/sources.list"));
    let texts: Vec<(PathBuf, String)> = sources
        .into_iter()
        .filter_map(|p| fs::read_to_string(&p).ok().map(|t| (p, t)))
        .collect();
    let has_src = texts.iter().any(|(_, text)| {
        text.lines().any(|l| {
            let l = l.trim();
            l.starts_with("deb-src ") || (l.starts_with("Types:") && l.contains("deb-src"))
        })
    });
    if has_src {
        return Ok(());
    }
    let debian = texts
        .iter()
        .find(|(_, text)| text.contains("debian.org/debian"))
        .ok_or("no deb-src entry and no Debian apt source to derive one from")?;
    let (name, text) = if debian.0.extension().is_some_and(|e| e == "sources") {
        let text = debian
            .1
            .lines()
            .map(|l| {
                if l.trim() == "Types: deb" {
                    "Types: deb-src"
                } else {
                    l
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        ("lease-xtask-debian-src.sources", text)
    } else {
        let text = debian
            .1
            .lines()
            .filter_map(|l| l.trim().strip_prefix("deb "))
            .map(|rest| format!("deb-src {rest}"))
            .collect::<Vec<_>>()
            .join("\n");
        ("lease-xtask-debian-src.list", text)
    };
    let path = dir.join(name);
    println!(
        "xtask k8s: adding source entries for `apt-get source`: {}",
        path.display()
    );
    write_file(&path, text + "\n")
}

/// The recipe's `find | grep | dirname | sort -u` for openapi-gen's input packages: the
/// directories of Go files with a `// +k8s:` tag line and `+k8s:openapi-gen=`, outside
/// `_*`, `.*` and `vendor/`, with `staging/src` seen as `vendor`.
fn openapi_input_dirs(src: &Path) -> Result<String, String> {
    let mut files = Vec::new();
    for name in list_dir(src)? {
        if name.starts_with('_') || name.starts_with('.') || name == "vendor" {
            continue;
        }
        collect_go_files(&src.join(&name), &name, &mut files);
    }
    let mut dirs = BTreeSet::new();
    for (relative, path) in files {
        let relative = match relative.strip_prefix("staging/src") {
            Some(rest) => format!("vendor{rest}"),
            None => relative,
        };
        if relative.starts_with("vendor/k8s.io/code-generator/")
            || relative.starts_with("vendor/k8s.io/sample-apiserver/")
        {
            continue;
        }
        let Ok(text) = fs::read_to_string(&path) else {
            continue;
        };
        let tagged = text.lines().any(|line| {
            line.strip_prefix("//")
                .is_some_and(|rest| rest.trim_start_matches(' ').starts_with("+k8s:"))
        });
        if tagged && text.contains("+k8s:openapi-gen=") {
            let dir = relative.rsplit_once('/').map_or(".", |(dir, _)| dir);
            dirs.insert(format!("k8s.io/kubernetes/{dir}"));
        }
    }
    if dirs.is_empty() {
        return Err(format!(
            "no openapi-gen input packages found below {}",
            src.display()
        ));
    }
    Ok(dirs.into_iter().collect::<Vec<_>>().join(","))
}

/// Regular `.go` files below `path` (symbolic links are not followed), with their paths relative
/// to the source root.
fn collect_go_files(path: &Path, relative: &str, out: &mut Vec<(String, PathBuf)>) {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return;
    };
    if meta.is_dir() {
        let Ok(names) = list_dir(path) else {
            return;
        };
        for name in names {
            collect_go_files(&path.join(&name), &format!("{relative}/{name}"), out);
        }
    } else if meta.is_file() && relative.ends_with(".go") {
        out.push((relative.to_owned(), path.to_path_buf()));
    }
}

/// Build folders of builds that are no longer running (a build interrupted by Ctrl-C).
fn remove_stale_work_dirs(cache: &Path) {
    for name in list_dir(cache).unwrap_or_default() {
        if let Some(pid) = name
            .strip_prefix("work-")
            .and_then(|p| p.parse::<u32>().ok())
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = fs::remove_dir_all(cache.join(name));
        }
    }
}

/// Copies `from` to `to` through a temporary file and a rename, so `to` is whole or absent.
fn install_file(from: &Path, to: &Path) -> Result<(), String> {
    let tmp = to.with_extension("tmp");
    fs::copy(from, &tmp)
        .and_then(|_| fs::rename(&tmp, to))
        .map_err(|e| format!("cannot install {} as {}: {e}", from.display(), to.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_dirs_follow_the_recipe() {
        let root = env::temp_dir().join(format!("xtask-k8s-openapi-{}", std::process::id()));
        let tagged = "// +k8s:openapi-gen=true\npackage v1\n";
        for (path, text) in [
            ("pkg/apis/a/v1/types.go", tagged),
            ("pkg/apis/b/doc.go", "package b\n"),
            ("staging/src/k8s.io/api/x/v1/doc.go", tagged),
            ("staging/src/k8s.io/code-generator/y/doc.go", tagged),
            ("vendor/k8s.io/z/doc.go", tagged),
            ("_output/w/doc.go", tagged),
        ] {
            let file = root.join(path);
            fs::create_dir_all(file.parent().unwrap()).unwrap();
            fs::write(file, text).unwrap();
        }
        let dirs = openapi_input_dirs(&root);
        fs::remove_dir_all(&root).unwrap();
        assert_eq!(
            dirs.unwrap(),
            "k8s.io/kubernetes/pkg/apis/a/v1,k8s.io/kubernetes/vendor/k8s.io/api/x/v1"
        );
    }
}
