// Shared by the build scripts of both crates (pulled in with `include!`).
//
// Two known traps of tch on Linux (DESIGN.md, traps 1 and 2):
// - torch-sys's link flags do not reach dependents, and with the default `--as-needed`
//   the linker drops libtorch_cuda because no symbol of it is referenced directly. CUDA
//   then silently reports unavailable. Re-add it between --no-as-needed/--as-needed.
// - The final artifact must find libtorch at run time without LD_LIBRARY_PATH: embed an
//   rpath to the libtorch the build used (resolved through the .libtorch link, so it
//   points at the machine-wide install rather than at one clone).

fn link_libtorch() {
    let lib = match std::env::var("DEP_TCH_LIBTORCH_LIB") {
        Ok(lib) => std::path::PathBuf::from(lib),
        Err(_) => panic!("torch-sys did not report its libtorch directory (DEP_TCH_LIBTORCH_LIB)"),
    };
    let lib = std::fs::canonicalize(&lib).unwrap_or(lib);
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-L{}", lib.display());
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-ltorch");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
}
