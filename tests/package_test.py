#!/usr/bin/env python3
"""Installing lbd the way ops do: `cmake --install` into a prefix, and the .deb that `cpack` builds.

Checks what an operator relies on after either: lbd, lbctl and lbload are where they belong and
run; the systemd unit points at the installed lbd and lbctl, and systemd accepts it; the example
config and README are in the docs folder; the .deb's Depends names a Debian package for every
shared library the binaries load (dpkg-shlibdeps), so `apt install ./lbd_*.deb` pulls them in.

Usage: package_test.py BUILD_DIR
"""
import os
import subprocess
import sys
import tempfile

BUILD = os.path.abspath(sys.argv[1])
failures = []


def check(ok, what):
    if not ok:
        failures.append(what)
        print("FAIL: " + what)


def run(args, **kw):
    return subprocess.run(args, capture_output=True, text=True, timeout=120, **kw)


def check_tree(root, prefix):
    """The files one install leaves under root + prefix, and that they work."""
    where = root + prefix
    for tool in ("lbd", "lbctl", "lbload"):
        path = os.path.join(where, "bin", tool)
        check(os.access(path, os.X_OK), f"{prefix}/bin/{tool} is installed and executable")
        if os.access(path, os.X_OK):
            r = run([path, "--help"])
            check(r.returncode == 0 and "Usage" in r.stdout + r.stderr, f"{prefix}/bin/{tool} --help answers")
    r = run([os.path.join(where, "bin", "lbd"), "--version"])
    check(r.returncode == 0 and r.stdout.startswith("lbd "), f"lbd --version says its version: {r.stdout!r}")
    check(os.path.isfile(os.path.join(where, "share/doc/lbd/examples/lbd.toml")), "the example config is in the docs")
    check(os.path.isfile(os.path.join(where, "share/doc/lbd/README.md")), "the README is in the docs")
    unit_path = os.path.join(where, "lib/systemd/system/lbd.service")
    check(os.path.isfile(unit_path), f"the unit is at {prefix}/lib/systemd/system/lbd.service")
    if not os.path.isfile(unit_path):
        return
    unit = open(unit_path).read()
    check(f"ExecStart={prefix}/bin/lbd --listen 0.0.0.0:8080\n" in unit, f"the unit starts {prefix}/bin/lbd")
    check(f"ExecReload={prefix}/bin/lbctl reload\n" in unit, f"the unit reloads with {prefix}/bin/lbctl")
    check("/usr/local/bin" not in unit or prefix == "/usr/local", "no path of another prefix is left in the unit")
    # systemd checks the unit as it would load it, including that its commands exist: a copy whose
    # commands are those of this tree (installed at root, not yet at prefix).
    check_dir = os.path.join(root, "verify")
    os.makedirs(check_dir, exist_ok=True)
    with open(os.path.join(check_dir, "lbd.service"), "w") as f:
        f.write(unit.replace(f"={prefix}/bin/", f"={where}/bin/"))
    r = run(["systemd-analyze", "verify", os.path.join(check_dir, "lbd.service")])
    check(r.returncode == 0, "systemd-analyze verify accepts the installed unit: " + (r.stderr.strip() or r.stdout.strip()))


with tempfile.TemporaryDirectory(prefix="lbd-package-") as tmp:
    # cmake --install, into a root of its own with the default prefix
    root = os.path.join(tmp, "installed")
    r = run(["cmake", "--install", BUILD, "--prefix", "/usr/local"], env={**os.environ, "DESTDIR": root})
    check(r.returncode == 0, "cmake --install succeeds: " + r.stderr.strip())
    if r.returncode == 0:
        check_tree(root, "/usr/local")

    # the .deb
    r = run(["cpack", "--config", os.path.join(BUILD, "CPackConfig.cmake"), "-B", os.path.join(tmp, "pkg")])
    debs = [f for f in os.listdir(os.path.join(tmp, "pkg")) if f.endswith(".deb")] if r.returncode == 0 else []
    check(r.returncode == 0 and len(debs) == 1, "cpack builds one .deb: " + (r.stderr.strip() or r.stdout.strip()))
    if debs:
        deb = os.path.join(tmp, "pkg", debs[0])
        fields = run(["dpkg-deb", "--field", deb, "Package", "Depends"]).stdout
        print(fields.strip())
        check("Package: lbd\n" in fields, "the package is named lbd")
        for library in ("libbpf1", "liburing2", "libseccomp2", "libspdlog1", "libfmt9", "libtomlplusplus3",
                        "libncursesw6", "libc6", "libstdc++6"):
            check(library in fields, f"Depends names {library}")
        unpacked = os.path.join(tmp, "unpacked")
        r = run(["dpkg-deb", "--extract", deb, unpacked])
        check(r.returncode == 0, "the .deb unpacks: " + r.stderr.strip())
        if r.returncode == 0:
            check_tree(unpacked, "/usr")

if failures:
    print(f"{len(failures)} check(s) failed")
    sys.exit(1)
print("package: every check passed")
