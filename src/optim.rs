//! The optimisers a run may train with, and their update rules as the host
//! step applies them: plain SGD (the tutorial's), SGD with momentum and
//! Adam, each written as Burn's optimiser computes it, so that the host
//! engine and Burn's engine take the same step (the tests hold them to it).

use serde::{Deserialize, Serialize};

/// How the gradient of each step changes the weights. Plain SGD is the
/// tutorial's; the others are Keras's `SGD(momentum=0.9)` and `Adam()` with
/// Keras's constants, for comparing them (see README, train).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Optimizer {
    /// `w -= lr·g`: the tutorial's, and the only one without state.
    #[default]
    Sgd,
    /// `v = μ·v + g; w -= lr·v` with μ = [`Optimizer::MOMENTUM`]: Keras's
    /// `v = μ·v - lr·g; w += v` as Burn and PyTorch write it (the same
    /// steps at a constant learning rate).
    Momentum,
    /// Adam with Keras's β₁, β₂ and ε ([`Optimizer::ADAM`]), ε added to
    /// the bias-corrected √v̂ as Burn and PyTorch add it (Keras adds it to
    /// √v; at ε = 1e-7 the two differ only where v is near zero).
    Adam,
}

/// Adam's constants.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct AdamConstants {
    pub beta_1: f32,
    pub beta_2: f32,
    pub epsilon: f32,
}

impl Optimizer {
    pub const NAMES: [&str; 3] = ["sgd", "momentum", "adam"];
    /// The momentum of [`Optimizer::Momentum`]: the value Keras's examples use.
    pub const MOMENTUM: f32 = 0.9;
    /// Keras's defaults for `Adam()`.
    pub(crate) const ADAM: AdamConstants = AdamConstants {
        beta_1: 0.9,
        beta_2: 0.999,
        epsilon: 1e-7,
    };

    pub fn name(self) -> &'static str {
        match self {
            Optimizer::Sgd => "sgd",
            Optimizer::Momentum => "momentum",
            Optimizer::Adam => "adam",
        }
    }

    /// The optimiser of that name.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "sgd" => Some(Optimizer::Sgd),
            "momentum" => Some(Optimizer::Momentum),
            "adam" => Some(Optimizer::Adam),
            _ => None,
        }
    }

    /// The learning rate a run takes when none is given: the tutorial's
    /// 0.01 for SGD (with or without momentum), Keras's 0.001 for Adam.
    pub const fn default_learning_rate(self) -> f64 {
        match self {
            Optimizer::Sgd | Optimizer::Momentum => 0.01,
            Optimizer::Adam => 0.001,
        }
    }

    /// Whether it keeps state from step to step. A checkpoint holds the
    /// weights only, so a resumed run starts that state afresh.
    pub fn has_state(self) -> bool {
        self != Optimizer::Sgd
    }

    /// The setting as the metadata's differences and the listings say it.
    pub fn describe(self) -> String {
        match self {
            Optimizer::Sgd => "sgd".into(),
            Optimizer::Momentum => format!("momentum {}", Self::MOMENTUM),
            Optimizer::Adam => "adam".into(),
        }
    }
}

/// An optimiser's update applied on the host to parameters held as flat
/// slices, numbered by the caller; it keeps each one's state.
pub(crate) struct HostUpdate {
    optimizer: Optimizer,
    learning_rate: f32,
    /// Steps taken, counting the one under way (Adam's bias correction).
    time: i32,
    /// Per parameter: the velocity (momentum) or the first moment (Adam).
    first: Vec<Vec<f32>>,
    /// Per parameter: Adam's second moment.
    second: Vec<Vec<f32>>,
}

impl HostUpdate {
    pub fn new(optimizer: Optimizer, learning_rate: f64, parameters: usize) -> Self {
        Self {
            optimizer,
            learning_rate: learning_rate as f32,
            time: 0,
            first: vec![Vec::new(); parameters],
            second: vec![Vec::new(); parameters],
        }
    }

    /// Plain SGD, whose update the host step may fold into a product.
    pub fn is_plain_sgd(&self) -> bool {
        self.optimizer == Optimizer::Sgd
    }

    pub fn learning_rate(&self) -> f32 {
        self.learning_rate
    }

    /// Starts a step: every parameter is then updated once.
    pub fn begin_step(&mut self) {
        self.time += 1;
    }

    /// Updates parameter `slot`'s values `w` by its gradient `g`.
    pub fn apply(&mut self, slot: usize, w: &mut [f32], g: &[f32]) {
        assert_eq!(w.len(), g.len(), "a gradient per value");
        let lr = self.learning_rate;
        match self.optimizer {
            Optimizer::Sgd => {
                for (w, g) in w.iter_mut().zip(g) {
                    *w -= lr * g;
                }
            }
            Optimizer::Momentum => {
                let velocity = &mut self.first[slot];
                if velocity.is_empty() {
                    // Burn's first step: the velocity is the gradient.
                    velocity.extend_from_slice(g);
                } else {
                    for (v, g) in velocity.iter_mut().zip(g) {
                        *v = g + *v * Optimizer::MOMENTUM;
                    }
                }
                for (w, v) in w.iter_mut().zip(velocity.iter()) {
                    *w -= lr * v;
                }
            }
            Optimizer::Adam => {
                let AdamConstants {
                    beta_1,
                    beta_2,
                    epsilon,
                } = Optimizer::ADAM;
                let (m, v) = (&mut self.first[slot], &mut self.second[slot]);
                if m.is_empty() {
                    m.resize(g.len(), 0.0);
                    v.resize(g.len(), 0.0);
                }
                let correction_2 = (1.0 - beta_2.powi(self.time)).sqrt();
                let factor = correction_2 / (1.0 - beta_1.powi(self.time));
                let eps = epsilon * correction_2;
                for (((w, g), m), v) in w.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                    *m = *m * beta_1 + g * (1.0 - beta_1);
                    *v = *v * beta_2 + g * g * (1.0 - beta_2);
                    *w -= lr * (*m * factor / (v.sqrt() + eps));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One value through three steps of each rule, against the formulas
    /// worked by hand.
    #[test]
    fn each_rule_follows_its_formula() {
        let steps = |optimizer, lr| {
            let mut update = HostUpdate::new(optimizer, lr, 1);
            let mut w = [1.0f32];
            let mut seen = Vec::new();
            for g in [0.5f32, -0.25, 1.0] {
                update.begin_step();
                update.apply(0, &mut w, &[g]);
                seen.push(w[0]);
            }
            seen
        };
        let close = |a: &[f32], b: &[f64]| {
            for (a, b) in a.iter().zip(b) {
                assert!((*a as f64 - b).abs() < 1e-6, "{a} against {b}");
            }
        };
        close(&steps(Optimizer::Sgd, 0.1), &[0.95, 0.975, 0.875]);
        // v: 0.5, 0.2, 1.18.
        close(&steps(Optimizer::Momentum, 0.1), &[0.95, 0.93, 0.812]);
        // Adam's first step moves by lr·sign(g) (up to ε).
        let adam = steps(Optimizer::Adam, 0.01);
        assert!((adam[0] as f64 - 0.99).abs() < 1e-6, "{adam:?}");
        let (b1, b2) = (0.9f64, 0.999f64);
        let (mut m, mut v, mut w) = (0.0f64, 0.0f64, 1.0f64);
        let mut expected = Vec::new();
        for (t, g) in [0.5f64, -0.25, 1.0].into_iter().enumerate() {
            let t = t as i32 + 1;
            m = b1 * m + (1.0 - b1) * g;
            v = b2 * v + (1.0 - b2) * g * g;
            let (m_hat, v_hat) = (m / (1.0 - b1.powi(t)), v / (1.0 - b2.powi(t)));
            w -= 0.01 * m_hat / (v_hat.sqrt() + 1e-7);
            expected.push(w);
        }
        close(&adam, &expected);
    }

    /// Where Adam's ε goes shows only on tiny gradients: Burn's (and
    /// PyTorch's) `m̂/(√v̂ + ε)`, not Keras's `m/(√v + ε)` with the bias
    /// corrections in the rate, which is `m̂/(√v̂ + ε/√(1-β₂ᵗ))`.
    #[test]
    fn adam_adds_epsilon_to_the_corrected_root() {
        let g = 1e-8f32;
        let mut update = HostUpdate::new(Optimizer::Adam, 0.01, 1);
        let mut w = [0.0f32];
        update.begin_step();
        update.apply(0, &mut w, &[g]);
        // t = 1: m̂ = g, √v̂ = g, so the step is lr·g/(g + ε).
        let expected = -0.01 * (g as f64) / (g as f64 + 1e-7);
        assert!(
            (w[0] as f64 - expected).abs() < 1e-9,
            "{} against {expected}",
            w[0]
        );
        // Keras's placement would give lr·g/(g + ε/√0.001) here, 29x smaller.
        let keras = -0.01 * (g as f64) / (g as f64 + 1e-7 / 0.001f64.sqrt());
        assert!((w[0] as f64 - keras).abs() > 1e-4);
    }

    #[test]
    fn names_read_back() {
        for name in Optimizer::NAMES {
            assert_eq!(Optimizer::from_name(name).unwrap().name(), name);
        }
        assert_eq!(Optimizer::from_name("rmsprop"), None);
    }
}
