//! An exact depth-first solver (over fractions): repeatedly combine two of the remaining values with
//! `+ - * /` (exact fractions) until one value is left; returns an expression that uses
//! every number once and equals the target.

/// An exact fraction `num / den` with `den > 0`, in lowest terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fraction {
    pub num: i128,
    pub den: i128,
}

fn gcd(mut a: i128, mut b: i128) -> i128 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a.abs()
}

impl Fraction {
    pub fn int(n: i128) -> Self {
        Fraction { num: n, den: 1 }
    }

    fn new(num: i128, den: i128) -> Option<Self> {
        if den == 0 {
            return None;
        }
        let g = gcd(num, den).max(1);
        let sign = if den < 0 { -1 } else { 1 };
        Some(Fraction { num: sign * num / g, den: sign * den / g })
    }

    pub fn checked_add(self, o: Self) -> Option<Self> {
        let num = self.num.checked_mul(o.den).and_then(|a| o.num.checked_mul(self.den).and_then(|b| a.checked_add(b)))?;
        Self::new(num, self.den.checked_mul(o.den)?)
    }

    pub fn checked_sub(self, o: Self) -> Option<Self> {
        self.checked_add(Fraction { num: o.num.checked_neg()?, den: o.den })
    }

    pub fn checked_mul(self, o: Self) -> Option<Self> {
        Self::new(self.num.checked_mul(o.num)?, self.den.checked_mul(o.den)?)
    }

    pub fn checked_div(self, o: Self) -> Option<Self> {
        if o.num == 0 {
            return None;
        }
        Self::new(self.num.checked_mul(o.den)?, self.den.checked_mul(o.num)?)
    }

    pub fn to_f64(self) -> f64 {
        self.num as f64 / self.den as f64
    }
}

#[derive(Clone)]
struct Item {
    value: Fraction,
    text: String,
    compound: bool,
}

fn wrap(i: &Item) -> String {
    if i.compound { format!("({})", i.text) } else { i.text.clone() }
}

/// An expression over `nums` (each once) equal to `target`, if there is one; with
/// `integers_only`, every intermediate value is a whole number (divisions are exact).
pub fn solve(nums: &[i64], target: i64, integers_only: bool) -> Option<String> {
    let items: Vec<Item> = nums.iter().map(|&n| Item { value: Fraction::int(n as i128), text: n.to_string(), compound: false }).collect();
    search(items, Fraction::int(target as i128), integers_only)
}

fn search(items: Vec<Item>, target: Fraction, integers_only: bool) -> Option<String> {
    if items.len() == 1 {
        return (items[0].value == target).then(|| items[0].text.clone());
    }
    for i in 0..items.len() {
        for j in (i + 1)..items.len() {
            let (a, b) = (&items[i], &items[j]);
            let rest: Vec<Item> = items.iter().enumerate().filter(|(k, _)| *k != i && *k != j).map(|(_, x)| x.clone()).collect();
            let candidates = [
                (a.value.checked_add(b.value), format!("{} + {}", wrap(a), wrap(b))),
                (a.value.checked_sub(b.value), format!("{} - {}", wrap(a), wrap(b))),
                (b.value.checked_sub(a.value), format!("{} - {}", wrap(b), wrap(a))),
                (a.value.checked_mul(b.value), format!("{} * {}", wrap(a), wrap(b))),
                (a.value.checked_div(b.value), format!("{} / {}", wrap(a), wrap(b))),
                (b.value.checked_div(a.value), format!("{} / {}", wrap(b), wrap(a))),
            ];
            for (value, text) in candidates {
                let Some(value) = value.filter(|v| !integers_only || v.den == 1) else { continue };
                let mut next = rest.clone();
                next.push(Item { value, text, compound: true });
                if let Some(found) = search(next, target, integers_only) {
                    return Some(found);
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::evaluate;

    #[test]
    fn finds_solutions_that_evaluate_to_the_target() {
        for (nums, target) in [(vec![25, 30, 3, 4], 32), (vec![1, 2, 3], 9), (vec![7, 7, 7, 7], 0), (vec![3, 8, 8, 3], 24)] {
            let s = solve(&nums, target, false).unwrap_or_else(|| panic!("{nums:?} -> {target}"));
            assert!((evaluate(&s).unwrap().to_f64() - target as f64).abs() < 1e-5, "{s}");
        }
        assert_eq!(solve(&[1, 1, 1], 100, false), None);
        // 8 / (3 - 8 / 3) = 24 needs the fraction 1/3 on the way.
        assert!(solve(&[3, 3, 8, 8], 24, false).is_some());
        assert_eq!(solve(&[3, 3, 8, 8], 24, true), None, "no integer-only way");
    }
}
