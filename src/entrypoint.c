/* Package entry point. The Rust crate (rust/, linked as libmirai.a) registers
 * the .Call routines in mirai_rust_init. Rust symbols are hidden at link time
 * (-Wl,--exclude-libs,ALL), so R_init_mirai is the one exported symbol. */
#include <R.h>
#include <Rinternals.h>
#include <R_ext/Rdynload.h>

void mirai_rust_init(DllInfo *dll);

void R_init_mirai(DllInfo *dll) {
  mirai_rust_init(dll);
}
