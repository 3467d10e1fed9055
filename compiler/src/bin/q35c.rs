//! `q35c`: the q35 compiler. See `q35c::driver::q35c`.

fn main() {
    std::process::exit(q35c::driver::q35c::main());
}
