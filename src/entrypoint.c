/* Package entry point. The Rust crate (rust/, linked as libmirai.a) registers
 * the .Call routines in mirai_rust_init. Rust symbols are hidden at link time
 * (-Wl,--exclude-libs,ALL), so R_init_mirai is the one exported symbol. */
#include <R.h>
#include <Rinternals.h>
#include <R_ext/Rdynload.h>
#include <setjmp.h>

typedef SEXP (*mirai_body)(void *);
typedef int (*mirai_protect_fn)(mirai_body, void *, SEXP, SEXP *);

void mirai_rust_init(DllInfo *dll, mirai_protect_fn protect);

static void mirai_jump_back(void *jb, Rboolean jump) {
  if (jump) longjmp(*(jmp_buf *) jb, 1);
}

/* Runs fun(data) under R_UnwindProtect. An R error (or interrupt) raised
 * inside is stopped here, in C, so it never longjmps over Rust frames: the
 * function returns 1 with the unwind held in `cont`, and Rust continues it
 * with R_ContinueUnwind once its own values are dropped. This is far cheaper
 * than R_tryCatchError, which evaluates R's tryCatch() on every call.
 * setjmp lives here because Rust cannot call it soundly. */
static int mirai_protect(mirai_body fun, void *data, SEXP cont, SEXP *out) {
  jmp_buf jb;
  if (setjmp(jb)) return 1;
  *out = R_UnwindProtect(fun, data, mirai_jump_back, &jb, cont);
  return 0;
}

void R_init_mirai(DllInfo *dll) {
  mirai_rust_init(dll, mirai_protect);
}
