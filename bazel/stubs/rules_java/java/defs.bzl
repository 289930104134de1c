"""Offline stub of @rules_java for Bazel 4: re-exports the native Java rules."""

java_binary = native.java_binary
java_library = native.java_library
java_test = native.java_test
java_import = native.java_import
