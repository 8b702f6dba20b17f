//! Arithmetic for Countdown answers as Python's `eval` computes it, by our own parser
//! (nothing is handed to a host language). The study's reward evaluated answers with
//! `eval`, so the values follow Python: integer literals (no leading zeros) and float
//! literals (`4.`, `.5`, `1.5`), `+ - * / // **`, unary signs and parentheses; integers
//! exact at any size, `/` Python's correctly rounded true division, `//` a floor, `**`
//! right-associative and tighter than a unary sign on its left; an integer too large for a
//! float is an error where it meets one, a float `**` that overflows is an error while `+`
//! and `*` overflow to infinity. Python's tokenizer decides the rest: a carriage return
//! ends the line (a syntax error) outside parentheses and is a space inside them, form
//! feed and tab are spaces, parentheses nest at most 200 deep, and unary signs and `**`
//! nest at most [`MAX_NESTING`] deep together (Python 3.11's compiler fails just after).
//!
//! Two limits are ours: an integer longer than [`MAX_INT_BITS`] bits is an error (Python
//! would compute `99 ** 99 ** 99` for ever), and a negative base with a fractional
//! exponent, which Python makes a complex number, is NaN (never the target).

use std::fmt;

use num_bigint::{BigInt, BigUint, Sign};
use num_integer::Integer;
use num_traits::{Signed, ToPrimitive, Zero};

/// The longest integer a value may hold.
pub const MAX_INT_BITS: u64 = 1 << 20;
/// The deepest parentheses Python's tokenizer accepts.
pub const MAX_PARENS: usize = 200;
/// How deep unary signs and `**` may nest together (Python 3.11 compiles `-` x 2,991,
/// `1**` x 2,987 and `1**-` x 1,495, and no more: the same rule to within a few levels).
pub const MAX_NESTING: usize = 2_990;

/// A value as Python has it: an integer (exact) or a float (IEEE double).
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Int(BigInt),
    Float(f64),
}

/// Why an expression has no value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExprError {
    Syntax(String),
    DivisionByZero,
    /// A float result out of range, or an integer too large for a float where it meets one.
    Overflow,
    /// An integer beyond [`MAX_INT_BITS`].
    TooLarge,
}

impl fmt::Display for ExprError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExprError::Syntax(s) => write!(f, "syntax: {s}"),
            ExprError::DivisionByZero => write!(f, "division by zero"),
            ExprError::Overflow => write!(f, "a number too large"),
            ExprError::TooLarge => write!(f, "an integer longer than {MAX_INT_BITS} bits"),
        }
    }
}

impl Value {
    fn int(n: BigInt) -> Result<Self, ExprError> {
        if n.bits() > MAX_INT_BITS { Err(ExprError::TooLarge) } else { Ok(Value::Int(n)) }
    }

    /// The value as a float, for display (an integer too large for one is infinite).
    pub fn to_f64(&self) -> f64 {
        match self {
            Value::Int(n) => n.to_f64().unwrap_or(f64::NAN),
            Value::Float(x) => *x,
        }
    }

    /// Python's `abs(value - target) < 1e-5`.
    pub fn hits(&self, target: i64) -> bool {
        match self {
            Value::Int(n) => *n == BigInt::from(target),
            Value::Float(x) => (x - target as f64).abs() < 1e-5,
        }
    }

    /// The value as a float operand: Python's `float(int)`, an error when it overflows.
    fn float(&self) -> Result<f64, ExprError> {
        match self {
            Value::Float(x) => Ok(*x),
            Value::Int(n) => n.to_f64().filter(|x| x.is_finite()).ok_or(ExprError::Overflow),
        }
    }

    fn arith(&self, o: &Self, int: impl Fn(&BigInt, &BigInt) -> BigInt, float: impl Fn(f64, f64) -> f64) -> Result<Self, ExprError> {
        match (self, o) {
            (Value::Int(a), Value::Int(b)) => Value::int(int(a, b)),
            (a, b) => Ok(Value::Float(float(a.float()?, b.float()?))),
        }
    }

    fn add(&self, o: &Self) -> Result<Self, ExprError> {
        self.arith(o, |a, b| a + b, |a, b| a + b)
    }

    fn sub(&self, o: &Self) -> Result<Self, ExprError> {
        self.arith(o, |a, b| a - b, |a, b| a - b)
    }

    fn mul(&self, o: &Self) -> Result<Self, ExprError> {
        if let (Value::Int(a), Value::Int(b)) = (self, o)
            && a.bits() + b.bits() > MAX_INT_BITS + 1
        {
            return Err(ExprError::TooLarge);
        }
        self.arith(o, |a, b| a * b, |a, b| a * b)
    }

    fn neg(&self) -> Self {
        match self {
            Value::Int(n) => Value::Int(-n),
            Value::Float(x) => Value::Float(-x),
        }
    }

    /// `/`: always a float; integers are divided exactly, then rounded once.
    fn div(&self, o: &Self) -> Result<Self, ExprError> {
        match (self, o) {
            (Value::Int(a), Value::Int(b)) => true_divide(a, b).map(Value::Float),
            (a, b) => {
                let (a, b) = (a.float()?, b.float()?);
                if b == 0.0 { Err(ExprError::DivisionByZero) } else { Ok(Value::Float(a / b)) }
            }
        }
    }

    /// `//`: the floor of integers, or Python's float floor division.
    fn floor_div(&self, o: &Self) -> Result<Self, ExprError> {
        match (self, o) {
            (Value::Int(_), Value::Int(b)) if b.is_zero() => Err(ExprError::DivisionByZero),
            (Value::Int(a), Value::Int(b)) => Ok(Value::Int(a.div_floor(b))),
            (a, b) => float_floor_div(a.float()?, b.float()?).map(Value::Float),
        }
    }

    /// `**`: an integer for integer operands and a non-negative exponent, else a float.
    fn pow(&self, o: &Self) -> Result<Self, ExprError> {
        match (self, o) {
            (Value::Int(base), Value::Int(e)) if !e.is_negative() => int_pow(base, e),
            (a, b) => float_pow(a.float()?, b.float()?).map(Value::Float),
        }
    }
}

/// Python's `int / int`: the exact quotient rounded once to a float (both operands below
/// 2^53: the quotient of their floats, which is the same).
fn true_divide(a: &BigInt, b: &BigInt) -> Result<f64, ExprError> {
    if b.is_zero() {
        return Err(ExprError::DivisionByZero);
    }
    let exact = BigInt::from(1u64 << 53);
    if a.abs() <= exact && b.abs() <= exact {
        return Ok(a.to_f64().expect("small") / b.to_f64().expect("small"));
    }
    let negative = (a.sign() == Sign::Minus) != (b.sign() == Sign::Minus);
    let (n, d) = (a.magnitude(), b.magnitude());
    if n.is_zero() {
        return Ok(if negative { -0.0 } else { 0.0 });
    }
    // Scale so that the quotient has 64 or 65 bits, then fold the remainder into a sticky
    // bit far below the 53 kept: the cast to f64 then rounds exactly once, to nearest even.
    let shift = 64 - (n.bits() as i64 - d.bits() as i64);
    let (n, d): (BigUint, BigUint) = if shift >= 0 { (n << shift as u64, d.clone()) } else { (n.clone(), d << (-shift) as u64) };
    let (q, r) = n.div_rem(&d);
    let q = q.to_u128().expect("65 bits at most") | u128::from(!r.is_zero());
    let x = scale_by_power_of_two(q as f64, -shift);
    if x.is_infinite() {
        return Err(ExprError::Overflow);
    }
    Ok(if negative { -x } else { x })
}

/// `x * 2^e` (exact unless the result leaves the normal range).
fn scale_by_power_of_two(mut x: f64, mut e: i64) -> f64 {
    while e != 0 {
        let step = e.clamp(-1000, 1000);
        x *= f64::from_bits(((step + 1023) as u64) << 52);
        e -= step;
    }
    x
}

/// Python's float floor division (CPython's `float_floor_div`, via `fmod`).
fn float_floor_div(a: f64, b: f64) -> Result<f64, ExprError> {
    if b == 0.0 {
        return Err(ExprError::DivisionByZero);
    }
    let m = a % b;
    let mut div = (a - m) / b;
    if m != 0.0 && ((b < 0.0) != (m < 0.0)) {
        div -= 1.0;
    }
    if div == 0.0 {
        return Ok(0.0f64.copysign(a / b));
    }
    let mut floor = div.floor();
    if div - floor > 0.5 {
        floor += 1.0;
    }
    Ok(floor)
}

/// `int ** int` with a non-negative exponent, refused when the result would pass the cap.
fn int_pow(base: &BigInt, e: &BigInt) -> Result<Value, ExprError> {
    let magnitude = base.magnitude();
    if magnitude <= &BigUint::from(1u8) {
        // 0, 1 and -1 stay small whatever the exponent.
        let odd = e.is_odd();
        return Ok(Value::Int(match (base.sign(), e.is_zero(), odd) {
            (_, true, _) => BigInt::from(1),
            (Sign::Minus, _, true) => BigInt::from(-1),
            (Sign::Minus, _, false) => BigInt::from(1),
            _ => base.clone(),
        }));
    }
    let e = e.to_u64().filter(|&e| (magnitude.bits() - 1).saturating_mul(e) <= MAX_INT_BITS).ok_or(ExprError::TooLarge)?;
    Value::int(base.pow(e as u32))
}

/// Python's `float ** float`: `x ** 0` is 1, zero to a negative power is a division by
/// zero, a negative base with a fractional exponent is complex (NaN here), and a finite
/// base and exponent whose power overflows is an error.
fn float_pow(a: f64, b: f64) -> Result<f64, ExprError> {
    if b == 0.0 {
        return Ok(1.0);
    }
    if a == 0.0 && b < 0.0 {
        return Err(ExprError::DivisionByZero);
    }
    if a < 0.0 && b.is_finite() && b.fract() != 0.0 {
        return Ok(f64::NAN);
    }
    let v = a.powf(b);
    if v.is_infinite() && a.is_finite() && b.is_finite() { Err(ExprError::Overflow) } else { Ok(v) }
}

/// Evaluates an expression.
pub fn evaluate(text: &str) -> Result<Value, ExprError> {
    let tokens = tokenize(text)?;
    let mut p = Parser { tokens: &tokens, at: 0, nesting: 0 };
    let v = p.sum()?;
    match p.tokens.get(p.at) {
        None => Ok(v),
        Some(t) => Err(ExprError::Syntax(format!("unexpected {t:?}"))),
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Int(BigInt),
    Float(f64),
    Op(&'static str),
}

/// Python's tokens of an answer: numbers, operators (`**` and `//` taken whole, as Python
/// does), parentheses; spaces, tabs and form feeds between them, a carriage return only
/// inside parentheses.
fn tokenize(text: &str) -> Result<Vec<Token>, ExprError> {
    let s = text.as_bytes();
    let (mut tokens, mut at, mut depth) = (Vec::new(), 0, 0usize);
    while at < s.len() {
        let c = s[at];
        match c {
            b' ' | b'\t' | b'\x0c' => at += 1,
            b'\r' | b'\n' if depth > 0 => at += 1,
            b'\r' | b'\n' => return Err(ExprError::Syntax("a line break outside parentheses".into())),
            b'0'..=b'9' | b'.' => {
                let (token, end) = number(s, at)?;
                tokens.push(token);
                at = end;
            }
            b'*' | b'/' if s.get(at + 1) == Some(&c) => {
                tokens.push(Token::Op(if c == b'*' { "**" } else { "//" }));
                at += 2;
            }
            b'+' | b'-' | b'*' | b'/' | b'(' | b')' => {
                if c == b'(' {
                    depth += 1;
                    if depth > MAX_PARENS {
                        return Err(ExprError::Syntax("too many nested parentheses".into()));
                    }
                } else if c == b')' {
                    depth = depth.checked_sub(1).ok_or_else(|| ExprError::Syntax("unmatched `)`".into()))?;
                }
                const OPS: [&str; 6] = ["+", "-", "*", "/", "(", ")"];
                tokens.push(Token::Op(OPS.into_iter().find(|o| o.as_bytes()[0] == c).expect("listed")));
                at += 1;
            }
            _ => return Err(ExprError::Syntax(format!("unexpected byte {c:#04x} at {at}"))),
        }
    }
    Ok(tokens)
}

/// A number literal at `start`: digits with an optional `.` and digits, or `.` and digits;
/// an integer with leading zeros is refused (not a literal of zeros), as Python does.
fn number(s: &[u8], start: usize) -> Result<(Token, usize), ExprError> {
    let digits_from = |mut i: usize| {
        while i < s.len() && s[i].is_ascii_digit() {
            i += 1;
        }
        i
    };
    let int_end = digits_from(start);
    if s.get(int_end) == Some(&b'.') {
        let end = digits_from(int_end + 1);
        let literal = std::str::from_utf8(&s[start..end]).expect("ascii");
        if literal == "." {
            return Err(ExprError::Syntax("a lone `.`".into()));
        }
        return Ok((Token::Float(literal.parse().map_err(|_| ExprError::Syntax(format!("bad float `{literal}`")))?), end));
    }
    let literal = std::str::from_utf8(&s[start..int_end]).expect("ascii");
    if literal.len() > 1 && literal.starts_with('0') && literal.bytes().any(|d| d != b'0') {
        return Err(ExprError::Syntax(format!("leading zeros in `{literal}`")));
    }
    if literal.len() as u64 > MAX_INT_BITS / 3 {
        return Err(ExprError::TooLarge);
    }
    Ok((Token::Int(literal.parse().expect("digits")), int_end))
}

struct Parser<'a> {
    tokens: &'a [Token],
    at: usize,
    /// Unary signs and `**` open around the operand being read.
    nesting: usize,
}

impl Parser<'_> {
    fn op(&self) -> Option<&'static str> {
        match self.tokens.get(self.at) {
            Some(Token::Op(o)) => Some(o),
            _ => None,
        }
    }

    fn sum(&mut self) -> Result<Value, ExprError> {
        let mut v = self.product()?;
        while let Some(op @ ("+" | "-")) = self.op() {
            self.at += 1;
            let r = self.product()?;
            v = if op == "+" { v.add(&r)? } else { v.sub(&r)? };
        }
        Ok(v)
    }

    fn product(&mut self) -> Result<Value, ExprError> {
        let mut v = self.unary()?;
        while let Some(op @ ("*" | "/" | "//")) = self.op() {
            self.at += 1;
            let r = self.unary()?;
            v = match op {
                "*" => v.mul(&r)?,
                "/" => v.div(&r)?,
                _ => v.floor_div(&r)?,
            };
        }
        Ok(v)
    }

    /// A run of unary signs: whether they negate, and how many there are.
    fn signs(&mut self) -> (bool, usize) {
        let (mut negative, mut count) = (false, 0);
        while let Some(op @ ("+" | "-")) = self.op() {
            self.at += 1;
            count += 1;
            negative ^= op == "-";
        }
        (negative, count)
    }

    /// Opens `levels` of nesting; too deep is Python's syntax error.
    fn open(&mut self, levels: usize) -> Result<(), ExprError> {
        self.nesting += levels;
        if self.nesting > MAX_NESTING { Err(ExprError::Syntax("nested too deep".into())) } else { Ok(()) }
    }

    /// A run of unary signs, then a power.
    fn unary(&mut self) -> Result<Value, ExprError> {
        let outer = self.nesting;
        let (negative, count) = self.signs();
        let v = self.open(count).and_then(|()| self.power());
        self.nesting = outer;
        let v = v?;
        Ok(if negative { v.neg() } else { v })
    }

    /// `atom ** signs atom ** signs atom ...`, read left to right without recursion and
    /// evaluated right to left (`**` is right-associative; each run of signs applies to
    /// everything on its right).
    fn power(&mut self) -> Result<Value, ExprError> {
        let outer = self.nesting;
        let read = self.power_chain();
        self.nesting = outer;
        let (mut atoms, mut negations) = read?;
        let mut v = atoms.pop().expect("one atom at least");
        while let Some(base) = atoms.pop() {
            if negations.pop().expect("one per `**`") {
                v = v.neg();
            }
            v = base.pow(&v)?;
        }
        Ok(v)
    }

    /// The atoms of a power chain and, per `**`, whether its signs negate.
    fn power_chain(&mut self) -> Result<(Vec<Value>, Vec<bool>), ExprError> {
        let mut atoms = vec![self.atom()?];
        let mut negations = Vec::new();
        while self.op() == Some("**") {
            self.at += 1;
            let (negative, count) = self.signs();
            self.open(count + 1)?;
            negations.push(negative);
            atoms.push(self.atom()?);
        }
        Ok((atoms, negations))
    }

    fn atom(&mut self) -> Result<Value, ExprError> {
        let token = self.tokens.get(self.at).cloned();
        self.at += 1;
        match token {
            Some(Token::Int(n)) => Value::int(n),
            Some(Token::Float(x)) => Ok(Value::Float(x)),
            Some(Token::Op("(")) => {
                let v = self.sum()?;
                if self.op() != Some(")") {
                    return Err(ExprError::Syntax("missing `)`".into()));
                }
                self.at += 1;
                Ok(v)
            }
            Some(t) => Err(ExprError::Syntax(format!("unexpected {t:?}"))),
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

    fn int(n: i64) -> Value {
        Value::Int(BigInt::from(n))
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
        assert_eq!(value("+-+5"), -5.0);
        assert_eq!(value("((((7))))"), 7.0);
        assert_eq!(value(" 1+2 "), 3.0);
        assert_eq!(evaluate("7 / 3").unwrap(), Value::Float(7.0 / 3.0), "`/` is a float, as in Python");
        assert_eq!(evaluate("7 * 3").unwrap(), int(21));
        assert_eq!(value("(1 / 3) * 3"), 1.0);
    }

    #[test]
    fn python_operators_and_literals_as_python_evaluates_them() {
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
        assert_eq!(evaluate("10.0 ** 400"), Err(ExprError::Overflow));
        assert_eq!(value(&format!("2.0 * {}.0", "9".repeat(308))), f64::INFINITY, "float `*` overflows to infinity");
        assert_eq!(evaluate("99 ** 99 ** 99"), Err(ExprError::TooLarge));
        assert_eq!(evaluate("05 + 3").map_err(|e| matches!(e, ExprError::Syntax(_))), Err(true), "Python refuses leading zeros");
        assert_eq!(value("00 + 3"), 3.0, "but not a literal of zeros");
        assert_eq!(value("4."), 4.0);
        assert_eq!(value(".5 * 4"), 2.0);
        assert_eq!(value("05.5"), 5.5, "a float may have leading zeros");
        assert_eq!(value("1.5 * 2"), 3.0);
        for bad in ["2 * * 3", "8 / / 2", "4 *** 2", "1..2", "1.2.3", "1 .5", ".", "3 . 4"] {
            assert!(matches!(evaluate(bad), Err(ExprError::Syntax(_))), "{bad}");
        }
    }

    #[test]
    fn integers_are_exact_at_any_size_and_divide_with_one_rounding() {
        assert!(evaluate("3 ** 81 // 9 ** 40").unwrap().hits(3));
        assert_eq!(evaluate("10 ** 400 / 10 ** 399").unwrap(), Value::Float(10.0));
        assert_eq!(evaluate("3 ** 81 / 9 ** 40").unwrap(), Value::Float(3.0));
        assert_eq!(evaluate("10 ** 400 * 1.0"), Err(ExprError::Overflow), "an int too large for a float meets one");
        assert_eq!(evaluate("10 ** 400 / 3"), Err(ExprError::Overflow));
        assert_eq!(evaluate("(2 ** 60 + 1) / 2 ** 60").unwrap(), Value::Float(1.0), "rounded once, to nearest even");
        assert_eq!(evaluate("(2 ** 60 + 2 ** 8) / 2 ** 60").unwrap(), Value::Float(1.0 + 2f64.powi(-52)));
        assert_eq!(evaluate("-(10 ** 20) // 3").unwrap(), Value::Int("-33333333333333333334".parse().unwrap()));
        assert!(evaluate("99 ** 99 - 99 ** 99 + 32").unwrap().hits(32));
    }

    #[test]
    fn the_tokenizer_is_pythons() {
        assert!(matches!(evaluate("3 +\r 4"), Err(ExprError::Syntax(_))), "a line break ends the expression");
        assert_eq!(value("(3 +\r 4)"), 7.0, "inside parentheses it is a space");
        assert_eq!(value("3 +\x0c 4"), 7.0, "form feed is a space");
        assert_eq!(value("3 \t+ 4"), 7.0);
        assert!(matches!(evaluate("3 +\x0b 4"), Err(ExprError::Syntax(_))));
        assert!(matches!(evaluate("3 +\x1c 4"), Err(ExprError::Syntax(_))));
        let nested = |n: usize| format!("{}1{}", "(".repeat(n), ")".repeat(n));
        assert_eq!(value(&nested(200)), 1.0);
        assert!(matches!(evaluate(&nested(201)), Err(ExprError::Syntax(_))));
        assert_eq!(value(&format!("{}1", "-".repeat(2_989))), -1.0, "unary chains are not parentheses");
        assert!(matches!(evaluate(&format!("{}1", "-".repeat(3_000))), Err(ExprError::Syntax(_))));
        assert_eq!(value(&format!("{}1", "1**".repeat(2_987))), 1.0);
        assert!(matches!(evaluate(&format!("{}1", "1**-".repeat(1_496))), Err(ExprError::Syntax(_))));
        assert!(matches!(evaluate(&format!("{}1", "1**".repeat(100_000))), Err(ExprError::Syntax(_))));
    }

    #[test]
    fn bad_expressions_are_errors_not_panics() {
        assert_eq!(evaluate("5 / (3 - 3)"), Err(ExprError::DivisionByZero));
        assert_eq!(evaluate("5.0 / 0"), Err(ExprError::DivisionByZero));
        assert_eq!(evaluate("1 / 0 * 0"), Err(ExprError::DivisionByZero));
        assert_eq!(evaluate(&"9".repeat(400_000)), Err(ExprError::TooLarge));
        for bad in ["", "(", "1 +", "()", "2 (3)", "1 2", "3 )", ")(", &"(".repeat(10_000)] {
            assert!(matches!(evaluate(bad), Err(ExprError::Syntax(_))), "{bad:.40}");
        }
    }
}
