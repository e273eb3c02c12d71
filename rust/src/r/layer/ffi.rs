//! Every declaration of R's C API that mirai uses, and nothing else: no
//! other module declares an R function or reaches into `extendr_ffi`.
//!
//! Most come from extendr-ffi. Declared here instead: what extendr-ffi
//! lacks (R_ToplevelExec, R_CheckUserInterrupt, the stream initialisers,
//! ...) and `TYPEOF`, which extendr-ffi types as returning its `SEXPTYPE`
//! enum: a type code R adds later would then be an invalid enum value, so
//! ours returns the plain integer. Nothing R 4.5 lists as non-API is
//! declared (tools/check-nonapi.sh checks the built library); a closure is
//! made in C (src/entrypoint.c, `mirai_closure`).
//!
//! Only R's main thread may call anything here.

#![allow(non_snake_case, non_upper_case_globals, improper_ctypes)]

pub use extendr_ffi::{
    cetype_t, DllInfo, DL_FUNC, R_BaseEnv, R_BaseSymbol, R_CallMethodDef, R_ClassSymbol, R_DoubleColonSymbol, Rf_PairToVectorList, R_ClearExternalPtr, R_EmptyEnv, R_MissingArg, R_compute_identical, Rf_lcons, SET_TAG,
    R_ExternalPtrAddr, R_ExternalPtrProtected, R_ExternalPtrTag, R_GlobalEnv, R_MakeExternalPtr, R_MakeUnwindCont,
    R_NaInt, R_NaReal, R_NamesSymbol, R_RowNamesSymbol, R_NewEnv, R_NilValue, R_PreserveObject, R_RegisterCFinalizerEx, R_ReleaseObject, R_Serialize,
    R_SetExternalPtrProtected, R_UnboundValue, R_Unserialize, R_forceSymbols, R_inpstream_st, R_outpstream_st,
    R_pstream_format_t, R_registerRoutines, R_useDynamicSymbols, Rboolean, Rf_allocVector, Rf_cons,
    Rf_defineVar, Rf_findFun, Rf_lang1, Rf_getAttrib, Rf_install, Rf_mkCharLenCE, Rf_protect, Rf_setAttrib, Rf_unprotect,
    Rf_xlength, GetRNGstate, PutRNGstate, CAR, CDR, INTEGER, LOGICAL, RAW, REAL, R_CHAR,
    SET_STRING_ELT, SET_VECTOR_ELT, SEXP, SEXPTYPE, STRING_ELT, VECTOR_ELT, SETCDR, R_NaString, PRINTNAME, LENGTH,
};
pub use extendr_ffi::Rf_ScalarInteger;
pub use extendr_ffi::TAG;
pub use extendr_ffi::ALTREP;
pub use extendr_ffi::{INTEGER_ELT, LOGICAL_ELT, REAL_ELT};

use std::ffi::{c_char, c_int, c_void};

extern "C" {
    pub static mut R_interrupts_pending: c_int;
    pub static mut R_interrupts_suspended: Rboolean;

    pub fn TYPEOF(s: SEXP) -> c_int;
    pub fn Rf_getCharCE(x: SEXP) -> cetype_t;
    pub fn R_RegisterFinalizerEx(s: SEXP, fun: SEXP, onexit: Rboolean);
    pub fn Rf_ScalarLogical(x: c_int) -> SEXP;
    pub fn Rf_ScalarReal(x: f64) -> SEXP;
    pub fn Rf_errorcall(call: SEXP, fmt: *const c_char, ...) -> !;
    pub fn R_CheckUserInterrupt();
    pub fn R_withCallingErrorHandler(
        body: unsafe extern "C" fn(*mut c_void) -> SEXP,
        bdata: *mut c_void,
        handler: unsafe extern "C" fn(SEXP, *mut c_void) -> SEXP,
        hdata: *mut c_void,
    ) -> SEXP;
    pub fn R_ToplevelExec(f: unsafe extern "C" fn(*mut c_void), data: *mut c_void) -> Rboolean;
    pub fn R_ContinueUnwind(cont: SEXP) -> !;
    pub fn R_MakeActiveBinding(sym: SEXP, fun: SEXP, env: SEXP);
    pub fn REprintf(fmt: *const c_char, ...);
    pub fn R_GetCCallable(package: *const c_char, name: *const c_char) -> *const c_void;
    pub fn R_existsVarInFrame(env: SEXP, sym: SEXP) -> Rboolean;
    pub fn R_removeVarFromFrame(sym: SEXP, env: SEXP);
    pub fn R_EnvironmentIsLocked(env: SEXP) -> Rboolean;
    // Not part of R's documented API (extendr-ffi has them behind its
    // `non-api` feature): building the mirai's binding function needs them.
    pub fn Rf_findVarInFrame(env: SEXP, sym: SEXP) -> SEXP;
    pub fn Rf_lang2(a: SEXP, b: SEXP) -> SEXP;
    pub fn Rf_lang3(a: SEXP, b: SEXP, c: SEXP) -> SEXP;
    pub fn R_lsInternal3(env: SEXP, all: Rboolean, sorted: Rboolean) -> SEXP;
    pub fn R_BindingIsActive(sym: SEXP, env: SEXP) -> Rboolean;
    pub fn Rf_lang4(a: SEXP, b: SEXP, c: SEXP, d: SEXP) -> SEXP;
    pub fn Rf_eval(e: SEXP, env: SEXP) -> SEXP;
    pub fn Rf_inherits(s: SEXP, name: *const c_char) -> Rboolean;
    pub fn Rf_allocList(n: c_int) -> SEXP;
    pub fn SETCAR(x: SEXP, y: SEXP) -> SEXP;
    pub fn Rf_installTrChar(x: SEXP) -> SEXP;
    pub fn exp_rand() -> f64;
    pub fn R_tryCatch(
        body: unsafe extern "C" fn(*mut c_void) -> SEXP,
        bdata: *mut c_void,
        conds: SEXP,
        handler: unsafe extern "C" fn(SEXP, *mut c_void) -> SEXP,
        hdata: *mut c_void,
        finally: Option<unsafe extern "C" fn(*mut c_void)>,
        fdata: *mut c_void,
    ) -> SEXP;
    pub fn R_InitOutPStream(
        stream: *mut R_outpstream_st,
        data: *mut c_void,
        kind: R_pstream_format_t,
        version: c_int,
        out_char: Option<unsafe extern "C" fn(*mut R_outpstream_st, c_int)>,
        out_bytes: Option<unsafe extern "C" fn(*mut R_outpstream_st, *mut c_void, c_int)>,
        phook: Option<unsafe extern "C" fn(SEXP, SEXP) -> SEXP>,
        pdata: SEXP,
    );
    pub fn R_InitInPStream(
        stream: *mut R_inpstream_st,
        data: *mut c_void,
        kind: R_pstream_format_t,
        in_char: Option<unsafe extern "C" fn(*mut R_inpstream_st) -> c_int>,
        in_bytes: Option<unsafe extern "C" fn(*mut R_inpstream_st, *mut c_void, c_int)>,
        phook: Option<unsafe extern "C" fn(SEXP, SEXP) -> SEXP>,
        pdata: SEXP,
    );
}

/// R's type codes, as `TYPEOF` returns them.
pub const NILSXP: c_int = 0;
pub const SYMSXP: c_int = 1;
pub const LISTSXP: c_int = 2;
pub const CLOSXP: c_int = 3;
pub const ENVSXP: c_int = 4;
pub const LANGSXP: c_int = 6;
pub const SPECIALSXP: c_int = 7;
pub const BUILTINSXP: c_int = 8;
pub const CHARSXP: c_int = 9;
pub const LGLSXP: c_int = 10;
pub const INTSXP: c_int = 13;
pub const REALSXP: c_int = 14;
pub const STRSXP: c_int = 16;
pub const VECSXP: c_int = 19;
pub const EXPRSXP: c_int = 20;
pub const EXTPTRSXP: c_int = 22;
pub const RAWSXP: c_int = 24;
