"""Repository rules for the offline Rust build: the host toolchain and the vendored crates."""

def _rust_host_impl(rctx):
    rustc = rctx.os.environ.get("RUSTC") or rctx.which("rustc")
    if not rustc:
        fail("rust_host: no rustc on PATH (install Rust with rustup, or set RUSTC)")
    res = rctx.execute([rustc, "--print", "sysroot"])
    if res.return_code != 0:
        fail("rust_host: `rustc --print sysroot` failed: " + res.stderr)
    sysroot = res.stdout.strip()

    # The real compiler, not the rustup proxy: rustc finds its sysroot from its own location.
    rctx.symlink(sysroot + "/bin/rustc", "bin/rustc")

    # Every Rust action takes this file as an input, so a toolchain change misses the cache.
    vv = rctx.execute([sysroot + "/bin/rustc", "-vV"])
    if vv.return_code != 0:
        fail("rust_host: `rustc -vV` failed: " + vv.stderr)
    if "host: x86_64-unknown-linux-gnu" not in vv.stdout:
        fail("rust_host: only an x86_64-unknown-linux-gnu host is supported, got:\n" + vv.stdout)
    rctx.file("rustc_version.txt", vv.stdout)
    cfg = rctx.execute([sysroot + "/bin/rustc", "--print", "cfg"])
    if cfg.return_code != 0:
        fail("rust_host: `rustc --print cfg` failed: " + cfg.stderr)
    rctx.file("rustc_cfg.txt", cfg.stdout)
    rctx.file("BUILD.bazel", """\
package(default_visibility = ["//visibility:public"])
exports_files(["bin/rustc", "rustc_version.txt", "rustc_cfg.txt"])
""")

rust_host = repository_rule(
    implementation = _rust_host_impl,
    environ = ["RUSTC", "PATH", "RUSTUP_TOOLCHAIN", "RUSTUP_HOME"],
    local = True,
    doc = "Finds the host Rust toolchain (`rustc --print sysroot`) and records its version.",
)

def _cargo_vendor_impl(rctx):
    cargo = rctx.os.environ.get("CARGO") or rctx.which("cargo")
    if not cargo:
        fail("crates: no cargo on PATH (install Rust with rustup)")
    manifest = rctx.path(rctx.attr.cargo_toml)
    rctx.path(rctx.attr.cargo_lock)  # re-vendor when the lock file changes
    rctx.report_progress("cargo vendor (first build only)")
    res = rctx.execute(
        [cargo, "vendor", "--locked", "--versioned-dirs", "--quiet", "--manifest-path", manifest, "vendor"],
        timeout = 1800,
        quiet = True,
    )
    if res.return_code != 0:
        fail("crates: `cargo vendor` failed (crates.io or the local Cargo cache is needed once):\n" + res.stderr)

    # cargo vendor keeps each crate's own BUILD files if it ships any; they are not ours.
    rctx.execute(["find", "vendor", "-type", "f", "(", "-name", "BUILD", "-o", "-name", "BUILD.bazel",
                  "-o", "-name", "WORKSPACE", "-o", "-name", "WORKSPACE.bazel", ")", "-delete"])
    rctx.symlink(rctx.attr.build_file, "BUILD.bazel")
    rctx.file("WORKSPACE", 'workspace(name = "%s")\n' % rctx.name)

cargo_vendor_repository = repository_rule(
    implementation = _cargo_vendor_impl,
    attrs = {
        "cargo_toml": attr.label(mandatory = True, allow_single_file = True),
        "cargo_lock": attr.label(mandatory = True, allow_single_file = True),
        "build_file": attr.label(mandatory = True, allow_single_file = True),
    },
    environ = ["CARGO", "PATH", "CARGO_HOME"],
    doc = "Third-party crates as `@crates//:<name>`: `cargo vendor` plus a generated BUILD file.",
)
