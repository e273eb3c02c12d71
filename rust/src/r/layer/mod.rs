//! The layer under the glue, where all of the `unsafe` lives:
//! - `ffi`: every C API declaration;
//! - `call`: the `.Call` edge (`entry`, `try_r` and the `InR` capability
//!   it lends, interrupts, routine registration);
//! - `global`: `MainThread`/`MainOnce`, the one kind of static the layer
//!   keeps (checked to be touched on R's main thread in checked builds);
//! - `value`: `Owned` (a value kept alive until dropped), reading
//!   arguments and building R values without longjmps;
//! - `handle`: Rust values behind external pointers;
//! - `object`: the 'mirai' object (an environment with an active binding);
//! - `lang`: environments, symbols, small lists, building and evaluating
//!   calls (what the cluster-node glue does with them is in the glue);
//! - `serial`: R serialization into and out of message buffers;
//! - `plain`: reading the serialization of plain values without R;
//! - `later`: settling promises through the 'later' package's C API.
//!

pub mod call;
pub mod ffi;
pub mod global;
pub mod handle;
pub mod lang;
pub mod later;
pub mod object;
pub mod plain;
pub mod serial;
pub mod value;
