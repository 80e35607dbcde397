//! Merging a profile over its base, with the Talos rules: a scalar the user sets
//! (non-empty, non-zero) replaces the base's, mappings merge key by key, lists are
//! concatenated (base items first).
//!
//! The merge works on YAML values, before typing, so "not written" and "written as
//! the default" stay distinguishable.

use serde_yaml::Value;

/// Merges `over` onto `base`, returning the result.
pub fn merge(base: Value, over: Value) -> Value {
    match (base, over) {
        (Value::Mapping(mut base), Value::Mapping(over)) => {
            for (key, value) in over {
                let merged = match base.remove(&key) {
                    Some(existing) => merge(existing, value),
                    None => value,
                };
                base.insert(key, merged);
            }
            Value::Mapping(base)
        }
        (Value::Sequence(mut base), Value::Sequence(over)) => {
            base.extend(over);
            Value::Sequence(base)
        }
        (base, over) if is_unset(&over) => base,
        (_, over) => over,
    }
}

fn is_unset(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Number(n) => n.as_u64() == Some(0) || n.as_i64() == Some(0),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn y(s: &str) -> Value {
        serde_yaml::from_str(s).unwrap()
    }

    #[test]
    fn scalars_override_only_when_set() {
        let m = merge(y("a: 1\nb: x\nc: true"), y("a: 0\nb: y\nc: false"));
        assert_eq!(m, y("a: 1\nb: y\nc: false"));
        assert_eq!(merge(y("b: x"), y("b: ''")), y("b: x"));
    }

    #[test]
    fn maps_merge_and_lists_concatenate() {
        let m = merge(y("o: {k: iso, f: raw}\nl: [1]"), y("o: {f: .xz}\nl: [2]"));
        assert_eq!(m, y("o: {k: iso, f: .xz}\nl: [1, 2]"));
    }
}
