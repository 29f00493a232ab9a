//! The one error shape every API answer uses: `{"error": {"code", "message"}}`.

use serde::{Deserialize, Serialize};

/// The body of every non-2xx answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// A machine-readable `code` to branch on and a `message` for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

/// The error codes the server sends, with the HTTP status each goes with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// 400: the body is not valid JSON, misses a field, or a field is invalid.
    MalformedRequest,
    /// 403: the registration code is unknown, rotated, disabled or wrong; deliberately
    /// one answer for all of them, so the server is no oracle for codes.
    InvalidRegistrationCode,
    /// 401: the request needs a recorder client certificate and had none.
    Unauthenticated,
    /// 403: authenticated, but not allowed to do this.
    Forbidden,
    /// 404: no such thing.
    NotFound,
    /// 405: the path exists but not with this method; `Allow` lists the ones it takes.
    MethodNotAllowed,
    /// 409: conflicts with the current state.
    Conflict,
    /// 410: the recorder was revoked; its credential is dead.
    Revoked,
    /// 413: the body is over the size limit.
    PayloadTooLarge,
    /// 415: the body is not `application/json`.
    UnsupportedMediaType,
    /// 429: slow down; `Retry-After` says for how long.
    RateLimited,
    /// 500: a fault on the server; retry later.
    Internal,
    /// 403: the account (or an account above it) is disabled by its administrator:
    /// enrollment and renewal are refused until it is enabled again. Only given for a
    /// registration code whose secret matched, so it tells nothing about other codes.
    AccountDisabled,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 13] = [
        ErrorCode::MalformedRequest,
        ErrorCode::InvalidRegistrationCode,
        ErrorCode::Unauthenticated,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::Conflict,
        ErrorCode::Revoked,
        ErrorCode::PayloadTooLarge,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::RateLimited,
        ErrorCode::Internal,
        ErrorCode::AccountDisabled,
    ];

    /// The string in the `code` field.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MalformedRequest => "malformed_request",
            ErrorCode::InvalidRegistrationCode => "invalid_registration_code",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::Conflict => "conflict",
            ErrorCode::Revoked => "revoked",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Internal => "internal",
            ErrorCode::AccountDisabled => "account_disabled",
        }
    }

    /// The HTTP status that goes with the code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::MalformedRequest => 400,
            ErrorCode::InvalidRegistrationCode => 403,
            ErrorCode::Unauthenticated => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::Conflict => 409,
            ErrorCode::Revoked => 410,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::UnsupportedMediaType => 415,
            ErrorCode::RateLimited => 429,
            ErrorCode::Internal => 500,
            ErrorCode::AccountDisabled => 403,
        }
    }

    /// Reads the `code` field back; `None` for codes a newer server may add.
    pub fn parse(code: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == code)
    }
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorBody {
            error: ErrorDetail {
                code: code.as_str().to_string(),
                message: message.into(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_parses_back_from_its_string() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
        }
        assert_eq!(ErrorCode::parse("from_the_future"), None);
    }
}
