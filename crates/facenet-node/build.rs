include!("../link_libtorch.rs");

fn main() {
    napi_build::setup();
    link_libtorch();
}
