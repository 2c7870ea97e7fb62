//! Fuzzes the frame decoder in both directions and the streaming reader.
//!
//! Run: `tests/fuzz.sh runtime-api/decode_frame`.
//! Properties: decoding never panics, and anything that decodes re-encodes to a frame
//! that decodes to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use runtime_api::protocol::{decode, encode, read_frame, GuestMessage, HostMessage};

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((msg, used))) = decode::<HostMessage>(data) {
        assert!(used <= data.len());
        let again = encode(&msg).expect("a decoded message re-encodes");
        let (back, _) = decode::<HostMessage>(&again)
            .expect("re-decodes")
            .expect("complete");
        assert_eq!(back, msg);
    }
    if let Ok(Some((msg, _))) = decode::<GuestMessage>(data) {
        let again = encode(&msg).expect("a decoded message re-encodes");
        let (back, _) = decode::<GuestMessage>(&again)
            .expect("re-decodes")
            .expect("complete");
        assert_eq!(back, msg);
    }
    // The stream reader must agree with the slice decoder and survive short reads.
    let mut reader = data;
    while let Ok(_msg) = read_frame::<GuestMessage, _>(&mut reader) {}
});
