//! Arithmetic for Countdown answers, evaluated by our own parser (nothing is handed to a
//! host language): integers, `+ - * /`, unary signs, parentheses and spaces. The study's
//! reference evaluated answers as Python expressions, so the values follow Python's rules:
//! integers stay exact, `/` gives a float, `//` floors (with Python's float algorithm),
//! `**` is right-associative and binds tighter than a unary sign on its left, and integer
//! literals with leading zeros are refused. Division by zero and overflow (beyond i128)
//! are errors, never panics.

use std::fmt;

/// A value as Python has it: an integer (exact) or a float (IEEE double).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value {
    Int(i128),
    Float(f64),
}

impl Value {
    pub fn to_f64(self) -> f64 {
        match self {
            Value::Int(n) => n as f64,
            Value::Float(x) => x,
        }
    }

    fn arith(self, o: Self, int: impl Fn(i128, i128) -> Option<i128>, float: impl Fn(f64, f64) -> f64) -> Result<Self, ExprError> {
        match (self, o) {
            (Value::Int(a), Value::Int(b)) => int(a, b).map(Value::Int).ok_or(ExprError::Overflow),
            (a, b) => Ok(Value::Float(float(a.to_f64(), b.to_f64()))),
        }
    }

    fn add(self, o: Self) -> Result<Self, ExprError> {
        self.arith(o, i128::checked_add, |a, b| a + b)
    }

    fn sub(self, o: Self) -> Result<Self, ExprError> {
        self.arith(o, i128::checked_sub, |a, b| a - b)
    }

    fn mul(self, o: Self) -> Result<Self, ExprError> {
        self.arith(o, i128::checked_mul, |a, b| a * b)
    }

    /// `/` is always a float in Python (for integers below 2^53, `a as f64 / b as f64` is
    /// Python's correctly rounded quotient).
    fn div(self, o: Self) -> Result<Self, ExprError> {
        if o.to_f64() == 0.0 {
            return Err(ExprError::DivisionByZero);
        }
        Ok(Value::Float(self.to_f64() / o.to_f64()))
    }

    /// `//`: floor of integers, or Python's float floor division (via `fmod`).
    fn floor_div(self, o: Self) -> Result<Self, ExprError> {
        if o.to_f64() == 0.0 {
            return Err(ExprError::DivisionByZero);
        }
        match (self, o) {
            (Value::Int(a), Value::Int(b)) => {
                let q = a.checked_div(b).ok_or(ExprError::Overflow)?;
                Ok(Value::Int(if a % b != 0 && ((a < 0) != (b < 0)) { q - 1 } else { q }))
            }
            (a, b) => {
                let (a, b) = (a.to_f64(), b.to_f64());
                let mut m = a % b;
                let mut div = (a - m) / b;
                if m != 0.0 && ((b < 0.0) != (m < 0.0)) {
                    m += b;
                    div -= 1.0;
                }
                let _ = m;
                let mut floor = div.floor();
                if div - floor > 0.5 {
                    floor += 1.0;
                }
                Ok(Value::Float(if div == 0.0 { 0.0f64.copysign(a / b) } else { floor }))
            }
        }
    }

    /// `**`: an integer for integer bases and non-negative integer exponents, else a float;
    /// a negative base with a fractional exponent (a complex number in Python) is NaN.
    fn pow(self, o: Self) -> Result<Self, ExprError> {
        match (self, o) {
            (Value::Int(base), Value::Int(e)) if e >= 0 => {
                let e = u32::try_from(e).map_err(|_| ExprError::Overflow)?;
                base.checked_pow(e).map(Value::Int).ok_or(ExprError::Overflow)
            }
            (a, b) => {
                let (a, b) = (a.to_f64(), b.to_f64());
                if a == 0.0 && b < 0.0 {
                    return Err(ExprError::DivisionByZero);
                }
                let v = a.powf(b);
                if v.is_infinite() { Err(ExprError::Overflow) } else { Ok(Value::Float(v)) }
            }
        }
    }
}

/// Why an expression has no value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExprError {
    Syntax(String),
    DivisionByZero,
    Overflow,
}

impl fmt::Display for ExprError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExprError::Syntax(s) => write!(f, "syntax: {s}"),
            ExprError::DivisionByZero => write!(f, "division by zero"),
            ExprError::Overflow => write!(f, "a number too large"),
        }
    }
}

/// Evaluates an expression.
pub fn evaluate(text: &str) -> Result<Value, ExprError> {
    let mut p = Parser { s: text.as_bytes(), at: 0, depth: 0 };
    let v = p.sum()?;
    p.spaces();
    if p.at != p.s.len() {
        return Err(ExprError::Syntax(format!("unexpected `{}` at {}", p.s[p.at] as char, p.at)));
    }
    Ok(v)
}

struct Parser<'a> {
    s: &'a [u8],
    at: usize,
    depth: usize,
}

impl Parser<'_> {
    fn spaces(&mut self) {
        while self.at < self.s.len() && self.s[self.at].is_ascii_whitespace() {
            self.at += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.spaces();
        self.s.get(self.at).copied()
    }

    /// Whether the two bytes at the cursor (after spaces) are `op` twice (`**`, `//`).
    fn doubled(&mut self, op: u8) -> bool {
        self.peek() == Some(op) && self.s.get(self.at + 1) == Some(&op)
    }

    fn sum(&mut self) -> Result<Value, ExprError> {
        let mut v = self.product()?;
        while let Some(op @ (b'+' | b'-')) = self.peek() {
            self.at += 1;
            let r = self.product()?;
            v = if op == b'+' { v.add(r)? } else { v.sub(r)? };
        }
        Ok(v)
    }

    fn product(&mut self) -> Result<Value, ExprError> {
        let mut v = self.unary()?;
        loop {
            if self.doubled(b'/') {
                self.at += 2;
                v = v.floor_div(self.unary()?)?;
            } else if self.peek() == Some(b'*') && !self.doubled(b'*') {
                self.at += 1;
                v = v.mul(self.unary()?)?;
            } else if self.peek() == Some(b'/') {
                self.at += 1;
                v = v.div(self.unary()?)?;
            } else {
                return Ok(v);
            }
        }
    }

    fn unary(&mut self) -> Result<Value, ExprError> {
        match self.peek() {
            Some(b'-') => {
                self.at += 1;
                self.nested(|p| p.unary()).and_then(|v| Value::Int(0).sub(v))
            }
            Some(b'+') => {
                self.at += 1;
                self.nested(|p| p.unary())
            }
            _ => self.power(),
        }
    }

    /// `atom ** unary` (right-associative through `unary`).
    fn power(&mut self) -> Result<Value, ExprError> {
        let base = self.atom()?;
        if self.doubled(b'*') {
            self.at += 2;
            let exponent = self.nested(|p| p.unary())?;
            return base.pow(exponent);
        }
        Ok(base)
    }

    /// Bounds the recursion (`((((...` or `----...` cannot overflow the stack).
    fn nested(&mut self, f: impl FnOnce(&mut Self) -> Result<Value, ExprError>) -> Result<Value, ExprError> {
        self.depth += 1;
        if self.depth > 200 {
            return Err(ExprError::Syntax("nested too deep".into()));
        }
        let v = f(self);
        self.depth -= 1;
        v
    }

    fn atom(&mut self) -> Result<Value, ExprError> {
        match self.peek() {
            Some(b'(') => {
                self.at += 1;
                let v = self.nested(|p| p.sum())?;
                if self.peek() != Some(b')') {
                    return Err(ExprError::Syntax(format!("missing `)` at {}", self.at)));
                }
                self.at += 1;
                Ok(v)
            }
            Some(c) if c.is_ascii_digit() => {
                let start = self.at;
                while self.at < self.s.len() && self.s[self.at].is_ascii_digit() {
                    self.at += 1;
                }
                let digits = std::str::from_utf8(&self.s[start..self.at]).expect("ascii digits");
                if digits.len() > 1 && digits.starts_with('0') && digits.bytes().any(|d| d != b'0') {
                    return Err(ExprError::Syntax(format!("leading zeros in `{digits}`")));
                }
                digits.parse::<i128>().map(Value::Int).map_err(|_| ExprError::Overflow)
            }
            Some(c) => Err(ExprError::Syntax(format!("unexpected `{}` at {}", c as char, self.at))),
            None => Err(ExprError::Syntax("unexpected end".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(s: &str) -> f64 {
        evaluate(s).unwrap().to_f64()
    }

    #[test]
    fn precedence_parentheses_and_unary_minus() {
        assert_eq!(value("(30 - 25 + 3) * 4"), 32.0);
        assert_eq!(value("2 + 3 * 4"), 14.0);
        assert_eq!(value("(2 + 3) * 4"), 20.0);
        assert_eq!(value("10 - 4 - 3"), 3.0, "left associative");
        assert_eq!(value("48 / 4 / 2"), 6.0);
        assert_eq!(value("-3 + 10"), 7.0);
        assert_eq!(value("2 * -3"), -6.0);
        assert_eq!(value("--5"), 5.0);
        assert_eq!(value("((((7))))"), 7.0);
        assert_eq!(value(" 1+2 "), 3.0);
        assert_eq!(evaluate("7 / 3").unwrap(), Value::Float(7.0 / 3.0), "`/` is a float, as in Python");
        assert_eq!(evaluate("7 * 3").unwrap(), Value::Int(21));
        assert_eq!(value("(1 / 3) * 3"), 1.0);
    }

    #[test]
    fn python_operators_as_python_evaluates_them() {
        assert_eq!(value("2 ** 3 * 4"), 32.0);
        assert_eq!(value("2 ** 3 ** 2"), 512.0, "right associative");
        assert_eq!(value("-2 ** 2"), -4.0, "power binds tighter than a unary minus on its left");
        assert_eq!(value("2 ** -1"), 0.5);
        assert_eq!(value("0 ** 0"), 1.0);
        assert_eq!(value("4 ** (1 / 2)"), 2.0);
        assert!(value("(0 - 8) ** (1 / 3)").is_nan(), "Python makes a complex number: never the target");
        assert_eq!(value("7 // 2"), 3.0);
        assert_eq!(value("-7 // 2"), -4.0, "floor, not truncation");
        assert_eq!(value("(7 / 2) // 1 * 4"), 12.0);
        assert_eq!(value("30 // (80 / 56)"), 20.0, "Python's float floor division: 30 / 1.4285714285714286 is just under 21");
        assert_eq!(evaluate("0 ** -1"), Err(ExprError::DivisionByZero));
        assert_eq!(evaluate("5 // 0"), Err(ExprError::DivisionByZero));
        assert_eq!(evaluate("99 ** 99 ** 99"), Err(ExprError::Overflow));
        assert_eq!(evaluate("05 + 3").map_err(|e| matches!(e, ExprError::Syntax(_))), Err(true), "Python refuses leading zeros");
        assert_eq!(value("00 + 3"), 3.0, "but not a literal of zeros");
        assert!(matches!(evaluate("2 * * 3"), Err(ExprError::Syntax(_))));
        assert!(matches!(evaluate("8 / / 2"), Err(ExprError::Syntax(_))));
    }

    #[test]
    fn bad_expressions_are_errors_not_panics() {
        assert_eq!(evaluate("5 / (3 - 3)"), Err(ExprError::DivisionByZero));
        assert_eq!(evaluate("999999999999999999999999999999999999999999"), Err(ExprError::Overflow));
        assert_eq!(evaluate("1 / 0 * 0"), Err(ExprError::DivisionByZero));
        assert_eq!(evaluate("99999999999999999999 * 99999999999999999999 * 99999999999999999999"), Err(ExprError::Overflow));
        for bad in ["", "(", "1 +", "()", "2 (3)", "1 2", "3 )", "4 *** 2", "1.5 + 2", &"(".repeat(10_000), &"-".repeat(10_000)] {
            assert!(matches!(evaluate(bad), Err(ExprError::Syntax(_))), "{bad:.40}");
        }
    }
}
