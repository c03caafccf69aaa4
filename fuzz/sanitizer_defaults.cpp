// Sanitizer defaults linked into every fuzzer, so that running a fuzzer by hand (say, to replay a
// file from fuzz/findings/) behaves as under run.sh. UBSAN_OPTIONS/ASAN_OPTIONS still override.

// UBSan findings are fatal (libFuzzer then saves the input), with a stack. They stay recoverable
// at compile time so that a UBSan suppressions file can silence one known report in long runs.
extern "C" const char* __ubsan_default_options() {
  return "halt_on_error=1:print_stacktrace=1:report_error_type=1";
}

// The harnesses abort() on a broken invariant; make that show its stack too.
extern "C" const char* __asan_default_options() { return "handle_abort=1:detect_leaks=1"; }
