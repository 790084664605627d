//! Stripe's request encoding: `application/x-www-form-urlencoded` with bracketed nested keys
//! (`line_items[0][price_data][currency]=eur`, `metadata[order]=42`, `expand[]=line_items`),
//! decoded into a [`serde_json::Value`] tree whose leaves are all strings. A map whose keys are
//! all array indexes (or `[]`) becomes an array in index order. The accessors read typed values
//! out of the tree and fail with the error Stripe gives for that parameter.

use super::errors::StripeError;
use serde_json::{Map, Value};

/// How deep brackets may nest; Stripe's own parameters need four at most.
const MAX_DEPTH: usize = 8;
/// The largest array index accepted, so `a[99999999]=x` cannot allocate a huge array.
const MAX_INDEX: usize = 1000;

/// Decodes a form body or query string into a tree of strings.
pub(super) fn decode(input: &[u8]) -> Result<Value, StripeError> {
    let mut root = Map::new();
    for (key, value) in url::form_urlencoded::parse(input) {
        let path = split_key(&key)?;
        insert(&mut root, &path, value.into_owned(), &key)?;
    }
    Ok(arrays(Value::Object(root)))
}

/// A key's parts: `a[b][]` → `["a", "b", ""]`.
fn split_key(key: &str) -> Result<Vec<String>, StripeError> {
    let invalid = || StripeError::invalid(format!("Invalid parameter name: {key}"), key);
    let (base, mut rest) = match key.find('[') {
        Some(i) => (&key[..i], &key[i..]),
        None => (key, ""),
    };
    if base.is_empty() {
        return Err(invalid());
    }
    let mut parts = vec![base.to_owned()];
    while !rest.is_empty() {
        let close = rest.find(']').ok_or_else(invalid)?;
        if !rest.starts_with('[') {
            return Err(invalid());
        }
        parts.push(rest[1..close].to_owned());
        rest = &rest[close + 1..];
    }
    if parts.len() > MAX_DEPTH {
        return Err(invalid());
    }
    Ok(parts)
}

fn insert(
    map: &mut Map<String, Value>,
    path: &[String],
    value: String,
    key: &str,
) -> Result<(), StripeError> {
    let Some((first, rest)) = path.split_first() else {
        return Ok(());
    };
    // `[]` appends: give it the next free index of this map.
    let name = if first.is_empty() {
        map.len().to_string()
    } else {
        first.clone()
    };
    if rest.is_empty() {
        map.insert(name, Value::String(value));
        return Ok(());
    }
    let child = map.entry(name).or_insert_with(|| Value::Object(Map::new()));
    match child {
        Value::Object(child) => insert(child, rest, value, key),
        _ => Err(StripeError::invalid(
            format!("Invalid hash or array given for {key}"),
            key,
        )),
    }
}

/// Turns every map whose keys are all indexes into an array, in index order — except
/// `metadata`, whose keys are the caller's own (`metadata[1]=x` stays a map).
fn arrays(value: Value) -> Value {
    let Value::Object(mut map) = value else {
        return value;
    };
    let indexes: Option<Vec<usize>> = map
        .keys()
        .map(|k| k.parse::<usize>().ok().filter(|i| *i <= MAX_INDEX))
        .collect();
    match indexes {
        Some(mut indexes) if !map.is_empty() => {
            indexes.sort_unstable();
            indexes
                .iter()
                .filter_map(|i| map.remove(&i.to_string()))
                .map(arrays)
                .collect()
        }
        _ => map
            .into_iter()
            .map(|(k, v)| {
                let v = if k == "metadata" { v } else { arrays(v) };
                (k, v)
            })
            .collect(),
    }
}

/// Typed reads from a decoded tree; `name` is the parameter's full name for error messages.
pub(super) struct Params<'a> {
    tree: &'a Value,
    prefix: String,
}

impl<'a> Params<'a> {
    pub(super) fn new(tree: &'a Value) -> Params<'a> {
        Params {
            tree,
            prefix: String::new(),
        }
    }

    /// The parameters nested under `key`, e.g. `line_items[0]`.
    pub(super) fn nested(tree: &'a Value, prefix: String) -> Params<'a> {
        Params { tree, prefix }
    }

    pub(super) fn name(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{}[{key}]", self.prefix)
        }
    }

    pub(super) fn raw(&self, key: &str) -> Option<&'a Value> {
        self.tree.get(key)
    }

    /// Fails with `parameter_unknown` on the first top-level key not in `known`.
    pub(super) fn only(&self, known: &[&str]) -> Result<(), StripeError> {
        if let Value::Object(map) = self.tree {
            if let Some(key) = map.keys().find(|k| !known.contains(&k.as_str())) {
                let name = self.name(key);
                return Err(StripeError::invalid(
                    format!("Received unknown parameter: {name}"),
                    &name,
                )
                .with_code("parameter_unknown"));
            }
        }
        Ok(())
    }

    /// A string parameter; an empty string counts as absent (Stripe's way to unset).
    pub(super) fn str(&self, key: &str) -> Result<Option<&'a str>, StripeError> {
        match self.raw(key) {
            None => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(StripeError::invalid(
                format!(
                    "Invalid string: {{...}}; must be a string ({})",
                    self.name(key)
                ),
                &self.name(key),
            )
            .with_code("parameter_invalid_string")),
        }
    }

    pub(super) fn required_str(&self, key: &str) -> Result<&'a str, StripeError> {
        self.str(key)?
            .ok_or_else(|| StripeError::missing(&self.name(key)))
    }

    pub(super) fn int(&self, key: &str) -> Result<Option<i64>, StripeError> {
        let Some(text) = self.str(key)? else {
            return Ok(None);
        };
        text.parse::<i64>().map(Some).map_err(|_| {
            StripeError::invalid(format!("Invalid integer: {text}"), &self.name(key))
                .with_code("parameter_invalid_integer")
        })
    }

    pub(super) fn required_int(&self, key: &str) -> Result<i64, StripeError> {
        self.int(key)?
            .ok_or_else(|| StripeError::missing(&self.name(key)))
    }

    pub(super) fn bool(&self, key: &str) -> Result<Option<bool>, StripeError> {
        match self.str(key)? {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(other) => Err(StripeError::invalid(
                format!("Invalid boolean: {other}"),
                &self.name(key),
            )
            .with_code("parameter_invalid_boolean")),
        }
    }

    /// `metadata[...]`: a map of strings (empty values are dropped, as Stripe unsets them).
    pub(super) fn metadata(&self, key: &str) -> Result<Map<String, Value>, StripeError> {
        match self.raw(key) {
            None => Ok(Map::new()),
            Some(Value::String(s)) if s.is_empty() => Ok(Map::new()),
            Some(Value::Object(map)) => map
                .iter()
                .filter(|(_, v)| v.as_str() != Some(""))
                .map(|(k, v)| match v {
                    Value::String(_) => Ok((k.clone(), v.clone())),
                    _ => Err(StripeError::invalid(
                        format!("Invalid value for {}[{k}]", self.name(key)),
                        &format!("{}[{k}]", self.name(key)),
                    )),
                })
                .collect(),
            Some(_) => Err(StripeError::invalid(
                format!("Invalid hash: {} must be a hash", self.name(key)),
                &self.name(key),
            )
            .with_code("parameter_invalid_hash")),
        }
    }

    /// A list of strings given as `key[]=a&key[]=b` or `key[0]=a` (a single value counts too).
    pub(super) fn strings(&self, key: &str) -> Result<Vec<String>, StripeError> {
        match self.raw(key) {
            None => Ok(Vec::new()),
            Some(Value::String(s)) if s.is_empty() => Ok(Vec::new()),
            Some(Value::String(s)) => Ok(vec![s.clone()]),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_str().map(str::to_owned).ok_or_else(|| {
                        StripeError::invalid(
                            format!("Invalid array: {} must hold strings", self.name(key)),
                            &self.name(key),
                        )
                    })
                })
                .collect(),
            Some(_) => Err(StripeError::invalid(
                format!("Invalid array: {} must be an array", self.name(key)),
                &self.name(key),
            )
            .with_code("parameter_invalid_array")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bracketed_keys_become_a_tree_with_arrays() {
        let cases: &[(&str, Value)] = &[
            ("a=1&b=x%20y", json!({"a": "1", "b": "x y"})),
            ("metadata[order]=42&metadata[k]=v", json!({"metadata": {"order": "42", "k": "v"}})),
            (
                "line_items[1][quantity]=2&line_items[0][price_data][currency]=eur&line_items[0][quantity]=1",
                json!({"line_items": [
                    {"price_data": {"currency": "eur"}, "quantity": "1"},
                    {"quantity": "2"}
                ]}),
            ),
            ("expand[]=a&expand[]=b", json!({"expand": ["a", "b"]})),
            ("expand[0]=a", json!({"expand": ["a"]})),
            ("metadata[1]=x", json!({"metadata": {"1": "x"}})),
            ("", json!({})),
        ];
        for (input, expected) in cases {
            assert_eq!(
                decode(input.as_bytes()).ok().as_ref(),
                Some(expected),
                "{input}"
            );
        }
    }

    #[test]
    fn malformed_keys_are_invalid_requests() {
        for input in ["[a]=1", "a[b=1", "a=1&a[b]=2", "a[b]c=1"] {
            assert!(decode(input.as_bytes()).is_err(), "{input}");
        }
    }

    #[test]
    fn typed_reads_name_the_parameter() {
        let tree = decode(b"amount=12x&ok=true&line_items[0][quantity]=3").unwrap_or_default();
        let params = Params::new(&tree);
        let err = params.int("amount").err().map(|e| e.param.clone());
        assert_eq!(err, Some(Some("amount".to_owned())));
        assert_eq!(params.bool("ok").ok(), Some(Some(true)));
        let item = Params::nested(&tree["line_items"][0], "line_items[0]".to_owned());
        assert_eq!(item.int("quantity").ok(), Some(Some(3)));
        let missing = item.required_int("price").err().map(|e| e.param.clone());
        assert_eq!(missing, Some(Some("line_items[0][price]".to_owned())));
    }
}
