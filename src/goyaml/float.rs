//! Go's float conversions as go-yaml uses them: `strconv.ParseFloat` for the
//! resolver's decimal floats (`resolve.go`) and `strconv.FormatFloat(f, 'g', -1, 64)`
//! for encoding one (`encode.go` `floatv`, with `.inf`/`.nan`).

/// `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`
pub(super) fn is_yaml_style_float(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    if matches!(b.first(), Some(b'+' | b'-')) {
        i += 1;
    }
    let digits = |i: &mut usize| {
        let st = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - st
    };
    if b.get(i) == Some(&b'.') {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    } else {
        if digits(&mut i) == 0 {
            return false;
        }
        if b.get(i) == Some(&b'.') {
            i += 1;
            digits(&mut i);
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

/// Go `strconv.ParseFloat(s, 64)` for the inputs the resolver hands it: decimal
/// syntax (checked by the caller or starting with `.`); out of range is an error.
/// Go also accepts `inf`/`nan` spellings and hex floats, none of which can reach here
/// except through the `.` path, where they do not parse either.
pub(super) fn go_parse_float(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    let body = s.trim_start_matches(['+', '-']);
    if body.len() + 1 < s.len() || body.is_empty() {
        return None;
    }
    // Decimal syntax only: digits, at most one '.', optional exponent.
    let ok = {
        let mut seen_digit = false;
        let mut i = b.len() - body.len();
        while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
            seen_digit |= b[i].is_ascii_digit();
            i += 1;
        }
        let mantissa = &s[b.len() - body.len()..i];
        let mut ok = seen_digit && mantissa.matches('.').count() <= 1;
        if i < b.len() {
            ok &= matches!(b[i], b'e' | b'E');
            let mut j = i + 1;
            if matches!(b.get(j), Some(b'+' | b'-')) {
                j += 1;
            }
            ok &= j < b.len() && b[j..].iter().all(u8::is_ascii_digit);
        }
        ok
    };
    if !ok {
        return None;
    }
    let f: f64 = s.parse().ok()?;
    f.is_finite().then_some(f)
}

/// Go `strconv.FormatFloat(f, 'g', -1, 64)`, with go-yaml's `.inf`/`.nan` names.
pub(crate) fn format_float(f: f64) -> String {
    if f.is_nan() {
        return ".nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { ".inf" } else { "-.inf" }.into();
    }
    let neg = f.is_sign_negative();
    let sign = if neg { "-" } else { "" };
    if f == 0.0 {
        return format!("{sign}0");
    }
    // Shortest round-trip digits and decimal exponent, from Rust's `{:e}`.
    let e = format!("{:e}", f.abs());
    let (mant, exp) = e.split_once('e').expect("{:e} has an exponent");
    let exp: i32 = exp.parse().expect("{:e} exponent is an integer");
    let digits: String = mant.chars().filter(char::is_ascii_digit).collect();
    let nd = digits.len() as i32;
    // strconv: shortest 'g' uses %e when the exponent is < -4 or >= 6.
    if !(-4..6).contains(&exp) {
        return fmt_e(sign, &digits, exp);
    }
    // %f with max(nd - dp, 0) decimals, dp = exp + 1.
    let dp = exp + 1;
    let mut out = String::from(sign);
    if dp <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-dp) as usize));
        out.push_str(&digits);
    } else if dp >= nd {
        out.push_str(&digits);
        out.extend(std::iter::repeat_n('0', (dp - nd) as usize));
    } else {
        out.push_str(&digits[..dp as usize]);
        out.push('.');
        out.push_str(&digits[dp as usize..]);
    }
    out
}

pub(super) fn fmt_e(sign: &str, digits: &str, exp: i32) -> String {
    let mut out = String::from(sign);
    out.push_str(&digits[..1]);
    if digits.len() > 1 {
        out.push('.');
        out.push_str(&digits[1..]);
    }
    out.push('e');
    out.push(if exp < 0 { '-' } else { '+' });
    out.push_str(&format!("{:02}", exp.abs()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn floats_format_like_strconv() {
        for (f, s) in [
            (1.5, "1.5"),
            (100000.0, "100000"),
            (1e6, "1e+06"),
            (1234567.0, "1.234567e+06"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (-2.5e-10, "-2.5e-10"),
            (0.0, "0"),
        ] {
            assert_eq!(format_float(f), s, "{f}");
        }
    }
}
