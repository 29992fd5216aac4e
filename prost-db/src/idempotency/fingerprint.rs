//! Payload fingerprints: the hash of a value's canonical JSON form, and how it is stored.

use std::fmt;
use std::io::Write;

use serde_json::{Number, Value};
use sha2::{Digest, Sha256};

/// The first byte of a stored fingerprint: the version of the canonical form it hashes.
/// Records written before versioning hold 32 bytes without it, and are not compared.
const VERSION: u8 = 2;

/// The SHA-256 of a payload's canonical JSON form, stored in `payload_hash` to tell a true
/// duplicate from a different event that reuses an id.
///
/// The canonical form is the payload's JSON with the keys of every object sorted (by their
/// UTF-8 bytes) at every depth, and one spelling per number (an integral float such as
/// `2.0` hashes like the integer `2`). So two decodes of the same bytes always agree, also
/// when the payload holds a `HashMap`, whose iteration order changes from one instance to
/// the next; and a struct hashes like a map with the same fields and values.
///
/// ```
/// use std::collections::HashMap;
/// use prost_db::idempotency::Fingerprint;
///
/// let a: HashMap<&str, i32> = [("x", 1), ("y", 2), ("z", 3)].into();
/// let b: HashMap<&str, i32> = [("z", 3), ("y", 2), ("x", 1)].into();
/// assert_eq!(Fingerprint::of(&a).unwrap(), Fingerprint::of(&b).unwrap());
/// assert_eq!(
///     Fingerprint::of(&serde_json::json!({"x": 1.0})).unwrap(),
///     Fingerprint::of(&serde_json::json!({"x": 1})).unwrap(),
/// );
/// assert_ne!(Fingerprint::of(&a).unwrap(), Fingerprint::of(&[1, 2, 3]).unwrap());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// Hashes `payload`'s canonical JSON form.
    ///
    /// # Errors
    ///
    /// The serializer's error, for payloads JSON cannot represent (e.g. maps whose keys
    /// are neither strings nor numbers).
    ///
    /// ```
    /// # use prost_db::idempotency::Fingerprint;
    /// let order = Fingerprint::of(&serde_json::json!({"order": 1, "lines": [1, 2]})).unwrap();
    /// assert_ne!(order, Fingerprint::of(&serde_json::json!({"order": 2, "lines": [1, 2]})).unwrap());
    /// ```
    pub fn of<P: serde::Serialize + ?Sized>(payload: &P) -> Result<Self, serde_json::Error> {
        let value = serde_json::to_value(payload)?;
        let mut hasher = HashWriter(Sha256::new());
        write_canonical(&value, &mut hasher).map_err(serde_json::Error::io)?;
        Ok(Fingerprint(hasher.0.finalize().into()))
    }

    /// A fingerprint from its 32 bytes.
    ///
    /// ```
    /// # use prost_db::idempotency::Fingerprint;
    /// let f = Fingerprint::of("x").unwrap();
    /// assert_eq!(Fingerprint::from_bytes(*f.as_bytes()), f);
    /// ```
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Fingerprint(bytes)
    }

    /// The 32 bytes of the hash.
    ///
    /// ```
    /// # use prost_db::idempotency::Fingerprint;
    /// assert_eq!(Fingerprint::of(&1).unwrap().as_bytes().len(), 32);
    /// ```
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The `payload_hash` column's value: the version byte, then the hash.
    pub(crate) fn to_stored(self) -> Vec<u8> {
        self.stored_bytes().to_vec()
    }

    /// [`to_stored`](Self::to_stored) in an array, for a batch's claim (no allocation per
    /// key).
    pub(crate) fn stored_bytes(self) -> [u8; 33] {
        let mut stored = [VERSION; 33];
        stored[1..].copy_from_slice(&self.0);
        stored
    }

    /// A stored fingerprint of this version; `None` for another version's (whose hash of
    /// the same payload differs, so comparing it would report every redelivery as a
    /// different payload).
    pub(crate) fn from_stored(stored: &[u8]) -> Option<Self> {
        match stored.split_first() {
            Some((&VERSION, hash)) => <[u8; 32]>::try_from(hash).ok().map(Fingerprint),
            _ => None,
        }
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint(")?;
        for byte in &self.0[..8] {
            write!(f, "{byte:02x}")?;
        }
        write!(f, "..)")
    }
}

/// Writes `value`'s canonical form.
fn write_canonical<W: Write>(value: &Value, out: &mut W) -> std::io::Result<()> {
    match value {
        Value::Null => out.write_all(b"null"),
        Value::Bool(true) => out.write_all(b"true"),
        Value::Bool(false) => out.write_all(b"false"),
        Value::Number(number) => write_number(number, out),
        Value::String(string) => write_string(string, out),
        Value::Array(items) => {
            out.write_all(b"[")?;
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.write_all(b",")?;
                }
                write_canonical(item, out)?;
            }
            out.write_all(b"]")
        }
        Value::Object(map) => {
            // serde_json's map is sorted, unless a crate in the build enables its
            // `preserve_order` feature, which keeps the insertion order.
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            if !entries.is_sorted_by(|a, b| a.0 <= b.0) {
                entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            }
            out.write_all(b"{")?;
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.write_all(b",")?;
                }
                write_string(key, out)?;
                out.write_all(b":")?;
                write_canonical(item, out)?;
            }
            out.write_all(b"}")
        }
    }
}

fn write_string<W: Write>(string: &str, out: &mut W) -> std::io::Result<()> {
    serde_json::to_writer(out, string).map_err(std::io::Error::from)
}

/// Integers in decimal; a float with an integral value in the range of `i64` or `u64` as
/// that integer (so `-0.0`, `0.0` and `0` agree); other floats in their shortest
/// round-trip form.
fn write_number<W: Write>(number: &Number, out: &mut W) -> std::io::Result<()> {
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    if let Some(n) = number.as_i64() {
        write!(out, "{n}")
    } else if let Some(n) = number.as_u64() {
        write!(out, "{n}")
    } else if let Some(f) = number.as_f64().filter(|f| f.is_finite()) {
        if f.fract() == 0.0 && (-TWO_63..TWO_63).contains(&f) {
            write!(out, "{}", f as i64)
        } else if f.fract() == 0.0 && (0.0..2.0 * TWO_63).contains(&f) {
            write!(out, "{}", f as u64)
        } else {
            serde_json::to_writer(out, &f).map_err(std::io::Error::from)
        }
    } else {
        // Only with serde_json's `arbitrary_precision`: a number no primitive holds.
        write!(out, "{number}")
    }
}

struct HashWriter(Sha256);

impl Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use serde_json::json;

    use super::*;

    fn canonical(value: &Value) -> String {
        let mut text = Vec::new();
        write_canonical(value, &mut text).unwrap();
        String::from_utf8(text).unwrap()
    }

    #[test]
    fn keys_are_sorted_at_every_depth() {
        let a = json!({"b": {"y": 1, "x": [ {"q": 1, "p": 2} ]}, "a": null});
        let mut inner = serde_json::Map::new();
        inner.insert("p".into(), json!(2));
        inner.insert("q".into(), json!(1));
        let b = json!({"a": null, "b": {"x": [Value::Object(inner)], "y": 1}});
        assert_eq!(
            canonical(&b),
            r#"{"a":null,"b":{"x":[{"p":2,"q":1}],"y":1}}"#
        );
        assert_eq!(Fingerprint::of(&a).unwrap(), Fingerprint::of(&b).unwrap());
    }

    #[test]
    fn a_hash_map_hashes_the_same_on_every_decode() {
        let json = r#"{"k1":"a","k2":"b","k3":"c","k4":"d","k5":"e","k6":"f","k7":{"n1":1,"n2":2,"n3":3}}"#;
        let first = Fingerprint::of(&serde_json::from_str::<HashMap<String, Value>>(json).unwrap());
        for _ in 0..50 {
            let again: HashMap<String, Value> = serde_json::from_str(json).unwrap();
            assert_eq!(Fingerprint::of(&again).unwrap(), *first.as_ref().unwrap());
        }
        let sorted: BTreeMap<String, Value> = serde_json::from_str(json).unwrap();
        assert_eq!(Fingerprint::of(&sorted).unwrap(), first.unwrap());
    }

    #[test]
    fn a_struct_hashes_like_the_map_of_its_fields() {
        #[derive(serde::Serialize)]
        struct Line {
            sku: &'static str,
            quantity: u32,
        }
        let line = Line {
            sku: "MUG",
            quantity: 2,
        };
        assert_eq!(
            Fingerprint::of(&line).unwrap(),
            Fingerprint::of(&json!({"quantity": 2, "sku": "MUG"})).unwrap()
        );
    }

    #[test]
    fn each_number_has_one_spelling() {
        let same = |a: Value, b: Value| canonical(&a) == canonical(&b);
        assert_eq!(
            canonical(&json!([1.0, -0.0, 2.5, 1e300])),
            "[1,0,2.5,1e+300]"
        );
        assert!(same(json!(1.0), json!(1)));
        assert!(same(json!(-0.0), json!(0)));
        assert!(same(json!(-3.0), json!(-3_i64)));
        assert!(same(json!(1e19), json!(10_000_000_000_000_000_000_u64)));
        assert!(same(json!(0.1), json!(0.1)));
        assert!(!same(json!(0.1), json!(0.10000000000000002)));
        assert!(!same(json!(1), json!("1")));
        assert!(!same(json!(1.5), json!(1)));
    }

    #[test]
    fn strings_are_escaped_so_structure_cannot_be_forged() {
        let a = json!({"a": "x\",\"b\":\"y"});
        let b = json!({"a": "x", "b": "y"});
        assert_ne!(Fingerprint::of(&a).unwrap(), Fingerprint::of(&b).unwrap());
        assert_ne!(
            Fingerprint::of(&json!(["a", "b"])).unwrap(),
            Fingerprint::of(&json!(["a,b"])).unwrap()
        );
    }

    #[test]
    fn a_stored_fingerprint_carries_its_version() {
        let f = Fingerprint::of(&json!({"order": 1})).unwrap();
        let stored = f.to_stored();
        assert_eq!(stored.len(), 33);
        assert_eq!(Fingerprint::from_stored(&stored), Some(f));
        assert_eq!(Fingerprint::from_stored(f.as_bytes()), None, "unversioned");
        assert_eq!(Fingerprint::from_stored(&[]), None);
    }

    #[test]
    fn map_keys_that_json_cannot_hold_are_an_error() {
        let map: HashMap<(i32, i32), i32> = [((1, 2), 3)].into();
        assert!(Fingerprint::of(&map).is_err());
    }
}
