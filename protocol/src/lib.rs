//! Protocol v1 between the Contera agent and the provisioning server: the only definition
//! of the wire format, so the two sides cannot drift apart. No I/O lives here.

pub mod code;
pub mod error;
pub mod v1;

pub use code::{CodeError, RegistrationCode};
pub use error::{ErrorBody, ErrorCode, ErrorDetail};
