//! The three placement rules compared by the simulator.

use super::{Fleet, Rule};
use crate::placement::sim::rng::WordBuild;
use crate::placement::{memory_load_cmp, tie_rank, Choice, Request, WorkerLoad};

impl Fleet<'_> {
    pub(super) fn pick(&mut self, req: &Request<'_>) -> Choice {
        if self.rule == Rule::Policy {
            return self.policy.choose(&self.views, req);
        }
        if let Some(w) = self.policy.warm(&self.views, req) {
            return Choice::Warm(w);
        }
        let cold = match self.rule {
            Rule::Random => self.random_fit(req),
            Rule::Pack => self.ordered_fit(req, Copies::Most),
            Rule::Policy | Rule::Balance => self.ordered_fit(req, Copies::Ignored),
        };
        cold.map_or(Choice::Full, Choice::Cold)
    }

    /// Reservoir sampling over the workers that fit.
    fn random_fit(&mut self, req: &Request<'_>) -> Option<usize> {
        let mut chosen = None;
        let mut fitting = 0;
        for (w, view) in self.views.iter().enumerate() {
            if self.policy.can_start(view, req) {
                fitting += 1;
                if self.rng.below(fitting) == 0 {
                    chosen = Some(w);
                }
            }
        }
        chosen
    }

    /// The real policy's order with its first key, fewest copies of the
    /// function, replaced: most copies (packing) or none (plain balancing).
    fn ordered_fit(&self, req: &Request<'_>, by_copies: Copies) -> Option<usize> {
        let copies = |view: &WorkerLoad<&str, WordBuild>| {
            view.per_function.get(req.function).copied().unwrap_or(0)
        };
        (0..self.views.len())
            .filter(|&w| self.policy.can_start(&self.views[w], req))
            .min_by(|&a, &b| {
                let (view_a, view_b) = (&self.views[a], &self.views[b]);
                let copies_order = match by_copies {
                    Copies::Most => copies(view_b).cmp(&copies(view_a)),
                    Copies::Ignored => std::cmp::Ordering::Equal,
                };
                copies_order
                    .then_with(|| memory_load_cmp(view_a, view_b))
                    .then_with(|| tie_rank(req.function, b).cmp(&tie_rank(req.function, a)))
            })
    }
}

/// How the baselines weigh the function's copies already on a worker.
#[derive(Debug, Clone, Copy)]
enum Copies {
    Most,
    Ignored,
}
