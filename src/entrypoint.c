/* Package entry point. The Rust crate (rust/, linked as libmirai.a) registers
 * the .Call routines in mirai_rust_init. Rust symbols are hidden at link time
 * (-Wl,--exclude-libs,ALL), so R_init_mirai is the one exported symbol. */
#include <R.h>
#include <Rinternals.h>
#include <R_ext/Rdynload.h>
#include <Rversion.h>
#include <setjmp.h>

typedef SEXP (*mirai_body)(void *);
typedef int (*mirai_protect_fn)(mirai_body, void *, SEXP, SEXP *);

typedef SEXP (*mirai_closure_fn)(SEXP, SEXP);
/* mirai_eval's type: Rust registers it as a .Call routine with the arity
   this type gives it. */
typedef SEXP (*mirai_eval_fn)(SEXP, SEXP, SEXP);
void mirai_rust_init(DllInfo *dll, mirai_protect_fn protect, mirai_eval_fn eval, mirai_closure_fn closure);

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

/* ---- evaluation on a daemon ---------------------------------------------
 * mirai_eval(expr, env, box) evaluates expr in env. On success it returns the
 * value. On an error it stores the condition and sys.calls() in `box` (an
 * environment private to the daemon loop) and returns `box` itself; on an
 * interrupt it returns `box` with box$cond NULL. This replaces R-level
 * tryCatch(withCallingHandlers(...)), which costs more than the rest of a
 * small task's evaluation: here the happy path is one C-level calling
 * handler and one unwind-protect context.
 * The error handler leaves through the "abort" restart, which unwinds
 * (running on.exit code) up to the unwind-protect below and prints nothing. */
typedef struct { SEXP expr, env, box; } mirai_eval_t;

static SEXP eval_token = NULL;
/* function() sys.calls(): called from the handler, its own frame makes
   sys.calls() see the whole stack whichever way R invoked the handler (an
   error from C code goes through .handleSimpleError, a condition object
   through signalCondition, which calls the handler from the top level). */
static SEXP calls_fun = NULL;

static SEXP eval_body(void *d) {
  mirai_eval_t *e = (mirai_eval_t *) d;
  return Rf_eval(e->expr, e->env);
}

static SEXP eval_on_error(SEXP cond, void *d) {
  mirai_eval_t *e = (mirai_eval_t *) d;
  Rf_defineVar(Rf_install("cond"), cond, e->box);
  /* The last two calls are the handler's and calls_fun's own (node_error()
     in R/daemon.R drops them). */
  SEXP calls = PROTECT(Rf_lang1(calls_fun));
  calls = PROTECT(Rf_eval(calls, R_BaseEnv));
  Rf_defineVar(Rf_install("calls"), calls, e->box);
  SEXP abort = PROTECT(Rf_lang2(Rf_install("invokeRestart"), Rf_mkString("abort")));
  Rf_eval(abort, R_BaseEnv);
  UNPROTECT(3);
  return R_NilValue;
}

static SEXP eval_guarded(void *d) {
  return R_withCallingErrorHandler(eval_body, d, eval_on_error, d);
}

static SEXP mirai_eval(SEXP expr, SEXP env, SEXP box) {
  if (TYPEOF(env) != ENVSXP || TYPEOF(box) != ENVSXP) Rf_error("mirai_eval: environments expected");
  mirai_eval_t e = {expr, env, box};
  SEXP out = R_NilValue;
  Rf_defineVar(Rf_install("cond"), R_NilValue, box);
  if (mirai_protect(eval_guarded, &e, eval_token, &out)) return box;
  return out;
}

/* ---- closures -----------------------------------------------------------
 * mirai_closure(body, env): function() body, enclosed by env (a mirai's
 * active binding). R 4.5 made R_mkClosure the API for this and lists the
 * setters a closure used to be built with (SET_FORMALS, SET_BODY,
 * SET_CLOENV, Rf_allocSExp) as non-API; before 4.5 the API way is to
 * evaluate the `function` special, `function`(NULL, body), in env. Chosen
 * when the package is built, against the R it is built for. Allocates:
 * call it where an R error is caught (try_r). */
#if R_VERSION >= R_Version(4, 5, 0)
static SEXP mirai_closure(SEXP body, SEXP env) {
  return R_mkClosure(R_NilValue, body, env);
}
#else
/* The `function` special itself, not its name: env may see no base. */
static SEXP function_prim = NULL;
static SEXP mirai_closure(SEXP body, SEXP env) {
  SEXP call = PROTECT(Rf_lang3(function_prim, R_NilValue, body));
  SEXP fun = Rf_eval(call, env);
  UNPROTECT(1);
  return fun;
}
#endif

void R_init_mirai(DllInfo *dll) {
  eval_token = R_MakeUnwindCont();
  R_PreserveObject(eval_token);
  calls_fun = R_ParseEvalString("function() sys.calls()", R_BaseEnv);
  R_PreserveObject(calls_fun);
#if R_VERSION < R_Version(4, 5, 0)
  function_prim = Rf_findFun(Rf_install("function"), R_BaseEnv);
  R_PreserveObject(function_prim);
#endif
  mirai_rust_init(dll, mirai_protect, mirai_eval, mirai_closure);
}
