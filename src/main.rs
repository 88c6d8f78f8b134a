//! `cashloop`: see `cashloop --help`. The binary is thin; everything lives in the library.

fn main() -> std::process::ExitCode {
    cashloop::main_entry()
}
