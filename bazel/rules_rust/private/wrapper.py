#!/usr/bin/env python3
"""Process wrapper for the offline Rust rules: runs rustc, or runs a Cargo build script.

Why a wrapper: Bazel actions have a fixed command line and environment, but Cargo semantics need
a few things only known when the action runs: absolute paths (CARGO_MANIFEST_DIR, OUT_DIR, RUSTC)
inside the sandbox, the `--remap-path-prefix` of the execution root (so outputs and remote-cache
keys never depend on the checkout path), and the flags/env that a build script printed. Keeping
the command line free of absolute paths is what makes remote cache hits work across checkouts.

Modes:
  wrapper.py rustc [options] -- <rustc> <args...>
  wrapper.py build-script [options] -- <script>
"""

import os
import subprocess
import sys

PWD_TOKEN = "${pwd}"


def die(msg):
    sys.stderr.write("rust wrapper: %s\n" % msg)
    sys.exit(1)


def expand(value, pwd):
    return value.replace(PWD_TOKEN, pwd)


def read_lines(path):
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def read_env_file(path, pwd):
    env = {}
    for line in read_lines(path):
        key, sep, value = line.partition("=")
        if sep:
            env[key] = expand(value, pwd)
    return env


def parse(argv):
    opts = {
        "env": [],
        "abs_env": [],
        "env_file": [],
        "flags_file": [],
        "link_search_file": [],
        "dep_env_file": [],
        "cfg_file": None,
        "out_flags": None,
        "out_env": None,
        "out_dep_env": None,
        "links": "",
        "cd": None,
    }
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            return opts, argv[i + 1 :]
        if not a.startswith("--") or i + 1 >= len(argv):
            die("bad argument %r" % a)
        key = a[2:].replace("-", "_")
        if key not in opts:
            die("unknown option %r" % a)
        if isinstance(opts[key], list):
            opts[key].append(argv[i + 1])
        else:
            opts[key] = argv[i + 1]
        i += 2
    die("missing -- before the command")


def base_env(opts, pwd):
    env = dict(os.environ)
    for kv in opts["env"]:
        k, _, v = kv.partition("=")
        env[k] = expand(v, pwd)
    for kv in opts["abs_env"]:
        k, _, v = kv.partition("=")
        env[k] = os.path.normpath(os.path.join(pwd, expand(v, pwd)))
    for f in opts["env_file"]:
        env.update(read_env_file(f, pwd))
    return env


def run_rustc(opts, cmd, pwd):
    env = base_env(opts, pwd)
    args = list(cmd)
    for f in opts["flags_file"]:
        args += [expand(x, pwd) for x in read_lines(f)]
    for f in opts["link_search_file"]:
        args += [expand(x, pwd) for x in read_lines(f) if x.startswith("-L")]
    # rustc lets the last matching prefix win: the execroot itself becomes ".", paths under
    # it become relative.
    args.append("--remap-path-prefix=%s=." % pwd)
    args.append("--remap-path-prefix=%s/=" % pwd)
    proc = subprocess.run(args, env=env)
    return proc.returncode


def cargo_cfg_env(cfg_file, opt_level):
    values = {}
    for line in read_lines(cfg_file):
        key, sep, value = line.partition("=")
        if key == "debug_assertions" and opt_level != "0":
            continue
        vals = values.setdefault(key, [])
        if sep:
            vals.append(value.strip('"'))
    env = {}
    for key, vals in values.items():
        env["CARGO_CFG_" + key.upper()] = ",".join(vals)
    return env


def run_build_script(opts, cmd, pwd):
    env = base_env(opts, pwd)
    for f in opts["dep_env_file"]:
        env.update(read_env_file(f, pwd))
    if opts["cfg_file"]:
        env.update(cargo_cfg_env(opts["cfg_file"], env.get("OPT_LEVEL", "0")))
    out_dir = env.get("OUT_DIR")
    if not out_dir:
        die("build script run without OUT_DIR")
    os.makedirs(out_dir, exist_ok=True)
    script = os.path.join(pwd, cmd[0])
    cwd = os.path.join(pwd, opts["cd"]) if opts["cd"] else pwd
    proc = subprocess.run([script] + cmd[1:], env=env, cwd=cwd, stdout=subprocess.PIPE)
    stdout = proc.stdout.decode("utf-8", "replace")
    if proc.returncode != 0:
        sys.stderr.write(stdout)
        die("build script %s failed with exit code %d" % (cmd[0], proc.returncode))

    def unpwd(s):
        return s.replace(pwd, PWD_TOKEN)

    flags, rustc_env, dep_env = [], [], []
    links = opts["links"].upper().replace("-", "_")
    for line in stdout.splitlines():
        if line.startswith("cargo::"):
            body = line[len("cargo::") :]
        elif line.startswith("cargo:"):
            body = line[len("cargo:") :]
        else:
            continue
        key, sep, value = body.partition("=")
        if not sep:
            continue
        if key == "rustc-cfg":
            flags.append("--cfg=" + value)
        elif key == "rustc-env":
            rustc_env.append(unpwd(value))
        elif key == "rustc-link-lib":
            flags.append("-l" + value)
        elif key == "rustc-link-search":
            flags.append("-L" + unpwd(value))
        elif key == "rustc-flags":
            parts = value.split()
            j = 0
            while j < len(parts):
                p = parts[j]
                if p in ("-l", "-L") and j + 1 < len(parts):
                    flags.append(p + unpwd(parts[j + 1]))
                    j += 2
                else:
                    flags.append(unpwd(p))
                    j += 1
        elif key == "metadata" and links:
            k, _, v = value.partition("=")
            dep_env.append("DEP_%s_%s=%s" % (links, k.upper().replace("-", "_"), unpwd(v)))
        elif key in (
            "rerun-if-changed",
            "rerun-if-env-changed",
            "rustc-check-cfg",
            "warning",
            "error",
            "rustc-link-arg",
            "rustc-link-arg-bins",
            "rustc-link-arg-tests",
            "rustc-cdylib-link-arg",
        ):
            if key == "warning":
                sys.stderr.write("warning (build script %s): %s\n" % (cmd[0], value))
        elif links:
            dep_env.append("DEP_%s_%s=%s" % (links, key.upper().replace("-", "_"), unpwd(value)))

    for path, lines in (
        (opts["out_flags"], flags),
        (opts["out_env"], rustc_env),
        (opts["out_dep_env"], dep_env),
    ):
        if path:
            with open(path, "w", encoding="utf-8") as f:
                f.write("".join(line + "\n" for line in lines))
    return 0


def main():
    if len(sys.argv) < 2 or sys.argv[1] not in ("rustc", "build-script"):
        die("usage: wrapper.py rustc|build-script [options] -- command...")
    opts, cmd = parse(sys.argv[2:])
    if not cmd:
        die("empty command")
    pwd = os.getcwd()
    if sys.argv[1] == "rustc":
        return run_rustc(opts, cmd, pwd)
    return run_build_script(opts, cmd, pwd)


if __name__ == "__main__":
    sys.exit(main())
