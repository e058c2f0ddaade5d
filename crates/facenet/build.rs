include!("../link_libtorch.rs");

fn main() {
    link_libtorch();
    compile_shims();
}

/// Compiles the C++ in cpp/ (what tch does not wrap) against the headers of the libtorch
/// torch-sys linked.
fn compile_shims() {
    let lib = std::path::PathBuf::from(
        std::env::var("DEP_TCH_LIBTORCH_LIB").expect("DEP_TCH_LIBTORCH_LIB is set by torch-sys"),
    );
    let lib = std::fs::canonicalize(&lib).unwrap_or(lib);
    let include = lib
        .parent()
        .map(|root| root.join("include"))
        .filter(|dir| dir.join("ATen").is_dir())
        .unwrap_or_else(|| {
            panic!(
                "no libtorch headers (include/ATen) beside {}",
                lib.display()
            )
        });
    println!("cargo:rerun-if-changed=cpp");
    cc::Build::new()
        .cpp(true)
        .file("cpp/autocast.cpp")
        .file("cpp/foreach.cpp")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        // The PyPI wheels of torch 2.11 are built with the C++11 ABI.
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .flag_if_supported("-Wno-unused-parameter")
        .warnings(false)
        .compile("facenet_shims");
}
