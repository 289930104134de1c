"""The rules_rust API (`@rules_rust//rust:defs.bzl`), implemented offline in this repository."""

load(
    "//private:rust.bzl",
    _rust_binary = "rust_binary",
    _rust_library = "rust_library",
    _rust_proc_macro = "rust_proc_macro",
    _rust_test = "rust_test",
)

rust_library = _rust_library
rust_proc_macro = _rust_proc_macro
rust_binary = _rust_binary
rust_test = _rust_test
