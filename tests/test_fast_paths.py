"""Speed never changes results: every fast path scores like the plain path, and the analytic FLOP count is exact."""

from __future__ import annotations

import copy
import sys

import pytest
import torch
from conftest import REPO, tiny_config
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from modeling_supreme import SupremeModel

sys.path.insert(0, str(REPO / "benchmarks"))
from flops import forward_flops, train_step_flops  # noqa: E402

# No dropout: compiled code draws its random numbers differently from eager code.
NO_DROPOUT = dict(drop_path_rate=0.0, fusion_dropout=0.0)


@pytest.fixture(scope="module", params=["self", "all"])
def model(request):
    """Both CFN query-attention modes: every fast path must hold for each."""
    torch.manual_seed(0)
    return SupremeModel(tiny_config(fusion_query_attention=request.param, **NO_DROPOUT)).eval()


@pytest.fixture(scope="module")
def inputs():
    generator = torch.Generator().manual_seed(1)
    return torch.rand(3, 12, 5000, generator=generator), torch.randn(7, 32, generator=generator)


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    return ((value.float() - reference).norm() / reference.norm()).item()


def test_cached_query_states_score_like_query_embeds(model, inputs):
    ecgs, embeds = inputs
    with torch.inference_mode():
        plain = model(ecgs, query_embeds=embeds, output_attentions=True)
        cached = model(ecgs, query_states=model.get_query_states(embeds), output_attentions=True)
    assert (cached.logits - plain.logits).abs().max() <= 1e-5
    assert (cached.query_embeds - plain.query_embeds).abs().max() <= 1e-5
    for a, b in zip(cached.cross_attentions, plain.cross_attentions, strict=True):
        assert (a - b).abs().max() <= 1e-5


def test_cached_query_states_without_fusion_layers(inputs):
    ecgs, embeds = inputs
    torch.manual_seed(0)
    model = SupremeModel(tiny_config(fusion_num_layers=0)).eval()
    with torch.inference_mode():
        states = model.get_query_states(embeds)
        assert states.fusion_targets is None
        assert torch.equal(model(ecgs, query_states=states).logits, model(ecgs, query_embeds=embeds).logits)


def test_cached_query_states_are_refused_in_training(inputs):
    ecgs, embeds = inputs
    model = SupremeModel(tiny_config())
    states = model.eval().get_query_states(embeds)
    with pytest.raises(ValueError, match="query_states are cached for inference"):
        model.train()(ecgs, query_states=states)
    with pytest.raises(ValueError, match="eval"):
        model.get_query_states(embeds)


def test_bf16_autocast_and_bf16_weights_stay_within_one_percent(model, inputs):
    ecgs, embeds = inputs
    with torch.inference_mode():
        reference = model(ecgs, query_embeds=embeds).logits
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast = model(ecgs, query_states=model.get_query_states(embeds)).logits
        bf16 = copy.deepcopy(model).to(torch.bfloat16)
        weights = bf16(ecgs, query_states=bf16.get_query_states(embeds)).logits
    assert weights.dtype == torch.bfloat16
    assert relative_error(autocast, reference) <= 1e-2
    assert relative_error(weights, reference) <= 1e-2


@pytest.mark.parametrize("query_attention", ["self", "all"])
def test_compiled_model_has_one_graph_and_equals_eager(inputs, query_attention):
    """`fullgraph=True` fails on any graph break. Inference runs through Inductor (generated C++ here, Triton on a
    GPU); the training step through AOTAutograd's traced forward and backward (`aot_eager`), because Inductor's CPU
    build of a backward graph alone takes minutes on a 2-core machine. Two CFN layers: the second is the one whose
    query self-attention runs per ECG."""
    ecgs, embeds = inputs
    labels = torch.randint(0, 2, (3, 7), generator=torch.Generator().manual_seed(2)).float()
    torch.manual_seed(0)
    config = dict(num_hidden_layers=1, fusion_num_layers=2, fusion_query_attention=query_attention)
    model = SupremeModel(tiny_config(**config, **NO_DROPOUT)).eval()
    with torch.inference_mode():
        states = model.get_query_states(embeds)
        compiled = torch.compile(model, fullgraph=True)(ecgs, query_states=states).logits
        assert (compiled - model(ecgs, query_states=states).logits).abs().max() <= 1e-5

    results = []
    for run in (model, torch.compile(model, fullgraph=True, backend="aot_eager")):
        model.train().zero_grad()
        loss = run(ecgs, query_embeds=embeds, labels=labels).loss
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (eager_loss, eager_grads), (compiled_loss, compiled_grads) = results
    assert (compiled_loss - eager_loss).abs() <= 1e-5
    assert compiled_grads.keys() == eager_grads.keys() and len(eager_grads) > 0
    for name, grad in eager_grads.items():
        torch.testing.assert_close(compiled_grads[name], grad, atol=1e-5, rtol=1e-4, msg=name)

    # drop path and dropout on (random draws differ from eager, so no comparison): still one graph
    noisy = SupremeModel(tiny_config(**config, drop_path_rate=0.5)).train()
    torch.compile(noisy, fullgraph=True, backend="eager")(ecgs, query_embeds=embeds, labels=labels).loss.backward()


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        dict(num_hidden_layers=1, fusion_num_layers=3, fusion_intermediate_size=48),
        dict(num_hidden_layers=1, fusion_num_layers=3, fusion_query_attention="all"),
    ],
)
def test_analytic_flops_equal_the_flop_counter(overrides):
    """benchmarks/flops.py against FlopCounterMode (SDPA's math backend, whose matmuls the counter sees)."""
    config = tiny_config(**overrides)
    torch.manual_seed(0)
    model = SupremeModel(config)
    ecgs, embeds, labels = torch.rand(2, 12, 5000), torch.randn(5, 32), torch.ones(2, 5)

    def counted(fn) -> int:
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            fn()
        return counter.get_total_flops()

    model.eval()
    with torch.no_grad():
        states = model.get_query_states(embeds)
        assert counted(lambda: model(ecgs, query_embeds=embeds)) == forward_flops(config, 5, 2)
        assert counted(lambda: model(ecgs, query_states=states)) == forward_flops(
            config, 5, 2, cached_query_states=True
        )
    model.train()
    assert counted(lambda: model(ecgs, query_embeds=embeds, labels=labels).loss.backward()) == train_step_flops(
        config, 5, 2
    )
