"""The rules_rust Cargo API (`@rules_rust//cargo:defs.bzl`), implemented offline."""

load("//private:rust.bzl", _cargo_build_script = "cargo_build_script")

cargo_build_script = _cargo_build_script
