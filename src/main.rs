fn main() {
    std::process::exit(imager_cli());
}

fn imager_cli() -> i32 {
    imager::cli::main()
}
