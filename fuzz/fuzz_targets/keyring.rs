//! Fuzz target: the keyring record decoders — the file store's JSON record
//! (`keys::store::StoredKey`) and the Redis store's sealed record
//! (`keys::store::redis::decode_record`) — and the parse of the private key a record
//! holds (`keys::SigningKey::from_record`).
//!
//! Input: a byte whose low bit picks the record form. File form: the JSON. Redis form:
//! the hash field (the kid), `\n`, the JSON; private keys are sealed under [`KEK`] (the
//! seeds in `corpus/keyring` are, see `gen_seeds.py`). Nothing may panic; a record that
//! decodes encodes back to an equal record; a parsed key signs.

#![no_main]

use keys::seal::Kek;
use keys::store::StoredKey;
use keys::store::redis::{decode_record, encode_record};
use keys::{KeyRecord, KeyState, Kid, SigningKey};
use libfuzzer_sys::fuzz_target;

/// The key-encryption key of the seeds: 32 bytes of 7.
const KEK: [u8; 32] = [7; 32];

fn check_key(record: &KeyRecord) {
    if let Ok(key) = SigningKey::from_record(record, KeyState::Current) {
        let mut out = String::new();
        key.sign_into(b"{\"sub\":\"fuzz\"}", &mut out)
            .expect("a parsed key signs");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        let Ok(stored) = serde_json::from_slice::<StoredKey>(rest) else {
            return;
        };
        let Ok(record) = stored.into_record() else {
            return;
        };
        let json = StoredKey::from_record(&record)
            .to_json()
            .expect("a record encodes");
        let back: StoredKey = serde_json::from_slice(&json).expect("its own JSON parses");
        assert_eq!(back.into_record().as_ref(), Ok(&record));
        check_key(&record);
    } else {
        let (kid, json) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &b""[..]),
        };
        let kek = Kek::from_bytes(&KEK).expect("32 bytes");
        let kid = Kid::from(String::from_utf8_lossy(kid).as_ref());
        let Ok(record) = decode_record(&kek, kid.clone(), json) else {
            return;
        };
        assert_eq!(record.kid, kid);
        let again = encode_record(&kek, &record).expect("a decoded record encodes");
        assert_eq!(
            decode_record(&kek, kid, again.as_bytes()).as_ref().ok(),
            Some(&record)
        );
        check_key(&record);
    }
});
