// The addon is what npm ships, so it must not carry the build machine's libtorch path (no
// absolute rpath) nor force libtorch_cuda in (a CPU-only torch install lacks its CUDA
// libraries). `src/libtorch.ts` finds libtorch when the module loads and preloads
// libc10/libtorch_cpu, and libtorch_cuda when its CUDA libraries are there, before this
// addon: the dynamic loader then resolves the addon's NEEDED entries by soname, and
// libtorch_cuda's static initialisers register CUDA with libtorch_cpu (DESIGN.md trap 1).
fn main() {
    napi_build::setup();
}
