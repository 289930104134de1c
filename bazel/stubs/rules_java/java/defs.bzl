"""Offline stub of @rules_java for Bazel 4: re-exports the native Java rules bazel_tools loads."""

java_binary = native.java_binary
java_library = native.java_library
java_test = native.java_test
java_import = native.java_import
java_runtime = native.java_runtime
java_toolchain = native.java_toolchain
java_proto_library = native.java_proto_library
