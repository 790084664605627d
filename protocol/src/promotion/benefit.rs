//! What one promotion gives on what is left of the lines: per-line discounts never larger than
//! the line's remaining value, a free shipping, a gift. Percentages are computed once on the
//! target's total and spread by largest remainder (the rounding rule of [`crate::pricing`]).

use super::engine::Basket;
use super::spec::{Benefit, Limits, Target, Tier};
use crate::ids::Sku;
use crate::money::{Currency, Money};
use crate::pricing::{allocate, round_div};

const FULL_BP: i128 = 10_000;

/// The effect of one application of a promotion's benefit.
#[derive(Debug, Clone, Default)]
pub(super) struct Effect {
    /// (line index, discount) with discount > 0 and at most what was left of the line.
    pub discounts: Vec<(usize, i64)>,
    /// Applications (the repeats of a buy-X-get-Y; 1 otherwise).
    pub times: u32,
    pub free_shipping: bool,
    /// The gift SKU, its quantity and its value at its price.
    pub gift: Option<(Sku, u32, i64)>,
}

impl Effect {
    pub fn amount(&self) -> i64 {
        self.discounts
            .iter()
            .fold(0i64, |sum, (_, d)| sum.saturating_add(*d))
    }

    fn discounts(discounts: Vec<(usize, i64)>) -> Effect {
        Effect {
            discounts,
            times: 1,
            ..Effect::default()
        }
    }
}

/// How the engine prices gifts.
pub(super) type GiftPrice<'f> = &'f dyn Fn(&Sku) -> Option<Money>;

/// The effect of `benefit` on the lines' `remaining` values, or why it gives nothing.
pub(super) fn effect(
    benefit: &Benefit,
    limits: &Limits,
    basket: &Basket<'_>,
    remaining: &[i64],
    gift_price: GiftPrice<'_>,
) -> Result<Effect, String> {
    let on = Lines { basket, remaining };
    match benefit {
        Benefit::PercentOff { target, percent_bp } => {
            on.percent_off(target, *percent_bp).map(Effect::discounts)
        }
        Benefit::PercentOffBasket { percent_bp } => on
            .percent_off(&Target::All, *percent_bp)
            .map(Effect::discounts),
        Benefit::AmountOff { target, amount } => {
            on.amount_off(target, amount.minor).map(Effect::discounts)
        }
        Benefit::AmountOffBasket { amount } => on
            .amount_off(&Target::All, amount.minor)
            .map(Effect::discounts),
        Benefit::AmountOffEach { target, amount } => on
            .amount_off_each(target, amount.minor)
            .map(Effect::discounts),
        Benefit::FixedPrice { target, price } => {
            on.fixed_price(target, *price).map(Effect::discounts)
        }
        Benefit::Tiered { target, tiers } => on.tiered(target, tiers).map(Effect::discounts),
        Benefit::BuyXGetY {
            buy,
            buy_quantity,
            get,
            get_quantity,
            percent_bp,
        } => on
            .buy_x_get_y(
                (buy, *buy_quantity),
                (get, *get_quantity),
                *percent_bp,
                limits.per_order,
            )
            .map(|(discounts, times)| Effect {
                discounts,
                times,
                ..Effect::default()
            }),
        Benefit::FreeShipping => Ok(Effect {
            times: 1,
            free_shipping: true,
            ..Effect::default()
        }),
        Benefit::FreeGift { sku, quantity } => gift(sku, *quantity, basket.currency, gift_price)
            .map(|value| Effect {
                times: 1,
                gift: Some((sku.clone(), *quantity, value)),
                ..Effect::default()
            }),
    }
}

fn gift(
    sku: &Sku,
    quantity: u32,
    currency: Currency,
    gift_price: GiftPrice<'_>,
) -> Result<i64, String> {
    if quantity == 0 {
        return Err("its gift has a quantity of zero".into());
    }
    gift_price(sku)
        .filter(|p| p.currency == currency && p.minor >= 0)
        .and_then(|p| p.minor.checked_mul(i64::from(quantity)))
        .ok_or_else(|| format!("its gift {sku} is not available"))
}

/// The basket's lines with what is left of each.
struct Lines<'b, 'l> {
    basket: &'b Basket<'l>,
    remaining: &'b [i64],
}

impl Lines<'_, '_> {
    /// Indices of the target lines, or why there are none to discount.
    fn targets(&self, target: &Target) -> Result<Vec<usize>, String> {
        let found: Vec<usize> = (0..self.basket.lines.len())
            .filter(|i| target.matches(self.basket.lines[*i].line))
            .collect();
        if found.is_empty() {
            return Err("nothing in the basket it discounts".into());
        }
        if found.iter().all(|i| self.remaining[*i] == 0) {
            return Err("its products are already fully discounted".into());
        }
        Ok(found)
    }

    /// Splits `total` over `lines` in proportion to what is left of them.
    fn spread(&self, total: i64, lines: &[usize]) -> Vec<(usize, i64)> {
        let weights: Vec<i64> = lines.iter().map(|i| self.remaining[*i]).collect();
        lines
            .iter()
            .copied()
            .zip(allocate(total, &weights))
            .filter(|(_, d)| *d > 0)
            .collect()
    }

    fn left(&self, lines: &[usize]) -> i128 {
        lines.iter().map(|i| i128::from(self.remaining[*i])).sum()
    }

    fn percent_off(&self, target: &Target, percent_bp: u32) -> Result<Vec<(usize, i64)>, String> {
        let lines = self.targets(target)?;
        let total = self.left(&lines);
        let discount = percent_of(total, percent_bp);
        if discount == 0 {
            return Err("its discount rounds to nothing".into());
        }
        Ok(self.spread(discount, &lines))
    }

    fn amount_off(&self, target: &Target, amount: i64) -> Result<Vec<(usize, i64)>, String> {
        if amount <= 0 {
            return Err("its amount is not positive".into());
        }
        let lines = self.targets(target)?;
        let discount = i128::from(amount).min(self.left(&lines));
        Ok(self.spread(to_i64(discount), &lines))
    }

    fn amount_off_each(&self, target: &Target, amount: i64) -> Result<Vec<(usize, i64)>, String> {
        if amount <= 0 {
            return Err("its amount is not positive".into());
        }
        let lines = self.targets(target)?;
        Ok(lines
            .into_iter()
            .map(|i| {
                let each = i128::from(amount) * i128::from(self.basket.lines[i].line.quantity);
                (i, to_i64(each.min(i128::from(self.remaining[i]))))
            })
            .filter(|(_, d)| *d > 0)
            .collect())
    }

    fn fixed_price(&self, target: &Target, price: Money) -> Result<Vec<(usize, i64)>, String> {
        let lines = self.targets(target)?;
        let discounts: Vec<(usize, i64)> = lines
            .into_iter()
            .map(|i| {
                let at_price =
                    i128::from(price.minor.max(0)) * i128::from(self.basket.lines[i].line.quantity);
                let left = i128::from(self.remaining[i]);
                (i, to_i64((left - at_price).clamp(0, left)))
            })
            .filter(|(_, d)| *d > 0)
            .collect();
        if discounts.is_empty() {
            return Err(format!("its products already cost no more than {price}"));
        }
        Ok(discounts)
    }

    fn tiered(&self, target: &Target, tiers: &[Tier]) -> Result<Vec<(usize, i64)>, String> {
        let matching: Vec<usize> = (0..self.basket.lines.len())
            .filter(|i| target.matches(self.basket.lines[*i].line))
            .collect();
        let units: u64 = matching
            .iter()
            .map(|i| u64::from(self.basket.lines[*i].line.quantity))
            .sum();
        let shelf: i128 = matching
            .iter()
            .map(|i| i128::from(self.basket.lines[*i].total))
            .sum();
        let reached = |t: &&Tier| {
            t.min_quantity.is_none_or(|q| units >= u64::from(q))
                && t.min_subtotal.is_none_or(|s| shelf >= i128::from(s.minor))
        };
        let best = tiers
            .iter()
            .filter(reached)
            .reduce(|best, t| {
                if t.percent_bp > best.percent_bp {
                    t
                } else {
                    best
                }
            })
            .ok_or_else(|| {
                format!(
                    "no tier reached (units: {units}, subtotal: {})",
                    Money::new(to_i64(shelf), self.basket.currency)
                )
            })?;
        self.percent_off(target, best.percent_bp)
    }

    /// Units of `get` lines, cheapest first by what is left per unit, get `percent_bp` off:
    /// `get_quantity` of them for every `buy_quantity` units of `buy` lines not among them, as
    /// often as that can be done (at most `per_order` times). Returns the discounts and the
    /// number of applications.
    fn buy_x_get_y(
        &self,
        (buy, buy_quantity): (&Target, u32),
        (get, get_quantity): (&Target, u32),
        percent_bp: u32,
        per_order: Option<u32>,
    ) -> Result<(Vec<(usize, i64)>, u32), String> {
        let lines = &self.basket.lines;
        if buy_quantity == 0 || get_quantity == 0 {
            return Err("its quantities are zero".into());
        }
        let quantity = |i: usize| u64::from(lines[i].line.quantity);
        let mut pool: Vec<usize> = (0..lines.len())
            .filter(|i| get.matches(lines[*i].line) && self.remaining[*i] > 0)
            .collect();
        // Cheaper per unit first: a/qa < b/qb ⇔ a·qb < b·qa; ties in line (SKU) order.
        pool.sort_by(|a, b| {
            let left = i128::from(self.remaining[*a]) * i128::from(quantity(*b));
            let right = i128::from(self.remaining[*b]) * i128::from(quantity(*a));
            left.cmp(&right).then(a.cmp(b))
        });
        let is_buy: Vec<bool> = lines.iter().map(|l| buy.matches(l.line)).collect();
        let buy_units: u64 = (0..lines.len()).filter(|i| is_buy[*i]).map(quantity).sum();
        let (x, y) = (u64::from(buy_quantity), u64::from(get_quantity));
        // The cheapest `n·y` pool units, as (line, units taken) in pool order.
        let take = |n: u64| {
            let mut need = n * y;
            let mut taken = Vec::new();
            for &i in &pool {
                if need == 0 {
                    break;
                }
                let k = need.min(quantity(i));
                taken.push((i, k));
                need -= k;
            }
            taken
        };
        let feasible = |n: u64| {
            let used_buys: u64 = take(n)
                .iter()
                .filter(|(i, _)| is_buy[*i])
                .map(|(_, k)| k)
                .sum();
            buy_units - used_buys >= n * x
        };
        let pool_units: u64 = pool.iter().map(|i| quantity(*i)).sum();
        let mut hi = pool_units / y;
        if let Some(limit) = per_order {
            hi = hi.min(u64::from(limit));
        }
        // Feasibility only falls as n grows: the largest feasible n by bisection.
        let mut lo = 0u64;
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if feasible(mid) {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        if lo == 0 {
            return Err(if buy == get {
                format!("needs {} eligible items", x + y)
            } else {
                format!("needs {x} items to buy and {y} more to get")
            });
        }
        let taken = take(lo);
        let values: Vec<(usize, i64)> = taken
            .iter()
            .map(|(i, k)| {
                let left = i128::from(self.remaining[*i]);
                let value = round_div(left * i128::from(*k), i128::from(quantity(*i)));
                (*i, to_i64(value))
            })
            .collect();
        let total: i128 = values.iter().map(|(_, v)| i128::from(*v)).sum();
        let discount = percent_of(total, percent_bp);
        if discount == 0 {
            return Err("its discount rounds to nothing".into());
        }
        let weights: Vec<i64> = values.iter().map(|(_, v)| *v).collect();
        let discounts = values
            .iter()
            .map(|(i, _)| *i)
            .zip(allocate(discount, &weights))
            .filter(|(_, d)| *d > 0)
            .collect();
        Ok((discounts, u32::try_from(lo).unwrap_or(u32::MAX)))
    }
}

/// `percent_bp` of `total`, rounded half away from zero; at most `total`.
fn percent_of(total: i128, percent_bp: u32) -> i64 {
    let bp = i128::from(percent_bp).min(FULL_BP);
    to_i64(round_div(total * bp, FULL_BP))
}

fn to_i64(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}
