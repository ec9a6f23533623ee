#!/usr/bin/env python3
"""Checks what can be checked of shardloop's `rust-version` without building with it.

1. Every package that a user's build of shardloop on Linux compiles (its normal and
   build dependencies, transitively, every feature on, at the versions in
   Cargo.lock; not dev-dependencies, which only our tests and benches build)
   declares a `rust-version` no newer than shardloop's.
2. Clippy's `incompatible_msrv` lint is not allowed away anywhere in the workspace
   (an `allow`/`expect` of it or of a group holding it, a `[lints]` entry, or a
   clippy.toml, whose `msrv` would replace the `rust-version` the lint reads): that
   lint, an error under .ci/run's `clippy -D warnings`, is what catches our own
   uses of std APIs stabilized after our `rust-version`.

What neither catches: language features and syntax newer than our `rust-version`
(let chains, new `impl Trait` positions, ...), std APIs that the lint does not see
(behind other crates' macros), and dependencies that declare no `rust-version`
(listed, not failed: there is nothing to compare). Only that toolchain sees those:
.ci/run also checks the library with it where rustup can install it. And a user
who resolves afresh with a Cargo older than 1.84 may get newer dependencies than
our lockfile's (.cargo/config.toml keeps our own `cargo update` to compatible ones).

Usage: python3 .ci/msrv_check.py [PACKAGE]   (default: shardloop)
"""

import json
import os
import pathlib
import re
import subprocess
import sys

# `allow(...)` / `expect(...)` naming the lint or a group that holds it
# (clippy::suspicious, clippy::all): a source attribute.
ATTR_OFF = re.compile(r"(allow|expect)\s*\([^)]*clippy::(incompatible_msrv|suspicious|all)\b")
# A `[lints.clippy]` key for the lint or one of those groups, in a Cargo.toml.
KEY_OFF = re.compile(r"^\s*(incompatible_msrv|suspicious|all)\s*=", re.M)


def lint_switched_off(meta):
    """Where the workspace allows clippy's incompatible_msrv lint away."""
    found = []
    root = pathlib.Path(meta["workspace_root"])
    paths = []
    for top, dirs, files in os.walk(root):
        # Not build output, not .git, .ci (this script) or .cargo.
        dirs[:] = sorted(d for d in dirs if d != "target" and not d.startswith("."))
        paths += [pathlib.Path(top, f) for f in sorted(files)]
    for path in paths:
        rel = path.relative_to(root)
        if path.name in ("clippy.toml", ".clippy.toml"):
            found.append(f"{rel}: a clippy.toml (its msrv would override rust-version)")
        elif path.suffix == ".rs" or path.name == "Cargo.toml":
            text = path.read_text(errors="replace")
            patterns = [ATTR_OFF] + ([KEY_OFF] if path.name == "Cargo.toml" else [])
            for m in (m for p in patterns for m in p.finditer(text)):
                line = text.count("\n", 0, m.start()) + 1
                found.append(f"{rel}:{line}: {m.group(0).strip()}")
    return found


def version_tuple(text):
    """ "1.80" or "1.80.1" -> (1, 80, 1) with missing parts as 0."""
    parts = [int(p) for p in text.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


def host_linux_triple():
    """The host's target triple when it is Linux, else x86_64's: the crate is Linux-only."""
    out = subprocess.run(["rustc", "-vV"], check=True, capture_output=True, text=True).stdout
    host = next(line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("host: "))
    return host if "-linux-" in host else "x86_64-unknown-linux-gnu"


def main():
    root_name = sys.argv[1] if len(sys.argv) > 1 else "shardloop"
    triple = host_linux_triple()
    meta = json.loads(
        subprocess.run(
            ["cargo", "metadata", "--format-version", "1", "--all-features",
             "--filter-platform", triple],
            check=True, capture_output=True, text=True,
        ).stdout
    )
    packages = {p["id"]: p for p in meta["packages"]}
    nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
    root = next(p for p in meta["packages"]
                if p["name"] == root_name and p["id"] in meta["workspace_members"])
    if not root.get("rust_version"):
        sys.exit(f"{root_name} declares no rust-version: nothing to check against")
    ours = version_tuple(root["rust_version"])

    # Every package reachable from the root through normal or build dependencies
    # (a dependency edge is kept if any of its kinds is one of those), with the
    # path that reached it first, for the report.
    path_to = {root["id"]: [root_name]}
    todo = [root["id"]]
    while todo:
        pkg = todo.pop()
        for dep in nodes[pkg]["deps"]:
            kinds = {k["kind"] for k in dep["dep_kinds"]}
            if not kinds & {None, "build"} or dep["pkg"] in path_to:
                continue
            path_to[dep["pkg"]] = path_to[pkg] + [packages[dep["pkg"]]["name"]]
            todo.append(dep["pkg"])

    too_new, undeclared = [], []
    for pkg_id, path in sorted(path_to.items(), key=lambda kv: kv[1]):
        if pkg_id == root["id"]:
            continue
        pkg = packages[pkg_id]
        label = f"{pkg['name']} {pkg['version']}"
        if not pkg.get("rust_version"):
            undeclared.append(label)
        elif version_tuple(pkg["rust_version"]) > ours:
            too_new.append(f"{label} needs Rust {pkg['rust_version']} ({' -> '.join(path)})")

    print(f"{root_name} rust-version {root['rust_version']}: {len(path_to) - 1} dependencies "
          f"built on {triple}, {len(too_new)} need a newer Rust, "
          f"{len(undeclared)} declare no rust-version")
    if undeclared:
        print("  no rust-version (not checked): " + ", ".join(undeclared))
    off = lint_switched_off(meta)
    for line in off:
        print("  incompatible_msrv allowed away: " + line, file=sys.stderr)
    for line in too_new:
        print("  " + line, file=sys.stderr)
    if off:
        sys.exit("clippy's incompatible_msrv lint must stay on: it is the check of our own code")
    if too_new:
        sys.exit(f"raise {root_name}'s rust-version, or pin those dependencies to older versions")


if __name__ == "__main__":
    main()
