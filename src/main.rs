fn main() {
    std::process::exit(imager_cli::run());
}

mod imager_cli {
    pub fn run() -> i32 {
        0
    }
}
