//! Selection rules: small expressions over a document's labels, e.g.
//! `has_problem && has_solution` or `backtracking >= 1 && verification + subgoal_setting > 0`.
//!
//! Grammar: `||` / `or`, `&&` / `and`, `!` / `not`, comparisons `== != < <= > >=`, `+ -`,
//! `a ?? b` (`a`, or `b` where `a` is missing), parentheses, whole numbers, `true`, `false`,
//! and the label columns by name. Types are checked when the rule is parsed. A missing
//! label makes what depends on it unknown (three-valued logic: `false && unknown` is false,
//! `true || unknown` is true), and a rule that ends unknown does not select the document;
//! `has_problem ?? true` lets a missing flag pass, as the study's gate did.

use anyhow::{Result, bail};

/// A value while evaluating; `None` is unknown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value {
    Int(Option<i64>),
    Bool(Option<bool>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Type {
    Int,
    Bool,
}

#[derive(Clone, Debug, PartialEq)]
enum Expr {
    Int(i64),
    Bool(bool),
    Var(usize),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Cmp(&'static str, Box<Expr>, Box<Expr>),
    Add(Box<Expr>, Box<Expr>),
    Sub(Box<Expr>, Box<Expr>),
    Otherwise(Box<Expr>, Box<Expr>),
}

/// A parsed, type-checked rule over named variables.
#[derive(Clone, Debug)]
pub struct Rule {
    pub text: String,
    expr: Expr,
    /// The variables it reads, by index into the names it was parsed with.
    pub uses: Vec<usize>,
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Num(i64),
    Ident(String),
    Op(&'static str),
}

fn tokenize(text: &str) -> Result<Vec<Token>> {
    let mut out = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_digit() {
            let start = i;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            let s: String = chars[start..i].iter().collect();
            out.push(Token::Num(s.parse().map_err(|_| anyhow::anyhow!("number `{s}` is too large"))?));
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            out.push(match word.as_str() {
                "and" => Token::Op("&&"),
                "or" => Token::Op("||"),
                "not" => Token::Op("!"),
                _ => Token::Ident(word),
            });
        } else {
            let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
            let op = ["&&", "||", "==", "!=", "<=", ">=", "??"].into_iter().find(|o| *o == two);
            if let Some(op) = op {
                out.push(Token::Op(op));
                i += 2;
            } else {
                let op = ["!", "<", ">", "+", "-", "(", ")"].into_iter().find(|o| o.starts_with(c));
                match op {
                    Some(op) => out.push(Token::Op(op)),
                    None => bail!("unexpected `{c}`"),
                }
                i += 1;
            }
        }
    }
    Ok(out)
}

struct Parser<'a> {
    tokens: Vec<Token>,
    pos: usize,
    names: &'a [&'a str],
    uses: Vec<usize>,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn eat(&mut self, op: &str) -> bool {
        if self.peek() == Some(&Token::Op(op_str(op))) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn or(&mut self) -> Result<Expr> {
        let mut left = self.and()?;
        while self.eat("||") {
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr> {
        let mut left = self.not()?;
        while self.eat("&&") {
            left = Expr::And(Box::new(left), Box::new(self.not()?));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Expr> {
        if self.eat("!") {
            return Ok(Expr::Not(Box::new(self.not()?)));
        }
        self.cmp()
    }

    fn cmp(&mut self) -> Result<Expr> {
        let left = self.sum()?;
        for op in ["==", "!=", "<=", ">=", "<", ">"] {
            if self.eat(op) {
                return Ok(Expr::Cmp(op_str(op), Box::new(left), Box::new(self.sum()?)));
            }
        }
        Ok(left)
    }

    fn sum(&mut self) -> Result<Expr> {
        let mut left = self.otherwise()?;
        loop {
            if self.eat("+") {
                left = Expr::Add(Box::new(left), Box::new(self.otherwise()?));
            } else if self.eat("-") {
                left = Expr::Sub(Box::new(left), Box::new(self.otherwise()?));
            } else {
                return Ok(left);
            }
        }
    }

    fn otherwise(&mut self) -> Result<Expr> {
        let mut left = self.atom()?;
        while self.eat("??") {
            left = Expr::Otherwise(Box::new(left), Box::new(self.atom()?));
        }
        Ok(left)
    }

    fn atom(&mut self) -> Result<Expr> {
        let token = self.peek().cloned();
        self.pos += 1;
        match token {
            Some(Token::Num(n)) => Ok(Expr::Int(n)),
            Some(Token::Ident(w)) if w == "true" => Ok(Expr::Bool(true)),
            Some(Token::Ident(w)) if w == "false" => Ok(Expr::Bool(false)),
            Some(Token::Ident(w)) => match self.names.iter().position(|n| *n == w) {
                Some(i) => {
                    if !self.uses.contains(&i) {
                        self.uses.push(i);
                    }
                    Ok(Expr::Var(i))
                }
                None => bail!("unknown name `{w}`; known: {}", self.names.join(", ")),
            },
            Some(Token::Op("(")) => {
                let e = self.or()?;
                if !self.eat(")") {
                    bail!("missing `)`");
                }
                Ok(e)
            }
            Some(Token::Op(op)) => bail!("unexpected `{op}`"),
            None => bail!("the rule ends too early"),
        }
    }
}

/// The static spelling of a known operator.
fn op_str(op: &str) -> &'static str {
    ["&&", "||", "==", "!=", "<=", ">=", "??", "!", "<", ">", "+", "-", "(", ")"].into_iter().find(|o| *o == op).expect("known operator")
}

fn type_of(e: &Expr, types: &[Type]) -> Result<Type> {
    let want = |e: &Expr, t: Type, what: &str| -> Result<()> {
        let got = type_of(e, types)?;
        if got != t {
            bail!("{what} needs {} operands", if t == Type::Int { "number" } else { "true/false" });
        }
        Ok(())
    };
    Ok(match e {
        Expr::Int(_) => Type::Int,
        Expr::Bool(_) => Type::Bool,
        Expr::Var(i) => types[*i],
        Expr::Not(a) => {
            want(a, Type::Bool, "`!`")?;
            Type::Bool
        }
        Expr::And(a, b) | Expr::Or(a, b) => {
            want(a, Type::Bool, "`&&`/`||`")?;
            want(b, Type::Bool, "`&&`/`||`")?;
            Type::Bool
        }
        Expr::Add(a, b) | Expr::Sub(a, b) => {
            want(a, Type::Int, "`+`/`-`")?;
            want(b, Type::Int, "`+`/`-`")?;
            Type::Int
        }
        Expr::Otherwise(a, b) => {
            let ta = type_of(a, types)?;
            want(b, ta, "`??`")?;
            ta
        }
        Expr::Cmp(op, a, b) => {
            let (ta, tb) = (type_of(a, types)?, type_of(b, types)?);
            if ta != tb || (ta == Type::Bool && !matches!(*op, "==" | "!=")) {
                bail!("`{op}` cannot compare these operands");
            }
            Type::Bool
        }
    })
}

impl Rule {
    /// Parses and checks a rule that must be true/false, over variables `names` of `types`.
    pub fn parse(text: &str, names: &[&str], types: &[Type]) -> Result<Self> {
        let mut p = Parser { tokens: tokenize(text)?, pos: 0, names, uses: Vec::new() };
        let expr = p.or()?;
        if p.pos < p.tokens.len() {
            bail!("unexpected {:?} after the end of the rule", p.tokens[p.pos]);
        }
        if type_of(&expr, types)? != Type::Bool {
            bail!("the rule must be true or false, not a number (did you mean `{text} > 0`?)");
        }
        Ok(Rule { text: text.to_string(), expr, uses: p.uses })
    }

    /// Evaluates with the variables' values; `None` when unknown.
    pub fn eval(&self, vars: &[Value]) -> Option<bool> {
        match eval(&self.expr, vars) {
            Value::Bool(b) => b,
            Value::Int(_) => None,
        }
    }
}

fn eval(e: &Expr, vars: &[Value]) -> Value {
    let int = |e: &Expr| match eval(e, vars) {
        Value::Int(v) => v,
        Value::Bool(_) => None,
    };
    let boolean = |e: &Expr| match eval(e, vars) {
        Value::Bool(v) => v,
        Value::Int(_) => None,
    };
    match e {
        Expr::Int(n) => Value::Int(Some(*n)),
        Expr::Bool(b) => Value::Bool(Some(*b)),
        Expr::Var(i) => vars[*i],
        Expr::Not(a) => Value::Bool(boolean(a).map(|b| !b)),
        Expr::And(a, b) => Value::Bool(match (boolean(a), boolean(b)) {
            (Some(false), _) | (_, Some(false)) => Some(false),
            (Some(true), Some(true)) => Some(true),
            _ => None,
        }),
        Expr::Or(a, b) => Value::Bool(match (boolean(a), boolean(b)) {
            (Some(true), _) | (_, Some(true)) => Some(true),
            (Some(false), Some(false)) => Some(false),
            _ => None,
        }),
        Expr::Otherwise(a, b) => match eval(a, vars) {
            Value::Int(None) | Value::Bool(None) => eval(b, vars),
            known => known,
        },
        Expr::Add(a, b) => Value::Int(int(a).zip(int(b)).map(|(x, y)| x.saturating_add(y))),
        Expr::Sub(a, b) => Value::Int(int(a).zip(int(b)).map(|(x, y)| x.saturating_sub(y))),
        Expr::Cmp(op, a, b) => {
            let ord = match (eval(a, vars), eval(b, vars)) {
                (Value::Int(Some(x)), Value::Int(Some(y))) => Some(x.cmp(&y)),
                (Value::Bool(Some(x)), Value::Bool(Some(y))) => Some(x.cmp(&y)),
                _ => None,
            };
            Value::Bool(ord.map(|o| match *op {
                "==" => o.is_eq(),
                "!=" => o.is_ne(),
                "<" => o.is_lt(),
                "<=" => o.is_le(),
                ">" => o.is_gt(),
                _ => o.is_ge(),
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn values(pairs: &[(&str, Value)], names: &[&str]) -> Vec<Value> {
        let map: HashMap<&str, Value> = pairs.iter().copied().collect();
        names.iter().map(|n| map[n]).collect()
    }

    const NAMES: [&str; 3] = ["backtracking", "verification", "has_problem"];
    const TYPES: [Type; 3] = [Type::Int, Type::Int, Type::Bool];

    fn rule(t: &str) -> Result<Rule> {
        Rule::parse(t, &NAMES, &TYPES)
    }

    fn v(b: Option<i64>, ver: Option<i64>, p: Option<bool>) -> Vec<Value> {
        values(&[("backtracking", Value::Int(b)), ("verification", Value::Int(ver)), ("has_problem", Value::Bool(p))], &NAMES)
    }

    #[test]
    fn a_missing_value_can_be_given_a_default() {
        let r = rule("(has_problem ?? true) && backtracking ?? 0 >= 1").unwrap();
        assert_eq!(r.eval(&v(Some(1), None, None)), Some(true), "a missing flag passes");
        assert_eq!(r.eval(&v(Some(1), None, Some(false))), Some(false), "a \"no\" does not");
        assert_eq!(r.eval(&v(None, None, Some(true))), Some(false), "a missing count is 0 here");
        assert!(rule("has_problem ?? 1").is_err(), "both sides of `??` have one type");
    }

    #[test]
    fn evaluates_with_precedence() {
        let r = rule("has_problem && backtracking + verification >= 2 || backtracking == 9").unwrap();
        assert_eq!(r.eval(&v(Some(1), Some(1), Some(true))), Some(true));
        assert_eq!(r.eval(&v(Some(1), Some(0), Some(true))), Some(false));
        assert_eq!(r.eval(&v(Some(9), Some(0), Some(false))), Some(true));
        let words = rule("not (backtracking > 0) and has_problem == true").unwrap();
        assert_eq!(words.eval(&v(Some(0), None, Some(true))), Some(true));
        assert_eq!(words.uses, vec![0, 2]);
    }

    #[test]
    fn unknown_is_neither_true_nor_false() {
        let r = rule("backtracking == 0 && verification == 0").unwrap();
        assert_eq!(r.eval(&v(Some(0), None, None)), None);
        assert_eq!(r.eval(&v(Some(1), None, None)), Some(false), "false && unknown is false");
        assert_eq!(rule("backtracking >= 1 || verification >= 1").unwrap().eval(&v(Some(2), None, None)), Some(true));
    }

    #[test]
    fn bad_rules_are_explained() {
        assert!(rule("backtraking >= 1").unwrap_err().to_string().contains("unknown name `backtraking`"));
        assert!(rule("backtracking").unwrap_err().to_string().contains("> 0"));
        assert!(rule("has_problem + 1 > 0").unwrap_err().to_string().contains("number operands"));
        assert!(rule("(backtracking > 1").unwrap_err().to_string().contains("missing `)`"));
        assert!(rule("backtracking > 1 1").unwrap_err().to_string().contains("after the end"));
        assert!(rule("backtracking $ 1").unwrap_err().to_string().contains("unexpected `$`"));
        assert!(rule("has_problem < true").is_err());
    }
}
