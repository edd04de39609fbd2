#!/usr/bin/env python3
"""Golden tests from the differential corpus, without a Docker engine.

Every case in tests/diffbuild/ that has an `expected.json` (BuildKit's result,
recorded by `scripts/diffbuild.sh --record`) and builds on
127.0.0.1:5000/busybox:latest is built with kiln alone and compared with it:

    scripts/diffbuild-golden.py [CASE…]        # all cases, or these (names or dirs)
    KILN=target/release/kiln scripts/diffbuild-golden.py

The summaries are those of ../shared/peers/diffbuild.py (config fields, layer
count, flattened root filesystem), imported as a module. `expected.json` holds
them as a delta against the base image, so that it does not depend on the
exact busybox binary: the config, the layer count, the rootfs entries that are
not identical to the base image's entries, and the base paths that are gone.
The case's `diffbuild.args` apply as in `scripts/diffbuild.sh` (`--build-arg`,
`--target`, `--secret`, `--network`, `--ignore`, `--mtime`), and so does an
executable `diffbuild.setup`.

The base image is made offline like the peers' `mkbase.sh` (`build_busybox`):
/bin/busybox, a symlink per applet, /etc/passwd and /etc/group, the same tar
flags and config; it is loaded into a temporary store (KILN_ROOT) and tagged
127.0.0.1:5000/busybox:latest, so no registry is needed. Cases on another
base, that need the network, or the real-* Dockerfiles are skipped.

Prints one line per case and a last line `diffbuild-golden: N passed, M
failed, K skipped`; exits 1 when a case fails. Needs root (kiln builds with
overlayfs) and ../shared/peers; without them every case is skipped (exit 0).

Recording (what `scripts/diffbuild.sh --record` calls for a case that is the
same in kiln and BuildKit):

    scripts/diffbuild-golden.py --record OUT/<case>/buildkit.summary.json tests/diffbuild/<case>
"""
from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = os.path.join(HERE, "tests", "diffbuild")
PEERS = os.environ.get("DIFFBUILD_PEERS", os.path.join(os.path.dirname(HERE), "shared", "peers"))
PEER_IMAGES = os.environ.get("PEER_IMAGES", "/var/lib/peer-images")
BUSYBOX = "127.0.0.1:5000/busybox:latest"
# Images the peers' registry serves, by the base name recorded in expected.json.
BASES = {"busybox": BUSYBOX, "debian": "127.0.0.1:5000/debian:bookworm-slim"}
EPOCH = 1747699200  # mkbase.sh's SOURCE_DATE_EPOCH, 2025-05-20T00:00:00Z
JOBS = 2
CASE_TIMEOUT = 180

db = None  # diffbuild.py, imported by load_diffbuild()


def load_diffbuild():
    global db
    path = os.path.join(PEERS, "diffbuild.py")
    if not os.path.isfile(path):
        return f"no {path}"
    sys.dont_write_bytecode = True  # ../shared is read-only (or not ours)
    sys.path.insert(0, PEERS)
    import diffbuild  # noqa: E402  stdlib only
    db = diffbuild
    return None


# ------------------------------------------------------------------------------------ case arguments

def read_args(case_dir: str) -> list[str]:
    """diffbuild.args as scripts/diffbuild.sh reads it: lines, # comments, words split on blanks."""
    p = os.path.join(case_dir, "diffbuild.args")
    words: list[str] = []
    if os.path.exists(p):
        with open(p) as f:
            for line in f:
                line = line.strip()
                if line and not line.startswith("#"):
                    words += line.split()
    return words


def parse_args(words: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    ap.add_argument("--build-arg", action="append", default=[])
    ap.add_argument("--target")
    ap.add_argument("--secret", action="append", default=[])
    ap.add_argument("--network", default="none")
    # Several --ignore lines add up.
    ap.add_argument("--ignore", action="append", default=[])
    ap.add_argument("--mtime", action="store_true")
    a, rest = ap.parse_known_args(words)
    if rest:
        raise ValueError(f"unsupported diffbuild.args: {' '.join(rest)}")
    a.ignore_set = {s.strip() for v in a.ignore for s in v.split(",") if s.strip()}
    return a


def images_used(case_dir: str) -> set[str]:
    """Registry images a case names (Dockerfile, build args), but not a `# syntax=` frontend (kiln has
    its own and does not fetch it)."""
    text = ""
    for n in ("Dockerfile", "diffbuild.args"):
        p = os.path.join(case_dir, n)
        if os.path.exists(p):
            with open(p, errors="replace") as f:
                text += "".join(l for l in f if not re.match(r"\s*#\s*syntax\s*=", l, re.I)) + "\n"
    refs = re.findall(r"127\.0\.0\.1:5000/[A-Za-z0-9._/-]+(?::[A-Za-z0-9._-]+)?", text)
    return {r if ":" in r.split("/", 1)[1] else r + ":latest" for r in refs}


# ---------------------------------------------------------------------------------------- deltas

ATTRS = ("type", "mode", "uid", "gid", "size", "sha256", "target", "dev", "hardlinks", "xattrs", "mtime",
         "dangling_hardlink")


def _strip(e: dict, ignore: set) -> dict:
    return {k: v for k, v in e.items() if k not in ignore or k == "path"}


def _kept(path: str, ignore: set) -> bool:
    return not db._ignored_path(path, ignore)


def make_delta(summary: dict, base: dict, base_name: str, ignore: set) -> dict:
    """A summary as a delta against a base image's summary, with the ignore list applied.

    A file whose content is that of a file of the base (a copy of /bin/busybox, a hard link to it)
    names that file (`content_of`) instead of its size and sha256."""
    be = {e["path"]: _strip(e, ignore) for e in base["rootfs"] if _kept(e["path"], ignore)}
    ie = {e["path"]: _strip(e, ignore) for e in summary["rootfs"] if _kept(e["path"], ignore)}
    by_content: dict = {}
    for p in sorted(be, reverse=True):
        if be[p]["type"] == "file" and be[p].get("size") and be[p].get("sha256"):
            by_content[(be[p]["size"], be[p]["sha256"])] = p
    rootfs = []
    for p in sorted(ie):
        e = ie[p]
        if be.get(p) == e:
            continue
        src = by_content.get((e.get("size"), e.get("sha256"))) if e["type"] == "file" else None
        if src is not None:
            e = {k: v for k, v in e.items() if k not in ("size", "sha256")}
            e["content_of"] = src
        rootfs.append(e)
    d: dict = {
        "base": base_name,
        "config": {k: v for k, v in summary["config"].items() if k not in ignore},
        "rootfs": rootfs,
        "gone": sorted(set(be) - set(ie)),
    }
    if "layers" not in ignore:
        d["layers"] = summary["layers"]
    return d


def apply_delta(delta: dict, base: dict) -> dict:
    """The full summary a delta describes on top of a base image's summary."""
    gone = set(delta["gone"])
    be = {e["path"]: e for e in base["rootfs"]}
    fs = {p: e for p, e in be.items() if p not in gone}
    for e in delta["rootfs"]:
        if "content_of" in e:
            src = be.get(e["content_of"], {})
            e = {k: v for k, v in e.items() if k != "content_of"}
            e.update(size=src.get("size"), sha256=src.get("sha256"))
        fs[e["path"]] = e
    return {"config": delta["config"], "layers": delta.get("layers"), "rootfs": [fs[p] for p in sorted(fs)]}


def empty_summary() -> dict:
    return {"config": {}, "layers": 0, "rootfs": []}


def dump(obj) -> str:
    # Names that are not UTF-8 come from tarfile as surrogate escapes;
    # ensure_ascii writes them as \udcXX escapes, which load back the same.
    return json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=True) + "\n"


def record(summary_path: str, case_dir: str) -> int:
    """Writes case_dir/expected.json from BuildKit's summary of the case."""
    err = load_diffbuild()
    if err:
        print(f"record: {err}", file=sys.stderr)
        return 3
    a = parse_args(read_args(case_dir))
    with open(summary_path) as f:
        summary = json.load(f)
    work = tempfile.mkdtemp(prefix="golden-record-")
    try:
        # The delta against the base that changes least: the image's base, or scratch for an image
        # that keeps none of it (FROM scratch), so that no busybox applet list is recorded.
        bases = {"scratch": empty_summary()}
        used = images_used(case_dir)
        for name, ref in BASES.items():
            if name == "busybox" or ref in used:
                img = db.open_image(os.path.join(PEER_IMAGES, f"{name}.docker.tar"), work)
                bases[name] = db.summarize(img, a.mtime)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    deltas = [make_delta(summary, s, n, a.ignore_set) for n, s in bases.items()]
    best = min(deltas, key=lambda d: len(d["rootfs"]) + len(d["gone"]))
    text = dump(best)
    path = os.path.join(case_dir, "expected.json")
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)
    return 0


# ---------------------------------------------------------------------------------- the base image

def build_base(work: str) -> str:
    """mkbase.sh's build_busybox, written as a docker-archive tarball; returns its path."""
    r = os.path.join(work, "busybox-rootfs")
    for d in ("bin", "dev", "etc", "home", "root", "tmp", "usr/bin", "usr/sbin", "sbin", "var/spool/mail",
              "var/www"):
        os.makedirs(os.path.join(r, d), exist_ok=True)
    for dp, dirs, _ in os.walk(r):
        for d in dirs:
            os.chmod(os.path.join(dp, d), 0o755)
    os.chmod(os.path.join(r, "root"), 0o700)
    os.chmod(os.path.join(r, "tmp"), 0o1777)
    shutil.copyfile("/bin/busybox", os.path.join(r, "bin", "busybox"))
    os.chmod(os.path.join(r, "bin", "busybox"), 0o755)
    applets = subprocess.run(["/bin/busybox", "--list"], check=True, capture_output=True, text=True).stdout
    for a in applets.split():
        if a != "busybox":
            p = os.path.join(r, "bin", a)
            if os.path.lexists(p):
                os.unlink(p)
            os.symlink("busybox", p)
    for name, text in (("passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n"),
                       ("group", "root:x:0:\nnobody:x:65534:\n")):
        p = os.path.join(r, "etc", name)
        with open(p, "w") as f:
            f.write(text)
        os.chmod(p, 0o644)
    layer = os.path.join(work, "busybox-layer.tar")
    top = sorted(os.listdir(r), key=lambda s: s.encode())
    subprocess.run(["tar", "--sort=name", "--numeric-owner", "--format=gnu", f"--mtime=@{EPOCH}", "--clamp-mtime",
                    "-cf", layer] + top, cwd=r, check=True, env=dict(os.environ, LC_ALL="C"))
    shutil.rmtree(r)

    with open(layer, "rb") as f:
        diff_id = hashlib.sha256(f.read()).hexdigest()
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(EPOCH))
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    config = {"created": created, "architecture": arch, "os": "linux",
              "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                         "Cmd": ["sh"]},
              "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
              "history": [{"created": created, "created_by": "peer mkbase.sh: busybox rootfs"},
                          {"created": created, "created_by": "peer mkbase.sh: config", "empty_layer": True}]}
    cbytes = json.dumps(config, separators=(",", ":")).encode() + b"\n"  # as umoci (Go's json.Encoder)
    cid = hashlib.sha256(cbytes).hexdigest()
    arch_dir = os.path.join(work, "busybox-archive")
    os.makedirs(arch_dir)
    os.rename(layer, os.path.join(arch_dir, f"{diff_id}.tar"))
    with open(os.path.join(arch_dir, f"{cid}.json"), "wb") as f:
        f.write(cbytes)
    with open(os.path.join(arch_dir, "manifest.json"), "w") as f:
        json.dump([{"Config": f"{cid}.json", "RepoTags": [BUSYBOX], "Layers": [f"{diff_id}.tar"]}], f)
    out = os.path.join(work, "busybox.docker.tar")
    subprocess.run(["tar", "-cf", out, "-C", arch_dir, "manifest.json", f"{cid}.json", f"{diff_id}.tar"],
                   check=True)
    shutil.rmtree(arch_dir)
    return out


# ------------------------------------------------------------------------------------------ checking

def skip_reason(name: str, case_dir: str) -> str | None:
    if name.startswith("real-"):
        return "real Dockerfile"
    try:
        a = parse_args(read_args(case_dir))
    except (ValueError, argparse.ArgumentError) as ex:
        return str(ex)
    if a.network != "none":
        return f"--network {a.network}"
    other = sorted(images_used(case_dir) - {BUSYBOX, BUSYBOX + "-oci"})
    if other:
        return "base " + ", ".join(i.split("/", 1)[1] for i in other)
    p = os.path.join(case_dir, "expected.json")
    if not os.path.exists(p):
        return "no expected.json"
    with open(p) as f:
        base = json.load(f).get("base")
    if base not in ("busybox", "scratch"):
        return f"base {base}"
    return None


class Ctx:
    kiln: str
    root: str
    work: str
    base: dict
    base_mtime: dict


def check(ctx: Ctx, name: str, case_dir: str) -> tuple[str, list[str]]:
    """Builds one case with kiln and compares it with expected.json: ("passed"|"failed", detail lines)."""
    a = parse_args(read_args(case_dir))
    with open(os.path.join(case_dir, "expected.json")) as f:
        expected = json.load(f)
    work = tempfile.mkdtemp(prefix=f"{name}-", dir=ctx.work)
    try:
        # The context is a copy without expected.json, as scripts/diffbuild.sh builds it.
        src = os.path.join(work, "context")
        subprocess.run(["cp", "-a", case_dir, src], check=True)
        os.unlink(os.path.join(src, "expected.json"))
        if os.access(os.path.join(src, "diffbuild.setup"), os.X_OK):
            p = subprocess.run(["./diffbuild.setup"], cwd=src, capture_output=True, text=True)
            if p.returncode != 0:
                return "failed", ["  setup failed:"] + ["    " + l for l in (p.stdout + p.stderr).splitlines()[-20:]]
        out = os.path.join(work, "image.oci.tar")
        cmd = [ctx.kiln, "build", "-q", "--network", a.network, "-o", f"type=oci,dest={out}",
               "-f", os.path.join(src, "Dockerfile")]
        for b in a.build_arg:
            cmd += ["--build-arg", b]
        if a.target:
            cmd += ["--target", a.target]
        for s in a.secret:
            cmd += ["--secret", s]
        cmd.append(src)
        try:
            p = subprocess.run(cmd, cwd=HERE, capture_output=True, text=True, timeout=CASE_TIMEOUT,
                               env=dict(os.environ, KILN_ROOT=ctx.root))
        except subprocess.TimeoutExpired:
            return "failed", [f"  kiln build timed out after {CASE_TIMEOUT}s: {shlex.join(cmd)}"]
        if p.returncode != 0:
            return "failed", [f"  kiln build failed (exit {p.returncode}): {shlex.join(cmd)}"] + \
                ["    " + l for l in p.stderr.splitlines()[-20:]]
        got = db.summarize(db.open_image(out, work), a.mtime)
        base_name = expected.get("base", "busybox")
        base = empty_summary() if base_name == "scratch" else (ctx.base_mtime if a.mtime else ctx.base)
        lines = db.diff(apply_delta(expected, base), got, a.ignore_set, 60)
        return ("failed", lines) if lines else ("passed", [])
    finally:
        shutil.rmtree(work, ignore_errors=True)


def select_cases(args: list[str]) -> list[tuple[str, str]]:
    if not args:
        return [(n, os.path.join(CASES, n)) for n in sorted(os.listdir(CASES))
                if os.path.isfile(os.path.join(CASES, n, "Dockerfile"))]
    out = []
    for c in args:
        d = c if os.path.isdir(c) else os.path.join(CASES, c)
        out.append((os.path.basename(os.path.normpath(d)), os.path.abspath(d)))
    return out


def mounted_under(path: str) -> bool:
    with open("/proc/self/mounts") as f:
        return any(l.split()[1].startswith(path.rstrip("/") + "/") for l in f)


def golden(case_args: list[str]) -> int:
    cases = select_cases(case_args)
    why_not = None
    if os.geteuid() != 0:
        why_not = "needs root (kiln builds with overlayfs)"
    elif load_diffbuild():
        why_not = load_diffbuild()
    elif not os.access("/bin/busybox", os.X_OK):
        why_not = "no /bin/busybox (busybox-static)"
    kiln = os.path.abspath(os.environ.get("KILN", os.path.join(HERE, "target", "debug", "kiln")))
    if why_not is None and not os.access(kiln, os.X_OK):
        why_not = f"no kiln binary at {kiln} (set KILN)"
    if why_not is not None:
        for name, _ in cases:
            print(f"skipped: {name} ({why_not})")
        print(f"diffbuild-golden: 0 passed, 0 failed, {len(cases)} skipped")
        return 0

    ctx = Ctx()
    ctx.kiln = kiln
    ctx.work = tempfile.mkdtemp(prefix="kiln-golden-", dir=os.environ.get("TMPDIR", "/var/tmp"))
    ctx.root = os.path.join(ctx.work, "store")
    try:
        archive = build_base(ctx.work)
        env = dict(os.environ, KILN_ROOT=ctx.root)
        subprocess.run([kiln, "load", "-q", "-i", archive], check=True, env=env, stdout=subprocess.DEVNULL)
        subprocess.run([kiln, "tag", BUSYBOX, BUSYBOX + "-oci"], check=True, env=env)
        img = db.open_image(archive, ctx.work)
        ctx.base = db.summarize(img)
        ctx.base_mtime = db.summarize(img, True)

        todo = []
        skipped = 0
        for name, d in cases:
            reason = skip_reason(name, d)
            if reason:
                skipped += 1
            todo.append((name, d, reason))

        def run(item):
            name, d, reason = item
            if reason:
                return name, "skipped", reason, []
            try:
                status, lines = check(ctx, name, d)
            except Exception as ex:  # a broken archive or summary: report, go on
                status, lines = "failed", [f"  {type(ex).__name__}: {ex}"]
            return name, status, None, lines

        passed = failed = 0
        with concurrent.futures.ThreadPoolExecutor(max_workers=JOBS) as ex:
            for name, status, reason, lines in ex.map(run, todo):
                if status == "skipped":
                    print(f"skipped: {name} ({reason})", flush=True)
                    continue
                print(f"{status}: {name}", flush=True)
                for l in lines:
                    print(l, flush=True)
                if status == "passed":
                    passed += 1
                else:
                    failed += 1
    finally:
        if mounted_under(ctx.work):
            print(f"diffbuild-golden: left {ctx.work} in place (still mounted)", file=sys.stderr)
        else:
            shutil.rmtree(ctx.work, ignore_errors=True)
    print(f"diffbuild-golden: {passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed else 0


def main() -> int:
    if len(sys.argv) >= 2 and sys.argv[1] == "--record":
        if len(sys.argv) != 4:
            print("usage: diffbuild-golden.py --record SUMMARY.json CASE_DIR", file=sys.stderr)
            return 3
        return record(sys.argv[2], sys.argv[3])
    if any(a in ("-h", "--help") for a in sys.argv[1:]):
        print(__doc__)
        return 0
    return golden(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
