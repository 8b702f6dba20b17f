//! The critic: a separate copy of the actor's network (the study initialised its critic
//! from the actor) whose LM head is replaced by a value head, one scalar per token. The
//! copy gets its own parameter ids, so actor and critic train independently; the value
//! head starts at zero (the first values are 0) or, as a PPO run makes it, drawn like the
//! library's token-classification head.

use burn::module::{ModuleMapper, Param, ParamId};
use burn::nn::Linear;
use burn::prelude::*;

use crate::ModelBackend;
use crate::model::Llama;

#[derive(Module, Debug)]
pub struct Critic<B: Backend> {
    pub body: Llama<B>,
    pub value_head: Linear<B>,
}

/// Gives every parameter a new id (a deep copy that optimizers treat as another model).
struct FreshIds;

impl<B: Backend> ModuleMapper<B> for FreshIds {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let value = param.val();
        Param::initialized(ParamId::new(), value)
    }
}

impl<B: ModelBackend> Critic<B> {
    /// A critic initialised from the actor's weights.
    pub fn from_actor(actor: &Llama<B>) -> Self {
        let body = actor.clone().map(&mut FreshIds);
        let device = body.embed_tokens.weight.val().device();
        let hidden = body.config.hidden_size;
        let value_head =
            Linear { weight: Param::from_tensor(Tensor::zeros([hidden, 1], &device)), bias: Some(Param::from_tensor(Tensor::zeros([1], &device))) };
        Critic { body, value_head }
    }

    /// The value head's weights drawn from a normal of standard deviation `std` (bias
    /// zero), as the library's token-classification head is initialised (Llama's
    /// `initializer_range`, 0.02); `std = 0` keeps the zeros of [`Critic::from_actor`].
    pub fn with_random_value_head(mut self, std: f64) -> Self {
        if std > 0.0 {
            let device = self.value_head.weight.val().device();
            let shape = self.value_head.weight.val().shape();
            self.value_head.weight = Param::from_tensor(Tensor::random(shape, burn::tensor::Distribution::Normal(0.0, std), &device));
        }
        self
    }

    /// The critic as a scoring pass runs it: its body's projections in the compute dtype, a
    /// copy cast once for many passes (`Llama::for_scoring`; the body's LM head is not read).
    pub fn for_scoring(&self) -> Self {
        Critic { body: self.body.with_projections_in_compute(), value_head: self.value_head.clone() }
    }

    /// Values `[batch, seq]`: the value of the state after each token.
    pub fn values(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 2> {
        self.value_head.forward(self.body.hidden(ids)).squeeze_dim::<2>(2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ppo::loss::value_loss;
    use burn::module::AutodiffModule;
    use burn::optim::{AdamWConfig, GradientsParams, Optimizer};

    type AD = crate::CpuAutodiff;

    #[test]
    fn a_critic_is_a_separate_copy_that_learns_returns() {
        let device = Default::default();
        let actor = Llama::<AD>::random(&crate::model::tests::tiny_config(), &device);
        let mut critic = Critic::from_actor(&actor);
        let ids = Tensor::<AD, 2, Int>::from_data(TensorData::new(vec![1i64, 5, 9, 3, 2, 8, 4, 6], [2, 4]), &device);
        let v0 = critic.values(ids.clone());
        assert_eq!(v0.dims(), [2, 4]);
        assert!(v0.clone().abs().max().into_scalar() == 0.0, "the value head starts at zero");
        // Separate parameters: the first weight of the copy has another id than the actor's.
        assert_ne!(critic.body.embed_tokens.weight.id, actor.embed_tokens.weight.id);
        let returns = Tensor::<AD, 2>::from_data(TensorData::new(vec![0.0f32, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.1], [2, 4]), &device);
        let mask = Tensor::<AD, 2>::ones([2, 4], &device);
        let actor_before = actor.valid().forward(ids.clone().inner()).into_data();
        let mut optim = AdamWConfig::new().init::<AD, Critic<AD>>();
        let first = value_loss(critic.values(ids.clone()), v0.clone().detach(), returns.clone(), mask.clone(), 10.0).0.into_scalar();
        for _ in 0..30 {
            let (loss, _) = value_loss(critic.values(ids.clone()), v0.clone().detach(), returns.clone(), mask.clone(), 10.0);
            let grads = GradientsParams::from_grads(loss.backward(), &critic);
            critic = optim.step(1e-3, critic, grads);
        }
        let last = value_loss(critic.values(ids.clone()), v0.detach(), returns, mask, 10.0).0.into_scalar();
        assert!(last < first / 4.0, "value loss {first} -> {last}");
        // Training the critic did not move the actor.
        assert_eq!(actor.valid().forward(ids.inner()).into_data(), actor_before);
        assert!(critic.body.embed_tokens.weight.val().into_data() != actor.embed_tokens.weight.val().into_data(), "the critic's body trained");
    }
}
