//! `q35-opt`: parse, verify, transform and print q35 MLIR. See
//! `q35c::driver::opt`.

fn main() {
    std::process::exit(q35c::driver::opt::main());
}
