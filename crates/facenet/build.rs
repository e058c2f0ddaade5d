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

    // c10d's Gloo process group (distributed training), in a library of its own: its
    // headers also need gloo's, which torch's wheel leaves out.
    let gloo = gloo_include();
    println!("cargo:rerun-if-env-changed=FACENET_GLOO_INCLUDE");
    cc::Build::new()
        .cpp(true)
        .file("cpp/c10d.cpp")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .include(&gloo)
        .flag("-std=c++17")
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        // ProcessGroupGloo.hpp is empty without it (torch's own build defines it).
        .define("USE_C10D_GLOO", None)
        .flag_if_supported("-Wno-unused-parameter")
        .warnings(false)
        .compile("facenet_c10d");
}

/// gloo's headers: $FACENET_GLOO_INCLUDE, else the `gloo` link that
/// scripts/setup-libtorch.sh puts beside libtorch's (in $LIBTORCH, or the repository's
/// .libtorch).
fn gloo_include() -> std::path::PathBuf {
    if let Ok(dir) = std::env::var("FACENET_GLOO_INCLUDE") {
        return dir.into();
    }
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    let manifest = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let candidates = std::env::var("LIBTORCH")
        .ok()
        .map(std::path::PathBuf::from)
        .into_iter()
        .chain([manifest.join("../../.libtorch")]);
    let mut tried = Vec::new();
    for root in candidates {
        let dir = root.join("gloo/include");
        if dir.join("gloo/context.h").is_file() {
            return dir;
        }
        tried.push(dir.display().to_string());
    }
    panic!(
        "no gloo headers (gloo/context.h) in {}: run scripts/setup-libtorch.sh (npm install does), or set FACENET_GLOO_INCLUDE",
        tried.join(" or ")
    )
}
