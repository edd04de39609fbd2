//! Reading JSON documents with Go's `encoding/json` tolerance, as Docker,
//! containerd and the other Go tools that write image documents read
//! them: `null` where a string, number, boolean, list, map or object is
//! expected is that type's zero value, the same as a missing field. A
//! value of another type stays an error.
//!
//! Use as `#[serde(default, deserialize_with = "kiln_oci::nullable::default")]`
//! on a field whose type has a [`Default`] that is its zero value.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// A struct read only from a JSON object, as Go reads one. (serde's
/// derived structs also accept an array of the fields in order, which no
/// image document means.)
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Object<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Object<T>, D::Error> {
        struct Fields<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for Fields<T> {
            type Value = T;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(Fields(PhantomData)).map(Object)
    }
}

/// A struct field: an object, or `null` (or missing) for the default.
pub fn object<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<Object<T>>::deserialize(d)?
        .map(|o| o.0)
        .unwrap_or_default())
}

/// A list of structs: each an object; `null` is the empty list, a `null`
/// item the default.
pub fn objects<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    let items: Option<Vec<Option<Object<T>>>> = Option::deserialize(d)?;
    Ok(items
        .unwrap_or_default()
        .into_iter()
        .map(|o| o.map(|o| o.0).unwrap_or_default())
        .collect())
}

/// A field whose `null` is its default.
pub fn default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A list of strings: `null` is the empty list, a `null` item the empty
/// string (as Go stores a `null` element of a `[]string`).
pub fn strings<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(optional_strings(d)?.unwrap_or_default())
}

/// An optional list of strings (`Cmd`, `Entrypoint`): `null` stays
/// `None`, distinct from `[]`; a `null` item is the empty string.
pub fn optional_strings<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    let items: Option<Vec<Option<String>>> = Option::deserialize(d)?;
    Ok(items.map(|items| items.into_iter().map(Option::unwrap_or_default).collect()))
}

/// A map of strings (`Labels`, `annotations`): `null` is the empty map, a
/// `null` value the empty string.
pub fn string_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let map: Option<BTreeMap<String, Option<String>>> = Option::deserialize(d)?;
    Ok(map
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.unwrap_or_default()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, Deserialize)]
    struct Doc {
        #[serde(default, deserialize_with = "default")]
        text: String,
        #[serde(default, deserialize_with = "default")]
        flag: bool,
        #[serde(default, deserialize_with = "default")]
        number: u64,
        #[serde(default, deserialize_with = "strings")]
        list: Vec<String>,
        #[serde(default, deserialize_with = "optional_strings")]
        maybe: Option<Vec<String>>,
        #[serde(default, deserialize_with = "string_map")]
        map: BTreeMap<String, String>,
        #[serde(default, deserialize_with = "object")]
        inner: Inner,
        #[serde(default, deserialize_with = "objects")]
        inners: Vec<Inner>,
    }

    #[derive(Debug, Default, PartialEq, Deserialize)]
    struct Inner {
        #[serde(default)]
        a: u32,
    }

    fn parse(json: &str) -> Result<Doc, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn null_and_missing_are_zero_values() {
        let all_null = parse(
            r#"{"text":null,"flag":null,"number":null,"list":null,"maybe":null,"map":null,"inner":null,"inners":null}"#,
        )
        .unwrap();
        let missing = parse("{}").unwrap();
        for d in [all_null, missing] {
            assert_eq!(d.text, "");
            assert!(!d.flag);
            assert_eq!(d.number, 0);
            assert!(d.list.is_empty());
            assert_eq!(d.maybe, None);
            assert!(d.map.is_empty());
            assert_eq!(d.inner, Inner::default());
            assert!(d.inners.is_empty());
        }
    }

    #[test]
    fn null_items_are_empty_strings() {
        let d = parse(r#"{"list":["a",null],"maybe":[null],"map":{"k":null}}"#).unwrap();
        assert_eq!(d.list, ["a", ""]);
        assert_eq!(d.maybe, Some(vec![String::new()]));
        assert_eq!(d.map["k"], "");
        assert_eq!(parse(r#"{"maybe":[]}"#).unwrap().maybe, Some(vec![]));
        let d = parse(r#"{"inner":{"a":1},"inners":[{"a":2},null]}"#).unwrap();
        assert_eq!(d.inner, Inner { a: 1 });
        assert_eq!(d.inners, [Inner { a: 2 }, Inner::default()]);
    }

    #[test]
    fn other_types_are_errors() {
        for bad in [
            r#"{"text":1}"#,
            r#"{"flag":"true"}"#,
            r#"{"number":"1"}"#,
            r#"{"list":"a"}"#,
            r#"{"list":[1]}"#,
            r#"{"maybe":{}}"#,
            r#"{"map":[]}"#,
            r#"{"map":{"k":1}}"#,
            r#"{"inner":[]}"#,
            r#"{"inner":[1]}"#,
            r#"{"inner":"x"}"#,
            r#"{"inners":{}}"#,
            r#"{"inners":[[]]}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
