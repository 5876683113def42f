fn main() -> std::process::ExitCode {
    callgate::cli::main()
}
