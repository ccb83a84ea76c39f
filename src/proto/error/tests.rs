//! Error tests: codes and messages as they go on the wire.

use super::*;

#[test]
fn transfer_errors_are_small() {
    assert_eq!(std::mem::size_of::<Violation>(), 1);
    assert_eq!(std::mem::size_of::<LocalFailure>(), 1);
    assert!(std::mem::size_of::<TransferError>() <= 4);
}

#[test]
fn each_error_maps_to_its_wire_error() {
    let cases = [
        (TransferError::Peer(ErrorCode(42)), ErrorCode(42)),
        (TransferError::TimedOut, ErrorCode::NOT_DEFINED),
        (Violation::UnexpectedOnRead.into(), ErrorCode::ILLEGAL_OPERATION),
        (Violation::OversizedData.into(), ErrorCode::ILLEGAL_OPERATION),
        (Violation::OackTimeoutDiffers.into(), ErrorCode::OPTION_REFUSED),
        (LocalFailure::NotFound.into(), ErrorCode::FILE_NOT_FOUND),
        (LocalFailure::Denied.into(), ErrorCode::ACCESS_VIOLATION),
        (LocalFailure::SymlinkWithoutOpenat2.into(), ErrorCode::ACCESS_VIOLATION),
        (LocalFailure::UploadTooLarge.into(), ErrorCode::DISK_FULL),
        (LocalFailure::Exists.into(), ErrorCode::FILE_EXISTS),
        (LocalFailure::ShuttingDown.into(), ErrorCode::NOT_DEFINED),
    ];
    for (e, code) in cases {
        assert_eq!(ErrorCode::from(&e), code, "{e:?}");
        assert_eq!(e.code(), code, "{e:?}");
    }
    let e = TransferError::from(LocalFailure::FileChanged);
    assert_eq!(
        (e.message(), e.to_string().as_str()),
        ("file changed while being read", "file changed while being read")
    );
    // The one refusal whose text says more than its code: the operator's fix is a kernel.
    assert_eq!(LocalFailure::SymlinkWithoutOpenat2.message(), "symlinks not served: kernel lacks openat2");
    assert_eq!(TransferError::Peer(ErrorCode::DISK_FULL).to_string(), "the peer sent ERROR 3 (disk full)");
    assert!(TransferError::TimedOut.is_peer() && !e.is_peer());
}
