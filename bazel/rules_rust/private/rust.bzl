"""Offline Rust rules: one rustc action per crate, Cargo-style build scripts.

Why: rules_rust cannot be downloaded on the offline build machines, so this small implementation
provides the subset of its API the repository uses (rust_library, rust_proc_macro, rust_binary,
rust_test, cargo_build_script), calling the host rustc found by the `rust_host` repository rule.
The BUILD files stay rules_rust-compatible, so MODULE.bazel users get the real rules_rust.
"""

CrateInfo = provider(
    doc = "A compiled crate and what its dependents need to link against it.",
    fields = {
        "name": "crate name used in `--extern`",
        "type": "rlib, proc-macro or bin",
        "output": "the rlib or proc-macro .so",
        "transitive_libs": "depset of this crate's and its dependencies' compiled crates",
        "link_search": "depset of build-script flag files whose -L entries the final link needs",
        "compile": "struct of the compile inputs, so rust_test(crate = ...) can rebuild with --test",
    },
)

BuildScriptInfo = provider(
    doc = "What a build script run produced for its crate's compile.",
    fields = {
        "out_dir": "tree artifact given to rustc as OUT_DIR",
        "flags": "file of rustc flags (--cfg, -l, -L), one per line",
        "env": "file of KEY=VALUE lines for rustc-env",
        "dep_env": "file of DEP_<links>_* variables for dependents' build scripts",
    },
)

_COMMON_ATTRS = {
    "srcs": attr.label_list(allow_files = True, doc = "Source files (and files they include)."),
    "crate_root": attr.label(allow_single_file = True, doc = "The crate's root module."),
    "crate_name": attr.string(doc = "Crate name; defaults to the target name with - turned to _."),
    "edition": attr.string(default = "2015"),
    "deps": attr.label_list(doc = "Rust libraries and build scripts this crate uses."),
    "proc_macro_deps": attr.label_list(doc = "Procedural macro crates this crate uses."),
    "aliases": attr.label_keyed_string_dict(doc = "Dependencies known under another crate name."),
    "crate_features": attr.string_list(doc = "Cargo features enabled (as --cfg feature=...)."),
    "rustc_flags": attr.string_list(),
    "rustc_env": attr.string_dict(doc = "Extra environment for rustc; $(location) expanded."),
    "compile_data": attr.label_list(allow_files = True, doc = "Files read at compile time."),
    "data": attr.label_list(allow_files = True, doc = "Files needed at run time."),
    "version": attr.string(default = "0.0.0", doc = "Sets CARGO_PKG_VERSION*."),
    "pkg_name": attr.string(doc = "Cargo package name (CARGO_PKG_NAME); defaults to the crate name."),
    "manifest_dir": attr.string(doc = "Package-relative dir of Cargo.toml (CARGO_MANIFEST_DIR)."),
    "_wrapper": attr.label(
        default = Label("//private:wrapper.py"),
        executable = True,
        allow_single_file = True,
        cfg = "host",
    ),
    "_rustc": attr.label(default = Label("@rust_host//:bin/rustc"), allow_single_file = True),
    "_rustc_version": attr.label(default = Label("@rust_host//:rustc_version.txt"), allow_single_file = True),
    "_rustc_cfg": attr.label(default = Label("@rust_host//:rustc_cfg.txt"), allow_single_file = True),
}

def _mode_flags(ctx):
    mode = ctx.var.get("COMPILATION_MODE", "fastbuild")
    if mode == "opt":
        return struct(opt_level = "3", debuginfo = "1", profile = "release", debug = "true")
    if mode == "dbg":
        return struct(opt_level = "0", debuginfo = "2", profile = "debug", debug = "true")
    return struct(opt_level = "0", debuginfo = "0", profile = "debug", debug = "false")

def _short_hash(s):
    h = hash(s)
    if h < 0:
        h = -h
    return "%d" % h

def _pkg_dir(ctx):
    parts = [p for p in [ctx.label.workspace_root, ctx.label.package] if p]
    return "/".join(parts) if parts else "."

def manifest_dir(ctx):
    base = _pkg_dir(ctx)
    if ctx.attr.manifest_dir:
        return ctx.attr.manifest_dir if base == "." else base + "/" + ctx.attr.manifest_dir
    return base

def pkg_env(ctx, crate_name, mdir):
    """The CARGO_* variables Cargo sets for a package's rustc and build script."""
    version = ctx.attr.version or "0.0.0"
    core, _, pre = version.partition("-")
    nums = (core.split(".") + ["0", "0", "0"])[:3]
    return {
        "CARGO_PKG_NAME": ctx.attr.pkg_name or crate_name.replace("_", "-"),
        "CARGO_CRATE_NAME": crate_name,
        "CARGO_PKG_VERSION": version,
        "CARGO_PKG_VERSION_MAJOR": nums[0],
        "CARGO_PKG_VERSION_MINOR": nums[1],
        "CARGO_PKG_VERSION_PATCH": nums[2].partition("+")[0],
        "CARGO_PKG_VERSION_PRE": pre.partition("+")[0],
        "CARGO_PKG_AUTHORS": "",
        "CARGO_PKG_DESCRIPTION": "",
        "CARGO_PKG_HOMEPAGE": "",
        "CARGO_PKG_REPOSITORY": "",
        "CARGO_PKG_LICENSE": "",
        "CARGO_PKG_RUST_VERSION": "",
        "CARGO_MANIFEST_PATH": "${pwd}/" + mdir + "/Cargo.toml",
    }

def crate_name_of(ctx):
    return ctx.attr.crate_name or ctx.label.name.replace("-", "_")

def _expand(ctx, value, targets):
    return ctx.expand_location(value, targets)

def collect_compile(ctx):
    """Gathers everything a crate's compile needs from its attributes."""
    srcs = depset(ctx.files.srcs + ctx.files.compile_data)
    root = ctx.file.crate_root
    if root == None:
        if len(ctx.files.srcs) == 1:
            root = ctx.files.srcs[0]
        else:
            for f in ctx.files.srcs:
                if f.basename in ["lib.rs", "main.rs", ctx.label.name + ".rs"]:
                    root = f
                    break
    if root == None:
        fail("%s: set crate_root" % ctx.label)
    aliases = {}
    for t, n in ctx.attr.aliases.items():
        aliases[str(t.label)] = n
    env = {}
    for k, v in ctx.attr.rustc_env.items():
        env[k] = _expand(ctx, v, ctx.attr.data + ctx.attr.compile_data)
    return struct(
        srcs = srcs,
        root = root,
        crates = [d for d in ctx.attr.deps + ctx.attr.proc_macro_deps if CrateInfo in d],
        crate_labels = [str(d.label) for d in ctx.attr.deps + ctx.attr.proc_macro_deps if CrateInfo in d],
        build_infos = [d[BuildScriptInfo] for d in ctx.attr.deps if BuildScriptInfo in d],
        aliases = aliases,
        features = ctx.attr.crate_features,
        edition = ctx.attr.edition,
        rustc_flags = ctx.attr.rustc_flags,
        rustc_env = env,
        crate_name = crate_name_of(ctx),
        manifest_dir = manifest_dir(ctx),
        pkg_env = pkg_env(ctx, crate_name_of(ctx), manifest_dir(ctx)),
    )

def rustc_compile(ctx, c, crate_type, output, extra_crates = [], extra_build_infos = [], test = False):
    """Registers the one rustc action that compiles crate `c` (a collect_compile struct)."""
    mode = _mode_flags(ctx)
    crates = c.crates + extra_crates
    build_infos = c.build_infos + extra_build_infos
    h = _short_hash(str(ctx.label) + crate_type + ("test" if test else ""))

    args = ctx.actions.args()
    args.add("rustc")
    env_args = []
    for k, v in c.pkg_env.items():
        env_args.append("%s=%s" % (k, v))
    for k, v in c.rustc_env.items():
        env_args.append("%s=%s" % (k, v))
    args.add_all(env_args, before_each = "--env")
    args.add("--abs-env", "CARGO_MANIFEST_DIR=" + c.manifest_dir)
    inputs = [ctx.file._rustc_version]
    for bi in build_infos:
        args.add("--abs-env", "OUT_DIR=" + bi.out_dir.path)
        args.add("--env-file", bi.env)
        args.add("--flags-file", bi.flags)
        inputs += [bi.out_dir, bi.env, bi.flags]

    transitive = []
    link_search = []
    extern = []
    for d in crates:
        info = d[CrateInfo]
        transitive.append(info.transitive_libs)
        link_search.append(info.link_search)
        name = c.aliases.get(str(d.label), info.name)
        extern.append("--extern=%s=%s" % (name, info.output.path))
    transitive_libs = depset(transitive = transitive)
    own_flags = [bi.flags for bi in build_infos]
    link_search_set = depset(own_flags, transitive = link_search)
    if crate_type in ["bin"] or test:
        for f in link_search_set.to_list():
            if f not in own_flags:
                args.add("--link-search-file", f)

    args.add("--")
    args.add(ctx.file._rustc)
    args.add(c.root)
    args.add("--crate-name=" + c.crate_name)
    args.add("--crate-type=" + crate_type)
    if test:
        args.add("--test")
    args.add("--edition=" + c.edition)
    args.add("--error-format=human")
    args.add("-Copt-level=" + mode.opt_level)
    args.add("-Cdebuginfo=" + mode.debuginfo)
    args.add("-Cembed-bitcode=no")
    args.add("-Cmetadata=" + h)
    args.add_all(["feature=\"%s\"" % f for f in c.features], before_each = "--cfg")
    if crate_type == "proc-macro":
        args.add("--extern=proc_macro")
    args.add_all(extern)
    dirs = {}
    for f in transitive_libs.to_list():
        dirs[f.dirname] = True
    args.add_all(["dependency=" + d for d in dirs.keys()], before_each = "-L")
    args.add_all(c.rustc_flags)
    args.add("-o", output)

    ctx.actions.run(
        executable = ctx.executable._wrapper,
        arguments = [args],
        inputs = depset(inputs + [ctx.file._rustc], transitive = [c.srcs, transitive_libs, link_search_set]),
        outputs = [output],
        mnemonic = "Rustc",
        use_default_shell_env = True,
        progress_message = "Compiling Rust %s %s" % (crate_type, ctx.label),
    )
    return struct(
        transitive_libs = transitive_libs,
        link_search = link_search_set,
    )

def _lib_impl(ctx, crate_type):
    c = collect_compile(ctx)
    h = _short_hash(str(ctx.label) + crate_type)
    ext = ".so" if crate_type == "proc-macro" else ".rlib"
    out = ctx.actions.declare_file("lib%s-%s%s" % (c.crate_name, h, ext))
    r = rustc_compile(ctx, c, crate_type, out)
    return [
        DefaultInfo(files = depset([out]), runfiles = ctx.runfiles(files = ctx.files.data)),
        CrateInfo(
            name = c.crate_name,
            type = crate_type,
            output = out,
            transitive_libs = depset([out], transitive = [r.transitive_libs]),
            link_search = r.link_search,
            compile = c,
        ),
    ]

def _rust_library_impl(ctx):
    return _lib_impl(ctx, "rlib")

def _rust_proc_macro_impl(ctx):
    return _lib_impl(ctx, "proc-macro")

def _data_runfiles(ctx):
    rf = ctx.runfiles(files = ctx.files.data)
    for d in ctx.attr.data + ctx.attr.deps:
        rf = rf.merge(d[DefaultInfo].default_runfiles)
    return rf

def _rust_binary_impl(ctx):
    c = collect_compile(ctx)
    out = ctx.actions.declare_file(ctx.label.name)
    rustc_compile(ctx, c, "bin", out)
    return [DefaultInfo(executable = out, files = depset([out]), runfiles = _data_runfiles(ctx))]

def _rust_test_impl(ctx):
    env = {}
    for k, v in ctx.attr.env.items():
        env[k] = ctx.expand_location(v, ctx.attr.data)
    out = ctx.actions.declare_file(ctx.label.name)
    if ctx.attr.crate:
        base = ctx.attr.crate[CrateInfo].compile
        own = collect_compile(ctx) if (ctx.files.srcs or ctx.file.crate_root) else None
        extra = [d for d in ctx.attr.deps + ctx.attr.proc_macro_deps if CrateInfo in d]
        c = struct(
            srcs = depset(transitive = [base.srcs] + ([own.srcs] if own else [])),
            root = base.root,
            crates = base.crates + extra,
            crate_labels = base.crate_labels,
            build_infos = base.build_infos,
            aliases = dict(base.aliases.items() + {str(t.label): n for t, n in ctx.attr.aliases.items()}.items()),
            features = base.features,
            edition = base.edition,
            rustc_flags = base.rustc_flags + ctx.attr.rustc_flags,
            rustc_env = dict(base.rustc_env.items() + ctx.attr.rustc_env.items()),
            crate_name = base.crate_name,
            manifest_dir = base.manifest_dir,
            pkg_env = base.pkg_env,
        )
    else:
        c = collect_compile(ctx)
    rustc_compile(ctx, c, "bin", out, test = True)
    return [
        DefaultInfo(executable = out, files = depset([out]), runfiles = _data_runfiles(ctx)),
        testing.TestEnvironment(env),
    ]

rust_library = rule(
    implementation = _rust_library_impl,
    attrs = _COMMON_ATTRS,
    doc = "A Rust library (rlib), compiled by one rustc action.",
)

rust_proc_macro = rule(
    implementation = _rust_proc_macro_impl,
    attrs = _COMMON_ATTRS,
    doc = "A procedural macro crate, compiled for the host (which is the target here).",
)

rust_binary = rule(
    implementation = _rust_binary_impl,
    attrs = _COMMON_ATTRS,
    executable = True,
    doc = "A Rust executable.",
)

rust_test = rule(
    implementation = _rust_test_impl,
    attrs = dict(_COMMON_ATTRS.items() + {
        "crate": attr.label(providers = [CrateInfo], doc = "Library whose unit tests to build."),
        "env": attr.string_dict(doc = "Environment for the test run; $(location) expanded."),
    }.items()),
    test = True,
    doc = "A libtest binary: unit tests of `crate`, or an integration test from `srcs`.",
)

# ---------------------------------------------------------------------------------------------
# Build scripts

def _build_script_run_impl(ctx):
    mode = _mode_flags(ctx)
    script = ctx.executable.script
    mdir = manifest_dir(ctx)
    crate_name = ctx.attr.crate_name_for_env or ctx.label.name
    out_dir = ctx.actions.declare_directory(ctx.label.name + ".out_dir")
    flags = ctx.actions.declare_file(ctx.label.name + ".flags")
    env_out = ctx.actions.declare_file(ctx.label.name + ".env")
    dep_env = ctx.actions.declare_file(ctx.label.name + ".depenv")

    args = ctx.actions.args()
    args.add("build-script")
    env = pkg_env(ctx, crate_name, mdir)
    env.update({
        "TARGET": "x86_64-unknown-linux-gnu",
        "HOST": "x86_64-unknown-linux-gnu",
        "PROFILE": mode.profile,
        "OPT_LEVEL": mode.opt_level,
        "DEBUG": mode.debug,
        "NUM_JOBS": "1",
        "CARGO_ENCODED_RUSTFLAGS": "",
        "RUSTC_LINKER": "cc",
    })
    for f in ctx.attr.crate_features:
        env["CARGO_FEATURE_" + f.upper().replace("-", "_")] = "1"
    targets = ctx.attr.data + ctx.attr.tools
    for k, v in ctx.attr.build_script_env.items():
        env[k] = ctx.expand_location(v, targets)
    if ctx.attr.links:
        # Cargo sets it for a package with `links`; ring's build script checks it.
        env["CARGO_MANIFEST_LINKS"] = ctx.attr.links
    args.add_all(["%s=%s" % (k, v) for k, v in env.items()], before_each = "--env")
    args.add("--abs-env", "CARGO_MANIFEST_DIR=" + mdir)
    args.add("--abs-env", "OUT_DIR=" + out_dir.path)
    args.add("--abs-env", "RUSTC=" + ctx.file._rustc.path)
    args.add("--cfg-file", ctx.file._rustc_cfg)
    args.add("--cd", mdir)
    args.add("--links", ctx.attr.links)
    args.add("--out-flags", flags)
    args.add("--out-env", env_out)
    args.add("--out-dep-env", dep_env)
    dep_env_files = []
    for d in ctx.attr.link_deps:
        if CrateInfo in d and d[CrateInfo].compile.build_infos:
            for bi in d[CrateInfo].compile.build_infos:
                dep_env_files.append(bi.dep_env)
    args.add_all(dep_env_files, before_each = "--dep-env-file")
    args.add("--")
    args.add(script)

    ctx.actions.run(
        executable = ctx.executable._wrapper,
        arguments = [args],
        inputs = depset(
            [ctx.file._rustc, ctx.file._rustc_version, ctx.file._rustc_cfg] + dep_env_files +
            ctx.files.srcs + ctx.files.data,
        ),
        tools = [ctx.attr.script[DefaultInfo].files_to_run] + [t[DefaultInfo].files_to_run for t in ctx.attr.tools],
        outputs = [out_dir, flags, env_out, dep_env],
        mnemonic = "CargoBuildScriptRun",
        use_default_shell_env = True,
        progress_message = "Running build script %s" % ctx.label,
    )
    return [
        DefaultInfo(files = depset([out_dir])),
        BuildScriptInfo(out_dir = out_dir, flags = flags, env = env_out, dep_env = dep_env),
    ]

build_script_run = rule(
    implementation = _build_script_run_impl,
    attrs = {
        "script": attr.label(executable = True, cfg = "target", mandatory = True),
        "srcs": attr.label_list(allow_files = True),
        "data": attr.label_list(allow_files = True),
        "tools": attr.label_list(allow_files = True, cfg = "host"),
        "crate_features": attr.string_list(),
        "build_script_env": attr.string_dict(),
        "links": attr.string(),
        "link_deps": attr.label_list(),
        "version": attr.string(default = "0.0.0"),
        "pkg_name": attr.string(),
        "crate_name_for_env": attr.string(),
        "manifest_dir": attr.string(),
        "_wrapper": attr.label(
            default = Label("//private:wrapper.py"),
            executable = True,
            allow_single_file = True,
            cfg = "host",
        ),
        "_rustc": attr.label(default = Label("@rust_host//:bin/rustc"), allow_single_file = True),
        "_rustc_version": attr.label(default = Label("@rust_host//:rustc_version.txt"), allow_single_file = True),
        "_rustc_cfg": attr.label(default = Label("@rust_host//:rustc_cfg.txt"), allow_single_file = True),
    },
    doc = "Runs a compiled Cargo build script the way Cargo does and records what it printed.",
)

def cargo_build_script(
        name,
        srcs = [],
        crate_root = None,
        crate_name = None,
        edition = "2015",
        deps = [],
        proc_macro_deps = [],
        aliases = {},
        crate_features = [],
        build_script_env = {},
        data = [],
        tools = [],
        links = "",
        link_deps = [],
        version = "0.0.0",
        pkg_name = None,
        manifest_dir = None,
        rustc_flags = [],
        rustc_env = {},
        compile_data = [],
        visibility = None,
        **kwargs):
    """rules_rust's cargo_build_script: compiles build.rs, then runs it as Cargo would.

    Put the resulting target in the crate's `deps`; the crate then compiles with the script's
    OUT_DIR, cfgs, env and link flags.
    """
    if crate_root == None:
        crate_root = srcs[0] if len(srcs) == 1 else "build.rs"
    rust_binary(
        name = name + "_script_",
        srcs = srcs,
        crate_root = crate_root,
        crate_name = crate_name or "build_script_build",
        edition = edition,
        deps = deps,
        proc_macro_deps = proc_macro_deps,
        aliases = aliases,
        crate_features = crate_features,
        version = version,
        pkg_name = pkg_name,
        manifest_dir = manifest_dir,
        # Like Cargo's default build-override profile: build scripts are never optimised.
        rustc_flags = rustc_flags + ["-Copt-level=0", "-Cdebuginfo=0"],
        rustc_env = rustc_env,
        compile_data = compile_data + data,
        visibility = ["//visibility:private"],
        tags = kwargs.get("tags", []),
    )
    build_script_run(
        name = name,
        script = ":" + name + "_script_",
        srcs = srcs,
        data = data,
        tools = tools,
        crate_features = crate_features,
        build_script_env = dict(rustc_env.items() + build_script_env.items()),
        links = links,
        link_deps = link_deps,
        version = version,
        pkg_name = pkg_name,
        crate_name_for_env = (pkg_name or name).replace("-", "_"),
        manifest_dir = manifest_dir,
        visibility = visibility,
        **kwargs
    )
